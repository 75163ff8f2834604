import Daemon
import Foundation
import Glibc
import Testing
import TestSupport
import VRRPBench

/// `keepstate run` electing with keepalived on one segment: the daemon's VRRP instances, their
/// tracking, notify scripts and the hand-over on SIGTERM (docs/vrrp.md).
@Suite("keepstate run with VRRP against keepalived", .serialized, .timeLimit(.minutes(2)),
       .enabled(if: isRoot, "needs root: network namespaces and raw sockets"))
struct DaemonVRRPTests {
    static let vip = "192.0.2.100"

    func group(_ socket: String, _ name: String) -> GroupReport? {
        (try? ControlClient.send(ControlRequest(command: .showState), socketPath: socket, timeout: .seconds(2)))?
            .state?.groups.first { $0.name == name }
    }

    @Test("elects with keepalived, goes to FAULT with its tracked interface, runs notify with keepalived's arguments, hands over on SIGTERM")
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
                    track_interface {
                        trk0
                    }
                    notify \(script)
                    virtual_ipaddress {
                        \(Self.vip)/24
                    }
                }
                """.write(toFile: conf, atomically: true, encoding: .utf8)
            let socket = segment.path("k.sock")
            let daemon = try LabProcess(
                ["ip", "netns", "exec", ours.namespace.name, DaemonProcessTests.executable, "run", "--config", conf,
                 "--socket", socket, "--log-level", "info"],
                outputPath: segment.path("keepstate.log"))
            segment.own(daemon)
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

            // The tracked interface goes down: FAULT, the address leaves, keepalived takes over.
            try ours.namespace.must(["ip", "link", "set", "trk0", "down"])
            let faulted = await labPoll(timeout: .seconds(10)) {
                group(socket, "VI_1")?.vrrpState == "fault" && group(socket, "VI_1")?.state == "backup" && theirsHolds()
            }
            #expect(faulted, "ours: \(String(describing: group(socket, "VI_1")))")
            #expect(group(socket, "VI_1")?.vrrpFault?.contains("trk0") == true)

            // Back up: ours preempts keepalived again.
            try ours.namespace.must(["ip", "link", "set", "trk0", "up"])
            #expect(await labPoll(timeout: .seconds(10)) { group(socket, "VI_1")?.vrrpState == "master" && oursHolds() })

            // SIGTERM: priority 0, keepalived takes over within Skew_Time (well under the 0.3 s of a
            // Master_Down_Interval; polled here, not timed), the daemon exits 0.
            daemon.signal(SIGTERM)
            #expect(await daemon.waitForExit(timeout: .seconds(10)), "the daemon did not stop")
            #expect(await labPoll(timeout: .seconds(5)) { theirsHolds() })

            // notify: keepalived's four arguments, in order, STOP last.
            let lines = ((try? String(contentsOfFile: notifyLog, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            #expect(lines == ["INSTANCE VI_1 BACKUP 150", "INSTANCE VI_1 MASTER 150", "INSTANCE VI_1 FAULT 150",
                              "INSTANCE VI_1 BACKUP 150", "INSTANCE VI_1 MASTER 150", "INSTANCE VI_1 STOP 150"],
                    "notify log:\n\(lines.joined(separator: "\n"))")
        }
    }
}
