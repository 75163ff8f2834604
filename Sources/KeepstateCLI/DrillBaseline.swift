import Foundation

// `keepstate drill --baseline`: the same topology, firewall, NAT, traffic, background table and
// failure with keepalived + conntrackd (Debian's) on the routers, as ARCHITECTURE.md and the
// drill's issue measured them: keepalived elects with the same VRRP settings, and its sync
// group's notify script is conntrackd's example primary-backup.sh (commit the external cache,
// flush, resync, bulk-send on master; shorten timers and ask for a resync on backup). It gives
// the figures keepstate is compared with, measured in the same run on the same machine.

/// conntrackd's configuration for the drill's baseline and `keepstate bench --conntrackd`: FTFW
/// over UDP between two addresses of the sync link, external cache on, caches and netlink
/// buffers sized for millions of entries; log, lock file and UNIX socket next to `base`.
enum ConntrackdConfig {
    static func text(comment: String, source: String, destination: String, interface: String, base: String) -> String {
        """
        # \(comment)
        Sync {
            Mode FTFW {
                ResendQueueSize 131072
            }
            UDP {
                IPv4_address \(source)
                IPv4_Destination_Address \(destination)
                Port 3780
                Interface \(interface)
                SndSocketBuffer 24985600
                RcvSocketBuffer 24985600
                Checksum on
            }
        }
        General {
            HashSize 1048576
            HashLimit 8388608
            LogFile \(base)-conntrackd.log
            Syslog off
            LockFile \(base)-conntrackd.lock
            UNIX {
                Path \(base)-ctd.sock
            }
            NetlinkBufferSize 2097152
            NetlinkBufferSizeMaxGrowth 134217728
            NetlinkEventsReliable on
            Filter From Userspace {
                Address Ignore {
                    IPv4_address 127.0.0.1
                    IPv4_address \(source)
                    IPv4_address \(destination)
                }
            }
        }

        """
    }

    /// A cache's "current active connections" from `conntrackd -s` output (`internal` or
    /// `external`).
    static func count(statistics: String, cache: String) -> Int? {
        var inCache = false
        for line in statistics.split(whereSeparator: \.isNewline) {
            if line.hasPrefix("cache ") { inCache = line.hasPrefix("cache \(cache):") }
            if inCache, line.hasPrefix("current active connections:") {
                return Int(line.split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "")
            }
        }
        return nil
    }
}

extension DrillRun {
    struct BaselineRouter {
        let spec: DrillTopology.Router
        let base: String
        var conntrackdConfig: String { base + "-conntrackd.conf" }
        var keepalivedConfig: String { base + "-keepalived.conf" }
        var notifyScript: String { base + "-notify.sh" }
        var commitLog: String { base + "-commit.txt" }
        var keepalived: DrillChild?
        var conntrackd: DrillChild?
    }

    static func onPath(_ name: String) -> Bool {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin"
        return path.split(separator: ":").contains { access("\($0)/\(name)", X_OK) == 0 }
    }

    func baselineRouter(_ r: DrillTopology.Router) -> BaselineRouter {
        BaselineRouter(spec: r, base: "\(workdir)/\(tag)-\(r.name)")
    }

    /// conntrackd (FTFW over UDP on the sync link, external cache on), keepalived (the sync group
    /// of keepstate's drill), and the notify script.
    func writeBaselineFiles(_ r: BaselineRouter, peer: DrillTopology.Router) throws {
        try ConntrackdConfig.text(comment: "keepstate drill baseline: conntrackd of \(r.spec.name), FTFW over the sync link",
                                  source: r.spec.sync, destination: peer.sync, interface: "sync0", base: r.base)
            .write(toFile: r.conntrackdConfig, atomically: true, encoding: .utf8)
        try """
            #!/bin/sh
            # keepalived's notify for conntrackd: conntrackd's example primary-backup.sh with this
            # router's configuration; the commit's start and end go to \(r.commitLog).
            C="conntrackd -C \(r.conntrackdConfig)"
            case "$1" in
            primary)
                start=$(date +%s.%N)
                $C -c
                end=$(date +%s.%N)
                echo "$start $end" > \(r.commitLog)
                $C -f
                $C -R
                $C -B
                ;;
            backup)
                $C -t
                $C -n
                ;;
            fault)
                $C -t
                ;;
            esac

            """.write(toFile: r.notifyScript, atomically: true, encoding: .utf8)
        guard chmod(r.notifyScript, 0o755) == 0 else { throw DrillError("chmod \(r.notifyScript): \(String(cString: strerror(errno)))") }
        var k = "! keepstate drill baseline: keepalived of \(r.spec.name)\n"
        k += "global_defs {\n    router_id \(r.spec.name)\n    script_user root\n    enable_script_security\n}\n\n"
        k += "vrrp_sync_group \(DrillConfig.group) {\n    group {\n        drill_in\n        drill_out\n    }\n"
        for (event, arg) in [("notify_master", "primary"), ("notify_backup", "backup"), ("notify_fault", "fault")] {
            k += "    \(event) \"\(r.notifyScript) \(arg)\"\n"
        }
        k += "}\n\n"
        k += DrillConfig.vrrpInstances(priority: r.spec.priority, preemptDelay: drill.preemptDelay)
        try k.write(toFile: r.keepalivedConfig, atomically: true, encoding: .utf8)
    }

    /// A conntrackd cache's "current active connections" (`internal` on the master, `external`
    /// on the backup); nil if conntrackd does not answer.
    func conntrackdCount(_ r: BaselineRouter, cache: String) -> Int? {
        guard let out = try? Shell.run(["ip", "netns", "exec", r.spec.netns, "conntrackd", "-C", r.conntrackdConfig, "-s"]),
              out.status == 0 else { return nil }
        return ConntrackdConfig.count(statistics: out.output, cache: cache)
    }

    func startBaselineDaemons(_ r: inout BaselineRouter) throws {
        r.conntrackd = try DrillChild(
            name: "\(r.spec.name) conntrackd",
            arguments: ["nice", "-n", "\(Drill.nice)", "ip", "netns", "exec", r.spec.netns, "conntrackd", "-C", r.conntrackdConfig],
            log: r.base + "-conntrackd.out", lineOutput: false, input: false)
        let router = r
        guard waitFor(10, { conntrackdCount(router, cache: "internal") != nil }) else {
            throw DrillError("conntrackd did not start on \(r.spec.name): see \(r.base)-conntrackd.log (--keep-files keeps it)")
        }
        r.keepalived = try DrillChild(
            name: "\(r.spec.name) keepalived",
            arguments: ["nice", "-n", "\(Drill.nice)", "ip", "netns", "exec", r.spec.netns, "keepalived", "-n", "-l", "-D", "-P",
                        "-f", r.keepalivedConfig, "-p", r.base + "-keepalived.pid", "-r", r.base + "-vrrp.pid",
                        "-c", r.base + "-checkers.pid"],
            log: r.base + "-keepalived.log", lineOutput: false, input: false)
    }

    func playBaseline() throws -> DrillRunReport {
        var report = DrillRunReport(name: name, sync: false, loose: loose)
        report.baseline = true
        let topo = DrillTopology(tag: tag)
        defer { topo.destroy() }
        var r1 = baselineRouter(topo.r1)
        var r2 = baselineRouter(topo.r2)
        var children: [DrillChild] = []
        defer {
            for c in children { c.closeInput(); c.terminate(grace: 2) }
            for c in [r1.keepalived, r2.keepalived, r1.conntrackd, r2.conntrackd] { c?.terminate(grace: 5) }
        }
        roomForTheTable()
        say("building the namespaces (\(topo.namespaces.joined(separator: " ")))")
        try topo.build(loose: loose, workdir: workdir)
        try writeBaselineFiles(r1, peer: topo.r2)
        try writeBaselineFiles(r2, peer: topo.r1)
        try startBaselineDaemons(&r1)
        try startBaselineDaemons(&r2)
        let (r1HasVIPs, r2HasVIPs) = (try topo.vipWatcher(topo.r1), try topo.vipWatcher(topo.r2))
        guard waitFor(15, { r1HasVIPs() && !r2HasVIPs() }) else {
            throw DrillError("keepalived did not elect r1 master with the addresses within 15 s (see \(r1.base)-keepalived.log)")
        }
        say("r1 master, r2 backup (keepalived)")
        let (server, client) = try startTraffic(topo, children: &children)
        let (a, b) = (r1, r2)
        guard waitFor(30, { (conntrackdCount(b, cache: "external") ?? 0) >= drill.tcp + drill.udp }) else {
            throw DrillError("r2's conntrackd does not hold the flows' conntracks after 30 s (external cache \(conntrackdCount(b, cache: "external") ?? -1))")
        }
        try fillBackground(topo, &report)
        let wanted = drill.background - (report.backgroundRefused ?? 0) + drill.tcp + drill.udp
        let syncStart = monotonicNanoseconds()
        let synced = waitFor(60 + Double(drill.background) / 10_000, every: 0.2) {
            (conntrackdCount(b, cache: "external") ?? 0) >= wanted
        }
        report.syncSeconds = DrillAnalysis.seconds(monotonicNanoseconds() - syncStart)
        say(synced ? "r2's conntrackd holds r1's table after \(DrillAnalysis.fmt(report.syncSeconds)) s"
                   : "r2's conntrackd did not catch up with r1's table (\(conntrackdCount(b, cache: "external") ?? -1) of \(wanted))")
        usleep(1_000_000)
        report.masterTable = conntrackdCount(a, cache: "internal")
        report.backupHeld = conntrackdCount(b, cache: "external")
        dumpFlows(topo, "before-failure")

        // The failure, as in the other runs (`--failure`): power, r1's processes frozen, its ports
        // on the bridges disabled, the processes killed; links, only its links down.
        let waker = beforeFailure(client, &report)
        let rtos = topo.clientRTOs()
        report.clientRTOMedianMs = DrillAnalysis.median(rtos)
        report.clientRTOMaxMs = rtos.max()
        let power = drill.failure == .power
        let (failure, frozen) = try topo.fail(topo.r1, power: power)
        client.send("mark \(failure)")
        topo.killAll(frozen)
        if power {
            r1.keepalived?.kill()
            r1.conntrackd?.kill()
        }
        say("r1 failed: \(power ? "cut off, keepalived and conntrackd killed" : "links down")")
        report.survivorMasterSeconds = timeTakeover(since: failure, r2HasVIPs)
        say("r2 has the addresses after \(DrillAnalysis.fmt(report.survivorMasterSeconds)) s")
        watchFlows(client, since: failure)
        waker?.stop()
        // The commit's duration, from the survivor's notify script (it may still be running).
        if waitFor(60 + Double(drill.background) / 20_000, every: 0.2, { FileManager.default.fileExists(atPath: b.commitLog) }),
           let text = try? String(contentsOfFile: b.commitLog, encoding: .utf8) {
            let t = text.split(separator: " ").compactMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            if t.count == 2 { report.commitSeconds = t[1] - t[0] }
        }
        say("conntrackd commit on r2: \(DrillAnalysis.fmt(report.commitSeconds)) s")
        dumpFlows(topo, "after-failure")
        _ = try conclude(&report, topo: topo, client: client, server: server, failure: failure, back: nil)
        say("done")
        return report
    }
}
