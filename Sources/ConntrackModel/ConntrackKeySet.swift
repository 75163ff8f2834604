/// A set of conntrack keys for the master's sync policy, which asks it several times per kernel
/// event and fills it with the whole table when a node takes over.
///
/// Keys sit densely in one array; lookup goes through an open-addressing index of 32-bit slots
/// with linear probing, at most half full, and removal shifts the probe run back (no
/// tombstones), as in `ConntrackTable`. The slot of a key comes from its `stableHash` mixed
/// with a seed drawn per set: one multiply and shift instead of `Hasher`'s SipHash rounds, and
/// conntracks an outsider shapes (their ports and addresses) cannot be aimed at one probe run
/// without knowing the seed.
public struct ConntrackKeySet: Sendable, Sequence {
    public private(set) var keys: ContiguousArray<ConntrackKey> = []
    private var slots: ContiguousArray<UInt32>   // 0 = empty, else key index + 1
    private var mask: Int
    private let seed: UInt64

    public init(minimumCapacity: Int = 16) {
        var size = 16
        while size < minimumCapacity * 2 { size <<= 1 }
        slots = ContiguousArray(repeating: 0, count: size)
        mask = size - 1
        keys.reserveCapacity(minimumCapacity)
        var random = SystemRandomNumberGenerator()
        seed = random.next() | 1
    }

    public init(_ keys: some Sequence<ConntrackKey>) {
        self.init(minimumCapacity: keys.underestimatedCount)
        for k in keys { insert(k) }
    }

    public var count: Int { keys.count }
    public var isEmpty: Bool { keys.isEmpty }

    public func makeIterator() -> ContiguousArray<ConntrackKey>.Iterator { keys.makeIterator() }

    @inline(__always)
    private func home(_ key: ConntrackKey) -> Int {
        var h = key.stableHash ^ seed
        h &*= 0xD6E8_FEB8_6659_FD93
        h ^= h >> 32
        return Int(truncatingIfNeeded: h) & mask
    }

    private func findSlot(_ key: ConntrackKey) -> (slot: Int, index: Int?) {
        var i = home(key)
        while true {
            let s = slots[i]
            if s == 0 { return (i, nil) }
            let e = Int(s &- 1)
            if keys[e] == key { return (i, e) }
            i = (i &+ 1) & mask
        }
    }

    public func contains(_ key: ConntrackKey) -> Bool { findSlot(key).index != nil }

    /// Inserts `key`; false when it was there already.
    @discardableResult
    public mutating func insert(_ key: ConntrackKey) -> Bool {
        let (slot, existing) = findSlot(key)
        if existing != nil { return false }
        slots[slot] = UInt32(keys.count + 1)
        keys.append(key)
        if keys.count * 2 > slots.count { grow(to: slots.count * 2) }
        return true
    }

    /// Removes `key`; false when it was not there.
    @discardableResult
    public mutating func remove(_ key: ConntrackKey) -> Bool {
        let (slot, existing) = findSlot(key)
        guard let e = existing else { return false }
        // The slot first (its probe run shifted back), then the dense array: the last key
        // moves into the hole and its slot is pointed there.
        var hole = slot
        var i = (slot + 1) & mask
        while slots[i] != 0 {
            let h = home(keys[Int(slots[i] - 1)])
            let inRange = hole <= i ? (h > hole && h <= i) : (h > hole || h <= i)
            if !inRange {
                slots[hole] = slots[i]
                hole = i
            }
            i = (i + 1) & mask
        }
        slots[hole] = 0
        let last = keys.count - 1
        if e != last {
            let moved = keys[last]
            let (movedSlot, _) = findSlot(moved)
            slots[movedSlot] = UInt32(e + 1)
            keys[e] = moved
        }
        keys.removeLast()
        return true
    }

    public mutating func removeAll() {
        keys.removeAll()
        slots = ContiguousArray(repeating: 0, count: 16)
        mask = 15
    }

    /// Room for `count` keys without growing.
    public mutating func reserveCapacity(_ count: Int) {
        keys.reserveCapacity(count)
        var size = slots.count
        while size < count * 2 { size <<= 1 }
        if size > slots.count { grow(to: size) }
    }

    private mutating func grow(to size: Int) {
        slots = ContiguousArray(repeating: 0, count: size)
        mask = size - 1
        for e in keys.indices {
            var i = home(keys[e])
            while slots[i] != 0 { i = (i + 1) & mask }
            slots[i] = UInt32(e + 1)
        }
    }
}
