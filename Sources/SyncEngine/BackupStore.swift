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
    }

    private let state = Mutex(State())

    public init() {}

    public var count: Int { state.withLock { $0.table.count } }

    /// A fresh epoch number for a resync that begins.
    public func beginEpoch() -> UInt32 {
        state.withLock { s in
            defer { s.nextEpoch &+= 1 }
            return s.nextEpoch
        }
    }

    /// Applies a decoded frame's updates, all under one lock acquisition.
    public func apply(_ updates: [ConntrackUpdate], epoch: UInt32, share: Int) {
        let tag = StoreTag(epoch: epoch, share: UInt8(truncatingIfNeeded: share))
        state.withLock { s in
            for u in updates {
                switch u {
                case .upsert(let c): s.table.upsert(c, tag: tag)
                case .delete(let k): s.table.remove(k)
                }
            }
        }
    }

    /// Removes what share `share` of `count` held that epoch `epoch` did not carry, and what
    /// shares numbered `count` or above held. Returns how many entries went.
    @discardableResult
    public func sweep(share: Int, of count: Int, keeping epoch: UInt32) -> Int {
        let s8 = UInt8(truncatingIfNeeded: share)
        let c8 = count > 255 ? 255 : UInt8(count)
        return state.withLock { s in
            s.table.removeAll { _, tag in (tag.share == s8 || tag.share >= c8) && tag.epoch != epoch }
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
