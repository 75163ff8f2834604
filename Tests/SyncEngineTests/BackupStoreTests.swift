import ConntrackModel
import Dataplane
import Foundation
import SyncEngine
import Testing

@Suite("Backup store ownership")
struct BackupStoreTests {
    /// A connection replaced by a newer one for the same share may still have frames buffered;
    /// none of them may write (its late RESYNC_END would sweep the new connection's entries).
    @Test("a replaced connection's epoch can neither write nor sweep")
    func replacedConnectionCannotWrite() {
        let store = BackupStore()
        let a = TrafficGenerator.conntrack(number: 1)
        let b = TrafficGenerator.conntrack(number: 2)
        let old = store.beginEpoch(share: 0)
        #expect(store.apply([.upsert(a)], epoch: old, share: 0))
        store.claim(share: 0)   // a new connection for share 0
        #expect(!store.apply([.upsert(b), .delete(a.key)], epoch: old, share: 0))
        #expect(store.sweep(share: 0, of: 1, keeping: old) == nil)
        #expect(store.count == 1 && store[a.key] != nil)
        let new = store.beginEpoch(share: 0)
        #expect(!store.apply([.upsert(b)], epoch: old, share: 0))
        #expect(store.apply([.upsert(b)], epoch: new, share: 0))
        #expect(store.sweep(share: 0, of: 1, keeping: new) == 1)
        #expect(store.count == 1 && store[b.key] != nil && store[a.key] == nil)
        // Another share's epoch never writes this share.
        let other = store.beginEpoch(share: 1)
        #expect(!store.apply([.upsert(a)], epoch: other, share: 0))
    }
}

/// A memory dataplane whose kernel refuses each key's first hold write.
final class FlakyDataplane: Dataplane, @unchecked Sendable {
    struct Refused: DataplaneWriteRejection {
        var rejectedKeys: [ConntrackKey]
        var rejectedCount: Int { rejectedKeys.count }
    }
    let inner = MemoryDataplane(vrf: "main")
    private let lock = NSLock()
    private var refusedOnce: Set<ConntrackKey> = []
    var vrf: String { inner.vrf }
    var count: Int { inner.count }
    func dump() throws -> [Conntrack] { inner.dump() }
    func snapshot(share: Int, of count: Int) -> [Conntrack] { inner.snapshot(share: share, of: count) }
    func subscribe(_ sink: @escaping @Sendable ([ConntrackUpdate]) -> Void) -> DataplaneSubscription { inner.subscribe(sink) }
    func unsubscribe(_ subscription: DataplaneSubscription) { inner.unsubscribe(subscription) }
    func apply(_ updates: [ConntrackUpdate]) throws { inner.apply(updates) }
    func held(above threshold: UInt32) throws -> [Conntrack] { inner.held(above: threshold) }
    func rearm(above threshold: UInt32, timeout: (Conntrack) -> UInt32?) throws -> RearmResult {
        inner.rearm(above: threshold, timeout: timeout)
    }
    func hold(_ updates: [ConntrackUpdate], timeout: UInt32) throws {
        let refused: [ConntrackKey] = lock.withLock {
            let fresh = updates.map(\.key).filter { !refusedOnce.contains($0) }
            refusedOnce.formUnion(fresh)
            return fresh
        }
        let refusedSet = Set(refused)
        inner.hold(updates.filter { !refusedSet.contains($0.key) }, timeout: timeout)
        if !refused.isEmpty { throw Refused(rejectedKeys: refused) }
    }
}

@Suite("Holding in the dataplane")
struct HolderTests {
    @Test("entries the dataplane refuses are written again, and a takeover does not wait for the retries")
    func refusedEntriesAreRetried() async throws {
        let flaky = FlakyDataplane()
        let pair = try await Pair.make(connections: 2, logLevel: .critical, dataplane2: flaky)
        pair.dp1.simulate((0..<UInt64(300)).map { .upsert(TrafficGenerator.conntrack(number: $0)) })
        pair.e1.setRole(.master)
        pair.startSending()
        #expect(await eventually { pair.e2.store.count == 300 })
        // Every key was refused once: a takeover right now returns without waiting for them.
        _ = await pair.e2.prepareTakeover()
        #expect(await eventually(10) { flaky.count == 300 }, "the retries wrote every refused entry")
        let stats = try #require(pair.e2.holderStatistics)
        #expect(stats.refused == 0 && stats.failedBatches >= 1)
        await pair.shutdown()
    }
}
