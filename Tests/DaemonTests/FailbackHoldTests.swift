@testable import Daemon
import Testing

/// The failback hold-down's rules with a hand-driven clock (docs/vrrp.md, "Failback hold-down").
@Suite("failback hold-down")
struct FailbackHoldTests {
    let t0 = ContinuousClock.now
    let settle = Duration.seconds(1)
    let behind = FailbackHold(behind: true, bound: 10)
    let behindSending = FailbackHold(behind: true, bound: 10, masterPeerSending: true)

    func at(_ s: Double) -> ContinuousClock.Instant { t0 + .milliseconds(Int64(s * 1000)) }

    @Test("a backup behind is held until its VRFs are in sync; one in sync is never held")
    func backupHeldUntilInSync() {
        var h = FailbackHoldState()
        #expect(h.update(now: at(0), hold: .none, settle: settle) == nil)
        #expect(!h.isHeld)
        #expect(h.update(now: at(1), hold: behind, settle: settle) == .held)
        #expect(h.update(now: at(2), hold: behind, settle: settle) == nil)
        #expect(h.isHeld)
        #expect(h.update(now: at(3.5), hold: .none, settle: settle) == .released(heldSeconds: 2.5, asMaster: false))
        #expect(!h.isHeld)
    }

    @Test("the bound ends a hold, and no new hold starts until the VRFs have been in sync")
    func boundEndsTheHold() {
        var h = FailbackHoldState()
        #expect(h.update(now: at(0), hold: behind, settle: settle) == .held)
        #expect(h.update(now: at(9.9), hold: behind, settle: settle) == nil)
        #expect(h.update(now: at(10), hold: behind, settle: settle) == .expired)
        #expect(!h.isHeld)
        #expect(h.update(now: at(20), hold: behind, settle: settle) == nil)
        #expect(!h.isHeld)
        #expect(h.update(now: at(21), hold: .none, settle: settle) == nil)
        #expect(h.update(now: at(22), hold: behind, settle: settle) == .held)
    }

    @Test("a held node that becomes master with no master peer sending its table is released at once (both nodes starting)")
    func masterWithoutMasterPeerReleasedAtOnce() {
        var h = FailbackHoldState()
        #expect(h.update(now: at(0), hold: behind, settle: settle) == .held)
        h.stateChanged(toMaster: true, now: at(0.4), hold: behind)
        #expect(h.update(now: at(0.4), hold: behind, settle: settle) == .released(heldSeconds: 0.4, asMaster: true))
    }

    @Test("a held node that becomes master while a master peer sends its table keeps the hold while it settles, then is released")
    func masterWithMasterPeerSettles() {
        var h = FailbackHoldState()
        #expect(h.update(now: at(0), hold: behindSending, settle: settle) == .held)
        h.stateChanged(toMaster: true, now: at(0.4), hold: behindSending)
        #expect(h.update(now: at(0.4), hold: behindSending, settle: settle) == nil)
        #expect(h.update(now: at(1.3), hold: behindSending, settle: settle) == nil)
        #expect(h.isHeld)
        #expect(h.update(now: at(1.4), hold: behindSending, settle: settle) == .released(heldSeconds: 1.4, asMaster: true))
    }

    @Test("a settling master that steps down (it heard the real master) is held again as backup, without settling")
    func steppedDownMasterStaysHeld() {
        var h = FailbackHoldState()
        _ = h.update(now: at(0), hold: behindSending, settle: settle)
        h.stateChanged(toMaster: true, now: at(0.4), hold: behindSending)
        #expect(h.update(now: at(0.5), hold: behindSending, settle: settle) == nil)
        h.stateChanged(toMaster: false, now: at(0.6), hold: behindSending)
        #expect(h.update(now: at(0.6), hold: behindSending, settle: settle) == nil)
        #expect(h.isHeld)
        #expect(!h.settling)
        #expect(h.update(now: at(3), hold: .none, settle: settle) == .released(heldSeconds: 3, asMaster: false))
    }

    @Test("a master never starts a hold")
    func masterNeverStartsAHold() {
        var h = FailbackHoldState()
        h.stateChanged(toMaster: true, now: at(0), hold: behindSending)
        #expect(h.update(now: at(0.1), hold: behindSending, settle: settle) == nil)
        #expect(!h.isHeld)
    }

    @Test("the settling time is three Master_Down_Intervals")
    func settleTime() throws {
        var spec = try VRRPTrackingTests().instance()
        spec.advertIntervalCentiseconds = 100
        #expect(VRRPSupervisor.masterSettle(spec) == .milliseconds(11_988))
        spec.advertIntervalCentiseconds = 10
        #expect(VRRPSupervisor.masterSettle(spec) == .milliseconds(1_198))
    }
}
