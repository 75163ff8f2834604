import ArgumentParser
import ConntrackModel
import Daemon
import Dataplane
import Foundation
import NetfilterConntrack

/// `keepstate drill`: real flows through NAT and a firewall survive a node failure. See
/// docs/drill.md.
struct Drill: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The failover drill: real flows through CG-NAT and a stateful firewall survive a router failure.",
        discussion: """
            Builds two routers, clients, a server and a bridge in network namespaces; each router \
            runs nftables (SNAT to an outside virtual address, a stateful forward chain) and \
            `keepstate run` with VRRP and the conntrack sync over TLS (certificates from \
            `keepstate pki`). TCP and UDP flows exchange a message every 50 ms; the master's \
            table is filled with background conntracks; then the master fails as a machine does \
            (cut off from every segment at once, its daemon killed), comes back (empty table, daemon \
            restarted) and the drill watches the resync and the failback. A control run without \
            the sync shows the flows die there. Prints a report; exits 1 when an expectation \
            fails, 2 when the drill could not run. Root only; removes everything it made, also \
            on SIGINT and SIGTERM.

            Examples:
              keepstate drill                  # 1,000 TCP, 200 UDP, 1,000,000 conntracks
              keepstate drill --tcp 100 --udp 20 --background 10000 --loose 1
              keepstate drill --ha static --json     # development: without VRRP
            """)

    enum Loose: String, ExpressibleByArgument, CaseIterable {
        case zero = "0", one = "1", both
        var values: [Int] {
            switch self {
            case .zero: [0]
            case .one: [1]
            case .both: [1, 0]
            }
        }
    }

    /// The daemons and the traffic generators run at this nice level, so that what the drill
    /// measures is the network and the daemons, not the scheduler of a busy machine (routers
    /// run their VRRP daemon at a high priority too: keepalived uses a real-time one).
    static let nice = -10

    enum HA: String, ExpressibleByArgument, CaseIterable {
        case vrrp, `static`
    }

    enum Failure: String, ExpressibleByArgument, CaseIterable {
        /// Cut off at once (its ports on the bridges stop forwarding) and the daemon killed;
        /// back as after a reboot.
        case power
        /// All links down at once, the daemon left running; back with the links up.
        case links
    }

    @Option(help: "Long-lived TCP connections.") var tcp = 1000
    @Option(help: "UDP flows.") var udp = 200
    @Option(help: "Milliseconds between two messages of a flow.") var intervalMs = 50
    @Option(help: "Established conntracks put in the master's table before the failure.") var background = 1_000_000
    @Option(help: "nf_conntrack_tcp_loose on the routers: 0, 1 or both (one pair of runs each).") var loose: Loose = .both
    @Option(help: "What moves the addresses: vrrp (the daemon), or static (development only: the drill does, with set-state).")
    var ha: HA = .vrrp
    @Option(help: ArgumentHelp(
        "power: the master is cut off from every segment at once (its ports on the bridges stop forwarding) and its "
            + "daemon is killed; it comes back as after a reboot (empty table, no addresses, daemon started). links: its "
            + "own links go down with the daemon left running; it comes back with its links up (in this shared kernel, a "
            + "link going down also walks every namespace's conntrack table: see docs/drill.md)."))
    var failure: Failure = .power
    @Flag(help: "Skip the control run (sync off).") var noControl = false
    @Flag(help: "Skip the return of the failed router.") var noFailback = false
    @Flag(help: ArgumentHelp(
        "Also run keepalived + conntrackd (Debian's) on the same topology and traffic, for comparison.",
        discussion: "One more run per loose value: keepalived elects with the same VRRP settings and its notify script "
            + "commits conntrackd's external cache (Debian's primary-backup.sh); no failback. No expectations: a baseline."))
    var baseline = false
    @Option(help: "A surviving flow answers again within this many seconds.") var stallBound = 3.0
    @Option(help: "Seconds to watch the flows after the failure and after the failback (at most).") var observe = 6.0
    @Option(help: "Sync connections per router (event_threads).") var eventThreads = 4
    @Option(help: "VRRP preempt_delay of the routers (seconds; none by default).") var preemptDelay: Double?
    @Option(help: "The daemons' log level.") var logLevel = "notice"
    @Flag(name: .customLong("idle-cpus"), help: ArgumentHelp(
        "Let the CPUs go idle around the failure.",
        discussion: "By default a lowest-priority (SCHED_IDLE) spinning thread per CPU keeps them awake from just before "
            + "the failure until the flows answered again: on a virtual machine an idle vCPU's wake-up adds milliseconds "
            + "to the packets and timers the stall is made of (docs/drill.md)."))
    var idleCPUs = false
    @Flag(help: "Print the report as JSON.") var json = false
    @Flag(help: "Keep the working directory (configurations, certificates, logs).") var keepFiles = false

    func validate() throws {
        guard getuid() == 0 else { throw ValidationError("the drill needs root (network namespaces, nftables, conntrack)") }
        guard tcp >= 0, udp >= 0, tcp + udp > 0, tcp + udp <= 5000 else {
            throw ValidationError("--tcp plus --udp must be 1 to 5,000 (the clients' port range 60000-65535)")
        }
        guard intervalMs >= 5 else { throw ValidationError("--interval-ms must be at least 5") }
        guard background >= 0 else { throw ValidationError("--background must not be negative") }
        guard stallBound > 0, observe > stallBound else { throw ValidationError("--observe must be longer than --stall-bound") }
    }

    func run() throws {
        _ = drillStart
        let janitor = DrillJanitor.shared
        janitor.reset()
        janitor.keepFiles = keepFiles
        janitor.trapSignals()
        DrillJanitor.removeLeftovers { progress($0) }
        defer { janitor.cleanAll() }
        let report: DrillReport
        do {
            report = try play()
        } catch {
            // After a signal, wait for the handler's cleanup to finish, then exit as it would.
            janitor.cleanAll()
            if let sig = janitor.caughtSignal { throw ExitCode(128 + sig) }
            FileHandle.standardError.write(Data("keepstate drill: \(error)\n".utf8))
            throw ExitCode(2)
        }
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys, .prettyPrinted]
            emit(String(decoding: try e.encode(report), as: UTF8.self))
        } else {
            emit(DrillAnalysis.table(report))
        }
        janitor.cleanAll()
        if !report.passed { throw ExitCode(1) }
    }

    var settings: DrillSettings {
        DrillSettings(tcp: tcp, udp: udp, intervalMs: intervalMs, background: background, ha: ha.rawValue, failure: failure.rawValue,
                      stallBound: stallBound, observe: observe, eventThreads: eventThreads, idleCPUs: idleCPUs)
    }

    func play() throws -> DrillReport {
        let exe = try Self.executable()
        let workdir = "/run/ksd\(getpid())"
        DrillJanitor.shared.adopt(path: workdir)
        try FileManager.default.createDirectory(atPath: workdir, withIntermediateDirectories: true)
        let pki = "\(workdir)/pki"
        try Shell.must([exe, "pki", "init", "--dir", pki])
        try Shell.must([exe, "pki", "issue", "--dir", pki, "--name", "r1", "--address", "10.150.0.1"])
        try Shell.must([exe, "pki", "issue", "--dir", pki, "--name", "r2", "--address", "10.150.0.2"])
        var notes: [String] = []
        if keepFiles { notes.append("configurations, certificates and daemon logs kept in \(workdir)") }

        // Does this build's configuration accept the VRRP setup?
        let probe = DrillConfig(router: DrillTopology(tag: "probe").r1, peer: DrillTopology(tag: "probe").r2, pki: pki, ha: .vrrp,
                                sync: true, initialMaster: true, eventThreads: eventThreads, preemptDelay: preemptDelay)
        let probePath = "\(workdir)/vrrp-probe.conf"
        try probe.text.write(toFile: probePath, atomically: true, encoding: .utf8)
        let checked = try Shell.run([exe, "check-config", probePath])
        let vrrpAccepted = checked.status == 0
        if ha == .vrrp && !vrrpAccepted {
            throw DrillError("""
                this build of keepstate does not accept the drill's VRRP configuration, so it cannot run the drill \
                with VRRP; `--ha static` runs it without VRRP (development only). check-config said:
                \(checked.output.trimmingCharacters(in: .whitespacesAndNewlines))
                """)
        }
        if ha == .static {
            notes.append("HA driver static: DEVELOPMENT ONLY. No VRRP ran; the drill itself moved the virtual addresses "
                         + "(ip addr, neighbour caches flushed) and called `set-state master` on the survivor"
                         + (vrrpAccepted ? "." : " (this build does not accept the VRRP configuration)."))
        }

        // Before any run: a missing tool must not end the drill after minutes of runs.
        if baseline, let missing = ["keepalived", "conntrackd"].first(where: { !DrillRun.onPath($0) }) {
            throw DrillError("--baseline needs \(missing) (apt-get install keepalived conntrackd; `make drill` installs them)")
        }
        var runs: [DrillRunReport] = []
        var index = 0
        for l in loose.values {
            let kinds: [DrillRun.Kind] = (noControl ? [.sync] : [.sync, .control]) + (baseline ? [.baseline] : [])
            for kind in kinds {
                index += 1
                let runner = DrillRun(
                    drill: self, exe: exe, workdir: workdir, pki: pki, tag: "ksd\(getpid())-\(index)", kind: kind, loose: l)
                var r = try kind == .baseline ? runner.playBaseline() : runner.play()
                r.checks = DrillAnalysis.checks(r, settings: settings)
                progress("\(r.name): \(r.passed ? "PASS" : "FAIL")")
                runs.append(r)
                if DrillJanitor.shared.isAborted { throw DrillError("interrupted") }
            }
        }
        if noControl { notes.append("no control run (--no-control): nothing shows that flows die without the sync") }
        if noFailback { notes.append("the failed router did not come back (--no-failback)") }
        return DrillReport(settings: settings, runs: runs, notes: notes, passed: runs.allSatisfy(\.passed))
    }

    /// This executable (the daemons and generators are the same binary).
    static func executable() throws -> String {
        if let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") { return path }
        let arg0 = CommandLine.arguments[0]
        guard arg0.contains("/") else { throw DrillError("cannot find this executable's path") }
        return URL(fileURLWithPath: arg0).standardizedFileURL.path
    }
}

/// Progress lines go to standard error, with the time since the drill started.
private let drillStart = monotonicNanoseconds()
func progress(_ line: String) {
    let start = drillStart
    let t = Double(Int64(bitPattern: monotonicNanoseconds() &- start)) / 1e9
    FileHandle.standardError.write(Data(String(format: "[%7.2f] %@\n", t, line).utf8))
}

/// One router's configuration file.
struct DrillConfig {
    let router: DrillTopology.Router
    let peer: DrillTopology.Router
    let pki: String
    let ha: Drill.HA
    let sync: Bool
    /// Static driver: this router's state.
    let initialMaster: Bool
    let eventThreads: Int
    let preemptDelay: Double?

    static let group = "drill"

    /// The sync group's two instances (keepstate's and the baseline's keepalived read the same).
    static func vrrpInstances(priority: Int, preemptDelay: Double?) -> String {
        var t = ""
        for (name, interface, vrid, vip) in [("drill_in", "in0", 51, DrillTopology.insideVIP),
                                             ("drill_out", "out0", 52, DrillTopology.outsideVIP)] {
            t += "vrrp_instance \(name) {\n"
            t += "    state BACKUP\n"
            t += "    interface \(interface)\n"
            t += "    virtual_router_id \(vrid)\n"
            t += "    priority \(priority)\n"
            t += "    version 3\n"
            t += "    advert_int 0.1\n"
            if let preemptDelay { t += "    preempt_delay \(preemptDelay)\n" }
            t += "    virtual_ipaddress {\n        \(vip)/24 dev \(interface)\n    }\n"
            t += "}\n\n"
        }
        return t
    }

    var text: String {
        var t = "! keepstate drill: router \(router.name)\n"
        t += "global_defs {\n    router_id \(router.name)\n}\n\n"
        switch ha {
        case .static:
            t += "ha_group \(Self.group) {\n    static_state \(initialMaster ? "MASTER" : "BACKUP")\n}\n\n"
        case .vrrp:
            t += "vrrp_sync_group \(Self.group) {\n    group {\n        drill_in\n        drill_out\n    }\n}\n\n"
            t += Self.vrrpInstances(priority: router.priority, preemptDelay: preemptDelay)
        }
        t += "vrf main {\n"
        if sync {
            t += """
                    ha_fp_conntrack {
                        peer \(peer.name) {
                            source \(router.sync)
                            address \(peer.sync)
                            port 3790
                            identity \(peer.name)
                        }
                        listen_ha_group \(Self.group)
                        event_threads \(eventThreads)
                        tls {
                            ca \(pki)/ca.pem
                            certificate \(pki)/\(router.name).pem
                            key \(pki)/\(router.name).key
                        }
                    }

                """
        }
        t += "}\n"
        return t
    }
}

/// One run: a fresh topology, both daemons, traffic, background table, failure, return.
struct DrillRun {
    let drill: Drill
    let exe: String
    let workdir: String
    let pki: String
    let tag: String
    let kind: Kind
    let loose: Int

    enum Kind { case sync, control, baseline }

    /// Keepstate's sync runs (the control run has no `ha_fp_conntrack`).
    var sync: Bool { kind == .sync }

    var name: String {
        switch kind {
        case .sync: "sync loose=\(loose)"
        case .control: "control loose=\(loose)"
        case .baseline: "ka+ctd loose=\(loose)"
        }
    }

    final class Router {
        let spec: DrillTopology.Router
        let socket: String
        var daemon: DrillChild?
        var starts = 0
        init(spec: DrillTopology.Router, socket: String) {
            self.spec = spec
            self.socket = socket
        }

        func state() -> StateReport? {
            (try? ControlClient.send(ControlRequest(command: .showState), socketPath: socket, timeout: .seconds(5)))?.state
        }

        func group() -> GroupReport? { state()?.groups.first { $0.name == DrillConfig.group } }

        func setState(_ s: String) throws {
            let reply: ControlReply
            do {
                reply = try ControlClient.send(ControlRequest(command: .setState, group: DrillConfig.group, state: s), socketPath: socket,
                                               timeout: .seconds(60))
            } catch {
                throw DrillError("set-state \(s) on \(spec.name): \(error) (no answer within 60 s; see the daemon's log)")
            }
            guard reply.ok else { throw DrillError("set-state \(s) on \(spec.name): \(reply.error ?? "refused")") }
        }
    }

    func say(_ s: String) { progress("\(name): \(s)") }

    /// Polls `condition` every `every` seconds until it holds or `timeout` passes.
    func waitFor(_ timeout: Double, every: Double = 0.05, _ condition: () -> Bool) -> Bool {
        let deadline = Date(timeIntervalSinceNow: timeout)
        while true {
            if condition() { return true }
            if Date() >= deadline || DrillJanitor.shared.isAborted { return false }
            usleep(UInt32(every * 1e6))
        }
    }

    func writeConfig(_ r: Router, peer: DrillTopology.Router, master: Bool) throws -> String {
        let path = "\(workdir)/\(tag)-\(r.spec.name)\(master ? "" : "-backup").conf"
        let c = DrillConfig(router: r.spec, peer: peer, pki: pki, ha: drill.ha, sync: sync, initialMaster: master,
                            eventThreads: drill.eventThreads, preemptDelay: drill.preemptDelay)
        try c.text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func startDaemon(_ r: Router, config: String) throws {
        r.starts += 1
        try? FileManager.default.removeItem(atPath: r.socket)
        let child = try DrillChild(
            name: "\(r.spec.name) daemon",
            arguments: ["nice", "-n", "\(Drill.nice)", "ip", "netns", "exec", r.spec.netns, exe, "run", "--config", config, "--socket", r.socket,
                        "--log-level", drill.logLevel],
            log: "\(workdir)/\(tag)-\(r.spec.name)-\(r.starts).log", lineOutput: false, input: false)
        r.daemon = child
        // The control socket opens before the VRFs start: wait for each to run or to fail.
        guard waitFor(30, every: 0.05, {
            guard child.isRunning else { return true }
            guard let s = r.state() else { return false }
            return s.vrfs.allSatisfy { $0.role != "down" || $0.dataplaneError != nil }
        }), child.isRunning else {
            throw DrillError("the daemon of \(r.spec.name) did not start: \(logTail(r))")
        }
        if let down = r.state()?.vrfs.first(where: { $0.role == "down" }) {
            throw DrillError("the daemon of \(r.spec.name) did not start VRF \(down.name): \(down.dataplaneError ?? "?")"
                             + (drill.ha == .vrrp ? " (does this build run VRRP? `--ha static` runs the drill without it, for development)" : ""))
        }
    }

    func logTail(_ r: Router) -> String {
        let path = "\(workdir)/\(tag)-\(r.spec.name)-\(r.starts).log"
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return text.split(whereSeparator: \.isNewline).suffix(8).joined(separator: "\n")
    }

    func play() throws -> DrillRunReport {
        var report = DrillRunReport(name: name, sync: sync, loose: loose)
        let topo = DrillTopology(tag: tag)
        defer { topo.destroy() }
        let r1 = Router(spec: topo.r1, socket: "\(workdir)/\(tag.split(separator: "-").last!)-r1.sock")
        let r2 = Router(spec: topo.r2, socket: "\(workdir)/\(tag.split(separator: "-").last!)-r2.sock")
        var children: [DrillChild] = []
        defer {
            for c in children { c.closeInput(); c.terminate(grace: 2) }
            for r in [r1, r2] { r.daemon?.terminate(grace: 5) }
        }

        roomForTheTable()
        say("building the namespaces (\(topo.namespaces.joined(separator: " ")))")
        try topo.build(loose: loose, workdir: workdir)

        // Daemons. Static: r1 master, r2 backup. VRRP: both start backup; r1's priority wins.
        try startDaemon(r1, config: writeConfig(r1, peer: topo.r2, master: true))
        try startDaemon(r2, config: writeConfig(r2, peer: topo.r1, master: false))
        switch drill.ha {
        case .static:
            try topo.addVIPs(topo.r1)
        case .vrrp:
            guard let g = r1.group(), g.kind.hasPrefix("vrrp") else {
                throw DrillError("the daemon does not report the VRRP sync group `\(DrillConfig.group)`: this build does not run VRRP "
                                 + "(`--ha static` runs the drill without it, for development)")
            }
            let r1HasVIPs = try topo.vipWatcher(topo.r1)
            guard waitFor(15, { r1HasVIPs() && r1.group()?.state == "master" && r2.group()?.state == "backup" }) else {
                throw DrillError("VRRP did not elect r1 master with the addresses within 15 s (r1 \(r1.group()?.state ?? "?"), "
                                 + "r2 \(r2.group()?.state ?? "?"), r1 has the addresses: \(r1HasVIPs()))")
            }
        }
        say("r1 master, r2 backup")
        if sync {
            guard waitFor(20, {
                [r1, r2].allSatisfy { r in r.state()?.vrfs.first.map { $0.connections > 0 && $0.connectionsEstablished == $0.connections } ?? false }
            }) else { throw DrillError("the sync connections did not come up within 20 s: r1: \(logTail(r1))") }
        }

        let (server, client) = try startTraffic(topo, children: &children)
        if sync {
            guard waitFor(30, { (r2.state()?.vrfs.first?.held ?? 0) >= drill.tcp + drill.udp }) else {
                throw DrillError("the backup does not hold the flows' conntracks after 30 s (held \(r2.state()?.vrfs.first?.held ?? 0))")
            }
        }

        try fillBackground(topo, &report)
        let wanted = drill.background - (report.backgroundRefused ?? 0) + drill.tcp + drill.udp
        let syncStart = monotonicNanoseconds()
        guard waitFor(60 + Double(drill.background) / 10_000, every: 0.1, { (r1.state()?.vrfs.first?.conntracks ?? 0) >= wanted }) else {
            throw DrillError("r1's daemon counts \(r1.state()?.vrfs.first?.conntracks ?? 0) conntracks, expected at least \(wanted)")
        }
        if sync {
            let synced = waitFor(60 + Double(drill.background) / 10_000, every: 0.1) {
                // Held, and written to the backup's kernel table (nothing left in its hold queue).
                guard let m = r1.state()?.vrfs.first?.conntracks, let b = r2.state()?.vrfs.first else { return false }
                return b.held >= m && b.holdQueue == 0
            }
            report.syncSeconds = DrillAnalysis.seconds(monotonicNanoseconds() - syncStart)
            say(synced ? "r2 holds r1's table after \(DrillAnalysis.fmt(report.syncSeconds)) s" : "r2 did not catch up with r1's table")
        }
        // A second of steady traffic with the full table.
        usleep(1_000_000)
        report.masterTable = r1.state()?.vrfs.first?.conntracks
        report.backupHeld = r2.state()?.vrfs.first?.held

        dumpFlows(topo, "before-failure")
        let survivorHasVIPs = try topo.vipWatcher(topo.r2)
        let waker = beforeFailure(client, &report)
        // The failure. Power loss: everything on r1 stops, its links go down at once, then its
        // processes are killed. Links: only the links go down.
        let rtos = topo.clientRTOs()
        report.clientRTOMedianMs = DrillAnalysis.median(rtos)
        report.clientRTOMaxMs = rtos.max()
        let (failure, frozen) = try topo.fail(topo.r1, power: drill.failure == .power)
        client.send("mark \(failure)")
        topo.killAll(frozen)
        if drill.failure == .power { r1.daemon?.kill() }
        say("r1 failed: \(drill.failure == .power ? "cut off, daemon killed" : "links down")")
        switch drill.ha {
        case .static:
            try r2.setState("master")
            report.survivorMasterSeconds = DrillAnalysis.seconds(monotonicNanoseconds() - failure)
            try topo.addVIPs(topo.r2)
            topo.flushNeighbours()
            try topo.removeVIPs(topo.r1)
        case .vrrp:
            report.survivorMasterSeconds = timeTakeover(since: failure, survivorHasVIPs)
        }
        say("r2 master after \(DrillAnalysis.fmt(report.survivorMasterSeconds)) s")
        watchFlows(client, since: failure)
        waker?.stop()
        dumpFlows(topo, "after-failure")
        let survivor = r2.state()?.vrfs.first
        report.daemonTakeoverSeconds = survivor?.lastTakeoverSeconds

        var back: UInt64?
        var failbackPartial: (resync: Double?, held: Int, table: Int, preempted: Bool, preemptAt: Double?, heldAtPreempt: Int?, survivorAtPreempt: Int?)?
        if sync && !drill.noFailback {
            let returned: UInt64
            switch drill.failure {
            case .power:
                // The return of a machine that lost power: empty table, no addresses, back on the
                // network, daemon started.
                try topo.flushConntrack(topo.r1)
                try topo.removeVIPs(topo.r1)
                returned = monotonicNanoseconds()
                try topo.portsForwarding(topo.r1)
                client.send("mark \(returned)")
                try startDaemon(r1, config: writeConfig(r1, peer: topo.r2, master: drill.ha == .vrrp))
                say("r1 back: on the network again, daemon restarted")
            case .links:
                // The links come back under a daemon that never stopped. The static driver has
                // no election: the drill makes r1 backup first, as an operator would.
                if drill.ha == .static {
                    try r1.setState("backup")
                    try topo.removeVIPs(topo.r1)
                }
                returned = monotonicNanoseconds()
                try topo.linksUp(topo.r1)
                client.send("mark \(returned)")
                say("r1 back: links up")
            }
            back = returned
            // What the survivor has synced (its policy's count, while it is master): what a
            // returned router in sync holds. Its `conntracks` also counts what the policy has not
            // synced (closed conntracks the kernel has not reaped yet, those waiting for a delay).
            // nil when r2 does not answer, or is no longer master (r1 took over between two polls).
            let survivorSynced = { r2.state()?.vrfs.first?.synced }
            var lastSurvivor: Int?
            var resync: Double?
            var preemptAt: Double?
            var heldAtPreempt: Int?
            var survivorAtPreempt: Int?
            let wait = 60 + Double(drill.background) / 10_000
            _ = waitFor(wait, every: 0.02) {
                // The survivor first: read after r1's state, it could count conntracks made after
                // r1 became master (the sync connections it opens as master).
                // This poll's, or, when the survivor was already backup (r1 took over since the
                // last poll), the last poll's: at most one poll, 20 ms, before r1 became master.
                let survivor = survivorSynced() ?? lastSurvivor
                lastSurvivor = survivor
                let s = r1.state()
                let held = s?.vrfs.first?.held ?? 0
                let t = DrillAnalysis.seconds(monotonicNanoseconds() - returned)
                // Resynced: held, and written to r1's kernel table (its hold queue empty).
                let master = s?.groups.first(where: { $0.name == DrillConfig.group })?.state == "master"
                if resync == nil, let survivor,
                   DrillAnalysis.resynced(held: held, survivor: survivor, holdQueue: s?.vrfs.first?.holdQueue, master: master) {
                    resync = t
                }
                if drill.ha == .vrrp, preemptAt == nil, master {
                    preemptAt = t
                    heldAtPreempt = held
                    survivorAtPreempt = survivor
                }
                if preemptAt != nil { return true }
                // Static: the drill switches back itself once the table is there.
                if drill.ha == .static { return resync != nil }
                // No preemption: give VRRP the observation time after the resync.
                if let resync { return t > resync + drill.observe }
                return false
            }
            if drill.ha == .static, resync != nil {
                // A planned switchover back, as an operator would do it.
                survivorAtPreempt = survivorSynced()
                try r2.setState("backup")
                heldAtPreempt = r1.state()?.vrfs.first?.held
                try r1.setState("master")
                preemptAt = DrillAnalysis.seconds(monotonicNanoseconds() - returned)
                try topo.removeVIPs(topo.r2)
                try topo.addVIPs(topo.r1)
                topo.flushNeighbours()
            }
            say("r1 resync \(DrillAnalysis.fmt(resync)) s, master again: \(preemptAt.map { "after \(DrillAnalysis.fmt($0)) s" } ?? "no")")
            if preemptAt != nil {
                // Watch the flows after the failback.
                let mark = monotonicNanoseconds()
                usleep(200_000)
                _ = waitFor(drill.observe, every: 0.1) {
                    allAnswered(client, since: mark)
                }
                usleep(500_000)
            }
            failbackPartial = (resync, r1.state()?.vrfs.first?.held ?? 0, lastSurvivor ?? 0, preemptAt != nil, preemptAt, heldAtPreempt, survivorAtPreempt)
            dumpFlows(topo, "after-failback")
        }

        let (flows, seen) = try conclude(&report, topo: topo, client: client, server: server, failure: failure, back: back)
        if let back, let p = failbackPartial {
            report.failback = DrillFailback(
                resyncSeconds: p.resync, returnedHeld: p.held, survivorTable: p.table, preempted: p.preempted,
                preemptSeconds: p.preemptAt, heldAtPreempt: p.heldAtPreempt, survivorTableAtPreempt: p.survivorAtPreempt,
                tcp: DrillAnalysis.atFailback(flows, seen, proto: "tcp", back: back, bound: drill.stallBound),
                udp: DrillAnalysis.atFailback(flows, seen, proto: "udp", back: back, bound: drill.stallBound))
        }
        say("done")
        return report
    }

    /// Seconds from `failure` until the survivor holds the addresses, polled every 2 ms with
    /// netlink, not through its control socket (measuring must not load it); nil: not within
    /// the observation time.
    /// Just before a failure: the CPUs kept awake until the flows answered (`--idle-cpus` lets
    /// them idle), and the clients' transmit tap open. Waits for both (at most a second each), so
    /// that neither starts after the failure; the report says how many spinners ran and why the
    /// tap did not open, if it did not. Stop the waker it returns once the flows answered.
    func beforeFailure(_ client: DrillChild, _ report: inout DrillRunReport) -> CPUWaker? {
        var waker: CPUWaker?
        if !drill.idleCPUs {
            let w = CPUWaker()
            _ = waitFor(1, every: 0.005) { w.spinning == w.threads }
            report.cpuSpinners = w.spinning
            report.cpus = w.threads
            waker = w
        }
        client.send("tap")
        let deadline = Date(timeIntervalSinceNow: 1)
        while deadline.timeIntervalSinceNow > 0, let line = client.nextLine(timeout: deadline.timeIntervalSinceNow) {
            if line.hasPrefix("tap") { break }
        }
        return waker
    }

    func timeTakeover(since failure: UInt64, _ survivorHasVIPs: () -> Bool) -> Double? {
        guard waitFor(drill.observe, every: 0.002, survivorHasVIPs) else { return nil }
        return DrillAnalysis.seconds(monotonicNanoseconds() - failure)
    }

    /// Watches until every flow answered again or ended (at most the observation time), then
    /// half a second more.
    func watchFlows(_ client: DrillChild, since failure: UInt64) {
        _ = waitFor(drill.observe - DrillAnalysis.seconds(monotonicNanoseconds() - failure), every: 0.1) {
            allAnswered(client, since: failure)
        }
        usleep(500_000)
    }

    /// Room for the background table in each router's namespace (read-only inside one), and a
    /// hash table (shared by every namespace) whose chains stay short enough: the kernel refuses
    /// an entry whose chain would pass 64 (ENOSPC).
    func roomForTheTable() {
        func rootValue(_ key: String) -> Int? {
            Int((try? String(contentsOfFile: "/proc/sys/net/netfilter/\(key)", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? "")
        }
        let needed = drill.background + 2 * (drill.tcp + drill.udp) + 65536
        if let max = rootValue("nf_conntrack_max"), max < needed {
            DrillJanitor.shared.setRootSysctl("net.netfilter.nf_conntrack_max", "\(needed)")
        }
        var buckets = 1 << 16
        while buckets < needed && buckets < 1 << 21 { buckets <<= 1 }
        if drill.background >= 100_000, let current = rootValue("nf_conntrack_buckets"), current < buckets {
            DrillJanitor.shared.setRootSysctl("net.netfilter.nf_conntrack_buckets", "\(buckets)")
        }
    }

    /// The echo server, then the clients; returns once every flow has had a reply.
    func startTraffic(_ topo: DrillTopology, children: inout [DrillChild]) throws -> (server: DrillChild, client: DrillChild) {
        let server = try DrillChild(
            name: "server", arguments: ["nice", "-n", "\(Drill.nice)", "ip", "netns", "exec", topo.serverNS, exe, "drill-traffic", "server",
                                        "--address", DrillTopology.server, "--port", "7000"],
            log: "\(workdir)/\(tag)-server.log", lineOutput: true, input: true)
        children.append(server)
        guard server.nextLine(timeout: 10) == "ready" else { throw DrillError("the echo server did not start") }
        let client = try DrillChild(
            name: "client", arguments: ["nice", "-n", "\(Drill.nice)", "ip", "netns", "exec", topo.clients, exe, "drill-traffic", "client",
                                        "--server", DrillTopology.server, "--port", "7000", "--tcp", "\(drill.tcp)",
                                        "--udp", "\(drill.udp)", "--interval-ms", "\(drill.intervalMs)"],
            log: "\(workdir)/\(tag)-client.log", lineOutput: true, input: true)
        children.insert(client, at: 0)
        let ready = client.nextLine(timeout: 30)
        guard ready == "ready" else { throw DrillError("the flows did not come up: \(ready ?? "no answer from the client")") }
        say("\(drill.tcp) TCP and \(drill.udp) UDP flows up")
        return (server, client)
    }

    /// The background table in r1's kernel table.
    func fillBackground(_ topo: DrillTopology, _ report: inout DrillRunReport) throws {
        guard drill.background > 0 else { return }
        let t = monotonicNanoseconds()
        report.backgroundRefused = try fill(netns: topo.r1.netns, count: drill.background)
        report.fillSeconds = DrillAnalysis.seconds(monotonicNanoseconds() - t)
        say("\(drill.background) background conntracks in r1's table in \(DrillAnalysis.fmt(report.fillSeconds)) s")
    }

    /// Stops the traffic, collects both generators' reports and analyses the flows around the
    /// failure (until the return `back`, or the end).
    func conclude(_ report: inout DrillRunReport, topo: DrillTopology, client: DrillChild, server: DrillChild,
                  failure: UInt64, back: UInt64?) throws -> (DrillClientReport, DrillServerReport?) {
        report.survivorCounters = topo.forwardCounters(topo.r2)
        client.send("stop")
        guard let flows = client.nextJSON(DrillClientReport.self, timeout: 30) else { throw DrillError("the client sent no report") }
        server.send("stop")
        let seen = server.nextJSON(DrillServerReport.self, timeout: 30)
        if drill.keepFiles {
            try? DrillWire.jsonLine(flows).write(toFile: "\(workdir)/\(tag)-client.json", atomically: true, encoding: .utf8)
            if let seen { try? DrillWire.jsonLine(seen).write(toFile: "\(workdir)/\(tag)-server.json", atomically: true, encoding: .utf8) }
        }
        let windowEnd = back ?? flows.stopped
        let takeover = report.survivorMasterSeconds.map { failure + UInt64($0 * 1e9) }
        report.tcp = DrillAnalysis.atFailure(flows, seen, proto: "tcp", failure: failure, windowEnd: windowEnd, bound: drill.stallBound,
                                             takeover: takeover)
        report.udp = DrillAnalysis.atFailure(flows, seen, proto: "udp", failure: failure, windowEnd: windowEnd, bound: drill.stallBound)
        report.allAnsweredSeconds = DrillAnalysis.allAnswered(flows, failure: failure, windowEnd: windowEnd)
        report.clientLateSeconds = DrillAnalysis.seconds(flows.lateAfterMark)
        report.tapDrops = flows.tapDrops
        report.tapError = flows.tapError
        return (flows, seen)
    }

    /// Whether every flow has answered a message sent after `since`, or ended. Answers to
    /// earlier questions that arrive late are skipped.
    func allAnswered(_ client: DrillChild, since: UInt64) -> Bool {
        client.send("since \(since)")
        let deadline = Date(timeIntervalSinceNow: 2)
        while deadline.timeIntervalSinceNow > 0 {
            guard let p = client.nextJSON(DrillClientProgress.self, timeout: deadline.timeIntervalSinceNow) else { return false }
            if p.since == since { return p.replied + p.ended >= p.flows }
        }
        return false
    }

    /// With --keep-files: both routers' conntracks of the client's flows (one kernel dump each,
    /// filtered here), for a post-mortem.
    func dumpFlows(_ topo: DrillTopology, _ when: String) {
        // A dump of a large table takes a second or more; it runs between the phases.
        guard drill.keepFiles, let client = IPAddressBits(parsing: DrillTopology.client, family: .ipv4) else { return }
        for r in [topo.r1, topo.r2] {
            guard let all = try? ConntrackNetlink(netnsPath: "/run/netns/\(r.netns)").dump(family: .ipv4) else { continue }
            let lines = all.filter { $0.original.source == client && $0.original.destinationPort == 7000 }.map(\.description)
            try? (lines.sorted().joined(separator: "\n") + "\n").write(
                toFile: "\(workdir)/\(tag)-\(r.name)-conntrack-\(when).txt", atomically: true, encoding: .utf8)
        }
    }

    /// Puts `count` established conntracks (TCP, UDP and ICMP, source-NATed) in the namespace's
    /// table with batched ctnetlink creates.
    /// Returns how many the kernel refused: a few may be (ENOSPC when one hash chain of the
    /// table, which all namespaces share, is too long); more than 1% stops the drill.
    func fill(netns: String, count: Int) throws -> Int {
        let nl = try ConntrackNetlink(netnsPath: "/run/netns/\(netns)")
        var n = 0
        var refused = 0
        var firstError: Int32 = 0
        while n < count {
            let chunk = min(100_000, count - n)
            var items = (UInt64(n)..<UInt64(n + chunk)).map { TrafficGenerator.conntrack(number: $0) }
            for i in items.indices { items[i].timeout = 3600 }
            let r = try nl.create(items)
            refused += r.rejected
            if firstError == 0 { firstError = r.firstError }
            n += chunk
        }
        guard refused * 100 <= count else {
            throw DrillError("the kernel refused \(refused) of \(count) background conntracks (errno \(firstError): \(String(cString: strerror(firstError))))")
        }
        if refused > 0 { say("the kernel refused \(refused) background conntracks (errno \(firstError): \(String(cString: strerror(firstError))))") }
        return refused
    }
}
