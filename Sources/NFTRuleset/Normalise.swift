import Crypto
import Foundation
public import SyncProtocol

/// Why the output of `nft -j list ruleset` could not be read.
public enum NFTRulesetError: Error, Sendable, Equatable, CustomStringConvertible {
    case notJSON(String)
    case unexpected(String)

    public var description: String {
        switch self {
        case .notJSON(let why): "nft's output is not JSON: \(why)"
        case .unexpected(let why): "nft's JSON is not a ruleset: \(why)"
        }
    }
}

/// The normalised form of an nftables ruleset, from `nft -j list ruleset` (docs/operations.md,
/// "Configuration drift"). Pure: bytes in, parts and digests out.
///
/// Two rulesets that filter and translate the same way normalise to the same parts, whatever
/// their history. What does not count:
/// - the `metainfo` object (nft's version);
/// - object and rule handles (`handle`);
/// - counter values (`packets`, `bytes` of counter statements, named counters and set element
///   counters), quota usage (`used`, `used_unit`), `last` statement times, element expiry
///   (`expires`);
/// - the elements of dynamic sets and maps: those whose flags include `dynamic` or `timeout`,
///   and those a rule adds to, updates or deletes from (`add @s`, `update @s`, `delete @s`);
///   meter contents (nft does not list them with the ruleset);
/// - the order of tables, chains, sets and objects in the listing, the order of set and map
///   elements, of anonymous set members (`{ tcp, udp }`) and of flag lists.
///
/// The order of the rules within a chain counts: it is what the chain does.
///
/// Each table, chain (with its rules), set, map and named object is one part, named
/// `table FAMILY TABLE`, `table FAMILY TABLE chain NAME`, `table FAMILY TABLE set NAME`, ...
public enum NFTRuleset {
    /// Part name → canonical text of the normalised part.
    public static func parts(json: [UInt8]) throws(NFTRulesetError) -> [String: String] {
        let root: Any
        do {
            root = try JSONSerialization.jsonObject(with: Data(json), options: [])
        } catch {
            throw .notJSON("\(error.localizedDescription)")
        }
        guard let top = root as? [String: Any], let list = top["nftables"] as? [Any] else {
            throw .unexpected("no top-level \"nftables\" array")
        }
        var objects: [(kind: String, body: [String: Any])] = []
        objects.reserveCapacity(list.count)
        for item in list {
            guard let o = item as? [String: Any], o.count == 1, let first = o.first else {
                throw .unexpected("an element of \"nftables\" is not an object with one key")
            }
            let (kind, value) = (first.key, first.value)
            if let body = value as? [String: Any] {
                objects.append((kind, body))
            } else if kind != "metainfo" {
                throw .unexpected("the \"\(kind)\" object has no body")
            }
        }

        // Sets and maps whose contents change at run time.
        var dynamic = Set<String>()
        for o in objects where o.kind == "rule" {
            guard let family = o.body["family"] as? String, let table = o.body["table"] as? String else { continue }
            for name in updatedSets(o.body["expr"] ?? NSNull()) { dynamic.insert("\(family) \(table) \(name)") }
        }

        var parts: [String: String] = [:]
        var chains: [String: (chain: String?, rules: [String])] = [:]
        var others: [String] = []
        for (kind, body) in objects {
            switch kind {
            case "metainfo":
                continue
            case "table":
                guard let family = body["family"] as? String, let name = body["name"] as? String else {
                    throw .unexpected("a table without family or name")
                }
                parts["table \(family) \(name)"] = canonical(body, key: kind)
            case "chain":
                guard let family = body["family"] as? String, let table = body["table"] as? String,
                      let name = body["name"] as? String else { throw .unexpected("a chain without family, table or name") }
                chains["table \(family) \(table) chain \(name)", default: (nil, [])].chain = canonical(body, key: kind)
            case "rule":
                guard let family = body["family"] as? String, let table = body["table"] as? String,
                      let chain = body["chain"] as? String else { throw .unexpected("a rule without family, table or chain") }
                var rule = body
                for k in ["family", "table", "chain"] { rule[k] = nil }
                chains["table \(family) \(table) chain \(chain)", default: (nil, [])].rules.append(canonical(rule, key: kind) ?? "null")
            default:
                if let family = body["family"] as? String, let table = body["table"] as? String, let name = body["name"] as? String {
                    var object = body
                    let flags = (body["flags"] as? [Any])?.compactMap { $0 as? String } ?? []
                    if kind == "meter" || dynamic.contains("\(family) \(table) \(name)")
                        || flags.contains("dynamic") || flags.contains("timeout") {
                        object["elem"] = nil
                    }
                    parts["table \(family) \(table) \(kind) \(name)"] = canonical(object, key: kind)
                } else {
                    others.append("{\(quoted(kind)):\(canonical(body, key: kind) ?? "null")}")
                }
            }
        }
        for (name, c) in chains {
            parts[name] = "{\"chain\":\(c.chain ?? "null"),\"rules\":[\(c.rules.joined(separator: ","))]}"
        }
        if !others.isEmpty { parts["other"] = "[\(others.sorted().joined(separator: ","))]" }
        return parts
    }

    /// The fingerprint of the normalised parts: each part's SHA-256 (its first 8 bytes travel),
    /// and the SHA-256 of every part's name and full digest, in name order.
    public static func fingerprint(parts: [String: String]) -> RulesetDigest {
        var list: [RulesetPart] = []
        var whole = ""
        var used = Set<String>()
        for name in parts.keys.sorted() {
            let digest = Array(SHA256.hash(data: Array(parts[name]!.utf8)))
            whole += "\(name)\n\(hex(digest))\n"
            var wireName = shortName(name)
            while !used.insert(wireName).inserted { wireName += "'" }
            list.append(RulesetPart(name: wireName, digest: Array(digest.prefix(RulesetDigest.partDigestLength))))
        }
        return RulesetDigest(digest: Array(SHA256.hash(data: Array(whole.utf8))), parts: list.sorted { $0.name < $1.name },
                             partsOmitted: list.count > RulesetDigest.maximumParts)
    }

    public static func fingerprint(json: [UInt8]) throws(NFTRulesetError) -> RulesetDigest {
        fingerprint(parts: try parts(json: json))
    }

    // MARK: normalisation

    /// Keys dropped inside an object held under the key (`counter { packets bytes }`).
    private static let volatile: [String: Set<String>] = [
        "counter": ["packets", "bytes"],
        "quota": ["used", "used_unit"],
    ]
    /// Keys dropped wherever they are.
    private static let everywhere: Set<String> = ["handle", "expires"]
    /// Arrays under these keys are unordered: set and map elements, anonymous sets, flags.
    private static let unordered: Set<String> = ["elem", "set", "flags"]

    /// The canonical text of a JSON value: object keys sorted, no spaces, volatile fields
    /// dropped, unordered arrays sorted. `key` is the key the value is held under.
    static func canonical(_ value: Any, key: String?) -> String? {
        switch value {
        case let s as String:
            return quoted(s)
        case let a as [Any]:
            var items = a.map { canonical($0, key: nil) ?? "null" }
            if let key, unordered.contains(key) { items.sort() }
            return "[\(items.joined(separator: ","))]"
        case let o as [String: Any]:
            // `last used 2s`: when the rule last matched.
            if key == "last" { return "null" }
            let drop = volatile[key ?? ""] ?? []
            var fields: [String] = []
            for k in o.keys.sorted() where !everywhere.contains(k) && !drop.contains(k) {
                if let v = canonical(o[k]!, key: k) { fields.append("\(quoted(k)):\(v)") }
            }
            return "{\(fields.joined(separator: ","))}"
        case is NSNull:
            return "null"
        case let n as NSNumber:
            // Booleans come as numbers too: nft's schema fixes each field's type, so a field
            // holding `true` on one node never holds `1` on the other.
            let i = n.int64Value
            if Double(i) == n.doubleValue { return String(i) }
            return String(n.doubleValue)
        case let b as Bool:
            return b ? "1" : "0"
        default:
            return quoted("\(value)")
        }
    }

    /// The names (without `@`) of the sets and maps a rule's statements write to.
    static func updatedSets(_ value: Any) -> [String] {
        var out: [String] = []
        func walk(_ v: Any) {
            if let a = v as? [Any] {
                for x in a { walk(x) }
            } else if let o = v as? [String: Any] {
                for (k, x) in o {
                    if k == "set" || k == "map", let stmt = x as? [String: Any], stmt["op"] != nil,
                       let target = (stmt["set"] ?? stmt["map"]) as? String, target.hasPrefix("@") {
                        out.append(String(target.dropFirst()))
                    }
                    if k == "meter", let m = x as? [String: Any], let name = m["name"] as? String { out.append(name) }
                    walk(x)
                }
            }
        }
        walk(value)
        return out
    }

    static func quoted(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where u.value < 0x20:
                let h = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    /// A part name that fits the wire's 255 bytes: a longer one keeps its first 200 bytes and
    /// gets a hash of the whole, so that it stays unique and the same on both nodes.
    static func shortName(_ name: String) -> String {
        let bytes = Array(name.utf8)
        guard bytes.count > 255 else { return name }
        var prefix = Array(bytes.prefix(200))
        while !prefix.isEmpty, String(validating: prefix, as: UTF8.self) == nil { prefix.removeLast() }
        let tag = hex(Array(SHA256.hash(data: bytes).prefix(8)))
        return String(decoding: prefix, as: UTF8.self) + "~" + tag
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined()
    }
}
