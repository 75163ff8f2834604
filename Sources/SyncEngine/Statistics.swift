import Synchronization

/// The state of one sync connection, as `show peer` prints it.
public enum ConnectionStatus: String, Sendable, Codable, Equatable {
    /// Not started, or stopped.
    case down
    /// TCP and TLS being set up, or waiting before the next attempt.
    case connecting
    /// TLS up, hello sent, waiting for the peer's answer.
    case handshaking
    /// Hello accepted; heartbeats and, on the master, conntracks flow.
    case established
    /// The peer refused the hello (another version, an unknown VRF, a certificate that does not
    /// name us); retried with backoff.
    case refused
}

/// Statistics of one sync connection (a "client" in the reference's `show` output).
public struct ConnectionStatistics: Sendable, Codable, Equatable {
    public var index: Int
    /// Conntrack records sent (resync and live updates).
    public var transmit: UInt64 = 0
    /// Records in frames whose write failed (the connection broke; a resync follows).
    public var transmitError: UInt64 = 0
    /// Updates that were never built into a frame because the send queue overflowed (the share
    /// is resynced instead, so nothing is lost, but the peer saw them late).
    public var buildError: UInt64 = 0
    public var connectionStatus: ConnectionStatus = .down
    public var queueDepth: Int = 0
    public var queueOverflows: UInt64 = 0
    public var resyncs: UInt64 = 0
    /// Seconds the last complete resync took from RESYNC_BEGIN written to RESYNC_END written.
    public var lastResyncDuration: Double?
    public var lastResyncRecords: UInt64?
    public var connects: UInt64 = 0
    public var lastError: String?
    /// A resync this master owes the peer and has not begun, and what it waits for: `peer` (a
    /// frame from the peer since this node became master) or `table` (the dataplane following
    /// the whole table again after a takeover's re-arm). Absent otherwise.
    public var resyncWaiting: String?

    public init(index: Int) { self.index = index }
}

/// Statistics of the receiving side (the reference's `local-node`).
public struct LocalNodeStatistics: Sendable, Codable, Equatable {
    /// Conntrack records received and applied.
    public var receive: UInt64 = 0
    /// Frames rejected (malformed, out of order, out of protocol); each closes its connection.
    public var receiveError: UInt64 = 0
    /// Connections refused: TLS handshake failed (no certificate, another CA) or the hello was
    /// refused (certificate or address not the configured peer, unknown VRF, version).
    public var refusedConnections: UInt64 = 0
    public var acceptedConnections: UInt64 = 0
    public var resyncsCompleted: UInt64 = 0
    /// Entries removed because a completed resync did not carry them.
    public var staleRemoved: UInt64 = 0
    public var storeEntries: Int = 0
    public var lastRefusal: String?

    public init() {}
}

/// Everything `show peer` shows for one VRF.
public struct SyncStatistics: Sendable, Codable, Equatable {
    public var vrf: String
    public var role: String
    public var peerName: String
    public var source: String
    public var address: String
    public var connections: [ConnectionStatistics]
    public var localNode: LocalNodeStatistics
}

/// Counters shared by the receiving channels of a VRF (they run on several event loops).
final class ReceiverCounters: Sendable {
    let receive = Atomic<UInt64>(0)
    let receiveError = Atomic<UInt64>(0)
    let refused = Atomic<UInt64>(0)
    let accepted = Atomic<UInt64>(0)
    let resyncsCompleted = Atomic<UInt64>(0)
    let staleRemoved = Atomic<UInt64>(0)
    let lastRefusal = Mutex<String?>(nil)

    func refuse(_ why: String) {
        refused.add(1, ordering: .relaxed)
        lastRefusal.withLock { $0 = why }
    }

    func snapshot(storeEntries: Int) -> LocalNodeStatistics {
        var s = LocalNodeStatistics()
        s.receive = receive.load(ordering: .relaxed)
        s.receiveError = receiveError.load(ordering: .relaxed)
        s.refusedConnections = refused.load(ordering: .relaxed)
        s.acceptedConnections = accepted.load(ordering: .relaxed)
        s.resyncsCompleted = resyncsCompleted.load(ordering: .relaxed)
        s.staleRemoved = staleRemoved.load(ordering: .relaxed)
        s.storeEntries = storeEntries
        s.lastRefusal = lastRefusal.withLock { $0 }
        return s
    }
}
