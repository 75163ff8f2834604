/// A point in time: nanoseconds since an arbitrary origin chosen by the caller
/// (e.g. a monotonic clock). The state machine never reads a clock itself.
public struct VRRPInstant: Sendable, Equatable, Hashable, Comparable, CustomStringConvertible {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    /// `sinceOrigin` converted to whole nanoseconds (sub-nanosecond parts are dropped).
    public init(sinceOrigin: Duration) { self.nanoseconds = Self.nanoseconds(of: sinceOrigin) }

    public static let zero = VRRPInstant(nanoseconds: 0)

    public var sinceOrigin: Duration { .nanoseconds(nanoseconds) }

    static func nanoseconds(of d: Duration) -> Int64 {
        let c = d.components
        return c.seconds &* 1_000_000_000 &+ c.attoseconds / 1_000_000_000
    }

    public static func < (l: VRRPInstant, r: VRRPInstant) -> Bool { l.nanoseconds < r.nanoseconds }
    public static func + (l: VRRPInstant, r: Duration) -> VRRPInstant {
        VRRPInstant(nanoseconds: l.nanoseconds &+ nanoseconds(of: r))
    }
    public static func += (l: inout VRRPInstant, r: Duration) { l = l + r }
    public static func - (l: VRRPInstant, r: VRRPInstant) -> Duration { .nanoseconds(l.nanoseconds &- r.nanoseconds) }

    public var description: String { "\(nanoseconds)ns" }
}
