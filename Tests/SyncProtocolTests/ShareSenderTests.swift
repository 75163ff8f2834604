import ConntrackModel
import NIOCore
import SyncProtocol
import Testing

/// `ShareSender.Step` with arrays, for comparisons.
enum SentStep: Equatable {
    case idle
    case beginResync(UInt32)
    case records([Conntrack])
    case endResync(UInt32, UInt64, TimeAmount)
    case updates([ConntrackUpdate])

    init(_ step: ShareSender.Step) {
        switch step {
        case .idle: self = .idle
        case .beginResync(let g): self = .beginResync(g)
        case .resyncRecords(let r): self = .records(Array(r))
        case .endResync(let g, let c, let d): self = .endResync(g, c, d)
        case .updates(let u): self = .updates(u.map(\.update))
        }
    }
}

@Suite struct ShareSenderTests {
    static let t0 = NIODeadline.uptimeNanoseconds(5_000_000_000)
    static let items = (0..<10).map { i in
        Conntrack(
            family: .ipv4, proto: .udp,
            original: ConntrackTuple(source: ip4(10, 0, 0, UInt8(i)), destination: ip4(192, 0, 2, 1), sourcePort: 1000, destinationPort: 53),
            timeout: 30)
    }

    static func next(_ s: inout ShareSender, max: Int = 4, at now: NIODeadline = t0, snapshot: [Conntrack] = []) -> SentStep {
        SentStep(s.next(maxRecords: max, now: now) { snapshot })
    }

    @Test func noResyncUntilActiveAndConnected() {
        var s = ShareSender(queueLimit: 100, firstGeneration: 10)
        var calls = 0
        #expect(SentStep(s.next(maxRecords: 4, now: Self.t0) { calls += 1; return [] }) == .idle)
        #expect(s.enqueue([ConntrackUpdate.upsert(Self.items[0])]) == .dropped)
        s.setConnected(true)
        #expect(!s.isSending)
        #expect(!s.resyncNeeded)
        #expect(SentStep(s.next(maxRecords: 4, now: Self.t0) { calls += 1; return [] }) == .idle)
        s.setConnected(false)
        s.setActive(true)
        #expect(!s.resyncNeeded)
        #expect(SentStep(s.next(maxRecords: 4, now: Self.t0) { calls += 1; return [] }) == .idle)
        #expect(calls == 0)
        s.setConnected(true)
        #expect(s.isSending)
        #expect(s.resyncNeeded)
        #expect(SentStep(s.next(maxRecords: 4, now: Self.t0) { calls += 1; return [] }) == .beginResync(11))
        #expect(calls == 1)
    }

    @Test func resyncChunksSnapshotAndReportsDuration() {
        var s = ShareSender(queueLimit: 100, firstGeneration: 0)
        s.setActive(true)
        s.setConnected(true)
        var calls = 0
        var steps: [SentStep] = []
        var now = Self.t0
        for _ in 0..<6 {
            steps.append(SentStep(s.next(maxRecords: 4, now: now) {
                calls += 1
                return Self.items
            }))
            now = now + .milliseconds(7)
        }
        #expect(calls == 1)
        #expect(steps == [
            .beginResync(1),
            .records(Array(Self.items[0..<4])),
            .records(Array(Self.items[4..<8])),
            .records(Array(Self.items[8..<10])),
            .endResync(1, 10, .milliseconds(28)),
            .idle,
        ])
        #expect(s.resync == nil)
        #expect(s.resyncsStarted == 1)
    }

    @Test func emptySnapshotAndMinimumChunk() {
        var s = ShareSender(queueLimit: 100, firstGeneration: UInt32.max)
        s.setConnected(true)
        s.setActive(true)
        s.heardFromPeer()
        #expect(Self.next(&s, snapshot: []) == .beginResync(0))   // the generation wraps
        #expect(Self.next(&s, at: Self.t0 + .seconds(2)) == .endResync(0, 0, .seconds(2)))
        s.requestResync()
        #expect(Self.next(&s, max: 0, snapshot: Array(Self.items.prefix(2))) == .beginResync(1))
        #expect(Self.next(&s, max: 0) == .records([Self.items[0]]))
        #expect(Self.next(&s, max: -5) == .records([Self.items[1]]))
        #expect(Self.next(&s) == .endResync(1, 2, .zero))
    }

    @Test func queuedUpdatesFollowTheResyncInOrder() {
        var s = ShareSender(queueLimit: 100, firstGeneration: 0)
        s.setActive(true)
        s.setConnected(true)
        // Updates before the snapshot are dropped: the snapshot carries them.
        #expect(s.enqueue([ConntrackUpdate.delete(Self.items[9].key)]) == .dropped)
        #expect(Self.next(&s, snapshot: Array(Self.items.prefix(3))) == .beginResync(1))
        let live: [ConntrackUpdate] = (3..<9).map { .upsert(Self.items[$0]) } + [.delete(Self.items[0].key)]
        #expect(s.enqueue(live.prefix(4)) == .queued)
        #expect(s.enqueue(live.dropFirst(4)) == .queued)
        #expect(s.queueDepth == 7)
        #expect(Self.next(&s) == .records(Array(Self.items.prefix(3))))
        #expect(Self.next(&s) == .endResync(1, 3, .zero))
        #expect(Self.next(&s, max: 5) == .updates(Array(live.prefix(5))))
        #expect(s.queueDepth == 2)
        #expect(Self.next(&s, max: 5) == .updates(Array(live.dropFirst(5))))
        #expect(s.queueDepth == 0)
        #expect(Self.next(&s) == .idle)
        #expect(s.enqueue([live[0]]) == .queued)
        #expect(Self.next(&s) == .updates([live[0]]))
    }

    /// A forced synchronization's updates keep their stamps through the queue, and the counters
    /// tell a caller whether what it queued was handed out or dropped.
    @Test func stampedUpdatesAndDeliveryCounters() {
        var s = ShareSender(queueLimit: 10, firstGeneration: 0)
        s.setActive(true)
        s.setConnected(true)
        #expect(Self.next(&s) == .beginResync(1))
        #expect(Self.next(&s) == .endResync(1, 0, .zero))
        let stamp = Self.t0 - .seconds(2)
        let stamped = Self.items.prefix(3).map { OutgoingUpdate(.upsert($0), activity: stamp) }
        #expect(s.enqueue(stamped) == .queued)
        #expect(s.queuedTotal == 3 && s.sentTotal == 0)
        let losses = s.queueLosses
        guard case .updates(let out) = s.next(maxRecords: 2, now: Self.t0, snapshot: { [] }) else {
            Issue.record("expected updates")
            return
        }
        #expect(Array(out) == Array(stamped.prefix(2)))
        #expect(out.first?.record(at: Self.t0).activityAgeMilliseconds == 2_000)
        #expect(s.sentTotal == 2)
        #expect(Self.next(&s) == .updates([.upsert(Self.items[2])]))
        #expect(s.sentTotal == 3 && s.queueLosses == losses)
        // Dropped on overflow, and on a disconnect with updates still queued.
        #expect(s.enqueue(Self.items.prefix(4).map { OutgoingUpdate(.upsert($0)) }) == .queued)
        #expect(s.enqueue(Self.items.prefix(7).map { OutgoingUpdate(.upsert($0)) }) == .overflowed)
        #expect(s.queueLosses == losses + 1)
        _ = Self.next(&s)
        _ = Self.next(&s)
        #expect(s.enqueue([ConntrackUpdate.upsert(Self.items[0])]) == .queued)
        s.setConnected(false)
        #expect(s.queueLosses == losses + 2)
    }

    @Test func overflowEmptiesQueueAndSchedulesANewGeneration() {
        var s = ShareSender(queueLimit: 5, firstGeneration: 41)
        s.setActive(true)
        s.setConnected(true)
        #expect(Self.next(&s) == .beginResync(42))
        #expect(Self.next(&s) == .endResync(42, 0, .zero))
        let u = Self.items.map { ConntrackUpdate.upsert($0) }
        #expect(s.enqueue(u.prefix(3)) == .queued)
        #expect(s.enqueue(u[3..<5]) == .queued)
        #expect(s.queueDepth == 5)
        #expect(s.enqueue(u[5..<6]) == .overflowed)
        #expect(s.queueDepth == 0)
        #expect(s.overflows == 1)
        #expect(s.resyncNeeded)
        #expect(s.enqueue(u[6..<7]) == .dropped)
        #expect(Self.next(&s, snapshot: Self.items) == .beginResync(43))
        #expect(s.resyncsStarted == 2)
        // One batch larger than the limit overflows on its own.
        var t = ShareSender(queueLimit: 5, firstGeneration: 0)
        t.setActive(true)
        t.setConnected(true)
        _ = Self.next(&t)
        #expect(t.enqueue(u.prefix(6)) == .overflowed)
        #expect(ShareSender(queueLimit: 0, firstGeneration: 0).queueLimit == 1)
    }

    /// An overflow during a resync does not restart it (a resync that keeps restarting never
    /// ends and never sweeps): the running one finishes, then the next begins.
    @Test func overflowDuringAnOpenResyncFinishesItFirst() {
        var s = ShareSender(queueLimit: 2, firstGeneration: 0)
        s.setActive(true)
        s.setConnected(true)
        #expect(Self.next(&s, snapshot: Self.items) == .beginResync(1))
        #expect(Self.next(&s) == .records(Array(Self.items.prefix(4))))
        #expect(s.enqueue(Self.items.prefix(3).map { ConntrackUpdate.upsert($0) }) == .overflowed)
        #expect(s.lastOverflowDropped == 3)
        #expect(Self.next(&s, snapshot: []) == .records(Array(Self.items[4..<8])))
        #expect(Self.next(&s) == .records(Array(Self.items[8..<10])))
        #expect(Self.next(&s) == .endResync(1, 10, .zero))
        #expect(Self.next(&s, snapshot: Array(Self.items.prefix(1))) == .beginResync(2))
        #expect(Self.next(&s) == .records([Self.items[0]]))
        #expect(Self.next(&s) == .endResync(2, 1, .zero))
    }

    @Test func disconnectDropsState() {
        var s = ShareSender(queueLimit: 100, firstGeneration: 0)
        s.setActive(true)
        s.setConnected(true)
        #expect(Self.next(&s, snapshot: Self.items) == .beginResync(1))
        #expect(s.enqueue([ConntrackUpdate.upsert(Self.items[0])]) == .queued)
        s.setConnected(false)
        #expect(s.resync == nil)
        #expect(s.queueDepth == 0)
        #expect(!s.resyncNeeded)
        #expect(Self.next(&s) == .idle)
        #expect(s.enqueue([ConntrackUpdate.upsert(Self.items[0])]) == .dropped)
        s.requestResync()
        #expect(!s.resyncNeeded)
        s.setConnected(true)
        #expect(Self.next(&s) == .beginResync(2))
        // Losing mastership abandons the resync but still sends what was queued (a planned
        // switchover loses nothing), and accepts nothing new.
        #expect(s.enqueue([ConntrackUpdate.upsert(Self.items[1])]) == .queued)
        s.setActive(false)
        #expect(s.queueDepth == 1)
        #expect(s.resync == nil)
        #expect(s.enqueue([ConntrackUpdate.upsert(Self.items[2])]) == .dropped)
        #expect(Self.next(&s) == .updates([.upsert(Self.items[1])]))
        #expect(Self.next(&s) == .idle)
        // Promoted over a connection that is up: the resync waits for a frame from the peer.
        s.setActive(true)
        #expect(Self.next(&s) == .idle)
        s.heardFromPeer()
        #expect(Self.next(&s) == .beginResync(3))
    }

    @Test("a node promoted over a connection that is up resyncs once the peer is heard; a new connection or a demotion ends the wait")
    func promotionWaitsForThePeer() {
        var s = ShareSender(queueLimit: 100, firstGeneration: 0)
        s.setConnected(true)
        s.setActive(true)
        #expect(s.resyncNeeded && s.awaitingPeer)
        var calls = 0
        for _ in 0..<3 { #expect(SentStep(s.next(maxRecords: 4, now: Self.t0) { calls += 1; return [] }) == .idle) }
        #expect(calls == 0, "no snapshot for a peer that has not spoken")
        // Updates meanwhile are carried by the coming resync.
        #expect(s.enqueue([ConntrackUpdate.upsert(Self.items[0])]) == .dropped)
        s.heardFromPeer()
        #expect(!s.awaitingPeer)
        #expect(Self.next(&s, snapshot: [Self.items[0]]) == .beginResync(1))
        #expect(Self.next(&s) == .records([Self.items[0]]))
        #expect(Self.next(&s) == .endResync(1, 1, .zero))

        // The peer was silent and the connection went; the next one's hello was answered.
        s.setActive(false)
        s.setActive(true)
        #expect(s.awaitingPeer)
        s.setConnected(false)
        #expect(!s.awaitingPeer && !s.resyncNeeded)
        s.setConnected(true)
        #expect(Self.next(&s) == .beginResync(2))
        #expect(Self.next(&s) == .endResync(2, 0, .zero))

        // Demoted while waiting: nothing is owed any more.
        s.setActive(false)
        s.setActive(true)
        s.setActive(false)
        #expect(!s.awaitingPeer && !s.resyncNeeded)
        #expect(Self.next(&s) == .idle)
        // A resync asked for while master (an operator, a gap) does not wait.
        s.setActive(true)
        s.heardFromPeer()
        #expect(Self.next(&s) == .beginResync(3))
        #expect(Self.next(&s) == .endResync(3, 0, .zero))
        s.requestResync()
        #expect(!s.awaitingPeer)
        #expect(Self.next(&s) == .beginResync(4))
    }

    @Test func largeQueuesCompact() {
        var s = ShareSender(queueLimit: 20_000, firstGeneration: 0)
        s.setActive(true)
        s.setConnected(true)
        _ = Self.next(&s)
        _ = Self.next(&s)
        var expected: [ConntrackUpdate] = []
        var rng = TestRNG(seed: 5)
        var received: [ConntrackUpdate] = []
        for round in 0..<50 {
            let batch = (0..<Int(rng.next() % 900)).map { _ in randomUpdate(&rng) }
            expected += batch
            #expect(s.enqueue(batch) == .queued, "round \(round)")
            // Send a little less than arrives, so the queue head grows past the compaction point.
            for _ in 0..<Int(rng.next() % 3) {
                if case .updates(let u) = Self.next(&s, max: 500) { received += u }
            }
        }
        while case .updates(let u) = Self.next(&s, max: 1_000) { received += u }
        #expect(received == expected)
        #expect(s.queueDepth == 0)
    }
}

/// The ordering argument of ShareSender: whatever the interleaving of table changes, snapshots,
/// overflows, reconnects and sends, a receiver that applies what was sent ends with the
/// sender's table.
@Suite struct ConvergenceTests {
    struct Receiver {
        var table: [ConntrackKey: Conntrack] = [:]
        var session = ReceiverSession()
        var sequence: UInt32 = 0
        var epoch: Set<ConntrackKey> = []
        var inResync = false
        var frames = 0

        mutating func frame(_ type: SyncMessageType) throws {
            try session.receive(type: type, sequence: sequence)
            sequence += 1
            frames += 1
        }

        mutating func connect() throws {
            session = ReceiverSession()
            sequence = 0
            inResync = false
            try frame(.hello)
            _ = try session.handle(.hello(sampleHello))
        }

        /// Puts a step through the wire codec and the receiver session, then applies it.
        mutating func apply(_ step: ShareSender.Step) throws {
            switch step {
            case .idle:
                return
            case .beginResync(let g):
                try frame(.resyncBegin)
                try roundTrip(.resyncBegin(generation: g))
                _ = try session.handle(.resyncBegin(generation: g))
                epoch = []
                inResync = true
            case .resyncRecords(let records):
                let decoded = try wire(records.map { .upsert($0) })
                try frame(.updates)
                try session.updates(count: decoded.count)
                for case .upsert(let c) in decoded {
                    table[c.key] = c
                    epoch.insert(c.key)
                }
            case .endResync(let g, let count, _):
                try frame(.resyncEnd)
                try roundTrip(.resyncEnd(generation: g, count: count))
                _ = try session.handle(.resyncEnd(generation: g, count: count))
                table = table.filter { epoch.contains($0.key) }
                inResync = false
            case .updates(let updates):
                let decoded = try wire(updates.map(\.update))
                try frame(.updates)
                try session.updates(count: decoded.count)
                for u in decoded {
                    switch u {
                    case .upsert(let c): table[c.key] = c
                    case .delete(let k): table[k] = nil
                    }
                }
            }
        }

        func wire(_ updates: [ConntrackUpdate]) throws -> [ConntrackUpdate] {
            var b = ByteBuffer()
            let at = b.beginSyncFrame(.updates, sequence: 0)
            for u in updates { b.writeConntrackUpdate(u) }
            b.endSyncFrame(lengthAt: at)
            guard var frame = try b.readSyncFrame() else { throw SyncProtocolError.truncated(what: "test", needed: 0) }
            var out: [ConntrackUpdate] = []
            try frame.payload.readConntrackUpdates(into: &out)
            return out
        }

        func roundTrip(_ m: SyncControlMessage) throws {
            var b = ByteBuffer()
            b.writeSyncMessage(m, sequence: 0)
            guard let frame = try b.readSyncFrame() else { throw SyncProtocolError.truncated(what: "test", needed: 0) }
            #expect(try SyncControlMessage.decode(type: frame.type, payload: frame.payload) == m)
        }
    }

    static func item(_ i: Int) -> Conntrack {
        let v6 = i % 7 == 0
        let tcp = i % 2 == 0
        let source = IPAddressBits(high: v6 ? 0x2001_0DB8_0000_0000 : 0, low: 0x0A00_0000 + UInt64(i))
        let original = ConntrackTuple(
            source: source, destination: IPAddressBits(ipv4: 0xC000_0201),
            sourcePort: UInt16(1000 + i), destinationPort: 443)
        let family: AddressFamily = v6 ? .ipv6 : .ipv4
        let proto: IPProtocolNumber = tcp ? .tcp : .udp
        let state: TCPState = tcp ? .synSent : .none
        return Conntrack(family: family, proto: proto, original: original, tcpState: state, timeout: 120)
    }

    @Test(arguments: [UInt64(1), 2, 3, 4, 5, 6, 7, 8])
    func receiverConvergesToSenderTable(seed: UInt64) throws {
        var rng = TestRNG(seed: seed)
        let universe = (0..<300).map(Self.item)
        var table: [ConntrackKey: Conntrack] = [:]
        var sender = ShareSender(queueLimit: Int(rng.next() % 40) + 5, firstGeneration: UInt32(truncatingIfNeeded: rng.next()))
        var receiver = Receiver()
        var now = NIODeadline.uptimeNanoseconds(1)
        sender.setActive(true)
        var queued = 0, overflowed = 0, dropped = 0
        var snapshots = 0

        for _ in 0..<6_000 {
            now = now + .microseconds(Int64(rng.next() % 1_000))
            // The peer speaks now and then (a heartbeat, an ack).
            if rng.next() % 8 == 0 { sender.heardFromPeer() }
            switch rng.next() % 100 {
            case 0..<55:
                // Traffic: a batch of changes to the table, reported in order.
                var batch: [ConntrackUpdate] = []
                for _ in 0..<Int(rng.next() % 6 + 1) {
                    var c = universe[Int(rng.next() % UInt64(universe.count))]
                    if rng.next() % 3 == 0, table[c.key] != nil {
                        table[c.key] = nil
                        batch.append(.delete(c.key))
                    } else {
                        c.timeout = UInt32(truncatingIfNeeded: rng.next() % 500_000)
                        let state: TCPState = TCPState.allCases[Int(rng.next() % 10)]
                        c.tcpState = c.proto == IPProtocolNumber.tcp ? state : TCPState.none
                        table[c.key] = c
                        batch.append(.upsert(c))
                    }
                }
                switch sender.enqueue(batch) {
                case .queued: queued += 1
                case .overflowed: overflowed += 1
                case .dropped: dropped += 1
                }
            case 55..<95:
                let step = sender.next(maxRecords: Int(rng.next() % 16) + 1, now: now) {
                    snapshots += 1
                    return Array(table.values).sorted { $0.original.sourcePort < $1.original.sourcePort }
                }
                if case .endResync(_, _, let d) = step { #expect(d >= .zero) }
                try receiver.apply(step)
            case 95..<97:
                sender.requestResync()
            case 97..<98:
                // The connection drops; the next one starts with a hello and a resync.
                sender.setConnected(false)
                sender.setConnected(true)
                try receiver.connect()
            case 98:
                if !sender.connected {
                    sender.setConnected(true)
                    try receiver.connect()
                }
            default:
                // A role flap.
                sender.setActive(false)
                sender.setActive(true)
            }
            if !sender.connected && rng.next() % 2 == 0 {
                sender.setConnected(true)
                try receiver.connect()
            }
        }
        // Drain.
        sender.heardFromPeer()
        var guardSteps = 0
        while true {
            let step = sender.next(maxRecords: 8, now: now) {
                snapshots += 1
                return Array(table.values)
            }
            if case .idle = step { break }
            try receiver.apply(step)
            guardSteps += 1
            if guardSteps > 100_000 { break }
        }
        #expect(!receiver.inResync)
        #expect(receiver.table == table)
        #expect(snapshots == sender.resyncsStarted)
        // The run exercised every path.
        #expect(queued > 0)
        #expect(overflowed > 0)
        #expect(dropped > 0)
        #expect(snapshots > 3)
    }
}
