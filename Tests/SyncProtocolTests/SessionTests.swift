import ConntrackModel
import NIOCore
import SyncProtocol
import Testing

@Suite struct ReceiverSessionTests {
    /// A session that took the hello at sequence 0.
    static func opened() throws -> ReceiverSession {
        var s = ReceiverSession()
        try s.receive(type: .hello, sequence: 0)
        let action = try s.handle(.hello(sampleHello))
        #expect(action == .answerHello(sampleHello))
        #expect(s.state == .open(sampleHello))
        #expect(s.stateDescription == "awaiting resync")
        return s
    }

    @Test func helloMustComeFirst() {
        var s = ReceiverSession()
        #expect(s.stateDescription == "awaiting hello")
        #expect(caught { try s.receive(type: .heartbeat, sequence: 0) } == .unexpectedMessage("HEARTBEAT", state: "awaiting hello"))
        var t = ReceiverSession()
        #expect(caught { try t.receive(type: .updates, sequence: 0) } == .unexpectedMessage("UPDATES", state: "awaiting hello"))
        var u = ReceiverSession()
        #expect(caught { try u.receive(type: .hello, sequence: 1) } == .sequenceGap(expected: 0, received: 1))
    }

    @Test func sequenceGap() throws {
        var s = try Self.opened()
        try s.receive(type: .heartbeat, sequence: 1)
        #expect(try s.handle(.heartbeat) == .alive)
        let e = caught { try s.receive(type: .heartbeat, sequence: 3) }
        #expect(e == .sequenceGap(expected: 2, received: 3))
        #expect(e?.errorCode == .gap)
        // A repeat is a gap too.
        #expect(caught { try s.receive(type: .heartbeat, sequence: 1) } == .sequenceGap(expected: 2, received: 1))
        try s.receive(type: .heartbeat, sequence: 2)
    }

    @Test func updatesBeforeResyncBeginAreRejected() throws {
        var s = try Self.opened()
        try s.receive(type: .updates, sequence: 1)
        #expect(caught { try s.updates(count: 3) } == .unexpectedMessage("UPDATES", state: "awaiting resync"))
        #expect(!s.hasGeneration)
    }

    @Test func resyncCountsRecordsAndCompletes() throws {
        var s = try Self.opened()
        try s.receive(type: .resyncBegin, sequence: 1)
        #expect(try s.handle(.resyncBegin(generation: 5)) == .beginResync(generation: 5))
        #expect(s.stateDescription == "resyncing")
        try s.receive(type: .updates, sequence: 2)
        try s.updates(count: 3)
        try s.receive(type: .updates, sequence: 3)
        try s.updates(count: 4)
        #expect(s.resync?.generation == 5)
        #expect(s.resync?.received == 7)
        try s.receive(type: .resyncEnd, sequence: 4)
        #expect(try s.handle(.resyncEnd(generation: 5, count: 7)) == .completeResync(generation: 5, count: 7))
        #expect(s.resync == nil)
        #expect(s.stateDescription == "streaming")
        // Live updates after the resync do not open a resync.
        try s.receive(type: .updates, sequence: 5)
        try s.updates(count: 2)
        #expect(s.resync == nil)
        // An end without a begin.
        try s.receive(type: .resyncEnd, sequence: 6)
        #expect(caught { try s.handle(.resyncEnd(generation: 5, count: 0)) } == .unexpectedMessage("RESYNC_END", state: "streaming"))
    }

    @Test func resyncEndMismatches() throws {
        var s = try Self.opened()
        #expect(caught { try s.handle(.resyncEnd(generation: 1, count: 0)) } == .unexpectedMessage("RESYNC_END", state: "awaiting resync"))
        _ = try s.handle(.resyncBegin(generation: 5))
        try s.updates(count: 3)
        var wrongGeneration = s
        let e = caught { try wrongGeneration.handle(.resyncEnd(generation: 6, count: 3)) }
        #expect(e == .resyncMismatch("end of generation 6 while generation 5 is open"))
        #expect(e?.errorCode == .gap)
        var wrongCount = s
        #expect(caught { try wrongCount.handle(.resyncEnd(generation: 5, count: 4)) }
            == .resyncMismatch("generation 5 announced 4 records, 3 arrived"))
        #expect(caught { try wrongCount.handle(.resyncEnd(generation: 5, count: 2)) }
            == .resyncMismatch("generation 5 announced 2 records, 3 arrived"))
        #expect(try s.handle(.resyncEnd(generation: 5, count: 3)) == .completeResync(generation: 5, count: 3))
    }

    @Test func secondResyncBeginReplacesTheOpenOne() throws {
        var s = try Self.opened()
        _ = try s.handle(.resyncBegin(generation: 5))
        try s.updates(count: 10)
        #expect(try s.handle(.resyncBegin(generation: 6)) == .beginResync(generation: 6))
        #expect(s.resync?.generation == 6)
        #expect(s.resync?.received == 0)
        try s.updates(count: 2)
        #expect(caught { try s.handle(.resyncEnd(generation: 5, count: 12)) } != nil)
        #expect(try s.handle(.resyncEnd(generation: 6, count: 2)) == .completeResync(generation: 6, count: 2))
    }

    @Test func helloTwiceAndHelloAckAreRejected() throws {
        var s = try Self.opened()
        try s.receive(type: .hello, sequence: 1)
        let e = caught { try s.handle(.hello(sampleHello)) }
        #expect(e == .unexpectedMessage("HELLO", state: "awaiting resync"))
        #expect(e?.errorCode == .protocolViolation)
        let ack = HelloAck(status: .accepted, nodeID: "x", fingerprint: [], settings: [], message: "")
        #expect(caught { try s.handle(.helloAck(ack)) } == .unexpectedMessage("HELLO_ACK", state: "receiving"))
    }

    @Test func peerErrorCloses() throws {
        var s = try Self.opened()
        try s.receive(type: .error, sequence: 1)
        #expect(try s.handle(.error(code: .shuttingDown, message: "bye")) == .peerError(code: .shuttingDown, message: "bye"))
        #expect(s.state == .closed)
        #expect(s.stateDescription == "closed")
        #expect(caught { try s.receive(type: .heartbeat, sequence: 2) } == .unexpectedMessage("HEARTBEAT", state: "closed"))
    }

    @Test func closeStopsEverything() {
        var s = ReceiverSession()
        s.close()
        #expect(s.state == .closed)
        #expect(caught { try s.receive(type: .hello, sequence: 0) } == .unexpectedMessage("HELLO", state: "closed"))
    }
}

@Suite struct SenderSessionTests {
    static func ack(_ status: HelloAck.Status) -> HelloAck {
        HelloAck(status: status, nodeID: "ha2", fingerprint: [9], settings: [], message: "m")
    }

    @Test func sequenceNumbering() {
        var s = SenderSession()
        #expect(s.takeSequence() == 0)
        #expect(s.takeSequence() == 1)
        #expect(s.takeSequences(3) == 2)
        #expect(s.takeSequence() == 5)
        #expect(s.takeSequences(0) == 6)
        #expect(s.takeSequence() == 6)
    }

    @Test(arguments: [HelloAck.Status.accepted, .acceptedWithDrift])
    func ackAccepted(status: HelloAck.Status) throws {
        var s = SenderSession()
        try s.receive(type: .helloAck, sequence: 0)
        let a = Self.ack(status)
        #expect(try s.handle(.helloAck(a)) == .ready(a))
        #expect(s.state == .ready(a))
        try s.receive(type: .heartbeat, sequence: 1)
        #expect(try s.handle(.heartbeat) == .alive)
        try s.receive(type: .helloAck, sequence: 2)
        #expect(caught { try s.handle(.helloAck(a)) } == .unexpectedMessage("HELLO_ACK", state: "ready"))
        #expect(caught { try s.handle(.resyncBegin(generation: 1)) } == .unexpectedMessage("RESYNC_BEGIN", state: "sending"))
        #expect(caught { try s.handle(.hello(sampleHello)) } == .unexpectedMessage("HELLO", state: "sending"))
    }

    @Test(arguments: [HelloAck.Status.unsupportedVersion, .unknownVRF, .peerNotAllowed, .badConnectionIndex, HelloAck.Status(rawValue: 77)])
    func ackRefused(status: HelloAck.Status) throws {
        var s = SenderSession()
        try s.receive(type: .helloAck, sequence: 0)
        let a = Self.ack(status)
        #expect(try s.handle(.helloAck(a)) == .refused(a))
        #expect(s.state == .refused(a))
    }

    @Test func onlyAckOrErrorWhileAwaitingAck() throws {
        var s = SenderSession()
        #expect(caught { try s.receive(type: .heartbeat, sequence: 0) } == .unexpectedMessage("HEARTBEAT", state: "awaiting HELLO_ACK"))
        var t = SenderSession()
        #expect(caught { try t.receive(type: .helloAck, sequence: 1) } == .sequenceGap(expected: 0, received: 1))
        var u = SenderSession()
        try u.receive(type: .error, sequence: 0)
        #expect(try u.handle(.error(code: .notKeepstate, message: "who?")) == .peerError(code: .notKeepstate, message: "who?"))
        #expect(u.state == .closed)
    }
}

@Suite struct LivenessTests {
    static let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    @Test func heartbeatAndDeadAtExactIntervals() {
        var l = Liveness(heartbeatInterval: .seconds(1), deadInterval: .seconds(3), now: Self.t0)
        #expect(l.check(now: Self.t0) == .fine)
        #expect(l.nextCheck() == Self.t0 + .seconds(1))
        #expect(l.check(now: Self.t0 + .nanoseconds(999_999_999)) == .fine)
        #expect(l.check(now: Self.t0 + .seconds(1)) == .sendHeartbeat)
        l.sent(at: Self.t0 + .seconds(1))
        #expect(l.lastSent == Self.t0 + .seconds(1))
        #expect(l.check(now: Self.t0 + .milliseconds(1_500)) == .fine)
        #expect(l.nextCheck() == Self.t0 + .seconds(2))
        l.sent(at: Self.t0 + .seconds(2))
        l.sent(at: Self.t0 + .milliseconds(2_900))
        // Dead wins over a due heartbeat.
        #expect(l.check(now: Self.t0 + .nanoseconds(2_999_999_999)) == .fine)
        #expect(l.nextCheck() == Self.t0 + .seconds(3))
        #expect(l.check(now: Self.t0 + .seconds(3)) == .dead)
        #expect(l.check(now: Self.t0 + .seconds(4)) == .dead)
        l.received(at: Self.t0 + .milliseconds(2_950))
        #expect(l.lastReceived == Self.t0 + .milliseconds(2_950))
        #expect(l.check(now: Self.t0 + .seconds(3)) == .fine)
        #expect(l.check(now: Self.t0 + .milliseconds(3_900)) == .sendHeartbeat)
        #expect(l.nextCheck() == Self.t0 + .milliseconds(3_900))
        #expect(l.check(now: Self.t0 + .milliseconds(5_950)) == .dead)
    }

    @Test func nextCheckIsTheDeadlineWhenReceivingStops() {
        var l = Liveness(heartbeatInterval: .seconds(10), deadInterval: .seconds(3), now: Self.t0)
        #expect(l.nextCheck() == Self.t0 + .seconds(3))
        l.received(at: Self.t0 + .seconds(1))
        #expect(l.nextCheck() == Self.t0 + .seconds(4))
        #expect(l.check(now: Self.t0 + .seconds(4)) == .dead)
    }
}

@Suite struct ReconnectBackoffTests {
    struct ConstantRNG: RandomNumberGenerator {
        var value: UInt64
        mutating func next() -> UInt64 { value }
    }

    static let ceilings: [Int64] = [50, 100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000, 5_000].map { $0 * 1_000_000 }

    @Test func staysWithinHalfCeilingAndCeiling() {
        var rng = TestRNG(seed: 3)
        var b = ReconnectBackoff()
        for (i, ceiling) in Self.ceilings.enumerated() {
            #expect(b.attempt == i)
            let wait = b.next(using: &rng).nanoseconds
            #expect(wait >= ceiling / 2 && wait <= ceiling, "attempt \(i): \(wait)")
        }
        for _ in 0..<100 {
            let wait = b.next(using: &rng).nanoseconds
            #expect(wait >= 2_500_000_000 && wait <= 5_000_000_000)
        }
        b.reset()
        #expect(b.attempt == 0)
        let wait = b.next(using: &rng).nanoseconds
        #expect(wait >= 25_000_000 && wait <= 50_000_000)
    }

    /// The extremes of the random source give exactly the bounds.
    @Test func boundsAreReached() {
        var high = ConstantRNG(value: .max)
        var low = ConstantRNG(value: 1)
        var a = ReconnectBackoff()
        var b = ReconnectBackoff()
        for ceiling in Self.ceilings {
            #expect(a.next(using: &high).nanoseconds == ceiling)
            #expect(b.next(using: &low).nanoseconds == ceiling / 2)
        }
    }

    @Test func deterministicWithASeed() {
        func run() -> [Int64] {
            var rng = TestRNG(seed: 99)
            var b = ReconnectBackoff(initial: .milliseconds(10), maximum: .seconds(1))
            return (0..<30).map { _ in b.next(using: &rng).nanoseconds }
        }
        let first = run()
        #expect(first == run())
        #expect(Set(first).count > 20)
        #expect(first.allSatisfy { $0 >= 5_000_000 && $0 <= 1_000_000_000 })
    }
}

@Suite struct SettingsDriftTests {
    @Test func namesDifferencesSortedByKey() {
        let local = [
            SyncSettingPair(key: "b", value: "2"), SyncSettingPair(key: "a", value: "1"), SyncSettingPair(key: "c", value: "3"),
        ]
        let remote = [
            SyncSettingPair(key: "d", value: "5"), SyncSettingPair(key: "b", value: "2"), SyncSettingPair(key: "c", value: "4"),
        ]
        #expect(SettingsDrift.differences(local: local, remote: remote, peerVersion: SyncWire.version) == [
            "a: here 1, peer absent",
            "c: here 3, peer 4",
            "d: here absent, peer 5",
        ])
        #expect(SettingsDrift.differences(local: remote, remote: local, peerVersion: SyncWire.version) == [
            "a: here absent, peer 1",
            "c: here 4, peer 3",
            "d: here 5, peer absent",
        ])
        #expect(SettingsDrift.differences(local: local, remote: local.reversed(), peerVersion: SyncWire.version).isEmpty)
        #expect(SettingsDrift.differences(local: [], remote: [], peerVersion: SyncWire.version).isEmpty)
        #expect(SettingsDrift.differences(local: [SyncSettingPair(key: "x", value: "")], remote: [], peerVersion: SyncWire.version)
            == ["x: here , peer absent"])
    }
}
