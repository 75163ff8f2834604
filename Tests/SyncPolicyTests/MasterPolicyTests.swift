import ConntrackModel
import SyncPolicy
import Testing

/// Rules 1, 2, 4 and 7 through the master's policy, with time driven by hand.
@Suite struct MasterPolicyTests {
    static func settings(tcpDelay: Int = 0, udpDelay: Int = 0, icmpDelay: Int = 0, tcpUndefined: Int = 10) -> PolicySettings {
        PolicySettings(
            tcpUndefined: tcpUndefined,
            tcp: ProtocolPolicy(synchronizationSeconds: tcpDelay, undefinedGracePeriodSeconds: nil),
            udp: ProtocolPolicy(synchronizationSeconds: udpDelay, undefinedGracePeriodSeconds: nil),
            icmp: ProtocolPolicy(synchronizationSeconds: icmpDelay, undefinedGracePeriodSeconds: nil))
    }

    // MARK: rule 1 and 2, no delay

    @Test func tcpWithoutDelaySyncsOnEstablishedWithItsCurrentTimeout() throws {
        var p = MasterPolicy(settings: Self.settings())
        #expect(p.changed(tcp(1, state: .synSent, timeout: 120), at: at(0)) == .skip(.notEstablished))
        #expect(p.changed(tcp(1, state: .synRecv, timeout: 60), at: at(0.1)) == .skip(.notEstablished))
        let r = try #require(p.changed(tcp(1, timeout: 431_999), at: at(0.2)).record)
        #expect(r.reason == .established)
        #expect(r.conntrack == tcp(1, timeout: 431_999))
        #expect(r.activity == nil)
        #expect(p.isSynced(tcp(1).key))
        #expect(p.classify(tcp(1)) == .synced)
        #expect(p.tracker.isEmpty)
    }

    @Test func leavingEstablishedCarriesTCPUndefined() throws {
        for undefined in [10, 20] {
            var p = MasterPolicy(settings: Self.settings(tcpUndefined: undefined))
            _ = try #require(p.changed(tcp(1), at: at(0)).record)
            let left = try #require(p.changed(tcp(1, state: .finWait, timeout: 120), at: at(50)).record)
            #expect(left.reason == .leftEstablished)
            #expect(left.conntrack?.timeout == UInt32(undefined))
            #expect(left.conntrack?.tcpState == .finWait)
            // Later closing states keep carrying it.
            let later = try #require(p.changed(tcp(1, state: .timeWait, timeout: 120), at: at(51)).record)
            #expect(later.conntrack?.timeout == UInt32(undefined))
            #expect(p.classify(tcp(1, state: .timeWait)) == .synced)
            let deleted = p.destroyed(tcp(1).key)
            let gone = try #require(deleted)
            #expect(gone.update == .delete(tcp(1).key))
            #expect(gone.reason == .destroyed)
            #expect(!p.isSynced(tcp(1).key))
        }
    }

    @Test func changesOfSyncedNonTCPCarryTheirCurrentTimeout() throws {
        var p = MasterPolicy(settings: Self.settings())
        _ = p.changed(udp(1, timeout: 30), at: at(0))
        let assured = try #require(p.changed(udp(1, timeout: 180, status: [.seenReply, .assured, .confirmed]), at: at(3)).record)
        #expect(assured.reason == .changed)
        #expect(assured.conntrack?.timeout == 180)
    }

    @Test func udpAndICMPWithoutDelaySyncOnTheFirstReply() throws {
        var p = MasterPolicy(settings: Self.settings())
        #expect(p.changed(udp(1, status: [.confirmed]), at: at(0)) == .skip(.notEstablished))
        #expect(p.changed(udp(1), at: at(0.5)).record?.reason == .established)
        #expect(p.changed(icmp(1, status: [.confirmed]), at: at(0)) == .skip(.notEstablished))
        #expect(p.changed(icmp(1), at: at(0.5)).record?.reason == .established)
        // Another protocol follows `other` (no delay by default).
        #expect(p.changed(udp(9, proto: .gre), at: at(0)).record != nil)
    }

    @Test func nonSyncedTCPLeavingEstablishedSendsNothing() {
        var p = MasterPolicy(settings: Self.settings(tcpDelay: 5))
        _ = p.changed(tcp(1), at: at(0))
        #expect(p.changed(tcp(1, state: .finWait), at: at(1)) == .skip(.notEstablished))
        #expect(p.destroyed(tcp(1).key) == nil)
    }

    @Test func algAndUntrackedAreNeverSynced() {
        var p = MasterPolicy(settings: Self.settings())
        let alg = tcp(1, status: [.seenReply, .assured, .confirmed, .expected])
        let algUDP = udp(2, status: [.seenReply, .expected])
        let template = udp(3, status: [.template])
        let untracked = udp(4, status: [.seenReply, ConntrackStatus(rawValue: 1 << 12)])
        #expect(p.changed(alg, at: at(0)) == .skip(.alg))
        #expect(p.changed(algUDP, at: at(0)) == .skip(.alg))
        #expect(p.changed(template, at: at(0)) == .skip(.untracked))
        #expect(p.changed(untracked, at: at(0)) == .skip(.untracked))
        #expect(p.syncedCount == 0)
        #expect(p.tracker.isEmpty)
        #expect(p.classify(alg) == .alg)
        #expect(p.classify(untracked) == .untracked)
        // Not even a forced synchronization takes them.
        let f = p.forcedSync([alg, algUDP, template, untracked], at: at(1))
        #expect(f.records.isEmpty)
        #expect(f.skipped == [.alg: 2, .untracked: 2])
        // Nor with a delay.
        var d = MasterPolicy(settings: Self.settings(tcpDelay: 3, udpDelay: 3))
        #expect(d.changed(alg, at: at(0)) == .skip(.alg))
        #expect(d.changed(untracked, at: at(0)) == .skip(.untracked))
        #expect(d.tracker.isEmpty)
    }

    // MARK: rule 4, TCP

    @Test func tcpDelayBoundaryIsAtLeast() throws {
        var p = MasterPolicy(settings: Self.settings(tcpDelay: 10))
        #expect(p.changed(tcp(1), at: at(100)) == .skip(.delayPending(until: at(110))))
        #expect(p.classify(tcp(1)) == .delayPending(until: at(110)))
        #expect(p.nextDeadline() == at(110))
        // A nanosecond early: nothing due, and an event then is still inside the delay.
        #expect(p.dueProbes(at: PolicyInstant(nanoseconds: at(110).nanoseconds - 1)).isEmpty)
        #expect(p.changed(tcp(1, timeout: 431_995), at: PolicyInstant(nanoseconds: at(110).nanoseconds - 1))
            == .skip(.delayPending(until: at(110))))
        // Exactly at the delay: due, and synced with the timeout the get read (no traffic needed).
        #expect(p.dueProbes(at: at(110)) == [tcp(1).key])
        let r = try #require(p.probed(tcp(1, timeout: 431_990), at: at(110)).record)
        #expect(r.reason == .established)
        #expect(r.conntrack?.timeout == 431_990)
        #expect(p.tracker.isEmpty)
        #expect(p.nextDeadline() == nil)
    }

    @Test func tcpEventExactlyAtTheDelaySyncs() {
        var p = MasterPolicy(settings: Self.settings(tcpDelay: 10))
        _ = p.changed(tcp(1), at: at(0))
        #expect(p.changed(tcp(1, timeout: 431_990), at: at(10)).record?.conntrack?.timeout == 431_990)
    }

    @Test func tcpLeavingEstablishedBeforeTheDelayIsNeverSynced() {
        var p = MasterPolicy(settings: Self.settings(tcpDelay: 10))
        _ = p.changed(tcp(1), at: at(0))
        #expect(p.changed(tcp(1, state: .finWait, timeout: 120), at: at(4)) == .skip(.notEstablished))
        #expect(p.tracker.isEmpty)
        #expect(p.dueProbes(at: at(10)).isEmpty)
        #expect(p.classify(tcp(1, state: .finWait)) == .notEstablished)
        #expect(p.changed(tcp(1, state: .timeWait), at: at(11)) == .skip(.notEstablished))
        #expect(p.syncedCount == 0)
    }

    @Test func tcpFoundClosedByTheProbeIsDropped() {
        // The state change event was lost; the get at the deadline tells.
        var p = MasterPolicy(settings: Self.settings(tcpDelay: 10))
        _ = p.changed(tcp(1), at: at(0))
        #expect(p.dueProbes(at: at(10)) == [tcp(1).key])
        #expect(p.probed(tcp(1, state: .closeWait), at: at(10)) == .skip(.notEstablished))
        #expect(p.tracker.isEmpty)
    }

    @Test func tcpDelayZeroIsImmediate() {
        var p = MasterPolicy(settings: Self.settings(tcpDelay: 0, udpDelay: 30))
        #expect(p.changed(tcp(1), at: at(0)).record != nil)
        #expect(p.tracker.isEmpty)
    }

    @Test func establishedAtInThePast() {
        // A conntrack whose establishment the caller knows happened earlier (an event instant).
        var p = MasterPolicy(settings: Self.settings(tcpDelay: 10))
        #expect(p.changed(tcp(1), at: at(12), establishedAt: at(1)).record != nil)
        #expect(p.changed(tcp(2), at: at(12), establishedAt: at(5)) == .skip(.delayPending(until: at(15))))
    }

    // MARK: rule 4, UDP and ICMP

    @Test func udpWithTrafficAfterTheDelayIsSynced() throws {
        var p = MasterPolicy(settings: Self.settings(udpDelay: 10))
        var timer = KernelTimer(fullSeconds: 30, lastPacketAt: 0)
        let key = udp(1).key
        #expect(p.changed(udp(1, timeout: timer.read(at: 0)), at: at(0)) == .skip(.delayPending(until: at(10))))
        // The deadline: the get is the baseline; nothing is sent yet.
        #expect(p.dueProbes(at: at(10)) == [key])
        #expect(p.probed(udp(1, timeout: timer.read(at: at(10).nanoseconds)), at: at(10)) == .skip(.awaitingTraffic(since: at(10))))
        #expect(p.classify(udp(1)) == .awaitingTraffic(since: at(10)))
        // A packet at 13 s; the first probe, 5 s after the baseline, sees it.
        timer.packet(at: at(13).nanoseconds)
        #expect(p.dueProbes(at: at(14.9)).isEmpty)
        #expect(p.dueProbes(at: at(15)) == [key])
        let r = try #require(p.probed(udp(1, timeout: timer.read(at: at(15).nanoseconds)), at: at(15)).record)
        #expect(r.reason == .established)
        #expect(r.conntrack?.timeout == 28)
        #expect(p.isSynced(key))
        #expect(p.tracker.isEmpty)
    }

    @Test func udpWithoutTrafficAfterTheDelayIsNeverSynced() {
        var p = MasterPolicy(settings: Self.settings(udpDelay: 10))
        let timer = KernelTimer(fullSeconds: 180, lastPacketAt: 0)
        let key = udp(1).key
        _ = p.changed(udp(1, timeout: timer.read(at: 0)), at: at(0))
        var probes: [Double] = []
        var t = 0.0
        while t < 180 {
            t += 0.5
            for k in p.dueProbes(at: at(t)) {
                #expect(k == key)
                probes.append(t)
                let d = p.probed(udp(1, timeout: timer.read(at: at(t).nanoseconds)), at: at(t))
                #expect(d == .skip(.awaitingTraffic(since: at(10))))
            }
        }
        // Baseline at 10, then probes 5, 10, 20, 40 s apart, then every 60 s (the maximum).
        #expect(probes == [10, 15, 25, 45, 85, 145])
        // At 180 s it expires in the kernel: the destroy event ends the wait.
        #expect(p.destroyed(key) == nil)
        #expect(p.tracker.isEmpty)
        #expect(p.syncedCount == 0)
    }

    @Test func udpTrafficOnlyDuringTheDelayDoesNotCount() {
        var p = MasterPolicy(settings: Self.settings(udpDelay: 10))
        var timer = KernelTimer(fullSeconds: 30, lastPacketAt: 0)
        _ = p.changed(udp(1, timeout: timer.read(at: 0)), at: at(0))
        timer.packet(at: at(8).nanoseconds)       // inside the delay
        _ = p.dueProbes(at: at(10))
        #expect(p.probed(udp(1, timeout: timer.read(at: at(10).nanoseconds)), at: at(10)) == .skip(.awaitingTraffic(since: at(10))))
        _ = p.dueProbes(at: at(15))
        #expect(p.probed(udp(1, timeout: timer.read(at: at(15).nanoseconds)), at: at(15)) == .skip(.awaitingTraffic(since: at(10))))
        #expect(p.syncedCount == 0)
    }

    @Test func udpBaselineExactlyAtTheDelay() {
        // A reading at exactly E + D is a valid baseline (>=), one a nanosecond before is not.
        var p = MasterPolicy(settings: Self.settings(udpDelay: 10))
        _ = p.changed(udp(1, timeout: 30), at: at(0))
        #expect(p.changed(udp(1, timeout: 30), at: PolicyInstant(nanoseconds: at(10).nanoseconds - 1))
            == .skip(.delayPending(until: at(10))))
        #expect(p.tracker.candidate(udp(1).key)?.baseline == nil)
        #expect(p.changed(udp(1, timeout: 20), at: at(10)) == .skip(.awaitingTraffic(since: at(10))))
        #expect(p.tracker.candidate(udp(1).key)?.baseline == TimeoutObservation(timeout: 20, at: at(10)))
    }

    @Test func udpStatusEventAfterTheDelayShowsTraffic() throws {
        // Becoming ASSURED is a packet: its event carries the reset timeout, no probe needed.
        var p = MasterPolicy(settings: Self.settings(udpDelay: 10))
        _ = p.changed(udp(1, timeout: 30), at: at(0))
        _ = p.dueProbes(at: at(10))
        _ = p.probed(udp(1, timeout: 20), at: at(10))
        let r = try #require(p.changed(udp(1, timeout: 180, status: [.seenReply, .assured, .confirmed]), at: at(12)).record)
        #expect(r.conntrack?.timeout == 180)
    }

    @Test func icmpUsesItsOwnDelay() {
        var p = MasterPolicy(settings: Self.settings(udpDelay: 0, icmpDelay: 4))
        #expect(p.changed(udp(1), at: at(0)).record != nil)
        #expect(p.changed(icmp(1), at: at(0)) == .skip(.delayPending(until: at(4))))
        var v6 = icmp(2)
        v6.proto = .icmpv6
        v6.family = .ipv6
        #expect(p.changed(v6, at: at(0)) == .skip(.delayPending(until: at(4))))
        // After the delay, ICMP too needs traffic.
        #expect(p.dueProbes(at: at(4)).count == 2)
        #expect(p.probed(icmp(1, timeout: 26), at: at(4)) == .skip(.awaitingTraffic(since: at(4))))
        #expect(p.dueProbes(at: at(9)).count == 2)
        #expect(p.probed(icmp(1, timeout: 30), at: at(9)).record != nil)
    }

    @Test func lostProbeAnswerIsAskedAgain() {
        var p = MasterPolicy(settings: Self.settings(udpDelay: 10))
        _ = p.changed(udp(1, timeout: 30), at: at(0))
        #expect(p.dueProbes(at: at(10)) == [udp(1).key])
        // No answer: the same key comes back one first interval later.
        #expect(p.dueProbes(at: at(14)).isEmpty)
        #expect(p.dueProbes(at: at(15)) == [udp(1).key])
        // The get found nothing: the entry is gone.
        #expect(p.destroyed(udp(1).key) == nil)
        #expect(p.dueProbes(at: at(100)).isEmpty)
    }

    @Test func probeAnswerForASyncedKeySendsNothing() {
        var p = MasterPolicy(settings: Self.settings(udpDelay: 10))
        _ = p.changed(udp(1, timeout: 30), at: at(0))
        _ = p.dueProbes(at: at(10))
        _ = p.forcedSync([udp(1, timeout: 20)], at: at(10.5))
        #expect(p.probed(udp(1, timeout: 20), at: at(11)) == .skip(.synced))
        #expect(p.dueProbes(at: at(100)).isEmpty)
    }

    @Test func probesAreBatchedAndLimited() {
        var p = MasterPolicy(settings: Self.settings(udpDelay: 10))
        for i in 0..<1000 { _ = p.changed(udp(UInt32(i), timeout: 30), at: at(Double(i) / 1000)) }
        #expect(p.dueProbes(at: at(9.999)).isEmpty)
        let first = p.dueProbes(at: at(10.5), limit: 300)
        #expect(first.count == 300)
        #expect(first == (0..<300).map { udp(UInt32($0)).key })
        #expect(p.dueProbes(at: at(10.5)).count == 201)
        let answers = (0..<501).map { udp(UInt32($0), timeout: 30) }
        #expect(p.probed(answers, at: at(10.5)).isEmpty)
    }

    @Test func trackerStaysCompactUnderRescheduling() {
        var t = DelayTracker(probing: ProbeSettings())
        for i in 0..<5000 {
            _ = t.track(udp(UInt32(i), timeout: 30), delay: .seconds(1), establishedAt: at(0), at: at(0))
        }
        // Many readings of every candidate: each leaves a stale heap entry behind.
        for round in 1...20 {
            for i in 0..<5000 { _ = t.observe(udp(UInt32(i), timeout: 30 - UInt32(round)), at: at(Double(round))) }
            #expect(t.queuedDeadlines <= 2 * t.count + 1024)
        }
        #expect(t.count == 5000)
        for i in 0..<2500 { t.remove(udp(UInt32(i)).key) }
        #expect(t.count == 2500)
        #expect(t.dueProbes(at: at(1000)).count == 2500)
    }

    // MARK: rule 7

    @Test func classificationOfEveryKind() {
        var p = MasterPolicy(settings: Self.settings(tcpDelay: 10, udpDelay: 10))
        _ = p.changed(tcp(1), at: at(0))
        _ = p.changed(udp(1, timeout: 30), at: at(0))
        _ = p.changed(udp(2, timeout: 30), at: at(0))
        _ = p.dueProbes(at: at(10))
        _ = p.probed(udp(2, timeout: 20), at: at(10))
        _ = p.forcedSync([udp(3)], at: at(10))
        let listed: [(Conntrack, SyncClassification)] = [
            (tcp(1), .delayPending(until: at(10))),
            (udp(1), .delayPending(until: at(10))),     // due, not answered yet
            (udp(2), .awaitingTraffic(since: at(10))),
            (udp(3), .synced),
            (tcp(2, state: .synSent), .notEstablished),
            (udp(4, status: [.confirmed]), .notEstablished),
            (tcp(3, status: [.seenReply, .assured, .expected]), .alg),
            (udp(5, status: [.template]), .untracked),
            (tcp(4), .notObserved),
        ]
        for (c, expected) in listed {
            #expect(p.classify(c) == expected, "\(c)")
        }
    }
}

extension DelayTracker {
    /// `due(at:)` under the name the policy uses.
    mutating func dueProbes(at now: PolicyInstant) -> [ConntrackKey] { due(at: now) }
}
