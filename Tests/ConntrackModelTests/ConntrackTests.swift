import ConntrackModel
import Testing

@Suite struct ConntrackTests {
    static let fixedKey = ConntrackKey(
        family: .ipv4, proto: .tcp,
        original: ConntrackTuple(source: v4("10.0.0.1"), destination: v4("192.0.2.1"), sourcePort: 12345, destinationPort: 80))

    static let fixedKey6 = ConntrackKey(
        family: .ipv6, proto: .udp,
        original: ConntrackTuple(source: v6("2001:db8::1"), destination: v6("2001:db8::2"), sourcePort: 5353, destinationPort: 53),
        zone: 7)

    /// Both nodes must pick the same connection for a conntrack: a change of the function is a
    /// protocol change. These values were computed once and are pinned.
    @Test func stableHashGoldenValues() {
        #expect(Self.fixedKey.stableHash == 0x7085_4B05_F7A9_F007)
        #expect(Self.fixedKey.share(of: 4) == 1)
        #expect(Self.fixedKey6.stableHash == 0x2867_B35F_5F06_91EC)
        #expect(Self.fixedKey6.share(of: 4) == 3)
    }

    @Test func stableHashDependsOnEveryField() {
        let k = Self.fixedKey
        var variants: [ConntrackKey] = []
        var a = k; a.family = .ipv6; variants.append(a)
        a = k; a.proto = .udp; variants.append(a)
        a = k; a.zone = 1; variants.append(a)
        a = k; a.original.source.low ^= 1; variants.append(a)
        a = k; a.original.source.high ^= 1; variants.append(a)
        a = k; a.original.destination.low ^= 1; variants.append(a)
        a = k; a.original.destination.high ^= 1; variants.append(a)
        a = k; a.original.sourcePort ^= 1; variants.append(a)
        a = k; a.original.destinationPort ^= 1; variants.append(a)
        let hashes = Set(variants.map(\.stableHash) + [k.stableHash])
        #expect(hashes.count == variants.count + 1)
        // Deterministic: same input, same output, also from a separately built equal key.
        let again = ConntrackKey(
            family: .ipv4, proto: IPProtocolNumber(rawValue: 6),
            original: ConntrackTuple(source: IPAddressBits(ipv4: 0x0A00_0001), destination: IPAddressBits(ipv4: 0xC000_0201), sourcePort: 12345, destinationPort: 80),
            zone: 0)
        #expect(again.stableHash == k.stableHash)
    }

    @Test func shareSpreadsEvenly() {
        var counts = [Int](repeating: 0, count: 4)
        for n in 0..<100_000 {
            let k = sampleConntrack(n, family: n % 10 == 0 ? .ipv6 : .ipv4, proto: n % 3 == 0 ? .udp : .tcp).key
            let s = k.share(of: 4)
            #expect(s >= 0 && s < 4)
            counts[s] += 1
        }
        #expect(counts.reduce(0, +) == 100_000)
        for c in counts {
            #expect(c >= 23_750 && c <= 26_250, "share counts \(counts)")
        }
    }

    @Test func shareOfDegenerateCounts() {
        let k = Self.fixedKey
        #expect(k.share(of: 1) == 0)
        #expect(k.share(of: 0) == 0)
        #expect(k.share(of: -3) == 0)
        #expect(k.share(of: 64) == Int((k.stableHash >> 32) % 64))
    }

    @Test func invertedSwapsDirection() {
        let t = ConntrackTuple(source: v4("1.2.3.4"), destination: v4("5.6.7.8"), sourcePort: 10, destinationPort: 20)
        let i = t.inverted
        #expect(i.source == v4("5.6.7.8"))
        #expect(i.destination == v4("1.2.3.4"))
        #expect(i.sourcePort == 20)
        #expect(i.destinationPort == 10)
        #expect(i.inverted == t)
    }

    @Test func natAndEstablished() {
        let o = ConntrackTuple(source: v4("100.64.0.1"), destination: v4("198.51.100.7"), sourcePort: 40000, destinationPort: 443)
        let plain = Conntrack(family: .ipv4, proto: .tcp, original: o, tcpState: .established, timeout: 10)
        #expect(plain.reply == o.inverted)
        #expect(!plain.isNAT)
        #expect(plain.isEstablished)

        let snat = Conntrack(
            family: .ipv4, proto: .tcp, original: o,
            reply: ConntrackTuple(source: v4("198.51.100.7"), destination: v4("203.0.113.5"), sourcePort: 443, destinationPort: 20001),
            tcpState: .synSent, timeout: 10)
        #expect(snat.isNAT)
        #expect(!snat.isEstablished)

        var portOnly = plain
        portOnly.reply.destinationPort = 40001
        #expect(portOnly.isNAT)

        for state in TCPState.allCases {
            var c = plain
            c.tcpState = state
            c.status = [.seenReply, .assured]
            #expect(c.isEstablished == (state == .established), "\(state)")
        }

        var udp = Conntrack(family: .ipv4, proto: .udp, original: o, status: [.confirmed], timeout: 30)
        #expect(!udp.isEstablished)
        udp.status.insert(.seenReply)
        #expect(udp.isEstablished)
        udp.tcpState = .established
        udp.status = []
        #expect(!udp.isEstablished)
    }

    @Test func keyCarriesIdentity() {
        let c = sampleConntrack(5, family: .ipv6, proto: .udp, zone: 9)
        #expect(c.key == ConntrackKey(family: .ipv6, proto: .udp, original: c.original, zone: 9))
        #expect(ConntrackUpdate.upsert(c).key == c.key)
        #expect(ConntrackUpdate.delete(c.key).key == c.key)
    }

    @Test func description() {
        let c = Conntrack(
            family: .ipv4, proto: .tcp,
            original: ConntrackTuple(source: v4("100.64.0.1"), destination: v4("198.51.100.7"), sourcePort: 40000, destinationPort: 443),
            reply: ConntrackTuple(source: v4("198.51.100.7"), destination: v4("203.0.113.5"), sourcePort: 443, destinationPort: 20001),
            tcpState: .established, timeout: 432_000, mark: 5)
        #expect(c.description == "ipv4 tcp 432000 ESTABLISHED src=100.64.0.1 dst=198.51.100.7 sport=40000 dport=443 src=198.51.100.7 dst=203.0.113.5 sport=443 dport=20001 mark=5")
        let icmp = Conntrack(
            family: .ipv6, proto: .icmpv6,
            original: ConntrackTuple(source: v6("::1"), destination: v6("::2"), sourcePort: 7, destinationPort: 0x8000),
            reply: ConntrackTuple(source: v6("::2"), destination: v6("::1"), sourcePort: 7, destinationPort: 0x8100),
            timeout: 30, zone: 3)
        #expect(icmp.description == "ipv6 icmpv6 30 src=::1 dst=::2 type=128 code=0 id=7 src=::2 dst=::1 type=129 code=0 id=7 zone=3")
        #expect(IPProtocolNumber(rawValue: 99).description == "proto-99")
    }

    /// The memory budget assumes 96 bytes per conntrack.
    @Test func memoryLayout() {
        #expect(MemoryLayout<Conntrack>.stride == 96)
        #expect(MemoryLayout<IPAddressBits>.size == 16)
        #expect(MemoryLayout<ConntrackTuple>.size == 36)
    }
}
