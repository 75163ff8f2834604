// KeepstateCLITests
