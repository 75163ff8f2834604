import ConntrackModel
import SyncPolicy
import Testing

/// A kernel conntrack's timer as the kernel keeps it: an expiry instant in nanoseconds, read
/// truncated to whole seconds, reset to the state's full timeout by each packet.
struct KernelTimer {
    var expiresAt: Int64
    let full: Int64

    init(fullSeconds: Int64, lastPacketAt: Int64) {
        full = fullSeconds * 1_000_000_000
        expiresAt = lastPacketAt + full
    }

    mutating func packet(at t: Int64) { expiresAt = t + full }

    func read(at t: Int64) -> UInt32 { UInt32(max(expiresAt - t, 0) / 1_000_000_000) }
}

/// Rule 4's activity inference from two readings of the remaining timeout.
@Suite struct InferenceTests {
    @Test func thresholdBoundary() {
        let earlier = TimeoutObservation(timeout: 100, at: at(10))
        // Countdown exactly: no gain.
        #expect(!TimeoutInference.refreshed(from: earlier, to: TimeoutObservation(timeout: 90, at: at(20))))
        // Gain of exactly the threshold (2 s) counts; a nanosecond less does not.
        #expect(TimeoutInference.refreshed(from: earlier, to: TimeoutObservation(timeout: 92, at: at(20))))
        #expect(!TimeoutInference.refreshed(from: earlier, to: TimeoutObservation(timeout: 92, at: PolicyInstant(nanoseconds: 19_999_999_999))))
        #expect(!TimeoutInference.refreshed(from: earlier, to: TimeoutObservation(timeout: 91, at: at(20))))
        // Readings out of order prove nothing.
        #expect(!TimeoutInference.refreshed(from: earlier, to: TimeoutObservation(timeout: 200, at: at(9))))
        // A custom threshold.
        #expect(TimeoutInference.refreshed(from: earlier, to: TimeoutObservation(timeout: 91, at: at(20)), threshold: .seconds(1)))
    }

    /// An untouched conntrack never reads as refreshed, whatever the sub-second phases of the
    /// kernel's timer and of the two readings, while the two recorded instants together are
    /// off by less than a second from the kernel's readings (here up to 0.45 s each, in the
    /// worst directions).
    @Test func noFalseRefreshWithoutTraffic() {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<20_000 {
            let t0 = Int64.random(in: 0..<10_000_000_000, using: &rng)
            let timer = KernelTimer(fullSeconds: 180, lastPacketAt: t0)
            let t1 = t0 + Int64.random(in: 0..<60_000_000_000, using: &rng)
            let t2 = t1 + Int64.random(in: 0..<100_000_000_000, using: &rng)
            guard timer.expiresAt > t2 else { continue }
            let e1 = Int64.random(in: 0..<450_000_000, using: &rng)
            let e2 = Int64.random(in: 0..<450_000_000, using: &rng)
            // Error in either direction: the first recorded late, the second early, or the reverse.
            let o1 = TimeoutObservation(timeout: timer.read(at: t1), at: PolicyInstant(nanoseconds: t1 - e1))
            let o2 = TimeoutObservation(timeout: timer.read(at: t2), at: PolicyInstant(nanoseconds: t2 + e2))
            #expect(!TimeoutInference.refreshed(from: o1, to: o2))
        }
    }

    /// A packet at least threshold + 1 s (the truncation of the second reading) + the recording
    /// error after the first reading is always seen: here 2 + 1 + 0.9 s.
    @Test func packetAfterThresholdAlwaysSeen() {
        var rng = SplitMix64(seed: 7)
        for _ in 0..<20_000 {
            let t0 = Int64.random(in: 0..<10_000_000_000, using: &rng)
            var timer = KernelTimer(fullSeconds: 30, lastPacketAt: t0)
            let t1 = t0 + Int64.random(in: 0..<29_000_000_000, using: &rng)
            let e1 = Int64.random(in: -450_000_000..<450_000_000, using: &rng)
            let o1 = TimeoutObservation(timeout: timer.read(at: t1), at: PolicyInstant(nanoseconds: t1 + e1))
            let p = t1 + 3_900_000_000 + Int64.random(in: 0..<20_000_000_000, using: &rng)
            timer.packet(at: p)
            let t2 = p + Int64.random(in: 0..<25_000_000_000, using: &rng)
            let e2 = Int64.random(in: -450_000_000..<450_000_000, using: &rng)
            let o2 = TimeoutObservation(timeout: timer.read(at: t2), at: PolicyInstant(nanoseconds: t2 + e2))
            #expect(TimeoutInference.refreshed(from: o1, to: o2))
        }
    }
}
