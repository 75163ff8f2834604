/// Layer 3: the schema-driven statement splitter.
///
/// Design (supports both multi-line and one-line blocks, unambiguously):
/// every keyword has a fixed arity. Inside a block the splitter reads a keyword, then
/// exactly `arity` words as arguments (argument words are never taken as keywords), then,
/// for block keywords, a `{...}` block. After that the statement ends; the next item must be
/// an end of line, the end of the block, or — on the same line — another keyword of the same
/// block. So `tls { ca /a.pem  certificate /b.pem  key /c.key }` and the multi-line form yield
/// the same statements. Anything else is "too many arguments". Recovery after an error skips
/// to the next end of line or next keyword known in the block.

struct KeySpec: Sendable {
    var name: String
    var arity: Int
    /// Child keywords for block keywords; nil for plain (non-block) keywords.
    var children: [KeySpec]?
    /// May appear more than once in its block (otherwise a duplicate is an error).
    var repeatable = false
    /// Recognised but rejected with "not supported yet".
    var unsupported = false

    func child(_ name: String) -> KeySpec? { children?.first { $0.name == name } }
    var isBlock: Bool { children != nil }
    var allowedNames: String { (children ?? []).filter { !$0.unsupported }.map(\.name).joined(separator: ", ") }
}

enum Schema {
    private static func value(_ name: String) -> KeySpec { KeySpec(name: name, arity: 1, children: nil) }
    private static func delays(_ name: String) -> KeySpec {
        KeySpec(name: name, arity: 0, children: [value("synchronization"), value("undefined_grace_period")])
    }

    static let root = KeySpec(name: "top level", arity: 0, children: [
        KeySpec(name: "global_defs", arity: 0, children: [value("router_id")]),
        KeySpec(name: "ha_group", arity: 1, children: [value("static_state")], repeatable: true),
        KeySpec(name: "vrf", arity: 1, children: [
            value("netns"),
            KeySpec(name: "ha_fp_conntrack", arity: 0, children: [
                KeySpec(name: "peer", arity: 1, children: [
                    value("source"), value("address"), value("port"), value("identity"),
                ], repeatable: true),
                value("listen_ha_group"),
                value("event_threads"),
                KeySpec(name: "tls", arity: 0, children: [value("ca"), value("certificate"), value("key")]),
                value("heartbeat_interval"),
                value("dead_interval"),
                value("send_queue_limit"),
            ]),
            KeySpec(name: "conntrack_timeouts", arity: 0, children: [value("tcp_undefined")]),
            KeySpec(name: "ha_delays", arity: 0, children: [delays("tcp"), delays("udp"), delays("icmp")]),
        ], repeatable: true),
        KeySpec(name: "vrrp_instance", arity: 0, children: nil, repeatable: true, unsupported: true),
        KeySpec(name: "vrrp_sync_group", arity: 0, children: nil, repeatable: true, unsupported: true),
        KeySpec(name: "vrrp_script", arity: 0, children: nil, repeatable: true, unsupported: true),
        KeySpec(name: "virtual_server", arity: 0, children: nil, repeatable: true, unsupported: true),
    ])
}

/// A statement as understood by the schema: keyword, its arguments and (for blocks) children.
struct Statement: Sendable {
    var keyword: Token
    var args: [Token]
    var children: [Statement]
    var name: String { keyword.text }
    var arg: Token? { args.first }
}

struct Splitter {
    var errors: [ConfigError] = []

    private mutating func error(_ at: SourceLocation, _ message: String) {
        errors.append(ConfigError(at: at, message))
    }

    private func describe(_ item: Item?, inBlock: Bool) -> String {
        switch item {
        case .word(let t)?: return t.display
        case .block?: return "'{'"
        case .newline?: return "end of line"
        case nil: return inBlock ? "'}'" : "end of file"
        }
    }

    /// Skips to the next end of line or the next word that is a keyword of `spec` (blocks skipped).
    private func skip(_ items: [Item], from start: Int, spec: KeySpec) -> Int {
        var i = start
        while i < items.count {
            switch items[i] {
            case .newline: return i
            case .word(let t) where spec.child(t.text) != nil: return i
            default: i += 1
            }
        }
        return i
    }

    mutating func split(_ items: [Item], spec: KeySpec, inBlock: Bool) -> [Statement] {
        var result: [Statement] = []
        var i = 0
        while i < items.count {
            let kwToken: Token
            switch items[i] {
            case .newline:
                i += 1
                continue
            case .block(let open, _):
                error(open.location, "unexpected '{'; expected a keyword (one of: \(spec.allowedNames))")
                i += 1
                continue
            case .word(let t):
                kwToken = t
            }
            i += 1
            guard let key = spec.child(kwToken.text) else {
                error(kwToken.location, "unknown keyword \(kwToken.display) in \(spec.name); expected one of: \(spec.allowedNames)")
                i = skip(items, from: i, spec: spec)
                continue
            }
            if key.unsupported {
                error(kwToken.location, "'\(key.name)' is not supported yet by this version of keepstate")
                i = skip(items, from: i, spec: spec)
                continue
            }
            var args: [Token] = []
            while args.count < key.arity, i < items.count, case .word(let a) = items[i] {
                args.append(a)
                i += 1
            }
            if args.count < key.arity {
                let next = i < items.count ? items[i] : nil
                var at = kwToken.location
                if case .block(let open, _)? = next { at = open.location }
                error(at, "'\(key.name)' expects \(plural(key.arity, "argument")), found \(describe(next, inBlock: inBlock))")
                if case .block? = next { i += 1 }
                i = skip(items, from: i, spec: spec)
                continue
            }
            var children: [Statement] = []
            if key.isBlock {
                if i < items.count, case .block(_, let inner) = items[i] {
                    children = split(inner, spec: key, inBlock: true)
                    i += 1
                } else {
                    let next = i < items.count ? items[i] : nil
                    var at = kwToken.location
                    if case .word(let w)? = next { at = w.location }
                    let what = key.arity == 0 ? "'\(key.name)'" : "'\(key.name) \(args.map(\.text).joined(separator: " "))'"
                    error(at, "expected '{' after \(what), found \(describe(next, inBlock: inBlock))")
                    i = skip(items, from: i, spec: spec)
                    continue
                }
            } else if i < items.count, case .block(let open, _) = items[i] {
                error(open.location, "'\(key.name)' does not take a block; expected end of line, found '{'")
                i += 1
            }
            result.append(Statement(keyword: kwToken, args: args, children: children))
            // After a complete statement: end of line, end of block, or another keyword.
            if i < items.count, case .word(let extra) = items[i], spec.child(extra.text) == nil {
                error(extra.location, "too many arguments for '\(key.name)': expected \(plural(key.arity, "argument")), found extra \(extra.display)")
                i = skip(items, from: i + 1, spec: spec)
            }
        }
        return result
    }
}

func plural(_ n: Int, _ word: String) -> String { n == 1 ? "1 \(word)" : "\(n) \(word)s" }
