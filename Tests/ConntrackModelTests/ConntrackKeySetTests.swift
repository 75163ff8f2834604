import ConntrackModel
import Testing

@Suite struct ConntrackKeySetTests {
    func key(_ n: UInt64) -> ConntrackKey {
        ConntrackKey(family: .ipv4, proto: n % 3 == 0 ? .udp : .tcp,
                     original: ConntrackTuple(source: IPAddressBits(ipv4: 0x6440_0000 | UInt32(truncatingIfNeeded: n % 5000)),
                                              destination: IPAddressBits(ipv4: 0xC633_6401), sourcePort: UInt16(truncatingIfNeeded: n),
                                              destinationPort: 443),
                     zone: UInt16(truncatingIfNeeded: n % 2))
    }

    /// A small deterministic generator (SplitMix64), so a failure repeats.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    @Test("inserts, removals and lookups agree with Swift's Set over 200,000 random operations, through growth and probe-run shifts")
    func agreesWithSet() {
        var rng = SplitMix(state: 42)
        var mine = ConntrackKeySet()
        var model = Set<ConntrackKey>()
        for step in 0..<200_000 {
            let k = key(UInt64.random(in: 0..<20_000, using: &rng))
            switch UInt8.random(in: 0..<10, using: &rng) {
            case 0..<5: #expect(mine.insert(k) == model.insert(k).inserted, "step \(step)")
            case 5..<8: #expect(mine.remove(k) == (model.remove(k) != nil), "step \(step)")
            default: #expect(mine.contains(k) == model.contains(k), "step \(step)")
            }
            if step % 50_000 == 0 { #expect(mine.count == model.count) }
        }
        #expect(mine.count == model.count)
        #expect(Set(mine) == model)
        for n in 0..<UInt64(20_000) { #expect(mine.contains(key(n)) == model.contains(key(n))) }
        mine.removeAll()
        #expect(mine.isEmpty && !mine.contains(key(1)))
        var reserved = ConntrackKeySet()
        reserved.reserveCapacity(1000)
        for n in 0..<UInt64(1000) { reserved.insert(key(n)) }
        #expect(reserved.count == Set((0..<UInt64(1000)).map(key)).count)
    }

    @Test("a set built from distinct keys in slot order, and a batch probed in slot order, agree with Swift's Set; the built set then inserts and removes as any other")
    func bulkBuildAndProbe() {
        var rng = SplitMix(state: 7)
        // 70,000: an index of more than 2^16 slots, placed and probed in order of slot regions.
        for size in [0, 1, 17, 5_000, 20_000, 70_000] {
            let range = UInt64(max(40_000, 2 * size))
            let members = Array(Set((0..<size).map { _ in key(UInt64.random(in: 0..<range, using: &rng)) }))
            let model = Set(members)
            var built = ConntrackKeySet(distinct: members)
            #expect(built.count == model.count, "size \(size)")
            #expect(Set(built) == model, "size \(size)")
            // A batch of members and strangers, some repeated, in a random order.
            let probe = (0..<(size + 100)).map { _ in key(UInt64.random(in: 0..<range, using: &rng)) }
            #expect(built.containsEach(probe) == probe.map(model.contains), "size \(size)")
            #expect(built.containsEach([]) == [])
            var after = model
            for _ in 0..<10_000 {
                let k = key(UInt64.random(in: 0..<range, using: &rng))
                if Bool.random(using: &rng) {
                    #expect(built.insert(k) == after.insert(k).inserted)
                } else {
                    #expect(built.remove(k) == (after.remove(k) != nil))
                }
            }
            #expect(Set(built) == after, "size \(size)")
            #expect(built.containsEach(probe) == probe.map(after.contains), "size \(size)")
        }
    }
}
