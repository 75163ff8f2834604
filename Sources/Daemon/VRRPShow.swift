import Config
import Foundation
import VRRP
import VRRPNet

/// `show vrrp`'s report, from what the supervisor and the runners hold (pure: the supervisor
/// gathers the inputs, these functions only arrange them).
enum VRRPShow {
    /// What the supervisor knows of one instance besides its runner.
    struct Inputs {
        var spec: VRRPInstanceSpec
        var snapshot: VRRPRunnerSnapshot
        var interfaceUp: [String: Bool]
        var scriptOK: [String: Bool]
        /// What the runner was told to advertise (tracking, then the failback hold).
        var effectivePriority: UInt8
        var fault: String?
        var hold: FailbackHoldState
        var lastHold: FailbackHold
        var now: ContinuousClock.Instant
        /// Whether each virtual address (by its text) is on its interface; nil: unknown.
        var held: (VirtualAddressSpec) -> Bool?
    }

    static func name(_ state: VRRPState) -> String {
        switch state {
        case .initialize: return "initialize"
        case .backup: return "backup"
        case .master: return "master"
        case .fault: return "fault"
        }
    }

    static func seconds(_ d: Duration) -> Double {
        let c = d.components
        return Double(c.seconds) + Double(c.attoseconds) / 1e18
    }

    static func instance(_ i: Inputs) -> VRRPInstanceReport {
        let spec = i.spec
        let snap = i.snapshot
        let stats = snap.statistics
        let primary = snap.instance.config.primaryAddress.description
        let master: String?
        if snap.performedState == .master {
            master = primary
        } else if let a = stats.lastAdvert, a.priority > 0 {
            master = a.source.description
        } else {
            master = nil
        }
        let tracked = Tracking.own(spec, interfaceUp: i.interfaceUp, scriptOK: i.scriptOK).priority
        let interfaces = spec.trackInterfaces.map { t in
            let up = i.interfaceUp[t.interface] == true
            return VRRPTrackReport(name: t.interface, status: up ? "up" : "down", weight: t.weight, reverse: t.reverse,
                                   delta: Tracking.delta(weight: t.weight, reverse: t.reverse, fine: up))
        }
        let scripts = spec.trackScripts.map { t in
            let ok = i.scriptOK[t.script] ?? true
            return VRRPTrackReport(name: t.script, status: ok ? "ok" : "failed", weight: t.weight, reverse: t.reverse,
                                   delta: Tracking.delta(weight: t.weight, reverse: t.reverse, fine: ok))
        }
        let addresses = (spec.virtualAddresses + spec.excludedAddresses).map { a in
            VRRPVirtualAddressReport(address: a.address, prefixLength: a.prefixLength, dev: a.dev ?? spec.interface,
                                     label: a.label, excluded: a.excluded, held: i.held(a))
        }
        return VRRPInstanceReport(
            name: spec.name, interface: spec.interface, vrid: Int(spec.virtualRouterID), version: spec.version.rawValue,
            family: spec.family == .ipv4 ? "ipv4" : "ipv6", state: name(snap.performedState),
            since: stats.lastTransition.map { seconds(snap.now - $0.at) }, transitions: stats.transitions,
            lastReason: stats.lastTransition.map { "\($0.reason)" },
            configuredPriority: Int(spec.priority), trackedPriority: Int(tracked), effectivePriority: Int(i.effectivePriority),
            addressOwner: spec.isAddressOwner, primaryAddress: primary, masterAddress: master,
            lastAdvert: stats.lastAdvert.map {
                VRRPAdvertReport(source: $0.source.description, priority: Int($0.priority),
                                 advertInterval: Double($0.advertIntervalCentiseconds) / 100, secondsAgo: seconds(snap.now - $0.at))
            },
            advertInterval: spec.advertInterval,
            masterAdvertInterval: Double(snap.instance.masterAdverIntervalCentiseconds) / 100,
            preempt: spec.preempt, preemptDelay: spec.preemptDelay, unicastPeers: spec.unicastPeers.map(\.address),
            virtualAddresses: addresses, trackInterfaces: interfaces, trackScripts: scripts, fault: i.fault,
            failbackHold: hold(i), syncGroup: spec.syncGroup,
            statistics: VRRPStatisticsReport(
                advertsSent: stats.advertsSent, advertSendErrors: stats.advertSendErrors, advertsReceived: stats.advertsReceived,
                drops: Dictionary(uniqueKeysWithValues: stats.drops.map { ($0.key.rawValue, $0.value) }),
                becameMaster: stats.becameMaster, announcementsSent: stats.announcementsSent, addressErrors: stats.addressErrors))
    }

    static func hold(_ i: Inputs) -> VRRPFailbackHoldReport {
        let h = i.hold
        let behind = i.lastHold.vrfsBehind
        let vrfs = behind.count == 1 ? "VRF \(behind[0])" : "VRFs \(behind.joined(separator: ", "))"
        let bound = format(i.lastHold.bound)
        let reason: String?
        if h.isHeld && h.settling {
            reason = "became master while a master peer was sending its table: keeps priority 1 for up to "
                + "\(format(seconds(VRRPSupervisor.masterSettle(i.spec)))) s, so that the master it did not hear takes over again"
        } else if h.isHeld {
            reason = "\(vrfs) \(behind.count == 1 ? "does" : "do") not hold the master's whole table yet (resync incomplete); "
                + "held for at most failback_hold_max \(bound) s"
        } else if h.expired {
            reason = "failback_hold_max (\(bound) s) ran out before \(vrfs) completed the resync; not held again until "
                + "\(behind.count == 1 ? "it does" : "they do")"
        } else if !behind.isEmpty && i.spec.isAddressOwner {
            reason = "address owner (priority 255): never held down"
        } else if !behind.isEmpty && i.snapshot.performedState == .master {
            reason = "this node is master: not held down"
        } else {
            reason = nil
        }
        return VRRPFailbackHoldReport(
            held: h.isHeld, heldFor: h.heldSince.map { seconds(i.now - $0) }, bound: i.lastHold.bound, vrfsBehind: behind,
            settling: h.isHeld && h.settling, expired: h.expired, reason: reason)
    }

    /// keepalived's state of a sync group: FAULT if a member is, MASTER if all are, INIT if all
    /// are, BACKUP otherwise.
    static func syncGroup(_ spec: VRRPSyncGroupSpec, states: [String: VRRPState]) -> VRRPSyncGroupReport {
        let members = spec.members.map { VRRPSyncGroupMemberReport(name: $0, state: name(states[$0] ?? .initialize)) }
        let all = spec.members.map { states[$0] ?? .initialize }
        let state: VRRPState
        if all.contains(.fault) {
            state = .fault
        } else if all.allSatisfy({ $0 == .master }) {
            state = .master
        } else if all.allSatisfy({ $0 == .initialize }) {
            state = .initialize
        } else {
            state = .backup
        }
        return VRRPSyncGroupReport(name: spec.name, state: name(state), members: members)
    }

    /// Seconds as an operator reads them: no trailing zeros (120, 0.1, 1.25).
    static func format(_ x: Double) -> String {
        if x == x.rounded() && abs(x) < 1e15 { return String(Int(x)) }
        var s = String(format: "%.3f", x)
        while s.hasSuffix("0") { s.removeLast() }
        return s
    }
}
