public import ConntrackModel
public import NIOCore
public import SyncPolicy
public import SyncProtocol
import Synchronization

/// Which share carried an entry and in which resync epoch, and the activity stamp of a forced
/// synchronization (12 bytes).
public struct StoreTag: Sendable, Hashable, BitwiseCopyable {
    public var epoch: UInt32
    /// 0: no stamp. Otherwise tenths of a second since the store's origin, plus one, rounded
    /// up (a later stamp keeps the conntrack longer after a failover: the safe side).
    public var activity: UInt32
    public var share: UInt8

    public init(epoch: UInt32, share: UInt8, activity: UInt32 = 0) {
        self.epoch = epoch
        self.activity = activity
        self.share = share
    }
}

/// The conntracks this node holds for its peer, per VRF: what the peer's master table looked
/// like at the last update, kept without expiring while this node is backup.
///
/// Each entry remembers the share (connection) and epoch (resync) that last carried it. A
/// completed resync of share `s` removes the entries of `s` that its epoch did not carry; entries
/// of shares that no longer exist (the peer now runs fewer connections) go with it.
public final class BackupStore: Sendable {
    private struct State {
        var table = ConntrackTable<StoreTag>()
        var nextEpoch: UInt32 = 1
        /// The epoch currently allowed to write each share (absent or 0: none). A connection
        /// that was replaced keeps its old epoch, so frames it still had buffered are ignored.
        var current: [Int: UInt32] = [:]
        /// The epoch whose RESYNC_END was applied, per share.
        var completed: [Int: UInt32] = [:]
        /// The peer's share count, as its last completed resync gave it (its `event_threads`).
        var peerShares = 0
    }

    private let state = Mutex(State())
    /// Receives every change the store makes (applied updates, swept entries as deletes), in the
    /// store's order: it is called under the store's lock, so it must only queue.
    private let onChange: (@Sendable ([ConntrackUpdate]) -> Void)?
    /// Activity stamps are kept relative to this instant.
    private let origin: NIODeadline

    public init(onChange: (@Sendable ([ConntrackUpdate]) -> Void)? = nil) {
        self.onChange = onChange
        self.origin = .now()
    }

    /// The tag value of a stamp taken `age` before `receivedAt` (0 when there is none, or when
    /// it does not fit: rule 3 then applies, which keeps the conntrack longer).
    private func stamp(ageMilliseconds age: UInt32?, receivedAt: NIODeadline) -> UInt32 {
        guard let age else { return 0 }
        let at = Int64(clamping: receivedAt.uptimeNanoseconds) - Int64(age) * 1_000_000
        let since = max(at - Int64(clamping: origin.uptimeNanoseconds), 0)
        let tenths = (since + 99_999_999) / 100_000_000 + 1
        return tenths < Int64(UInt32.max) ? UInt32(tenths) : 0
    }

    /// The stamp of a tag as an instant of the engine's policy clock (see `PolicyClock`).
    private func instant(ofStamp tag: UInt32) -> PolicyInstant? {
        guard tag != 0 else { return nil }
        let ns = Int64(clamping: origin.uptimeNanoseconds) + Int64(tag - 1) * 100_000_000
        return PolicyInstant(nanoseconds: ns)
    }

    /// Takes in what the dataplane still held from an earlier run (after a daemon restart), in
    /// no epoch: the first completed resync of each share removes what the peer no longer has.
    /// Entries the store already has are left alone. Returns how many were added.
    @discardableResult
    public func adopt(_ conntracks: [Conntrack], shares count: Int) -> Int {
        state.withLock { s in
            var added = 0
            for c in conntracks where s.table[c.key] == nil {
                let tag = StoreTag(epoch: 0, share: UInt8(truncatingIfNeeded: c.key.share(of: max(count, 1))))
                s.table.upsert(c, tag: tag)
                added += 1
            }
            return added
        }
    }

    public var count: Int { state.withLock { $0.table.count } }

    /// A new connection took `share` over: nothing writes the share until its first resync
    /// begins (`beginEpoch`).
    public func claim(share: Int) {
        state.withLock { $0.current[share] = 0 }
    }

    /// A resync of `share` begins: returns its fresh epoch, the only one allowed to write the
    /// share from now on.
    public func beginEpoch(share: Int) -> UInt32 {
        state.withLock { s in
            if s.nextEpoch == 0 { s.nextEpoch = 1 }
            let e = s.nextEpoch
            s.nextEpoch &+= 1
            s.current[share] = e
            return e
        }
    }

    /// Applies a decoded frame's updates, all under one lock acquisition. Returns false (and
    /// applies nothing) when `epoch` no longer owns the share.
    @discardableResult
    public func apply(_ updates: [ConntrackUpdate], epoch: UInt32, share: Int) -> Bool {
        apply(updates.map { ConntrackRecord($0) }, epoch: epoch, share: share)
    }

    /// Applies a decoded frame's records, all under one lock acquisition: each upsert replaces
    /// the entry, its synced timeout and its activity stamp (a record without an age clears
    /// the stamp). Returns false (and applies nothing) when `epoch` no longer owns the share.
    @discardableResult
    public func apply(_ records: [ConntrackRecord], epoch: UInt32, share: Int, receivedAt: NIODeadline = .now()) -> Bool {
        let s8 = UInt8(truncatingIfNeeded: share)
        return state.withLock { s in
            guard epoch != 0, s.current[share] == epoch else { return false }
            // Only real changes go on: a resync that carries what the store already has (but
            // for the timeout, which the dataplane replaces by the hold timeout anyway) costs
            // no dataplane write.
            var changes: [ConntrackUpdate] = []
            for r in records {
                switch r.update {
                case .upsert(let c):
                    let tag = StoreTag(epoch: epoch, share: s8,
                                       activity: stamp(ageMilliseconds: r.activityAgeMilliseconds, receivedAt: receivedAt))
                    let previous = s.table.replace(c, tag: tag)
                    if onChange != nil && !(previous?.sameExceptTimeout(c) ?? false) { changes.append(r.update) }
                case .delete(let k):
                    if s.table.remove(k) != nil && onChange != nil { changes.append(r.update) }
                }
            }
            if !changes.isEmpty { onChange?(changes) }
            return true
        }
    }

    /// What the failover needs of a held conntrack: its synced timeout and activity stamp.
    public func heldEntry(_ key: ConntrackKey) -> HeldEntry? {
        state.withLock { s in
            guard let i = s.table.index(of: key) else { return nil }
            let c = s.table.entries[i]
            return HeldEntry(key: key, timeout: c.timeout, activity: instant(ofStamp: s.table.tags[i].activity))
        }
    }

    /// Every key held.
    public func keys() -> [ConntrackKey] {
        state.withLock { $0.table.entries.map(\.key) }
    }

    /// Removes what share `share` of `count` held that epoch `epoch` did not carry, and what
    /// shares numbered `count` or above held. Returns how many entries went, or nil when
    /// `epoch` no longer owns the share (a replaced connection's late RESYNC_END).
    @discardableResult
    public func sweep(share: Int, of count: Int, keeping epoch: UInt32) -> Int? {
        let s8 = UInt8(truncatingIfNeeded: share)
        let c8 = count > 255 ? 255 : UInt8(count)
        return state.withLock { s in
            guard epoch != 0, s.current[share] == epoch else { return nil }
            var removed: [ConntrackUpdate] = []
            let n = s.table.removeAll { c, tag in
                let stale = (tag.share == s8 || tag.share >= c8) && tag.epoch != epoch
                if stale { removed.append(.delete(c.key)) }
                return stale
            }
            if !removed.isEmpty { onChange?(removed) }
            s.completed[share] = epoch
            s.peerShares = count
            return n
        }
    }

    /// Whether a resync from the peer has begun on some connection since it was claimed: the
    /// peer is a master with a table to give.
    public var resyncBegun: Bool {
        state.withLock { s in s.current.values.contains { $0 != 0 } }
    }

    /// Whether each of the peer's shares (its count, not ours: the two nodes' `event_threads`
    /// may differ) is owned by a connection whose resync completed: the store holds the master's
    /// whole table, as of the resyncs, plus what followed them. False before any resync.
    public var resynced: Bool {
        state.withLock { s in
            s.peerShares > 0 && (0..<s.peerShares).allSatisfy { i in
                let c = s.current[i] ?? 0
                return c != 0 && s.completed[i] == c
            }
        }
    }

    public subscript(key: ConntrackKey) -> Conntrack? {
        state.withLock { $0.table[key] }
    }

    /// Every entry, in no particular order.
    public func dump() -> [Conntrack] {
        state.withLock { Array($0.table.entries) }
    }

    public func removeAll() {
        state.withLock { $0.table.removeAll() }
    }

    /// Bytes of the table's arrays (capacity), for statistics.
    public var allocatedBytes: Int { state.withLock { $0.table.allocatedBytes } }
}
