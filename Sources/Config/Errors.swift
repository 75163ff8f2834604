/// A position in a configuration file (1-based line and column; columns count Unicode scalars).
public struct SourceLocation: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(file):\(line):\(column)" }
}

/// One located configuration error. `description` is `FILE:LINE:COL: error: MESSAGE`.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public var message: String

    public init(file: String, line: Int, column: Int, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }

    public init(at location: SourceLocation, _ message: String) {
        self.init(file: location.file, line: location.line, column: location.column, message: message)
    }

    public var location: SourceLocation { SourceLocation(file: file, line: line, column: column) }

    public var description: String { "\(file):\(line):\(column): error: \(message)" }
}

/// All errors found while loading a configuration, sorted by location.
public struct ConfigErrors: Error, Sendable, Equatable, CustomStringConvertible {
    public var errors: [ConfigError]

    public init(_ errors: [ConfigError]) { self.errors = errors }

    public var description: String { errors.map(\.description).joined(separator: "\n") }
}

extension [ConfigError] {
    /// Sorts errors by file (in the given reading order, unknown files last by name), line, column.
    /// The sort is stable so errors at the same position keep their discovery order.
    func sortedByLocation(fileOrder: [String]) -> [ConfigError] {
        var rank: [String: Int] = [:]
        for (i, f) in fileOrder.enumerated() where rank[f] == nil { rank[f] = i }
        return self.enumerated().sorted { a, b in
            let ra = rank[a.element.file] ?? Int.max, rb = rank[b.element.file] ?? Int.max
            if ra != rb { return ra < rb }
            if a.element.file != b.element.file { return a.element.file < b.element.file }
            if a.element.line != b.element.line { return a.element.line < b.element.line }
            if a.element.column != b.element.column { return a.element.column < b.element.column }
            return a.offset < b.offset
        }.map(\.element)
    }
}
