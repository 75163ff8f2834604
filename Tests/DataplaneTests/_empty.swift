// DataplaneTests
