/// A set of conntrack keys for the master's sync policy, which asks it several times per kernel
/// event and fills it with the whole table when a node takes over.
///
/// Keys sit densely in one array, indexed as `ConntrackTable` indexes its entries
/// (`SlotIndex`). The slot of a key comes from its `stableHash` mixed with a seed drawn per set:
/// one multiply and shift instead of `Hasher`'s SipHash rounds, and conntracks an outsider
/// shapes (their ports and addresses) cannot be aimed at one probe run without knowing the seed.
public struct ConntrackKeySet: Sendable, Sequence {
    public private(set) var keys: ContiguousArray<ConntrackKey> = []
    private var index: SlotIndex
    private let seed: UInt64

    public init(minimumCapacity: Int = 16) {
        index = SlotIndex(minimumCapacity: minimumCapacity)
        keys.reserveCapacity(minimumCapacity)
        var random = SystemRandomNumberGenerator()
        seed = random.next() | 1
    }

    public init(_ keys: some Sequence<ConntrackKey>) {
        self.init(minimumCapacity: keys.underestimatedCount)
        for k in keys { insert(k) }
    }

    /// A set of `keys`, which must be distinct (the keys of one table, say; a repeated key would
    /// be stored twice). No key is compared, and they are placed in the order of their home
    /// slots (`SlotIndex.homeOrder`), so that the index and the key array are written nearly
    /// sequentially: a node taking over a table of 1,000,000 builds its sets this way. Room for
    /// `minimumCapacity` keys (at least `keys.count`) without a rebuild.
    public init(distinct keys: [ConntrackKey], minimumCapacity: Int = 0) {
        self.init(minimumCapacity: Swift.max(keys.count, minimumCapacity))
        let seed = self.seed
        let hashes = keys.map { Self.hash($0, seed: seed) }
        for i in index.homeOrder(hashes) {
            let slot = index.find(hash: hashes[i]) { _ in false }.slot
            index.set(slot, entry: self.keys.count)
            self.keys.append(keys[i])
        }
    }

    public var count: Int { keys.count }
    public var isEmpty: Bool { keys.isEmpty }

    public func makeIterator() -> ContiguousArray<ConntrackKey>.Iterator { keys.makeIterator() }

    @inline(__always)
    private static func hash(_ key: ConntrackKey, seed: UInt64) -> UInt64 {
        var h = key.stableHash ^ seed
        h &*= 0xD6E8_FEB8_6659_FD93
        return h ^ (h >> 32)
    }

    @inline(__always)
    private func findSlot(_ key: ConntrackKey) -> (slot: Int, entry: Int?) {
        index.find(hash: Self.hash(key, seed: seed)) { keys[$0] == key }
    }

    public func contains(_ key: ConntrackKey) -> Bool { findSlot(key).entry != nil }

    /// Whether each of `keys` is in the set, in their order. The batch is probed in the order of
    /// home slots, as `init(distinct:)` places keys: a large one reads the index and the keys
    /// nearly sequentially.
    public func containsEach(_ keys: [ConntrackKey]) -> [Bool] {
        let seed = self.seed
        let hashes = keys.map { Self.hash($0, seed: seed) }
        var out = [Bool](repeating: false, count: keys.count)
        for i in index.homeOrder(hashes) {
            out[i] = index.find(hash: hashes[i]) { self.keys[$0] == keys[i] }.entry != nil
        }
        return out
    }

    /// Inserts `key`; false when it was there already.
    @discardableResult
    public mutating func insert(_ key: ConntrackKey) -> Bool {
        let (slot, existing) = findSlot(key)
        if existing != nil { return false }
        index.set(slot, entry: keys.count)
        keys.append(key)
        if keys.count * 2 > index.capacity { rebuild(size: index.capacity * 2) }
        return true
    }

    /// Removes `key`; false when it was not there.
    @discardableResult
    public mutating func remove(_ key: ConntrackKey) -> Bool {
        let (slot, existing) = findSlot(key)
        guard let e = existing else { return false }
        let (keys, seed) = (self.keys, self.seed)
        index.remove(slot: slot) { Self.hash(keys[$0], seed: seed) }
        // The last key moves into the hole in the dense array.
        let last = self.keys.count - 1
        if e != last {
            let moved = self.keys[last]
            index.set(findSlot(moved).slot, entry: e)
            self.keys[e] = moved
        }
        self.keys.removeLast()
        return true
    }

    public mutating func removeAll() {
        keys.removeAll()
        index.clear(keepingCapacity: false)
    }

    /// Room for `count` keys without growing.
    public mutating func reserveCapacity(_ count: Int) {
        keys.reserveCapacity(count)
        var size = index.capacity
        while size < count * 2 { size <<= 1 }
        if size > index.capacity { rebuild(size: size) }
    }

    private mutating func rebuild(size: Int) {
        let (keys, seed) = (self.keys, self.seed)
        index.rebuild(size: size, count: keys.count) { Self.hash(keys[$0], seed: seed) }
    }
}
