import ConntrackModel
import Dataplane
import SyncEngine
import SyncPolicy
import Testing
import TestSupport

@Suite("Churn with connection failures", .serialized)
struct ChurnTests {
    /// The acceptance run: 1,000,000 operations on 100,000 live conntracks while 50
    /// randomly chosen sync connections are killed mid-stream; the backup must end up with
    /// exactly the master's table.
    @Test("1M operations, 100k live conntracks, 50 killed connections: tables equal")
    func churnWithKills() async throws {
        let pair = try await Pair.make(connections: 4)
        let live = 100_000
        var gen = TrafficGenerator(seed: 42, mix: .fill, maximumLive: live)
        while pair.dp1.count < live { pair.dp1.simulate(gen.next(min(10_000, live - pair.dp1.count))) }
        pair.e1.setRole(.master)
        pair.startSending()
        #expect(await eventually(60) { pair.e2.store.count == live })

        gen.mix = .steady
        var rng = SplitMix64(seed: 7)
        let operations = 1_000_000
        let batch = 500
        let batches = operations / batch
        var killAt = Set<Int>()
        while killAt.count < 50 { killAt.insert(Int(rng.next() % UInt64(batches))) }
        var killed = 0
        for b in 0..<batches {
            pair.dp1.simulate(gen.next(batch))
            if killAt.contains(b) {
                pair.e1.killConnection(Int(rng.next() % 4))
                killed += 1
                await Task.yield()
            }
        }
        #expect(killed == 50)

        let converged = await eventually(120) {
            guard await pair.e1.isIdle(), pair.e2.store.count == pair.dp1.count else { return false }
            return asDictionary(pair.e2.store.dump()) == asDictionary(pair.dp1.dump())
        }
        #expect(converged, "backup \(pair.e2.store.count) entries, master \(pair.dp1.count)")
        // Every field must match, not just the keys: compare a few explicitly too.
        let master = asDictionary(pair.dp1.dump())
        for (key, c) in asDictionary(pair.e2.store.dump()).prefix(1000) {
            #expect(master[key]?.reply == c.reply)
            #expect(master[key]?.timeout == c.timeout)
            #expect(master[key]?.tcpState == c.tcpState)
        }
        let stats = await pair.e1.statistics()
        // A kill of an established connection forces a resync of its share; a kill that lands
        // while that connection is still reconnecting merges with the previous one.
        #expect(stats.connections.map(\.resyncs).reduce(0, +) >= 4 + 10)
        let local = await pair.e2.statistics().localNode
        #expect(local.receiveError == 0)
        await pair.shutdown()
    }

    @Test("a send queue overflow turns into a resync, not a loss")
    func overflowResyncs() async throws {
        // A queue of 1,024 records cannot hold the bursts below.
        let pair = try await Pair.make(connections: 2, queueLimit: 1024)
        var gen = TrafficGenerator(seed: 9, mix: .fill, maximumLive: 20_000)
        pair.dp1.simulate(gen.next(5000))
        pair.e1.setRole(.master)
        pair.startSending()
        #expect(await eventually { pair.e2.store.count == pair.dp1.count })
        gen.mix = .steady
        for _ in 0..<20 { pair.dp1.simulate(gen.next(5000)) }
        let converged = await eventually(60) {
            guard await pair.e1.isIdle() else { return false }
            return asDictionary(pair.e2.store.dump()) == asDictionary(pair.dp1.dump())
        }
        #expect(converged)
        let stats = await pair.e1.statistics()
        #expect(stats.connections.map(\.queueOverflows).reduce(0, +) > 0)
        #expect(stats.connections.map(\.buildError).reduce(0, +) > 0)
        await pair.shutdown()
    }

    @Test("stale entries are swept when a resync completes")
    func resyncSweepsStale() async throws {
        let pair = try await Pair.make(connections: 2)
        var gen = TrafficGenerator(seed: 11, mix: .fill)
        pair.dp1.simulate(gen.next(2000))
        pair.e1.setRole(.master)
        pair.startSending()
        // Both shares' first resyncs complete (a sweep still to come would take the ghosts below).
        #expect(await eventually {
            let completed = await pair.e2.statistics().localNode.resyncsCompleted
            return pair.e2.store.count == 2000 && completed >= 2
        })
        // Entries the master never had (left over from an earlier life) must go at the next resync.
        let ghosts = (0..<300).map { TrafficGenerator.conntrack(number: 900_000_000 + UInt64($0)) }
        // (Written as a share 7 that no longer exists, and as a stale share 1 entry.)
        let e7 = pair.e2.store.beginEpoch(share: 7)
        #expect(pair.e2.store.apply(ghosts.map { .upsert($0) }, epoch: e7, share: 7))
        #expect(!pair.e2.store.apply(ghosts.map { .upsert($0) }, epoch: e7, share: 1), "an epoch that does not own share 1 wrote it")
        #expect(pair.e2.store.count == 2300)
        pair.e1.resyncAll()
        #expect(await eventually { pair.e2.store.count == 2000 })
        #expect(asDictionary(pair.e2.store.dump()) == asDictionary(pair.dp1.dump()))
        await pair.shutdown()
    }
}

@Suite("Churn through the sync policy", .serialized)
struct PolicyChurnTests {
    /// The policy's view of a generator's table: what the backup must hold. TCP conntracks
    /// never established are not synced; the generator's closing ones were established before,
    /// so they are synced with tcp_undefined (rule 2).
    static func policyView(_ table: [Conntrack], tcpUndefined: UInt32) -> [ConntrackKey: Conntrack] {
        var out: [ConntrackKey: Conntrack] = [:]
        for var c in table {
            if c.proto == .tcp {
                switch c.tcpState {
                case .established: break
                case .finWait, .timeWait: c.timeout = tcpUndefined
                default: continue
                }
            }
            out[c.key] = c
        }
        return out
    }

    @Test("kills and queue overflows with the policy between the table and the connections: the backup converges to the policy's view")
    func churnThroughThePolicy() async throws {
        let policy = PolicySettings(tcpUndefined: 17)
        let pair = try await Pair.make(connections: 4, queueLimit: 4096, policy1: policy, policy2: policy,
                                       vrf: "policy-churn")
        var gen = TrafficGenerator(seed: 77, mix: .fill, maximumLive: 20_000)
        pair.dp1.simulate(gen.next(20_000))
        pair.e1.setRole(.master)
        pair.startSending()
        // Only established conntracks: the fill creates TCP ones in SYN_SENT.
        let view0 = Self.policyView(pair.dp1.dump(), tcpUndefined: 17)
        #expect(view0.count < pair.dp1.count)
        #expect(await eventually(30) { pair.e2.store.count == view0.count })

        gen.mix = .steady
        var rng = SplitMix64(seed: 5)
        for b in 0..<400 {
            pair.dp1.simulate(gen.next(500))
            if b % 40 == 39 {
                pair.e1.killConnection(Int(rng.next() % 4))
                await Task.yield()
            }
        }
        let converged = await eventually(60) {
            guard await pair.e1.isIdle() else { return false }
            return asDictionary(pair.e2.store.dump()) == Self.policyView(pair.dp1.dump(), tcpUndefined: 17)
        }
        #expect(converged, "backup \(pair.e2.store.count), policy view \(Self.policyView(pair.dp1.dump(), tcpUndefined: 17).count)")
        let stats = pair.e1.policyStatistics
        #expect(stats.synced == Self.policyView(pair.dp1.dump(), tcpUndefined: 17).count)
        #expect(stats.candidates == 0)
        #expect(await pair.e2.statistics().localNode.receiveError == 0)
        await pair.shutdown()
    }
}
