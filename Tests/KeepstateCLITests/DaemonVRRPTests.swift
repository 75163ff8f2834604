@testable import Daemon
import Foundation
import Glibc
import Testing
import TestSupport
import VRRPBench

/// `keepstate run` electing with keepalived on one segment: the daemon's VRRP instances, their
/// tracking, a sync group, notify scripts and the hand-over on SIGTERM (docs/vrrp.md).
@Suite("keepstate run with VRRP against keepalived", .serialized, .timeLimit(.minutes(2)),
       .enabled(if: isRoot, "needs root: network namespaces and raw sockets"))
struct DaemonVRRPTests {
    static let vip = "192.0.2.100"
    /// VI_2's address: VI_2 has no other router, and is in VI_1's sync group.
    static let vip2 = "192.0.2.101"

    func group(_ socket: String, _ name: String) -> GroupReport? {
        (try? ControlClient.send(ControlRequest(command: .showState), socketPath: socket, timeout: .seconds(2)))?
            .state?.groups.first { $0.name == name }
    }

    func vrrp(_ socket: String, _ name: String) -> VRRPInstanceReport? {
        (try? ControlClient.send(ControlRequest(command: .showVRRP), socketPath: socket, timeout: .seconds(2)))?
            .vrrp?.instances.first { $0.name == name }
    }

    /// `keepstate run` in `host`'s namespace, killed by the segment's teardown if still running.
    func startDaemon(in host: LabHost, config: String, socket: String, segment: LabSegment) throws -> LabProcess {
        let daemon = try LabProcess(
            ["ip", "netns", "exec", host.namespace.name, DaemonProcessTests.executable, "run", "--config", config,
             "--socket", socket, "--log-level", "info"],
            outputPath: segment.path("keepstate.log"))
        segment.own(daemon)
        return daemon
    }

    @Test("elects with keepalived, goes to FAULT with its sync group's tracked interface, runs notify with keepalived's arguments, hands over on SIGTERM")
    func againstKeepalived() async throws {
        try await withLabSegment(tag: "dvr") { segment in
            let ours = try segment.addHost("dvr-ours", number: 1, ipv4: "192.0.2.1")
            let theirs = try segment.addHost("dvr-ka", number: 2, ipv4: "192.0.2.2")
            // The tracked interface: a veth pair inside our namespace (no dummy module here).
            try ours.namespace.must(["ip", "link", "add", "trk0", "type", "veth", "peer", "name", "trk1"])
            try ours.namespace.must(["ip", "link", "set", "trk1", "up"])
            try ours.namespace.must(["ip", "link", "set", "trk0", "up"])
            let notifyLog = segment.path("notify.log")
            let script = segment.path("notify.sh")
            try "#!/bin/sh\necho \"$@\" >> \(notifyLog)\n".write(toFile: script, atomically: true, encoding: .utf8)
            chmod(script, 0o755)
            let conf = segment.path("keepstate.conf")
            try """
                global_defs {
                    router_id ours
                    vrrp_garp_master_delay 0
                }
                vrrp_instance VI_1 {
                    interface veth0
                    virtual_router_id 51
                    priority 150
                    advert_int 0.1
                    version 3
                    notify \(script)
                    virtual_ipaddress {
                        \(Self.vip)/24
                    }
                }
                vrrp_instance VI_2 {
                    interface veth0
                    virtual_router_id 52
                    priority 150
                    advert_int 0.1
                    version 3
                    track_interface {
                        trk0
                    }
                    virtual_ipaddress {
                        \(Self.vip2)/24
                    }
                }
                vrrp_sync_group G {
                    group {
                        VI_1
                        VI_2
                    }
                }
                """.write(toFile: conf, atomically: true, encoding: .utf8)
            let socket = segment.path("k.sock")
            let daemon = try startDaemon(in: ours, config: conf, socket: socket, segment: segment)
            let ka = try LabKeepalived(on: theirs, config: KeepalivedInstanceConfig(
                routerID: "ka", priority: 100, advertInterval: "0.1", version: 3, virtualAddresses: ["\(Self.vip)/24"]),
                segment: segment)
            func oursHolds() -> Bool { ours.namespace.has(Self.vip, on: "veth0") && !theirs.namespace.has(Self.vip, on: "veth0") }
            func theirsHolds() -> Bool { theirs.namespace.has(Self.vip, on: "veth0") && !ours.namespace.has(Self.vip, on: "veth0") }

            // Ours has the higher priority: master, with the address; keepalived backup.
            let elected = await labPoll(timeout: .seconds(20)) { group(socket, "VI_1")?.state == "master" && oursHolds() }
            #expect(elected, "ours: \(String(describing: group(socket, "VI_1")))\n\(daemon.output.suffix(3000))\n\(ka.log.suffix(2000))")
            let g = try #require(group(socket, "VI_1"))
            #expect(g.kind == "vrrp-instance" && g.vrrpState == "master" && g.vrrpPriority == 150 && g.vrrpFault == nil)
            #expect(await labPoll(timeout: .seconds(5)) { group(socket, "G")?.state == "master" && group(socket, "G")?.kind == "vrrp-sync-group" })
            // show vrrp: this node is the master and holds the address; VI_2 tracks trk0 (up).
            let shown = try #require(vrrp(socket, "VI_1"))
            #expect(shown.state == "master" && shown.masterAddress == "192.0.2.1" && shown.primaryAddress == "192.0.2.1")
            #expect(shown.vrid == 51 && shown.version == 3 && shown.interface == "veth0" && shown.advertInterval == 0.1)
            #expect(shown.configuredPriority == 150 && shown.trackedPriority == 150 && shown.effectivePriority == 150)
            #expect(shown.virtualAddresses.map { "\($0.address)/\($0.prefixLength) \($0.held.map(String.init) ?? "?")" } == ["\(Self.vip)/24 true"])
            #expect(shown.syncGroup == "G" && shown.statistics.advertsSent > 0 && shown.since != nil)
            #expect(vrrp(socket, "VI_2")?.trackInterfaces == [VRRPTrackReport(name: "trk0", status: "up", weight: 0, reverse: false, delta: 0)])
            let human = try ExitCodeTests.keepstate(["show", "vrrp", "--instance", "VI_2", "--socket", socket])
            #expect(human.status == 0, "\(human.stderr)")
            #expect(human.stdout.hasPrefix("show-vrrp\n    vrrp_instance VI_2\n") && human.stdout.contains("            trk0 up weight 0: fault when down\n")
                    && human.stdout.contains("    vrrp_sync_group G\n        state master\n        member VI_1 master\n"), "\(human.stdout)")

            // The tracked interface goes down: FAULT, the address leaves, keepalived takes over.
            try ours.namespace.must(["ip", "link", "set", "trk0", "down"])
            let faulted = await labPoll(timeout: .seconds(10)) {
                group(socket, "VI_1")?.vrrpState == "fault" && group(socket, "VI_1")?.state == "backup" && theirsHolds()
            }
            #expect(faulted, "ours: \(String(describing: group(socket, "VI_1")))")
            // VI_2 tracks trk0; VI_1 follows it into FAULT through the sync group (VI_2 is
            // evaluated after VI_1: the group's fault must reach an instance evaluated earlier).
            #expect(group(socket, "VI_1")?.vrrpFault == "sync group member VI_2 is in FAULT")
            #expect(await labPoll(timeout: .seconds(5)) {
                group(socket, "VI_2")?.vrrpFault?.contains("trk0") == true && !ours.namespace.has(Self.vip2, on: "veth0")
            }, "VI_2: \(String(describing: group(socket, "VI_2")))")
            #expect(group(socket, "G")?.state == "backup")
            // show vrrp: FAULT with its reason, the address not held, keepalived's address as the master.
            #expect(await labPoll(timeout: .seconds(5)) { vrrp(socket, "VI_1")?.masterAddress == "192.0.2.2" },
                    "\(String(describing: vrrp(socket, "VI_1")))")
            let faulty = try #require(vrrp(socket, "VI_2"))
            #expect(faulty.state == "fault" && faulty.fault?.contains("trk0") == true)
            #expect(faulty.trackInterfaces.map(\.status) == ["down"] && faulty.virtualAddresses.map(\.held) == [false])
            #expect(vrrp(socket, "VI_1")?.virtualAddresses.map(\.held) == [false])
            let groups = (try? ControlClient.send(ControlRequest(command: .showVRRP, instance: "VI_2"), socketPath: socket))?.vrrp
            #expect(groups?.instances.map(\.name) == ["VI_2"] && groups?.syncGroups.map(\.state) == ["fault"])

            // Back up: ours preempts keepalived again.
            try ours.namespace.must(["ip", "link", "set", "trk0", "up"])
            #expect(await labPoll(timeout: .seconds(10)) {
                group(socket, "VI_1")?.vrrpState == "master" && oursHolds() && group(socket, "VI_2")?.vrrpState == "master"
                    && ours.namespace.has(Self.vip2, on: "veth0") && group(socket, "G")?.state == "master"
            })

            // SIGTERM: our adverts with priority 0 (seen on the segment by tshark), keepalived takes
            // over, the daemon exits 0.
            let capture = try LabCapture(namespace: segment.bridge, interface: "br0", filter: "ip proto 112",
                                         fields: ["ip.src", "vrrp.virt_rtr_id", "vrrp.prio"], segment: segment)
            try await capture.waitUntilCapturing()
            // tshark says it captures a moment before it does: wait for one of our adverts first.
            #expect(await labPoll(timeout: .seconds(10)) { capture.rows.contains { $0 == ["192.0.2.1", "51", "150"] } })
            daemon.signal(SIGTERM)
            #expect(await daemon.waitForExit(timeout: .seconds(10)), "the daemon did not stop")
            #expect(daemon.exitCode == 0, "exit code \(String(describing: daemon.exitCode))")
            #expect(await labPoll(timeout: .seconds(5)) { theirsHolds() })
            let zeros = await labPoll(timeout: .seconds(5)) {
                ["51", "52"].allSatisfy { vrid in capture.rows.contains { $0 == ["192.0.2.1", vrid, "0"] } }
            }
            #expect(zeros, "no priority-0 adverts from ours: \(capture.rows.suffix(10)) \(capture.stderr)")
            _ = await capture.stop()

            // notify: keepalived's four arguments, in order, STOP last.
            let lines = ((try? String(contentsOfFile: notifyLog, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            #expect(lines == ["INSTANCE VI_1 BACKUP 150", "INSTANCE VI_1 MASTER 150", "INSTANCE VI_1 FAULT 150",
                              "INSTANCE VI_1 BACKUP 150", "INSTANCE VI_1 MASTER 150", "INSTANCE VI_1 STOP 150"],
                    "notify log:\n\(lines.joined(separator: "\n"))")
        }
    }

    @Test("a reload that changes VRRP settings keeps the master master: no priority 0, no notify, keepalived never takes the address; an added address comes, a removed one goes, the new priority shows")
    func reloadCarriesMastership() async throws {
        try await withLabSegment(tag: "drl") { segment in
            let ours = try segment.addHost("drl-ours", number: 1, ipv4: "192.0.2.1")
            let theirs = try segment.addHost("drl-ka", number: 2, ipv4: "192.0.2.2")
            let notifyLog = segment.path("notify.log")
            let script = segment.path("notify.sh")
            try "#!/bin/sh\necho \"$@\" >> \(notifyLog)\n".write(toFile: script, atomically: true, encoding: .utf8)
            chmod(script, 0o755)
            let extra = "192.0.2.102"
            // The added address is `virtual_ipaddress_excluded`: it is not in the adverts, whose
            // address list keepalived compares with its own (it drops adverts listing others).
            func conf(priority: Int, addresses: [String]) -> String {
                """
                global_defs {
                    router_id ours
                    vrrp_garp_master_delay 0
                }
                vrrp_instance VI_1 {
                    interface veth0
                    virtual_router_id 51
                    priority \(priority)
                    advert_int 0.1
                    version 3
                    notify \(script)
                    virtual_ipaddress {
                        \(Self.vip)/24
                    }
                    virtual_ipaddress_excluded {
                \(addresses.filter { $0 != Self.vip }.map { "        \($0)/24" }.joined(separator: "\n"))
                    }
                }
                """
            }
            let path = segment.path("keepstate.conf")
            try conf(priority: 150, addresses: [Self.vip]).write(toFile: path, atomically: true, encoding: .utf8)
            let socket = segment.path("k.sock")
            let daemon = try startDaemon(in: ours, config: path, socket: socket, segment: segment)
            let ka = try LabKeepalived(on: theirs, config: KeepalivedInstanceConfig(
                routerID: "ka", priority: 100, advertInterval: "0.1", version: 3, virtualAddresses: ["\(Self.vip)/24"]),
                segment: segment)
            func oursHolds() -> Bool { ours.namespace.has(Self.vip, on: "veth0") && !theirs.namespace.has(Self.vip, on: "veth0") }
            #expect(await labPoll(timeout: .seconds(20)) { vrrp(socket, "VI_1")?.state == "master" && oursHolds() },
                    "\(daemon.output.suffix(3000))")
            let transitionsBefore = try #require(vrrp(socket, "VI_1")).transitions
            // keepalived may have been master for a moment before ours was elected.
            func kaMasterEntries() -> Int { ka.log.components(separatedBy: "Entering MASTER STATE").count - 1 }
            let kaMastersBefore = kaMasterEntries()

            // Watch the segment: a priority 0 from ours, or any advert from keepalived as master,
            // would show a flap.
            let capture = try LabCapture(namespace: segment.bridge, interface: "br0", filter: "ip proto 112",
                                         fields: ["ip.src", "vrrp.virt_rtr_id", "vrrp.prio", "frame.time_relative"], segment: segment)
            try await capture.waitUntilCapturing()
            #expect(await labPoll(timeout: .seconds(10)) { capture.rows.contains { $0.prefix(3) == ["192.0.2.1", "51", "150"] } })

            // Reload: a lower priority (still above keepalived's) and one more address.
            try conf(priority: 140, addresses: [Self.vip, extra]).write(toFile: path, atomically: true, encoding: .utf8)
            let r1 = try ControlClient.send(ControlRequest(command: .reload), socketPath: socket, timeout: .seconds(10))
            #expect(r1.ok && r1.message?.contains("VRRP restarted (carried over: VI_1 master)") == true, "\(r1)")
            #expect(await labPoll(timeout: .seconds(5)) {
                vrrp(socket, "VI_1")?.effectivePriority == 140 && ours.namespace.has(extra, on: "veth0")
                    && capture.rows.contains { $0.prefix(3) == ["192.0.2.1", "51", "140"] }
            }, "\(String(describing: vrrp(socket, "VI_1")))")
            #expect(vrrp(socket, "VI_1")?.state == "master" && oursHolds(), "\(daemon.output.suffix(4000))\n\(capture.rows.map { $0.joined(separator: " ") }.joined(separator: "\n"))")

            // Reload: the added address removed again.
            try conf(priority: 140, addresses: [Self.vip]).write(toFile: path, atomically: true, encoding: .utf8)
            let r2 = try ControlClient.send(ControlRequest(command: .reload), socketPath: socket, timeout: .seconds(10))
            #expect(r2.ok, "\(r2)")
            #expect(await labPoll(timeout: .seconds(5)) { !ours.namespace.has(extra, on: "veth0") })
            // A second of adverts after the reloads, then what the segment saw.
            try await Task.sleep(for: .seconds(1))
            #expect(vrrp(socket, "VI_1")?.state == "master" && oursHolds())
            _ = await capture.stop()
            #expect(!capture.rows.contains { $0.prefix(3) == ["192.0.2.1", "51", "0"] }, "a priority 0 from ours: \(capture.rows.suffix(10))")
            #expect(!capture.rows.contains { $0.first == "192.0.2.2" }, "keepalived advertised (it became master)")
            // Our adverts never paused for more than two intervals (keepalived's
            // Master_Down_Interval is 0.36 s).
            let times = capture.rows.filter { $0.prefix(2) == ["192.0.2.1", "51"] }.compactMap { $0.count > 3 ? Double($0[3]) : nil }
            let gap = zip(times, times.dropFirst()).map { $1 - $0 }.max() ?? 99
            #expect(times.count > 10 && gap < 0.2, "longest gap between our adverts \(gap) s over \(times.count)")
            #expect(kaMasterEntries() == kaMastersBefore, "\(ka.log.suffix(2000))")
            // The instance's own history: the new runner's one start as master, nothing else.
            #expect((vrrp(socket, "VI_1")?.transitions ?? 99) <= 1, "transitions \(transitionsBefore) then \(String(describing: vrrp(socket, "VI_1")?.transitions))")
            let lines = ((try? String(contentsOfFile: notifyLog, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            #expect(lines == ["INSTANCE VI_1 BACKUP 150", "INSTANCE VI_1 MASTER 150"], "notify log:\n\(lines.joined(separator: "\n"))")
        }
    }

    @Test("failback hold-down: a node whose VRF has not the master's table advertises priority 1 until failback_hold_max, then preempts")
    func failbackHoldDown() async throws {
        try await withLabSegment(tag: "dfb") { segment in
            let ours = try segment.addHost("dfb-ours", number: 1, ipv4: "192.0.2.1")
            let theirs = try segment.addHost("dfb-ka", number: 2, ipv4: "192.0.2.2")
            let conf = try holdConfig(segment, advertInterval: "0.1", holdMax: 3)
            // keepalived first, so that it is master when ours starts (a returning node).
            _ = try LabKeepalived(on: theirs, config: KeepalivedInstanceConfig(
                routerID: "ka", priority: 100, advertInterval: "0.1", version: 3, virtualAddresses: ["\(Self.vip)/24"]),
                segment: segment)
            #expect(await labPoll(timeout: .seconds(10)) { theirs.namespace.has(Self.vip, on: "veth0") })
            let socket = segment.path("k.sock")
            let daemon = try startDaemon(in: ours, config: conf, socket: socket, segment: segment)
            let started = ContinuousClock.now
            // Held down: priority 1, backup, keepalived keeps the address.
            #expect(await labPoll(timeout: .seconds(10)) {
                group(socket, "VI_1")?.vrrpPriority == 1 && group(socket, "VI_1")?.vrrpState == "backup"
            }, "\(String(describing: group(socket, "VI_1")))\n\(daemon.output.suffix(2000))")
            #expect(theirs.namespace.has(Self.vip, on: "veth0") && !ours.namespace.has(Self.vip, on: "veth0"))
            // show vrrp says why: held down for VRF main, keepalived is the master.
            var seen: VRRPInstanceReport?
            let read = await labPoll(timeout: .seconds(3)) {
                seen = vrrp(socket, "VI_1")
                return seen?.failbackHold.held == true && seen?.masterAddress == "192.0.2.2"
            }
            if read, let held = seen {
                #expect(held.effectivePriority == 1 && held.configuredPriority == 150 && held.trackedPriority == 150)
                #expect(held.failbackHold.vrfsBehind == ["main"] && held.failbackHold.bound == 3)
                #expect(held.failbackHold.reason?.hasPrefix("VRF main does not hold the master's whole table yet") == true)
                #expect(held.lastAdvert?.source == "192.0.2.2" && held.lastAdvert?.priority == 100)
            } else if ContinuousClock.now - started < .seconds(3) {
                Issue.record("held, but show vrrp says: \(String(describing: seen))")
            }
            // failback_hold_max (3 s) runs out: priority 150 again, and ours preempts.
            #expect(await labPoll(timeout: .seconds(15)) {
                group(socket, "VI_1")?.vrrpState == "master" && ours.namespace.has(Self.vip, on: "veth0")
            })
            #expect(ContinuousClock.now - started >= .seconds(3), "preempted before failback_hold_max")
            #expect(group(socket, "VI_1")?.vrrpPriority == 150)
            #expect(daemon.output.contains("VRRP priority hold-down ended by failback_hold_max before the resync completed"))
            daemon.signal(SIGTERM)
            #expect(await daemon.waitForExit(timeout: .seconds(10)))
        }
    }

    /// A daemon configuration whose VRF never completes a resync (its sync peer, 192.0.2.250,
    /// does not exist), so its VRRP instance VI_1 (priority 150) starts held down.
    func holdConfig(_ segment: LabSegment, advertInterval: String, holdMax: Int) throws -> String {
        let pki = segment.path("pki")
        let exe = DaemonProcessTests.executable
        for args in [["pki", "init", "--dir", pki], ["pki", "issue", "--dir", pki, "--name", "ours", "--address", "192.0.2.1"],
                     ["pki", "issue", "--dir", pki, "--name", "peer", "--address", "192.0.2.250"]] {
            _ = try labMust([exe] + args)
        }
        let conf = segment.path("keepstate.conf")
        try """
            global_defs {
                router_id ours
                vrrp_garp_master_delay 0
            }
            vrrp_instance VI_1 {
                interface veth0
                virtual_router_id 51
                priority 150
                advert_int \(advertInterval)
                version 3
                virtual_ipaddress {
                    \(Self.vip)/24
                }
            }
            vrf main {
                ha_fp_conntrack {
                    peer peer {
                        source 192.0.2.1
                        address 192.0.2.250
                        identity peer
                    }
                    listen_ha_group VI_1
                    failback_hold_max \(holdMax)
                    tls {
                        ca \(pki)/ca.pem
                        certificate \(pki)/ours.pem
                        key \(pki)/ours.key
                    }
                }
            }
            """.write(toFile: conf, atomically: true, encoding: .utf8)
        return conf
    }

    /// Both nodes starting together: each is held (neither has the other's table), and neither
    /// is a master sending its table, so the one that becomes master gets its priority back at
    /// once and the configured priorities decide (the settling rule, which needs a master peer
    /// sending, is in FailbackHoldTests).
    @Test("a held-down node that becomes master with no master peer sending its table gets its priority back at once")
    func heldMasterReleasedAtOnce() async throws {
        try await withLabSegment(tag: "dha") { segment in
            let ours = try segment.addHost("dha-ours", number: 1, ipv4: "192.0.2.1")
            _ = try segment.addHost("dha-ka", number: 2, ipv4: "192.0.2.2")
            let conf = try holdConfig(segment, advertInterval: "1", holdMax: 60)
            let socket = segment.path("k.sock")
            let daemon = try startDaemon(in: ours, config: conf, socket: socket, segment: segment)
            #expect(await labPoll(timeout: .seconds(10)) { group(socket, "VI_1")?.vrrpPriority == 1 },
                    "\(String(describing: group(socket, "VI_1")))\n\(daemon.output.suffix(2000))")
            #expect(await labPoll(timeout: .seconds(10)) {
                group(socket, "VI_1")?.vrrpState == "master" && ours.namespace.has(Self.vip, on: "veth0")
            }, "\(String(describing: group(socket, "VI_1")))\n\(daemon.output.suffix(2000))")
            // Released within a tick or two of becoming master, far below the 12 s settling time.
            #expect(await labPoll(timeout: .seconds(3)) { group(socket, "VI_1")?.vrrpPriority == 150 })
            #expect(daemon.output.contains("VRRP priority no longer held down: this node is master"))
            daemon.signal(SIGTERM)
            #expect(await daemon.waitForExit(timeout: .seconds(10)))
        }
    }
}
