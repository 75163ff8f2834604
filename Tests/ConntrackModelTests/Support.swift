import ConntrackModel

typealias TestRNG = SplitMix64

func v4(_ text: String) -> IPAddressBits {
    guard let a = IPAddressBits(parsing: text, family: .ipv4) else { fatalError("bad test address \(text)") }
    return a
}

func v6(_ text: String) -> IPAddressBits {
    guard let a = IPAddressBits(parsing: text, family: .ipv6) else { fatalError("bad test address \(text)") }
    return a
}

/// Conntrack number `n` of a structured population: sequential subscribers and ports, which is
/// the hard case for a hash (few bits differ between neighbours).
func sampleConntrack(_ n: Int, family: AddressFamily = .ipv4, proto: IPProtocolNumber = .tcp, zone: UInt16 = 0) -> Conntrack {
    let u = UInt32(truncatingIfNeeded: n)
    let original: ConntrackTuple
    if family == .ipv4 {
        original = ConntrackTuple(
            source: IPAddressBits(ipv4: 0x6440_0000 | (u / 16 & 0x3F_FFFF)),
            destination: IPAddressBits(ipv4: 0xC633_6400 | (u % 7)),
            sourcePort: UInt16(truncatingIfNeeded: 1024 + n % 16),
            destinationPort: 443)
    } else {
        original = ConntrackTuple(
            source: IPAddressBits(high: 0x2001_0DB8_0000_0001, low: UInt64(n / 16)),
            destination: IPAddressBits(high: 0x2001_0DB8_FFFF_0000, low: UInt64(n % 7)),
            sourcePort: UInt16(truncatingIfNeeded: 1024 + n % 16),
            destinationPort: 443)
    }
    return Conntrack(
        family: family, proto: proto, original: original, tcpState: proto == .tcp ? .established : .none,
        timeout: UInt32(truncatingIfNeeded: n), zone: zone)
}
