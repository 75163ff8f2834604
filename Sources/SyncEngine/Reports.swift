/// What a forced synchronization did (`keepstate sync --vrf NAME`, rule 6 of
/// docs/semantics.md).
public struct ForcedSyncReport: Sendable, Codable, Equatable {
    /// Why it did not run or not complete (not master, the dump failed, the engine stopped).
    public var error: String?
    /// Conntracks the dump read.
    public var conntracks: Int
    /// Records sent, each with the activity stamp of the dump.
    public var records: Int
    /// Of those, conntracks that were not synced before (their delay had not run out).
    public var newlySynced: Int
    /// Conntracks left out, by reason (`alg`, `untracked`, `not-established`).
    public var skipped: [String: Int]
    /// Connections that wrote their part of the records, and those that dropped it (down,
    /// queue overflow, a resync replaced the queue): a resync carries those records, without
    /// their stamps.
    public var connectionsSent: Int
    public var connectionsDropped: Int
    /// How long the dump took, and the whole run until the last connection wrote its part.
    public var dumpSeconds: Double
    public var seconds: Double

    public init(error: String? = nil, conntracks: Int = 0, records: Int = 0, newlySynced: Int = 0, skipped: [String: Int] = [:],
                connectionsSent: Int = 0, connectionsDropped: Int = 0, dumpSeconds: Double = 0, seconds: Double = 0) {
        self.error = error
        self.conntracks = conntracks
        self.records = records
        self.newlySynced = newlySynced
        self.skipped = skipped
        self.connectionsSent = connectionsSent
        self.connectionsDropped = connectionsDropped
        self.dumpSeconds = dumpSeconds
        self.seconds = seconds
    }
}

/// One conntrack that is not synced, and why (`keepstate show conntracks --unsynced`).
public struct UnsyncedEntry: Sendable, Codable, Equatable {
    /// The conntrack in the style of `conntrack -L`.
    public var conntrack: String
    /// `untracked`, `alg`, `not-established`, `delay-pending`, `awaiting-traffic` or
    /// `not-observed` (docs/semantics.md, rule 7).
    public var reason: String
    /// `delay-pending`: seconds until its delay ends (0 when it ended and the state check is
    /// under way).
    public var delayEndsIn: Double?
    /// `awaiting-traffic`: seconds since its delay ended.
    public var awaitingFor: Double?

    public init(conntrack: String, reason: String, delayEndsIn: Double? = nil, awaitingFor: Double? = nil) {
        self.conntrack = conntrack
        self.reason = reason
        self.delayEndsIn = delayEndsIn
        self.awaitingFor = awaitingFor
    }
}

/// The conntracks of a VRF's table that are not synced, from one dump.
public struct UnsyncedListing: Sendable, Codable, Equatable {
    /// `master` or `backup`. A backup sends nothing: its listing is empty, with a note.
    public var role: String
    /// Conntracks the dump read, and how many of them are synced.
    public var total: Int
    public var synced: Int
    /// Unsynced conntracks per reason (all of them, not only those listed).
    public var counts: [String: Int]
    /// The first `limit` unsynced conntracks, in the dump's order.
    public var entries: [UnsyncedEntry]
    /// Whether more unsynced conntracks exist than `entries` lists.
    public var truncated: Bool
    public var note: String?

    public init(role: String, total: Int = 0, synced: Int = 0, counts: [String: Int] = [:], entries: [UnsyncedEntry] = [],
                truncated: Bool = false, note: String? = nil) {
        self.role = role
        self.total = total
        self.synced = synced
        self.counts = counts
        self.entries = entries
        self.truncated = truncated
        self.note = note
    }
}

/// The master side's policy state and work, for `show` and tests.
public struct PolicyStatistics: Sendable, Codable, Equatable {
    /// Conntracks currently synced (0 in pass-through mode, which keeps no state).
    public var synced = 0
    /// Conntracks waiting for their delay or for traffic after it.
    public var candidates = 0
    /// Batched gets done for the delays, conntracks read by them, and gets that failed.
    public var probeBatches = 0
    public var probedConntracks = 0
    public var probeErrors = 0
    /// Records the policy produced (live changes, probes, forced synchronizations).
    public var records = 0
    public var lastForcedSync: ForcedSyncReport?

    public init() {}
}

/// What the last failover re-arm did with the policy's rules (docs/semantics.md, rules 3, 5, 6).
public struct FailoverSummary: Sendable, Codable, Equatable {
    /// Entries given a timeout from the synced one (rule 3), from a forced-sync stamp (rule 6),
    /// and those given a random drop instant of the grace period (rule 5; counted in the other
    /// two as well).
    public var fromSwitch = 0
    public var fromStamp = 0
    public var graceDrops = 0
    /// Entries without a synced timeout of their own (adopted from an earlier run), given the
    /// kernel's default for their kind.
    public var fallback = 0

    public init() {}
}
