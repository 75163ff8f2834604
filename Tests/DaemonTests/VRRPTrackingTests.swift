import Config
@testable import Daemon
import Foundation
import Glibc
import Logging
import Testing

@Suite("VRRP tracking, scripts and notify in the daemon")
struct VRRPTrackingTests {
    func instance(priority: Int = 100, tracks: String = "") throws -> VRRPInstanceSpec {
        let c = try ConfigLoader.parse(text: """
            vrrp_script chk { script "/bin/true" }
            vrrp_script up { script "/bin/true" weight 20 }
            vrrp_script down { script "/bin/true" weight -30 }
            vrrp_instance VI_1 {
                interface eth0
                virtual_router_id 1
                priority \(priority)
                virtual_ipaddress { 192.0.2.1 }
                \(tracks)
            }
            """)
        return try #require(c.vrrpInstance(named: "VI_1"))
    }

    @Test("the instance's own interface down is a FAULT; a missing interface counts as down")
    func ownInterface() throws {
        let spec = try instance()
        #expect(Tracking.verdict(spec, interfaceUp: ["eth0": true], scriptOK: [:], groupFault: nil) == TrackingVerdict(priority: 100))
        #expect(Tracking.verdict(spec, interfaceUp: ["eth0": false], scriptOK: [:], groupFault: nil).fault == "interface eth0 is down")
        #expect(Tracking.verdict(spec, interfaceUp: [:], scriptOK: [:], groupFault: nil).fault == "interface eth0 is down")
    }

    @Test("weight 0 faults; weights add while fine (positive) or failed (negative); reverse swaps; 1...254")
    func weights() throws {
        let spec = try instance(tracks: """
            track_interface {
                eth1
                eth2 weight 10
                eth3 weight -50 reverse
            }
            track_script {
                chk
                up
                down
            }
            """)
        let allUp = ["eth0": true, "eth1": true, "eth2": true, "eth3": true]
        let ok = ["chk": true, "up": true, "down": true]
        // eth3 -50 reverse: applies while eth3 is up. up +20 while fine.
        #expect(Tracking.verdict(spec, interfaceUp: allUp, scriptOK: ok, groupFault: nil) == TrackingVerdict(priority: 100 + 10 - 50 + 20))
        var i = allUp
        i["eth2"] = false
        i["eth3"] = false
        var s = ok
        s["up"] = false
        s["down"] = false
        #expect(Tracking.verdict(spec, interfaceUp: i, scriptOK: s, groupFault: nil) == TrackingVerdict(priority: 100 - 30))
        i["eth1"] = false
        #expect(Tracking.verdict(spec, interfaceUp: i, scriptOK: s, groupFault: nil).fault == "tracked interface eth1 is down")
        s["chk"] = false
        i["eth1"] = true
        #expect(Tracking.verdict(spec, interfaceUp: i, scriptOK: s, groupFault: nil).fault == "tracked script chk failed")
        // Clamped: never 0 or 255 for a non-owner; the owner stays 255.
        let low = try instance(priority: 10, tracks: "track_script {\n down\n}")
        #expect(Tracking.verdict(low, interfaceUp: allUp, scriptOK: ["down": false], groupFault: nil).priority == 1)
        let high = try instance(priority: 250, tracks: "track_script {\n up\n}")
        #expect(Tracking.verdict(high, interfaceUp: allUp, scriptOK: ["up": true], groupFault: nil).priority == 254)
        // The owner's priority never changes (the parser refuses weights on it).
        let owner = try instance(priority: 255, tracks: "track_script {\n chk\n}")
        #expect(Tracking.verdict(owner, interfaceUp: allUp, scriptOK: ["chk": true], groupFault: nil).priority == 255)
    }

    @Test("a sync group member's own fault is passed on, after the instance's own")
    func groupFault() throws {
        let spec = try instance()
        #expect(Tracking.verdict(spec, interfaceUp: ["eth0": true], scriptOK: [:], groupFault: "VI_2").fault
                == "sync group member VI_2 is in FAULT")
        #expect(Tracking.verdict(spec, interfaceUp: ["eth0": false], scriptOK: [:], groupFault: "VI_2").fault == "interface eth0 is down")
    }

    @Test("rise and fall count consecutive results")
    func riseFall() {
        var c = ScriptCheck(rise: 2, fall: 3, initiallyOK: true)
        #expect(c.record(success: false) == nil && c.record(success: false) == nil)
        #expect(c.record(success: true) == nil)  // a success resets the failures
        #expect(c.record(success: false) == nil && c.record(success: false) == nil && c.record(success: false) == false)
        #expect(c.record(success: true) == nil && c.record(success: true) == true && c.ok)
        var f = ScriptCheck(rise: 1, fall: 1, initiallyOK: false)
        #expect(!f.ok && f.record(success: true) == true)
    }

    @Test("notify scripts run in order per name with keepalived's arguments; a slow one is killed at its timeout")
    func notifyOrder() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ks-notify-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let script = "\(dir)/n.sh", log = "\(dir)/n.log"
        // The first script (notify_master, `m`) sleeps: the ones queued after it still wait for it.
        try "#!/bin/sh\n[ \"$1\" = m ] && sleep 0.3\necho \"$1 $2 $3 $4 $5\" >> \(log)\n".write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        let loc = SourceLocation(file: "t", line: 1, column: 1)
        let spec = NotifySpec(
            master: ScriptCommandSpec(text: script, arguments: [script, "m"], location: loc),
            generic: ScriptCommandSpec(text: script, arguments: [script, "g"], location: loc))
        let q = NotifyQueue(logger: Logger(label: "t"))
        await q.notify(spec, kind: "INSTANCE", name: "VI_1", state: "MASTER", priority: 150, defaultUser: nil)
        await q.notify(spec, kind: "INSTANCE", name: "VI_1", state: "BACKUP", priority: 150, defaultUser: nil)
        await q.drain()
        let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map(String.init)
        // notify_master gets no arguments of its own; `notify` gets the four.
        #expect(lines == ["m    ", "g INSTANCE VI_1 MASTER 150", "g INSTANCE VI_1 BACKUP 150"])

        let slow = "\(dir)/slow.sh"
        try "#!/bin/sh\nsleep 30\n".write(toFile: slow, atomically: true, encoding: .utf8)
        chmod(slow, 0o755)
        let outcome = await ScriptRunner.run([slow], timeout: 0.2)
        #expect(outcome.timedOut && !outcome.succeeded)
        #expect(await ScriptRunner.run(["/bin/false"], timeout: 5).status == 1)
        #expect(await ScriptRunner.run(["/nonexistent/x"], timeout: 5).failure != nil)
    }

    @Test("a script inherits no descriptor of the daemon's beyond standard input, output and error")
    func scriptsInheritNoDescriptors() async throws {
        // Opened without O_CLOEXEC, as SwiftNIO's listening sockets are.
        let fd = open("/dev/null", O_RDONLY)
        try #require(fd > 2)
        defer { close(fd) }
        // The shell checks its own descriptor table: status 1 when fd is not there.
        #expect(await ScriptRunner.run(["/bin/sh", "-c", "test -e /proc/self/fd/\(fd)"], timeout: 5).status == 1)
        #expect(await ScriptRunner.run(["/bin/sh", "-c", "test -e /proc/self/fd/2"], timeout: 5).status == 0)
    }

    @Test("a script with a user runs through runuser")
    func runAs() {
        let loc = SourceLocation(file: "t", line: 1, column: 1)
        let c = ScriptCommandSpec(text: "/x a", arguments: ["/x", "a"], runAs: ScriptUserSpec(user: "nobody", group: "nogroup"), location: loc)
        #expect(ScriptRunner.argv(c, defaultUser: nil) == ["/usr/sbin/runuser", "-u", "nobody", "-g", "nogroup", "--", "/x", "a"])
        let d = ScriptCommandSpec(text: "/x", arguments: ["/x"], location: loc)
        #expect(ScriptRunner.argv(d, defaultUser: ScriptUserSpec(user: "keepalived_script")) == ["/usr/sbin/runuser", "-u", "keepalived_script", "--", "/x"])
        #expect(ScriptRunner.argv(d, defaultUser: nil) == ["/x"])
    }

    @Test("use_vmac is refused by check-config and at start, with its place in the file")
    func vmacRefused() throws {
        let c = try ConfigLoader.parse(text: "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 1\n use_vmac\n virtual_ipaddress { 192.0.2.1 }\n}\n", file: "k.conf")
        #expect(VRRPSupport.refusals(c) == ["k.conf:1:1: error: vrrp_instance VI_1: use_vmac is not run by this build; remove it (the addresses then go on eth0 with its own MAC)"])
        let ok = try ConfigLoader.parse(text: "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress { 192.0.2.1 }\n}\n")
        #expect(VRRPSupport.refusals(ok).isEmpty)
    }

    @Test("no_accept is refused (not enforced); enable_script_security refuses a root script others could change")
    func otherRefusals() throws {
        let c = try ConfigLoader.parse(text: "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 1\n no_accept\n virtual_ipaddress { 192.0.2.1 }\n}\n", file: "k.conf")
        #expect(VRRPSupport.refusals(c).count == 1 && VRRPSupport.refusals(c)[0].hasPrefix("k.conf:1:1: error: vrrp_instance VI_1: no_accept is not enforced"))
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ks-sec-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let script = "\(dir)/chk.sh"
        try "#!/bin/sh\n".write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o777)
        let text = "global_defs {\n enable_script_security\n}\nvrrp_script chk {\n script \(script)\n}\n"
            + "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress { 192.0.2.1 }\n track_script {\n chk\n }\n}\n"
        let refusals = VRRPSupport.refusals(try ConfigLoader.parse(text: text, file: "k.conf"))
        #expect(refusals.count == 1 && refusals[0].hasPrefix("k.conf:5:2: error: enable_script_security: \(script) would run as root")
                && refusals[0].contains("writable by its group or others"), "\(refusals)")
        // /bin/true: owned by root, not writable by others.
        #expect(ScriptRunner.unsafeForRoot("/bin/true") == nil)
        #expect(ScriptRunner.unsafeForRoot("relative.sh") == "its path is not absolute")
        // With a user, it does not run as root: no check.
        let asNobody = text.replacingOccurrences(of: " script \(script)\n", with: " script \(script)\n user nobody\n")
        #expect(VRRPSupport.refusals(try ConfigLoader.parse(text: asNobody, file: "k.conf")).isEmpty)
    }

    @Test("a reload compares the VRRP settings without where they were read")
    func vrrpSettingsIgnoreLocations() throws {
        let text = "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress { 192.0.2.1 }\n notify /x.sh\n}\n"
        let a = try ConfigLoader.parse(text: text)
        let b = try ConfigLoader.parse(text: "! a comment\n\n" + text, file: "/other \"quoted\" file")
        let c = try ConfigLoader.parse(text: text.replacingOccurrences(of: "192.0.2.1", with: "192.0.2.2"))
        #expect(KeepstateDaemon.vrrpSettings(a) == KeepstateDaemon.vrrpSettings(b))
        #expect(KeepstateDaemon.vrrpSettings(a) != KeepstateDaemon.vrrpSettings(c))
    }
}
