/// A point on one node's monotonic clock: nanoseconds since an origin the caller chooses (for
/// example the `ContinuousClock` instant at which the daemon started).
///
/// The policy never reads a clock: every operation that depends on time takes the current
/// instant as an argument, so tests drive time by hand and nothing sleeps.
///
/// Instants of two nodes are not comparable (their monotonic clocks have unrelated origins).
/// The only time that crosses from master to backup is the age of a forced-sync activity stamp
/// (`SyncRecord.activityAge(at:)`, `HeldEntry.init(record:activityAge:receivedAt:)`).
public struct PolicyInstant: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    /// `sinceOrigin` in whole nanoseconds (sub-nanosecond parts are dropped).
    public init(sinceOrigin: Duration) { self.nanoseconds = sinceOrigin.policyNanoseconds }

    /// Whole seconds since the origin (convenient in tests and logs).
    public static func seconds(_ s: Int64) -> PolicyInstant { PolicyInstant(nanoseconds: s &* 1_000_000_000) }

    public static let zero = PolicyInstant(nanoseconds: 0)

    public var sinceOrigin: Duration { .nanoseconds(nanoseconds) }

    public static func < (l: PolicyInstant, r: PolicyInstant) -> Bool { l.nanoseconds < r.nanoseconds }

    public static func + (l: PolicyInstant, r: Duration) -> PolicyInstant {
        PolicyInstant(nanoseconds: l.nanoseconds &+ r.policyNanoseconds)
    }

    public static func - (l: PolicyInstant, r: Duration) -> PolicyInstant {
        PolicyInstant(nanoseconds: l.nanoseconds &- r.policyNanoseconds)
    }

    public static func += (l: inout PolicyInstant, r: Duration) { l = l + r }

    public static func - (l: PolicyInstant, r: PolicyInstant) -> Duration { .nanoseconds(l.nanoseconds &- r.nanoseconds) }

    public var description: String { "\(nanoseconds)ns" }
}

extension Duration {
    /// The duration in whole nanoseconds, saturating at `Int64`'s bounds.
    var policyNanoseconds: Int64 {
        let c = components
        let (s, overflow) = c.seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return c.seconds < 0 ? .min : .max }
        let (sum, o2) = s.addingReportingOverflow(c.attoseconds / 1_000_000_000)
        if o2 { return c.seconds < 0 ? .min : .max }
        return sum
    }

    /// Whole seconds, rounded up, for a kernel timeout (at least 1, at most `UInt32.max`).
    var kernelSecondsRoundedUp: UInt32 {
        let ns = policyNanoseconds
        if ns <= 1_000_000_000 { return 1 }
        let s = (ns - 1) / 1_000_000_000 + 1
        return s >= Int64(UInt32.max) ? .max : UInt32(s)
    }
}
