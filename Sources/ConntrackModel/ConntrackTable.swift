/// A compact table of conntracks keyed by `ConntrackKey`, for one VRF.
///
/// Entries sit densely in one array (96 bytes each) with a parallel array of 8-byte tags the
/// owner may use (the backup store keeps the share and resync epoch there). Lookup goes through
/// an open-addressing index of 32-bit slots with linear probing, kept at most half full, and
/// removal swaps the last entry into the hole and shifts the probe run back, so there are no
/// tombstones. A Swift `Dictionary` of the same content costs about twice the memory.
public struct ConntrackTable<Tag: Sendable & BitwiseCopyable>: Sendable {
    public private(set) var entries: ContiguousArray<Conntrack> = []
    public private(set) var tags: ContiguousArray<Tag> = []
    private var index: SlotIndex

    public init(minimumCapacity: Int = 16) {
        index = SlotIndex(minimumCapacity: minimumCapacity)
        entries.reserveCapacity(minimumCapacity)
        tags.reserveCapacity(minimumCapacity)
    }

    public var count: Int { entries.count }
    public var isEmpty: Bool { entries.isEmpty }

    /// The index in `entries` of the conntrack with this key.
    public func index(of key: ConntrackKey) -> Int? {
        findSlot(key).entry
    }

    @inline(__always)
    private func findSlot(_ key: ConntrackKey) -> (slot: Int, entry: Int?) {
        index.find(hash: key.stableHash) { e in
            let c = entries[e]
            return c.original == key.original && c.proto == key.proto && c.family == key.family && c.zone == key.zone
        }
    }

    public subscript(key: ConntrackKey) -> Conntrack? {
        guard let e = index(of: key) else { return nil }
        return entries[e]
    }

    public func tag(of key: ConntrackKey) -> Tag? {
        guard let e = index(of: key) else { return nil }
        return tags[e]
    }

    /// Inserts or replaces. Returns true when the key was new.
    @discardableResult
    public mutating func upsert(_ conntrack: Conntrack, tag: Tag) -> Bool {
        replace(conntrack, tag: tag) == nil
    }

    /// Inserts or replaces with one lookup; returns the entry it replaced (nil: the key was new).
    @discardableResult
    public mutating func replace(_ conntrack: Conntrack, tag: Tag) -> Conntrack? {
        let (slot, existing) = findSlot(conntrack.key)
        if let e = existing {
            let old = entries[e]
            entries[e] = conntrack
            tags[e] = tag
            return old
        }
        index.set(slot, entry: entries.count)
        entries.append(conntrack)
        tags.append(tag)
        if entries.count * 2 > index.capacity { grow() }
        return nil
    }

    /// Replaces the tag of an existing entry. Returns false when the key is absent.
    @discardableResult
    public mutating func setTag(_ tag: Tag, for key: ConntrackKey) -> Bool {
        guard let e = index(of: key) else { return false }
        tags[e] = tag
        return true
    }

    /// Removes the conntrack with this key and returns it.
    @discardableResult
    public mutating func remove(_ key: ConntrackKey) -> Conntrack? {
        let (slot, existing) = findSlot(key)
        guard let e = existing else { return nil }
        let removed = entries[e]
        removeSlot(slot)
        removeEntry(at: e)
        return removed
    }

    /// Removes every entry for which `shouldRemove` returns true; returns how many went.
    @discardableResult
    public mutating func removeAll(where shouldRemove: (Conntrack, Tag) -> Bool) -> Int {
        var removed = 0
        var e = 0
        while e < entries.count {
            if shouldRemove(entries[e], tags[e]) {
                let (slot, _) = findSlot(entries[e].key)
                removeSlot(slot)
                removeEntry(at: e)
                removed += 1
                // The former last entry now sits at e: look at it again.
            } else {
                e += 1
            }
        }
        return removed
    }

    public mutating func removeAll(keepingCapacity: Bool = false) {
        entries.removeAll(keepingCapacity: keepingCapacity)
        tags.removeAll(keepingCapacity: keepingCapacity)
        index.clear(keepingCapacity: keepingCapacity)
    }

    private mutating func removeSlot(_ slot: Int) {
        let entries = self.entries
        index.remove(slot: slot) { entries[$0].key.stableHash }
    }

    /// Removes entry `e` from the dense arrays by moving the last entry into its place.
    private mutating func removeEntry(at e: Int) {
        let last = entries.count - 1
        if e != last {
            let moved = entries[last]
            let (slot, _) = findSlot(moved.key)
            index.set(slot, entry: e)
            entries[e] = moved
            tags[e] = tags[last]
        }
        entries.removeLast()
        tags.removeLast()
    }

    private mutating func grow() {
        let entries = self.entries
        index.rebuild(size: index.capacity * 2, count: entries.count) { entries[$0].key.stableHash }
    }

    /// Bytes the table's three arrays hold (capacity, not count), for statistics.
    public var allocatedBytes: Int {
        entries.capacity * MemoryLayout<Conntrack>.stride
            + tags.capacity * MemoryLayout<Tag>.stride
            + index.allocatedBytes
    }
}
