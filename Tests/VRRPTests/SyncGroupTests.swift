import Testing
import VRRP

/// The inputs the daemon feeds for `vrrp_sync_group` and tracking (keepalived's behaviour).
@Suite struct SyncGroupAndTrackingTests {
    @Test func aBackupMemberFollowsAnotherMemberToMasterAtOnce() {
        var m = VRRPInstanceState(config: v3Config())
        _ = m.startup(now: .zero)
        let actions = m.syncGroupMaster(member: "VI_2", now: at(500))
        #expect(actions == masterActions(100, .syncGroup(member: "VI_2", state: .master)))
        #expect(m.state == .master && m.nextDeadline == at(1500))
        // Already master, or in FAULT: nothing.
        #expect(m.syncGroupMaster(member: "VI_2", now: at(600)).isEmpty)
        var f = VRRPInstanceState(config: v3Config())
        _ = f.startup(now: .zero)
        _ = f.enterFault(.tracking("x"), now: at(10))
        #expect(f.syncGroupMaster(member: "VI_2", now: at(20)).isEmpty && f.state == .fault)
    }

    @Test func aMasterMemberFollowsAnotherMemberToBackupWithAMasterDownTimer() {
        var m = masterInstance()
        let actions = m.syncGroupBackup(member: "VI_2", now: at(4000))
        #expect(actions == [.becomeBackup(.syncGroup(member: "VI_2", state: .backup)), .removeVirtualAddresses])
        #expect(m.state == .backup && m.nextDeadline == at(4000) + m.masterDownInterval)
        // A backup does not move.
        #expect(m.syncGroupBackup(member: "VI_2", now: at(4100)).isEmpty)
    }

    @Test func trackingFaultRemovesTheAddressesAndRecoveryStartsAsBackup() {
        var m = masterInstance()
        #expect(m.enterFault(.tracking("tracked interface eth1 is down"), now: at(4000))
                == [.sendAdvert(priority: 0), .enterFault(.tracking("tracked interface eth1 is down")), .removeVirtualAddresses])
        #expect(m.state == .fault && m.nextDeadline == nil)
        // Adverts are ignored in FAULT: a priority-0 one would arm Skew_Time in Backup.
        #expect(m.receivedAdvert(advert(priority: 0), from: ip("192.0.2.9"), now: at(4100)).isEmpty)
        #expect(m.state == .fault && m.nextDeadline == nil)
        #expect(m.leaveFault(.trackingRecovered, now: at(5000)) == [.becomeBackup(.trackingRecovered)])
        #expect(m.state == .backup && m.nextDeadline == at(5000) + m.masterDownInterval)
    }

    @Test func linkDownIsAFaultWithItsOwnReason() {
        var m = masterInstance()
        #expect(m.linkDown(now: at(4000)) == [.sendAdvert(priority: 0), .enterFault(.linkDown), .removeVirtualAddresses])
        #expect(m.linkUp(now: at(4100)) == [.becomeBackup(.linkUp)])
    }

    @Test func stateMasterBelow255GoesMasterAtStartupOnly() {
        var c = v3Config()
        c.startsAsMaster = true
        var m = VRRPInstanceState(config: c)
        #expect(m.startup(now: .zero) == masterActions(100, .startup))
        // A higher-priority master takes over as usual.
        #expect(m.receivedAdvert(advert(priority: 150), from: ip("192.0.2.9"), now: at(100)).first
                == .becomeBackup(.higherPriorityAdvert(priority: 150, source: ip("192.0.2.9"))))
        // Recovering from FAULT goes through Backup.
        _ = m.linkDown(now: at(200))
        #expect(m.linkUp(now: at(300)) == [.becomeBackup(.linkUp)])
        // Without it: Backup first.
        var b = VRRPInstanceState(config: v3Config())
        #expect(b.startup(now: .zero) == [.becomeBackup(.startup)])
    }

    @Test func aMasterCarriedOverAReloadClaimsMastershipForThatStartOnly() {
        var m = VRRPInstanceState(config: v3Config())
        #expect(m.startup(now: .zero, claimMastership: true) == masterActions(100, .startup))
        #expect(m.state == .master)
        // Later returns from Initialize go through Backup, as without the claim.
        _ = m.linkDown(now: at(200))
        #expect(m.linkUp(now: at(300)) == [.becomeBackup(.linkUp)])
        // A second startup call does nothing (the instance is not in Initialize).
        var b = VRRPInstanceState(config: v3Config())
        _ = b.startup(now: .zero)
        #expect(b.startup(now: at(100), claimMastership: true).isEmpty && b.state == .backup)
    }
}
