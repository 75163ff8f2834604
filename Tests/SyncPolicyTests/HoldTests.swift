import ConntrackModel
import SyncPolicy
import Testing

/// Rule 1's other half: what the backup writes and when it writes it again.
@Suite struct HoldTests {
    @Test func defaults() {
        let h = HoldPolicy()
        #expect(h.timeout == 1_209_600)
        #expect(h.rearmInterval == .seconds(86_400))
        #expect(h.threshold == 604_800)
        // Above the kernel's longest standard state timeout (TCP established, 5 days), even
        // right before a re-arm.
        #expect(Int64(h.timeout) - 86_400 > 432_000)
        #expect(PolicySettings().hold == h)
    }

    @Test func clamps() {
        #expect(HoldPolicy(timeout: 10_000_000).timeout == HoldPolicy.maximumTimeout)
        #expect(HoldPolicy(timeout: 100, rearmInterval: .seconds(3600)).rearmInterval == .seconds(25))
        #expect(HoldPolicy(timeout: 0).timeout == 2)
        #expect(HoldPolicy(rearmInterval: .zero).rearmInterval == .seconds(1))
    }

    @Test func kernelEntryKeepsEverythingButTheTimeout() {
        let h = HoldPolicy()
        let c = tcp(1, state: .finWait, timeout: 10)
        var expected = c
        expected.timeout = 1_209_600
        #expect(h.kernelEntry(for: c) == expected)
    }

    @Test func rearmSchedule() {
        let h = HoldPolicy()
        let written = at(1_000)
        #expect(h.nextRearm(after: written) == at(1_000 + 86_400))
        #expect(!h.needsRearm(writtenAt: written, now: PolicyInstant(nanoseconds: at(87_400).nanoseconds - 1)))
        #expect(h.needsRearm(writtenAt: written, now: at(87_400)))
    }

    @Test func trafficOnAHeldEntryShows() {
        let h = HoldPolicy()
        let w = at(100)
        var timer = KernelTimer(fullSeconds: Int64(h.timeout), lastPacketAt: at(100).nanoseconds)
        for dt in [0.0, 0.4, 1, 3_600.7, 80_000.2] {
            let t = at(100 + dt)
            #expect(!h.showsTraffic(observedTimeout: timer.read(at: t.nanoseconds), writtenAt: w, at: t), "\(dt)")
        }
        // A packet resets it to its state's timeout (TCP established, 5 days).
        timer = KernelTimer(fullSeconds: 432_000, lastPacketAt: at(5_000).nanoseconds)
        #expect(h.showsTraffic(observedTimeout: timer.read(at: at(5_001).nanoseconds), writtenAt: w, at: at(5_001)))
    }
}
