import Config
@testable import Daemon
import Foundation
import SyncPolicy
import Testing

@Suite("Configuration to sync policy")
struct PolicyMappingTests {
    @Test("conntrack_timeouts and ha_delays become the VRF's policy; the rest keeps the policy's defaults")
    func mapping() {
        let vrf = VRFConfig(
            name: "main", timeouts: ConntrackTimeouts(tcpUndefined: 20),
            delays: HADelays(tcp: ProtocolDelays(synchronization: 1, undefinedGracePeriod: 10),
                             udp: ProtocolDelays(synchronization: 5), icmp: ProtocolDelays(undefinedGracePeriod: 0)),
            location: SourceLocation(file: "x.conf", line: 1, column: 1))
        let p = PolicySettings(vrf: vrf)
        #expect(p.tcpUndefined == 20)
        #expect(p.tcp == ProtocolPolicy(synchronizationDelay: .seconds(1), undefinedGracePeriod: .seconds(10)))
        #expect(p.udp == ProtocolPolicy(synchronizationDelay: .seconds(5)))
        #expect(p.icmp == ProtocolPolicy(undefinedGracePeriod: .zero))
        #expect(p.other == ProtocolPolicy())
        #expect(p.hold == HoldPolicy() && p.graceEnforcement == .kernelExpiry)
        // The defaults sync at once, with no grace period.
        let d = PolicySettings(vrf: VRFConfig(name: "main", location: SourceLocation(file: "x.conf", line: 1, column: 1)))
        #expect(d == PolicySettings())
    }
}

@Suite("Control protocol")
struct ControlProtocolTests {
    @Test("a request round-trips; unknown versions, commands and non-JSON are refused with a reason")
    func decoding() throws {
        let ok = try ControlRequest.decode(Array(#"{"version":1,"command":"set-state","group":"g1","state":"master"}"#.utf8))
        #expect(ok == ControlRequest(command: .setState, group: "g1", state: "master"))
        #expect(throws: ControlRequestError.unsupportedVersion(2)) {
            try ControlRequest.decode(Array(#"{"version":2,"command":"whatever-new"}"#.utf8))
        }
        #expect(throws: ControlRequestError.notJSON("bad value for \"command\"")) {
            try ControlRequest.decode(Array(#"{"version":1,"command":"format-disk"}"#.utf8))
        }
        #expect(throws: ControlRequestError.notJSON("missing field \"version\"")) {
            try ControlRequest.decode(Array(#"{"command":"sync"}"#.utf8))
        }
        #expect(throws: ControlRequestError.notJSON("malformed JSON")) { try ControlRequest.decode(Array("show state".utf8)) }
        #expect(throws: ControlRequestError.tooLong(20000)) {
            try ControlRequest.decode([UInt8](repeating: 0x20, count: 20000))
        }
    }

    @Test("every byte string decodes to a request or a typed error, never a trap")
    func randomInput() {
        var rng = SystemRandomNumberGenerator()
        let pieces = [#"{"#, #"}"#, #""version":"#, "1", "2", #""command":"#, #""sync""#, ",", #""vrf":"#, "null", "[", "]", "\"", "\\u0000"]
        for _ in 0..<2000 {
            var s = ""
            for _ in 0..<Int.random(in: 0..<12, using: &rng) { s += pieces.randomElement(using: &rng)! }
            _ = try? ControlRequest.decode(Array(s.utf8))
        }
    }

    @Test("reply lines are one line of JSON with sorted keys")
    func replyLine() throws {
        var r = ControlReply(ok: true, message: "done")
        r.conntracks = [ConntrackCounts(vrf: "main", synced: ["tcp": ["ESTABLISHED": 2]], held: 3)]
        let line = String(decoding: r.encodedLine(), as: UTF8.self)
        #expect(line == #"{"conntracks":[{"held":3,"synced":{"tcp":{"ESTABLISHED":2}},"vrf":"main"}],"message":"done","ok":true,"version":1}"# + "\n")
    }
}

@Suite("HA group state")
struct HAGroupStateTests {
    @Test("the override wins over the driver, auto gives control back, and only changes are reported")
    func overrides() {
        let t0 = ContinuousClock.now
        var g = HAGroupState(name: "g", kind: .static, driven: .backup, now: t0)
        #expect(g.effective == .backup)
        #expect(g.setOverride(.master, now: t0) == .master)
        #expect(g.drive(.backup, now: t0) == nil)
        #expect(g.drive(.master, now: t0) == nil, "already master through the override")
        #expect(g.setOverride(.auto, now: t0) == nil, "the driver says master too")
        #expect(g.drive(.backup, now: t0) == .backup)
        #expect(g.setOverride(.backup, now: t0) == nil)
        #expect(g.transitions == 2)
    }
}
