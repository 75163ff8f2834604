public import ConntrackModel

/// One change the master sends to the backup, as the policy decided it.
///
/// **Order.** Records carry no version: every record of one conntrack travels on the one sync
/// connection its key hashes to, and the daemon hands the policy's records to that connection
/// in the order the policy produced them (one serial executor per VRF). A resync's records are
/// taken from a snapshot that already reflects every record handed over before it, and every
/// record produced after it is sent after the resync's records. So the last record of a key the
/// backup receives is always the one produced last (see docs/semantics.md, "Ordering").
///
/// For "produced last" to mean "freshest", each conntrack handed to the policy must be at least
/// as recent as every change it processed before (calls are serialized per VRF).
///
/// **Activity.** `activity` is set only by a forced synchronization: the instant, on the
/// master's clock, at which `conntrack.timeout` was read. On the wire it travels as an age
/// (`activityAge(at:)`), which the backup turns into an instant of its own clock.
public struct SyncRecord: Sendable, Hashable {
    /// Why the record was produced (statistics and logs; the backup treats all alike).
    public enum Reason: UInt8, Sendable, Hashable, CustomStringConvertible {
        /// First sync of the conntrack (delay reached, traffic seen after it, or no delay).
        case established
        /// A synced conntrack changed (state, status, mark, NAT).
        case changed
        /// A synced TCP conntrack is no longer ESTABLISHED: carries `tcpUndefined`.
        case leftEstablished
        /// Part of a full resync of a connection's share.
        case resync
        /// Part of a forced synchronization: carries `activity`.
        case forced
        /// The conntrack is gone on the master.
        case destroyed

        public var description: String {
            switch self {
            case .established: "established"
            case .changed: "changed"
            case .leftEstablished: "left-established"
            case .resync: "resync"
            case .forced: "forced"
            case .destroyed: "destroyed"
            }
        }
    }

    /// The change, in the form the wire carries (`ConntrackUpdate`). For an upsert, the
    /// conntrack's `timeout` is the one the peer must remember as current (rules 1 and 2).
    public var update: ConntrackUpdate
    public var reason: Reason
    /// Forced synchronization only: when the carried timeout was read (the master's clock).
    public var activity: PolicyInstant?

    public init(update: ConntrackUpdate, reason: Reason, activity: PolicyInstant? = nil) {
        self.update = update
        self.reason = reason
        self.activity = activity
    }

    public var key: ConntrackKey { update.key }

    /// The upserted conntrack, or nil for a delete.
    public var conntrack: Conntrack? {
        if case .upsert(let c) = update { return c }
        return nil
    }

    /// The activity stamp's age when the record is encoded at `now` on the master (never
    /// negative), or nil when the record has none.
    public func activityAge(at now: PolicyInstant) -> Duration? {
        activity.map { max(now - $0, .zero) }
    }
}
