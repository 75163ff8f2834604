public import ConntrackModel
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
    /// Writes what the store receives into the dataplane (nil: the store only keeps it).
    private let holder: BackupHolder?
    private let state = Mutex<(role: SyncRole, listener: SyncListener?, subscription: DataplaneSubscription?)>((.backup, nil, nil))

    /// With `hold` set (the default), every conntrack received from the peer is also written
    /// into `dataplane` at once, with the hold timeout, so that it is forwardable the moment this
    /// node takes over (see `prepareTakeover`). With nil, the store only keeps it.
    public init(
        settings: SyncSettings, tls: TLSMaterial, dataplane: any Dataplane, group: any EventLoopGroup,
        logger: Logger, hold: HoldSettings? = HoldSettings()
    ) {
        var logger = logger
        logger[metadataKey: "vrf"] = "\(settings.vrf)"
        logger[metadataKey: "peer"] = "\(settings.peerName)"
        self.settings = settings
        self.tls = tls
        self.dataplane = dataplane
        self.group = group
        self.logger = logger
        if let hold {
            // The store and the holder refer to each other: the store queues its changes on the
            // holder, the holder reads the store for a re-hold.
            let box = StoreBox()
            let holder = BackupHolder(
                settings: hold, dataplane: dataplane, logger: logger, storeEntries: { box.store?.dump() ?? [] },
                storeLookup: { box.store?[$0] })
            let store = BackupStore(onChange: { holder.enqueue($0) })
            box.store = store
            self.holder = holder
            self.store = store
        } else {
            self.holder = nil
            self.store = BackupStore()
        }
        var seeds = SystemRandomNumberGenerator()
        self.connections = (0..<max(1, settings.connections)).map { i in
            ShareConnection(
                index: i, loop: group.next(), settings: settings, tls: tls, dataplane: dataplane,
                logger: logger, seed: seeds.next())
        }
    }

    public var role: SyncRole { state.withLock { $0.role } }

    /// After a daemon restart: takes the entries the dataplane still holds from the earlier run
    /// into the store, so that the peer's first resync of each share removes those it no longer
    /// has. Returns how many were adopted.
    @discardableResult
    public func adoptHeld() throws -> Int {
        guard let holder else { return 0 }
        let held = try dataplane.held(above: holder.settings.threshold)
        let n = store.adopt(held, shares: connections.count)
        if n > 0 { logger.notice("adopted conntracks held by an earlier run", metadata: ["entries": "\(n)"]) }
        return n
    }

    /// The first half of a takeover, before the virtual addresses move: returns once every
    /// conntrack received from the peer so far is in the dataplane, forwardable. Its duration
    /// depends on how many writes were still queued, not on the size of the table.
    public func prepareTakeover() async -> Duration {
        let start = ContinuousClock.now
        if let holder {
            await holder.flush()
        } else {
            // Without holding, the store is committed now: this grows with the table.
            let entries = store.dump()
            do {
                try dataplane.apply(entries.map { .upsert($0) })
            } catch {
                logger.error("failover commit incomplete", metadata: ["error": "\(error)"])
            }
        }
        let took = ContinuousClock.now - start
        logger.notice("synced conntracks forwardable", metadata: ["entries": "\(store.count)", "duration": "\(took)"])
        return took
    }

    /// The second half of a takeover, after the virtual addresses moved: the held entries get
    /// their own timeouts back, counted from now (`timeout` may change that, for the grace
    /// period and forced synchronization rules; nil leaves an entry held). Runs in the
    /// background; `holderStatistics` reports it when done.
    public func rearmAfterTakeover(_ timeout: (@Sendable (Conntrack) -> UInt32?)? = nil) {
        guard let holder else { return }
        let store = self.store
        let threshold = holder.settings.threshold
        holder.rearm { kernel in
            if let timeout { return timeout(kernel) }
            // The synced entry's timeout; an entry adopted from an earlier run has none of its
            // own (it carries the hold timeout): give it the kernel's default for its kind.
            guard let synced = store[kernel.key], synced.timeout <= threshold else {
                return Self.fallbackTimeout(kernel)
            }
            return synced.timeout
        }
    }

    /// The Linux defaults for an established entry of each kind.
    static func fallbackTimeout(_ c: Conntrack) -> UInt32 {
        switch c.proto {
        case .tcp: return 432_000
        case .udp: return 180
        default: return 30
        }
    }

    /// Waits until every held write and re-arm queued so far is done (tests, benchmarks).
    public func holderIdle() async {
        await holder?.flush()
    }

    public var holderStatistics: HolderStatistics? { holder?.statistics }

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
        holder?.setHolding(role == .backup)
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
        holder?.stop()
    }
}

/// Breaks the init-time cycle between the store and its holder.
private final class StoreBox: @unchecked Sendable {
    var store: BackupStore?
}
