import ConntrackModel
import Dataplane
import Foundation
import Logging
import NIOPosix
import SyncEngine
import SyncPolicy
import Testing
import TestSupport

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

/// A memory dataplane whose kernel refuses each key's first hold write, and every hold write
/// while `refusing` is set.
final class FlakyDataplane: Dataplane, @unchecked Sendable {
    struct Refused: DataplaneWriteRejection {
        var rejectedKeys: [ConntrackKey]
        var rejectedCount: Int { rejectedKeys.count }
    }
    let inner = MemoryDataplane(vrf: "main")
    private let lock = NSLock()
    private var refusedOnce: Set<ConntrackKey> = []
    private var refusingAll = false
    var refusing: Bool {
        get { lock.withLock { refusingAll } }
        set { lock.withLock { refusingAll = newValue } }
    }
    private var isComplete = true
    /// Whether the mirror covers the whole table (`followsWholeTable`), as a kernel dataplane's
    /// does not while a new master's re-arm runs.
    var complete: Bool {
        get { lock.withLock { isComplete } }
        set { lock.withLock { isComplete = newValue } }
    }
    var followsWholeTable: Bool { complete }
    /// The event scopes the engine asked for, in order.
    private var scopeLog: [DataplaneEventScope] = []
    var scopes: [DataplaneEventScope] { lock.withLock { scopeLog } }
    func setEventScope(_ scope: DataplaneEventScope) { lock.withLock { scopeLog.append(scope) } }
    var vrf: String { inner.vrf }
    var count: Int { inner.count }
    func dump() throws -> [Conntrack] { inner.dump() }
    func snapshot(share: Int, of count: Int) -> [Conntrack] { inner.snapshot(share: share, of: count) }
    func subscribe(_ sink: @escaping @Sendable ([ConntrackUpdate]) -> Void) -> DataplaneSubscription { inner.subscribe(sink) }
    func unsubscribe(_ subscription: DataplaneSubscription) { inner.unsubscribe(subscription) }
    /// Entries written with their own timeout (not held), as after a takeover.
    private(set) var applied = 0
    func apply(_ updates: [ConntrackUpdate]) throws {
        lock.withLock { applied += updates.count }
        inner.apply(updates)
    }
    func held(above threshold: UInt32) throws -> [Conntrack] { inner.held(above: threshold) }
    func rearm(above threshold: UInt32, timeout: (Conntrack) -> UInt32?) throws -> RearmResult {
        inner.rearm(above: threshold, timeout: timeout)
    }
    /// Hold writes tried so far (refused or not).
    var holdCalls: Int { lock.withLock { holdCallCount } }
    private var holdCallCount = 0
    func hold(_ updates: [ConntrackUpdate], timeout: UInt32) throws {
        let refused: [ConntrackKey] = lock.withLock {
            holdCallCount += 1
            if refusingAll { return updates.map(\.key) }
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
    @Test("entries the dataplane refuses are written again; a takeover does not wait for the retries, which then write own timeouts")
    func refusedEntriesAreRetried() async throws {
        let flaky = FlakyDataplane()
        flaky.refusing = true
        let pair = try await Pair.make(connections: 2, logLevel: .critical, dataplane2: flaky)
        pair.dp1.simulate((0..<UInt64(300)).map { .upsert(TrafficGenerator.conntrack(number: $0)) })
        pair.e1.setRole(.master)
        pair.startSending()
        #expect(await eventually { pair.e2.store.count == 300 })
        #expect(await eventually { (pair.e2.holderStatistics?.failedBatches ?? 0) >= 1 })
        // The first retry (1 s after the refusal) is refused too; the next is 2 s after it.
        let firstTries = flaky.holdCalls
        #expect(await eventually(10) { flaky.holdCalls > firstTries })
        // The dataplane refuses every hold write for now, so retries are pending (the next one
        // 2 s away): a takeover returns without waiting for them. Had it waited for one, the
        // retry's hold write would have been tried during the call.
        let triedBefore = flaky.holdCalls
        _ = await pair.e2.prepareTakeover()
        #expect(flaky.holdCalls == triedBefore, "prepareTakeover waited for a retry")
        flaky.refusing = false
        pair.e2.setRole(.master)
        #expect(await eventually(40) { flaky.count == 300 }, "the retries wrote every refused entry")
        // After the takeover the re-arm is over: a retry must not leave a hold timeout behind.
        #expect(flaky.applied == 300, "retries after the takeover were held, never to be re-armed")
        let stats = try #require(pair.e2.holderStatistics)
        #expect(stats.refused == 0 && stats.failedBatches >= 1)
        await pair.shutdown()
    }

    @Test("the event scope follows the role while the engine holds; an engine that does not hold follows the whole table")
    func eventScopes() async throws {
        let holding = FlakyDataplane()
        let pair = try await Pair.make(connections: 1, logLevel: .critical, dataplane2: holding)
        pair.e2.setRole(.backup)
        #expect(holding.scopes.last == .deletions)
        pair.e2.setRole(.master)
        #expect(holding.scopes.last == .all)
        await pair.shutdown()
        // An engine without holding, on a dataplane an earlier engine left at deletions only.
        let plain = FlakyDataplane()
        plain.setEventScope(.deletions)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let engine = SyncEngine(
            settings: Pair.settings(node: "ha2", source: "127.0.0.2", peer: "127.0.0.1", peerName: "ha1", connections: 1),
            tls: try TestPKI.material(TestPKI.ha2), dataplane: plain, group: group, logger: Logger(label: "test"), hold: nil)
        engine.setRole(.backup)
        #expect(plain.scopes == [.deletions, .all])
        await engine.shutdown()
        try await group.shutdownGracefully()
    }

    @Test("a node taking over adopts as synced the held entries still in its table, and judges the rest of the table as new")
    func takeoverAdoptsHeldEntries() async throws {
        let policy = PolicySettings()
        let pair = try await Pair.make(connections: 2, logLevel: .critical, policy1: policy, policy2: policy)
        // Established TCP only: the default policy syncs them at once.
        let tcp = (0..<UInt64(2_000)).filter { $0 % 10 < 7 }.prefix(1_000).map { TrafficGenerator.conntrack(number: $0) }
        pair.dp1.simulate(tcp.map { .upsert($0) })
        pair.e1.setRole(.master)
        pair.startSending()
        #expect(await eventually { pair.e2.store.count == 1_000 && pair.dp2.count == 1_000 })
        // The backup's own table: a held entry gone from it, and a connection of its own that is
        // not established.
        var own = TrafficGenerator.conntrack(number: 50_000)
        own.tcpState = .synSent
        pair.dp2.simulate([.delete(tcp[0].key), .upsert(own)])
        pair.e1.setRole(.backup)
        pair.e2.setRole(.master)
        var listing = await pair.e2.unsynced(limit: 10)
        #expect(await eventually {
            listing = await pair.e2.unsynced(limit: 10)
            return listing.role == "master" && listing.total == 1_000
        }, "\(listing.role) \(listing.total)")
        #expect(listing.synced == 999, "the held entries in the table are synced: \(listing.synced)")
        #expect(listing.counts == ["not-established": 1], "\(listing.counts)")
        #expect(pair.e2.policyStatistics.synced == 999)
        await pair.shutdown()
    }

    @Test("a master resyncs its peer only once its dataplane follows the whole table again; meanwhile `show peer` says what the resync waits for")
    func resyncWaitsForTheWholeTable() async throws {
        let partial = FlakyDataplane()
        partial.complete = false
        let pair = try await Pair.make(connections: 2, logLevel: .critical, dataplane1: partial)
        partial.inner.simulate((0..<UInt64(300)).map { .upsert(TrafficGenerator.conntrack(number: $0)) })
        pair.e1.setRole(.master)
        pair.startSending()
        // Both connections up, heartbeats flowing, every resync held back for the table.
        #expect(await eventually {
            let s = await pair.e1.statistics()
            return s.connections.allSatisfy { $0.connectionStatus == .established && $0.resyncWaiting == "table" }
        })
        let waiting = await pair.e1.statistics()
        #expect(waiting.connections.allSatisfy { $0.resyncs == 0 }, "\(waiting.connections)")
        #expect(pair.e2.store.count == 0)
        partial.complete = true
        #expect(await eventually { pair.e2.store.count == 300 })
        let done = await pair.e1.statistics()
        #expect(done.connections.allSatisfy { $0.resyncs == 1 && $0.resyncWaiting == nil }, "\(done.connections)")
        await pair.shutdown()
    }
}
