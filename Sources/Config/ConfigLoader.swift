import Foundation

/// Entry point: reads a configuration (file or string) and returns the model or all errors.
///
/// Pipeline: Lexer (tokens) -> Reader (includes, brace tree) -> Splitter (schema arity,
/// keywords) -> Builder (values, defaults, cross references).
public enum ConfigLoader {
    /// Loads the file at `path`; includes and relative paths resolve against its directory.
    public static func load(path: String) throws(ConfigErrors) -> KeepstateConfig {
        let absolute = Paths.resolve(path, relativeTo: Paths.currentDirectory)
        guard let text = Paths.read(absolute) else {
            throw ConfigErrors([ConfigError(file: path, line: 1, column: 1,
                                            message: "cannot read configuration file '\(absolute)'; expected a readable regular file")])
        }
        return try run(text: text, name: path, directory: Paths.directory(of: absolute), chain: [absolute])
    }

    /// Parses `text` as if it were the file `file` in `baseDirectory` (default: the current
    /// directory); includes and relative paths resolve against `baseDirectory`.
    public static func parse(text: String, file: String = "<string>", baseDirectory: String? = nil) throws(ConfigErrors) -> KeepstateConfig {
        let dir = baseDirectory.map { Paths.resolve($0, relativeTo: Paths.currentDirectory) } ?? Paths.currentDirectory
        return try run(text: text, name: file, directory: dir, chain: [Paths.resolve(file, relativeTo: dir)])
    }

    private static func run(text: String, name: String, directory: String, chain: [String]) throws(ConfigErrors) -> KeepstateConfig {
        var reader = Reader()
        let tokens = reader.read(text: text, name: name, directory: directory, chain: chain)
        let items = reader.structure(tokens)
        var splitter = Splitter()
        let statements = splitter.split(items, spec: Schema.root, inBlock: false)
        let sources = reader.files.map(\.name)
        var builder = Builder(files: reader.files, defaultRouterID: { ProcessInfo.processInfo.hostName })
        let config = builder.build(statements, sources: sources)
        let errors = reader.errors + splitter.errors + builder.errors
        if !errors.isEmpty {
            throw ConfigErrors(errors.sortedByLocation(fileOrder: sources))
        }
        return config
    }
}
