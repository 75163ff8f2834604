import ConntrackModel
import SyncPolicy
import Testing

/// Rule 2 against a resync, and the order of records that settles races.
@Suite struct ResyncTests {
    /// The resync's record for K is produced first; K then leaves ESTABLISHED. The daemon sends
    /// records of one key in the order the policy produced them, so the backup ends with the
    /// update (tcp_undefined, FIN_WAIT); a resync taken after the change carries it as well.
    @Test func leavingEstablishedDuringAResyncWins() throws {
        var p = MasterPolicy(settings: PolicySettings(tcpUndefined: 10))
        var backup = BackupModel()
        for i in 1...5 { backup.apply(try #require(p.changed(tcp(UInt32(i)), at: at(0)).record)) }

        let snapshot = (1...5).map { tcp(UInt32($0), timeout: 431_000) }
        let resync = p.resyncRecords(snapshot)
        #expect(resync.count == 5)
        #expect(resync.allSatisfy { $0.reason == .resync })
        let update = try #require(p.changed(tcp(3, state: .finWait, timeout: 120), at: at(1)).record)
        #expect(update.conntrack?.timeout == 10)
        for r in resync { backup.apply(r) }
        backup.apply(update)
        let held = try #require(backup.held[tcp(3).key]?.conntrack)
        #expect(held.tcpState == .finWait)
        #expect(held.timeout == 10)
        // The others took the resync's values.
        #expect(backup.held[tcp(1).key]?.conntrack?.timeout == 431_000)
        // The next resync, from a snapshot taken after the change, agrees.
        let again = p.resyncRecords([tcp(3, state: .finWait, timeout: 118)])
        #expect(again.first?.conntrack?.timeout == 10)
    }

    /// When the conntrack left ESTABLISHED before the snapshot, the resync record itself
    /// carries tcp_undefined: the rule holds on every path, not only on live updates.
    @Test func resyncAppliesTCPUndefined() throws {
        var p = MasterPolicy(settings: PolicySettings(tcpUndefined: 25))
        _ = p.changed(tcp(1), at: at(0))
        _ = p.changed(tcp(1, state: .lastAck, timeout: 30), at: at(1))
        let r = try #require(p.resyncRecords([tcp(1, state: .lastAck, timeout: 28)]).first)
        #expect(r.conntrack?.timeout == 25)
        #expect(r.conntrack?.tcpState == .lastAck)
    }

    @Test func resyncCarriesOnlySyncedConntracks() {
        var p = MasterPolicy(settings: PolicySettings(tcp: ProtocolPolicy(synchronizationSeconds: 10, undefinedGracePeriodSeconds: nil)))
        _ = p.changed(tcp(1), at: at(0))           // pending
        _ = p.forcedSync([tcp(2)], at: at(0))      // synced
        let records = p.resyncRecords([tcp(1), tcp(2), tcp(3), tcp(4, status: [.seenReply, .expected])])
        #expect(records.map(\.key) == [tcp(2).key])
    }

    @Test func destroyedThenRecreatedStartsOver() {
        var p = MasterPolicy(settings: PolicySettings(tcp: ProtocolPolicy(synchronizationSeconds: 10, undefinedGracePeriodSeconds: nil)))
        _ = p.changed(tcp(1), at: at(0))
        _ = p.dueProbes(at: at(10))
        #expect(p.probed(tcp(1), at: at(10)).record != nil)
        #expect(p.destroyed(tcp(1).key) != nil)
        // Same tuple, new connection: a new delay.
        #expect(p.changed(tcp(1), at: at(20)) == .skip(.delayPending(until: at(30))))
    }

    @Test func adoptAndReset() {
        var p = MasterPolicy(settings: PolicySettings(udp: ProtocolPolicy(synchronizationSeconds: 10, undefinedGracePeriodSeconds: nil)))
        _ = p.changed(udp(1), at: at(0))
        p.adoptSynced([udp(1).key, udp(2).key])
        #expect(p.tracker.isEmpty)
        #expect(p.classify(udp(2)) == .synced)
        #expect(p.changed(udp(2, timeout: 99), at: at(1)).record?.reason == .changed)
        p.reset()
        #expect(p.syncedCount == 0)
        #expect(p.classify(udp(2)) == .notObserved)
    }
}
