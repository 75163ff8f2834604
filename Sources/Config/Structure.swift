/// Layer 2: includes and brace structure (generic, knows no keywords except `include`).
///
/// * `include PATTERN` standing where a statement may start (first token of a line, or right
///   after `{` / `}`) is replaced by the tokens of every matched file, sorted, each surrounded
///   by end-of-line markers. Tokens keep their own file, so later errors name the included file.
/// * Braces are matched into a tree of `Item`s: words, end-of-line markers and blocks.
///   A block's items are still a flat token sequence; splitting it into statements needs the
///   arity of each keyword, which only the schema layer (layer 3) knows.

struct SourceFile: Sendable {
    var name: String
    var directory: String
}

indirect enum Item: Sendable {
    case word(Token)
    case newline
    case block(open: Token, items: [Item])
}

struct Reader {
    var files: [SourceFile] = []
    var errors: [ConfigError] = []

    static let maxIncludeDepth = 16
    static let maxBlockDepth = 64

    /// Registers a file and returns its tokens with includes expanded.
    /// `chain` holds the canonical paths of the files currently being read (cycle detection).
    mutating func read(text: String, name: String, directory: String, chain: [String]) -> [Token] {
        let index = files.count
        files.append(SourceFile(name: name, directory: directory))
        let raw = Lexer.tokenize(text, file: name, fileIndex: index, errors: &errors)
        var out: [Token] = []
        out.reserveCapacity(raw.count)
        var i = 0
        var atStatementStart = true
        while i < raw.count {
            let t = raw[i]
            if t.kind == .word && !t.quoted && t.text == "include" && atStatementStart {
                i += 1
                var args: [Token] = []
                while i < raw.count && raw[i].kind == .word { args.append(raw[i]); i += 1 }
                if args.count != 1 {
                    let at = args.count > 1 ? args[1].location : t.location
                    let found = args.count > 1 ? "\(args.count) arguments" : "none"
                    errors.append(ConfigError(at: at, "'include' expects 1 argument (a file name or glob pattern), found \(found)"))
                    continue
                }
                var nl = t
                nl.kind = .newline
                nl.text = "\n"
                out.append(nl)
                out += expand(include: t, pattern: args[0], directory: directory, chain: chain)
                out.append(nl)
                atStatementStart = true
                continue
            }
            atStatementStart = t.kind != .word
            out.append(t)
            i += 1
        }
        return out
    }

    private mutating func expand(include: Token, pattern: Token, directory: String, chain: [String]) -> [Token] {
        if pattern.text.isEmpty || pattern.text.unicodeScalars.contains("\0") {
            errors.append(ConfigError(at: pattern.location, "invalid include pattern \(pattern.display); expected a file name or glob pattern"))
            return []
        }
        let full = pattern.text.hasPrefix("/")
            ? pattern.text
            : Paths.globEscape(directory) + "/" + pattern.text
        let matches = Paths.glob(full)
        if matches.isEmpty {
            errors.append(ConfigError(at: pattern.location, "include pattern \(pattern.display) matched no files (looked for \(full))"))
            return []
        }
        var out: [Token] = []
        for match in matches {
            let canonical = Paths.normalize(match)
            if chain.contains(canonical) {
                let cycle = (chain + [canonical]).joined(separator: " -> ")
                errors.append(ConfigError(at: pattern.location, "include cycle: '\(canonical)' is already being read (\(cycle))"))
                continue
            }
            if chain.count >= Reader.maxIncludeDepth {
                errors.append(ConfigError(at: pattern.location, "includes nested too deeply (more than \(Reader.maxIncludeDepth) levels) while including '\(canonical)'"))
                continue
            }
            guard let text = Paths.read(canonical) else {
                errors.append(ConfigError(at: pattern.location, "cannot read included file '\(canonical)'; expected a readable regular file"))
                continue
            }
            out += read(text: text, name: canonical, directory: Paths.directory(of: canonical), chain: chain + [canonical])
            var nl = include
            nl.kind = .newline
            nl.text = "\n"
            out.append(nl)
        }
        return out
    }

    /// Matches braces. Unclosed `{` are reported at the `{`, stray `}` at the `}`.
    mutating func structure(_ tokens: [Token]) -> [Item] {
        var stack: [(open: Token?, items: [Item])] = [(nil, [])]
        var ignoredOpen = 0
        for t in tokens {
            switch t.kind {
            case .word:
                stack[stack.count - 1].items.append(.word(t))
            case .newline:
                stack[stack.count - 1].items.append(.newline)
            case .openBrace:
                if ignoredOpen > 0 || stack.count > Reader.maxBlockDepth {
                    if ignoredOpen == 0 {
                        errors.append(ConfigError(at: t.location, "blocks nested too deeply; expected at most \(Reader.maxBlockDepth) levels"))
                    }
                    ignoredOpen += 1
                } else {
                    stack.append((t, []))
                }
            case .closeBrace:
                if ignoredOpen > 0 {
                    ignoredOpen -= 1
                } else if stack.count == 1 {
                    errors.append(ConfigError(at: t.location, "unexpected '}' with no matching '{'"))
                } else if let top = stack.popLast(), let open = top.open {
                    stack[stack.count - 1].items.append(.block(open: open, items: top.items))
                }
            }
        }
        while stack.count > 1, let top = stack.popLast(), let open = top.open {
            errors.append(ConfigError(at: open.location, "unclosed '{'; expected a matching '}' before the end of the file"))
            stack[stack.count - 1].items.append(.block(open: open, items: top.items))
        }
        return stack.first?.items ?? []
    }
}
