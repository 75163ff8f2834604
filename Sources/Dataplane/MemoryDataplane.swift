public import ConntrackModel
import Synchronization

/// An in-process conntrack table behind the `Dataplane` interface.
///
/// `simulate` plays traffic (the changes a kernel would report, delivered to subscribers);
/// `apply` plays Keepstate's own writes (not echoed). One mutex serialises both with snapshots,
/// which gives the ordering guarantee `Dataplane.snapshot` promises.
public final class MemoryDataplane: Dataplane {
    public let vrf: String

    private struct State {
        var table = ConntrackTable<UInt8>()
        var subscribers = SubscriberList()
    }

    private let state = Mutex(State())

    public init(vrf: String) {
        self.vrf = vrf
    }

    public var count: Int { state.withLock { $0.table.count } }

    public func dump() -> [Conntrack] {
        state.withLock { Array($0.table.entries) }
    }

    public func snapshot(share: Int, of count: Int) -> [Conntrack] {
        state.withLock { $0.table.entries(inShare: share, of: count) }
    }

    public func snapshotKeys() -> [ConntrackKey] {
        state.withLock { $0.table.entries.map(\.key) }
    }

    public func snapshot(keys: [ConntrackKey]) -> [Conntrack] {
        state.withLock { $0.table.entries(of: keys) }
    }

    public func get(_ keys: [ConntrackKey]) -> DataplaneReading {
        state.withLock { s in
            var out = DataplaneReading()
            for k in keys {
                if let c = s.table[k] { out.found.append(c) } else { out.gone.append(k) }
            }
            return out
        }
    }

    public subscript(key: ConntrackKey) -> Conntrack? {
        state.withLock { $0.table[key] }
    }

    public func subscribe(_ sink: @escaping @Sendable ([ConntrackUpdate]) -> Void) -> DataplaneSubscription {
        state.withLock { $0.subscribers.add(sink) }
    }

    public func unsubscribe(_ subscription: DataplaneSubscription) {
        state.withLock { $0.subscribers.remove(subscription) }
    }

    public func apply(_ updates: [ConntrackUpdate]) {
        state.withLock { s in
            for u in updates { Self.write(u, into: &s.table) }
        }
    }

    /// Memory entries never expire: holding is applying (with their own timeouts).
    public func hold(_ updates: [ConntrackUpdate], timeout: UInt32) {
        apply(updates)
    }

    public func held(above threshold: UInt32) -> [Conntrack] {
        state.withLock { s in s.table.entries.filter { $0.timeout > threshold } }
    }

    public func rearm(above threshold: UInt32, timeout: (Conntrack) -> UInt32?) -> RearmResult {
        state.withLock { s in
            var result = RearmResult()
            for c in Array(s.table.entries) {
                guard c.timeout > threshold else { result.skipped += 1; continue }
                guard let t = timeout(c) else { result.skipped += 1; continue }
                var r = c
                r.timeout = t
                s.table.upsert(r, tag: 0)
                result.rearmed += 1
            }
            return result
        }
    }

    /// Traffic: applies the changes and reports them to subscribers, as kernel events would.
    /// A delete of an absent key or an upsert identical to what the table holds is not reported.
    public func simulate(_ updates: [ConntrackUpdate]) {
        state.withLock { s in
            var events: [ConntrackUpdate] = []
            events.reserveCapacity(updates.count)
            for u in updates {
                switch u {
                case .upsert(let c):
                    if s.table[c.key] != c {
                        s.table.upsert(c, tag: 0)
                        events.append(u)
                    }
                case .delete(let k):
                    if s.table.remove(k) != nil { events.append(u) }
                }
            }
            s.subscribers.deliver(events)
        }
    }

    private static func write(_ u: ConntrackUpdate, into table: inout ConntrackTable<UInt8>) {
        switch u {
        case .upsert(let c): table.upsert(c, tag: 0)
        case .delete(let k): table.remove(k)
        }
    }
}
