/// Configuration of one virtual router instance.
public struct VRRPInstanceConfig: Sendable, Equatable, Hashable {
    public var vrid: UInt8
    /// 1...255; 255 means this router owns the virtual addresses.
    public var priority: UInt8
    /// Advertisement_Interval in centiseconds (v2: a multiple of 100, sent in seconds).
    public var advertIntervalCentiseconds: UInt16
    public var version: VRRPVersion
    /// Preempt_Mode (default true). The address owner always preempts.
    public var preempt: Bool
    /// keepalived `preempt_delay`: after startup (or leaving FAULT) in BACKUP, a lower-priority
    /// master is not preempted until this much time has passed.
    public var preemptDelay: Duration
    /// Accept_Mode (v3): a non-owner master accepts packets addressed to the virtual addresses.
    public var acceptMode: Bool
    /// Primary address of this router on the interface (IP source of its adverts; tie-break).
    public var primaryAddress: VRRPAddress
    /// The virtual addresses (one family).
    public var virtualAddresses: [VRRPAddress]
    /// v2 only.
    public var authentication: VRRPAuthentication
    /// keepalived `state MASTER` below priority 255: at startup, go to Master at once instead of
    /// waiting a Master_Down_Interval in Backup (a higher-priority master then takes over as
    /// usual). Not after a FAULT: that recovers through Backup.
    public var startsAsMaster: Bool

    public init(vrid: UInt8, priority: UInt8, advertIntervalCentiseconds: UInt16 = 100, version: VRRPVersion = .v3,
                preempt: Bool = true, preemptDelay: Duration = .zero, acceptMode: Bool = false,
                primaryAddress: VRRPAddress, virtualAddresses: [VRRPAddress] = [],
                authentication: VRRPAuthentication = .none, startsAsMaster: Bool = false) {
        self.vrid = vrid
        self.priority = priority
        self.advertIntervalCentiseconds = advertIntervalCentiseconds
        self.version = version
        self.preempt = preempt
        self.preemptDelay = preemptDelay
        self.acceptMode = acceptMode
        self.primaryAddress = primaryAddress
        self.virtualAddresses = virtualAddresses
        self.authentication = authentication
        self.startsAsMaster = startsAsMaster
    }

    /// keepalived `nopreempt`: the inverse of `preempt`.
    public var nopreempt: Bool {
        get { !preempt }
        set { preempt = !newValue }
    }

    public var isOwner: Bool { priority == 255 }

    /// v2 Adver Int field in seconds.
    public var advertIntervalSeconds: UInt8 {
        UInt8(min(255, Int(advertIntervalCentiseconds) / 100))
    }

    /// The advertisement this instance sends with the given priority.
    public func advert(priority: UInt8) -> VRRPPacket {
        switch version {
        case .v2:
            return .v2(vrid: vrid, priority: priority, advertIntervalSeconds: advertIntervalSeconds,
                       addresses: virtualAddresses, authentication: authentication)
        case .v3:
            return .v3(vrid: vrid, priority: priority, maxAdvertIntervalCentiseconds: advertIntervalCentiseconds,
                       family: primaryAddress.family, addresses: virtualAddresses)
        }
    }

    /// Receive expectations matching this configuration.
    public var expectations: VRRPExpectations {
        VRRPExpectations(version: version, vrid: vrid, addresses: virtualAddresses,
                         advertIntervalSeconds: advertIntervalSeconds, authentication: authentication,
                         localIsOwner: isOwner)
    }
}

/// RFC 5798 / RFC 9568 states (RFC 9568 says Active for Master), plus keepalived's FAULT.
public enum VRRPState: Sendable, Equatable, Hashable {
    case initialize
    case backup
    case master
    case fault
}

/// Why a transition happened.
public enum VRRPTransitionReason: Sendable, Equatable, Hashable, CustomStringConvertible {
    case startup
    /// Priority 255 at startup / link up: the owner goes master at once.
    case addressOwner
    case masterDownTimerExpired
    case higherPriorityAdvert(priority: UInt8, source: VRRPAddress)
    case equalPriorityHigherAddress(priority: UInt8, source: VRRPAddress)
    case shutdown
    case linkDown
    case linkUp
    /// Tracking (an interface, a script, or a member of the sync group) put the instance in
    /// FAULT; the text says which.
    case tracking(String)
    /// Every tracked object is fine again: the instance leaves FAULT.
    case trackingRecovered
    /// keepalived `vrrp_sync_group`: the instance follows another member (`member`), which
    /// became master or left it.
    case syncGroup(member: String, state: VRRPState)

    public var description: String {
        switch self {
        case .startup: return "startup"
        case .addressOwner: return "address owner (priority 255)"
        case .masterDownTimerExpired: return "no advert from a master within Master_Down_Interval"
        case .higherPriorityAdvert(let p, let s): return "advert with higher priority \(p) from \(s)"
        case .equalPriorityHigherAddress(let p, let s): return "advert with equal priority \(p) from higher address \(s)"
        case .shutdown: return "shutdown"
        case .linkDown: return "link down"
        case .linkUp: return "link up"
        case .tracking(let why): return why
        case .trackingRecovered: return "tracked objects recovered"
        case .syncGroup(let member, let state): return "sync group member \(member) became \(state)"
        }
    }
}

/// What the caller must do, in order.
public enum VRRPAction: Sendable, Equatable, Hashable {
    case sendAdvert(priority: UInt8)
    case becomeMaster(VRRPTransitionReason)
    case becomeBackup(VRRPTransitionReason)
    case enterFault(VRRPTransitionReason)
    case enterInitialize(VRRPTransitionReason)
    case addVirtualAddresses
    case removeVirtualAddresses
    /// Gratuitous ARP (IPv4) / unsolicited NA (IPv6) for each virtual address; repeat/delay knobs are the caller's.
    case sendGratuitousARP
}

/// One virtual router's state machine (RFC 5798 §6.4 with the RFC 9568 changes), a pure value.
///
/// Feed it events with the current time; it returns actions and exposes `nextDeadline`,
/// at which the caller calls `timerFired(now:)`.
public struct VRRPInstanceState: Sendable, Equatable {
    public private(set) var config: VRRPInstanceConfig
    public private(set) var state: VRRPState = .initialize
    /// Current (effective) priority; changed by `setPriority`.
    public private(set) var priority: UInt8
    /// Master_Adver_Interval in centiseconds (v3: learned from adverts in backup).
    public private(set) var masterAdverIntervalCentiseconds: UInt16
    public private(set) var adverTimer: VRRPInstant?
    public private(set) var masterDownTimer: VRRPInstant?
    /// Until this instant (keepalived preempt_delay) a lower-priority master is not preempted.
    public private(set) var preemptDelayUntil: VRRPInstant?
    public private(set) var linkIsUp: Bool = true
    /// Why the instance is (or, from Initialize, will be) in Fault.
    private var faultReason: VRRPTransitionReason = .linkDown

    public init(config: VRRPInstanceConfig) {
        self.config = config
        self.priority = max(1, config.priority)
        self.masterAdverIntervalCentiseconds = config.advertIntervalCentiseconds
    }

    // MARK: derived values

    /// The single armed timer, if any.
    public var nextDeadline: VRRPInstant? {
        switch state {
        case .master: return adverTimer
        case .backup: return masterDownTimer
        case .initialize, .fault: return nil
        }
    }

    public var advertisementInterval: Duration { .milliseconds(Int64(config.advertIntervalCentiseconds) * 10) }

    /// v3: ((256 - Priority) * Master_Adver_Interval) / 256 centiseconds (integer);
    /// v2: (256 - Priority) / 256 seconds.
    public var skewTime: Duration {
        switch config.version {
        case .v2:
            return .nanoseconds(Int64(256 - Int(priority)) * 3_906_250)
        case .v3:
            let cs = ((256 - Int64(priority)) * Int64(masterAdverIntervalCentiseconds)) / 256
            return .milliseconds(cs * 10)
        }
    }

    /// v3: 3 * Master_Adver_Interval + Skew_Time; v2: 3 * Advertisement_Interval + Skew_Time.
    public var masterDownInterval: Duration {
        switch config.version {
        case .v2:
            return advertisementInterval * 3 + skewTime
        case .v3:
            return .milliseconds(Int64(masterAdverIntervalCentiseconds) * 30) + skewTime
        }
    }

    /// Accept_Mode flag for the dataplane.
    public var acceptMode: Bool { config.acceptMode }

    /// Whether the dataplane should accept packets addressed to the virtual addresses now
    /// (RFC 9568 §6.4.3: master and (owner or Accept_Mode)).
    public var acceptsVirtualAddressTraffic: Bool {
        state == .master && (config.isOwner || config.acceptMode)
    }

    // MARK: events

    /// `claimMastership`: become master at once from Backup, as `startsAsMaster` does, for this
    /// start only (an instance that was master before a reload restarted it).
    public mutating func startup(now: VRRPInstant, claimMastership: Bool = false) -> [VRRPAction] {
        guard state == .initialize else { return [] }
        let actions = enterFromInitialize(now: now, reason: .startup)
        if (config.startsAsMaster || claimMastership) && state == .backup { return becomeMaster(now: now, reason: .startup) }
        return actions
    }

    public mutating func shutdown(now: VRRPInstant) -> [VRRPAction] {
        let previous = state
        state = .initialize
        adverTimer = nil
        masterDownTimer = nil
        preemptDelayUntil = nil
        switch previous {
        case .initialize:
            return []
        case .master:
            return [.sendAdvert(priority: 0), .removeVirtualAddresses, .enterInitialize(.shutdown)]
        case .backup, .fault:
            return [.enterInitialize(.shutdown)]
        }
    }

    public mutating func receivedAdvert(_ packet: VRRPPacket, from source: VRRPAddress, now: VRRPInstant) -> [VRRPAction] {
        switch state {
        case .initialize, .fault:
            return []
        case .backup:
            if packet.priority == 0 {
                masterDownTimer = now + skewTime
                return []
            }
            if !preemptAllowed(now: now) || packet.priority >= priority {
                learnMasterAdverInterval(packet)
                masterDownTimer = now + masterDownInterval
                return []
            }
            return []  // lower priority and preempting: discard, let the timer expire
        case .master:
            if packet.priority == 0 {
                adverTimer = now + advertisementInterval
                return [.sendAdvert(priority: priority)]
            }
            let reason: VRRPTransitionReason?
            if packet.priority > priority {
                reason = .higherPriorityAdvert(priority: packet.priority, source: source)
            } else if packet.priority == priority && source > config.primaryAddress {
                reason = .equalPriorityHigherAddress(priority: packet.priority, source: source)
            } else {
                reason = nil
            }
            guard let reason else {
                // RFC 9568 §6.4.3: discard, and send an ADVERTISEMENT immediately to assert the
                // Active state to the sender and to update learning bridges. (Adver_Timer unchanged.)
                return [.sendAdvert(priority: priority)]
            }
            adverTimer = nil
            learnMasterAdverInterval(packet)
            masterDownTimer = now + masterDownInterval
            state = .backup
            return [.becomeBackup(reason), .removeVirtualAddresses]
        }
    }

    /// Call at (or after) `nextDeadline`. Calling early does nothing.
    public mutating func timerFired(now: VRRPInstant) -> [VRRPAction] {
        switch state {
        case .backup:
            guard let t = masterDownTimer, now >= t else { return [] }
            return becomeMaster(now: now, reason: .masterDownTimerExpired)
        case .master:
            guard let t = adverTimer, now >= t else { return [] }
            adverTimer = now + advertisementInterval
            return [.sendAdvert(priority: priority)]
        case .initialize, .fault:
            return []
        }
    }

    /// Tracking changed the effective priority (clamped to 1...255).
    /// As master, a changed priority is advertised at once and the Adver_Timer restarts;
    /// in backup the running Master_Down_Timer is kept (the new Skew_Time applies from the next reset).
    public mutating func setPriority(_ newPriority: UInt8, now: VRRPInstant) -> [VRRPAction] {
        let p = max(1, newPriority)
        guard p != priority else { return [] }
        priority = p
        if state == .master {
            adverTimer = now + advertisementInterval
            return [.sendAdvert(priority: p)]
        }
        return []
    }

    /// keepalived `vrrp_sync_group`: another member became master, and this one follows at once
    /// from Backup (as if its Master_Down_Timer had fired). Nothing in the other states.
    public mutating func syncGroupMaster(member: String, now: VRRPInstant) -> [VRRPAction] {
        guard state == .backup else { return [] }
        return becomeMaster(now: now, reason: .syncGroup(member: member, state: .master))
    }

    /// keepalived `vrrp_sync_group`: another member left Master for Backup, and this one follows
    /// from Master: Backup with a Master_Down_Timer, as after a higher-priority advert. Nothing in
    /// the other states.
    public mutating func syncGroupBackup(member: String, now: VRRPInstant) -> [VRRPAction] {
        guard state == .master else { return [] }
        adverTimer = nil
        masterDownTimer = now + masterDownInterval
        state = .backup
        return [.becomeBackup(.syncGroup(member: member, state: .backup)), .removeVirtualAddresses]
    }

    /// Tracking failed (weight-0 `track_interface` or `track_script`, a sync group member in
    /// FAULT): as `linkDown`, with the reason given.
    public mutating func enterFault(_ reason: VRRPTransitionReason, now: VRRPInstant) -> [VRRPAction] {
        linkIsUp = false
        faultReason = reason
        let previous = state
        switch previous {
        case .initialize, .fault:
            return []
        case .backup, .master:
            state = .fault
            adverTimer = nil
            masterDownTimer = nil
            preemptDelayUntil = nil
            // A master leaving for FAULT says so with priority 0 first, as at shutdown (and as
            // keepalived does): the backup takes over after Skew_Time, not Master_Down_Interval.
            // With its own link down the advert cannot leave; nothing else depends on it.
            return previous == .master
                ? [.sendAdvert(priority: 0), .enterFault(reason), .removeVirtualAddresses]
                : [.enterFault(reason)]
        }
    }

    /// Tracking recovered: as `linkUp`.
    public mutating func leaveFault(_ reason: VRRPTransitionReason, now: VRRPInstant) -> [VRRPAction] {
        linkIsUp = true
        guard state == .fault else { return [] }
        state = .initialize
        return enterFromInitialize(now: now, reason: reason)
    }

    public mutating func linkDown(now: VRRPInstant) -> [VRRPAction] {
        enterFault(.linkDown, now: now)
    }

    public mutating func linkUp(now: VRRPInstant) -> [VRRPAction] {
        leaveFault(.linkUp, now: now)
    }

    // MARK: internals

    private func preemptAllowed(now: VRRPInstant) -> Bool {
        if config.isOwner || priority == 255 { return true }
        guard config.preempt else { return false }
        if let until = preemptDelayUntil, now < until { return false }
        return true
    }

    private mutating func learnMasterAdverInterval(_ packet: VRRPPacket) {
        if config.version == .v3 && packet.advertInterval > 0 {
            masterAdverIntervalCentiseconds = packet.advertInterval
        }
    }

    private mutating func enterFromInitialize(now: VRRPInstant, reason: VRRPTransitionReason) -> [VRRPAction] {
        if !linkIsUp {
            state = .fault
            return [.enterFault(faultReason)]
        }
        masterAdverIntervalCentiseconds = config.advertIntervalCentiseconds
        preemptDelayUntil = config.preemptDelay > .zero ? now + config.preemptDelay : nil
        if priority == 255 {
            return becomeMaster(now: now, reason: .addressOwner)
        }
        state = .backup
        adverTimer = nil
        masterDownTimer = now + masterDownInterval
        return [.becomeBackup(reason)]
    }

    private mutating func becomeMaster(now: VRRPInstant, reason: VRRPTransitionReason) -> [VRRPAction] {
        state = .master
        masterDownTimer = nil
        adverTimer = now + advertisementInterval
        return [.becomeMaster(reason), .addVirtualAddresses, .sendAdvert(priority: priority), .sendGratuitousARP]
    }
}
