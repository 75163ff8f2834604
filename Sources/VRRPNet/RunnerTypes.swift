public import VRRP

/// Adds and removes the virtual addresses of an instance (libnl-route in the daemon; `ip addr`
/// in the tests). Both calls must be idempotent: adding an address that is there, or removing one
/// that is not, succeeds.
public protocol VirtualAddressManager: Sendable {
    func addVirtualAddresses(_ addresses: [VRRPAddress], interface: String) async throws
    func removeVirtualAddresses(_ addresses: [VRRPAddress], interface: String) async throws
}

/// What the daemon does around transitions.
public protocol VRRPRunnerHooks: Sendable {
    /// The instance decided to become master. The runner awaits this before anything else of the
    /// transition: no virtual address is added, no advert sent and no ARP/NA sent until it returns
    /// (the daemon makes the synced conntracks forwardable here).
    func willBecomeMaster(_ reason: VRRPTransitionReason) async
}

/// Hooks that do nothing.
public struct VRRPNoHooks: VRRPRunnerHooks {
    public init() {}
    public func willBecomeMaster(_ reason: VRRPTransitionReason) async {}
}

/// keepalived's gratuitous ARP / unsolicited NA knobs (keepalived.conf(5) of 2.2.7, global
/// `vrrp_garp_*` and per-instance `garp_*`). Defaults are keepalived's.
public struct VRRPGratuitousConfiguration: Sendable, Equatable, Hashable {
    /// `garp_master_delay`: a second burst this long after becoming master; zero: none. Default 5 s.
    public var masterDelay: Duration
    /// `garp_master_repeat`: announcements per address in a burst. Default 5.
    public var masterRepeat: Int
    /// `garp_master_refresh`: while master, another burst this often; zero: off (the default).
    public var masterRefresh: Duration
    /// `garp_master_refresh_repeat`: announcements per address in a refresh burst. Default 1.
    public var masterRefreshRepeat: Int
    /// `vrrp_garp_interval` (IPv4) / `vrrp_gna_interval` (IPv6): gap between two announcements
    /// of a burst. Default 0 (back to back).
    public var interval: Duration

    public init(masterDelay: Duration = .seconds(5), masterRepeat: Int = 5, masterRefresh: Duration = .zero,
                masterRefreshRepeat: Int = 1, interval: Duration = .zero) {
        self.masterDelay = masterDelay
        self.masterRepeat = masterRepeat
        self.masterRefresh = masterRefresh
        self.masterRefreshRepeat = masterRefreshRepeat
        self.interval = interval
    }

    /// keepalived 2.2.7 defaults.
    public static let keepalivedDefaults = VRRPGratuitousConfiguration()
    /// keepalived `vrrp_min_garp`: one announcement, no second burst.
    public static let minimal = VRRPGratuitousConfiguration(masterDelay: .zero, masterRepeat: 1)

    /// One burst: `count` rounds over all addresses (as keepalived: round by round), each
    /// announcement `interval` after the previous one. Offsets from the start of the burst.
    public func burst(addresses: [VRRPAddress], count: Int) -> [(offset: Duration, address: VRRPAddress)] {
        var out: [(offset: Duration, address: VRRPAddress)] = []
        var i = 0
        for _ in 0..<max(0, count) {
            for a in addresses {
                out.append((interval * i, a))
                i += 1
            }
        }
        return out
    }
}

/// One instance of the runner.
public struct VRRPRunnerConfiguration: Sendable, Equatable {
    /// Logged as the metadata `group` (keepalived's instance name, e.g. `VI_1`).
    public var name: String
    public var instance: VRRPInstanceConfig
    /// The interface the virtual addresses go on.
    public var interface: String
    /// Checksum form sent for VRRPv3 over IPv4 (keepalived 2.2.7 and FRR: with pseudo-header).
    public var checksumMode: VRRPChecksumMode
    /// Checksum forms accepted for VRRPv3 over IPv4.
    public var acceptedChecksumModes: Set<VRRPChecksumMode>
    public var gratuitous: VRRPGratuitousConfiguration
    /// keepalived `check_unicast_src`: in unicast mode, drop adverts whose source is not a peer.
    public var checkUnicastSource: Bool
    /// Each drop reason (and each warning) is logged at most once per this interval, with the
    /// number suppressed since.
    public var dropLogInterval: Duration

    public init(name: String? = nil, instance: VRRPInstanceConfig, interface: String,
                checksumMode: VRRPChecksumMode = .withPseudoHeader,
                acceptedChecksumModes: Set<VRRPChecksumMode> = [.withPseudoHeader, .messageOnly],
                gratuitous: VRRPGratuitousConfiguration = .keepalivedDefaults, checkUnicastSource: Bool = false,
                dropLogInterval: Duration = .seconds(10)) {
        self.name = name ?? "vrid-\(instance.vrid)"
        self.instance = instance
        self.interface = interface
        self.checksumMode = checksumMode
        self.acceptedChecksumModes = acceptedChecksumModes
        self.gratuitous = gratuitous
        self.checkUnicastSource = checkUnicastSource
        self.dropLogInterval = dropLogInterval
    }

    var expectations: VRRPExpectations {
        var e = instance.expectations
        e.acceptedChecksumModes = acceptedChecksumModes
        return e
    }
}

/// Why a received packet was dropped, without the details (a counter key).
public enum VRRPDropReason: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case ttlNot255
    case unknownVersion
    case versionMismatch
    case versionFamilyMismatch
    case addressFamilyMismatch
    case invalidType
    case truncated
    case badChecksum
    /// Another virtual router on the link: normal, logged at debug level only.
    case vridMismatch
    case addressCountZero
    case maxAdvertIntervalZero
    case advertIntervalMismatch
    case authHeaderUnsupported
    case authTypeMismatch
    case passwordMismatch
    case addressListMismatch
    /// The IP layer could not be read (see `VRRPInbound.malformed`).
    case malformedIPHeader
    /// `checkUnicastSource` and the source is no unicast peer.
    case notFromUnicastPeer

    public init(_ drop: VRRPDrop) {
        switch drop {
        case .ttlNot255: self = .ttlNot255
        case .unknownVersion: self = .unknownVersion
        case .versionMismatch: self = .versionMismatch
        case .versionFamilyMismatch: self = .versionFamilyMismatch
        case .addressFamilyMismatch: self = .addressFamilyMismatch
        case .invalidType: self = .invalidType
        case .truncated: self = .truncated
        case .badChecksum: self = .badChecksum
        case .vridMismatch: self = .vridMismatch
        case .addressCountZero: self = .addressCountZero
        case .maxAdvertIntervalZero: self = .maxAdvertIntervalZero
        case .advertIntervalMismatch: self = .advertIntervalMismatch
        case .authHeaderUnsupported: self = .authHeaderUnsupported
        case .authTypeMismatch: self = .authTypeMismatch
        case .passwordMismatch: self = .passwordMismatch
        case .addressListMismatch: self = .addressListMismatch
        }
    }

    public var description: String { rawValue }
}

/// A state change of the runner, in the order the transitions were performed.
public struct VRRPStateChange: Sendable, Equatable, Hashable {
    public var from: VRRPState
    public var to: VRRPState
    public var reason: VRRPTransitionReason
    /// Monotonic time (the runner's clock) when the runner performed the transition.
    public var at: VRRPInstant
    /// Wall-clock time of the same moment, since 1970-01-01 UTC.
    public var wallClock: Duration

    public init(from: VRRPState, to: VRRPState, reason: VRRPTransitionReason, at: VRRPInstant, wallClock: Duration) {
        self.from = from
        self.to = to
        self.reason = reason
        self.at = at
        self.wallClock = wallClock
    }
}

/// The last advert that passed every receive check: in Backup, the master's (as last seen).
public struct VRRPAdvertSeen: Sendable, Equatable, Hashable {
    /// The advert's IP source: the sender's primary address.
    public var source: VRRPAddress
    /// The priority it advertised (0: its sender was leaving Master).
    public var priority: UInt8
    /// Its Max Adver Int in centiseconds (v2: whole seconds converted).
    public var advertIntervalCentiseconds: UInt16
    /// When the runner accepted it (the runner's clock).
    public var at: VRRPInstant

    public init(source: VRRPAddress, priority: UInt8, advertIntervalCentiseconds: UInt16, at: VRRPInstant) {
        self.source = source
        self.priority = priority
        self.advertIntervalCentiseconds = advertIntervalCentiseconds
        self.at = at
    }
}

/// Counters of one runner.
public struct VRRPRunnerStatistics: Sendable, Equatable {
    public var advertsSent = 0
    public var advertSendErrors = 0
    /// Adverts that passed every receive check.
    public var advertsReceived = 0
    public var drops: [VRRPDropReason: Int] = [:]
    /// Accepted adverts with a warning (address list differs in v3, two owners).
    public var warnings = 0
    /// Errors reported by the receive socket (reception continues).
    public var receiveErrors = 0
    public var transitions = 0
    public var becameMaster = 0
    public var lastTransition: VRRPStateChange?
    /// The last accepted advert (nil: none since the start).
    public var lastAdvert: VRRPAdvertSeen?
    public var announcementsSent = 0
    public var announcementErrors = 0
    public var addressErrors = 0

    public init() {}

    public var totalDrops: Int { drops.values.reduce(0, +) }
}

/// What `keepstate show vrrp` reads of a runner, in one hop to its event loop.
public struct VRRPRunnerSnapshot: Sendable, Equatable {
    /// A copy of the state machine (its priority, the learned Master_Adver_Interval, timers).
    public var instance: VRRPInstanceState
    public var statistics: VRRPRunnerStatistics
    /// The state of the last transition performed (reported on `stateChanges`); the state
    /// machine's own may be ahead of it for as long as queued actions run.
    public var performedState: VRRPState
    /// The runner's clock at the read.
    public var now: VRRPInstant

    public init(instance: VRRPInstanceState, statistics: VRRPRunnerStatistics, performedState: VRRPState, now: VRRPInstant) {
        self.instance = instance
        self.statistics = statistics
        self.performedState = performedState
        self.now = now
    }
}

/// Logs a key at most once per interval and counts what it held back (pure).
public struct VRRPLogRateLimiter: Sendable {
    public var interval: Duration
    private var lastLogged: [String: VRRPInstant] = [:]
    private var suppressed: [String: Int] = [:]

    public init(interval: Duration) { self.interval = interval }

    /// nil: do not log now. Otherwise log, mentioning the returned number held back since the last time.
    public mutating func admit(_ key: String, now: VRRPInstant) -> Int? {
        if let last = lastLogged[key], now - last < interval {
            suppressed[key, default: 0] += 1
            return nil
        }
        lastLogged[key] = now
        return suppressed.removeValue(forKey: key) ?? 0
    }
}
