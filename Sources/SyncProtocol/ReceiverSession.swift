import NIOCore

/// The receiving side of one sync connection, as a pure state machine.
///
/// It checks what the protocol requires (hello first, sequence numbers without gaps, records
/// only inside a generation, a resync ending with the generation and count it began with) and
/// tells its owner what to do. It holds no table: the owner applies updates and sweeps.
public struct ReceiverSession: Sendable {
    public enum State: Sendable, Equatable {
        case awaitingHello
        case open(Hello)
        case closed
    }

    public enum Action: Sendable, Equatable {
        /// Decide on the hello (VRF, peer, version) and answer with a HELLO_ACK.
        case answerHello(Hello)
        /// A resync began: open a new epoch for this share.
        case beginResync(generation: UInt32)
        /// Apply the frame's updates to the share's current epoch.
        case applyUpdates
        /// A resync ended complete: sweep what this share held that the epoch did not carry.
        case completeResync(generation: UInt32, count: UInt64)
        /// Nothing to do but note the peer is alive.
        case alive
        /// The peer reported an error and will close.
        case peerError(code: SyncErrorCode, message: String)
        /// The peer's ruleset fingerprint changed (version 3).
        case peerRuleset(RulesetFingerprint)
    }

    public private(set) var state: State = .awaitingHello
    private var nextSequence: UInt32 = 0
    /// The open resync, if any, and how many records it carried so far.
    public private(set) var resync: (generation: UInt32, received: UInt64)?
    /// Whether any resync began on this connection (records are only valid after one).
    public private(set) var hasGeneration = false

    public init() {}

    public var stateDescription: String {
        switch state {
        case .awaitingHello: "awaiting hello"
        case .open: resync == nil ? (hasGeneration ? "streaming" : "awaiting resync") : "resyncing"
        case .closed: "closed"
        }
    }

    /// Every frame goes through here first.
    public mutating func receive(type: SyncMessageType, sequence: UInt32) throws(SyncProtocolError) {
        if case .closed = state { throw .unexpectedMessage("\(type)", state: "closed") }
        guard sequence == nextSequence else {
            throw .sequenceGap(expected: nextSequence, received: sequence)
        }
        nextSequence &+= 1
        if case .awaitingHello = state, type != .hello {
            throw .unexpectedMessage("\(type)", state: stateDescription)
        }
    }

    /// A control message, after `receive(type:sequence:)`.
    public mutating func handle(_ message: SyncControlMessage) throws(SyncProtocolError) -> Action {
        switch message {
        case .hello(let h):
            guard case .awaitingHello = state else { throw .unexpectedMessage("HELLO", state: stateDescription) }
            state = .open(h)
            return .answerHello(h)
        case .resyncBegin(let g):
            // A new resync may replace an unfinished one (the sender restarts after an overflow).
            resync = (g, 0)
            hasGeneration = true
            return .beginResync(generation: g)
        case .resyncEnd(let g, let count):
            guard let open = resync else {
                throw .unexpectedMessage("RESYNC_END", state: stateDescription)
            }
            guard open.generation == g else {
                throw .resyncMismatch("end of generation \(g) while generation \(open.generation) is open")
            }
            guard open.received == count else {
                throw .resyncMismatch("generation \(g) announced \(count) records, \(open.received) arrived")
            }
            resync = nil
            return .completeResync(generation: g, count: count)
        case .heartbeat:
            return .alive
        case .error(let code, let text):
            state = .closed
            return .peerError(code: code, message: text)
        case .ruleset(let r):
            return .peerRuleset(r)
        case .helloAck:
            throw .unexpectedMessage("HELLO_ACK", state: "receiving")
        }
    }

    /// An UPDATES frame with `count` records, after `receive(type:sequence:)`.
    public mutating func updates(count: Int) throws(SyncProtocolError) {
        guard hasGeneration else { throw .unexpectedMessage("UPDATES", state: stateDescription) }
        if let open = resync { resync = (open.generation, open.received + UInt64(count)) }
    }

    public mutating func close() { state = .closed }
}

/// The sending side's view of the connection's control traffic: the hello exchange and the
/// frames the receiver sends back.
public struct SenderSession: Sendable {
    public enum State: Sendable, Equatable {
        case awaitingAck
        case ready(HelloAck)
        case refused(HelloAck)
        case closed
    }

    public private(set) var state: State = .awaitingAck
    private var nextInbound: UInt32 = 0
    private var nextOutbound: UInt32 = 0

    public init() {}

    /// The sequence number for the next frame this side sends.
    public mutating func takeSequence() -> UInt32 {
        defer { nextOutbound &+= 1 }
        return nextOutbound
    }

    /// Reserves `n` consecutive sequence numbers; returns the first.
    public mutating func takeSequences(_ n: Int) -> UInt32 {
        defer { nextOutbound &+= UInt32(truncatingIfNeeded: n) }
        return nextOutbound
    }

    public enum Action: Sendable, Equatable {
        case ready(HelloAck)
        case refused(HelloAck)
        case alive
        case peerError(code: SyncErrorCode, message: String)
    }

    public mutating func receive(type: SyncMessageType, sequence: UInt32) throws(SyncProtocolError) {
        guard sequence == nextInbound else { throw .sequenceGap(expected: nextInbound, received: sequence) }
        nextInbound &+= 1
        if case .awaitingAck = state, type != .helloAck, type != .error {
            throw .unexpectedMessage("\(type)", state: "awaiting HELLO_ACK")
        }
    }

    public mutating func handle(_ message: SyncControlMessage) throws(SyncProtocolError) -> Action {
        switch message {
        case .helloAck(let ack):
            guard case .awaitingAck = state else { throw .unexpectedMessage("HELLO_ACK", state: "ready") }
            if ack.status.isAccepted {
                state = .ready(ack)
                return .ready(ack)
            }
            state = .refused(ack)
            return .refused(ack)
        case .heartbeat:
            return .alive
        case .error(let code, let text):
            state = .closed
            return .peerError(code: code, message: text)
        default:
            throw .unexpectedMessage("\(message.type)", state: "sending")
        }
    }
}

/// Names the sync-relevant settings that differ between two nodes.
public enum SettingsDrift {
    /// Settings this build compares that a peer of protocol version 1 or 2 does not send: a key
    /// of these absent from such a peer is not a difference (a rolling upgrade is not a drift).
    public static let sinceVersion3: Set<String> = ["ha_fp_conntrack.failback_hold_max"]

    /// Lines such as `ha_delays.tcp.synchronization: here 1, peer 2`, sorted by key.
    public static func differences(local: [SyncSettingPair], remote: [SyncSettingPair],
                                   peerVersion: UInt16) -> [String] {
        var mine: [String: String] = [:]
        for s in local { mine[s.key] = s.value }
        var theirs: [String: String] = [:]
        for s in remote { theirs[s.key] = s.value }
        if peerVersion < SyncWire.rulesetVersion {
            for key in sinceVersion3 where theirs[key] == nil { mine[key] = nil }
        }
        var out: [String] = []
        for key in Set(mine.keys).union(theirs.keys).sorted() where mine[key] != theirs[key] {
            out.append("\(key): here \(mine[key] ?? "absent"), peer \(theirs[key] ?? "absent")")
        }
        return out
    }
}
