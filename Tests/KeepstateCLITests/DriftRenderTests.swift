@testable import Daemon
import KeepstateCLI
import Testing

@Suite struct DriftRenderTests {
    static func vrf(drift: String?, reason: String? = nil, details: [String]? = nil, mine: String? = nil, peer: String? = nil) -> VRFReport {
        var v = VRFReport(name: "main", netns: nil, group: "g", role: "master", conntracks: 0, held: 0, holdQueue: 0,
                          holdRefused: 0, lastTakeoverSeconds: nil, lastRearm: nil, connectionsEstablished: 1,
                          connections: 1, dataplaneError: nil)
        v.drift = drift
        v.driftReason = reason
        v.driftDetails = details
        v.rulesetDigest = mine
        v.peerRulesetDigest = peer
        return v
    }

    static let digestA = String(repeating: "3f2a", count: 16)
    static let digestB = String(repeating: "77b1", count: 16)

    @Test func driftLines() {
        #expect(ShowRender.drift(Self.vrf(drift: nil)) == "", "a VRF without sync has no drift lines")
        #expect(ShowRender.drift(Self.vrf(drift: "none", details: [], mine: Self.digestA, peer: Self.digestA)) == """
                    ruleset 3f2a3f2a3f2a3f2a peer 3f2a3f2a3f2a3f2a
                    drift none

            """)
        #expect(ShowRender.drift(Self.vrf(
            drift: "ruleset", details: ["table ip nat chain postrouting differs", "table inet filter set allowed only on this node"],
            mine: Self.digestA, peer: Self.digestB)) == """
                    ruleset 3f2a3f2a3f2a3f2a peer 77b177b177b177b1
                    drift ruleset
                        table ip nat chain postrouting differs
                        table inet filter set allowed only on this node

            """)
        #expect(ShowRender.drift(Self.vrf(drift: "unknown", reason: "nothing heard from the peer yet", details: [],
                                          mine: "unknown (not read yet)")) == """
                    ruleset unknown (not read yet) peer -
                    drift unknown (nothing heard from the peer yet)

            """)
        // In the whole rendering, after the VRF's other lines.
        let state = StateReport(routerID: "ha1", configFile: "/k.conf", uptime: 1, groups: [],
                                vrfs: [Self.vrf(drift: "settings", details: ["x: here 1, peer 2"], mine: Self.digestA, peer: Self.digestA)])
        #expect(ShowRender.state(state).hasSuffix("""
                    connections 1/1 established
                    ruleset 3f2a3f2a3f2a3f2a peer 3f2a3f2a3f2a3f2a
                    drift settings
                        x: here 1, peer 2
            """))
    }
}
