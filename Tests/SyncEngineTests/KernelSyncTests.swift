import ConntrackModel
import Dataplane
import Foundation
import Glibc
import KernelDataplane
import Logging
import NetfilterConntrack
import NIOCore
import NIOPosix
import Synchronization
import SyncEngine
import SyncPolicy
import Testing
import TestSupport

/// Two engines over TLS on loopback whose dataplanes are the kernel tables of two namespaces.
@Suite("Sync of real kernel tables", .serialized, .enabled(if: isRoot, "needs root for network namespaces"))
struct KernelSyncTests {
    func conntrack(_ ns: TestNamespace, _ args: [String]) throws {
        let r = try ns.exec(["conntrack"] + args)
        if r.status != 0 { throw TestFailure("conntrack \(args.joined(separator: " ")): \(r.output)") }
    }

    @Test("conntracks made with `conntrack -I` in the master's namespace are held in the backup's kernel table; changes, deletions and a failover re-arm follow")
    func kernelToKernel() async throws {
        let ns1 = try TestNamespace("master")
        let ns2 = try TestNamespace("backup")
        // Before the daemon starts: one established TCP, one NATed UDP, one unreplied UDP (not synced).
        try conntrack(ns1, ["-I", "-p", "tcp", "-s", "10.1.0.1", "-d", "10.2.0.1", "--sport", "40000", "--dport", "443",
                            "--state", "ESTABLISHED", "-t", "3000", "-u", "SEEN_REPLY,ASSURED"])
        try conntrack(ns1, ["-I", "-p", "udp", "-s", "100.64.0.5", "-d", "198.51.100.9", "--sport", "5000", "--dport", "53",
                            "-r", "198.51.100.9", "-q", "203.0.113.1", "--reply-port-src", "53", "--reply-port-dst", "20001",
                            "-t", "1200", "-u", "SEEN_REPLY"])
        try conntrack(ns1, ["-I", "-p", "udp", "-s", "100.64.0.6", "-d", "198.51.100.9", "--sport", "5001", "--dport", "53", "-t", "30"])

        // Reconcile every second: the three conntracks above were made while nobody listened
        // (nf_conntrack_events was 2), so the kernel reports no change of theirs.
        let dp1 = try KernelDataplane(vrf: "main", netnsPath: ns1.path, reconcileInterval: 1)
        let dp2 = try KernelDataplane(vrf: "main", netnsPath: ns2.path)
        defer { dp1.stop(); dp2.stop() }
        #expect(dp1.count == 2)
        #expect(dp1.previousEventsSetting == 2)
        #expect(try ns1.exec(["sysctl", "-n", "net.netfilter.nf_conntrack_events"]).output.hasPrefix("1"))
        let pair = try await Pair.make(connections: 2, logLevel: .critical, dataplane1: dp1, dataplane2: dp2)
        pair.e1.setRole(.master)
        pair.startSending()
        #expect(await eventually { pair.e2.store.count == 2 })
        let udpKey = try #require(dp1.snapshot(share: 0, of: 1).first { $0.proto == .udp }?.key)
        let held = try #require(pair.e2.store[udpKey])
        #expect(held.reply.destination == IPAddressBits(parsing: "203.0.113.1", family: .ipv4))
        #expect(held.reply.destinationPort == 20001)

        // Live, through events: a new conntrack, then a mark change of it.
        try conntrack(ns1, ["-I", "-p", "tcp", "-s", "10.1.0.2", "-d", "10.2.0.1", "--sport", "40001", "--dport", "443",
                            "--state", "ESTABLISHED", "-t", "3000", "-u", "SEEN_REPLY,ASSURED"])
        try conntrack(ns1, ["-U", "-p", "tcp", "-s", "10.1.0.2", "-d", "10.2.0.1", "--sport", "40001", "--dport", "443", "-m", "9"])
        #expect(await eventually(5) { pair.e2.store.dump().contains { $0.original.sourcePort == 40001 && $0.mark == 9 } })
        // Through the reconciliation: a mark change and a deletion of conntracks older than the listener.
        try conntrack(ns1, ["-U", "-p", "tcp", "-s", "10.1.0.1", "-d", "10.2.0.1", "--sport", "40000", "--dport", "443", "-m", "7"])
        try conntrack(ns1, ["-D", "-p", "udp", "-s", "100.64.0.5", "-d", "198.51.100.9", "--sport", "5000", "--dport", "53"])
        #expect(await eventually(10) {
            pair.e2.store.count == 2 && pair.e2.store[udpKey] == nil
                && pair.e2.store.dump().contains { $0.original.sourcePort == 40000 && $0.mark == 7 }
        })
        #expect(dp1.reconciliations >= 1)

        // The backup holds what it received in its own kernel table: same NAT, state and mark,
        // with the hold timeout, so that nothing expires while it is backup.
        let hold = HoldPolicy()
        await pair.e2.holderIdle()
        let synced = pair.e2.store.dump()
        var inKernel = try dp2.dump()
        #expect(inKernel.count == 2)
        for c in synced {
            let k = try #require(inKernel.first { $0.key == c.key })
            #expect(k.reply == c.reply && k.tcpState == c.tcpState && k.mark == c.mark)
            #expect(k.timeout > hold.threshold, "held with \(k.timeout) s")
        }

        // Failover: ha1 dies. Whatever the backup's dataplane delivers from now on is recorded.
        let delivered = Mutex<[ConntrackUpdate]>([])
        let watch = dp2.subscribe { changes in delivered.withLock { $0 += changes } }
        defer { dp2.unsubscribe(watch) }
        await pair.e1.shutdown()
        _ = await pair.e2.prepareTakeover()
        pair.e2.setRole(.master)
        // Until the re-arm is done the new master reads no event of its own timeout writes.
        #expect(dp2.eventScope == .deletions)
        pair.e2.rearmAfterTakeover()
        #expect(await eventually(5) { pair.e2.holderStatistics?.lastRearm?.rearmed == 2 })
        #expect(await eventually(5) { dp2.eventScope == .all })
        // Each entry now counts down its synced timeout from the switch.
        inKernel = try dp2.dump()
        for c in synced {
            let k = try #require(inKernel.first { $0.key == c.key })
            #expect(k.timeout <= c.timeout && k.timeout + 5 >= c.timeout, "re-armed to \(k.timeout) s, synced \(c.timeout) s")
            #expect(k.reply == c.reply && k.tcpState == c.tcpState && k.mark == c.mark)
        }
        let listed = try ns2.exec(["conntrack", "-L"]).output
        #expect(listed.contains("sport=40001") && listed.contains("mark=7") && listed.contains("mark=9"), "\(listed)")
        // Neither the hold writes nor the re-arm are echoed: the kernel's events for them arrive
        // before those of a later conntrack, and that later one must be the only change delivered.
        #expect(dp2.count == 2)
        try conntrack(ns2, ["-I", "-p", "tcp", "-s", "10.9.0.1", "-d", "10.2.0.1", "--sport", "41000", "--dport", "443",
                            "--state", "ESTABLISHED", "-t", "3000", "-u", "SEEN_REPLY,ASSURED"])
        #expect(await eventually(5) { !delivered.withLock { $0.isEmpty } })
        let echoed = delivered.withLock { $0 }
        #expect(echoed.count == 1 && echoed.first?.key.original.sourcePort == 41000, "\(echoed)")
        await pair.shutdown()
    }

    @Test("a periodic reconciliation keeps a synced TCP conntrack that left ESTABLISHED (closing) until it is destroyed")
    func reconciliationKeepsClosingConntracks() async throws {
        let ns = try TestNamespace("recon")
        let dp = try KernelDataplane(vrf: "main", netnsPath: ns.path, reconcileInterval: 0.3)
        defer { dp.stop() }
        let deleted = Mutex(0)
        let sub = dp.subscribe { updates in
            let n = updates.filter { if case .delete = $0 { true } else { false } }.count
            deleted.withLock { $0 += n }
        }
        defer { dp.unsubscribe(sub) }
        let tuple = ["-p", "tcp", "-s", "10.7.0.1", "-d", "10.8.0.1", "--sport", "40100", "--dport", "443"]
        try conntrack(ns, ["-I"] + tuple + ["--state", "ESTABLISHED", "-t", "3000", "-u", "SEEN_REPLY,ASSURED"])
        #expect(await eventually(5) { dp.count == 1 })
        try conntrack(ns, ["-U"] + tuple + ["--state", "FIN_WAIT"])
        // Two reconciliations after the change: the closing conntrack is still followed.
        let before = dp.reconciliations
        #expect(await eventually(10) { dp.reconciliations >= before + 2 })
        #expect(dp.count == 1 && deleted.withLock { $0 } == 0, "count \(dp.count), deletes \(deleted.withLock { $0 })")
        try conntrack(ns, ["-D"] + tuple)
        #expect(await eventually(5) { dp.count == 0 && deleted.withLock { $0 } == 1 })
    }

    @Test("a holding backup reads no events for its own writes and still follows deletions; as master it follows creations again")
    func backupFollowsDeletionsOnly() async throws {
        let ns1 = try TestNamespace("scopem")
        let ns2 = try TestNamespace("scopeb")
        let dp1 = try KernelDataplane(vrf: "main", netnsPath: ns1.path, reconcileInterval: 0)
        let dp2 = try KernelDataplane(vrf: "main", netnsPath: ns2.path, reconcileInterval: 0)
        let writer = try KernelDataplane(vrf: "main", netnsPath: ns1.path, reconcileInterval: 0)
        defer { dp1.stop(); dp2.stop(); writer.stop() }
        let pair = try await Pair.make(connections: 2, logLevel: .critical, dataplane1: dp1, dataplane2: dp2)
        pair.e1.setRole(.master)
        pair.startSending()
        #expect(dp2.eventScope == .deletions)
        let entries = (0..<UInt64(1000)).map { TrafficGenerator.conntrack(number: $0) }
        try writer.apply(entries.map { .upsert($0) })
        #expect(await eventually(20) { pair.e2.store.count == 1000 })
        await pair.e2.holderIdle()
        // The 1,000 held writes are in the backup's mirror without one event read for them.
        #expect(dp2.count == 1000)
        #expect(try ConntrackNetlink(netnsPath: ns2.path).dump().count == 1000)
        #expect(dp2.eventsSeen == 0, "\(dp2.eventsSeen) events")
        // A deletion by someone else is followed at once.
        let gone = entries[3]
        try conntrack(ns2, ["-D", "-p", "tcp", "-s", gone.original.source.formatted(.ipv4), "-d", gone.original.destination.formatted(.ipv4),
                            "--sport", "\(gone.original.sourcePort)", "--dport", "\(gone.original.destinationPort)"])
        #expect(await eventually(5) { dp2.count == 999 })
        // Master: creations are followed again.
        pair.e2.setRole(.master)
        #expect(dp2.eventScope == .all)
        try conntrack(ns2, ["-I", "-p", "tcp", "-s", "10.9.0.1", "-d", "10.9.0.2", "--sport", "40000", "--dport", "443",
                            "--state", "ESTABLISHED", "-t", "3000", "-u", "SEEN_REPLY,ASSURED"])
        #expect(await eventually(5) { dp2.count == 1000 })
        await pair.shutdown()
    }

    @Test("periodic reconciliations run while the whole table is followed (master), not while only deletions are (holding backup)")
    func reconciliationsFollowTheScope() async throws {
        let ns = try TestNamespace("recscope")
        let dp = try KernelDataplane(vrf: "main", netnsPath: ns.path, reconcileInterval: 0.2)
        defer { dp.stop() }
        #expect(await eventually(5) { dp.reconciliations >= 2 })
        #expect(dp.followsWholeTable)
        dp.setEventScope(.deletions)
        #expect(!dp.followsWholeTable)
        // One may have been under way when the scope changed.
        try await Task.sleep(for: .milliseconds(300))
        let held = dp.reconciliations
        try await Task.sleep(for: .seconds(1))
        #expect(dp.reconciliations == held)
        dp.setEventScope(.all)
        // The whole table again only once the catching-up reconciliation is done.
        #expect(await eventually(5) { dp.followsWholeTable })
        #expect(dp.reconciliations >= held + 1)
        #expect(await eventually(5) { dp.reconciliations >= held + 2 })
    }

    @Test("a restarted backup adopts what its kernel table holds, and the master's resync removes what went meanwhile")
    func backupRestart() async throws {
        let ns1 = try TestNamespace("rmaster")
        let ns2 = try TestNamespace("rbackup")
        let dp1 = try KernelDataplane(vrf: "main", netnsPath: ns1.path, reconcileInterval: 0)
        defer { dp1.stop() }
        let writer = try KernelDataplane(vrf: "main", netnsPath: ns1.path, reconcileInterval: 0)
        defer { writer.stop() }
        let all = Array((0..<UInt64(600)).map { TrafficGenerator.conntrack(number: $0) }.filter { $0.proto == .tcp }.prefix(300))
        let first = Array(all.prefix(200))
        try writer.apply(first.map { .upsert($0) })
        #expect(await eventually(5) { dp1.count == 200 })

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        func engine(_ node: String, _ dp: any Dataplane, listenPort: Int = 0) throws -> SyncEngine {
            let one = node == "ha1"
            return SyncEngine(
                settings: Pair.settings(node: node, source: one ? "127.0.0.1" : "127.0.0.2", peer: one ? "127.0.0.2" : "127.0.0.1",
                                        peerName: one ? "ha2" : "ha1", connections: 2, listenPort: listenPort),
                tls: try TestPKI.material(one ? TestPKI.ha1 : TestPKI.ha2), dataplane: dp, group: group, logger: logger)
        }
        /// Listens on `port` (the restarts reuse their port). The ports are below the ephemeral
        /// range, so that no other test's outgoing connection takes one between a stop and the
        /// restart, and below the 20000-32000 the other loopback tests pick theirs from (one of
        /// them took this test's port once under `make test`, and the retry ran out after 10 s);
        /// a bind retries while the old listener closes.
        func listen(_ e: SyncEngine, port: Int) async throws {
            let deadline = ContinuousClock.now + .seconds(10)
            while true {
                do {
                    _ = try await e.startListening()
                    return
                } catch where Self.addressInUse(error) && ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(100))
                } catch {
                    // Who holds the port, for the failure's record.
                    let holders = (try? run(["ss", "-tanp", "sport", "=", ":\(port)"]))?.output ?? "?"
                    Issue.record("bind of port \(port) (\(type(of: error))): \(error)\n\(holders)")
                    throw error
                }
            }
        }
        let port1 = Int.random(in: 10_000..<15_000)
        let port2 = port1 + 5_000
        let e1 = try engine("ha1", dp1, listenPort: port1)
        var dp2 = try KernelDataplane(vrf: "main", netnsPath: ns2.path, reconcileInterval: 0)
        var e2 = try engine("ha2", dp2, listenPort: port2)
        try await listen(e1, port: port1)
        try await listen(e2, port: port2)
        e1.setRole(.master)
        e1.startSending(peerPort: port2)
        e2.startSending(peerPort: port1)
        let hold = HoldPolicy()
        func heldKeys() throws -> Set<ConntrackKey> { Set(try dp2.held(above: hold.threshold).map(\.key)) }
        #expect(await eventually(10) { (try? heldKeys()) == Set(first.map(\.key)) })

        // The backup's daemon dies. Meanwhile 50 conntracks end on the master and 100 begin.
        await e2.shutdown()
        dp2.stop()
        try writer.apply(first.prefix(50).map { .delete($0.key) } + all.suffix(from: 200).map { .upsert($0) })
        let expected = Set(first.suffix(from: 50).map(\.key)).union(all.suffix(from: 200).map(\.key))
        #expect(await eventually(5) { dp1.count == 250 })

        // It comes back on the same port: it adopts its 200 held entries, and the master's
        // resync leaves exactly the master's 250 held.
        dp2 = try KernelDataplane(vrf: "main", netnsPath: ns2.path, reconcileInterval: 0)
        e2 = try engine("ha2", dp2, listenPort: port2)
        #expect(try e2.adoptHeld() == 200)
        try await listen(e2, port: port2)
        e2.startSending(peerPort: port1)
        #expect(await eventually(15) { (try? heldKeys()) == expected }, "held: \((try? heldKeys().count) ?? -1)")
        #expect(e2.store.count == 250)

        // The master's daemon dies and comes back: its table is read from the kernel and the
        // backup is resynced to the same 250.
        await e1.shutdown()
        let e1b = try engine("ha1", dp1, listenPort: port1)
        try await listen(e1b, port: port1)
        e1b.setRole(.master)
        e1b.startSending(peerPort: port2)
        #expect(await eventually(15) { await e1b.isIdle() })
        #expect(await eventually(5) { (try? heldKeys()) == expected && e2.store.count == 250 })
        await e1b.shutdown()
        await e2.shutdown()
        dp2.stop()
        try await group.shutdownGracefully()
    }

    @Test("a conntrack the kernel marks EXPECTED (linked to a master, as an ALG helper's) never enters the mirror nor the change stream; its master does")
    func relatedNotMirrored() async throws {
        let ns = try TestNamespace("alg")
        let dp = try KernelDataplane(vrf: "main", netnsPath: ns.path, reconcileInterval: 0.3)
        defer { dp.stop() }
        let delivered = Mutex<[ConntrackKey]>([])
        let sub = dp.subscribe { updates in delivered.withLock { $0 += updates.map(\.key) } }
        defer { dp.unsubscribe(sub) }
        func tuple(_ sport: UInt16, _ dport: UInt16) -> ConntrackTuple {
            ConntrackTuple(source: IPAddressBits(parsing: "10.1.0.1", family: .ipv4)!, destination: IPAddressBits(parsing: "10.2.0.1", family: .ipv4)!,
                           sourcePort: sport, destinationPort: dport)
        }
        let control = Conntrack(family: .ipv4, proto: .tcp, original: tuple(40000, 21), tcpState: .established,
                                status: [.seenReply, .assured], timeout: 600)
        let data = Conntrack(family: .ipv4, proto: .tcp, original: tuple(40001, 20), tcpState: .established,
                             status: [.seenReply, .assured], timeout: 600)
        let nl = try ConntrackNetlink(netnsPath: ns.path)
        #expect(try nl.create([control]).rejected == 0)
        let r = try nl.createRelated(data, master: control.key)
        #expect(r.rejected == 0, "errno \(r.firstError)")
        let related = try #require(try nl.dump().first { $0.key == data.key })
        #expect(related.status.contains(.expected) && related.isEstablished && related.isSyncExcluded)
        // Its creation event, and two reconciliations' dumps, leave it out.
        let before = dp.reconciliations
        #expect(await eventually(10) { dp.reconciliations >= before + 2 })
        #expect(dp.count == 1 && dp.snapshot(share: 0, of: 1).map(\.key) == [control.key])
        #expect(delivered.withLock { $0 } == [control.key])
    }

    @Test("apply keeps a batch's order per key, and a refused write leaves the mirror as it was")
    func applySemantics() throws {
        let ns = try TestNamespace("apply")
        let dp = try KernelDataplane(vrf: "main", netnsPath: ns.path, reconcileInterval: 0)
        defer { dp.stop() }
        let a = TrafficGenerator.conntrack(number: 10)
        let b = TrafficGenerator.conntrack(number: 11)
        try dp.apply([.upsert(a), .upsert(b)])
        // a closed and opened again in one batch stays; b opened and closed goes.
        try dp.apply([.delete(a.key), .upsert(a), .delete(b.key)])
        let keys = Set(try dp.dump().map(\.key))
        #expect(keys == [a.key])
        #expect(dp.count == 1)
        // ICMP type 3 cannot be a conntrack of its own: the kernel refuses it.
        var bad = TrafficGenerator.conntrack(number: 9)   // n % 10 == 9: ICMP
        #expect(bad.proto == .icmp)
        bad.original.destinationPort = 3 << 8
        #expect(throws: KernelDataplane.WriteError.self) { try dp.apply([.upsert(bad)]) }
        #expect(dp.count == 1, "the refused entry stayed in the mirror")
        #expect(dp.snapshot(share: 0, of: 1).map(\.key) == [a.key])
    }

    @Test("an event overrun is recovered by a dump, with nothing missing")
    func overrunRecovered() async throws {
        let ns = try TestNamespace("overrun")
        // A receive buffer far too small for a burst of 20,000 creations forces ENOBUFS.
        let dp = try KernelDataplane(vrf: "main", netnsPath: ns.path, receiveBuffer: 4096)
        defer { dp.stop() }
        // Another socket's writes are kernel events for `dp` like any traffic.
        let writer = try KernelDataplane(vrf: "main", netnsPath: ns.path)
        defer { writer.stop() }
        let tcp = (0..<UInt64(40_000)).lazy.map { TrafficGenerator.conntrack(number: $0) }.filter { $0.proto == .tcp }.prefix(20_000)
        try writer.apply(tcp.map { .upsert($0) })
        #expect(await eventually(30) { dp.count == 20_000 })
        #expect(dp.overruns >= 1)
    }

    /// EADDRINUSE from a bind, as NIO's IOError or wrapped in the engine's own error (which
    /// carries NIO's text, "Address already in use) (errno: 98)").
    static func addressInUse(_ error: any Error) -> Bool {
        if let io = error as? IOError { return io.errnoCode == EADDRINUSE }
        return "\(error)".contains("errno: \(EADDRINUSE)")
    }
}
