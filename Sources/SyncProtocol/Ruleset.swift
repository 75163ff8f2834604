import NIOCore

/// What a node says about its nftables ruleset for one VRF (docs/protocol.md, "Ruleset
/// fingerprint"): a digest of the normalised ruleset with one sub-digest per table, chain, set,
/// map and stateful object, or why it could not be read.
public enum RulesetFingerprint: Sendable, Hashable, CustomStringConvertible {
    case known(RulesetDigest)
    /// `nft` is missing, failed, timed out, or printed what could not be read; or the check is
    /// off (`ruleset_check_interval 0`).
    case unknown(reason: String)

    public var description: String {
        switch self {
        case .known(let d): d.hex
        case .unknown(let why): "unknown (\(why))"
        }
    }
}

/// The digest of a normalised ruleset and its parts.
public struct RulesetDigest: Sendable, Hashable {
    /// SHA-256: 32 bytes.
    public static let digestLength = 32
    /// Each part's digest: the first 8 bytes of its SHA-256.
    public static let partDigestLength = 8
    /// The most parts a fingerprint carries on the wire; with more, only the digest travels.
    public static let maximumParts = 2048

    public var digest: [UInt8]
    /// One per table (`table ip nat`), chain (`table ip nat chain postrouting`), set, map and
    /// named object (`table inet filter set allowed`), sorted by name, names unique.
    public var parts: [RulesetPart]
    /// The ruleset had more than `maximumParts` parts: only the digest was sent, and a
    /// difference cannot be named.
    public var partsOmitted: Bool

    public init(digest: [UInt8], parts: [RulesetPart], partsOmitted: Bool = false) {
        self.digest = digest
        self.parts = parts
        self.partsOmitted = partsOmitted
    }

    /// The digest in lower-case hexadecimal.
    public var hex: String { hexString(digest) }
}

public struct RulesetPart: Sendable, Hashable {
    public var name: String
    public var digest: [UInt8]
    public init(name: String, digest: [UInt8]) {
        self.name = name
        self.digest = digest
    }
}

func hexString(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count * 2)
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 0x0F)])
    }
    return String(decoding: out, as: UTF8.self)
}

extension RulesetDigest {
    /// What differs between this node's ruleset (`self`) and the peer's, one line per part:
    /// `table ip nat chain postrouting differs`, `table inet filter set allowed only on this
    /// node`, `table ip raw only on the peer` (a table present on one side only is one line,
    /// not one per chain). Empty when the digests are equal.
    public func differences(from peer: RulesetDigest) -> [String] {
        guard digest != peer.digest else { return [] }
        if partsOmitted || peer.partsOmitted {
            return ["ruleset differs (too many tables, chains and sets to name them)"]
        }
        var mine: [String: [UInt8]] = [:]
        for p in parts { mine[p.name] = p.digest }
        var theirs: [String: [UInt8]] = [:]
        for p in peer.parts { theirs[p.name] = p.digest }
        // Tables present on one side only: their members are not listed one by one.
        let lonelyTables = Set(mine.keys.filter { Self.isTable($0) && theirs[$0] == nil })
            .union(theirs.keys.filter { Self.isTable($0) && mine[$0] == nil })
        var out: [String] = []
        for name in Set(mine.keys).union(theirs.keys).sorted() {
            if !Self.isTable(name), let table = Self.table(of: name), lonelyTables.contains(table) { continue }
            switch (mine[name], theirs[name]) {
            case (let a?, let b?) where a != b: out.append("\(name) differs")
            case (_?, nil): out.append("\(name) only on this node")
            case (nil, _?): out.append("\(name) only on the peer")
            default: break
            }
        }
        // Equal parts with different digests: the parts' 64-bit digests collided, or a part
        // name was shortened the same way on both sides.
        return out.isEmpty ? ["ruleset differs"] : out
    }

    /// `table FAMILY NAME` exactly (three words).
    static func isTable(_ name: String) -> Bool {
        name.hasPrefix("table ") && name.split(separator: " ", omittingEmptySubsequences: false).count == 3
    }

    /// The `table FAMILY NAME` a part belongs to.
    static func table(of name: String) -> String? {
        let words = name.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
        guard words.count >= 3, words[0] == "table" else { return nil }
        return words[0...2].joined(separator: " ")
    }
}

extension ByteBuffer {
    /// kind u8 (0 unknown, 1 known with parts, 2 known without parts), then: unknown: reason
    /// str16; known: digest bytes8, part count u16, count × (name str8, digest bytes8);
    /// known without parts: digest bytes8.
    mutating func writeRulesetFingerprint(_ fingerprint: RulesetFingerprint) {
        switch fingerprint {
        case .unknown(let why):
            writeInteger(UInt8(0))
            writeString16(why)
        case .known(let d):
            // Names are cut to 255 bytes on the wire; a cut name equal to one already written
            // is left out, so that the list stays unique (the decoder requires it).
            var seen = Set<[UInt8]>()
            var parts: [(name: [UInt8], digest: [UInt8])] = []
            for p in d.parts {
                let name = Self.cutUTF8(Array(p.name.utf8), max: 255)
                guard !name.isEmpty, seen.insert(name).inserted else { continue }
                parts.append((name, p.digest))
            }
            if d.partsOmitted || parts.count > RulesetDigest.maximumParts {
                writeInteger(UInt8(2))
                writeBytes8(d.digest)
            } else {
                writeInteger(UInt8(1))
                writeBytes8(d.digest)
                writeInteger(UInt16(parts.count))
                for p in parts {
                    writeInteger(UInt8(p.name.count))
                    writeBytes(p.name)
                    writeBytes8(p.digest)
                }
            }
        }
    }

    static func cutUTF8(_ bytes: [UInt8], max: Int) -> [UInt8] {
        guard bytes.count > max else { return bytes }
        var out = Array(bytes.prefix(max))
        while !out.isEmpty, String(validating: out, as: UTF8.self) == nil { out.removeLast() }
        return out
    }
}

extension RulesetFingerprint {
    static func decode(_ r: inout RawReader) throws(SyncProtocolError) -> RulesetFingerprint {
        let kind = try r.u8("ruleset kind")
        switch kind {
        case 0:
            return .unknown(reason: try r.string16("ruleset reason"))
        case 1, 2:
            let digest = try r.bytes(Int(try r.u8("ruleset digest")), "ruleset digest")
            guard digest.count == RulesetDigest.digestLength else {
                throw .invalidField(field: "ruleset digest", reason: "\(digest.count) bytes, expected \(RulesetDigest.digestLength)")
            }
            if kind == 2 { return .known(RulesetDigest(digest: digest, parts: [], partsOmitted: true)) }
            let n = Int(try r.u16("ruleset part count"))
            guard n <= RulesetDigest.maximumParts else {
                throw .invalidField(field: "ruleset part count", reason: "\(n) exceeds \(RulesetDigest.maximumParts)")
            }
            var parts: [RulesetPart] = []
            parts.reserveCapacity(n)
            var names = Set<String>()
            for _ in 0..<n {
                let name = try r.string8("ruleset part name")
                guard !name.isEmpty else { throw .invalidField(field: "ruleset part name", reason: "empty") }
                let d = try r.bytes(Int(try r.u8("ruleset part digest")), "ruleset part digest")
                guard d.count == RulesetDigest.partDigestLength else {
                    throw .invalidField(field: "ruleset part digest",
                                        reason: "\(d.count) bytes, expected \(RulesetDigest.partDigestLength)")
                }
                guard names.insert(name).inserted else {
                    throw .invalidField(field: "ruleset part name", reason: "'\(name)' appears twice")
                }
                parts.append(RulesetPart(name: name, digest: d))
            }
            return .known(RulesetDigest(digest: digest, parts: parts))
        default:
            throw .invalidField(field: "ruleset kind", reason: "\(kind) is not 0, 1 or 2")
        }
    }
}
