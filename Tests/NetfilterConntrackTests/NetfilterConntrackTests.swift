import ConntrackModel
import Foundation
import NetfilterConntrack
import Testing
import TestSupport

func v4(_ s: String) -> IPAddressBits { IPAddressBits(parsing: s, family: .ipv4)! }

@Suite("ctnetlink wrapper against real kernel tables", .serialized, .enabled(if: isRoot, "needs root for network namespaces"))
struct NetfilterConntrackTests {
    @Test("a dump sees what `conntrack -I` created, NAT mapping and state intact")
    func dumpSeesConntrackTool() throws {
        let ns = try TestNamespace("dump")
        var r = try ns.exec(["conntrack", "-I", "-p", "tcp", "-s", "10.1.0.1", "-d", "10.2.0.1", "--sport", "40000", "--dport", "443",
                             "--state", "ESTABLISHED", "-t", "300", "-u", "SEEN_REPLY,ASSURED"])
        #expect(r.status == 0, "\(r.output)")
        r = try ns.exec(["conntrack", "-I", "-p", "udp", "-s", "100.64.0.5", "-d", "198.51.100.9", "--sport", "5000", "--dport", "53",
                         "-r", "198.51.100.9", "-q", "203.0.113.1", "--reply-port-src", "53", "--reply-port-dst", "20001",
                         "-t", "120", "-u", "SEEN_REPLY"])
        #expect(r.status == 0, "\(r.output)")
        let nl = try ConntrackNetlink(netnsPath: ns.path)
        let all = try nl.dump()
        #expect(all.count == 2)
        let tcp = try #require(all.first { $0.proto == .tcp })
        #expect(tcp.original.source == v4("10.1.0.1") && tcp.original.sourcePort == 40000)
        #expect(tcp.original.destination == v4("10.2.0.1") && tcp.original.destinationPort == 443)
        #expect(tcp.tcpState == .established)
        #expect(tcp.status.contains(.assured) && tcp.status.contains(.seenReply))
        #expect(!tcp.isNAT)
        #expect((295...300).contains(tcp.timeout))
        let udp = try #require(all.first { $0.proto == .udp })
        #expect(udp.isNAT)
        #expect(udp.reply.destination == v4("203.0.113.1") && udp.reply.destinationPort == 20001)
        #expect(udp.reply.source == v4("198.51.100.9") && udp.reply.sourcePort == 53)
        // The daemon's own namespace does not see them: VRFs (namespaces) never mix.
        let mine = try ConntrackNetlink().dump()
        #expect(!mine.contains { $0.key == tcp.key })
    }

    @Test("batched create of 20,000 conntracks (TCP, UDP, ICMP, NAT, IPv6) reads back exactly; delete empties")
    func batchedCreateAndDelete() throws {
        let ns = try TestNamespace("write")
        let nl = try ConntrackNetlink(netnsPath: ns.path)
        var wanted: [Conntrack] = []
        for n in 0..<UInt64(20_000) {
            var c = Conntrack.sample(n)
            c.timeout = 600
            wanted.append(c)
        }
        let result = try nl.create(wanted)
        #expect(result.rejected == 0, "first error \(result.firstError)")
        let dumped = try nl.dump()
        #expect(dumped.count == wanted.count)
        var byKey: [ConntrackKey: Conntrack] = [:]
        for c in dumped { byKey[c.key] = c }
        var mismatches = 0
        for w in wanted {
            guard let got = byKey[w.key] else { mismatches += 1; continue }
            // A NATed entry must carry the kernel's NAT bits, or it forwards packets untranslated.
            // (`isNAT` cannot tell for ICMP, whose reply type differs by nature: compare addresses.)
            let natBits = got.status.contains(.sourceNAT) || got.status.contains(.destinationNAT)
            let translated = w.reply.destination != w.original.source || w.reply.source != w.original.destination
                || (!w.proto.isICMP && (w.reply.destinationPort != w.original.sourcePort || w.reply.sourcePort != w.original.destinationPort))
            if got.reply != w.reply || got.tcpState != w.tcpState || got.mark != w.mark || got.timeout > 600 || got.timeout < 590
                || natBits != translated {
                mismatches += 1
                if mismatches < 3 { Issue.record("wanted \(w)\n   got \(got)") }
            }
        }
        #expect(mismatches == 0)
        let (_, count) = try ns.exec(["conntrack", "-C"])
        #expect(count.trimmingCharacters(in: .whitespacesAndNewlines) == "20000")
        let deleted = try nl.delete(wanted.map(\.key))
        #expect(deleted.rejected == 0)
        #expect(try nl.dump().isEmpty)
    }

    @Test("events report new, update and destroy")
    func events() throws {
        let ns = try TestNamespace("events")
        let events = try ConntrackNetlink(netnsPath: ns.path, events: true)
        try events.setReceiveBuffer(bytes: 8 << 20)
        try events.setNonBlocking()
        let writer = try ConntrackNetlink(netnsPath: ns.path)
        let c = Conntrack.sample(7)
        _ = try writer.create([c])
        _ = try writer.delete([c.key])
        var got: [ConntrackEvent] = []
        for _ in 0..<100 where got.count < 2 {
            got += try events.readEvents()
        }
        #expect(got.map(\.kind) == [.new, .destroy])
        #expect(got.first?.conntrack.key == c.key)
    }
}

extension Conntrack {
    /// Conntrack number `n` of a varied population: TCP established, UDP, ICMP echo; one in
    /// three source-NATed; one in ten IPv6; one in seven marked.
    static func sample(_ n: UInt64) -> Conntrack {
        let v6 = n % 10 == 9
        let kind = n % 3
        let src: IPAddressBits = v6 ? IPAddressBits(high: 0x2001_0DB8_0000_0001, low: n) : IPAddressBits(ipv4: 0x6440_0000 | UInt32(n))
        let dst: IPAddressBits = v6 ? IPAddressBits(high: 0x2001_0DB8_FFFF_0000, low: 1) : IPAddressBits(ipv4: 0xC633_6401)
        let pub: IPAddressBits = v6 ? IPAddressBits(high: 0x2001_0DB8_EEEE_0000, low: 1) : IPAddressBits(ipv4: 0xCB00_7101)
        let sport = UInt16(1024 + n % 60000)
        let nat = n % 3 == 1 && !v6
        let mark: UInt32 = n % 7 == 0 ? 0x42 : 0
        switch kind {
        case 0:
            let o = ConntrackTuple(source: src, destination: dst, sourcePort: sport, destinationPort: 443)
            let r = nat ? ConntrackTuple(source: dst, destination: pub, sourcePort: 443, destinationPort: UInt16(20000 + n % 40000)) : o.inverted
            return Conntrack(family: v6 ? .ipv6 : .ipv4, proto: .tcp, original: o, reply: r, tcpState: .established,
                             status: [.seenReply, .assured], timeout: 600, mark: mark)
        case 1:
            let o = ConntrackTuple(source: src, destination: dst, sourcePort: sport, destinationPort: 53)
            let r = nat ? ConntrackTuple(source: dst, destination: pub, sourcePort: 53, destinationPort: UInt16(20000 + n % 40000)) : o.inverted
            return Conntrack(family: v6 ? .ipv6 : .ipv4, proto: .udp, original: o, reply: r, status: [.seenReply], timeout: 600, mark: mark)
        default:
            let type: UInt16 = v6 ? 128 : 8
            let o = ConntrackTuple(source: src, destination: dst, sourcePort: UInt16(n % 65536), destinationPort: type << 8)
            let r = ConntrackTuple(source: dst, destination: src, sourcePort: UInt16(n % 65536), destinationPort: (v6 ? 129 : 0) << 8)
            return Conntrack(family: v6 ? .ipv6 : .ipv4, proto: v6 ? .icmpv6 : .icmp, original: o, reply: r, status: [.seenReply],
                             timeout: 600, mark: mark)
        }
    }
}
