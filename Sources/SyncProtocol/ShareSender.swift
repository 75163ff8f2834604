public import ConntrackModel
public import NIOCore

/// What one sync connection sends, as a pure state machine: its bounded queue of live updates,
/// and the full resync of its share that every connection start, every role change to master
/// and every queue overflow calls for.
///
/// Ordering argument (docs/architecture.md): updates reach the queue in the order the table
/// produced them, and a resync's snapshot is taken on the same serial executor that feeds the
/// queue. Every update queued before the snapshot is already in it (so the queue is dropped),
/// and every update after it is sent after the resync's records, so the receiver converges to
/// the sender's table.
public struct ShareSender: Sendable {
    public struct ResyncProgress: Sendable {
        public var generation: UInt32
        public var snapshot: [Conntrack]
        public var cursor: Int
        public var startedAt: NIODeadline
    }

    public enum Step: Sendable {
        /// Nothing to send now.
        case idle
        /// Send RESYNC_BEGIN with this generation; the records follow.
        case beginResync(generation: UInt32)
        /// Send these records as part of the open resync.
        case resyncRecords(ArraySlice<Conntrack>)
        /// Send RESYNC_END.
        case endResync(generation: UInt32, count: UInt64, duration: TimeAmount)
        /// Send these live updates.
        case updates(ArraySlice<OutgoingUpdate>)
    }

    public enum EnqueueResult: Sendable, Equatable {
        case queued
        /// Not connected or not master: the updates are dropped; the resync that follows the
        /// next connection or role change carries them.
        case dropped
        /// The queue overflowed: it was emptied and a resync of the share is scheduled.
        case overflowed
    }

    public let queueLimit: Int
    /// Whether this node is master for the VRF (only a master sends conntracks).
    public private(set) var active = false
    /// Whether the connection is up and the hello accepted.
    public private(set) var connected = false
    public private(set) var resyncNeeded = false
    public private(set) var resync: ResyncProgress?
    private var queue: ContiguousArray<OutgoingUpdate> = []
    private var head = 0
    private var generation: UInt32

    /// Live updates ever queued, and ever handed out by `next` (monotonic): an update queued
    /// when `queuedTotal` became `n` has been handed out once `sentTotal >= n`, unless
    /// `queueLosses` changed meanwhile (the queue was dropped; a resync carries its content).
    public private(set) var queuedTotal: UInt64 = 0
    public private(set) var sentTotal: UInt64 = 0
    /// How many times queued updates were dropped (overflow, disconnect, abandoned resync).
    public private(set) var queueLosses: UInt64 = 0

    public private(set) var overflows = 0
    /// Updates dropped by the last overflow (the queue and the batch that did not fit).
    public private(set) var lastOverflowDropped = 0
    public private(set) var resyncsStarted = 0

    /// `firstGeneration` should differ between runs (the engine draws it at random) so that logs
    /// of two runs cannot be confused; correctness does not depend on it.
    public init(queueLimit: Int, firstGeneration: UInt32) {
        self.queueLimit = max(1, queueLimit)
        self.generation = firstGeneration
    }

    public var queueDepth: Int { queue.count - head }
    public var isSending: Bool { active && connected }

    /// Whether the resync owed since this node became master waits for a frame from the peer
    /// (`heardFromPeer`).
    public private(set) var awaitingPeer = false

    public mutating func setConnected(_ up: Bool) {
        if up && !connected && active { resyncNeeded = true }
        connected = up
        // A new connection's peer was just heard (its answer to the hello), or it is down.
        awaitingPeer = false
        if !up { reset() }
    }

    /// A frame came from the peer: a resync that waited for it may start.
    public mutating func heardFromPeer() { awaitingPeer = false }

    /// Demotion keeps what is queued and lets `next` send it (a planned switchover then loses
    /// nothing the old master saw); it accepts no new updates and abandons a running resync.
    ///
    /// Promotion over a connection that is up owes the peer a resync, which starts once the peer
    /// has sent a frame since (`heardFromPeer`; a live peer sends one at least every heartbeat
    /// interval). A node usually becomes master because its peer died, and the connection to
    /// it stays up until the dead interval: building and writing a resync of the whole share
    /// into it then was work for nothing, right when the node takes over its peer's flows.
    public mutating func setActive(_ master: Bool) {
        if master && !active && connected {
            resyncNeeded = true
            awaitingPeer = true
        }
        active = master
        if !master {
            resync = nil
            resyncNeeded = false
            awaitingPeer = false
        }
    }

    private mutating func reset() {
        resync = nil
        resyncNeeded = false
        clearQueue()
    }

    private mutating func clearQueue() {
        if head < queue.count { queueLosses += 1 }
        queue.removeAll(keepingCapacity: false)
        head = 0
    }

    public mutating func enqueue<C: Collection>(_ updates: C) -> EnqueueResult where C.Element == ConntrackUpdate {
        enqueue(updates.lazy.map { OutgoingUpdate($0) })
    }

    public mutating func enqueue<C: Collection>(_ updates: C) -> EnqueueResult where C.Element == OutgoingUpdate {
        guard isSending else { return .dropped }
        if resyncNeeded { return .dropped }   // the coming snapshot carries them
        if queueDepth + updates.count > queueLimit {
            lastOverflowDropped = queueDepth + updates.count
            queue.removeAll(keepingCapacity: false)
            head = 0
            queueLosses += 1
            resyncNeeded = true
            overflows += 1
            return .overflowed
        }
        if head > 4096 && head * 2 > queue.count {
            queue.removeFirst(head)
            head = 0
        }
        queue.append(contentsOf: updates)
        queuedTotal &+= UInt64(updates.count)
        return .queued
    }

    /// A resync requested from outside (an operator, or the receiver reporting a gap).
    public mutating func requestResync() {
        if isSending { resyncNeeded = true }
    }

    /// The next thing to send. `snapshot` is called, at most once, when a resync starts; it
    /// must return the share's conntracks as of now.
    public mutating func next(maxRecords: Int, now: NIODeadline, snapshot: () -> [Conntrack]) -> Step {
        guard isSending else {
            // Demoted but still connected: send what was queued before the demotion.
            if connected && resync == nil && head < queue.count { return takeQueued(maxRecords) }
            return .idle
        }
        // A resync that runs is finished first (its sweep is right for its snapshot); an
        // overflow meanwhile only schedules the next one. Restarting instead could starve: a
        // resync that never ends never sweeps.
        if resyncNeeded && resync == nil {
            if awaitingPeer { return .idle }
            resyncNeeded = false
            clearQueue()
            generation &+= 1
            resyncsStarted += 1
            resync = ResyncProgress(generation: generation, snapshot: snapshot(), cursor: 0, startedAt: now)
            return .beginResync(generation: generation)
        }
        if var r = resync {
            if r.cursor < r.snapshot.count {
                let end = min(r.snapshot.count, r.cursor + max(1, maxRecords))
                let slice = r.snapshot[r.cursor..<end]
                r.cursor = end
                resync = r
                return .resyncRecords(slice)
            }
            resync = nil
            return .endResync(generation: r.generation, count: UInt64(r.snapshot.count), duration: now - r.startedAt)
        }
        if head < queue.count { return takeQueued(maxRecords) }
        return .idle
    }

    private mutating func takeQueued(_ maxRecords: Int) -> Step {
        let end = min(queue.count, head + max(1, maxRecords))
        let slice = queue[head..<end]
        sentTotal &+= UInt64(end - head)
        head = end
        if head == queue.count { clearQueueKeepingCapacity() }
        return .updates(ArraySlice(slice))
    }

    private mutating func clearQueueKeepingCapacity() {
        queue.removeAll(keepingCapacity: queue.capacity <= 65536)
        head = 0
    }
}

/// Heartbeats and the dead-peer rule of one connection, driven by the caller's clock.
public struct Liveness: Sendable {
    public let heartbeatInterval: TimeAmount
    public let deadInterval: TimeAmount
    public private(set) var lastReceived: NIODeadline
    public private(set) var lastSent: NIODeadline

    public init(heartbeatInterval: TimeAmount, deadInterval: TimeAmount, now: NIODeadline) {
        self.heartbeatInterval = heartbeatInterval
        self.deadInterval = deadInterval
        self.lastReceived = now
        self.lastSent = now
    }

    public mutating func received(at now: NIODeadline) { lastReceived = now }
    public mutating func sent(at now: NIODeadline) { lastSent = now }

    public enum Verdict: Sendable, Equatable {
        case fine
        case sendHeartbeat
        case dead
    }

    public func check(now: NIODeadline) -> Verdict {
        if now - lastReceived >= deadInterval { return .dead }
        if now - lastSent >= heartbeatInterval { return .sendHeartbeat }
        return .fine
    }

    /// When `check` should run next.
    public func nextCheck() -> NIODeadline {
        min(lastSent + heartbeatInterval, lastReceived + deadInterval)
    }
}

/// Exponential reconnect backoff with full jitter, from an injected random source.
public struct ReconnectBackoff: Sendable {
    public let initial: TimeAmount
    public let maximum: TimeAmount
    public private(set) var attempt = 0

    public init(initial: TimeAmount = .milliseconds(50), maximum: TimeAmount = .seconds(5)) {
        self.initial = initial
        self.maximum = maximum
    }

    /// The wait before the next attempt: uniform in [ceiling/2, ceiling], the ceiling doubling
    /// per failed attempt up to `maximum`.
    public mutating func next<R: RandomNumberGenerator>(using rng: inout R) -> TimeAmount {
        let shift = min(attempt, 20)
        attempt += 1
        let ceiling = min(maximum.nanoseconds, initial.nanoseconds << Int64(shift))
        let low = ceiling / 2
        return .nanoseconds(Int64.random(in: low...max(low, ceiling), using: &rng))
    }

    public mutating func reset() { attempt = 0 }
}
