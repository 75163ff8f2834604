import Foundation
import Glibc
public import Logging
import VRRP
import VRRPNet

/// Takeover time of a backup when a keepalived master fails, measured from packet timestamps on
/// the segment, with keepalived and with our runner as the backup, side by side.
///
/// Topology: three namespaces, a bridge (no STP, no forward delay, no multicast snooping) and two
/// hosts: the master M (keepalived 2.2.7, 192.0.2.1, priority 200) and the backup B (192.0.2.2,
/// priority 100: keepalived, or `VRRPRunner`), VRRPv3 over IPv4, one VIP. tshark captures every
/// advert on the bridge. Per run: (re)start keepalived on M, wait until it is master and B backup,
/// let it settle, fail M, wait until B holds the VIP. Failures:
/// - hard: `ip link set veth0 down` in M's namespace (M goes silent at once);
/// - clean: SIGTERM to keepalived on M (it sends priority 0 and removes its VIP).
/// Takeover = time of B's first advert after the failure minus time of M's last advert before it
/// (for the clean stop, that is the priority-0 advert). Expected: Master_Down_Interval of B for a
/// hard failure, Skew_Time of B for a clean stop; target: expected + 20 ms.
///
/// Needs root, keepalived and tshark. Everything runs inside namespaces it makes and removes.
public enum VRRPTakeoverBench {
    public enum Failure: String, Sendable, CaseIterable {
        case hard = "hard (link cut)"
        case clean = "clean stop (priority 0)"
    }

    public enum Backup: String, Sendable, CaseIterable {
        case keepalived
        case keepstate
    }

    public struct Options: Sendable {
        /// Runs per (backup, failure).
        public var runs: Int
        /// advert_int in centiseconds (10 = keepalived `advert_int 0.1`).
        public var advertIntervalCentiseconds: UInt16
        public var masterPriority: UInt8
        public var backupPriority: UInt8
        public var backups: [Backup]
        public var failures: [Failure]

        public init(runs: Int = 5, advertIntervalCentiseconds: UInt16 = 10, masterPriority: UInt8 = 200,
                    backupPriority: UInt8 = 100, backups: [Backup] = Backup.allCases, failures: [Failure] = Failure.allCases) {
            self.runs = runs
            self.advertIntervalCentiseconds = advertIntervalCentiseconds
            self.masterPriority = masterPriority
            self.backupPriority = backupPriority
            self.backups = backups
            self.failures = failures
        }
    }

    public struct Row: Sendable, CustomStringConvertible {
        public var failure: Failure
        public var backup: Backup
        /// One takeover time per successful run.
        public var samples: [Duration]
        /// Runs in which no takeover could be measured.
        public var failedRuns: Int
        /// Master_Down_Interval (hard) or Skew_Time (clean) of the backup.
        public var expected: Duration
        /// `expected` + 20 ms.
        public var target: Duration
        /// keepstate only: from the runner's decision (its state change, wall clock) to its first
        /// advert on the wire: the `willBecomeMaster` hook and the address add (here `ip addr add`,
        /// a process) come first.
        public var decisionToFirstAdvert: [Duration] = []

        public var median: Duration? { VRRPTakeoverBench.median(samples) }
        public var minimum: Duration? { samples.min() }
        public var maximum: Duration? { samples.max() }
        public var withinTarget: Bool { median.map { $0 <= target } ?? false }

        public var description: String {
            func ms(_ d: Duration?) -> String {
                guard let d else { return "-" }
                return String(format: "%.1f", Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15)
            }
            let decision = decisionToFirstAdvert.isEmpty
                ? "" : "; decision -> first advert median \(ms(VRRPTakeoverBench.median(decisionToFirstAdvert))) ms"
            return "\(failure.rawValue) -> \(backup.rawValue): median \(ms(median)) ms (min \(ms(minimum)), max \(ms(maximum)), "
                + "n=\(samples.count)\(failedRuns > 0 ? ", \(failedRuns) failed" : "")); expected \(ms(expected)) ms, "
                + "target <= \(ms(target)) ms: \(withinTarget ? "met" : "MISSED")" + decision
        }
    }

    /// Runs the benchmark; returns one row per (failure, backup).
    public static func run(options: Options = Options(), logger: Logger) async throws -> [Row] {
        var rows: [Row] = []
        for backup in options.backups {
            let samples = try await measure(backup: backup, options: options, logger: logger)
            for failure in options.failures {
                let probe = VRRPInstanceState(config: VRRPInstanceConfig(
                    vrid: 51, priority: options.backupPriority, advertIntervalCentiseconds: options.advertIntervalCentiseconds,
                    version: .v3, primaryAddress: .v4(0xC000_0202)))
                let expected = failure == .hard ? probe.masterDownInterval : probe.skewTime
                let got = samples[failure] ?? []
                rows.append(Row(failure: failure, backup: backup, samples: got.compactMap { $0?.takeover },
                                failedRuns: got.filter { $0 == nil }.count, expected: expected,
                                target: expected + .milliseconds(20),
                                decisionToFirstAdvert: got.compactMap { $0?.decisionToAdvert }))
            }
        }
        return rows.sorted { ($0.failure.rawValue, $0.backup.rawValue) < ($1.failure.rawValue, $1.backup.rawValue) }
    }

    /// A table for the command line.
    public static func format(_ rows: [Row]) -> String {
        rows.map(\.description).joined(separator: "\n")
    }

    static func median(_ xs: [Duration]) -> Duration? {
        guard !xs.isEmpty else { return nil }
        let s = xs.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    private static let vip = "192.0.2.100"
    private static let masterIP = "192.0.2.1"
    private static let backupIP = "192.0.2.2"

    private static func advertText(_ cs: UInt16) -> String {
        cs % 100 == 0 ? "\(cs / 100)" : String(format: "%.2f", Double(cs) / 100)
    }

    private struct Sample {
        var takeover: Duration
        var decisionToAdvert: Duration?
    }

    private static func measure(backup: Backup, options: Options, logger: Logger) async throws -> [Failure: [Sample?]] {
        try await withLabSegment(tag: "bench") { segment in
            let m = try segment.addHost("m", number: 1, ipv4: masterIP)
            let b = try segment.addHost("b", number: 2, ipv4: backupIP)
            let capture = try LabCapture(namespace: segment.bridge, interface: "br0", filter: "ip proto 112",
                                         fields: ["frame.time_epoch", "ip.src", "vrrp.prio"], segment: segment)
            try await capture.waitUntilCapturing()
            let advert = advertText(options.advertIntervalCentiseconds)
            var ours: LabRunner?
            switch backup {
            case .keepalived:
                var c = KeepalivedInstanceConfig(routerID: "b", priority: Int(options.backupPriority), advertInterval: advert,
                                                 version: 3, virtualAddresses: [vip])
                c.vrid = 51
                _ = try LabKeepalived(on: b, config: c, segment: segment)
            case .keepstate:
                let runner = try await LabRunner(on: b, segment: segment, family: .ipv4, instance: { source in
                    VRRPInstanceConfig(vrid: 51, priority: options.backupPriority,
                                       advertIntervalCentiseconds: options.advertIntervalCentiseconds, version: .v3,
                                       primaryAddress: source, virtualAddresses: [.v4(0xC000_0264)])
                }, logger: logger)
                await runner.start()
                ours = runner
            }
            // B alone becomes master first.
            guard await labPoll(timeout: .seconds(10), { b.namespace.has(vip, on: "veth0") }) else {
                throw VRRPLabError("backup never became master alone")
            }
            // (failure, trigger time, wall-clock time of our runner's decision to become master)
            var triggers: [(Failure, Double, Double?)] = []
            for failure in options.failures {
                for run in 0..<options.runs {
                    var c = KeepalivedInstanceConfig(routerID: "m\(run)", priority: Int(options.masterPriority),
                                                     advertInterval: advert, version: 3, virtualAddresses: [vip])
                    c.vrid = 51
                    let master = try LabKeepalived(on: m, config: c, segment: segment)
                    let settled = await labPoll(timeout: .seconds(10)) {
                        let ourState = await ours?.runner.state
                        return m.namespace.has(vip, on: "veth0") && !b.namespace.has(vip, on: "veth0")
                            && (ourState == nil || ourState == .backup)
                    }
                    guard settled else {
                        logger.warning("bench: master did not settle", metadata: ["log": "\(master.log)"])
                        triggers.append((failure, -1, nil))
                        await master.stop()
                        continue
                    }
                    try? await Task.sleep(for: .milliseconds(400))
                    let t = wallClock()
                    switch failure {
                    case .hard: try m.namespace.must(["ip", "link", "set", "veth0", "down"])
                    case .clean: master.process.signal(SIGTERM)
                    }
                    let took = await labPoll(timeout: .seconds(5)) { b.namespace.has(vip, on: "veth0") }
                    var decision: Double?
                    if let ours, let change = await ours.runner.statistics.lastTransition, change.to == .master {
                        let c = change.wallClock.components
                        decision = Double(c.seconds) + Double(c.attoseconds) / 1e18
                    }
                    triggers.append((failure, took ? t : -1, decision))
                    try? await Task.sleep(for: .milliseconds(250))
                    await master.stop()
                    if failure == .hard { try m.namespace.must(["ip", "link", "set", "veth0", "up"]) }
                }
            }
            try? await Task.sleep(for: .milliseconds(200))
            let rows = await capture.stop()
            // (time, source, priority)
            let adverts: [(Double, String, Int)] = rows.compactMap { r in
                guard r.count >= 3, let t = Double(r[0]), let p = Int(r[2]) else { return nil }
                return (t, r[1], p)
            }
            var out: [Failure: [Sample?]] = [:]
            for (failure, t, decision) in triggers {
                guard t > 0,
                      let first = adverts.first(where: { $0.0 > t && $0.1 == backupIP && $0.2 > 0 }),
                      let last = adverts.last(where: { $0.0 < first.0 && $0.1 == masterIP }) else {
                    out[failure, default: []].append(nil)
                    continue
                }
                func duration(_ seconds: Double) -> Duration { .nanoseconds(Int64((seconds * 1e9).rounded())) }
                out[failure, default: []].append(Sample(takeover: duration(first.0 - last.0),
                                                        decisionToAdvert: decision.map { duration(first.0 - $0) }))
            }
            return out
        }
    }

    private static func wallClock() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
