import Config

/// What tracking makes of one instance (pure): its effective priority and whether it must be
/// in FAULT, from the states of what it tracks.
struct TrackingVerdict: Sendable, Equatable {
    var priority: UInt8
    /// Why the instance must be in FAULT; nil: it need not.
    var fault: String?
}

enum Tracking {
    /// One tracked object's contribution (keepalived's rules): weight 0 and failed gives a
    /// FAULT; a positive weight is added while the object is fine, a negative one while it
    /// failed; `reverse` swaps fine and failed for the weight (not for weight 0).
    static func delta(weight: Int, reverse: Bool, fine: Bool) -> Int {
        guard weight != 0 else { return 0 }
        let active = reverse ? !fine : fine
        return weight > 0 ? (active ? weight : 0) : (active ? 0 : weight)
    }

    /// What the instance's own tracking gives (`groupFault` nil), then its sync group: a member
    /// whose own tracking puts it in FAULT puts this one in FAULT too, unless it is already.
    /// - Parameters:
    ///   - interfaceUp: the state of each interface (its own and tracked); a missing one is down.
    ///   - scriptOK: the state of each `vrrp_script`.
    ///   - groupFault: a member of the instance's sync group whose own tracking puts it in FAULT.
    static func verdict(_ spec: VRRPInstanceSpec, interfaceUp: [String: Bool], scriptOK: [String: Bool],
                        groupFault: String?) -> TrackingVerdict {
        combine(own(spec, interfaceUp: interfaceUp, scriptOK: scriptOK), groupFault: groupFault)
    }

    /// The instance's own verdict with its sync group's fault, which counts only when it has none.
    static func combine(_ own: TrackingVerdict, groupFault member: String?) -> TrackingVerdict {
        var v = own
        if v.fault == nil, let member { v.fault = "sync group member \(member) is in FAULT" }
        return v
    }

    /// The instance's own tracking, without its sync group (what it passes on to the others).
    static func own(_ spec: VRRPInstanceSpec, interfaceUp: [String: Bool], scriptOK: [String: Bool]) -> TrackingVerdict {
        var fault: String?
        var delta = 0
        if interfaceUp[spec.interface] != true {
            fault = "interface \(spec.interface) is down"
        }
        for t in spec.trackInterfaces {
            let up = interfaceUp[t.interface] == true
            if t.weight == 0 {
                if !up && fault == nil { fault = "tracked interface \(t.interface) is down" }
            } else {
                delta += Self.delta(weight: t.weight, reverse: t.reverse, fine: up)
            }
        }
        for t in spec.trackScripts {
            let ok = scriptOK[t.script] ?? true
            if t.weight == 0 {
                if !ok && fault == nil { fault = "tracked script \(t.script) failed" }
            } else {
                delta += Self.delta(weight: t.weight, reverse: t.reverse, fine: ok)
            }
        }
        // The address owner keeps 255 (keepalived); the others stay in 1...254.
        let priority: UInt8 = spec.isAddressOwner ? 255 : UInt8(min(254, max(1, Int(spec.priority) + delta)))
        return TrackingVerdict(priority: priority, fault: fault)
    }
}

/// The failback hold-down of one VRRP instance, free of I/O (docs/vrrp.md, "Failback
/// hold-down"). The supervisor feeds it the VRFs' `FailbackHold` and its state changes; while
/// `isHeld`, the instance advertises priority 1.
struct FailbackHoldState: Sendable, Equatable {
    /// Since when the priority is held down; nil: not held.
    private(set) var heldSince: ContinuousClock.Instant?
    /// The hold ran out its bound in this episode: not held again until the VRFs are in sync.
    private(set) var expired = false
    /// Since when the instance is master; nil: not master.
    private(set) var masterSince: ContinuousClock.Instant?
    /// It became master while held and while a master peer was sending its table: the hold
    /// stays for the settling time.
    private(set) var settling = false

    enum Event: Sendable, Equatable {
        case held
        /// Released because the VRFs hold the master's table (`asMaster` false), or because the
        /// instance is master (`asMaster` true: at once, or after its settling time).
        case released(heldSeconds: Double, asMaster: Bool)
        case expired
    }

    var isHeld: Bool { heldSince != nil }

    /// The instance's VRRP state changed.
    mutating func stateChanged(toMaster: Bool, now: ContinuousClock.Instant, hold: FailbackHold) {
        masterSince = toMaster ? now : nil
        settling = toMaster && isHeld && hold.masterPeerSending
    }

    /// One evaluation (every 100 ms and after each state change). `settle` is the settling time
    /// (`VRRPSupervisor.masterSettle`).
    mutating func update(now: ContinuousClock.Instant, hold: FailbackHold, settle: Duration) -> Event? {
        if let since = masterSince {
            // A master never starts a hold; one that became master while held keeps it only
            // while it settles.
            if settling, isHeld, now - since < settle { return nil }
            return release(now: now, asMaster: true)
        }
        guard hold.behind else { return release(now: now, asMaster: false) }
        if let since = heldSince {
            guard now - since >= .milliseconds(Int64(hold.bound * 1000)) else { return nil }
            heldSince = nil
            expired = true
            return .expired
        }
        if expired { return nil }
        heldSince = now
        return .held
    }

    private mutating func release(now: ContinuousClock.Instant, asMaster: Bool) -> Event? {
        expired = false
        settling = false
        guard let since = heldSince else { return nil }
        heldSince = nil
        let d = (now - since).components
        return .released(heldSeconds: Double(d.seconds) + Double(d.attoseconds) / 1e18, asMaster: asMaster)
    }
}
