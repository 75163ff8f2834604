import ConntrackModel
import SyncPolicy
import Testing

/// Rule 6 on the master: what `keepstate sync --vrf NAME` produces.
@Suite struct ForcedSyncTests {
    static let delayed = PolicySettings(
        tcpUndefined: 10,
        tcp: ProtocolPolicy(synchronizationSeconds: 30, undefinedGracePeriodSeconds: nil),
        udp: ProtocolPolicy(synchronizationSeconds: 30, undefinedGracePeriodSeconds: nil))

    @Test func syncsPendingAndRefreshesSynced() throws {
        var p = MasterPolicy(settings: Self.delayed)
        _ = p.changed(tcp(1), at: at(0))                          // delay pending
        _ = p.changed(udp(1, timeout: 30), at: at(0))             // delay pending
        _ = p.changed(udp(2, timeout: 30), at: at(0))
        _ = p.dueProbes(at: at(30))
        _ = p.probed(udp(2, timeout: 10), at: at(30))             // awaiting traffic
        p.adoptSynced([tcp(2).key])                                // synced before
        _ = p.changed(tcp(2, state: .closeWait, timeout: 60), at: at(31))
        let table = [
            tcp(1, timeout: 431_990), udp(1, timeout: 5), udp(2, timeout: 8), tcp(2, state: .closeWait, timeout: 50),
            tcp(3, state: .synSent, timeout: 100), udp(3, status: [.confirmed]),
            tcp(4, status: [.seenReply, .assured, .expected]), udp(4, status: [.template]),
        ]
        let f = p.forcedSync(table, at: at(32))
        #expect(f.at == at(32))
        #expect(f.newlySynced == 3)
        #expect(f.records.count == 4)
        #expect(f.skipped == [.notEstablished: 2, .alg: 1, .untracked: 1])
        #expect(f.records.allSatisfy { $0.activity == at(32) && $0.reason == .forced })
        let byKey = Dictionary(uniqueKeysWithValues: f.records.map { ($0.key, $0) })
        #expect(byKey[tcp(1).key]?.conntrack?.timeout == 431_990)
        #expect(byKey[udp(1).key]?.conntrack?.timeout == 5)
        #expect(byKey[tcp(2).key]?.conntrack?.timeout == 10)      // rule 2 holds in a forced sync
        #expect(p.tracker.isEmpty)
        #expect(p.dueProbes(at: at(1000)).isEmpty)
        for c in table.prefix(4) { #expect(p.classify(c) == .synced) }
        // In the order of the dump.
        #expect(f.records.map(\.key) == table.prefix(4).map(\.key))
    }

    @Test func activityTravelsAsAnAge() throws {
        var p = MasterPolicy(settings: Self.delayed)
        let r = try #require(p.forcedSync([udp(1, timeout: 120)], at: at(1000)).records.first)
        // Encoded 0.3 s after the dump read it.
        let age = try #require(r.activityAge(at: at(1000.3)))
        #expect(age == .milliseconds(300))
        #expect(r.activityAge(at: at(999)) == .zero)
        #expect(SyncRecord(update: .delete(udp(1).key), reason: .destroyed).activityAge(at: at(5)) == nil)
        // The backup, on its own clock, received it at 50 s.
        let held = HeldEntry(conntrack: try #require(r.conntrack), activityAge: age, receivedAt: at(50))
        #expect(held.activity == at(49.7))
        #expect(held.timeout == 120)
        // A normal update afterwards carries no stamp: the entry falls back to rule 3.
        #expect(HeldEntry(conntrack: udp(1, timeout: 180), activityAge: nil, receivedAt: at(60)).activity == nil)
    }
}
