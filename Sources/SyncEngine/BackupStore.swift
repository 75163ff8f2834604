public import ConntrackModel
import Synchronization

/// Which share carried an entry and in which resync epoch.
public struct StoreTag: Sendable, Hashable, BitwiseCopyable {
    public var epoch: UInt32
    public var share: UInt8
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
    }

    private let state = Mutex(State())
    /// Receives every change the store makes (applied updates, swept entries as deletes), in the
    /// store's order: it is called under the store's lock, so it must only queue.
    private let onChange: (@Sendable ([ConntrackUpdate]) -> Void)?

    public init(onChange: (@Sendable ([ConntrackUpdate]) -> Void)? = nil) {
        self.onChange = onChange
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
        let tag = StoreTag(epoch: epoch, share: UInt8(truncatingIfNeeded: share))
        return state.withLock { s in
            guard epoch != 0, s.current[share] == epoch else { return false }
            guard let onChange else {
                for u in updates {
                    switch u {
                    case .upsert(let c): s.table.upsert(c, tag: tag)
                    case .delete(let k): s.table.remove(k)
                    }
                }
                return true
            }
            // Only real changes go on: a resync that carries what the store already has (but
            // for the timeout, which the dataplane replaces by the hold timeout anyway) costs
            // no dataplane write.
            var changes: [ConntrackUpdate] = []
            for u in updates {
                switch u {
                case .upsert(let c):
                    let unchanged = s.table.replace(c, tag: tag)?.sameExceptTimeout(c) ?? false
                    if !unchanged { changes.append(u) }
                case .delete(let k):
                    if s.table.remove(k) != nil { changes.append(u) }
                }
            }
            if !changes.isEmpty { onChange(changes) }
            return true
        }
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
            return n
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
