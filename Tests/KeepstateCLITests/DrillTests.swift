import Config
import Foundation
@testable import KeepstateCLI
import Testing

private let runningAsRoot = getuid() == 0

/// The `keepstate` executable next to this test bundle (`swift build` makes it).
private func keepstateExecutable() -> String? {
    guard let me = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else { return nil }
    let path = URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("keepstate").path
    return FileManager.default.isExecutableFile(atPath: path) ? path : nil
}

private func runDrill(_ exe: String, _ args: [String]) throws -> (status: Int32, stdout: String, stderr: String, pid: Int32) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = ["drill"] + args
    let out = Pipe()
    // Progress goes to a file: a pipe nobody reads would fill up and block the drill.
    let errPath = FileManager.default.temporaryDirectory.appendingPathComponent("keepstate-drill-\(UUID().uuidString).err")
    _ = FileManager.default.createFile(atPath: errPath.path, contents: nil)
    defer { try? FileManager.default.removeItem(at: errPath) }
    let err = try FileHandle(forWritingTo: errPath)
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    try? err.close()
    let errText = (try? String(contentsOf: errPath, encoding: .utf8)) ?? ""
    return (p.terminationStatus, String(decoding: outData, as: UTF8.self), errText, p.processIdentifier)
}

@Suite("keepstate drill")
struct DrillTests {
    @Test("the routers' configurations are valid, with VRRP and with the static driver, with and without sync")
    func configurationsParse() throws {
        let dir = try TempDir()
        let topo = DrillTopology(tag: "t")
        for ha in Drill.HA.allCases {
            for sync in [true, false] {
                let c = DrillConfig(router: topo.r1, peer: topo.r2, pki: "/nonexistent", ha: ha, sync: sync, initialMaster: true,
                                    eventThreads: 2, preemptDelay: ha == .vrrp ? 1.5 : nil)
                let file = dir.url.appendingPathComponent("\(ha)-\(sync).conf")
                try c.text.write(to: file, atomically: true, encoding: .utf8)
                let config = try ConfigLoader.load(path: file.path)
                #expect(config.routerID == "r1")
                #expect(config.vrf(named: "main")?.sync?.listenHAGroup == (sync ? DrillConfig.group : nil))
                if ha == .vrrp {
                    #expect(config.vrrpSyncGroups.map(\.name) == [DrillConfig.group])
                    #expect(config.vrrpInstances.map(\.advertInterval) == [0.1, 0.1])
                    #expect(config.vrrpInstances.allSatisfy { $0.version == .v3 && $0.priority == 150 && $0.preemptDelay == 1.5 })
                } else {
                    #expect(config.haGroups.map(\.name) == [DrillConfig.group])
                }
            }
        }
    }

    /// A client report: flow 0 (TCP) survives with a 0.7 s stall, flow 1 (TCP) is reset, flow
    /// 2 (UDP) answers again but under a new NAT port, flow 3 (UDP) never answers again.
    @Test("the analysis classifies flows around the failure")
    func analysis() {
        let s: UInt64 = 1_000_000_000
        let failure = 10 * s
        func flow(_ n: UInt32, _ proto: String, after: UInt64?, status: String = "open", ended: UInt64? = nil) -> DrillFlowRecord {
            DrillFlowRecord(flow: n, proto: proto, local: "100.64.0.10:\(60000 + n)", sent: 300, received: after == nil ? 200 : 290,
                            sendFailed: 0, firstReply: 1 * s, lastReply: after ?? (failure - s / 20), gaps: [], status: status,
                            error: nil, endedAt: ended, markBefore: [failure - s / 20], markAfter: [after])
        }
        // Flow 0 as the kernel saw it: its replies arrived 5 ms and 30 ms before the generator read
        // them, and its kernel retransmitted 3 segments across the failure (1 before it).
        var survivor = flow(0, "tcp", after: failure + s * 65 / 100)
        survivor.kernelMarkBefore = [failure - s / 20 - s / 200]
        survivor.kernelMarkAfter = [failure + s * 62 / 100]
        survivor.retransmitsAtMark = [1]
        survivor.retransmitsAtEnd = 4
        let client = DrillClientReport(
            started: 0, stopped: 20 * s, marks: [failure], gapThreshold: s / 10,
            flows: [survivor,
                    flow(1, "tcp", after: nil, status: "reset", ended: failure + s / 2),
                    flow(2, "udp", after: failure + s / 5),
                    flow(3, "udp", after: nil)])
        let server = DrillServerReport(
            tcpAccepted: 2, tcpResets: 0, tcpClosed: 0, tcpEchoed: 0, udpEchoed: 0,
            udpFlows: [DrillUDPFlowSeen(flow: 2, sources: ["198.51.100.1:30000", "198.51.100.1:40000"], firstSeen: [s, failure + s / 10]),
                       DrillUDPFlowSeen(flow: 3, sources: ["198.51.100.1:30001"], firstSeen: [s])])
        let tcp = DrillAnalysis.atFailure(client, server, proto: "tcp", failure: failure, windowEnd: 20 * s, bound: 3)
        #expect(tcp.total == 2 && tcp.survived == 1 && tcp.reset == 1 && tcp.stalled == 0)
        #expect(abs((tcp.stallMax ?? 0) - 0.7) < 1e-9)
        #expect(abs((tcp.kernelStallMax ?? 0) - 0.675) < 1e-9, "\(String(describing: tcp.kernelStallMax))")
        #expect(tcp.retransmitsMedian == 3 && tcp.retransmitsMax == 3)
        let udp = DrillAnalysis.atFailure(client, server, proto: "udp", failure: failure, windowEnd: 20 * s, bound: 3)
        #expect(udp.total == 2 && udp.survived == 0 && udp.reNATed == 1 && udp.stalled == 1)
        #expect(udp.lost == 110 && udp.lostMaxPerFlow == 100)
        #expect(DrillAnalysis.allAnswered(client, failure: failure, windowEnd: 20 * s) == nil)

        var run = DrillRunReport(name: "sync loose=1", sync: true, loose: 1)
        run.tcp = tcp
        run.udp = udp
        run.masterTable = 10
        run.backupHeld = 10
        let settings = DrillSettings(tcp: 2, udp: 2, intervalMs: 50, background: 0, ha: "static", failure: "power",
                                     stallBound: 3, observe: 6, eventThreads: 4)
        let checks = DrillAnalysis.checks(run, settings: settings)
        #expect(checks.filter { !$0.passed }.map(\.name).sorted() == [
            "every UDP flow answered within 3.0 s", "no TCP flow was reset at the failover", "no UDP flow was re-NATed",
        ])
        run.checks = checks
        #expect(!run.passed)
        let table = DrillAnalysis.table(DrillReport(settings: settings, runs: [run], notes: [], passed: run.passed))
        let rows = table.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") }
        #expect(rows.contains("TCP survived 1/2"), "\(table)")
        #expect(rows.contains("by kernel receive time (s) 0.675 / 0.675"), "\(table)")
        #expect(rows.contains("TCP retransmissions per flow across the failure, median / max 3.0 / 3"), "\(table)")
        #expect(rows.contains("TCP reset 1") && rows.contains("UDP re-NATed 1") && rows.contains("expectations FAIL"), "\(table)")

        // The failback: the returned router must hold the survivor's table as read at its
        // preemption; an unread survivor table fails the check rather than passing it.
        func failback(held: Int, survivorAtPreempt: Int?) -> [DrillCheck] {
            var r = DrillRunReport(name: "sync loose=1", sync: true, loose: 1)
            r.masterTable = 10
            r.backupHeld = 10
            r.tcp = DrillFlowSummary(total: 1, survived: 1)
            r.udp = DrillFlowSummary(total: 1, survived: 1)
            r.failback = DrillFailback(resyncSeconds: 1, returnedHeld: held, survivorTable: 20, preempted: true, preemptSeconds: 2,
                                       heldAtPreempt: held, survivorTableAtPreempt: survivorAtPreempt,
                                       tcp: DrillFlowSummary(total: 1, survived: 1), udp: DrillFlowSummary(total: 1, survived: 1))
            return DrillAnalysis.checks(r, settings: settings).filter { !$0.passed }
        }
        #expect(failback(held: 12, survivorAtPreempt: 12).isEmpty)
        #expect(failback(held: 11, survivorAtPreempt: 12).map(\.name) == ["the returned router became master only with the table"])
        #expect(failback(held: 12, survivorAtPreempt: nil).map(\.name) == ["the returned router became master only with the table"])
    }

    /// The stall split at the transmission answered (the last one the clients' host sent before
    /// the answer), and the flows that sent in vain after the survivor had the addresses.
    @Test("the transmit tap's times split the stall into TCP's wait and the answer")
    func stallSplit() throws {
        let s: UInt64 = 1_000_000_000
        let ms = s / 1000
        let failure = 10 * s
        let takeover = failure + 300 * ms
        func flow(_ n: UInt32, transmits: [UInt64]?) -> DrillFlowRecord {
            var f = DrillFlowRecord(flow: n, proto: "tcp", local: "100.64.0.10:\(60000 + n)", sent: 300, received: 290, sendFailed: 0,
                                    firstReply: 1 * s, lastReply: failure + 700 * ms, gaps: [], status: "open", error: nil, endedAt: nil,
                                    markBefore: [failure - 40 * ms], markAfter: [failure + 700 * ms])
            f.kernelMarkBefore = [failure - 40 * ms]
            f.kernelMarkAfter = [failure + 690 * ms]
            f.transmits = transmits
            return f
        }
        // Flow 0 (no arriving side): new data before the takeover, then the retransmission at
        // +660 ms answered 30 ms later (a transmission after the answer does not count). Flow 1:
        // one transmission at +400 ms, after the addresses moved, went unanswered; the server
        // was heard again 1 ms after the one at +670 ms. Flow 2: the tap saw nothing after the
        // failure (its transmission predates the tap): left out, not guessed. Flow 3: the one at
        // +650 ms crossed; its ACK came back at +652 ms and let the host send new data at +655
        // ms, before the echo: not a transmission lost, and not the one that crossed. Flow 4:
        // the server's own retransmission crossed first (+416 ms, answering nothing the client
        // sent after the takeover); the client's at +628 ms crossed, answered at +690 ms.
        // Flow 5: its record reached the taps' limit; its crossing may be past the end: left out.
        let full = flow(5, transmits: (0..<UInt64(DrillFlowRecord.tapLimit)).map { failure + $0 * ms })
        var serverFirst = flow(4, transmits: [failure + 10 * ms, failure + 216 * ms, failure + 628 * ms])
        serverFirst.arrivals = [failure + 416 * ms, failure + 629 * ms, failure + 690 * ms]
        var acked = flow(3, transmits: [failure + 10 * ms, failure + 650 * ms, failure + 655 * ms])
        acked.arrivals = [failure - 40 * ms, failure + 1 * ms, failure + 652 * ms, failure + 690 * ms]
        var heard = flow(1, transmits: [failure + 10 * ms, failure + 400 * ms, failure + 670 * ms])
        heard.arrivals = [failure + 671 * ms]
        let client = DrillClientReport(
            started: 0, stopped: 20 * s, marks: [failure], gapThreshold: s / 10,
            flows: [flow(0, transmits: [failure - 40 * ms - 2 * ms, failure + 10 * ms, failure + 210 * ms, failure + 660 * ms, failure + 720 * ms]),
                    heard, flow(2, transmits: [failure - 45 * ms]), acked, serverFirst, full])
        let tcp = DrillAnalysis.atFailure(client, nil, proto: "tcp", failure: failure, windowEnd: 20 * s, bound: 3, takeover: takeover)
        #expect(tcp.survived == 6 && tcp.tapFlows == 4)
        func near(_ a: Double?, _ b: Double) -> Bool { abs((a ?? -1) - b) < 1e-9 }
        #expect(near(tcp.waitMax, 0.710) && near(tcp.answerMax, 0.062), "\(tcp)")
        #expect(near(tcp.waitMedian, 0.695) && near(tcp.answerMedian, 0.035), "\(tcp)")
        #expect(near(tcp.answeredAfterTakeoverMax, 0.370) && tcp.lostAfterTakeover == 1, "\(tcp)")
        #expect(near(tcp.lostAfterTakeoverLatest, 0.100), "\(tcp)")
        // Without a takeover time there is no takeover split; without any tap, no split at all.
        let noTakeover = DrillAnalysis.atFailure(client, nil, proto: "tcp", failure: failure, windowEnd: 20 * s, bound: 3)
        #expect(noTakeover.tapFlows == 4 && noTakeover.lostAfterTakeover == nil && noTakeover.answeredAfterTakeoverMedian == nil)
        var untapped = client
        for i in untapped.flows.indices {
            untapped.flows[i].transmits = nil
            untapped.flows[i].arrivals = nil
        }
        let none = DrillAnalysis.atFailure(untapped, nil, proto: "tcp", failure: failure, windowEnd: 20 * s, bound: 3, takeover: takeover)
        #expect(none.tapFlows == nil && none.waitMedian == nil)

        var run = DrillRunReport(name: "sync loose=1", sync: true, loose: 1)
        run.tcp = tcp
        run.tapDrops = 7
        let settings = DrillSettings(tcp: 6, udp: 0, intervalMs: 50, background: 0, ha: "vrrp", failure: "power",
                                     stallBound: 3, observe: 6, eventThreads: 4)
        let table = DrillAnalysis.table(DrillReport(settings: settings, runs: [run], notes: [], passed: true))
        let rows = table.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") }
        #expect(rows.contains("flows seen by the clients' transmit tap 4 (7 lost)"), "\(table)")
        #expect(rows.contains("wait for the transmission that crossed (s) 0.695 / 0.710"), "\(table)")
        #expect(rows.contains("flows that sent in vain after the survivor had them (latest, s after) 1 (0.100)"), "\(table)")
        run.clientLateSeconds = 0.012
        run.cpuSpinners = 1
        run.cpus = 2
        let decoded = try JSONDecoder().decode(DrillRunReport.self, from: JSONEncoder().encode(run))
        #expect(decoded.clientLateSeconds == 0.012 && decoded.cpuSpinners == 1 && decoded.cpus == 2 && decoded.tapDrops == 7)
        #expect(DrillAnalysis.table(DrillReport(settings: settings, runs: [run], notes: [], passed: true))
            .contains("note: sync loose=1: 1 of 2 CPU spinners ran at the failure"))
        run.tapError = "packet socket: Operation not permitted"
        #expect(DrillAnalysis.table(DrillReport(settings: settings, runs: [run], notes: [], passed: true))
            .contains("note: sync loose=1: the clients' transmit tap did not open (packet socket: Operation not permitted)"))
    }

    @Test("the drill's options are spelt as docs/drill.md gives them")
    func optionNames() {
        let help = Drill.helpMessage()
        for option in ["--idle-cpus", "--no-control", "--no-failback", "--baseline", "--keep-files", "--background", "--loose"] {
            #expect(help.contains(option), "\(option) missing from:\n\(help)")
        }
        #expect(!help.contains("--idle-cp-us"))
    }

    @Test("the CPU waker spins a SCHED_IDLE thread per CPU until it is stopped or released")
    func cpuWaker() throws {
        func waitUntil(_ what: () -> Bool) -> Bool {
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline {
                if what() { return true }
                usleep(1000)
            }
            return what()
        }
        // Threads of this process at SCHED_IDLE (the policy: field 41 of a task's stat).
        func idleTasks() -> Int {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
            return tasks.filter { t in
                guard let stat = try? String(contentsOfFile: "/proc/self/task/\(t)/stat", encoding: .utf8),
                      let close = stat.lastIndex(of: ")") else { return false }
                let fields = stat[stat.index(after: close)...].split(separator: " ")
                return fields.count > 38 && fields[38] == "5"
            }.count
        }
        let waker = CPUWaker(cpus: 2)
        #expect(waker.threads == 2)
        #expect(waitUntil { waker.spinning == 2 && idleTasks() == 2 }, "the policy is seen where it is set")
        waker.stop()
        #expect(waitUntil { waker.spinning == 0 && idleTasks() == 0 })
        // Released without stop (an error path of the drill): its thread stops too.
        do {
            let other = CPUWaker(cpus: 1)
            #expect(waitUntil { other.spinning == 1 && idleTasks() == 1 })
        }
        #expect(waitUntil { idleTasks() == 0 }, "a released waker's thread still spins")
    }

    @Test("the transmit tap keeps IPv4 TCP segments with data and nothing else")
    func tapSegments() {
        // IPv4 (IHL 5), total length 56, TCP from port 61000 with a 20-byte header: 16 bytes of data.
        var data: [UInt8] = [0x45, 0, 0, 56, 0, 0, 0x40, 0, 64, 6, 0, 0, 100, 64, 0, 10, 198, 51, 100, 10]
        data += [0xEE, 0x48, 0x1B, 0x58, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xFF, 0xFF, 0, 0, 0, 0] + [UInt8](repeating: 7, count: 16)
        #expect(TransmitTap.dataSegmentSource(data[...]) == 61000)
        // Cut to the snap length the filter keeps: the header still says 16 bytes of data.
        #expect(TransmitTap.dataSegmentSource(data.prefix(40)) == 61000)
        var ack = Array(data.prefix(40))
        ack[3] = 40
        #expect(TransmitTap.dataSegmentSource(ack[...]) == nil)
        var withOptions = data
        withOptions[32] = 0x80  // a 32-byte TCP header: 4 bytes of data left
        #expect(TransmitTap.dataSegmentSource(withOptions[...]) == 61000)
        withOptions[3] = 52  // now nothing but the header
        #expect(TransmitTap.dataSegmentSource(withOptions[...]) == nil)
        var udp = data
        udp[9] = 17
        #expect(TransmitTap.dataSegmentSource(udp[...]) == nil)
        #expect(TransmitTap.dataSegmentSource(data.prefix(30)) == nil)
        var ipv6 = data
        ipv6[0] = 0x60
        #expect(TransmitTap.dataSegmentSource(ipv6[...]) == nil)
        #expect(TransmitTap.dataSegmentSource([]) == nil)
        // The arriving side keys any TCP segment by its destination port, a bare ACK too.
        #expect(TransmitTap.segmentDestination(data[...]) == 7000 && TransmitTap.segmentDestination(ack[...]) == 7000)
        #expect(TransmitTap.segmentDestination(udp[...]) == nil && TransmitTap.segmentDestination(data.prefix(23)) == nil)
    }

    @Test("the clients' RTOs are read from ss, and the returned router's resync is recognised")
    func rtoAndResync() {
        let ss = """
            Recv-Q Send-Q Local Address:Port Peer Address:Port
            0      0      10.0.0.2:40000     198.51.100.10:7000
            \t cubic wscale:7,7 rto:204 rtt:1.2/0.5 ato:40 mss:1448 cwnd:10
            0      0      10.0.0.2:40001     198.51.100.10:7000
            \t cubic wscale:7,7 rto:208.5 rtt:3/1 mss:1448 cwnd:10 lastsnd:12 rtomin:200
            """
        #expect(DrillAnalysis.rtos(fromSS: ss) == [204, 208.5])
        #expect(DrillAnalysis.rtos(fromSS: "").isEmpty)
        #expect(DrillAnalysis.median(DrillAnalysis.rtos(fromSS: ss)) == 206.25)

        #expect(DrillAnalysis.resynced(held: 10, survivor: 10, holdQueue: 0, master: false))
        #expect(!DrillAnalysis.resynced(held: 10, survivor: 10, holdQueue: 3, master: false))
        #expect(DrillAnalysis.resynced(held: 10, survivor: 10, holdQueue: 3, master: true))
        #expect(!DrillAnalysis.resynced(held: 9, survivor: 10, holdQueue: 0, master: true))
        #expect(!DrillAnalysis.resynced(held: 0, survivor: 0, holdQueue: 0, master: false))
        #expect(!DrillAnalysis.resynced(held: 10, survivor: 10, holdQueue: nil, master: false))
    }

    /// The small drill of issue 7: 100 TCP and 20 UDP flows, 10,000 background conntracks, the
    /// sync run and the control run, nf_conntrack_tcp_loose=1.
    @Test("a small drill: flows survive with the sync and die without it", .enabled(if: runningAsRoot, "needs root: network namespaces, nftables and conntrack"), .timeLimit(.minutes(3)))
    func smallDrill() throws {
        let exe = try #require(keepstateExecutable(), "build the keepstate executable first (swift build)")
        let args = ["--tcp", "100", "--udp", "20", "--background", "10000", "--loose", "1", "--observe", "5", "--json"]
        // VRRP elects (the daemon's own instances in a sync group), as `make drill` runs it.
        let r = try runDrill(exe, args)
        #expect(r.status == 0, "drill exited \(r.status):\n\(r.stdout)\n\(r.stderr.suffix(4000))")
        let report = try JSONDecoder().decode(DrillReport.self, from: Data(r.stdout.utf8))
        #expect(report.settings.ha == "vrrp")
        #expect(report.runs.map(\.name) == ["sync loose=1", "control loose=1"])
        let sync = try #require(report.runs.first)
        #expect(sync.tcp.survived == 100 && sync.tcp.reset == 0)
        // The clients' transmit tap saw every surviving flow's answered transmission.
        #expect(sync.tapError == nil && sync.tcp.tapFlows == 100, "tap: \(sync.tapError ?? "-"), \(String(describing: sync.tcp.tapFlows))")
        #expect((sync.tcp.waitMedian ?? 0) > 0 && (sync.tcp.answerMedian ?? -1) >= 0)
        #expect(sync.udp.survived == 20 && sync.udp.reNATed == 0)
        #expect((sync.backupHeld ?? 0) >= 10_000)
        #expect(sync.failback?.tcp.reset == 0)
        let control = try #require(report.runs.last)
        // A new random NAT port equal to the old one lets a flow go on by chance (1 in 40,000).
        #expect(control.tcp.survived <= 1)
        // With nf_conntrack_tcp_loose=1 the server answers a re-NATed segment with RST.
        #expect(control.tcp.reset + control.tcp.stalled + control.tcp.survived == 100 && control.tcp.reset > 0)
        #expect(control.udp.reNATed >= 19)
        #expect(report.passed)
        // Nothing left behind.
        let left = try Shell.run(["ip", "netns", "list"]).output
        #expect(!left.contains("ksd\(r.pid)-"), "namespaces left: \(left)")
    }
}
