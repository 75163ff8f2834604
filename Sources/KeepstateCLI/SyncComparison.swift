import ConntrackModel
import Daemon
import Dataplane
import Foundation
import Glibc
import NetfilterConntrack
import PKI
import Spawn
import SyncEngine

/// `keepstate bench --conntrackd`: keepstate's daemons (`keepstate run`, one per namespace)
/// against Debian's conntrackd (FTFW over UDP, the drill baseline's configuration) between the
/// same two namespaces, measured in the same invocation (docs/benchmarks.md):
///
/// 1. live sync of kernel events: N conntracks created in the master's namespace (batched,
///    through ctnetlink) while both daemons run; entries per second until the backup holds all
///    N (keepstate: `show state` held N with nothing queued for its kernel table; conntrackd: its
///    external cache counts N), and CPU (utime + stime from /proc/PID/stat) per entry of each
///    daemon process over that time;
/// 2. full resync of the N after a sync connection loss (keepstate: the master's sync sockets
///    destroyed with `ss -K`, until every connection's resync completed at the backup;
///    conntrackd: its external cache flushed and `conntrackd -n` on the backup, until it counts N);
/// 3. after a SIGKILL and restart of the master's daemon, the time until the backup is in sync
///    again (conntrackd: with the backup's external cache flushed first and `-n` asked once the
///    new master answers), against the kernel's dump rate measured in the same run;
/// 4. backup memory per entry: the backup daemon's resident set growth over the live sync / N;
/// 5. failover: the backup told to become master (keepstate: `set-state g master`, answered once
///    the takeover is prepared; conntrackd: `conntrackd -c`, the commit of its external cache,
///    what primary-backup.sh runs at a transition) until all N are in the backup's kernel table
///    and its daemon has answered.
enum SyncComparison {
    struct Figures {
        var liveRate = Double.nan
        var masterMicros = Double.nan
        var backupMicros = Double.nan
        var resyncAfterLoss = Double.nan
        var restartSync = Double.nan
        var dumpRate = Double.nan
        var memoryPerEntry = Double.nan
        /// The backup made master: decision to every entry in its kernel table, forwardable.
        var failover = Double.nan
    }

    static let masterSync = "10.150.0.1"
    static let backupSync = "10.150.0.2"
    static let port = 3790

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }

    /// Two namespaces joined by a veth `sync0` (10.150.0.1 and .2), deleted by `destroy`.
    final class Nodes {
        let master: String
        let backup: String
        init(tag: String) throws {
            master = "ks-cmp-\(tag)-m-\(getpid())"
            backup = "ks-cmp-\(tag)-b-\(getpid())"
            for ns in [master, backup] {
                DrillJanitor.deleteNamespace(ns)
                // Registered before it exists: an interruption or a failure below removes it.
                DrillJanitor.shared.adopt(namespace: ns)
                try Shell.must(["ip", "netns", "add", ns])
                try Shell.must(["ip", "-n", ns, "link", "set", "lo", "up"])
            }
            try Shell.must(["ip", "-n", master, "link", "add", "sync0", "type", "veth", "peer", "name", "sync0", "netns", backup])
            for (ns, a) in [(master, SyncComparison.masterSync), (backup, SyncComparison.backupSync)] {
                try Shell.must(["ip", "-n", ns, "addr", "add", "\(a)/24", "dev", "sync0"])
                try Shell.must(["ip", "-n", ns, "link", "set", "sync0", "up"])
            }
        }
        var masterPath: String { "/run/netns/\(master)" }
        /// Deletes both namespaces, killing whatever still runs in them (a daemon whose stop failed).
        func destroy() {
            for ns in [master, backup] {
                DrillJanitor.deleteNamespace(ns)
                DrillJanitor.shared.forget(namespace: ns)
            }
        }
    }

    /// A daemon started in a namespace (`ip netns exec` execs it: the PID is the daemon's).
    final class BenchDaemon {
        let pid: pid_t
        private var reaped = false
        init(netns: String, _ args: [String], log: String) throws {
            pid = try Spawn.start(["ip", "netns", "exec", netns] + args, output: .file(log))
        }
        func kill() {
            guard !reaped else { return }
            Glibc.kill(pid, SIGKILL)
            _ = Spawn.reap(pid, block: true)
            reaped = true
        }
        deinit { kill() }
        var running: Bool { !reaped && Spawn.reap(pid, block: false) == .running }

        /// utime + stime, seconds.
        var cpuSeconds: Double {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = text.lastIndex(of: ")") else { return .nan }
            let fields = text[text.index(after: close)...].split(separator: " ")
            // After the command: state is field 3; utime and stime are fields 14 and 15.
            guard fields.count > 12, let u = Double(fields[11]), let s = Double(fields[12]) else { return .nan }
            return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
        }

        var residentBytes: Double {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
                  let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
                  let kb = Double(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else { return .nan }
            return kb * 1024
        }
    }

    static func poll(_ seconds: Double, every: Double = 0.02, _ condition: () -> Bool) -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            if condition() { return true }
            usleep(useconds_t(every * 1_000_000))
        }
        return condition()
    }

    static func seconds(since t: ContinuousClock.Instant) -> Double { (ContinuousClock.now - t).seconds }

    /// The bench population (70% TCP, 20% UDP, 10% ICMP, all source-NATed), created in batches of
    /// 10,000; refusals other than EEXIST are tried again (the kernel refuses one now and then
    /// under memory pressure).
    static func create(_ n: Int, in netnsPath: String) throws {
        let nl = try ConntrackNetlink(netnsPath: netnsPath)
        var start = 0
        while start < n {
            let end = min(n, start + 10_000)
            var pending = (start..<end).map { i -> Conntrack in
                var c = TrafficGenerator.conntrack(number: UInt64(i))
                c.timeout = 3600
                return c
            }
            for attempt in 0...3 {
                let r = try nl.create(pending)
                let refused = r.errors.indices.filter { r.errors[$0] != 0 && r.errors[$0] != EEXIST }
                if refused.isEmpty { break }
                guard attempt < 3 else { throw Failure("the kernel refused \(refused.count) creations (errno \(r.errors[refused[0]]))") }
                pending = refused.map { pending[$0] }
            }
            start = end
        }
    }

    /// The kernel's dump rate of the master's table, now.
    static func dumpRate(_ netnsPath: String) throws -> Double {
        let nl = try ConntrackNetlink(netnsPath: netnsPath)
        let t = ContinuousClock.now
        let count = try nl.dump().count
        return Double(count) / seconds(since: t)
    }

    static var executable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    // MARK: keepstate

    static func keepstate(entries n: Int, connections: Int, workdir: String, say: (String) -> Void) throws -> Figures {
        var f = Figures()
        let nodes = try Nodes(tag: "k")
        defer { nodes.destroy() }
        let ca = try PKI.makeCA(commonName: "keepstate bench CA")
        try ca.certificate.write(toFile: "\(workdir)/ca.pem", atomically: true, encoding: .utf8)
        for (node, address) in [("ha1", masterSync), ("ha2", backupSync)] {
            let pair = try PKI.issue(name: node, addresses: [address], ca: ca)
            try pair.certificate.write(toFile: "\(workdir)/\(node).pem", atomically: true, encoding: .utf8)
            try pair.privateKey.write(toFile: "\(workdir)/\(node).key", atomically: true, encoding: .utf8)
            let me = node == "ha1" ? masterSync : backupSync
            let peer = node == "ha1" ? backupSync : masterSync
            let peerName = node == "ha1" ? "ha2" : "ha1"
            try """
                global_defs { router_id \(node) }
                ha_group g { static_state \(node == "ha1" ? "MASTER" : "BACKUP") }
                vrf main {
                    ha_fp_conntrack {
                        peer \(peerName) { source \(me) address \(peer) port \(port) identity \(peerName) }
                        listen_ha_group g
                        event_threads \(connections)
                        send_queue_limit 4194304
                        tls { ca \(workdir)/ca.pem certificate \(workdir)/\(node).pem key \(workdir)/\(node).key }
                        heartbeat_interval 0.5
                        dead_interval 3
                    }
                }
                """.write(toFile: "\(workdir)/\(node).conf", atomically: true, encoding: .utf8)
        }
        func start(_ node: String, _ ns: String, _ run: Int) throws -> BenchDaemon {
            try BenchDaemon(netns: ns, [executable, "run", "--config", "\(workdir)/\(node).conf", "--socket", "\(workdir)/\(node).sock",
                                    "--log-level", "warning"], log: "\(workdir)/\(node)-\(run).log")
        }
        func vrf(_ node: String) -> VRFReport? {
            (try? ControlClient.send(ControlRequest(command: .showState), socketPath: "\(workdir)/\(node).sock", timeout: .seconds(10)))?
                .state?.vrfs.first
        }
        func resyncs() -> UInt64? {
            (try? ControlClient.send(ControlRequest(command: .showPeer), socketPath: "\(workdir)/ha2.sock", timeout: .seconds(10)))?
                .peers?.first?.localNode.resyncsCompleted
        }
        func connected(_ node: String) -> Bool {
            guard let v = vrf(node) else { return false }
            return v.connections == connections && v.connectionsEstablished == connections
        }
        func holds(_ count: Int) -> Bool {
            guard let v = vrf("ha2") else { return false }
            return v.held == count && v.holdQueue == 0
        }
        let backup = try start("ha2", nodes.backup, 1)
        var master = try start("ha1", nodes.master, 1)
        defer { master.kill(); backup.kill() }
        guard poll(60, every: 0.05, { connected("ha1") && connected("ha2") }) else {
            throw Failure("keepstate's daemons did not connect (logs in \(workdir))")
        }

        // 1. Live sync of kernel events.
        let rss = backup.residentBytes
        let (cpuM, cpuB) = (master.cpuSeconds, backup.cpuSeconds)
        var t = ContinuousClock.now
        try create(n, in: nodes.masterPath)
        say("keepstate: \(n) conntracks created in \(String(format: "%.2f", seconds(since: t))) s")
        guard poll(180, every: 0.02, { holds(n) }) else {
            throw Failure("keepstate's backup holds \(vrf("ha2")?.held ?? -1) of \(n) (logs in \(workdir))")
        }
        f.liveRate = Double(n) / seconds(since: t)
        f.masterMicros = (master.cpuSeconds - cpuM) / Double(n) * 1e6
        f.backupMicros = (backup.cpuSeconds - cpuB) / Double(n) * 1e6
        f.memoryPerEntry = (backup.residentBytes - rss) / Double(n)
        f.dumpRate = try dumpRate(nodes.masterPath)

        // 2. Every sync connection lost: the master's sockets destroyed (the kernel resets them).
        guard poll(60, every: 0.05, { connected("ha1") }), let before = resyncs() else { throw Failure("keepstate not connected") }
        t = ContinuousClock.now
        try Shell.must(["ip", "netns", "exec", nodes.master, "ss", "-K", "dst", backupSync, "dport", "=", ":\(port)"])
        guard poll(600, every: 0.002, { (resyncs() ?? 0) >= before + UInt64(connections) && holds(n) }) else {
            throw Failure("keepstate's resync after the connection loss did not complete (logs in \(workdir))")
        }
        f.resyncAfterLoss = seconds(since: t)

        // 3. The master's daemon killed and started again.
        guard let again = resyncs() else { throw Failure("keepstate's backup does not answer") }
        master.kill()
        t = ContinuousClock.now
        master = try start("ha1", nodes.master, 2)
        guard poll(600, every: 0.005, { (resyncs() ?? 0) >= again + UInt64(connections) && holds(n) }) else {
            throw Failure("keepstate's backup did not resync after the master's restart (logs in \(workdir))")
        }
        f.restartSync = seconds(since: t)

        // 5. Failover: the backup made master. Its kernel table already holds every entry (the
        // hold writes them as they arrive); the takeover re-arms them in the background.
        guard kernelCount(nodes.backup) >= n else { throw Failure("keepstate's backup table has \(kernelCount(nodes.backup)) of \(n)") }
        t = ContinuousClock.now
        let reply = try ControlClient.send(ControlRequest(command: .setState, group: "g", state: "master"),
                                           socketPath: "\(workdir)/ha2.sock", timeout: .seconds(600))
        guard reply.ok, kernelCount(nodes.backup) >= n else { throw Failure("keepstate's failover: \(reply.message ?? "?")") }
        f.failover = seconds(since: t)
        guard vrf("ha2")?.role == "master" else { throw Failure("keepstate's backup did not become master") }
        return f
    }

    /// The conntracks of a namespace's kernel table (nf_conntrack_count there).
    static func kernelCount(_ netns: String) -> Int {
        guard let r = try? Shell.run(["ip", "netns", "exec", netns, "cat", "/proc/sys/net/netfilter/nf_conntrack_count"]),
              r.status == 0 else { return -1 }
        return Int(r.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    // MARK: conntrackd

    static func conntrackd(entries n: Int, workdir: String, say: (String) -> Void) throws -> Figures {
        var f = Figures()
        let nodes = try Nodes(tag: "c")
        defer { nodes.destroy() }
        let base = ["m": "\(workdir)/ctd-m", "b": "\(workdir)/ctd-b"]
        try ConntrackdConfig.text(comment: "keepstate bench: conntrackd of the master", source: masterSync, destination: backupSync,
                                  interface: "sync0", base: base["m"]!).write(toFile: base["m"]! + ".conf", atomically: true, encoding: .utf8)
        try ConntrackdConfig.text(comment: "keepstate bench: conntrackd of the backup", source: backupSync, destination: masterSync,
                                  interface: "sync0", base: base["b"]!).write(toFile: base["b"]! + ".conf", atomically: true, encoding: .utf8)
        func start(_ which: String, _ ns: String, _ run: Int) throws -> BenchDaemon {
            for suffix in ["-conntrackd.lock", "-ctd.sock"] { unlink(base[which]! + suffix) }
            return try BenchDaemon(netns: ns, ["conntrackd", "-C", base[which]! + ".conf"], log: base[which]! + "-\(run).out")
        }
        func client(_ which: String, _ args: [String]) -> (status: Int32, output: String)? {
            try? Shell.run(["conntrackd", "-C", base[which]! + ".conf"] + args)
        }
        func count(_ which: String, _ cache: String) -> Int? {
            guard let r = client(which, ["-s"]), r.status == 0 else { return nil }
            return ConntrackdConfig.count(statistics: r.output, cache: cache)
        }
        let backup = try start("b", nodes.backup, 1)
        var master = try start("m", nodes.master, 1)
        defer { master.kill(); backup.kill() }
        guard poll(30, every: 0.05, { count("m", "internal") != nil && count("b", "external") != nil }) else {
            throw Failure("conntrackd did not start (logs in \(workdir))")
        }

        // 1. Live sync of kernel events.
        let rss = backup.residentBytes
        let (cpuM, cpuB) = (master.cpuSeconds, backup.cpuSeconds)
        var t = ContinuousClock.now
        try create(n, in: nodes.masterPath)
        say("conntrackd: \(n) conntracks created in \(String(format: "%.2f", seconds(since: t))) s")
        guard poll(180, every: 0.05, { (count("b", "external") ?? 0) >= n }) else {
            throw Failure("conntrackd's external cache holds \(count("b", "external") ?? -1) of \(n)")
        }
        f.liveRate = Double(n) / seconds(since: t)
        f.masterMicros = (master.cpuSeconds - cpuM) / Double(n) * 1e6
        f.backupMicros = (backup.cpuSeconds - cpuB) / Double(n) * 1e6
        f.memoryPerEntry = (backup.residentBytes - rss) / Double(n)
        f.dumpRate = try dumpRate(nodes.masterPath)

        // 2. Full resync after a loss: the external cache flushed, a resync asked of the master.
        guard client("b", ["-f", "external"])?.status == 0, poll(30, { count("b", "external") == 0 }) else {
            throw Failure("conntrackd's external cache was not flushed")
        }
        t = ContinuousClock.now
        guard client("b", ["-n"])?.status == 0, poll(120, every: 0.01, { (count("b", "external") ?? 0) >= n }) else {
            throw Failure("conntrackd's resync gave \(count("b", "external") ?? -1) of \(n)")
        }
        f.resyncAfterLoss = seconds(since: t)

        // 3. The master's conntrackd killed and started again; the backup asks for a resync as
        // soon as the new master answers (what primary-backup.sh's `-n` does at a transition).
        master.kill()
        guard client("b", ["-f", "external"])?.status == 0, poll(30, { count("b", "external") == 0 }) else {
            throw Failure("conntrackd's external cache was not flushed")
        }
        t = ContinuousClock.now
        master = try start("m", nodes.master, 2)
        guard poll(120, every: 0.005, { (count("m", "internal") ?? 0) >= n }) else {
            throw Failure("the restarted conntrackd's internal cache holds \(count("m", "internal") ?? -1) of \(n)")
        }
        guard client("b", ["-n"])?.status == 0, poll(120, every: 0.01, { (count("b", "external") ?? 0) >= n }) else {
            throw Failure("conntrackd's resync after the restart gave \(count("b", "external") ?? -1) of \(n)")
        }
        f.restartSync = seconds(since: t)

        // 5. Failover: the backup's external cache committed to its kernel table.
        // (Its own table has only the sync link's UDP flows.)
        let own = kernelCount(nodes.backup)
        guard own >= 0, own < 100 else { throw Failure("conntrackd's backup table holds \(own) before the commit") }
        t = ContinuousClock.now
        guard client("b", ["-c"])?.status == 0, poll(120, every: 0.005, { kernelCount(nodes.backup) >= own + n }) else {
            throw Failure("conntrackd's commit gave \(kernelCount(nodes.backup) - own) of \(n)")
        }
        f.failover = seconds(since: t)
        return f
    }

    // MARK: the table

    static func median(_ xs: [Double]) -> Double {
        let s = xs.filter { !$0.isNaN }.sorted()
        return s.isEmpty ? .nan : s[s.count / 2]
    }

    /// Runs both `runs` times (alternating) and returns the table's rows.
    static func measure(entries n: Int, runs: Int, connections: Int, say: (String) -> Void) throws -> [(String, String, String, String)] {
        // The janitor puts these back and removes the directory on every way out (the caller's
        // cleanup, or SIGINT/SIGTERM/SIGHUP).
        for (key, value) in [("net.netfilter.nf_conntrack_max", 2 * n + 1024), ("net.netfilter.nf_conntrack_buckets", 2 * n)] {
            if let current = KernelBench.sysctl(key).flatMap({ Int($0) }), current < value {
                DrillJanitor.shared.setRootSysctl(key, "\(value)")
            }
        }
        let workdir = "/tmp/ks-cmp-\(getpid())"
        try? FileManager.default.removeItem(atPath: workdir)
        DrillJanitor.shared.adopt(path: workdir)
        try FileManager.default.createDirectory(atPath: workdir, withIntermediateDirectories: true)
        var ks: [Figures] = [], ctd: [Figures] = []
        for run in 1...max(1, runs) {
            ks.append(try keepstate(entries: n, connections: connections, workdir: workdir, say: say))
            say("run \(run) keepstate: \(describe(ks.last!))")
            ctd.append(try conntrackd(entries: n, workdir: workdir, say: say))
            say("run \(run) conntrackd: \(describe(ctd.last!))")
        }
        try? FileManager.default.removeItem(atPath: workdir)
        func row(_ name: String, _ value: (Figures) -> Double, _ format: String) -> (String, String, String, String) {
            let a = median(ks.map(value)), b = median(ctd.map(value))
            return (name, String(format: format, a), String(format: format, b), String(format: "%.2f", a / b))
        }
        let n1 = n.formatted()
        return [
            row("live sync of \(n1) kernel events, entries/s end to end", \.liveRate, "%.0f"),
            row("  CPU per entry, master's daemon (µs)", \.masterMicros, "%.2f"),
            row("  CPU per entry, backup's daemon (µs)", \.backupMicros, "%.2f"),
            row("full resync of \(n1) after a connection loss (s)", \.resyncAfterLoss, "%.3f"),
            row("master's daemon restarted: backup in sync after (s)", \.restartSync, "%.3f"),
            row("  that as a rate (entries/s)", { Double(n) / $0.restartSync }, "%.0f"),
            row("  kernel dump rate, same run (entries/s)", \.dumpRate, "%.0f"),
            row("  restart rate / dump rate", { Double(n) / $0.restartSync / $0.dumpRate }, "%.2f"),
            row("failover: backup made master to all \(n1) forwardable (s)", \.failover, "%.3f"),
            row("backup memory per entry (RSS, B)", \.memoryPerEntry, "%.1f"),
        ]
    }

    static func describe(_ f: Figures) -> String {
        String(format: "live %.0f/s, CPU %.2f / %.2f µs, resync %.3f s, restart %.3f s, dump %.0f/s, failover %.3f s, memory %.1f B",
               f.liveRate, f.masterMicros, f.backupMicros, f.resyncAfterLoss, f.restartSync, f.dumpRate, f.failover, f.memoryPerEntry)
    }
}
