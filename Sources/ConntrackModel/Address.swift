/// The address family of a conntrack (its layer-3 protocol).
public enum AddressFamily: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case ipv4 = 4
    case ipv6 = 6

    /// Bytes of one address on the wire and in the kernel.
    public var addressLength: Int { self == .ipv4 ? 4 : 16 }

    public var description: String { self == .ipv4 ? "ipv4" : "ipv6" }
}

/// A 128-bit address that holds an IPv4 address (in the low 32 bits of `low`, `high` zero) or
/// an IPv6 address (network byte order: `high` holds bytes 0-7, `low` bytes 8-15).
///
/// The family lives on the conntrack, not here, so the struct stays 16 bytes with no tag.
public struct IPAddressBits: Sendable, Hashable, Comparable {
    public var high: UInt64
    public var low: UInt64

    @inlinable
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// An IPv4 address given as a host-order 32-bit integer (10.0.0.1 is 0x0A00_0001).
    @inlinable
    public init(ipv4: UInt32) {
        self.high = 0
        self.low = UInt64(ipv4)
    }

    /// The IPv4 address as a host-order integer (only meaningful for IPv4 conntracks).
    @inlinable
    public var ipv4: UInt32 { UInt32(truncatingIfNeeded: low) }

    public static func < (lhs: IPAddressBits, rhs: IPAddressBits) -> Bool {
        (lhs.high, lhs.low) < (rhs.high, rhs.low)
    }

    /// Parses dotted-quad IPv4 or RFC 4291 IPv6 text. Returns nil on anything else.
    public init?(parsing text: String, family: AddressFamily) {
        switch family {
        case .ipv4:
            guard let v = IPAddressBits.parseIPv4(Substring(text)) else { return nil }
            self.init(ipv4: v)
        case .ipv6:
            guard let bytes = IPAddressBits.parseIPv6(text) else { return nil }
            var hi: UInt64 = 0
            var lo: UInt64 = 0
            for i in 0..<8 { hi = hi << 8 | UInt64(bytes[i]) }
            for i in 8..<16 { lo = lo << 8 | UInt64(bytes[i]) }
            self.init(high: hi, low: lo)
        }
    }

    /// Parses either family, guessing from the text (a colon means IPv6).
    public static func parse(_ text: String) -> (AddressFamily, IPAddressBits)? {
        if text.contains(":") {
            return IPAddressBits(parsing: text, family: .ipv6).map { (.ipv6, $0) }
        }
        return IPAddressBits(parsing: text, family: .ipv4).map { (.ipv4, $0) }
    }

    /// Text form in the given family (IPv6 compressed as RFC 5952 recommends).
    public func formatted(_ family: AddressFamily) -> String {
        switch family {
        case .ipv4:
            let v = ipv4
            return "\(v >> 24).\(v >> 16 & 0xFF).\(v >> 8 & 0xFF).\(v & 0xFF)"
        case .ipv6:
            var groups = [UInt16]()
            groups.reserveCapacity(8)
            for i in stride(from: 48, through: 0, by: -16) { groups.append(UInt16(truncatingIfNeeded: high >> UInt64(i))) }
            for i in stride(from: 48, through: 0, by: -16) { groups.append(UInt16(truncatingIfNeeded: low >> UInt64(i))) }
            // Longest run (length >= 2) of zero groups becomes "::".
            var bestStart = -1, bestLen = 0, curStart = -1, curLen = 0
            for (i, g) in groups.enumerated() {
                if g == 0 {
                    if curStart < 0 { curStart = i; curLen = 0 }
                    curLen += 1
                    if curLen > bestLen { bestStart = curStart; bestLen = curLen }
                } else {
                    curStart = -1
                }
            }
            if bestLen < 2 { bestStart = -1 }
            // IPv4-mapped addresses read as ::ffff:a.b.c.d (RFC 5952, section 5).
            if high == 0 && low >> 32 == 0xFFFF {
                return "::ffff:" + IPAddressBits(ipv4: UInt32(truncatingIfNeeded: low)).formatted(.ipv4)
            }
            var out = ""
            var i = 0
            while i < 8 {
                if i == bestStart {
                    out += "::"
                    i += bestLen
                    continue
                }
                if !out.isEmpty && !out.hasSuffix(":") { out += ":" }
                out += String(groups[i], radix: 16)
                i += 1
            }
            return out
        }
    }

    static func parseIPv4(_ text: Substring) -> UInt32? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let octet = UInt32(part), octet <= 255
            else { return nil }
            value = value << 8 | octet
        }
        return value
    }

    static func parseIPv6(_ text: String) -> [UInt8]? {
        guard !text.isEmpty, text.utf8.count <= 45 else { return nil }
        var text = Substring(text)
        var tailV4: [UInt8] = []
        // An embedded IPv4 address in the last 32 bits (::ffff:1.2.3.4).
        if let lastColon = text.lastIndex(of: ":"), text[text.index(after: lastColon)...].contains(".") {
            guard let v4 = parseIPv4(text[text.index(after: lastColon)...]) else { return nil }
            tailV4 = [UInt8(v4 >> 24), UInt8(v4 >> 16 & 0xFF), UInt8(v4 >> 8 & 0xFF), UInt8(v4 & 0xFF)]
            text = text[...lastColon]
            if !text.hasSuffix("::") { text = text.dropLast() } // drop the separating ':'
        }
        // Split at "::" (at most one).
        var halves: [String] = []
        let chars = Array(text.utf8)
        var cut: Int? = nil
        var i = 0
        while i + 1 < chars.count {
            if chars[i] == UInt8(ascii: ":") && chars[i + 1] == UInt8(ascii: ":") {
                if cut != nil { return nil }
                cut = i
                i += 2
                continue
            }
            i += 1
        }
        if let c = cut {
            halves = [String(decoding: chars[..<c], as: UTF8.self), String(decoding: chars[(c + 2)...], as: UTF8.self)]
        } else {
            halves = [String(text)]
        }
        func groups(_ s: String) -> [UInt16]? {
            if s.isEmpty { return [] }
            var out: [UInt16] = []
            for g in s.split(separator: ":", omittingEmptySubsequences: false) {
                guard !g.isEmpty, g.count <= 4, g.allSatisfy(\.isHexDigit), let v = UInt16(g, radix: 16) else { return nil }
                out.append(v)
            }
            return out
        }
        let wantGroups = 8 - tailV4.count / 2
        var all: [UInt16]
        if halves.count == 2 {
            guard let head = groups(halves[0]), let tail = groups(halves[1]) else { return nil }
            guard head.count + tail.count < wantGroups else { return nil }
            all = head + Array(repeating: 0, count: wantGroups - head.count - tail.count) + tail
        } else {
            guard let only = groups(halves[0]), only.count == wantGroups else { return nil }
            all = only
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16)
        for g in all { bytes.append(UInt8(g >> 8)); bytes.append(UInt8(g & 0xFF)) }
        bytes += tailV4
        return bytes.count == 16 ? bytes : nil
    }
}
