@testable import Daemon
import Foundation
import Glibc
import Testing
import TestSupport

/// The same CG-NAT ruleset on both routers, with a named counter whose value differs between
/// them (`packets`): counts are traffic, not configuration.
private func routerRuleset(packets: Int) -> String { """
    table inet filter {
      counter hits { packets \(packets) bytes \(packets * 64) }
      set allowed { type ipv4_addr; elements = { 10.0.0.1, 10.0.0.2 } }
      set seen { type ipv4_addr; size 65535; flags dynamic,timeout; timeout 1m; }
      chain forward { type filter hook forward priority 0; policy drop;
        ct state established,related counter accept
        ip saddr @allowed counter accept
        ip saddr 100.64.0.0/10 update @seen { ip saddr } counter accept
      }
    }
    table ip nat {
      chain postrouting { type nat hook postrouting priority 100;
        meta l4proto { tcp, udp } snat ip to 203.0.113.5:20000-59999
      }
    }

    """
}

@Suite("Configuration drift between two daemons, each VRF in a network namespace", .serialized,
       .enabled(if: isRoot, "needs root: network namespaces, nftables and the kernel conntrack table"))
struct DriftTests {
    static func load(_ ns: TestNamespace, _ text: String) throws {
        let file = "/tmp/ks-drift-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).nft"
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let r = try ns.exec(["nft", "-f", file])
        guard r.status == 0 else { throw TestFailure("nft -f: \(r.output)") }
    }

    static func dump(_ pair: DaemonPair) async -> String {
        let a = try? await pair.vrf("ha1")
        let b = try? await pair.vrf("ha2")
        return "ha1: \(String(describing: a))\nha2: \(String(describing: b))"
    }

    @Test("same ruleset: no drift; an extra rule on one node: both name its chain within seconds; removed: cleared")
    func rulesetDrift() async throws {
        let ns1 = try TestNamespace("drift1")
        let ns2 = try TestNamespace("drift2")
        try Self.load(ns1, routerRuleset(packets: 0))
        try Self.load(ns2, routerRuleset(packets: 5))
        let pair = try DaemonPair()
        try await pair.start("ha1", state: "MASTER", netns: ns1.name, syncExtra: "ruleset_check_interval 1")
        try await pair.start("ha2", state: "BACKUP", netns: ns2.name, syncExtra: "ruleset_check_interval 1")

        func both(_ check: (VRFReport) -> Bool) async -> Bool {
            guard let a = try? await pair.vrf("ha1"), let b = try? await pair.vrf("ha2") else { return false }
            return check(a) && check(b)
        }
        let agreed = await eventually(30) {
            await both { v in
                v.drift == "none" && v.rulesetDigest != nil && v.rulesetDigest == v.peerRulesetDigest
                    && v.rulesetDigest?.hasPrefix("unknown") == false && v.driftDetails == []
            }
        }
        if !agreed { let d = await Self.dump(pair); Issue.record("no agreement: \(d)") }
        let digest = try #require(try await pair.vrf("ha1")?.rulesetDigest)

        // Traffic-like changes are no drift: the named counter's value differed from the start
        // (the agreement above), and now an element goes into ha2's dynamic set; the drift named
        // below would list the set too if it counted.
        try ns2.exec(["nft", "add element inet filter seen { 100.64.1.1 }"])

        // ha2 gets an extra NAT rule.
        try ns2.exec(["nft", "add rule ip nat postrouting ip protocol icmp snat ip to 203.0.113.5"])
        let added = ContinuousClock.now
        let drifted = await eventually(30) {
            await both { v in v.drift == "ruleset" && v.driftDetails == ["table ip nat chain postrouting differs"] }
        }
        let took = ContinuousClock.now - added
        if !drifted { let d = await Self.dump(pair); Issue.record("no drift named: \(d)") }
        print("drift: both nodes named the chain \(took) after the extra rule (ruleset_check_interval 1)")
        #expect(try await pair.vrf("ha1")?.rulesetDigest == digest, "ha1's own ruleset did not change")
        #expect(try await pair.vrf("ha1")?.peerRulesetDigest != digest)

        // Removed again (the chain rebuilt as it was): cleared on both.
        try ns2.exec(["nft", "flush chain ip nat postrouting"])
        try ns2.exec(["nft", "add rule ip nat postrouting meta l4proto { tcp, udp } snat ip to 203.0.113.5:20000-59999"])
        let cleared = await eventually(30) { await both { v in v.drift == "none" && v.peerRulesetDigest == digest } }
        if !cleared { let d = await Self.dump(pair); Issue.record("not cleared: \(d)") }
        await pair.stop()
    }

    @Test("differing sync settings show as a settings drift on both nodes, named")
    func settingsDrift() async throws {
        let ns1 = try TestNamespace("sdrift1")
        let ns2 = try TestNamespace("sdrift2")
        let pair = try DaemonPair()
        try await pair.start("ha1", state: "MASTER", netns: ns1.name, syncExtra: "ruleset_check_interval 1")
        try await pair.start("ha2", state: "BACKUP", extra: "ha_delays { udp { synchronization 3 } }", netns: ns2.name,
                             syncExtra: "ruleset_check_interval 1")
        let named = await eventually(30) {
            guard let a = try? await pair.vrf("ha1"), let b = try? await pair.vrf("ha2") else { return false }
            return a.drift == "settings" && a.driftDetails == ["ha_delays.udp.synchronization: here 0, peer 3"]
                && b.drift == "settings" && b.driftDetails == ["ha_delays.udp.synchronization: here 3, peer 0"]
        }
        if !named { let d = await Self.dump(pair); Issue.record("not named: \(d)") }
        await pair.stop()
    }
}
