public import ConntrackModel

/// Which group of delay settings a conntrack follows.
///
/// The configuration has `ha_delays { tcp { } udp { } icmp { } }`. UDP-Lite follows `udp`,
/// ICMPv6 follows `icmp`; every other protocol (GRE, SCTP, ...) follows `other`, which the
/// configuration does not set (no delay, no grace period) unless the daemon chooses to.
public enum ProtocolClass: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case tcp, udp, icmp, other

    public init(_ proto: IPProtocolNumber) {
        switch proto {
        case .tcp: self = .tcp
        case .udp, .udplite: self = .udp
        case .icmp, .icmpv6: self = .icmp
        default: self = .other
        }
    }

    /// TCP syncs on its state; every other class needs traffic seen after the delay.
    public var needsTrafficAfterDelay: Bool { self != .tcp }

    public var description: String {
        switch self {
        case .tcp: "tcp"
        case .udp: "udp"
        case .icmp: "icmp"
        case .other: "other"
        }
    }
}

/// The delays of one protocol class (`ha_delays { tcp|udp|icmp { ... } }`).
public struct ProtocolPolicy: Sendable, Hashable {
    /// `synchronization DELAY`: a conntrack is synced only once it has been established for at
    /// least this long (`now - establishedAt >= delay`). Zero: synced as soon as it is established.
    public var synchronizationDelay: Duration

    /// `undefined_grace_period G`: after a failover, synced conntracks of this class are kept at
    /// least this long; after it, the ones not used since the switch leave at random instants.
    /// `nil` (unset): each synced conntrack keeps its whole current timeout.
    public var undefinedGracePeriod: Duration?

    /// The width W of the window after the grace period over which unused conntracks are
    /// dropped: drop instants are uniform over `[switch + G, switch + min(R, G + W))`, R being
    /// the conntrack's remaining timeout at the switch. `nil`: W = G (at least one second).
    /// The configuration has no key for it yet.
    public var graceSpread: Duration?

    public init(synchronizationDelay: Duration = .zero, undefinedGracePeriod: Duration? = nil, graceSpread: Duration? = nil) {
        self.synchronizationDelay = max(synchronizationDelay, .zero)
        self.undefinedGracePeriod = undefinedGracePeriod.map { max($0, .zero) }
        self.graceSpread = graceSpread.map { max($0, .zero) }
    }

    /// The same from the configuration's integer seconds (`ProtocolDelays.synchronization` and
    /// `ProtocolDelays.undefinedGracePeriod`).
    public init(synchronizationSeconds: Int, undefinedGracePeriodSeconds: Int?, graceSpreadSeconds: Int? = nil) {
        self.init(
            synchronizationDelay: .seconds(synchronizationSeconds),
            undefinedGracePeriod: undefinedGracePeriodSeconds.map { .seconds($0) },
            graceSpread: graceSpreadSeconds.map { .seconds($0) }
        )
    }

    /// The window width actually used: `graceSpread`, or G, and never below one second.
    public var effectiveGraceSpread: Duration {
        max(graceSpread ?? undefinedGracePeriod ?? .zero, .seconds(1))
    }
}

/// What a backup writes into its kernel for every conntrack it holds, and how often it
/// writes it again.
///
/// A held conntrack must not expire while the node is backup, but the kernel has no "never"
/// timeout. The backup therefore writes `timeout` (default 14 days) with every synced upsert,
/// and writes it again for every held entry once `rearmInterval` (default 1 day) has passed
/// since it was last written:
///
/// ```
///   written            rearm due           written again
///   |<-- rearmInterval -->|                  |
///   |<---------------------- timeout --------------------->| (would expire here)
/// ```
///
/// The default hold is longer than any standard kernel state timeout (TCP established: 5
/// days), and the re-arm keeps the remaining hold above `timeout - rearmInterval` (13 days),
/// well above `threshold` (7 days). A packet reaching a held entry resets it to its state's
/// timeout, which is then below the threshold: an entry above it was written by the hold and
/// not touched since (`threshold`, `showsTraffic`).
public struct HoldPolicy: Sendable, Hashable {
    /// The largest timeout the kernel keeps as written at any HZ up to 1000: it stores at most
    /// `INT_MAX` jiffies (24.8 days at HZ=1000) and clamps larger values.
    public static let maximumTimeout: UInt32 = 2_147_483

    /// Seconds written as the kernel timeout of every held conntrack (2 to `maximumTimeout`).
    public var timeout: UInt32
    /// How long after a write the entry must be written again (at most a quarter of `timeout`,
    /// so that a held entry never falls to `threshold`).
    public var rearmInterval: Duration

    public init(timeout: UInt32 = 1_209_600, rearmInterval: Duration = .seconds(86_400)) {
        let t = min(max(timeout, 2), Self.maximumTimeout)
        self.timeout = t
        self.rearmInterval = min(max(rearmInterval, .seconds(1)), .seconds(Int64(t / 4)))
    }

    /// An entry whose remaining kernel timeout is above this is held and untouched by traffic
    /// since its hold was written: half the hold. With the default (7 days) it lies above every
    /// standard state timeout, so a packet always takes an entry below it. Used where no write
    /// instant is known: adopting held entries after a restart, and the re-arm after a takeover.
    public var threshold: UInt32 { timeout / 2 }

    /// The conntrack a backup writes into its kernel for a received upsert: the same, with the
    /// hold as timeout. (The synced timeout is kept aside, in a `HeldEntry`, for the failover.)
    public func kernelEntry(for c: Conntrack) -> Conntrack {
        var out = c
        out.timeout = timeout
        return out
    }

    /// When an entry whose hold was written at `writtenAt` must be written again.
    public func nextRearm(after writtenAt: PolicyInstant) -> PolicyInstant { writtenAt + rearmInterval }

    /// Whether an entry written at `writtenAt` is due for its re-arm at `now`.
    public func needsRearm(writtenAt: PolicyInstant, now: PolicyInstant) -> Bool { now >= nextRearm(after: writtenAt) }

    /// Whether a held entry read at `at` with `observedTimeout` seconds left shows that a packet
    /// refreshed it after its hold was written at `writtenAt`.
    public func showsTraffic(observedTimeout: UInt32, writtenAt: PolicyInstant, at: PolicyInstant,
                             threshold: Duration = ProbeSettings.defaultRefreshThreshold) -> Bool {
        // A refresh can only lower a held entry's timeout (the state timeouts are below the
        // hold), so the test is the mirror image of `TimeoutInference.refreshed`.
        let expected = Duration.seconds(Int64(timeout)) - (at - writtenAt)
        return .seconds(Int64(observedTimeout)) + threshold <= expected
    }
}

/// How the master infers traffic for the non-TCP synchronization delay (see `DelayTracker`).
public struct ProbeSettings: Sendable, Hashable {
    public static let defaultRefreshThreshold: Duration = .seconds(2)

    /// The first probe after the baseline taken when the delay ends; also the retry interval
    /// of a probe whose answer never came.
    public var firstInterval: Duration
    /// Probes without traffic double the interval up to this.
    public var maximumInterval: Duration
    /// How much larger than the countdown predicts a timeout must read to count as refreshed
    /// (at least 1 s). Timeouts are read truncated to whole seconds, so an untouched entry can
    /// gain up to one second on paper; the second second of the default covers the gap between
    /// the kernel's readings and the instants the caller records for them (see
    /// `TimeoutInference`).
    public var refreshThreshold: Duration

    public init(firstInterval: Duration = .seconds(5), maximumInterval: Duration = .seconds(60),
                refreshThreshold: Duration = ProbeSettings.defaultRefreshThreshold) {
        let threshold = max(refreshThreshold, .seconds(1))
        self.refreshThreshold = threshold
        // A probe sooner than the threshold could never see a refresh.
        self.firstInterval = max(firstInterval, threshold + .seconds(1))
        self.maximumInterval = max(maximumInterval, self.firstInterval)
    }
}

/// How a failover enforces the undefined grace period.
public enum GraceEnforcement: Sendable, Hashable {
    /// Write the random drop delay itself as the kernel timeout at the switch. A packet resets
    /// the kernel timeout to its state's full value, so a used conntrack survives and an unused
    /// one expires at its drop instant by itself: no probe, no delete, no inference. Default.
    case kernelExpiry
    /// Write the whole remaining timeout at the switch and return a `DropCheck` per entry: at
    /// the drop instant the daemon reads the entry and deletes it when its timeout shows no
    /// refresh since the switch. Costs a get (and maybe a delete) per entry, and a packet that
    /// gained less than the refresh threshold is missed.
    case checkAndDelete
}

/// The sync policy of one VRF. A plain value: the daemon maps its configuration to it.
public struct PolicySettings: Sendable, Hashable {
    /// `conntrack_timeouts.tcp_undefined`: the timeout, in seconds, a synced TCP conntrack
    /// carries once it is no longer ESTABLISHED.
    public var tcpUndefined: UInt32
    public var tcp: ProtocolPolicy
    public var udp: ProtocolPolicy
    public var icmp: ProtocolPolicy
    /// Protocols other than TCP, UDP(-Lite) and ICMP(v6).
    public var other: ProtocolPolicy
    public var hold: HoldPolicy
    public var probing: ProbeSettings
    public var graceEnforcement: GraceEnforcement

    public init(tcpUndefined: Int = 10, tcp: ProtocolPolicy = ProtocolPolicy(), udp: ProtocolPolicy = ProtocolPolicy(),
                icmp: ProtocolPolicy = ProtocolPolicy(), other: ProtocolPolicy = ProtocolPolicy(),
                hold: HoldPolicy = HoldPolicy(), probing: ProbeSettings = ProbeSettings(),
                graceEnforcement: GraceEnforcement = .kernelExpiry) {
        self.tcpUndefined = UInt32(clamping: max(tcpUndefined, 1))
        self.tcp = tcp
        self.udp = udp
        self.icmp = icmp
        self.other = other
        self.hold = hold
        self.probing = probing
        self.graceEnforcement = graceEnforcement
    }

    public subscript(_ cls: ProtocolClass) -> ProtocolPolicy {
        get {
            switch cls {
            case .tcp: tcp
            case .udp: udp
            case .icmp: icmp
            case .other: other
            }
        }
        set {
            switch cls {
            case .tcp: tcp = newValue
            case .udp: udp = newValue
            case .icmp: icmp = newValue
            case .other: other = newValue
            }
        }
    }

    public func policy(for proto: IPProtocolNumber) -> ProtocolPolicy { self[ProtocolClass(proto)] }
}
