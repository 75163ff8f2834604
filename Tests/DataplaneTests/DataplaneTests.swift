import ConntrackModel
import Dataplane
import Synchronization
import Testing

/// Collects what a subscriber receives.
final class Recorder: Sendable {
    let batches = Mutex<[[ConntrackUpdate]]>([])
    var all: [ConntrackUpdate] { batches.withLock { $0.flatMap { $0 } } }
    var count: Int { batches.withLock { $0.count } }
    func sink() -> @Sendable ([ConntrackUpdate]) -> Void {
        { batch in self.batches.withLock { $0.append(batch) } }
    }
}

func conntrack(_ i: Int, timeout: UInt32 = 30) -> Conntrack {
    Conntrack(
        family: .ipv4, proto: .udp,
        original: ConntrackTuple(
            source: IPAddressBits(ipv4: 0x0A00_0000 | UInt32(i)), destination: IPAddressBits(ipv4: 0xC000_0201),
            sourcePort: 1000, destinationPort: 53),
        timeout: timeout)
}

func apply(_ updates: [ConntrackUpdate], to model: inout [ConntrackKey: Conntrack]) {
    for u in updates {
        switch u {
        case .upsert(let c): model[c.key] = c
        case .delete(let k): model[k] = nil
        }
    }
}

func dictionary(_ list: [Conntrack]) -> [ConntrackKey: Conntrack] {
    var out: [ConntrackKey: Conntrack] = [:]
    for c in list { out[c.key] = c }
    return out
}

@Suite struct MemoryDataplaneTests {
    @Test func simulateEmitsOnlyRealChangesInOrder() {
        let dp = MemoryDataplane(vrf: "red")
        #expect(dp.vrf == "red")
        let rec = Recorder()
        let sub = dp.subscribe(rec.sink())
        let a = conntrack(1), b = conntrack(2)
        var a2 = a
        a2.timeout = 99
        dp.simulate([.upsert(a), .upsert(b), .upsert(a), .delete(conntrack(3).key), .upsert(a2), .delete(b.key), .delete(b.key)])
        #expect(rec.all == [.upsert(a), .upsert(b), .upsert(a2), .delete(b.key)])
        #expect(rec.count == 1)
        // A batch without a real change is not delivered at all.
        dp.simulate([.upsert(a2), .delete(b.key)])
        #expect(rec.count == 1)
        dp.simulate([])
        #expect(rec.count == 1)
        #expect(dp.count == 1)
        #expect(dp[a.key] == a2)
        #expect(dp[b.key] == nil)
        dp.unsubscribe(sub)
    }

    @Test func applyDoesNotEmit() {
        let dp = MemoryDataplane(vrf: "red")
        let rec = Recorder()
        _ = dp.subscribe(rec.sink())
        dp.apply([.upsert(conntrack(1)), .upsert(conntrack(2)), .delete(conntrack(1).key), .delete(conntrack(7).key)])
        #expect(rec.count == 0)
        #expect(dp.dump() == [conntrack(2)])
        // Traffic on what apply wrote: identical upsert is no change, a delete is.
        dp.simulate([.upsert(conntrack(2)), .delete(conntrack(2).key)])
        #expect(rec.all == [.delete(conntrack(2).key)])
    }

    @Test func everySubscriberGetsEveryBatchUntilUnsubscribed() {
        let dp = MemoryDataplane(vrf: "v")
        let first = Recorder(), second = Recorder()
        let s1 = dp.subscribe(first.sink())
        let s2 = dp.subscribe(second.sink())
        #expect(s1 != s2)
        dp.simulate([.upsert(conntrack(1))])
        dp.unsubscribe(s1)
        dp.simulate([.upsert(conntrack(2))])
        dp.unsubscribe(s2)
        dp.simulate([.upsert(conntrack(3))])
        #expect(first.all == [.upsert(conntrack(1))])
        #expect(second.all == [.upsert(conntrack(1)), .upsert(conntrack(2))])
        #expect(dp.count == 3)
        // Unsubscribing twice or an unknown id is harmless.
        dp.unsubscribe(s1)
        dp.unsubscribe(DataplaneSubscription(id: 999))
        let third = Recorder()
        let s3 = dp.subscribe(third.sink())
        #expect(s3 != s1 && s3 != s2)
        dp.simulate([.delete(conntrack(3).key)])
        #expect(third.all == [.delete(conntrack(3).key)])
    }

    @Test(arguments: [1, 2, 4, 7, 64])
    func snapshotsPartitionTheTable(shares: Int) {
        let dp = MemoryDataplane(vrf: "v")
        var gen = TrafficGenerator(seed: 17, mix: .fill)
        dp.simulate(gen.next(5_000))
        let dump = dp.dump()
        #expect(dump.count == dp.count)
        var seen: [ConntrackKey: Conntrack] = [:]
        var total = 0
        for share in 0..<shares {
            let part = dp.snapshot(share: share, of: shares)
            total += part.count
            for c in part {
                #expect(c.key.share(of: shares) == share)
                #expect(seen.updateValue(c, forKey: c.key) == nil, "in two shares")
            }
        }
        #expect(total == dump.count)
        #expect(seen == dictionary(dump))
        #expect(dp.snapshot(share: shares, of: shares).isEmpty)
    }
}

@Suite struct TrafficGeneratorTests {
    @Test func deterministicForASeed() {
        var a = TrafficGenerator(seed: 1234, mix: .steady, maximumLive: 500)
        var b = TrafficGenerator(seed: 1234, mix: .steady, maximumLive: 500)
        var c = TrafficGenerator(seed: 1235, mix: .steady, maximumLive: 500)
        let first = a.next(3_000)
        #expect(first == b.next(3_000))
        #expect(first != c.next(3_000))
        #expect(a.liveCount == b.liveCount)
        #expect(TrafficGenerator.conntrack(number: 77) == TrafficGenerator.conntrack(number: 77))
        #expect(TrafficGenerator.conntrack(number: 77) != TrafficGenerator.conntrack(number: 78))
    }

    @Test(arguments: [(TrafficGenerator.Mix.steady, 300), (.fill, 1_000), (TrafficGenerator.Mix(create: 90, update: 5, delete: 5), 50)])
    func liveCountStaysBounded(mix: TrafficGenerator.Mix, maximumLive: Int) {
        var gen = TrafficGenerator(seed: 5, mix: mix, maximumLive: maximumLive)
        var model: [ConntrackKey: Conntrack] = [:]
        for _ in 0..<40 {
            let batch = gen.next(500)
            #expect(batch.count <= 500)
            // Every change is consistent: deletes of live keys, upserts new or changed.
            for u in batch {
                switch u {
                case .upsert(let c):
                    model[c.key] = c
                case .delete(let k):
                    #expect(model.removeValue(forKey: k) != nil)
                }
            }
            #expect(gen.liveCount <= maximumLive)
            #expect(gen.liveCount == model.count)
        }
    }

    @Test func fillCreatesUntilTheLimitThenUpdates() {
        var gen = TrafficGenerator(seed: 9, mix: .fill, maximumLive: 200)
        let first = gen.next(200)
        #expect(first.allSatisfy { if case .upsert = $0 { true } else { false } })
        #expect(gen.liveCount == first.count)
        let more = gen.next(1_000)
        #expect(gen.liveCount == 200)
        #expect(more.allSatisfy { if case .upsert = $0 { true } else { false } })
    }

    @Test func outputAppliedToADictionaryMatchesTheDataplane() {
        let dp = MemoryDataplane(vrf: "v")
        let rec = Recorder()
        _ = dp.subscribe(rec.sink())
        var gen = TrafficGenerator(seed: 2024, mix: .steady, maximumLive: 2_000)
        var model: [ConntrackKey: Conntrack] = [:]
        // What a kernel would report: the changes, without no-op updates (the generator can
        // repeat a TIME_WAIT or draw the same UDP timeout again).
        var changes: [ConntrackUpdate] = []
        for _ in 0..<30 {
            let batch = gen.next(1_000)
            for u in batch {
                switch u {
                case .upsert(let c) where model[c.key] == c: continue
                case .delete(let k) where model[k] == nil: Issue.record("delete of an absent key")
                default: changes.append(u)
                }
                apply([u], to: &model)
            }
            dp.simulate(batch)
        }
        #expect(dictionary(dp.dump()) == model)
        #expect(dp.count == model.count)
        #expect(model.count == gen.liveCount)
        #expect(rec.all == changes)
        #expect(changes.count > 25_000)
        var replay: [ConntrackKey: Conntrack] = [:]
        apply(rec.all, to: &replay)
        #expect(replay == model)
    }

    @Test func populationShape() {
        let tcp = TrafficGenerator.conntrack(number: 0)
        #expect(tcp.proto == .tcp)
        #expect(tcp.isNAT)
        #expect(tcp.isEstablished)
        #expect(tcp.mark == 0x100)
        #expect(tcp.original.source.formatted(.ipv4) == "100.64.0.0")
        #expect(tcp.reply.destination.formatted(.ipv4) == "203.0.113.0")
        let icmp = TrafficGenerator.conntrack(number: 9)
        #expect(icmp.proto == .icmp)
        #expect(icmp.timeout == 30)
        let v6 = TrafficGenerator.conntrack(number: 9, family: .ipv6)
        #expect(v6.proto == .icmpv6)
        #expect(!v6.isNAT)
    }

    @Test func splitMix64KnownValues() {
        // Reference values of SplitMix64 from seed 0 (Vigna's splitmix64.c).
        var rng = SplitMix64(seed: 0)
        #expect(rng.next() == 0xE220_A839_7B1D_CDAF)
        #expect(rng.next() == 0x6E78_9E6A_A1B9_65F4)
        #expect(rng.next() == 0x06C4_5D18_8009_454F)
    }
}
