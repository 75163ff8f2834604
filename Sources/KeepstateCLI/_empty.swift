// KeepstateCLI
