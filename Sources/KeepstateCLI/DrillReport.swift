import Foundation

// The drill's report: what one run measured, the expectations it checks, and the table printed
// at the end (one column per run). The JSON form (`keepstate drill --json`) is `DrillReport`.

public struct DrillSettings: Codable, Sendable, Equatable {
    public var tcp: Int
    public var udp: Int
    public var intervalMs: Int
    public var background: Int
    /// `vrrp` or `static` (development only: the drill moves the addresses itself).
    public var ha: String
    /// What the failure is: `power` (cut off from every segment at once, its ports on the bridges
    /// disabled, then the daemon killed; back as after a reboot) or `links` (all its links down
    /// at once, the daemon left running).
    public var failure: String
    public var stallBound: Double
    public var observe: Double
    public var eventThreads: Int
    /// Whether the CPUs were left to go idle around the failure (`--idle-cpus`); by default a
    /// SCHED_IDLE spinner per CPU kept them awake.
    public var idleCPUs = false
}

/// Flows of one protocol around one event (the failure, or the failback).
public struct DrillFlowSummary: Codable, Sendable, Equatable {
    public var total: Int = 0
    /// Answered within the stall bound, not reset, and (UDP) under the same NAT address and port.
    public var survived: Int = 0
    /// Ended by a reset (ECONNRESET/EPIPE) or the server's FIN, or another error.
    public var reset: Int = 0
    /// No answer within the stall bound (or none at all before the window ended).
    public var stalled: Int = 0
    /// UDP: the server saw the flow from a new NAT address or port.
    public var reNATed: Int = 0
    /// Flows that had ended or never answered before the event (a broken setup).
    public var brokenBefore: Int = 0
    /// Seconds without a reply across the event, over flows that answered again.
    public var stallMedian: Double?
    public var stallMax: Double?
    /// The same stall by the kernel's receive time of the replies on the clients' host instead
    /// of the generator's read: the network's part, without the generator's wait for a CPU
    /// (every namespace of the drill shares this machine's cores with both routers).
    public var kernelStallMedian: Double?
    public var kernelStallMax: Double?
    /// TCP: retransmissions per surviving flow from the failure to the return (or the end), as
    /// the client's kernel counted them (TCP_INFO): how many of its retransmissions the outage
    /// took, loss probes included.
    public var retransmitsMedian: Double?
    public var retransmitsMax: Int?
    /// TCP, from the clients' transmit tap (nil without one): the stall split at the flow's
    /// transmission that crossed the new master (the last it sent before it heard from the
    /// server again after the takeover). `wait`:
    /// from the last reply before the failure to that transmission, which the clients' TCP
    /// retransmission timers decide; `answer`: from it to the reply (the routers, the server
    /// and back). Over the surviving flows the tap saw, by kernel times.
    public var tapFlows: Int?
    public var waitMedian: Double?
    public var waitMax: Double?
    public var answerMedian: Double?
    public var answerMax: Double?
    /// That transmission's time after the survivor held the virtual addresses (seconds; the
    /// drill's 2 ms poll), and the flows that sent one or more transmissions between that
    /// moment and the answered one: lost although the addresses had moved.
    public var answeredAfterTakeoverMedian: Double?
    public var answeredAfterTakeoverMax: Double?
    public var lostAfterTakeover: Int?
    /// The latest of those transmissions sent in vain, in seconds after the survivor had the
    /// addresses: a few milliseconds point at the announcements (gratuitous ARP) that follow the
    /// addresses, a later one at forwarding that was not ready.
    public var lostAfterTakeoverLatest: Double?
    /// UDP messages without a reply (whole run), and the most of one flow.
    public var lost: Int?
    public var lostMaxPerFlow: Int?
}

public struct DrillFailback: Codable, Sendable, Equatable {
    /// Seconds from the return (links up, daemon started) until its held table reached the
    /// survivor's table; nil: not within the wait.
    public var resyncSeconds: Double?
    public var returnedHeld: Int
    public var survivorTable: Int
    /// Whether the returned router became master again, and when (seconds after the return).
    public var preempted: Bool
    public var preemptSeconds: Double?
    /// What the returned router held when it became master, and the survivor's table just
    /// before (read first, so that it does not count what came after).
    public var heldAtPreempt: Int?
    public var survivorTableAtPreempt: Int?
    public var tcp: DrillFlowSummary
    public var udp: DrillFlowSummary
}

public struct DrillCheck: Codable, Sendable, Equatable {
    public var name: String
    public var passed: Bool
    public var detail: String
}

public struct DrillRunReport: Codable, Sendable, Equatable {
    public var name: String
    public var sync: Bool
    public var loose: Int
    /// keepalived + conntrackd instead of keepstate (`--baseline`): no expectations beyond the
    /// setup's; `masterTable` and `backupHeld` are conntrackd's internal and external caches.
    public var baseline = false
    /// Baseline: seconds the survivor's notify script spent in `conntrackd -c` (the commit of
    /// the external cache into the kernel), which starts after keepalived took the addresses.
    public var commitSeconds: Double?
    /// Conntracks of the master (its daemon's count of those that qualify) and held by the
    /// backup, just before the failure.
    public var masterTable: Int?
    public var backupHeld: Int?
    /// Seconds to put the background conntracks in the master's table, and until the backup
    /// held the whole table.
    public var fillSeconds: Double?
    public var syncSeconds: Double?
    /// Background conntracks the kernel refused (a few may be: ENOSPC on a long hash chain).
    public var backgroundRefused: Int?
    /// VRRP and the baseline: seconds from the failure until the survivor held both
    /// virtual addresses (netlink, polled every 2 ms).
    /// Static: until `set-state master` on the survivor returned (before the addresses moved).
    public var survivorMasterSeconds: Double?
    /// The survivor daemon's own figure: takeover decision to every held conntrack forwardable.
    public var daemonTakeoverSeconds: Double?
    /// Seconds from the failure until the last flow's first reply (nil: not every flow answered).
    public var allAnsweredSeconds: Double?
    /// The clients' TCP retransmission timeouts just before the failure (ms, median and maximum,
    /// from `ss -ti`): a surviving flow's stall is set by them once the takeover is done.
    public var clientRTOMedianMs: Double?
    public var clientRTOMaxMs: Double?
    /// The client generator's longest wake-up delay after the failure (seconds; it wakes every
    /// 2 ms): how long it waited for a CPU while the flows stalled.
    public var clientLateSeconds: Double?
    /// The CPU waker's SCHED_IDLE spinners running at the failure, of one per CPU (nil:
    /// `--idle-cpus`).
    public var cpuSpinners: Int?
    public var cpus: Int?
    /// The clients' transmit tap: segments it dropped (a full buffer), or why it did not open.
    public var tapDrops: UInt32?
    public var tapError: String?
    public var tcp: DrillFlowSummary
    public var udp: DrillFlowSummary
    public var failback: DrillFailback?
    /// The survivor's forward chain counters at the end (invalid, established, new, policy).
    public var survivorCounters: String?
    public var checks: [DrillCheck]
    public var passed: Bool { checks.allSatisfy(\.passed) }

    enum CodingKeys: String, CodingKey {
        case name, sync, loose, baseline, commitSeconds, masterTable, backupHeld, fillSeconds, syncSeconds, backgroundRefused, survivorMasterSeconds,
             daemonTakeoverSeconds, allAnsweredSeconds, clientRTOMedianMs, clientRTOMaxMs, clientLateSeconds, cpuSpinners, cpus, tapDrops, tapError, tcp, udp, failback, survivorCounters, checks, passed
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(sync, forKey: .sync)
        try c.encode(loose, forKey: .loose)
        if baseline { try c.encode(baseline, forKey: .baseline) }
        try c.encodeIfPresent(commitSeconds, forKey: .commitSeconds)
        try c.encodeIfPresent(masterTable, forKey: .masterTable)
        try c.encodeIfPresent(backupHeld, forKey: .backupHeld)
        try c.encodeIfPresent(fillSeconds, forKey: .fillSeconds)
        try c.encodeIfPresent(syncSeconds, forKey: .syncSeconds)
        try c.encodeIfPresent(backgroundRefused, forKey: .backgroundRefused)
        try c.encodeIfPresent(survivorMasterSeconds, forKey: .survivorMasterSeconds)
        try c.encodeIfPresent(daemonTakeoverSeconds, forKey: .daemonTakeoverSeconds)
        try c.encodeIfPresent(allAnsweredSeconds, forKey: .allAnsweredSeconds)
        try c.encodeIfPresent(clientRTOMedianMs, forKey: .clientRTOMedianMs)
        try c.encodeIfPresent(clientRTOMaxMs, forKey: .clientRTOMaxMs)
        try c.encodeIfPresent(clientLateSeconds, forKey: .clientLateSeconds)
        try c.encodeIfPresent(cpuSpinners, forKey: .cpuSpinners)
        try c.encodeIfPresent(cpus, forKey: .cpus)
        try c.encodeIfPresent(tapDrops, forKey: .tapDrops)
        try c.encodeIfPresent(tapError, forKey: .tapError)
        try c.encode(tcp, forKey: .tcp)
        try c.encode(udp, forKey: .udp)
        try c.encodeIfPresent(failback, forKey: .failback)
        try c.encodeIfPresent(survivorCounters, forKey: .survivorCounters)
        try c.encode(checks, forKey: .checks)
        try c.encode(passed, forKey: .passed)
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        sync = try c.decode(Bool.self, forKey: .sync)
        loose = try c.decode(Int.self, forKey: .loose)
        baseline = try c.decodeIfPresent(Bool.self, forKey: .baseline) ?? false
        commitSeconds = try c.decodeIfPresent(Double.self, forKey: .commitSeconds)
        masterTable = try c.decodeIfPresent(Int.self, forKey: .masterTable)
        backupHeld = try c.decodeIfPresent(Int.self, forKey: .backupHeld)
        fillSeconds = try c.decodeIfPresent(Double.self, forKey: .fillSeconds)
        syncSeconds = try c.decodeIfPresent(Double.self, forKey: .syncSeconds)
        backgroundRefused = try c.decodeIfPresent(Int.self, forKey: .backgroundRefused)
        survivorMasterSeconds = try c.decodeIfPresent(Double.self, forKey: .survivorMasterSeconds)
        daemonTakeoverSeconds = try c.decodeIfPresent(Double.self, forKey: .daemonTakeoverSeconds)
        allAnsweredSeconds = try c.decodeIfPresent(Double.self, forKey: .allAnsweredSeconds)
        clientRTOMedianMs = try c.decodeIfPresent(Double.self, forKey: .clientRTOMedianMs)
        clientRTOMaxMs = try c.decodeIfPresent(Double.self, forKey: .clientRTOMaxMs)
        clientLateSeconds = try c.decodeIfPresent(Double.self, forKey: .clientLateSeconds)
        cpuSpinners = try c.decodeIfPresent(Int.self, forKey: .cpuSpinners)
        cpus = try c.decodeIfPresent(Int.self, forKey: .cpus)
        tapDrops = try c.decodeIfPresent(UInt32.self, forKey: .tapDrops)
        tapError = try c.decodeIfPresent(String.self, forKey: .tapError)
        tcp = try c.decode(DrillFlowSummary.self, forKey: .tcp)
        udp = try c.decode(DrillFlowSummary.self, forKey: .udp)
        failback = try c.decodeIfPresent(DrillFailback.self, forKey: .failback)
        survivorCounters = try c.decodeIfPresent(String.self, forKey: .survivorCounters)
        checks = try c.decode([DrillCheck].self, forKey: .checks)
    }

    init(name: String, sync: Bool, loose: Int) {
        self.name = name
        self.sync = sync
        self.loose = loose
        tcp = DrillFlowSummary()
        udp = DrillFlowSummary()
        checks = []
    }
}

public struct DrillReport: Codable, Sendable, Equatable {
    public var settings: DrillSettings
    public var runs: [DrillRunReport]
    /// Said when something limits what the report means (the static driver, skipped runs).
    public var notes: [String]
    public var passed: Bool
}

// MARK: - analysis

enum DrillAnalysis {
    static func seconds(_ ns: UInt64) -> Double { Double(ns) / 1e9 }

    static func median(_ xs: [Double]) -> Double? {
        guard !xs.isEmpty else { return nil }
        let s = xs.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    /// Whether the returned router has resynced: it holds at least the survivor's table and has
    /// written it to its kernel table (hold queue empty). Once it is master the queue may hold
    /// the survivor's last updates as it takes over; the failback hold released mastership only
    /// after the resync was written, so mastership with the table counts as resynced.
    static func resynced(held: Int, survivor: Int, holdQueue: Int?, master: Bool) -> Bool {
        held > 0 && held >= survivor && (holdQueue == 0 || master)
    }

    /// The `rto:` values (ms) of `ss -ti` output, one per connection.
    static func rtos(fromSS text: String) -> [Double] {
        text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).compactMap { word in
            word.hasPrefix("rto:") ? Double(word.dropFirst(4)) : nil
        }
    }

    /// The flows around the failure (mark 0 at `failure`), up to `windowEnd`.
    static func atFailure(_ client: DrillClientReport, _ server: DrillServerReport?, proto: String, failure: UInt64,
                          windowEnd: UInt64, bound: Double, takeover: UInt64? = nil) -> DrillFlowSummary {
        var s = DrillFlowSummary()
        var stalls: [Double] = []
        var kernelStalls: [Double] = []
        var retransmits: [Double] = []
        var waits: [Double] = []
        var answers: [Double] = []
        var afterTakeover: [Double] = []
        var lostAfterTakeover = 0
        var latestLost: UInt64?
        let seen = Dictionary(uniqueKeysWithValues: (server?.udpFlows ?? []).map { ($0.flow, $0) })
        for f in client.flows where f.proto == proto {
            s.total += 1
            if let end = f.endedAt, end <= failure { s.brokenBefore += 1; continue }
            if f.firstReply == nil || f.firstReply! > failure { s.brokenBefore += 1; continue }
            if let end = f.endedAt, end < windowEnd, f.status != "open" { s.reset += 1; continue }
            let reNATed = proto == "udp" && (seen[f.flow].map { v in
                v.firstSeen.dropFirst().contains { $0 >= failure && $0 < windowEnd }
            } ?? false)
            if reNATed { s.reNATed += 1 }
            guard let after = f.markAfter.first ?? nil, after < windowEnd else { s.stalled += 1; continue }
            let before = (f.markBefore.first ?? nil) ?? f.firstReply!
            let stall = seconds(after - before)
            stalls.append(stall)
            // Kernel times only (a flow without a kernel-stamped reply before the failure has none).
            if let kAfter = f.kernelMarkAfter.first ?? nil, let kBefore = f.kernelMarkBefore.first ?? nil, kAfter > kBefore {
                kernelStalls.append(seconds(kAfter - kBefore))
                // The transmission that crossed: the last one the host sent before it heard from
                // the server again after its first transmission since the takeover (nothing can
                // come back before the takeover), or, without the arriving side, before the
                // answer. Heard "after its first transmission": the server's own retransmission
                // can cross first, answering nothing the client sent; and an ACK can come back
                // before the echo and let the host send more, which is not a transmission lost.
                let since = takeover ?? failure + 10_000_000
                let heard: UInt64
                if let arrivals = f.arrivals {
                    let first = f.transmits?.first(where: { $0 > since }) ?? since
                    heard = arrivals.first(where: { $0 > first }) ?? kAfter
                } else {
                    heard = kAfter
                }
                // A flow whose record reached the taps' limit may have its crossing past the end.
                let full = (f.transmits?.count ?? 0) >= DrillFlowRecord.tapLimit || (f.arrivals?.count ?? 0) >= DrillFlowRecord.tapLimit
                if !full, let sent = f.transmits, let answered = sent.last(where: { $0 <= min(heard, kAfter) }), answered > failure,
                   answered > kBefore {
                    waits.append(seconds(answered - kBefore))
                    answers.append(seconds(kAfter - answered))
                    if let takeover {
                        afterTakeover.append(answered >= takeover ? seconds(answered - takeover) : -seconds(takeover - answered))
                        if let vain = sent.last(where: { $0 > takeover && $0 < answered }) {
                            lostAfterTakeover += 1
                            latestLost = max(latestLost ?? 0, vain - takeover)
                        }
                    }
                }
            }
            if let atFailure = f.retransmitsAtMark.first ?? nil,
               let after = f.retransmitsAtMark.count > 1 ? f.retransmitsAtMark[1] : f.retransmitsAtEnd, after >= atFailure {
                retransmits.append(Double(after - atFailure))
            }
            if stall > bound { s.stalled += 1; continue }
            if !reNATed { s.survived += 1 }
        }
        s.stallMedian = median(stalls)
        s.stallMax = stalls.max()
        s.kernelStallMedian = median(kernelStalls)
        s.kernelStallMax = kernelStalls.max()
        s.retransmitsMedian = median(retransmits)
        s.retransmitsMax = retransmits.max().map { Int($0) }
        if client.flows.contains(where: { $0.proto == proto && $0.transmits != nil }) {
            s.tapFlows = waits.count
            s.waitMedian = median(waits)
            s.waitMax = waits.max()
            s.answerMedian = median(answers)
            s.answerMax = answers.max()
            if takeover != nil {
                s.answeredAfterTakeoverMedian = median(afterTakeover)
                s.answeredAfterTakeoverMax = afterTakeover.max()
                s.lostAfterTakeover = lostAfterTakeover
                s.lostAfterTakeoverLatest = latestLost.map(seconds)
            }
        }
        if proto == "udp" {
            let flows = client.flows.filter { $0.proto == "udp" }
            s.lost = flows.reduce(0) { $0 + max(0, $1.sent - $1.received) }
            s.lostMaxPerFlow = flows.map { max(0, $0.sent - $0.received) }.max() ?? 0
        }
        return s
    }

    /// The flows from the return of the failed router (`back`) to the end of the run: resets,
    /// the longest reply gap in that window, and (UDP) new NAT sources.
    static func atFailback(_ client: DrillClientReport, _ server: DrillServerReport?, proto: String, back: UInt64,
                           bound: Double) -> DrillFlowSummary {
        var s = DrillFlowSummary()
        var stalls: [Double] = []
        let seen = Dictionary(uniqueKeysWithValues: (server?.udpFlows ?? []).map { ($0.flow, $0) })
        for f in client.flows where f.proto == proto {
            s.total += 1
            if let end = f.endedAt, end <= back { s.brokenBefore += 1; continue }
            if f.status != "open" { s.reset += 1; continue }
            let reNATed = proto == "udp" && (seen[f.flow].map { v in v.firstSeen.dropFirst().contains { $0 >= back } } ?? false)
            if reNATed { s.reNATed += 1 }
            var longest: UInt64 = 0
            for g in f.gaps where g.count == 2 && g[1] > back { longest = max(longest, g[1] - max(g[0], back)) }
            // A gap still open at the end.
            if let last = f.lastReply, client.stopped > last, client.stopped - last > client.gapThreshold + 300_000_000 {
                longest = max(longest, client.stopped - max(last, back))
            }
            let stall = seconds(longest)
            stalls.append(stall)
            if stall > bound { s.stalled += 1; continue }
            if !reNATed { s.survived += 1 }
        }
        s.stallMedian = median(stalls)
        s.stallMax = stalls.max()
        return s
    }

    /// Seconds from the failure until every flow that was up had answered again (nil if one did not).
    static func allAnswered(_ client: DrillClientReport, failure: UInt64, windowEnd: UInt64) -> Double? {
        var latest: UInt64 = failure
        for f in client.flows {
            if let end = f.endedAt, end <= failure { continue }
            guard let after = f.markAfter.first ?? nil, after < windowEnd else { return nil }
            latest = max(latest, after)
        }
        return seconds(latest - failure)
    }

    /// The expectations of a run.
    static func checks(_ r: DrillRunReport, settings: DrillSettings) -> [DrillCheck] {
        var c: [DrillCheck] = []
        let bound = String(format: "%.1f s", settings.stallBound)
        c.append(DrillCheck(
            name: "every flow was up before the failure",
            passed: r.tcp.brokenBefore == 0 && r.udp.brokenBefore == 0,
            detail: "\(r.tcp.brokenBefore) TCP and \(r.udp.brokenBefore) UDP flows broken before"))
        if r.baseline { return c }
        if r.sync {
            let held = r.backupHeld ?? 0, table = r.masterTable ?? 0
            c.append(DrillCheck(name: "the backup held the master's table before the failure",
                                passed: table > 0 && held >= table, detail: "held \(held) of \(table)"))
            if settings.ha == "vrrp" {
                c.append(DrillCheck(name: "the survivor took the virtual addresses", passed: r.survivorMasterSeconds != nil,
                                    detail: r.survivorMasterSeconds.map { String(format: "after %.3f s", $0) } ?? "never"))
            }
            c.append(DrillCheck(name: "no TCP flow was reset at the failover", passed: r.tcp.reset == 0,
                                detail: "\(r.tcp.reset) of \(r.tcp.total) reset"))
            c.append(DrillCheck(name: "every TCP flow answered within \(bound)", passed: r.tcp.stalled == 0,
                                detail: "\(r.tcp.stalled) stalled longer"))
            c.append(DrillCheck(name: "no UDP flow was re-NATed", passed: r.udp.reNATed == 0,
                                detail: "\(r.udp.reNATed) of \(r.udp.total) seen under a new NAT port"))
            c.append(DrillCheck(name: "every UDP flow answered within \(bound)", passed: r.udp.stalled == 0 && r.udp.reset == 0,
                                detail: "\(r.udp.stalled) stalled longer"))
            if let f = r.failback {
                c.append(DrillCheck(name: "the returned router resynced", passed: f.resyncSeconds != nil,
                                    detail: "held \(f.returnedHeld) of the survivor's \(f.survivorTable)"))
                if f.preempted {
                    let atHeld = f.heldAtPreempt ?? 0
                    let survivor = f.survivorTableAtPreempt
                    c.append(DrillCheck(name: "the returned router became master only with the table",
                                        passed: survivor.map { atHeld >= $0 } ?? false,
                                        detail: "held \(atHeld) of the survivor's \(survivor.map(String.init) ?? "(unread)") when it became master"))
                }
                c.append(DrillCheck(
                    name: "no flow was lost at the failback",
                    passed: f.tcp.reset == 0 && f.tcp.stalled == 0 && f.udp.reset == 0 && f.udp.stalled == 0 && f.udp.reNATed == 0,
                    detail: "TCP \(f.tcp.reset) reset, \(f.tcp.stalled) stalled; UDP \(f.udp.stalled) stalled, \(f.udp.reNATed) re-NATed"))
            }
        } else {
            // A router that never saw a flow picks its NAT port at random among 40,000: about one
            // flow in 40,000 gets its old port back and goes on. Chance allows 1% of the flows.
            func chance(_ total: Int) -> Int { max(1, total / 100) }
            c.append(DrillCheck(name: "without sync, no TCP flow survived (the drill has teeth)",
                                passed: r.tcp.survived <= chance(r.tcp.total),
                                detail: "\(r.tcp.survived) of \(r.tcp.total) survived; chance (a new NAT port equal to the old one) allows \(chance(r.tcp.total))"))
            c.append(DrillCheck(name: "without sync, no UDP flow kept its NAT port",
                                passed: r.udp.survived <= chance(r.udp.total),
                                detail: "\(r.udp.survived) of \(r.udp.total) survived; chance allows \(chance(r.udp.total))"))
        }
        return c
    }

    // MARK: rendering

    static func table(_ report: DrillReport) -> String {
        let s = report.settings
        var out = "keepstate drill: \(s.tcp) TCP + \(s.udp) UDP flows, one message every \(s.intervalMs) ms each; "
        out += "background \(s.background) conntracks; HA driver \(s.ha)"
        out += s.ha == "static" ? " (DEVELOPMENT ONLY: the drill moves the addresses, no VRRP)" : " (VRRP, advert_int 0.1)"
        out += s.failure == "links"
            ? "\nfailure: all links of the master down at once, its daemon left running (links); "
            : "\nfailure: the master cut off from every segment at once (its bridge ports disabled), its daemon killed (power loss); "
        out += "stall bound \(fmt(s.stallBound)) s; "
        out += s.idleCPUs ? "CPUs left to idle (--idle-cpus)\n\n" : "CPUs kept awake around the failure (a SCHED_IDLE spinner each)\n\n"
        func f(_ d: Double?) -> String { d.map { fmt($0) } ?? "-" }
        func n(_ i: Int?) -> String { i.map(String.init) ?? "-" }
        let runs = report.runs
        var rows: [(String, [String])] = []
        rows.append(("table on the master before failure", runs.map { n($0.masterTable) }))
        rows.append(("held by the backup before failure", runs.map { $0.sync || $0.baseline ? n($0.backupHeld) : "- (no sync)" }))
        rows.append(("background fill / sync of the table (s)", runs.map { "\(f($0.fillSeconds)) / \(f($0.syncSeconds))" }))
        rows.append(("survivor master after failure (s)", runs.map { f($0.survivorMasterSeconds) }))
        rows.append(("daemon takeover: held forwardable (ms)", runs.map { $0.sync ? fmt($0.daemonTakeoverSeconds.map { $0 * 1000 }) : "-" }))
        if runs.contains(where: \.baseline) {
            rows.append(("conntrackd commit on the survivor (s)", runs.map { $0.baseline ? f($0.commitSeconds) : "-" }))
        }
        rows.append(("every flow answered again after (s)", runs.map { f($0.allAnsweredSeconds) }))
        rows.append(("TCP survived", runs.map { "\($0.tcp.survived)/\($0.tcp.total)" }))
        rows.append(("TCP reset", runs.map { "\($0.tcp.reset)" }))
        rows.append(("TCP stalled > bound or silent", runs.map { "\($0.tcp.stalled)" }))
        rows.append(("TCP stall median / max (s)", runs.map { "\(f($0.tcp.stallMedian)) / \(f($0.tcp.stallMax))" }))
        rows.append(("  by kernel receive time (s)", runs.map { "\(f($0.tcp.kernelStallMedian)) / \(f($0.tcp.kernelStallMax))" }))
        rows.append(("  client generator's longest wake-up delay (s)", runs.map { f($0.clientLateSeconds) }))
        if runs.contains(where: { $0.tcp.tapFlows != nil }) {
            rows.append(("  flows seen by the clients' transmit tap", runs.map { r in
                r.tcp.tapFlows.map { "\($0)" + (r.tapDrops.map { $0 > 0 ? " (\($0) lost)" : "" } ?? "") } ?? "-"
            }))
            rows.append(("  wait for the transmission that crossed (s)", runs.map { "\(f($0.tcp.waitMedian)) / \(f($0.tcp.waitMax))" }))
            rows.append(("  answer to it (s)", runs.map { "\(f($0.tcp.answerMedian)) / \(f($0.tcp.answerMax))" }))
            rows.append(("  it left after the survivor had the addresses (s)", runs.map {
                "\(f($0.tcp.answeredAfterTakeoverMedian)) / \(f($0.tcp.answeredAfterTakeoverMax))"
            }))
            rows.append(("  flows that sent in vain after the survivor had them (latest, s after)", runs.map { r in
                r.tcp.lostAfterTakeover.map { "\($0)" + (r.tcp.lostAfterTakeoverLatest.map { " (\(fmt($0)))" } ?? "") } ?? "-"
            }))
        }
        rows.append(("TCP retransmissions per flow across the failure, median / max", runs.map { r in
            r.tcp.retransmitsMedian.map { String(format: "%.1f / %d", $0, r.tcp.retransmitsMax ?? 0) } ?? "-"
        }))
        rows.append(("client TCP RTO at failure, median / max (ms)",
                     runs.map { r in r.clientRTOMedianMs.map { "\(Int($0.rounded())) / \(Int((r.clientRTOMaxMs ?? $0).rounded()))" } ?? "-" }))
        rows.append(("UDP survived (same NAT port)", runs.map { "\($0.udp.survived)/\($0.udp.total)" }))
        rows.append(("UDP re-NATed", runs.map { "\($0.udp.reNATed)" }))
        rows.append(("UDP stall median / max (s)", runs.map { "\(f($0.udp.stallMedian)) / \(f($0.udp.stallMax))" }))
        rows.append(("UDP messages lost (most in one flow)", runs.map { "\(n($0.udp.lost)) (\(n($0.udp.lostMaxPerFlow)))" }))
        if runs.contains(where: { $0.failback != nil }) {
            rows.append(("failback: returned router resync (s)", runs.map { $0.failback.map { f($0.resyncSeconds) } ?? "-" }))
            rows.append(("failback: held / survivor table", runs.map { $0.failback.map { "\($0.returnedHeld)/\($0.survivorTable)" } ?? "-" }))
            rows.append(("failback: preempted (s after return)", runs.map { r in
                r.failback.map { $0.preempted ? "yes, \(f($0.preemptSeconds))" : "no" } ?? "-"
            }))
            rows.append(("failback: held when preempting", runs.map { r in
                r.failback.flatMap { f in f.heldAtPreempt.map { "\($0)/\(f.survivorTableAtPreempt.map(String.init) ?? "?")" } } ?? "-"
            }))
            rows.append(("failback: TCP reset / stalled", runs.map { $0.failback.map { "\($0.tcp.reset) / \($0.tcp.stalled)" } ?? "-" }))
            rows.append(("failback: TCP longest gap (s)", runs.map { $0.failback.map { f($0.tcp.stallMax) } ?? "-" }))
            rows.append(("failback: UDP re-NATed / stalled", runs.map { $0.failback.map { "\($0.udp.reNATed) / \($0.udp.stalled)" } ?? "-" }))
        }
        rows.append(("expectations", runs.map { $0.passed ? "PASS" : "FAIL" }))

        let labelWidth = rows.map(\.0.count).max() ?? 0
        let widths = runs.indices.map { i in max(runs[i].name.count, rows.map { $0.1[i].count }.max() ?? 0) }
        func line(_ label: String, _ cells: [String]) -> String {
            var l = label.padding(toLength: labelWidth, withPad: " ", startingAt: 0)
            for (i, c) in cells.enumerated() { l += "   " + String(repeating: " ", count: max(0, widths[i] - c.count)) + c }
            return l
        }
        out += line("", runs.map(\.name)) + "\n"
        for r in rows { out += line(r.0, r.1) + "\n" }
        for r in runs {
            let failed = r.checks.filter { !$0.passed }
            if failed.isEmpty { continue }
            out += "\n\(r.name): FAILED\n"
            for c in failed { out += "  - \(c.name): \(c.detail)\n" }
        }
        for r in runs {
            if let e = r.tapError { out += "\nnote: \(r.name): the clients' transmit tap did not open (\(e))" }
            if let n = r.cpuSpinners, let m = r.cpus, n < m {
                out += "\nnote: \(r.name): \(n) of \(m) CPU spinners ran at the failure (the kernel refused SCHED_IDLE, or they were late)"
            }
        }
        for note in report.notes { out += "\nnote: \(note)" }
        out += "\n\(report.passed ? "PASS" : "FAIL"): the drill's expectations \(report.passed ? "hold" : "do not hold")"
        return out
    }

    static func fmt(_ d: Double?, digits: Int = 3) -> String {
        guard let d else { return "-" }
        return String(format: "%.\(digits)f", d)
    }

    static func fmt(_ d: Double) -> String { String(format: "%.3f", d) }
}
