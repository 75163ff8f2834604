import ConntrackModel
import NetfilterConntrack
import Testing
import TestSupport

/// The direct reader of ctnetlink messages (`ks_parse.c`, used for every dump and event) against
/// libnetfilter_conntrack's own reader, on the same kernel messages.
@Suite("Direct ctnetlink reader", .serialized, .enabled(if: isRoot, "needs root for network namespaces"))
struct DirectReaderTests {
    @Test("dumps and new, update and destroy events read directly equal what libnetfilter_conntrack reads (TCP in several states, UDP, ICMP, ICMPv6, NAT, IPv6, zones, marks, be-liberal flags)")
    func directReaderMatchesLibrary() throws {
        let ns = try TestNamespace("parse")
        // Two event sockets see the same kernel events: one read directly, one by the library.
        let direct = try ConntrackNetlink(netnsPath: ns.path, events: true)
        let library = try ConntrackNetlink(netnsPath: ns.path, events: true)
        for s in [direct, library] {
            try s.setReceiveBuffer(bytes: 32 << 20)
            try s.setNonBlocking()
        }
        let nl = try ConntrackNetlink(netnsPath: ns.path)
        let states: [TCPState] = [.synSent, .synRecv, .finWait, .closeWait, .timeWait]
        let wanted = (0..<UInt64(6000)).map { n -> Conntrack in
            var c = Conntrack.sample(n)
            if n % 11 == 0 { c.zone = 5 }
            if c.proto == .tcp && n % 13 == 0 { c.tcpState = states[Int(n / 13) % states.count] }
            return c
        }
        #expect(try nl.create(Array(wanted.prefix(3000)), beLiberal: true).rejected == 0)
        #expect(try nl.create(Array(wanted.suffix(from: 3000)), beLiberal: false).rejected == 0)
        // Updates (a new mark) and deletions.
        let changed = wanted.prefix(500).map { c -> Conntrack in
            var u = c
            u.mark = 0x77
            return u
        }
        #expect(try nl.upsert(changed).rejected == 0)
        #expect(try nl.delete(wanted.suffix(300).map(\.key)).rejected == 0)

        func drain(_ socket: ConntrackNetlink, library: Bool) throws -> [ConntrackEvent] {
            var all: [ConntrackEvent] = []
            var quiet = 0
            while quiet < 3 {
                let got = try socket.readEvents(throughLibrary: library)
                quiet = got.isEmpty ? quiet + 1 : 0
                all += got
            }
            return all
        }
        let a = try drain(direct, library: false)
        let b = try drain(library, library: true)
        #expect(a.count == 6000 + 500 + 300, "\(a.count) events")
        #expect(Set(a.map(\.kind)) == [.new, .update, .destroy])
        #expect(a == b, "first difference at \(a.indices.first { $0 >= b.count || a[$0] != b[$0] } ?? -1)")

        // The library's reader on a socket of its own: the kernel sizes dump datagrams after the
        // largest read a socket made, and the direct reader's 64 KiB would cut the library's 8 KiB
        // reads short.
        let reference = try ConntrackNetlink(netnsPath: ns.path)
        let d = try nl.dump()
        let l = try reference.dump(throughLibrary: true)
        #expect(d.count == 5700 && l.count == 5700)
        var byKey: [ConntrackKey: Conntrack] = [:]
        for c in l { byKey[c.key] = c }
        var differing = 0
        for c in d {
            // Two dumps, a moment apart: the remaining timeout may have ticked once.
            guard var other = byKey[c.key], abs(Int(other.timeout) - Int(c.timeout)) <= 1 else { differing += 1; continue }
            other.timeout = c.timeout
            if other != c { differing += 1 }
        }
        #expect(differing == 0)
        #expect(d.contains { $0.zone == 5 } && d.contains { $0.family == .ipv6 && $0.proto == .icmpv6 } && d.contains(where: \.isNAT))
        let liberal = try nl.beLiberalKeys()
        #expect(liberal == (try reference.beLiberalKeys(throughLibrary: true)))
        #expect(!liberal.isEmpty && liberal.count < d.count(where: { $0.proto == .tcp }))
    }
}
