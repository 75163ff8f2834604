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
    private var slots: ContiguousArray<UInt32>   // 0 = empty, else entry index + 1
    private var mask: Int

    public init(minimumCapacity: Int = 16) {
        var size = 16
        while size < minimumCapacity * 2 { size <<= 1 }
        slots = ContiguousArray(repeating: 0, count: size)
        mask = size - 1
        entries.reserveCapacity(minimumCapacity)
        tags.reserveCapacity(minimumCapacity)
    }

    public var count: Int { entries.count }
    public var isEmpty: Bool { entries.isEmpty }

    @inline(__always)
    private func home(_ key: ConntrackKey) -> Int {
        Int(truncatingIfNeeded: key.stableHash) & mask
    }

    /// The index in `entries` of the conntrack with this key.
    public func index(of key: ConntrackKey) -> Int? {
        findSlot(key).entry
    }

    private func findSlot(_ key: ConntrackKey) -> (slot: Int, entry: Int?) {
        var i = Int(truncatingIfNeeded: key.stableHash) & mask
        while true {
            let s = slots[i]
            if s == 0 { return (i, nil) }
            let e = Int(s &- 1)
            let c = entries[e]
            if c.original == key.original && c.proto == key.proto && c.family == key.family && c.zone == key.zone {
                return (i, e)
            }
            i = (i &+ 1) & mask
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
        slots[slot] = UInt32(entries.count + 1)
        entries.append(conntrack)
        tags.append(tag)
        if entries.count * 2 > slots.count { grow() }
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
        if keepingCapacity {
            for i in slots.indices { slots[i] = 0 }
        } else {
            slots = ContiguousArray(repeating: 0, count: 16)
            mask = 15
        }
    }

    /// Empties the slot at `slot` and shifts later members of its probe run back (linear
    /// probing deletion without tombstones).
    private mutating func removeSlot(_ slot: Int) {
        var hole = slot
        var i = (slot + 1) & mask
        while slots[i] != 0 {
            let h = home(entries[Int(slots[i] - 1)].key)
            // Move slots[i] into the hole when its home is not in (hole, i] cyclically.
            let inRange = hole <= i ? (h > hole && h <= i) : (h > hole || h <= i)
            if !inRange {
                slots[hole] = slots[i]
                hole = i
            }
            i = (i + 1) & mask
        }
        slots[hole] = 0
    }

    /// Removes entry `e` from the dense arrays by moving the last entry into its place.
    private mutating func removeEntry(at e: Int) {
        let last = entries.count - 1
        if e != last {
            let moved = entries[last]
            let (slot, _) = findSlot(moved.key)
            slots[slot] = UInt32(e + 1)
            entries[e] = moved
            tags[e] = tags[last]
        }
        entries.removeLast()
        tags.removeLast()
    }

    private mutating func grow() {
        let size = slots.count * 2
        slots = ContiguousArray(repeating: 0, count: size)
        mask = size - 1
        for e in entries.indices {
            var i = home(entries[e].key)
            while slots[i] != 0 { i = (i + 1) & mask }
            slots[i] = UInt32(e + 1)
        }
    }

    /// Bytes the table's three arrays hold (capacity, not count), for statistics.
    public var allocatedBytes: Int {
        entries.capacity * MemoryLayout<Conntrack>.stride
            + tags.capacity * MemoryLayout<Tag>.stride
            + slots.capacity * MemoryLayout<UInt32>.stride
    }
}
