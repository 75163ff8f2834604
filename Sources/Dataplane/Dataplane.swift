public import ConntrackModel

/// A VRF's conntrack table as the sync engine sees it.
///
/// Two implementations: `MemoryDataplane` (in-process, for tests without root and for
/// benchmarks) and the kernel's table through libnetfilter_conntrack (its own module).
public protocol Dataplane: AnyObject, Sendable {
    /// The VRF this table belongs to.
    var vrf: String { get }

    /// How many conntracks the table holds.
    var count: Int { get }

    /// Every conntrack in the table.
    func dump() throws -> [Conntrack]

    /// Reads just the conntracks `keys` name from the table, now (the sync delay's probes):
    /// their current state and remaining timeout. Keys in neither list went unanswered.
    func get(_ keys: [ConntrackKey]) throws -> DataplaneReading

    /// The conntracks that `ConntrackKey.share(of: count) == share`. Consistent with the change
    /// stream: every change delivered to a subscriber before this call returns is reflected in
    /// the result, and every change not reflected is delivered after.
    func snapshot(share: Int, of count: Int) -> [Conntrack]

    /// Whether the change stream and `snapshot` cover every qualifying conntrack of the table
    /// now. False while only deletions are followed (a holding backup, and a new master until
    /// its re-arm ends), and after the scope widens until the reconciliation that catches up
    /// is done: conntracks made meanwhile are not in the mirror yet. A master resyncs its peer
    /// only when this is true, so that a returning peer's resync carries them.
    var followsWholeTable: Bool { get }

    /// The keys of the whole table as `snapshot(share: 0, of: 1)` has them, without the rest of
    /// each conntrack (a node taking over sorts its table by key first).
    func snapshotKeys() -> [ConntrackKey]

    /// The conntracks of `keys` as `snapshot` has them; keys not in the table are left out.
    func snapshot(keys: [ConntrackKey]) -> [Conntrack]

    /// Registers a sink for the table's changes, delivered in the order they happened, in
    /// batches. The sink runs on the dataplane's own thread and must not block.
    func subscribe(_ sink: @escaping @Sendable ([ConntrackUpdate]) -> Void) -> DataplaneSubscription

    func unsubscribe(_ subscription: DataplaneSubscription)

    /// Writes changes that come from the sync (a failover commit, say). They are not echoed to
    /// subscribers: events caused by Keepstate's own writes are ignored.
    func apply(_ updates: [ConntrackUpdate]) throws

    /// On a backup: writes changes received from the peer so that they cannot expire. Upserts
    /// enter the table with `timeout` (far in the future) in place of their own; `snapshot`
    /// returns them as synced, with their own timeout. TCP entries get the be-liberal flags, so
    /// that mid-stream packets pass after a takeover. Not echoed, like `apply`.
    func hold(_ updates: [ConntrackUpdate], timeout: UInt32) throws

    /// The entries whose remaining timeout is above `threshold`: what a backup held (also one
    /// from before a restart), and that no packet has refreshed since.
    func held(above threshold: UInt32) throws -> [Conntrack]

    /// After a takeover: every entry still held (remaining timeout above `threshold`) gets the
    /// timeout `timeout` returns for it; nil leaves the entry as it is. Only the timeout changes,
    /// so a TCP state reached since the takeover stays. `timeout` is called just before the
    /// entry's write, so that a timeout counted from now is written now.
    func rearm(above threshold: UInt32, timeout: (Conntrack) -> UInt32?) throws -> RearmResult

    /// Why the table cannot be followed right now (its network namespace was deleted, its dumps
    /// fail), nil while it works: what `show state` reports as the VRF's `dataplaneError`.
    var dataplaneError: String? { get }

    /// Whether the table itself is gone from reach (its network namespace deleted or replaced):
    /// a reload opens such a dataplane again. A failed dump alone is not that (the next one may
    /// work), though `dataplaneError` reports it too.
    var tableLost: Bool { get }

    /// `handler` is called (on the dataplane's own thread) each time `dataplaneError` changes,
    /// with its new value: nil when the problem cleared.
    func onProblemChange(_ handler: @escaping @Sendable (String?) -> Void)

    /// Stops what the dataplane runs on its own (a kernel table's event thread); it is not
    /// used afterwards.
    func stop()

    /// Which of the table's changes the dataplane follows as they happen (`.all` at first).
    func setEventScope(_ scope: DataplaneEventScope)
}

/// What a dataplane follows of its table's changes as they happen.
public enum DataplaneEventScope: Sendable, Equatable {
    /// Creations, updates and deletions: a master, whose changes go to the peer.
    case all
    /// Deletions only: a backup that holds its peer's conntracks. Its own writes are what
    /// creates and updates its entries (and they update the mirror directly); following their
    /// echoes would cost as much again. Other changes are found by the periodic reconciliation.
    case deletions
}

extension Dataplane {
    public var dataplaneError: String? { nil }
    public var tableLost: Bool { false }
    public func onProblemChange(_ handler: @escaping @Sendable (String?) -> Void) {}
    public func stop() {}
    public func setEventScope(_ scope: DataplaneEventScope) {}
    public var followsWholeTable: Bool { true }

    public func snapshotKeys() -> [ConntrackKey] { snapshot(share: 0, of: 1).map(\.key) }

    public func snapshot(keys: [ConntrackKey]) -> [Conntrack] {
        guard !keys.isEmpty else { return [] }
        let wanted = ConntrackKeySet(keys)
        return snapshot(share: 0, of: 1).filter { wanted.contains($0.key) }
    }

    /// A fallback for dataplanes without a way to read single entries: a dump, filtered. The
    /// kernel and memory dataplanes read just the keys.
    public func get(_ keys: [ConntrackKey]) throws -> DataplaneReading {
        let wanted = Set(keys)
        var out = DataplaneReading()
        var seen = Set<ConntrackKey>()
        for c in try dump() where wanted.contains(c.key) {
            out.found.append(c)
            seen.insert(c.key)
        }
        out.gone = keys.filter { !seen.contains($0) }
        return out
    }
}

/// What `Dataplane.get` found.
public struct DataplaneReading: Sendable, Equatable {
    /// The conntracks found, in no particular order.
    public var found: [Conntrack]
    /// The keys whose conntrack is gone.
    public var gone: [ConntrackKey]
    public init(found: [Conntrack] = [], gone: [ConntrackKey] = []) {
        self.found = found
        self.gone = gone
    }
}

/// A write error that knows how many entries of a batch the dataplane refused (the others were
/// written).
public protocol DataplaneWriteRejection: Error {
    var rejectedCount: Int { get }
    /// The keys refused, when known (the others of the batch were written).
    var rejectedKeys: [ConntrackKey] { get }
}

/// What `Dataplane.rearm` did.
public struct RearmResult: Sendable, Equatable {
    /// Entries that got their timeout.
    public var rearmed: Int
    /// Entries that were gone by the time of the write.
    public var vanished: Int
    /// Entries left as they were (no timeout given, or refreshed by traffic before the dump).
    public var skipped: Int
    /// Entries whose write the kernel refused: they keep the hold timeout.
    public var refused: Int
    /// errno of the first refusal, 0 if none.
    public var firstError: Int32
    public init(rearmed: Int = 0, vanished: Int = 0, skipped: Int = 0, refused: Int = 0, firstError: Int32 = 0) {
        self.rearmed = rearmed
        self.vanished = vanished
        self.skipped = skipped
        self.refused = refused
        self.firstError = firstError
    }
}

/// A handle for `Dataplane.unsubscribe`.
public struct DataplaneSubscription: Sendable, Hashable {
    public let id: Int
    public init(id: Int) { self.id = id }
}

/// The subscribers of a dataplane's change stream. Lives inside the dataplane's lock, so that
/// delivery happens in table order and `Dataplane.snapshot` is consistent with it.
public struct SubscriberList: Sendable {
    private var sinks: [(id: Int, sink: @Sendable ([ConntrackUpdate]) -> Void)] = []
    private var nextID = 0

    public init() {}

    public mutating func add(_ sink: @escaping @Sendable ([ConntrackUpdate]) -> Void) -> DataplaneSubscription {
        nextID += 1
        sinks.append((nextID, sink))
        return DataplaneSubscription(id: nextID)
    }

    public mutating func remove(_ subscription: DataplaneSubscription) {
        sinks.removeAll { $0.id == subscription.id }
    }

    /// Hands a non-empty batch of changes to every subscriber.
    public func deliver(_ changes: [ConntrackUpdate]) {
        guard !changes.isEmpty else { return }
        for s in sinks { s.sink(changes) }
    }
}

extension ConntrackTable {
    /// The entries of `keys` that the table has, in the order of `keys`.
    public func entries(of keys: [ConntrackKey]) -> [Conntrack] {
        keys.compactMap { self[$0] }
    }

    /// The entries that `ConntrackKey.share(of: count) == share`: one sync connection's part.
    public func entries(inShare share: Int, of count: Int) -> [Conntrack] {
        var out: [Conntrack] = []
        out.reserveCapacity(self.count / max(count, 1) + 16)
        for c in entries where c.key.share(of: count) == share { out.append(c) }
        return out
    }
}
