public import NIOCore
public import SyncPolicy

/// The engine's clock for the policy: `PolicyInstant`s are `NIODeadline`s (the monotonic
/// clock NIO schedules with), in nanoseconds since its origin. One clock for the master's
/// delays and forced synchronizations, the backup's activity stamps and the failover.
public enum PolicyClock {
    public static func now() -> PolicyInstant { instant(.now()) }

    public static func instant(_ d: NIODeadline) -> PolicyInstant {
        PolicyInstant(nanoseconds: Int64(clamping: d.uptimeNanoseconds))
    }

    public static func deadline(_ p: PolicyInstant) -> NIODeadline {
        .uptimeNanoseconds(UInt64(max(p.nanoseconds, 0)))
    }
}
