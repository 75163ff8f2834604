public import ConntrackModel

/// The conntracks waiting for their synchronization delay (rule 4), with the instants at which
/// each must be read again.
///
/// The kernel sends no event for a packet that only refreshes a timeout, and dumping the whole
/// table every second costs a read of every entry to learn about a few. Instead the tracker
/// keeps only the candidates (established, not yet synced) in a deadline queue, and the caller
/// reads just the entries that `due(at:)` names, with batched gets, and hands the answers back.
///
/// TCP, delay D, established at E (no traffic needed):
///
/// ```
///   E                         E+D
///   |---- delayPending -------|  get: still ESTABLISHED -> synced with its current timeout
///                             |       otherwise         -> dropped (notEstablished)
///   (leaving ESTABLISHED before E+D drops it at once: the state change is an event)
/// ```
///
/// UDP, ICMP and others, delay D > 0, reply first seen at E (traffic needed after the delay):
///
/// ```
///   E                         E+D
///   |---- delayPending -------|b---P---|p1---2P---|p2-------4P-------|p3 ... (up to the maximum)
///                              baseline  probe: refreshed since b? -> synced
///                              reading   no -> awaitingTraffic, next probe later
///   (the entry expiring without traffic ends it: the destroy event, or a get that finds
///    nothing, removes the candidate)
/// ```
///
/// The baseline is the first reading at or after E+D and is never replaced, so every packet
/// after it adds to the gain a later probe sees (`TimeoutInference`). Probe intervals double
/// (P, 2P, 4P, ... up to `maximumInterval`) while no traffic shows, so an idle flow costs a
/// handful of gets before it expires. With delay 0, a conntrack is synced as soon as it is
/// established, whatever its protocol: for UDP the reply that established it is the traffic.
///
/// Cost: `O(log n)` per scheduling, in a binary heap of (deadline, ticket, key); rescheduling
/// leaves the old heap entry behind, recognised as stale by its ticket and dropped when popped;
/// the heap is rebuilt when stale entries outnumber live ones.
public struct DelayTracker: Sendable {
    /// One conntrack waiting for its delay or for traffic after it.
    public struct Candidate: Sendable, Hashable {
        public var key: ConntrackKey
        public var protocolClass: ProtocolClass
        /// When it was first seen established.
        public var establishedAt: PolicyInstant
        /// `establishedAt + delay`: from this instant on it may be synced.
        public var eligibleAt: PolicyInstant
        /// Non-TCP: the first reading at or after `eligibleAt`, against which refreshes count.
        public var baseline: TimeoutObservation?
        /// The latest reading.
        public var last: TimeoutObservation
        /// When the caller must read it next.
        public var nextCheck: PolicyInstant
        /// The interval the next probe without traffic will use (doubles up to the maximum).
        public var probeInterval: Duration
        var ticket: UInt64

        /// What `keepstate show conntracks --unsynced` says about it.
        public var classification: SyncClassification {
            if protocolClass.needsTrafficAfterDelay && baseline != nil { return .awaitingTraffic(since: eligibleAt) }
            return .delayPending(until: eligibleAt)
        }
    }

    /// What a reading of a tracked conntrack means.
    public enum Verdict: Sendable, Hashable {
        /// Sync it now (the tracker has forgotten it).
        case ready
        /// Keep waiting; the classification says for what.
        case pending(SyncClassification)
        /// No longer established (or now excluded): the tracker has forgotten it.
        case dropped(SyncClassification)
    }

    public var probing: ProbeSettings
    private var candidates: [ConntrackKey: Candidate] = [:]
    private var heap = DeadlineHeap()
    private var nextTicket: UInt64 = 0

    public init(probing: ProbeSettings = ProbeSettings()) {
        self.probing = probing
    }

    /// Candidates waiting.
    public var count: Int { candidates.count }
    public var isEmpty: Bool { candidates.isEmpty }

    public func contains(_ key: ConntrackKey) -> Bool { candidates[key] != nil }

    public func candidate(_ key: ConntrackKey) -> Candidate? { candidates[key] }

    /// Every candidate, in no particular order (for listings).
    public var allCandidates: some Collection<Candidate> { candidates.values }

    /// Starts waiting for `c`, established at `establishedAt` (usually `now`; the instant of an
    /// earlier event when known), with the delay of its protocol. Returns `.ready` at once when
    /// the delay is zero, or already over for TCP. An already tracked key is just read again.
    public mutating func track(_ c: Conntrack, delay: Duration, establishedAt: PolicyInstant,
                               at now: PolicyInstant) -> Verdict {
        if candidates[c.key] != nil { return observe(c, at: now) }
        if let excluded = SyncRules.exclusion(of: c) { return .dropped(excluded) }
        guard c.isEstablished else { return .dropped(.notEstablished) }
        if delay <= .zero { return .ready }
        let eligibleAt = establishedAt + delay
        let cls = ProtocolClass(c.proto)
        let reading = TimeoutObservation(timeout: c.timeout, at: now)
        candidates[c.key] = Candidate(
            key: c.key, protocolClass: cls, establishedAt: establishedAt, eligibleAt: eligibleAt,
            baseline: nil, last: reading, nextCheck: eligibleAt, probeInterval: probing.firstInterval, ticket: 0)
        if now >= eligibleAt { return observe(c, at: now) }
        schedule(c.key, at: eligibleAt)
        return .pending(.delayPending(until: eligibleAt))
    }

    /// A fresh reading of a tracked conntrack (an event, a dump, or the answer to a get that
    /// `due(at:)` asked for). Untracked keys give `.dropped(.notObserved)`.
    public mutating func observe(_ c: Conntrack, at now: PolicyInstant) -> Verdict {
        guard var cand = candidates[c.key] else { return .dropped(.notObserved) }
        if let excluded = SyncRules.exclusion(of: c) {
            remove(c.key)
            return .dropped(excluded)
        }
        guard c.isEstablished else {
            remove(c.key)
            return .dropped(.notEstablished)
        }
        let reading = TimeoutObservation(timeout: c.timeout, at: now)
        cand.last = reading
        if now < cand.eligibleAt {
            // Still inside the delay: traffic now does not count. Keep the deadline.
            candidates[c.key] = cand
            return .pending(.delayPending(until: cand.eligibleAt))
        }
        if !cand.protocolClass.needsTrafficAfterDelay {
            remove(c.key)
            return .ready
        }
        if let b = cand.baseline {
            if TimeoutInference.refreshed(from: b, to: reading, threshold: probing.refreshThreshold) {
                remove(c.key)
                return .ready
            }
            let wait = cand.probeInterval
            cand.probeInterval = min(wait * 2, probing.maximumInterval)
            cand.nextCheck = now + wait
        } else {
            cand.baseline = reading
            cand.probeInterval = min(probing.firstInterval * 2, probing.maximumInterval)
            cand.nextCheck = now + probing.firstInterval
        }
        candidates[c.key] = cand
        schedule(c.key, at: cand.nextCheck)
        return .pending(.awaitingTraffic(since: cand.eligibleAt))
    }

    /// Forgets a candidate (destroyed, synced by force, or the node stopped being master).
    @discardableResult
    public mutating func remove(_ key: ConntrackKey) -> Candidate? {
        candidates.removeValue(forKey: key)
    }

    public mutating func removeAll() {
        candidates.removeAll()
        heap.removeAll()
    }

    /// The earliest instant at which `due(at:)` will name a key (possibly a stale one: then
    /// `due` names nothing and the next call gives a later instant). nil when nothing waits.
    public mutating func nextDeadline() -> PolicyInstant? {
        while let top = heap.peek {
            if let cand = candidates[top.key], cand.ticket == top.ticket { return PolicyInstant(nanoseconds: top.deadline) }
            _ = heap.pop()
        }
        return nil
    }

    /// The keys the caller must read now (at most `limit`, earliest deadline first). Each one is
    /// rescheduled `firstInterval` later, so a read whose answer is lost is asked for again.
    /// Answer with `observe(_:at:)`, or `remove(_:)` when the entry no longer exists.
    public mutating func due(at now: PolicyInstant, limit: Int = .max) -> [ConntrackKey] {
        var out: [ConntrackKey] = []
        while out.count < limit, let top = heap.peek, top.deadline <= now.nanoseconds {
            _ = heap.pop()
            guard var cand = candidates[top.key], cand.ticket == top.ticket else { continue }
            out.append(top.key)
            cand.nextCheck = now + probing.firstInterval
            candidates[top.key] = cand
            schedule(top.key, at: cand.nextCheck)
        }
        return out
    }

    private mutating func schedule(_ key: ConntrackKey, at deadline: PolicyInstant) {
        nextTicket &+= 1
        candidates[key]?.ticket = nextTicket
        candidates[key]?.nextCheck = deadline
        heap.push(DeadlineHeap.Entry(deadline: deadline.nanoseconds, ticket: nextTicket, key: key))
        if heap.count > 2 * candidates.count + 1024 {
            heap = DeadlineHeap(candidates.values.map {
                DeadlineHeap.Entry(deadline: $0.nextCheck.nanoseconds, ticket: $0.ticket, key: $0.key)
            })
        }
    }

    /// Entries in the deadline queue, stale ones included (for tests and statistics).
    public var queuedDeadlines: Int { heap.count }
}

/// A binary min-heap of deadlines.
struct DeadlineHeap: Sendable {
    struct Entry: Sendable {
        var deadline: Int64
        var ticket: UInt64
        var key: ConntrackKey
    }

    private var items: [Entry] = []

    init() {}

    init(_ entries: [Entry]) {
        items = entries
        var i = items.count / 2 - 1
        while i >= 0 {
            siftDown(i)
            i -= 1
        }
    }

    var count: Int { items.count }
    var peek: Entry? { items.first }

    mutating func removeAll() { items.removeAll() }

    private static func before(_ a: Entry, _ b: Entry) -> Bool {
        a.deadline != b.deadline ? a.deadline < b.deadline : a.ticket < b.ticket
    }

    mutating func push(_ e: Entry) {
        items.append(e)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard Self.before(items[i], items[parent]) else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> Entry? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        if !items.isEmpty { siftDown(0) }
        return top
    }

    private mutating func siftDown(_ start: Int) {
        var i = start
        let n = items.count
        while true {
            let l = 2 * i + 1
            let r = l + 1
            var m = i
            if l < n && Self.before(items[l], items[m]) { m = l }
            if r < n && Self.before(items[r], items[m]) { m = r }
            if m == i { return }
            items.swapAt(i, m)
            i = m
        }
    }
}
