public import ConntrackModel

/// What a backup remembers of one synced conntrack for the failover: the current timeout the
/// master synced (not the hold it wrote into its kernel) and, after a forced synchronization,
/// when that timeout was read, on this node's clock.
public struct HeldEntry: Sendable, Hashable {
    public var key: ConntrackKey
    /// Seconds: the current timeout carried by the latest record of this key.
    public var timeout: UInt32
    /// The forced-sync activity stamp of the latest record, on this node's clock; nil when the
    /// latest record came from normal operation (a later normal update clears the stamp).
    public var activity: PolicyInstant?

    public init(key: ConntrackKey, timeout: UInt32, activity: PolicyInstant? = nil) {
        self.key = key
        self.timeout = timeout
        self.activity = activity
    }

    /// From a received upsert: `activityAge` is the age the record carried on the wire
    /// (`SyncRecord.activityAge(at:)` at encoding), `receivedAt` this node's clock on arrival.
    /// The transit time is counted as if no time had passed, which errs towards keeping.
    public init(conntrack: Conntrack, activityAge: Duration?, receivedAt: PolicyInstant) {
        self.key = conntrack.key
        self.timeout = conntrack.timeout
        self.activity = activityAge.map { receivedAt - max($0, .zero) }
    }
}

/// A deferred decision of the `checkAndDelete` grace enforcement: at `at`, read the entry and
/// delete it if its timeout shows no refresh since it was written.
public struct DropCheck: Sendable, Hashable {
    public var key: ConntrackKey
    /// When to read the entry.
    public var at: PolicyInstant
    /// What was written at the switch and when. If the write happened noticeably later than
    /// the switch instant, set `written.at` to the write's instant: a late write otherwise
    /// reads as a refresh (which keeps the entry: the safe side).
    public var written: TimeoutObservation

    public init(key: ConntrackKey, at: PolicyInstant, written: TimeoutObservation) {
        self.key = key
        self.at = at
        self.written = written
    }

    /// Whether the entry, read at `now` with `observedTimeout` seconds left, was not used since
    /// the switch and must be deleted. (An entry the get does not find is gone already.)
    public func shouldDelete(observedTimeout: UInt32, at now: PolicyInstant,
                             threshold: Duration = ProbeSettings.defaultRefreshThreshold) -> Bool {
        !TimeoutInference.refreshed(from: written, to: TimeoutObservation(timeout: observedTimeout, at: now),
                                    threshold: threshold)
    }
}

/// The timeout one held conntrack gets when its node becomes master (rules 3, 5 and 6).
///
/// ```
///   S = switch, T = synced timeout, A = forced-sync activity stamp, G = grace period
///
///   rule 3, no stamp:           S|------------- T -------------|  expires unless used
///   rule 6, stamp within T:   A|-----(S-A)-----S|--- T-(S-A) ---|
///   rule 6, stamp lapsed (S-A >= T): as rule 3 (the master kept it past A+T: it was used)
///   rule 5, G < R:              S|---- G ----|~~~ drop window ~~~|     R = remaining above
///                                            uniform drop instant D in [S+G, S+min(R, G+W))
///   rule 5, G >= R or unset:    no effect, as rules 3 and 6
/// ```
public struct ReArm: Sendable, Hashable {
    public var key: ConntrackKey
    /// R: how long the conntrack lives from the switch if unused, before any grace drop.
    public var remaining: Duration
    /// Where R is counted from: the switch (rule 3) or the activity stamp (rule 6).
    public var countedFrom: PolicyInstant
    /// Seconds to write as the kernel timeout at the switch (at least 1).
    public var timeout: UInt32
    /// Rule 5: when the conntrack leaves if unused since the switch; nil when the grace period
    /// does not apply.
    public var dropAt: PolicyInstant?
    /// `checkAndDelete` only: the read the daemon must do at `dropAt`.
    public var dropCheck: DropCheck?
    /// When the kernel entry expires if unused: the drop instant with `kernelExpiry`, otherwise
    /// the switch plus R.
    public var expiresAt: PolicyInstant

    public init(key: ConntrackKey, remaining: Duration, countedFrom: PolicyInstant, timeout: UInt32,
                dropAt: PolicyInstant? = nil, dropCheck: DropCheck? = nil, expiresAt: PolicyInstant) {
        self.key = key
        self.remaining = remaining
        self.countedFrom = countedFrom
        self.timeout = timeout
        self.dropAt = dropAt
        self.dropCheck = dropCheck
        self.expiresAt = expiresAt
    }

    /// The seconds to write when the write happens at `writtenAt` rather than at the switch, so
    /// that the entry still expires at `expiresAt` (rounded up; at least 1). `timeout` is this
    /// at the switch.
    public func timeout(writtenAt: PolicyInstant) -> UInt32 {
        (expiresAt - writtenAt).kernelSecondsRoundedUp
    }
}

/// The failover of one VRF: a `ReArm` for every held conntrack, and the `DropCheck`s in time
/// order when the grace period is enforced by `checkAndDelete`.
///
/// The random source is the caller's (`SplitMix64` with a seed in tests), so a plan repeats.
public struct FailoverPlan: Sendable {
    public let switchAt: PolicyInstant
    public private(set) var reArms: [ReArm]
    /// Sorted by `at`.
    public private(set) var checks: [DropCheck]
    private var nextCheckIndex = 0

    public init(entries: some Sequence<HeldEntry>, switchAt: PolicyInstant, settings: PolicySettings,
                using rng: inout some RandomNumberGenerator) {
        self.switchAt = switchAt
        var reArms: [ReArm] = []
        reArms.reserveCapacity(entries.underestimatedCount)
        var checks: [DropCheck] = []
        for e in entries {
            let r = Self.reArm(e, switchAt: switchAt, settings: settings, using: &rng)
            if let c = r.dropCheck { checks.append(c) }
            reArms.append(r)
        }
        checks.sort { $0.at < $1.at }
        self.reArms = reArms
        self.checks = checks
    }

    /// The re-arm of one held conntrack, for a caller that streams the entries instead.
    public static func reArm(_ e: HeldEntry, switchAt s: PolicyInstant, settings: PolicySettings,
                             using rng: inout some RandomNumberGenerator) -> ReArm {
        let synced = Duration.seconds(Int64(e.timeout))
        var remaining = synced
        var countedFrom = s
        if let a = e.activity {
            // Rule 6: count from the stamp while it is inside its window. Past it, the master
            // held the conntrack longer than an idle one lives, so it was used: rule 3 applies.
            let fromStamp = synced - max(s - a, .zero)
            if fromStamp > .zero {
                remaining = fromStamp
                countedFrom = a
            }
        }
        let policy = settings.policy(for: e.key.proto)
        guard let grace = policy.undefinedGracePeriod, grace < remaining else {
            return ReArm(key: e.key, remaining: remaining, countedFrom: countedFrom, timeout: remaining.kernelSecondsRoundedUp,
                         expiresAt: s + remaining)
        }
        let lo = grace.policyNanoseconds
        let hi = min(remaining, grace + policy.effectiveGraceSpread).policyNanoseconds
        let delay = hi > lo ? Int64.random(in: lo..<hi, using: &rng) : lo
        let dropAt = s + .nanoseconds(delay)
        switch settings.graceEnforcement {
        case .kernelExpiry:
            return ReArm(key: e.key, remaining: remaining, countedFrom: countedFrom,
                         timeout: Duration.nanoseconds(delay).kernelSecondsRoundedUp, dropAt: dropAt, expiresAt: dropAt)
        case .checkAndDelete:
            let written = remaining.kernelSecondsRoundedUp
            return ReArm(key: e.key, remaining: remaining, countedFrom: countedFrom, timeout: written, dropAt: dropAt,
                         dropCheck: DropCheck(key: e.key, at: dropAt, written: TimeoutObservation(timeout: written, at: s)),
                         expiresAt: s + remaining)
        }
    }

    /// When the next check is due (nil: none left).
    public var nextCheck: PolicyInstant? {
        nextCheckIndex < checks.count ? checks[nextCheckIndex].at : nil
    }

    /// The checks due at `now` (at most `limit`), each returned once.
    public mutating func dueChecks(at now: PolicyInstant, limit: Int = .max) -> [DropCheck] {
        var out: [DropCheck] = []
        while nextCheckIndex < checks.count, out.count < limit, checks[nextCheckIndex].at <= now {
            out.append(checks[nextCheckIndex])
            nextCheckIndex += 1
        }
        return out
    }

    /// How many conntracks the grace period may drop.
    public var graceDrops: Int { reArms.count { $0.dropAt != nil } }
}
