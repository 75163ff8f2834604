/// Layer 1: the lexer.
///
/// Turns text into tokens with positions: words (bare or double-quoted), `{`, `}` and
/// end-of-line markers. Comments (`#` or `!` where a token could start, to end of line)
/// are dropped. Quoted strings support `\"` and `\\`; they may not span lines.
struct Token: Sendable {
    enum Kind: Sendable, Equatable { case word, openBrace, closeBrace, newline }

    var kind: Kind
    var text: String
    var quoted: Bool
    var location: SourceLocation
    /// Index into the loader's file table (gives the directory for relative paths).
    var fileIndex: Int

    /// How the token is shown in messages.
    var display: String {
        switch kind {
        case .word: return quoted ? "\"\(text)\"" : "'\(text)'"
        case .openBrace: return "'{'"
        case .closeBrace: return "'}'"
        case .newline: return "end of line"
        }
    }
}

struct Lexer {
    static func tokenize(_ text: String, file: String, fileIndex: Int, errors: inout [ConfigError]) -> [Token] {
        let s = Array(text.unicodeScalars)
        var tokens: [Token] = []
        var i = 0, line = 1, col = 1

        func loc(_ l: Int, _ c: Int) -> SourceLocation { SourceLocation(file: file, line: l, column: c) }
        func isSpace(_ c: Unicode.Scalar) -> Bool {
            c == " " || c == "\t" || c == "\r" || c == "\u{0B}" || c == "\u{0C}"
        }

        while i < s.count {
            let c = s[i]
            if c == "\n" {
                tokens.append(Token(kind: .newline, text: "\n", quoted: false, location: loc(line, col), fileIndex: fileIndex))
                i += 1; line += 1; col = 1
            } else if isSpace(c) {
                i += 1; col += 1
            } else if c == "#" || c == "!" {
                while i < s.count && s[i] != "\n" { i += 1; col += 1 }
            } else if c == "{" || c == "}" {
                tokens.append(Token(kind: c == "{" ? .openBrace : .closeBrace, text: String(c), quoted: false,
                                    location: loc(line, col), fileIndex: fileIndex))
                i += 1; col += 1
            } else if c == "\"" {
                let start = loc(line, col)
                i += 1; col += 1
                var value = String.UnicodeScalarView()
                var closed = false
                while i < s.count && s[i] != "\n" {
                    if s[i] == "\\" && i + 1 < s.count && (s[i + 1] == "\"" || s[i + 1] == "\\") {
                        value.append(s[i + 1]); i += 2; col += 2
                    } else if s[i] == "\"" {
                        i += 1; col += 1; closed = true
                        break
                    } else {
                        value.append(s[i]); i += 1; col += 1
                    }
                }
                if !closed {
                    errors.append(ConfigError(at: start, "unterminated string; expected a closing '\"' before the end of the line"))
                }
                tokens.append(Token(kind: .word, text: String(value), quoted: true, location: start, fileIndex: fileIndex))
            } else {
                let start = loc(line, col)
                var value = String.UnicodeScalarView()
                while i < s.count {
                    let d = s[i]
                    if d == "\n" || isSpace(d) || d == "{" || d == "}" || d == "\"" { break }
                    value.append(d); i += 1; col += 1
                }
                tokens.append(Token(kind: .word, text: String(value), quoted: false, location: start, fileIndex: fileIndex))
            }
        }
        return tokens
    }
}
