// ConntrackModelTests
