import ConntrackModel
import SyncPolicy
import Testing

/// Rule 1 (what qualifies), rule 2 (what a record carries) and rule 7 (the reasons).
@Suite struct RulesTests {
    @Test func exclusions() {
        #expect(SyncRules.exclusion(of: tcp(1)) == nil)
        #expect(SyncRules.exclusion(of: tcp(1, status: [.seenReply, .assured, .confirmed, .expected])) == .alg)
        #expect(SyncRules.exclusion(of: udp(1, status: [.seenReply, .expected])) == .alg)
        #expect(SyncRules.exclusion(of: udp(1, status: [.seenReply, .template])) == .untracked)
        // IPS_UNTRACKED, bit 12, which ConntrackModel does not name.
        #expect(SyncRules.exclusion(of: udp(1, status: [.seenReply, ConntrackStatus(rawValue: 1 << 12)])) == .untracked)
        // A helper attached to the master connection itself does not exclude it: only what the
        // helper's expectations create does.
        #expect(SyncRules.exclusion(of: tcp(1, status: [.seenReply, .assured, .confirmed, .helper])) == nil)
    }

    @Test func establishment() {
        #expect(SyncRules.isEligible(tcp(1)))
        for s in TCPState.allCases where s != .established {
            #expect(!SyncRules.isEligible(tcp(1, state: s)), "\(s)")
        }
        #expect(!SyncRules.isEligible(udp(1, status: [.confirmed])))
        #expect(SyncRules.isEligible(udp(1, status: [.seenReply, .confirmed])))
        #expect(SyncRules.isEligible(udp(1, status: [.seenReply, .assured, .confirmed])))
        #expect(!SyncRules.isEligible(icmp(1, status: [.confirmed])))
        #expect(SyncRules.isEligible(icmp(1)))
        #expect(!SyncRules.isEligible(tcp(1, status: [.seenReply, .assured, .expected])))
    }

    @Test func carriedTimeout() {
        let s = PolicySettings(tcpUndefined: 20)
        #expect(SyncRules.carriedTimeout(of: tcp(1, timeout: 431_000), settings: s) == 431_000)
        for st in TCPState.allCases where st != .established {
            #expect(SyncRules.carriedTimeout(of: tcp(1, state: st, timeout: 120), settings: s) == 20)
        }
        #expect(SyncRules.carriedTimeout(of: udp(1, timeout: 170), settings: s) == 170)
        #expect(PolicySettings().tcpUndefined == 10)
    }

    @Test func protocolClasses() {
        #expect(ProtocolClass(.tcp) == .tcp)
        #expect(ProtocolClass(.udp) == .udp)
        #expect(ProtocolClass(.udplite) == .udp)
        #expect(ProtocolClass(.icmp) == .icmp)
        #expect(ProtocolClass(.icmpv6) == .icmp)
        #expect(ProtocolClass(.gre) == .other)
        #expect(ProtocolClass(.sctp) == .other)
        var s = PolicySettings()
        s[.icmp] = ProtocolPolicy(synchronizationSeconds: 7, undefinedGracePeriodSeconds: 3)
        #expect(s.policy(for: .icmpv6).synchronizationDelay == .seconds(7))
        #expect(s.policy(for: .icmpv6).undefinedGracePeriod == .seconds(3))
        #expect(s.policy(for: .gre) == ProtocolPolicy())
    }

    @Test func settingsFromConfigIntegers() {
        let p = ProtocolPolicy(synchronizationSeconds: 1, undefinedGracePeriodSeconds: 10)
        #expect(p.synchronizationDelay == .seconds(1))
        #expect(p.undefinedGracePeriod == .seconds(10))
        #expect(p.effectiveGraceSpread == .seconds(10))
        #expect(ProtocolPolicy(synchronizationSeconds: 0, undefinedGracePeriodSeconds: nil).undefinedGracePeriod == nil)
        #expect(ProtocolPolicy(synchronizationSeconds: 0, undefinedGracePeriodSeconds: 0).effectiveGraceSpread == .seconds(1))
        #expect(ProtocolPolicy(synchronizationSeconds: 0, undefinedGracePeriodSeconds: 5, graceSpreadSeconds: 60)
            .effectiveGraceSpread == .seconds(60))
        // Nonsense is clamped, not trapped on.
        #expect(PolicySettings(tcpUndefined: 0).tcpUndefined == 1)
        #expect(ProtocolPolicy(synchronizationDelay: .seconds(-3)).synchronizationDelay == .zero)
    }

    @Test func classificationLabels() {
        let all: [SyncClassification] = [.synced, .untracked, .alg, .notEstablished, .delayPending(until: at(3)),
                                         .awaitingTraffic(since: at(3)), .notObserved]
        #expect(all.map(\.label) == ["synced", "untracked", "alg", "not-established", "delay-pending",
                                     "awaiting-traffic", "not-observed"])
        #expect(all.filter(\.isSynced) == [.synced])
        #expect(SyncClassification.delayPending(until: at(3)).description == "delay-pending until 3000000000ns")
    }
}
