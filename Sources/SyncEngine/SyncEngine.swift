import ConntrackModel
public import Dataplane
public import Logging
public import NIOCore
import SyncProtocol
import Synchronization

/// The HA role of a node for one VRF. Only the master sends conntracks.
public enum SyncRole: String, Sendable, Codable {
    case master
    case backup
}

/// The sync of one VRF with its peer: a TLS listener that feeds the backup store, and
/// `connections` TLS connections that carry this node's table to the peer while it is master.
public final class SyncEngine: Sendable {
    public let settings: SyncSettings
    /// What the peer sent: the conntracks this node would take over on failover.
    public let store: BackupStore
    private let tls: TLSMaterial
    private let dataplane: any Dataplane
    private let group: any EventLoopGroup
    private let logger: Logger
    private let connections: [ShareConnection]
    private let state = Mutex<(role: SyncRole, listener: SyncListener?, subscription: DataplaneSubscription?)>((.backup, nil, nil))

    public init(
        settings: SyncSettings, tls: TLSMaterial, dataplane: any Dataplane, group: any EventLoopGroup,
        logger: Logger, store: BackupStore = BackupStore()
    ) {
        var logger = logger
        logger[metadataKey: "vrf"] = "\(settings.vrf)"
        logger[metadataKey: "peer"] = "\(settings.peerName)"
        self.settings = settings
        self.tls = tls
        self.dataplane = dataplane
        self.group = group
        self.logger = logger
        self.store = store
        var seeds = SystemRandomNumberGenerator()
        self.connections = (0..<max(1, settings.connections)).map { i in
            ShareConnection(
                index: i, loop: group.next(), settings: settings, tls: tls, dataplane: dataplane,
                logger: logger, seed: seeds.next())
        }
    }

    public var role: SyncRole { state.withLock { $0.role } }

    /// Binds the listener. Returns the port it listens on (useful with port 0 in tests).
    @discardableResult
    public func startListening() async throws -> Int {
        let endpoint = ReceiverEndpoint(settings: settings, store: store, logger: logger)
        let listener = try await SyncListener.start(endpoint: endpoint, tls: tls, group: group)
        state.withLock { $0.listener = listener }
        logger.info("sync listener up", metadata: ["address": "\(settings.source)", "port": "\(listener.port)"])
        return listener.port
    }

    /// Subscribes to the dataplane and starts the connections to the peer at `peerPort`
    /// (default: the configured one).
    public func startSending(peerPort: Int? = nil) {
        let count = connections.count
        let conns = connections
        let subscription = dataplane.subscribe { updates in
            // Runs under the dataplane's lock: split by share and hop to each share's loop.
            if count == 1 {
                conns[0].loop.execute { conns[0].enqueue(updates) }
                return
            }
            var parts = [[ConntrackUpdate]](repeating: [], count: count)
            for u in updates { parts[u.key.share(of: count)].append(u) }
            for (i, part) in parts.enumerated() where !part.isEmpty {
                conns[i].loop.execute { conns[i].enqueue(part) }
            }
        }
        state.withLock { $0.subscription = subscription }
        for c in connections {
            c.loop.execute {
                // The role is read when this runs, after any earlier role change on this loop.
                c.setActive(self.role == .master)
                c.start(peerPort: peerPort)
            }
        }
    }

    public func start() async throws {
        try await startListening()
        startSending()
    }

    /// Master: send the table (each connection resyncs its share, then streams updates).
    /// Backup: stop sending; keep receiving.
    public func setRole(_ role: SyncRole) {
        let old = state.withLock { s in
            defer { s.role = role }
            return s.role
        }
        guard old != role else { return }
        logger.notice("sync role changed", metadata: ["from": "\(old.rawValue)", "to": "\(role.rawValue)"])
        for c in connections {
            // Read the role when the task runs: with two quick changes, the last one wins on
            // every connection whatever order the tasks were queued in.
            c.loop.execute { c.setActive(self.role == .master) }
        }
    }

    /// Resyncs every share (an operator's request).
    public func resyncAll() {
        for c in connections { c.loop.execute { c.requestResync() } }
    }

    /// Drops connection `index` as a network failure would; it reconnects and resyncs.
    public func killConnection(_ index: Int) {
        guard connections.indices.contains(index) else { return }
        let c = connections[index]
        c.loop.execute { c.kill() }
    }

    /// Whether every connection is established, has sent its resync and has an empty queue.
    public func isIdle() async -> Bool {
        for c in connections {
            let idle = try? await c.loop.submit { c.isIdle }.get()
            if idle != true { return false }
        }
        return true
    }

    public func statistics() async -> SyncStatistics {
        var conns: [ConnectionStatistics] = []
        for c in connections {
            if let s = try? await c.loop.submit({ c.statistics() }).get() { conns.append(s) }
        }
        let (role, listener) = state.withLock { ($0.role, $0.listener) }
        let local = listener?.endpoint.counters.snapshot(storeEntries: store.count) ?? LocalNodeStatistics()
        return SyncStatistics(
            vrf: settings.vrf, role: role.rawValue, peerName: settings.peerName, source: settings.source,
            address: settings.peerAddress, connections: conns, localNode: local)
    }

    public func shutdown() async {
        let (listener, subscription) = state.withLock { s in
            defer { s.listener = nil; s.subscription = nil }
            return (s.listener, s.subscription)
        }
        if let subscription { dataplane.unsubscribe(subscription) }
        for c in connections {
            try? await c.loop.submit { c.stop() }.get()
        }
        await listener?.close()
    }
}
