public import ConntrackModel

/// Why a conntrack is, or is not, synced to the peer: what `keepstate show conntracks
/// --unsynced` prints for each conntrack.
public enum SyncClassification: Sendable, Hashable, CustomStringConvertible {
    /// Synced: the peer holds it and receives its changes.
    case synced
    /// An untracked conntrack or a template (never in the peer's table).
    case untracked
    /// Created from an ALG helper's expectation (status `EXPECTED`): related to a master
    /// connection whose helper state cannot be recreated on the peer.
    case alg
    /// Not established: TCP outside ESTABLISHED, other protocols without a reply seen.
    case notEstablished
    /// Established, waiting for the protocol's synchronization delay to end at `until`.
    /// (A TCP conntrack whose delay has ended stays here until its state is checked.)
    case delayPending(until: PolicyInstant)
    /// A non-TCP conntrack whose delay ended at `since` and on which no packet has been seen
    /// since then.
    case awaitingTraffic(since: PolicyInstant)
    /// Established but unknown to the policy: no event or dump has shown it yet.
    case notObserved

    public var isSynced: Bool { self == .synced }

    /// A short label for listings.
    public var label: String {
        switch self {
        case .synced: "synced"
        case .untracked: "untracked"
        case .alg: "alg"
        case .notEstablished: "not-established"
        case .delayPending: "delay-pending"
        case .awaitingTraffic: "awaiting-traffic"
        case .notObserved: "not-observed"
        }
    }

    public var description: String {
        switch self {
        case .delayPending(let until): "delay-pending until \(until)"
        case .awaitingTraffic(let since): "awaiting-traffic since \(since)"
        default: label
        }
    }
}

/// The stateless rules: exclusions, establishment, what timeout a record carries.
public enum SyncRules {
    /// Rule 1, the exclusions that no delay or forced synchronization lifts: untracked
    /// conntracks and templates, and conntracks created from an ALG expectation (`EXPECTED`).
    /// `nil` when neither applies.
    public static func exclusion(of c: Conntrack) -> SyncClassification? {
        if c.status.contains(.untracked) || c.status.contains(.template) { return .untracked }
        if c.status.contains(.expected) { return .alg }
        return nil
    }

    /// Rule 1: established in the sense of the sync rules (TCP ESTABLISHED; any other protocol
    /// once a reply was seen, `SEEN_REPLY`, which `ASSURED` implies) and not excluded.
    public static func isEligible(_ c: Conntrack) -> Bool {
        exclusion(of: c) == nil && c.isEstablished
    }

    /// Rules 1 and 2: the timeout a record for a synced conntrack carries. Its current
    /// remaining timeout, except a TCP conntrack outside ESTABLISHED, which carries
    /// `tcpUndefined` (the peer cannot follow TCP's closing states, so it gets one short,
    /// configured lifetime instead).
    public static func carriedTimeout(of c: Conntrack, settings: PolicySettings) -> UInt32 {
        if c.proto == .tcp && c.tcpState != .established { return settings.tcpUndefined }
        return c.timeout
    }
}

/// One reading of a conntrack's remaining timeout, and when it was taken.
public struct TimeoutObservation: Sendable, Hashable {
    /// Seconds left, as the kernel reports them (truncated to whole seconds).
    public var timeout: UInt32
    public var at: PolicyInstant

    public init(timeout: UInt32, at: PolicyInstant) {
        self.timeout = timeout
        self.at = at
    }
}

/// Activity inferred from two readings of the remaining timeout.
///
/// ctnetlink reports no event for a packet that only refreshes a timeout. Between two readings
/// `earlier` and `later` of an untouched conntrack the timeout falls by the time elapsed; a
/// packet resets it to its state's full value, so it then reads larger than the countdown
/// predicts:
///
/// ```
///   timeout
///     |  earlier
///     |   *.                  packet: reset to the full timeout
///     |      `.               |*
///     |         `.            | `.  later: read here, above the countdown line
///     |            `.         |    *
///     |               `.      |
///     |      countdown  `. ...|......  predicted: earlier.timeout - (later.at - earlier.at)
///     +--------------------------------------------------> time
/// ```
///
/// Refreshed when `later.timeout + (later.at - earlier.at) - earlier.timeout >= threshold`.
///
/// Exactness: readings are truncated to whole seconds, so an untouched entry's gain is below
/// 1 s plus the error of the recorded instants (how far `at` is from the kernel's actual read,
/// the two errors combined); the default threshold of 2 s leaves 1 s for that error. A packet
/// at `p` gains at least `p - earlier.at` over the countdown (more if the entry had already
/// run down), and the second reading's truncation may hide 1 s of it: a packet sent at least
/// `threshold + 1 s` (+ the recording error) after `earlier` is always detected, one sent
/// sooner only if the entry had run down enough before it.
public enum TimeoutInference {
    public static func refreshed(from earlier: TimeoutObservation, to later: TimeoutObservation,
                                 threshold: Duration = ProbeSettings.defaultRefreshThreshold) -> Bool {
        guard later.at >= earlier.at else { return false }
        let gain = Duration.seconds(Int64(later.timeout)) + (later.at - earlier.at) - .seconds(Int64(earlier.timeout))
        return gain >= threshold
    }
}
