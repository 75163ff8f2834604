/// Address family of a VRRP virtual router (each family is a separate instance).
public enum VRRPAddressFamily: Sendable, Equatable, Hashable {
    case ipv4
    case ipv6

    /// Size of one address on the wire.
    public var addressLength: Int {
        switch self {
        case .ipv4: return 4
        case .ipv6: return 16
        }
    }
}

/// An IPv4 or IPv6 address, stored in network byte order.
///
/// Ordering is the unsigned integer comparison of the address bytes in network
/// byte order (RFC 9568 §6.4.3 tie-break); IPv4 sorts before IPv6.
public enum VRRPAddress: Sendable, Equatable, Hashable, Comparable, CustomStringConvertible {
    case v4(UInt32)
    case v6(high: UInt64, low: UInt64)

    public var family: VRRPAddressFamily {
        switch self {
        case .v4: return .ipv4
        case .v6: return .ipv6
        }
    }

    /// Builds an address from 4 (IPv4) or 16 (IPv6) bytes; nil for any other length.
    public init?(bytes: some Collection<UInt8>) {
        let array = Array(bytes)
        switch array.count {
        case 4:
            var v: UInt32 = 0
            for b in array { v = (v << 8) | UInt32(b) }
            self = .v4(v)
        case 16:
            var hi: UInt64 = 0
            var lo: UInt64 = 0
            for b in array[0..<8] { hi = (hi << 8) | UInt64(b) }
            for b in array[8..<16] { lo = (lo << 8) | UInt64(b) }
            self = .v6(high: hi, low: lo)
        default:
            return nil
        }
    }

    /// Parses dotted-quad IPv4 ("192.0.2.1") or RFC 4291 text IPv6 ("fe80::1").
    public init?(_ text: String) {
        if text.contains(":") {
            guard let bytes = Self.parseIPv6(text) else { return nil }
            self.init(bytes: bytes)
        } else {
            let parts = text.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 4 else { return nil }
            var v: UInt32 = 0
            for p in parts {
                guard !p.isEmpty, p.count <= 3, let octet = UInt8(p) else { return nil }
                v = (v << 8) | UInt32(octet)
            }
            self = .v4(v)
        }
    }

    /// Network-byte-order bytes (4 or 16).
    public var bytes: [UInt8] {
        switch self {
        case .v4(let v):
            return [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)]
        case .v6(let hi, let lo):
            var out: [UInt8] = []
            out.reserveCapacity(16)
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8((hi >> UInt64(shift)) & 0xFF)) }
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8((lo >> UInt64(shift)) & 0xFF)) }
            return out
        }
    }

    public static func < (lhs: VRRPAddress, rhs: VRRPAddress) -> Bool {
        switch (lhs, rhs) {
        case (.v4(let a), .v4(let b)): return a < b
        case (.v6(let ah, let al), .v6(let bh, let bl)): return ah < bh || (ah == bh && al < bl)
        case (.v4, .v6): return true
        case (.v6, .v4): return false
        }
    }

    public var description: String {
        switch self {
        case .v4:
            return bytes.map { String($0) }.joined(separator: ".")
        case .v6:
            let b = bytes
            var groups: [UInt16] = []
            for i in stride(from: 0, to: 16, by: 2) { groups.append(UInt16(b[i]) << 8 | UInt16(b[i + 1])) }
            // Longest run (length >= 2) of zero groups is compressed to "::".
            var bestStart = -1
            var bestLen = 0
            var i = 0
            while i < 8 {
                if groups[i] == 0 {
                    var j = i
                    while j < 8 && groups[j] == 0 { j += 1 }
                    if j - i > bestLen { bestStart = i; bestLen = j - i }
                    i = j
                } else {
                    i += 1
                }
            }
            func hex(_ g: ArraySlice<UInt16>) -> String { g.map { String($0, radix: 16) }.joined(separator: ":") }
            if bestLen < 2 { return hex(groups[0..<8]) }
            return hex(groups[0..<bestStart]) + "::" + hex(groups[(bestStart + bestLen)..<8])
        }
    }

    private static func parseIPv6(_ text: String) -> [UInt8]? {
        func groups(_ s: Substring) -> [UInt16]? {
            if s.isEmpty { return [] }
            var out: [UInt16] = []
            for part in s.split(separator: ":", omittingEmptySubsequences: false) {
                guard !part.isEmpty, part.count <= 4, let g = UInt16(part, radix: 16) else { return nil }
                out.append(g)
            }
            return out
        }
        let halves = text.components(separatedBy: "::")
        var all: [UInt16]
        switch halves.count {
        case 1:
            guard let g = groups(Substring(text)), g.count == 8 else { return nil }
            all = g
        case 2:
            guard let head = groups(Substring(halves[0])), let tail = groups(Substring(halves[1])),
                  head.count + tail.count <= 7 else { return nil }
            all = head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail
        default:
            return nil
        }
        var out: [UInt8] = []
        for g in all { out.append(UInt8(g >> 8)); out.append(UInt8(g & 0xFF)) }
        return out
    }
}

extension String {
    fileprivate func components(separatedBy separator: String) -> [String] {
        // Small Foundation-free splitter on a multi-character separator.
        var result: [String] = []
        var current = ""
        var rest = Substring(self)
        while !rest.isEmpty {
            if rest.hasPrefix(separator) {
                result.append(current)
                current = ""
                rest = rest.dropFirst(separator.count)
            } else {
                current.append(rest.removeFirst())
            }
        }
        result.append(current)
        return result
    }
}
