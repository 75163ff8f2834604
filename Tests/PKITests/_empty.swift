// PKITests
