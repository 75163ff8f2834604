public import ConntrackModel

/// One change the master sends to the backup, as the policy decided it.
///
/// **Versions.** Every record gets the next value of one counter per VRF (`MasterPolicy`), at
/// the moment the policy produces it: live changes, resync records and forced-sync records
/// alike. A backup applies a record only if its version is at least the one it holds for the
/// key (`supersedes(storedVersion:)`), so whichever way two records of one key travel, the
/// one produced later wins. Example, a TCP conntrack leaving ESTABLISHED during a resync:
///
/// ```
///   master:  resync record v41 (ESTABLISHED, 431990 s) ... update v57 (FIN_WAIT, tcp_undefined)
///   backup:  receives v57 first, then v41: v41 < v57, refused; the entry keeps tcp_undefined
/// ```
///
/// For "later wins" to mean "fresher wins", each conntrack handed to the policy must be at
/// least as recent as every change it processed before (calls are serialized per VRF).
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
    public var version: UInt64
    public var reason: Reason
    /// Forced synchronization only: when the carried timeout was read (the master's clock).
    public var activity: PolicyInstant?

    public init(update: ConntrackUpdate, version: UInt64, reason: Reason, activity: PolicyInstant? = nil) {
        self.update = update
        self.version = version
        self.reason = reason
        self.activity = activity
    }

    public var key: ConntrackKey { update.key }

    /// The upserted conntrack, or nil for a delete.
    public var conntrack: Conntrack? {
        if case .upsert(let c) = update { return c }
        return nil
    }

    /// Whether a backup holding `storedVersion` for this key (nil: it holds nothing) applies
    /// this record. Equal versions come from the same production and may be applied again
    /// (a resync re-sending a record must still count as carried).
    public func supersedes(storedVersion: UInt64?) -> Bool {
        guard let stored = storedVersion else { return true }
        return version >= stored
    }

    /// The activity stamp's age when the record is encoded at `now` on the master (never
    /// negative), or nil when the record has none.
    public func activityAge(at now: PolicyInstant) -> Duration? {
        activity.map { max(now - $0, .zero) }
    }
}
