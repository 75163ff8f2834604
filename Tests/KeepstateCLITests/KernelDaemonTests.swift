import ConntrackModel
import Daemon
import Dataplane
import Foundation
import Glibc
import NetfilterConntrack
import SyncPolicy
import Testing
import TestSupport
import VRRPBench

private func v4(_ s: String) -> IPAddressBits { IPAddressBits(parsing: s, family: .ipv4)! }

/// An established TCP conntrack without NAT, for `conntrack`-free setups.
private func tcp(_ source: String, _ sport: UInt16, mark: UInt32 = 0) -> Conntrack {
    Conntrack(family: .ipv4, proto: .tcp,
              original: ConntrackTuple(source: v4(source), destination: v4("10.200.0.1"), sourcePort: sport, destinationPort: 443),
              tcpState: .established, status: [.seenReply, .assured], timeout: 3000, mark: mark)
}

private func qualifying(_ table: [Conntrack]) -> [ConntrackKey: SyncedView] {
    var out: [ConntrackKey: SyncedView] = [:]
    for c in table where c.isEstablished && !c.isSyncExcluded { out[c.key] = SyncedView(c) }
    return out
}

/// `keepstate run` processes on real kernel tables (docs/architecture.md, issue 4): real traffic
/// through a master router with nftables SNAT and a stateful forward chain, two VRFs in one
/// daemon per node, SIGKILL and restart of each daemon, ALG exclusions.
@Suite("keepstate run on real kernel tables", .serialized, .timeLimit(.minutes(4)),
       .enabled(if: isRoot, "needs root: network namespaces, nftables and conntrack"))
struct KernelDaemonTests {
    static let client = "100.64.0.10"
    static let server = "198.51.100.10"
    static let natAddress = "198.51.100.1"

    /// client (cl) ── in0 master (m) out0 ── server (sv);  m sync0 ── sync0 backup (b).
    /// The master forwards with a stateful chain and source-NATs the clients to 198.51.100.1
    /// with ports 20000-59999; the clients' own ports are 60000 and up, so every TCP and UDP
    /// mapping changes the port.
    struct Routers {
        let client, master, server, backup: TestNamespace

        init(_ lab: KernelLab, traffic: Bool) throws {
            master = try lab.namespace("km")
            backup = try lab.namespace("kb")
            try lab.link(master, "sync0", "10.150.0.1", backup, "sync0", "10.150.0.2")
            client = try lab.namespace("kcl")
            server = try lab.namespace("ksv")
            guard traffic else { return }
            try lab.link(master, "in0", "100.64.0.1", client, "c0", KernelDaemonTests.client)
            try lab.link(master, "out0", KernelDaemonTests.natAddress, server, "s0", KernelDaemonTests.server)
            try lab.must(["ip", "-n", client.name, "route", "add", "default", "via", "100.64.0.1"])
            try lab.sysctl(master, "net.ipv4.ip_forward", "1")
            try lab.sysctl(client, "net.ipv4.ip_local_port_range", "60000 65535")
            try lab.nft(master, """
                flush ruleset
                table inet ks {
                    ct helper ftp-std {
                        type "ftp" protocol tcp;
                    }
                    chain helpers {
                        type filter hook prerouting priority filter; policy accept;
                        tcp dport 2121 ct helper set "ftp-std"
                    }
                    chain forward {
                        type filter hook forward priority filter; policy drop;
                        ct state invalid counter drop
                        ct state established,related counter accept
                        iifname "in0" oifname "out0" ct state new counter accept
                    }
                    chain postrouting {
                        type nat hook postrouting priority srcnat; policy accept;
                        oifname "out0" meta l4proto { tcp, udp } snat ip to \(KernelDaemonTests.natAddress):20000-59999
                        oifname "out0" meta l4proto icmp masquerade
                    }
                }

                """)
        }
    }

    func logs(_ daemons: KernelDaemon...) -> String {
        daemons.map { "\($0.node):\n\($0.output.suffix(3000))" }.joined(separator: "\n")
    }

    /// The client's flows in the master's table.
    func clientFlows(_ ns: TestNamespace) throws -> [Conntrack] {
        try kernelTable(ns).filter { $0.original.source == v4(Self.client) }
    }

    @Test("real TCP, UDP and ICMP through the master's SNAT are held by the backup with their NAT mapping and state; a FIN changes the state there and the deletion follows; ALG-related ones are not synced")
    func realTraffic() async throws {
        let lab = try KernelLab("ktr")
        defer { lab.teardown() }
        let net = try Routers(lab, traffic: true)
        let master = try lab.daemon("ha1", in: net.master, state: "MASTER", vrfs: lab.vrf("main", node: "ha1"))
        let backup = try lab.daemon("ha2", in: net.backup, state: "BACKUP", vrfs: lab.vrf("main", node: "ha2"))
        try backup.start()
        try master.start()
        #expect(await within(60) { master.connected("main") && backup.connected("main") }, "\(logs(master, backup))")

        let exe = DaemonProcessTests.executable
        let (server, _) = try lab.start(["ip", "netns", "exec", net.server.name, exe, "drill-traffic", "server",
                                         "--address", Self.server, "--port", "7000"], log: "server.out", stdin: true)
        #expect(await within(20) { server.output.contains("ready") }, "server: \(server.output)")
        // The long-lived flows: one TCP connection and two UDP flows, a message each 100 ms.
        let (steady, _) = try lab.start(["ip", "netns", "exec", net.client.name, exe, "drill-traffic", "client", "--server", Self.server,
                                         "--port", "7000", "--tcp", "1", "--udp", "2", "--interval-ms", "100"],
                                        log: "steady.out", stdin: true)
        #expect(await within(30) { steady.output.contains("ready") }, "client: \(steady.output)")
        let steadyTCP = try #require(try clientFlows(net.master).first { $0.proto == .tcp }).key
        // The flow that closes later.
        let (closing, closingInput) = try lab.start(["ip", "netns", "exec", net.client.name, exe, "drill-traffic", "client",
                                                     "--server", Self.server, "--port", "7000", "--tcp", "1", "--udp", "0",
                                                     "--interval-ms", "100"], log: "closing.out", stdin: true)
        #expect(await within(30) { closing.output.contains("ready") }, "client: \(closing.output)")
        let (ping, _) = try lab.start(["ip", "netns", "exec", net.client.name, "ping", "-n", "-i", "0.2", Self.server], log: "ping.out")

        // The master's table: 2 TCP ESTABLISHED, 2 UDP and 1 ICMP seen both ways, all NATed.
        #expect(await within(30) {
            let f = try clientFlows(net.master)
            return f.filter { $0.proto == .tcp && $0.tcpState == .established }.count == 2
                && f.filter { $0.proto == .udp && $0.status.contains(.seenReply) }.count == 2
                && f.filter { $0.proto == .icmp && $0.status.contains(.seenReply) }.count == 1
        }, "master: \(String(describing: try? clientFlows(net.master)))\nping: \(ping.output.suffix(500))")
        let flows = try clientFlows(net.master)
        let closingTCP = try #require(flows.first { $0.proto == .tcp && $0.key != steadyTCP }).key
        for c in flows {
            #expect(c.reply.destination == v4(Self.natAddress) && c.reply.source == v4(Self.server), "\(c)")
            #expect(c.status.contains(.sourceNAT), "\(c)")
            if c.proto != .icmp {
                #expect(c.original.sourcePort >= 60000 && (20000...59999).contains(c.reply.destinationPort), "the port was not mapped: \(c)")
            }
        }

        // The backup holds each of them: same tuples (NAT mapping), TCP state and mark, with the
        // hold timeout and the kernel's NAT bits.
        let wanted = Dictionary(uniqueKeysWithValues: flows.map { ($0.key, SyncedView($0)) })
        #expect(await within(30) {
            let held = try heldViews(net.backup)
            return wanted.allSatisfy { held[$0.key] == $0.value }
        }, "wanted \(wanted.values)\nbackup \(String(describing: try? kernelTable(net.backup)))\n\(logs(master, backup))")
        let inBackup = try kernelTable(net.backup)
        for c in flows {
            let b = try #require(inBackup.first { $0.key == c.key })
            #expect(b.status.contains(.sourceNAT), "held without the NAT bits: \(b)")
        }

        // ALG: a conntrack the kernel links to the steady TCP connection as its master
        // (IPS_EXPECTED, as a helper's expectation makes it). Then an ordinary one, as a
        // sentinel: once it is held, the related one would be too if it were synced.
        let writer = try ConntrackNetlink(netnsPath: net.master.path)
        let related = Conntrack(
            family: .ipv4, proto: .tcp,
            original: ConntrackTuple(source: v4(Self.client), destination: v4(Self.server), sourcePort: 45000, destinationPort: 7020),
            reply: ConntrackTuple(source: v4(Self.server), destination: v4(Self.natAddress), sourcePort: 7020, destinationPort: 45000),
            tcpState: .established, status: [.seenReply, .assured], timeout: 600)
        let made = try writer.createRelated(related, master: steadyTCP)
        #expect(made.rejected == 0, "create related: errno \(made.firstError)")
        let relatedInKernel = try #require(try kernelTable(net.master).first { $0.key == related.key })
        #expect(relatedInKernel.status.contains(.expected) && relatedInKernel.isEstablished)

        // And a real ALG exchange: the kernel's FTP helper (an nft `ct helper` on port 2121)
        // reads a passive-mode reply in the control connection (the echo server sends back the
        // client's lines: a greeting first, since the helper reads only a segment that follows a
        // line end it saw in that direction, then the "227" line) and expects the data connection to port 7012, which the client
        // then opens: the kernel makes that conntrack RELATED, with EXPECTED set.
        let (data, _) = try lab.start(["ip", "netns", "exec", net.server.name, exe, "drill-traffic", "server",
                                       "--address", Self.server, "--port", "7012"], log: "ftp-data.out", stdin: true)
        let (control, _) = try lab.start(["ip", "netns", "exec", net.server.name, exe, "drill-traffic", "server",
                                          "--address", Self.server, "--port", "2121"], log: "ftp-control.out", stdin: true)
        #expect(await within(20) { data.output.contains("ready") && control.output.contains("ready") })
        let (ftp, _) = try lab.start(["ip", "netns", "exec", net.client.name, "bash", "-c", """
            exec 3<>/dev/tcp/\(Self.server)/2121 || exit 1
            printf '220 ready\\r\\n' >&3
            read -r -t 10 line <&3 || exit 2
            printf '227 Entering Passive Mode (198,51,100,10,27,100).\\r\\n' >&3
            read -r -t 10 line <&3 || exit 2
            exec 4<>/dev/tcp/\(Self.server)/7012 || exit 3
            printf 'data\\n' >&4
            read -r -t 10 line <&4 || exit 4
            echo ftp-ready
            exec sleep 600
            """], log: "ftp.out")
        #expect(await within(30) { ftp.output.contains("ftp-ready") }, "ftp client: \(ftp.output) exit \(String(describing: ftp.exitCode))")
        let ftpData = try #require(try kernelTable(net.master).first { $0.original.destinationPort == 7012 })
        #expect(ftpData.status.contains(.expected) && ftpData.isEstablished, "\(ftpData)")
        let ftpControl = try #require(try kernelTable(net.master).first { $0.original.destinationPort == 2121 })
        #expect(!ftpControl.status.contains(.expected) && ftpControl.isEstablished, "\(ftpControl)")

        let sentinel = tcp("10.9.0.1", 40000)
        #expect(try writer.create([sentinel]).rejected == 0)
        #expect(await within(30) { try heldViews(net.backup)[sentinel.key] != nil && (try heldViews(net.backup))[ftpControl.key] != nil })
        #expect(try kernelTable(net.backup).allSatisfy { $0.key != related.key && $0.key != ftpData.key }, "an ALG-related conntrack was synced")
        let unsynced = master.request(ControlRequest(command: .showConntracks, vrf: "main", unsynced: true))?.conntracks?.first?.unsynced
        #expect(unsynced?.counts["alg"] == 2, "\(String(describing: unsynced))")

        // The closing client ends: FIN both ways. The backup follows the state change...
        lab.closeInput(closingInput)
        #expect(await closing.waitForExit(timeout: .seconds(10)))
        #expect(await within(30) {
            guard let m = try kernelTable(net.master).first(where: { $0.key == closingTCP }), m.tcpState != .established else { return false }
            return try heldViews(net.backup)[closingTCP] == SyncedView(m)
        }, "master \(String(describing: try? kernelTable(net.master).first { $0.key == closingTCP }))\nbackup \(String(describing: try? kernelTable(net.backup).first { $0.key == closingTCP }))")
        let closed = try #require(try kernelTable(net.backup).first { $0.key == closingTCP })
        #expect([.finWait, .closeWait, .lastAck, .timeWait, .close].contains(closed.tcpState), "\(closed)")
        // ...and its deletion.
        #expect(try writer.delete([closingTCP]).rejected == 0)
        #expect(await within(30) { try kernelTable(net.backup).allSatisfy { $0.key != closingTCP } })

        // The steady flows are still there, unchanged, and still answered.
        let steadyKeys = Set(flows.map(\.key)).subtracting([closingTCP])
        let steadyNow = try kernelTable(net.master).filter { steadyKeys.contains($0.key) }
        #expect(steadyNow.count == 4, "\(steadyNow)")
        let held = try heldViews(net.backup)
        for c in steadyNow { #expect(held[c.key] == SyncedView(c), "\(c)") }
        #expect(steady.isRunning && ping.isRunning)
    }

    @Test("SIGKILL and restart of the master's daemon, then of the backup's: the backup ends with the master's table through a full resync, changes made meanwhile included")
    func killAndRestartEach() async throws {
        let lab = try KernelLab("kkr")
        defer { lab.teardown() }
        let net = try Routers(lab, traffic: false)
        let master = try lab.daemon("ha1", in: net.master, state: "MASTER", vrfs: lab.vrf("main", node: "ha1"))
        let backup = try lab.daemon("ha2", in: net.backup, state: "BACKUP", vrfs: lab.vrf("main", node: "ha2"))
        let writer = try ConntrackNetlink(netnsPath: net.master.path)
        let all = (0..<UInt64(420)).map { n -> Conntrack in
            var c = TrafficGenerator.conntrack(number: n)
            c.timeout = 3600
            return c
        }
        #expect(try writer.create(Array(all[0..<300])).rejected == 0)
        // Three made by the conntrack tool, source-NATed (the reply tuple names the mapping).
        for i in 0..<3 {
            let r = try net.master.exec([
                "conntrack", "-I", "-p", "tcp", "-s", "100.64.9.\(i + 1)", "-d", "203.0.113.7", "--sport", "\(50000 + i)", "--dport", "443",
                "-r", "203.0.113.7", "-q", "198.51.100.1", "--reply-port-src", "443", "--reply-port-dst", "\(30000 + i)",
                "--state", "ESTABLISHED", "-t", "3600", "-u", "SEEN_REPLY,ASSURED",
            ])
            #expect(r.status == 0, "conntrack -I: \(r.output)")
        }
        let tool = try kernelTable(net.master).filter { $0.original.destination == v4("203.0.113.7") }
        #expect(tool.count == 3 && tool.allSatisfy { $0.reply.destination == v4("198.51.100.1") && $0.reply.destinationPort >= 30000 },
                "\(tool)")
        try backup.start()
        try master.start()

        /// The backup's kernel table is the master's synced table, and nothing else.
        func inSync() throws -> Bool {
            let wanted = qualifying(try kernelTable(net.master))
            let table = try kernelTable(net.backup)
            return try table.count == wanted.count && heldViews(net.backup) == wanted
        }
        func state() -> String {
            let m = (try? kernelTable(net.master).count) ?? -1
            let b = (try? kernelTable(net.backup).count) ?? -1
            return "master table \(m), backup table \(b)\n\(logs(master, backup))"
        }
        #expect(await within(60) { try inSync() && (try kernelTable(net.backup).count) == 303 }, "\(state())")
        let heldTool = try heldViews(net.backup)
        for c in tool { #expect(heldTool[c.key] == SyncedView(c), "\(c)") }

        // The master's daemon dies (SIGKILL: no goodbye). Meanwhile 30 conntracks end and 30 begin.
        #expect(await master.kill())
        #expect(try writer.delete(all[0..<30].map(\.key)).rejected == 0)
        #expect(try writer.create(Array(all[300..<330])).rejected == 0)
        try master.start()
        #expect(await within(60) { try inSync() && master.connected("main") }, "after the master's restart: \(state())")
        #expect(await within(10) { backup.vrf("main")?.held == 303 }, "\(String(describing: backup.vrf("main")))")

        // The backup's daemon dies. Meanwhile 30 more end and 30 more begin on the master.
        #expect(await backup.kill())
        #expect(try writer.delete(all[30..<60].map(\.key)).rejected == 0)
        #expect(try writer.create(Array(all[330..<360])).rejected == 0)
        try backup.start()
        #expect(await within(60) { try inSync() && backup.connected("main") }, "after the backup's restart: \(state())")
        #expect(await within(10) { backup.vrf("main")?.held == 303 }, "\(String(describing: backup.vrf("main")))")
        let expected = Set(all[60..<360].filter { $0.isEstablished }.map(\.key)).union(tool.map(\.key))
        #expect(Set(try heldViews(net.backup).keys) == expected)
        #expect(master.isRunning && backup.isRunning)
    }

    @Test("two VRFs (namespaces) in one daemon per node stay separate; one VRF's blocked sync or deleted namespace does not stop the other's, and is reported")
    func twoVRFs() async throws {
        let lab = try KernelLab("kvr")
        defer { lab.teardown() }
        let nodeA = try lab.namespace("kna")
        let nodeB = try lab.namespace("knb")
        try lab.link(nodeA, "sync0", "10.150.0.1", nodeB, "sync0", "10.150.0.2")
        let aM = try lab.namespace("kam"), bM = try lab.namespace("kbm")
        let aB = try lab.namespace("kab"), bB = try lab.namespace("kbb")
        let master = try lab.daemon("ha1", in: nodeA, state: "MASTER",
                                    vrfs: lab.vrf("a", node: "ha1", netns: aM.name, port: 3790) + lab.vrf("b", node: "ha1", netns: bM.name, port: 3791))
        let backup = try lab.daemon("ha2", in: nodeB, state: "BACKUP",
                                    vrfs: lab.vrf("a", node: "ha2", netns: aB.name, port: 3790) + lab.vrf("b", node: "ha2", netns: bB.name, port: 3791))
        // The same tuple in both VRFs, told apart by its mark; one more of each VRF's own.
        let writeA = try ConntrackNetlink(netnsPath: aM.path)
        let writeB = try ConntrackNetlink(netnsPath: bM.path)
        #expect(try writeA.create([tcp("10.1.0.1", 40000, mark: 1), tcp("10.1.0.2", 40001)]).rejected == 0)
        #expect(try writeB.create([tcp("10.1.0.1", 40000, mark: 2), tcp("10.1.0.3", 40002)]).rejected == 0)
        try backup.start()
        try master.start()
        func keys(_ ns: TestNamespace) throws -> Set<ConntrackKey> { Set(try heldViews(ns).keys) }
        func views(_ ns: TestNamespace) throws -> Set<SyncedView> { Set(try heldViews(ns).values) }
        #expect(await within(60) {
            try views(aB) == Set([tcp("10.1.0.1", 40000, mark: 1), tcp("10.1.0.2", 40001)].map(SyncedView.init))
                && (try views(bB)) == Set([tcp("10.1.0.1", 40000, mark: 2), tcp("10.1.0.3", 40002)].map(SyncedView.init))
        }, "a: \(String(describing: try? kernelTable(aB)))\nb: \(String(describing: try? kernelTable(bB)))\n\(logs(master, backup))")
        // Live events stay in their VRF too.
        #expect(try writeA.create([tcp("10.1.1.1", 41000)]).rejected == 0)
        #expect(try writeB.create([tcp("10.1.2.1", 42000)]).rejected == 0)
        #expect(await within(30) {
            try keys(aB).contains(tcp("10.1.1.1", 41000).key) && (try keys(bB)).contains(tcp("10.1.2.1", 42000).key)
        })
        #expect(try kernelTable(aB).count == 3 && (try kernelTable(bB)).count == 3)
        #expect(try !keys(aB).contains(tcp("10.1.2.1", 42000).key) && !(try keys(bB)).contains(tcp("10.1.1.1", 41000).key))

        // VRF a's sync port is dropped on node B: its connections die, b's go on.
        try lab.nft(nodeB, """
            table inet block {
                chain input {
                    type filter hook input priority filter; policy accept;
                    tcp dport 3790 drop
                    tcp sport 3790 drop
                }
            }

            """)
        #expect(await within(30) { master.vrf("a")?.connectionsEstablished == 0 }, "\(String(describing: master.vrf("a")))")
        #expect(try writeA.create([tcp("10.1.1.2", 41001)]).rejected == 0)
        #expect(try writeB.create([tcp("10.1.2.2", 42001)]).rejected == 0)
        #expect(await within(30) { try keys(bB).contains(tcp("10.1.2.2", 42001).key) }, "b stopped with a: \(logs(master, backup))")
        #expect(try !keys(aB).contains(tcp("10.1.1.2", 41001).key))
        #expect(master.connected("b"))
        // Unblocked: a resyncs and gets what it missed.
        try lab.must(["ip", "netns", "exec", nodeB.name, "nft", "delete", "table", "inet", "block"])
        #expect(await within(60) { try keys(aB).contains(tcp("10.1.1.2", 41001).key) && master.connected("a") })

        // VRF a's namespace on the master is deleted: the daemon says so in `show state` and
        // keeps running; b still syncs.
        try lab.must(["ip", "netns", "del", aM.name])
        #expect(await within(15) { master.vrf("a")?.dataplaneError?.contains("was deleted") == true },
                "\(String(describing: master.vrf("a")))")
        #expect(await within(15) { master.output.contains("the VRF's conntrack table is not followed") }, "\(logs(master))")
        #expect(master.isRunning)
        #expect(master.vrf("b")?.dataplaneError == nil)
        #expect(try writeB.create([tcp("10.1.2.3", 42002)]).rejected == 0)
        #expect(await within(30) { try keys(bB).contains(tcp("10.1.2.3", 42002).key) })

        // The namespace comes back (empty) and a reload reopens VRF a there: the backup's a
        // follows the new, empty table plus one new conntrack.
        try lab.must(["ip", "netns", "add", aM.name])
        let fresh = try ConntrackNetlink(netnsPath: aM.path)
        #expect(try fresh.create([tcp("10.1.1.9", 41009)]).rejected == 0)
        let reloaded = master.request(ControlRequest(command: .reload))
        #expect(reloaded?.ok == true && reloaded?.message?.contains("started VRF a") == true, "\(String(describing: reloaded))")
        #expect(await within(60) {
            try master.vrf("a")?.dataplaneError == nil && keys(aB) == [tcp("10.1.1.9", 41009).key]
        }, "a: \(String(describing: try? kernelTable(aB)))\n\(String(describing: master.vrf("a")))\n\(logs(master))")
        #expect(try keys(bB).count == 5)
        #expect(master.isRunning && backup.isRunning)
    }
}
