import Testing
import VRRP

let local = ip("192.0.2.2")
let vips = [ip("192.0.2.10")]

func v3Config(priority: UInt8 = 100, preempt: Bool = true, preemptDelay: Duration = .zero) -> VRRPInstanceConfig {
    VRRPInstanceConfig(vrid: 10, priority: priority, advertIntervalCentiseconds: 100, version: .v3,
                       preempt: preempt, preemptDelay: preemptDelay, primaryAddress: local, virtualAddresses: vips)
}

func advert(priority: UInt8, intervalCs: UInt16 = 100) -> VRRPPacket {
    .v3(vrid: 10, priority: priority, maxAdvertIntervalCentiseconds: intervalCs, family: .ipv4, addresses: vips)
}

func at(_ ms: Int64) -> VRRPInstant { VRRPInstant.zero + .milliseconds(ms) }

func masterActions(_ prio: UInt8, _ reason: VRRPTransitionReason) -> [VRRPAction] {
    [.becomeMaster(reason), .addVirtualAddresses, .sendAdvert(priority: prio), .sendGratuitousARP]
}

/// A v3 priority-100 instance that went master at 3.6 s.
func masterInstance(priority: UInt8 = 100) -> VRRPInstanceState {
    var m = VRRPInstanceState(config: v3Config(priority: priority))
    _ = m.startup(now: .zero)
    _ = m.timerFired(now: at(3600))
    return m
}

@Suite struct TimerValueTests {
    @Test func v3SkewAndMasterDownUseIntegerCentiseconds() {
        let s = VRRPInstanceState(config: v3Config())
        #expect(s.skewTime == .milliseconds(600))          // ((256-100)*100)/256 = 60 cs
        #expect(s.masterDownInterval == .milliseconds(3600)) // 3*100 + 60 cs
    }

    @Test func v3SkewTruncates() {
        let s = VRRPInstanceState(config: v3Config(priority: 200))
        #expect(s.skewTime == .milliseconds(210))           // (56*100)/256 = 21.875 -> 21 cs
        #expect(s.masterDownInterval == .milliseconds(3210))
    }

    @Test func v2SkewIsExactFractionOfASecond() {
        let c = VRRPInstanceConfig(vrid: 1, priority: 100, advertIntervalCentiseconds: 100, version: .v2, primaryAddress: local)
        let s = VRRPInstanceState(config: c)
        #expect(s.skewTime == .nanoseconds(609_375_000))            // 156/256 s
        #expect(s.masterDownInterval == .nanoseconds(3_609_375_000)) // 3 s + skew
    }

    @Test func instantArithmetic() {
        var now = VRRPInstant.zero
        now += .milliseconds(350)
        #expect(now.nanoseconds == 350_000_000)
        #expect(now - .zero == .milliseconds(350))
        #expect(VRRPInstant(sinceOrigin: .seconds(2)).nanoseconds == 2_000_000_000)
    }
}

@Suite struct StateMachineTests {
    @Test func ownerStartupGoesMasterImmediately() {
        var s = VRRPInstanceState(config: v3Config(priority: 255))
        #expect(s.startup(now: at(500)) == masterActions(255, .addressOwner))
        #expect(s.state == .master)
        #expect(s.nextDeadline == at(1500))
        #expect(s.acceptsVirtualAddressTraffic)
    }

    @Test func nonOwnerStartupGoesBackupWithMasterDownTimer() {
        var s = VRRPInstanceState(config: v3Config())
        #expect(s.state == .initialize)
        #expect(s.nextDeadline == nil)
        #expect(s.startup(now: .zero) == [.becomeBackup(.startup)])
        #expect(s.state == .backup)
        #expect(s.nextDeadline == at(3600))
        #expect(s.startup(now: at(1)) == [])  // second startup is a no-op
    }

    @Test func masterDownTimerExpiryMakesMasterAndEarlyCallsDoNothing() {
        var s = VRRPInstanceState(config: v3Config())
        _ = s.startup(now: .zero)
        #expect(s.timerFired(now: at(3599)) == [])
        #expect(s.state == .backup)
        #expect(s.timerFired(now: at(3600)) == masterActions(100, .masterDownTimerExpired))
        #expect(s.state == .master)
        #expect(s.nextDeadline == at(4600))
        #expect(!s.acceptsVirtualAddressTraffic)  // non-owner, Accept_Mode false
    }

    @Test func masterSendsAdvertEachIntervalIdempotently() {
        var m = masterInstance()
        #expect(m.timerFired(now: at(4599)) == [])
        #expect(m.timerFired(now: at(4600)) == [.sendAdvert(priority: 100)])
        #expect(m.timerFired(now: at(4600)) == [])
        #expect(m.nextDeadline == at(5600))
    }

    @Test func backupPriorityZeroSetsTimerToSkew() {
        var s = VRRPInstanceState(config: v3Config())
        _ = s.startup(now: .zero)
        #expect(s.receivedAdvert(advert(priority: 0), from: ip("192.0.2.1"), now: at(1000)) == [])
        #expect(s.nextDeadline == at(1600))
        #expect(s.timerFired(now: at(1600)) == masterActions(100, .masterDownTimerExpired))
    }

    @Test func backupHigherOrEqualPriorityResetsTimerAndLearnsInterval() {
        var s = VRRPInstanceState(config: v3Config())
        _ = s.startup(now: .zero)
        #expect(s.receivedAdvert(advert(priority: 150, intervalCs: 200), from: ip("192.0.2.1"), now: at(1000)) == [])
        #expect(s.masterAdverIntervalCentiseconds == 200)
        #expect(s.skewTime == .milliseconds(1210))            // (156*200)/256 = 121 cs
        #expect(s.nextDeadline == at(1000 + 7210))            // 3*200 + 121 cs
        #expect(s.receivedAdvert(advert(priority: 100), from: ip("192.0.2.1"), now: at(2000)) == [])
        #expect(s.masterAdverIntervalCentiseconds == 100)
        #expect(s.nextDeadline == at(5600))
    }

    @Test func backupIgnoresLowerPriorityWhenPreempting() {
        var s = VRRPInstanceState(config: v3Config())
        _ = s.startup(now: .zero)
        #expect(s.receivedAdvert(advert(priority: 50, intervalCs: 300), from: ip("192.0.2.1"), now: at(1000)) == [])
        #expect(s.nextDeadline == at(3600))
        #expect(s.masterAdverIntervalCentiseconds == 100)
        #expect(s.timerFired(now: at(3600)) == masterActions(100, .masterDownTimerExpired))
    }

    @Test func nopreemptBackupKeepsLowerPriorityMaster() {
        var c = v3Config()
        c.nopreempt = true
        #expect(c.preempt == false)
        var s = VRRPInstanceState(config: c)
        _ = s.startup(now: .zero)
        #expect(s.receivedAdvert(advert(priority: 50), from: ip("192.0.2.1"), now: at(3000)) == [])
        #expect(s.nextDeadline == at(6600))
        #expect(s.timerFired(now: at(3600)) == [])
        #expect(s.state == .backup)
    }

    @Test func preemptDelayHoldsOffPreemptionAfterStartupOnly() {
        var s = VRRPInstanceState(config: v3Config(preemptDelay: .seconds(10)))
        _ = s.startup(now: .zero)
        #expect(s.preemptDelayUntil == at(10_000))
        // Within the delay: the lower-priority master is respected.
        #expect(s.receivedAdvert(advert(priority: 50), from: ip("192.0.2.1"), now: at(9000)) == [])
        #expect(s.nextDeadline == at(12_600))
        // After the delay: lower priority is ignored, so the timer runs out.
        #expect(s.receivedAdvert(advert(priority: 50), from: ip("192.0.2.1"), now: at(10_000)) == [])
        #expect(s.nextDeadline == at(12_600))
        #expect(s.timerFired(now: at(12_600)) == masterActions(100, .masterDownTimerExpired))
    }

    @Test func preemptDelayDoesNotBlockTakeoverWhenNoMasterExists() {
        var s = VRRPInstanceState(config: v3Config(preemptDelay: .seconds(10)))
        _ = s.startup(now: .zero)
        #expect(s.timerFired(now: at(3600)) == masterActions(100, .masterDownTimerExpired))
    }

    @Test func masterPriorityZeroSendsAdvertAndResetsAdverTimer() {
        var m = masterInstance()
        #expect(m.receivedAdvert(advert(priority: 0), from: ip("192.0.2.1"), now: at(4000)) == [.sendAdvert(priority: 100)])
        #expect(m.nextDeadline == at(5000))
    }

    @Test func masterYieldsToHigherPriority() {
        var m = masterInstance()
        let actions = m.receivedAdvert(advert(priority: 150, intervalCs: 50), from: ip("192.0.2.1"), now: at(4000))
        #expect(actions == [.becomeBackup(.higherPriorityAdvert(priority: 150, source: ip("192.0.2.1"))), .removeVirtualAddresses])
        #expect(m.state == .backup)
        #expect(m.masterAdverIntervalCentiseconds == 50)
        #expect(m.nextDeadline == at(4000 + 1800))  // 3*50 + (156*50)/256=30 cs
        #expect(m.adverTimer == nil)
    }

    @Test func masterYieldsToEqualPriorityWithHigherAddress() {
        var m = masterInstance()
        #expect(m.receivedAdvert(advert(priority: 100), from: ip("192.0.2.3"), now: at(4000))
                == [.becomeBackup(.equalPriorityHigherAddress(priority: 100, source: ip("192.0.2.3"))), .removeVirtualAddresses])
        #expect(m.nextDeadline == at(7600))
    }

    @Test func masterAssertsItselfAgainstEqualPriorityLowerAddress() {
        var m = masterInstance()
        #expect(m.receivedAdvert(advert(priority: 100), from: ip("192.0.2.1"), now: at(4000)) == [.sendAdvert(priority: 100)])
        #expect(m.state == .master)
        #expect(m.nextDeadline == at(4600))
    }

    @Test func masterSendsAdvertImmediatelyOnLowerPriority() {
        // RFC 9568 §6.4.3: discard, send an ADVERTISEMENT immediately; Adver_Timer is not reset.
        var m = masterInstance()
        #expect(m.receivedAdvert(advert(priority: 50), from: ip("192.0.2.200"), now: at(4000)) == [.sendAdvert(priority: 100)])
        #expect(m.state == .master)
        #expect(m.nextDeadline == at(4600))
    }

    @Test func ownerIgnoresNopreemptAndTakesOverFromLowerMaster() {
        var c = v3Config(priority: 255)
        c.nopreempt = true
        var s = VRRPInstanceState(config: c)
        #expect(s.startup(now: .zero) == masterActions(255, .addressOwner))
    }

    @Test func shutdownFromMasterSendsPriorityZero() {
        var m = masterInstance()
        #expect(m.shutdown(now: at(4000)) == [.sendAdvert(priority: 0), .removeVirtualAddresses, .enterInitialize(.shutdown)])
        #expect(m.state == .initialize)
        #expect(m.nextDeadline == nil)
        #expect(m.shutdown(now: at(4001)) == [])
    }

    @Test func shutdownFromBackupCancelsTimer() {
        var s = VRRPInstanceState(config: v3Config())
        _ = s.startup(now: .zero)
        #expect(s.shutdown(now: at(1000)) == [.enterInitialize(.shutdown)])
        #expect(s.nextDeadline == nil)
        #expect(s.timerFired(now: at(10_000)) == [])
        #expect(s.receivedAdvert(advert(priority: 0), from: ip("192.0.2.1"), now: at(10_000)) == [])
    }

    @Test func restartAfterShutdownStartsOver() {
        var m = masterInstance()
        _ = m.shutdown(now: at(4000))
        #expect(m.startup(now: at(5000)) == [.becomeBackup(.startup)])
        #expect(m.nextDeadline == at(8600))
    }

    @Test func linkDownFromMasterEntersFaultAndLinkUpGoesBackup() {
        var m = masterInstance()
        #expect(m.linkDown(now: at(4000)) == [.sendAdvert(priority: 0), .enterFault(.linkDown), .removeVirtualAddresses])
        #expect(m.state == .fault)
        #expect(m.nextDeadline == nil)
        #expect(m.timerFired(now: at(9000)) == [])
        #expect(m.receivedAdvert(advert(priority: 0), from: ip("192.0.2.1"), now: at(9000)) == [])
        #expect(m.linkUp(now: at(10_000)) == [.becomeBackup(.linkUp)])
        #expect(m.nextDeadline == at(13_600))
        #expect(m.linkUp(now: at(10_001)) == [])
    }

    @Test func linkDownFromBackupAndOwnerLinkUp() {
        var s = VRRPInstanceState(config: v3Config(priority: 255))
        _ = s.startup(now: .zero)
        var b = VRRPInstanceState(config: v3Config())
        _ = b.startup(now: .zero)
        #expect(b.linkDown(now: at(100)) == [.enterFault(.linkDown)])
        _ = s.linkDown(now: at(100))
        #expect(s.linkUp(now: at(200)) == masterActions(255, .addressOwner))
    }

    @Test func startupWhileLinkDownGoesToFault() {
        var s = VRRPInstanceState(config: v3Config())
        #expect(s.linkDown(now: .zero) == [])
        #expect(s.startup(now: at(10)) == [.enterFault(.linkDown)])
        #expect(s.state == .fault)
        #expect(s.shutdown(now: at(20)) == [.enterInitialize(.shutdown)])
    }

    @Test func preemptDelayRestartsWhenLeavingFault() {
        var s = VRRPInstanceState(config: v3Config(preemptDelay: .seconds(10)))
        _ = s.startup(now: .zero)
        _ = s.linkDown(now: at(20_000))
        _ = s.linkUp(now: at(30_000))
        #expect(s.preemptDelayUntil == at(40_000))
    }

    @Test func setPriorityAsMasterAdvertisesAtOnce() {
        var m = masterInstance()
        #expect(m.setPriority(80, now: at(4000)) == [.sendAdvert(priority: 80)])
        #expect(m.priority == 80)
        #expect(m.nextDeadline == at(5000))
        #expect(m.setPriority(80, now: at(4100)) == [])
        #expect(m.timerFired(now: at(5000)) == [.sendAdvert(priority: 80)])
    }

    @Test func setPriorityInBackupChangesSkewAndElection() {
        var s = VRRPInstanceState(config: v3Config())
        _ = s.startup(now: .zero)
        #expect(s.setPriority(200, now: at(1000)) == [])
        #expect(s.nextDeadline == at(3600))     // running timer kept
        #expect(s.skewTime == .milliseconds(210))
        // Now the 150 master is lower: ignored, preemption by expiry.
        #expect(s.receivedAdvert(advert(priority: 150), from: ip("192.0.2.1"), now: at(2000)) == [])
        #expect(s.nextDeadline == at(3600))
        #expect(s.setPriority(0, now: at(2500)) == [])
        #expect(s.priority == 1)
    }

    @Test func acceptModeIsExposedForTheDataplane() {
        var c = v3Config()
        c.acceptMode = true
        var s = VRRPInstanceState(config: c)
        #expect(s.acceptMode)
        #expect(!s.acceptsVirtualAddressTraffic)
        _ = s.startup(now: .zero)
        _ = s.timerFired(now: at(3600))
        #expect(s.acceptsVirtualAddressTraffic)
    }

    @Test func v2InstanceDoesNotLearnIntervalAndUsesV2Timers() {
        let c = VRRPInstanceConfig(vrid: 1, priority: 100, advertIntervalCentiseconds: 100, version: .v2,
                                   primaryAddress: local, virtualAddresses: vips)
        var s = VRRPInstanceState(config: c)
        #expect(s.startup(now: .zero) == [.becomeBackup(.startup)])
        #expect(s.nextDeadline == VRRPInstant(nanoseconds: 3_609_375_000))
        let p = VRRPPacket.v2(vrid: 1, priority: 200, advertIntervalSeconds: 1, addresses: vips)
        #expect(s.receivedAdvert(p, from: ip("192.0.2.1"), now: at(1000)) == [])
        #expect(s.nextDeadline == VRRPInstant(nanoseconds: 4_609_375_000))
        #expect(s.receivedAdvert(advert(priority: 0), from: ip("192.0.2.1"), now: at(2000)) == [])
        #expect(s.nextDeadline == VRRPInstant(nanoseconds: 2_609_375_000))
    }

    @Test func configBuildsItsAdvertAndExpectations() {
        let c = VRRPInstanceConfig(vrid: 1, priority: 200, advertIntervalCentiseconds: 100, version: .v2,
                                   primaryAddress: ip("10.0.0.254"), virtualAddresses: [ip("10.0.0.1"), ip("10.0.0.2")],
                                   authentication: .password(Array("pw".utf8)))
        #expect(c.advert(priority: 200).encode(source: c.primaryAddress, destination: vrrpGroupV4) == goldenV2Pass)
        #expect(c.expectations == v2Expect)
        let c3 = VRRPInstanceConfig(vrid: 10, priority: 100, primaryAddress: ip("192.0.2.1"), virtualAddresses: [ip("192.0.2.10")])
        #expect(c3.advert(priority: 100).encode(source: c3.primaryAddress, destination: vrrpGroupV4) == goldenV3V4PseudoHeader)
    }
}
