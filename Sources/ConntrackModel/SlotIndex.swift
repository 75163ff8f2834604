/// The lookup index of `ConntrackTable` and `ConntrackKeySet`: 32-bit slots (0 empty, else the
/// entry's index in the owner's dense array plus one), linear probing, kept at most half full by
/// the owner, and removal that shifts the rest of a probe run back, so there are no tombstones.
/// The owner keeps the entries and says, for an entry index, its hash and whether it is the one
/// looked for.
struct SlotIndex: Sendable {
    private var slots: ContiguousArray<UInt32>
    private var mask: Int

    init(minimumCapacity: Int) {
        var size = 16
        while size < minimumCapacity * 2 { size <<= 1 }
        slots = ContiguousArray(repeating: 0, count: size)
        mask = size - 1
    }

    /// Slots in all; the owner grows the index when its entries pass half of this.
    var capacity: Int { slots.count }

    var allocatedBytes: Int { slots.capacity * MemoryLayout<UInt32>.stride }

    @inline(__always)
    private func home(_ hash: UInt64) -> Int { Int(truncatingIfNeeded: hash) & mask }

    /// The slot of the entry `isMatch` accepts and its index; or, when no entry matches, the
    /// empty slot where one with this hash goes.
    @inline(__always)
    func find(hash: UInt64, isMatch: (Int) -> Bool) -> (slot: Int, entry: Int?) {
        var i = home(hash)
        while true {
            let s = slots[i]
            if s == 0 { return (i, nil) }
            let e = Int(s &- 1)
            if isMatch(e) { return (i, e) }
            i = (i &+ 1) & mask
        }
    }

    /// The indices of `hashes` ordered by the region of their home slot (a counting sort on the
    /// home's top 16 bits). Probing a large batch in this order walks the slots, and the
    /// entries of an owner that placed them in the same order, nearly sequentially instead of
    /// at random: one cache miss per key fewer, the cost of a takeover's set operations.
    func homeOrder(_ hashes: [UInt64]) -> [Int] {
        let bits = mask.nonzeroBitCount
        let regionBits = min(bits, 16)
        let shift = bits - regionBits
        var starts = [Int](repeating: 0, count: (1 << regionBits) + 1)
        for h in hashes { starts[(home(h) >> shift) + 1] += 1 }
        for r in 1..<starts.count { starts[r] += starts[r - 1] }
        var order = [Int](repeating: 0, count: hashes.count)
        for (i, h) in hashes.enumerated() {
            let r = home(h) >> shift
            order[starts[r]] = i
            starts[r] += 1
        }
        return order
    }

    /// Points `slot` at entry `entry`.
    mutating func set(_ slot: Int, entry: Int) { slots[slot] = UInt32(entry + 1) }

    /// Empties `slot` and moves later members of its probe run back where their home allows.
    mutating func remove(slot: Int, hashOf: (Int) -> UInt64) {
        var hole = slot
        var i = (slot + 1) & mask
        while slots[i] != 0 {
            let h = home(hashOf(Int(slots[i] - 1)))
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

    /// `size` slots (a power of two) for entries 0..<count, placed again.
    mutating func rebuild(size: Int, count: Int, hashOf: (Int) -> UInt64) {
        slots = ContiguousArray(repeating: 0, count: size)
        mask = size - 1
        for e in 0..<count {
            var i = home(hashOf(e))
            while slots[i] != 0 { i = (i + 1) & mask }
            slots[i] = UInt32(e + 1)
        }
    }

    /// Empty: every slot cleared, or back to the smallest size.
    mutating func clear(keepingCapacity: Bool) {
        if keepingCapacity {
            for i in slots.indices { slots[i] = 0 }
        } else {
            self = SlotIndex(minimumCapacity: 0)
        }
    }
}
