import ConntrackModel
import SyncPolicy
import Testing

/// Rules 3, 5 and 6 on the node that becomes master.
@Suite struct FailoverTests {
    static func settings(tcpGrace: Int? = nil, udpGrace: Int? = nil, spread: Int? = nil,
                         enforcement: GraceEnforcement = .kernelExpiry) -> PolicySettings {
        PolicySettings(
            tcp: ProtocolPolicy(synchronizationSeconds: 0, undefinedGracePeriodSeconds: tcpGrace, graceSpreadSeconds: spread),
            udp: ProtocolPolicy(synchronizationSeconds: 0, undefinedGracePeriodSeconds: udpGrace, graceSpreadSeconds: spread),
            graceEnforcement: enforcement)
    }

    static func reArm(_ e: HeldEntry, at s: PolicyInstant = at(1000), _ settings: PolicySettings, seed: UInt64 = 1) -> ReArm {
        var rng = SplitMix64(seed: seed)
        return FailoverPlan.reArm(e, switchAt: s, settings: settings, using: &rng)
    }

    // MARK: rule 3

    @Test func fullTimeoutFromTheSwitch() {
        let r = Self.reArm(HeldEntry(key: udp(1).key, timeout: 170), Self.settings())
        #expect(r.timeout == 170)
        #expect(r.remaining == .seconds(170))
        #expect(r.countedFrom == at(1000))
        #expect(r.dropAt == nil)
        #expect(r.dropCheck == nil)
        // tcp_undefined entries too.
        #expect(Self.reArm(HeldEntry(key: tcp(1).key, timeout: 10), Self.settings()).timeout == 10)
        // A synced timeout of 0 (read just before expiry) still gets the kernel's minimum.
        #expect(Self.reArm(HeldEntry(key: tcp(1).key, timeout: 0), Self.settings()).timeout == 1)
    }

    // MARK: rule 5

    @Test func graceUnsetOrNotShorterHasNoEffect() {
        // G > T, G == T: no effect. G == T - 1: applies.
        for (grace, applies) in [(nil, false), (200, false), (180, false), (179, true)] as [(Int?, Bool)] {
            let r = Self.reArm(HeldEntry(key: udp(1).key, timeout: 180), Self.settings(udpGrace: grace))
            #expect((r.dropAt != nil) == applies, "grace \(String(describing: grace))")
            if !applies { #expect(r.timeout == 180) }
        }
        // Per protocol: a TCP grace period does not touch UDP.
        let u = Self.reArm(HeldEntry(key: udp(1).key, timeout: 180), Self.settings(tcpGrace: 10))
        #expect(u.dropAt == nil)
    }

    @Test func graceDropWithinTheWindowKernelExpiry() throws {
        let s = at(1000)
        for seed in 1...200 as ClosedRange<UInt64> {
            let r = Self.reArm(HeldEntry(key: tcp(1).key, timeout: 432_000), at: s, Self.settings(tcpGrace: 10), seed: seed)
            let drop = try #require(r.dropAt)
            #expect(drop >= s + .seconds(10) && drop < s + .seconds(20))
            // The kernel expires it by itself: the timeout written is the drop delay, rounded up.
            #expect(r.timeout >= 10 && r.timeout <= 20)
            #expect(Duration.seconds(Int64(r.timeout)) >= drop - s)
            #expect(Duration.seconds(Int64(r.timeout)) - (drop - s) < .seconds(1))
            #expect(r.dropCheck == nil)
            #expect(r.remaining == .seconds(432_000))
        }
    }

    @Test func graceWindowIsCappedByTheRemainingTimeout() throws {
        for seed in 1...200 as ClosedRange<UInt64> {
            let r = Self.reArm(HeldEntry(key: udp(1).key, timeout: 15), Self.settings(udpGrace: 10), seed: seed)
            let drop = try #require(r.dropAt)
            #expect(drop >= at(1010) && drop < at(1015))
        }
        // A configured spread widens the window.
        for seed in 1...200 as ClosedRange<UInt64> {
            let r = Self.reArm(HeldEntry(key: udp(1).key, timeout: 180), Self.settings(udpGrace: 10, spread: 100), seed: seed)
            let drop = try #require(r.dropAt)
            #expect(drop >= at(1010) && drop < at(1110))
        }
    }

    @Test func graceZeroDropsUnusedOnesWithinASecond() throws {
        let r = Self.reArm(HeldEntry(key: udp(1).key, timeout: 180), Self.settings(udpGrace: 0))
        let drop = try #require(r.dropAt)
        #expect(drop >= at(1000) && drop < at(1001))
        #expect(r.timeout == 1)
    }

    /// The write of a re-arm may come after the switch: the timeout written then still ends at
    /// the planned instant.
    @Test func timeoutWrittenLaterEndsAtThePlannedInstant() throws {
        let plain = Self.reArm(HeldEntry(key: udp(1).key, timeout: 170), Self.settings())
        #expect(plain.expiresAt == at(1170))
        #expect(plain.timeout(writtenAt: at(1000)) == plain.timeout)
        #expect(plain.timeout(writtenAt: at(1002.5)) == 168)      // 167.5, rounded up
        #expect(plain.timeout(writtenAt: at(2000)) == 1)          // never below the kernel's minimum
        let stamped = Self.reArm(HeldEntry(key: udp(1).key, timeout: 170, activity: at(990)), Self.settings())
        #expect(stamped.expiresAt == at(1160))
        #expect(stamped.timeout(writtenAt: at(1001)) == 159)
        let grace = Self.reArm(HeldEntry(key: udp(1).key, timeout: 180), Self.settings(udpGrace: 10))
        let drop = try #require(grace.dropAt)
        #expect(grace.expiresAt == drop)
        #expect(Duration.seconds(Int64(grace.timeout(writtenAt: at(1003)))) >= drop - at(1003))
    }

    /// 10,000 conntracks at one failover: every drop inside [S+G, S+G+W), each tenth of the
    /// window holding 10% ± 2% of them.
    @Test(arguments: [GraceEnforcement.kernelExpiry, .checkAndDelete])
    func graceSpreadIsUniform(enforcement: GraceEnforcement) throws {
        let s = at(5000)
        let entries = (0..<10_000).map { HeldEntry(key: tcp(UInt32($0)).key, timeout: 432_000) }
        var rng = SplitMix64(seed: 0xC0FFEE)
        let plan = FailoverPlan(entries: entries, switchAt: s, settings: Self.settings(tcpGrace: 60, enforcement: enforcement), using: &rng)
        #expect(plan.reArms.count == 10_000)
        #expect(plan.graceDrops == 10_000)
        var deciles = [Int](repeating: 0, count: 10)
        for r in plan.reArms {
            let drop = try #require(r.dropAt)
            let offset = drop - s - .seconds(60)
            #expect(offset >= .zero && offset < .seconds(60))
            deciles[Int(offset / .seconds(6))] += 1
        }
        for (i, n) in deciles.enumerated() {
            #expect(n >= 800 && n <= 1200, "decile \(i): \(n)")
        }
        // The same seed gives the same plan.
        var again = SplitMix64(seed: 0xC0FFEE)
        let replay = FailoverPlan(entries: entries, switchAt: s, settings: Self.settings(tcpGrace: 60, enforcement: enforcement), using: &again)
        #expect(replay.reArms == plan.reArms)
    }

    @Test func checkAndDeleteSchedule() throws {
        let s = at(1000)
        let entries = (0..<100).map { HeldEntry(key: udp(UInt32($0)).key, timeout: 180) }
            + [HeldEntry(key: tcp(1).key, timeout: 432_000)]    // no TCP grace: no check
        var rng = SplitMix64(seed: 3)
        var plan = FailoverPlan(entries: entries, switchAt: s,
                                settings: Self.settings(udpGrace: 20, enforcement: .checkAndDelete), using: &rng)
        #expect(plan.checks.count == 100)
        #expect(plan.checks.map(\.at) == plan.checks.map(\.at).sorted())
        for r in plan.reArms where r.key.proto == .udp {
            #expect(r.timeout == 180)                            // the whole remaining timeout
            let c = try #require(r.dropCheck)
            #expect(c.at == r.dropAt)
            #expect(c.written == TimeoutObservation(timeout: 180, at: s))
        }
        #expect(plan.nextCheck == plan.checks.first?.at)
        #expect(plan.dueChecks(at: at(1019.999)).isEmpty)
        var seen = 0
        var t = 1020.0
        while plan.nextCheck != nil {
            let due = plan.dueChecks(at: at(t), limit: 7)
            #expect(due.count <= 7)
            for c in due { #expect(c.at <= at(t)) }
            seen += due.count
            t += 0.25
        }
        #expect(seen == 100)
        #expect(t <= 1041)
    }

    @Test func dropCheckDecision() {
        let c = DropCheck(key: udp(1).key, at: at(1015), written: TimeoutObservation(timeout: 180, at: at(1000)))
        // Untouched since the switch: 165 s left at 1015 (or 164 after truncation): delete.
        #expect(c.shouldDelete(observedTimeout: 165, at: at(1015)))
        #expect(c.shouldDelete(observedTimeout: 164, at: at(1015.5)))
        // A packet at 1010 reset it to 180: 175 left at 1015: keep.
        #expect(!c.shouldDelete(observedTimeout: 175, at: at(1015)))
    }

    // MARK: rule 6

    @Test func forcedSyncJustBeforeTheFailover() {
        let s = at(1000)
        let r = Self.reArm(HeldEntry(key: udp(1).key, timeout: 180, activity: at(995)), at: s, Self.settings())
        #expect(r.remaining == .seconds(175))
        #expect(r.countedFrom == at(995))
        #expect(r.timeout == 175)
        // Sub-second ages round the written timeout up.
        let f = Self.reArm(HeldEntry(key: udp(1).key, timeout: 180, activity: at(995.5)), at: s, Self.settings())
        #expect(f.remaining == .milliseconds(175_500))
        #expect(f.timeout == 176)
        // Less than a second left still writes the kernel's minimum.
        let tiny = Self.reArm(HeldEntry(key: udp(1).key, timeout: 180, activity: at(820.2)), at: s, Self.settings())
        #expect(tiny.remaining == .milliseconds(200))
        #expect(tiny.timeout == 1)
    }

    @Test func forcedSyncLongBeforeTheFailoverFallsBackToTheSwitch() {
        // The stamp is older than the synced timeout: the master kept the entry past A + T, so
        // it was used after the stamp; rule 3 applies (whole timeout from the switch).
        let s = at(1000)
        for activity in [at(700), at(820)] {     // 300 s and exactly 180 s before
            let r = Self.reArm(HeldEntry(key: udp(1).key, timeout: 180, activity: activity), at: s, Self.settings())
            #expect(r.countedFrom == s)
            #expect(r.remaining == .seconds(180))
            #expect(r.timeout == 180)
        }
        // A stamp "after" the switch (clock trouble) counts as age zero.
        let r = Self.reArm(HeldEntry(key: udp(1).key, timeout: 180, activity: at(1001)), at: s, Self.settings())
        #expect(r.remaining == .seconds(180))
        #expect(r.countedFrom == at(1001))
    }

    @Test func forcedSyncAndGraceTogether() throws {
        // Remaining from the stamp: 100 s; grace 50 s, spread 50 s: window [50, 100).
        let s = at(1000)
        for seed in 1...100 as ClosedRange<UInt64> {
            let r = Self.reArm(HeldEntry(key: udp(1).key, timeout: 180, activity: at(920)), at: s,
                               Self.settings(udpGrace: 50), seed: seed)
            let drop = try #require(r.dropAt)
            #expect(drop >= at(1050) && drop < at(1100))
        }
        // Grace at or beyond what the stamp leaves: no effect.
        let none = Self.reArm(HeldEntry(key: udp(1).key, timeout: 180, activity: at(920)), at: s, Self.settings(udpGrace: 100))
        #expect(none.dropAt == nil)
        #expect(none.timeout == 100)
    }

    /// End to end: forced sync on the master, the age over the wire, the plan on the backup.
    @Test func forcedSyncThroughTheWire() throws {
        var master = MasterPolicy(settings: Self.settings())
        let records = master.forcedSync([udp(1, timeout: 120), tcp(1, timeout: 431_000)], at: at(10_000)).records
        // Sent 0.5 s later; the backup's clock reads 77 s on arrival; failover 30 s later.
        let held = try records.map {
            HeldEntry(conntrack: try #require($0.conntrack), activityAge: $0.activityAge(at: at(10_000.5)), receivedAt: at(77))
        }
        var rng = SplitMix64(seed: 9)
        let plan = FailoverPlan(entries: held, switchAt: at(107), settings: Self.settings(), using: &rng)
        #expect(plan.reArms.map(\.remaining) == [.milliseconds(89_500), .milliseconds(430_969_500)])
        #expect(plan.reArms.map(\.timeout) == [90, 430_970])
    }
}
