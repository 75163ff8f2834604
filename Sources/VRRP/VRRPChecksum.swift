/// IP protocol number of VRRP (IPv4 protocol / IPv6 next header).
public let vrrpIPProtocol: UInt8 = 112

/// How the VRRPv3 checksum over IPv4 is computed.
///
/// VRRPv2 always uses `.messageOnly`; VRRPv3 over IPv6 always uses the IPv6
/// pseudo-header (RFC 9568 §5.2.8). Only VRRPv3 over IPv4 has two forms in the
/// field: keepalived 2.2.7 and FRR send `.withPseudoHeader` (RFC 5798 reading),
/// RFC 9568 §5.2.8 says `.messageOnly`.
public enum VRRPChecksumMode: Sendable, Equatable, Hashable, CaseIterable {
    case withPseudoHeader
    case messageOnly
}

/// RFC 1071 internet checksum helpers.
public enum VRRPChecksum {
    /// One's-complement sum of 16-bit big-endian words (odd trailing byte padded with zero), not yet folded.
    static func sum(_ bytes: [UInt8], into acc: inout UInt64) {
        var i = 0
        let n = bytes.count
        while i + 1 < n {
            acc &+= UInt64(bytes[i]) << 8 | UInt64(bytes[i + 1])
            i += 2
        }
        if i < n { acc &+= UInt64(bytes[i]) << 8 }
    }

    static func fold(_ acc: UInt64) -> UInt16 {
        var s = acc
        while s > 0xFFFF { s = (s & 0xFFFF) + (s >> 16) }
        return ~UInt16(s)
    }

    /// Internet checksum of `bytes` (the checksum field inside must be zero to compute, or as received to verify: 0 means valid).
    public static func internetChecksum(_ bytes: [UInt8]) -> UInt16 {
        var acc: UInt64 = 0
        sum(bytes, into: &acc)
        return fold(acc)
    }

    /// Pseudo-header for the given source/destination (IPv4: RFC 768 style; IPv6: RFC 8200 §8.1).
    /// Returns nil if the addresses are not of one family.
    public static func pseudoHeader(source: VRRPAddress, destination: VRRPAddress, length: Int) -> [UInt8]? {
        guard source.family == destination.family else { return nil }
        var out = source.bytes + destination.bytes
        switch source.family {
        case .ipv4:
            out += [0, vrrpIPProtocol, UInt8((length >> 8) & 0xFF), UInt8(length & 0xFF)]
        case .ipv6:
            out += [UInt8((length >> 24) & 0xFF), UInt8((length >> 16) & 0xFF),
                    UInt8((length >> 8) & 0xFF), UInt8(length & 0xFF), 0, 0, 0, vrrpIPProtocol]
        }
        return out
    }

    /// Checksum over an optional pseudo-header followed by the message.
    public static func compute(message: [UInt8], pseudoHeader: [UInt8]?) -> UInt16 {
        var acc: UInt64 = 0
        if let pseudoHeader { sum(pseudoHeader, into: &acc) }
        sum(message, into: &acc)
        return fold(acc)
    }
}
