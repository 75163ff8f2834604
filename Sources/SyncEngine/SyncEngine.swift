public import ConntrackModel
public import Dataplane
public import Logging
public import NIOCore
public import SyncPolicy
public import SyncProtocol
import Synchronization

/// The HA role of a node for one VRF. Only the master sends conntracks.
public enum SyncRole: String, Sendable, Codable {
    case master
    case backup
}

/// The sync of one VRF with its peer: a TLS listener that feeds the backup store, and
/// `connections` TLS connections that carry this node's table to the peer while it is master,
/// as the sync policy decides (docs/semantics.md).
public final class SyncEngine: Sendable {
    public let settings: SyncSettings
    /// The sync rules of this VRF; nil: pass-through (every change the dataplane reports goes
    /// to the peer as it is; for transport tests and benchmarks).
    public let policy: PolicySettings?
    /// What the peer sent: the conntracks this node would take over on failover.
    public let store: BackupStore
    private let tls: TLSMaterial
    private let dataplane: any Dataplane
    private let group: any EventLoopGroup
    private let logger: Logger
    private let connections: [ShareConnection]
    /// The master side: the policy between the dataplane's changes and the connections.
    private let gate: MasterGate
    /// Writes what the store receives into the dataplane (nil: the store only keeps it).
    private let holder: BackupHolder?
    /// This node's configuration against the peer's.
    private let monitor: DriftMonitor
    private let state = Mutex<(role: SyncRole, listener: SyncListener?, switchAt: NIODeadline?, failover: FailoverSummary?,
                               plan: [ConntrackKey: PolicyInstant]?, scopeAfterRearm: Bool)>((.backup, nil, nil, nil, nil, false))

    /// With `hold` set (the default), every conntrack received from the peer is also written
    /// into `dataplane` at once, with the hold timeout, so that it is forwardable the moment this
    /// node takes over (see `prepareTakeover`). With nil, the store only keeps it.
    ///
    /// `policy` decides which conntracks go to the peer and with which timeout, and how the
    /// failover re-arms them; nil passes every change on as the dataplane reports it (and
    /// re-arms with the default rules).
    public init(
        settings: SyncSettings, tls: TLSMaterial, dataplane: any Dataplane, group: any EventLoopGroup,
        logger: Logger, hold: HoldPolicy? = HoldPolicy(), policy: PolicySettings? = nil
    ) {
        var logger = logger
        logger[metadataKey: "vrf"] = "\(settings.vrf)"
        logger[metadataKey: "peer"] = "\(settings.peerName)"
        self.settings = settings
        self.policy = policy
        self.tls = tls
        self.dataplane = dataplane
        self.group = group
        self.logger = logger
        let monitor = DriftMonitor(localSettings: settings.syncSettings, compareRuleset: settings.rulesetCheck, logger: logger)
        self.monitor = monitor
        if let hold {
            // The store and the holder refer to each other: the store queues its changes on the
            // holder, the holder reads the store for a re-hold.
            let box = StoreBox()
            let holder = BackupHolder(
                policy: hold, dataplane: dataplane, logger: logger, storeEntries: { box.store?.dump() ?? [] },
                storeLookup: { box.store?[$0] })
            let store = BackupStore(onChange: { holder.enqueue($0) })
            box.store = store
            self.holder = holder
            self.store = store
        } else {
            self.holder = nil
            self.store = BackupStore()
        }
        let store = self.store
        let gate = MasterGate(settings: policy, dataplane: dataplane, logger: logger) { store.keys() }
        var seeds = SystemRandomNumberGenerator()
        self.connections = (0..<max(1, settings.connections)).map { i in
            ShareConnection(
                index: i, loop: group.next(), settings: settings, tls: tls,
                resyncSnapshot: { share, count in gate.resyncSnapshot(share: share, of: count) },
                tableComplete: { [dataplane] in dataplane.followsWholeTable },
                monitor: monitor, logger: logger, seed: seeds.next())
        }
        gate.connections = connections
        self.gate = gate
    }

    public var role: SyncRole { state.withLock { $0.role } }

    /// After a daemon restart: takes the entries the dataplane still holds from the earlier run
    /// into the store, so that the peer's first resync of each share removes those it no longer
    /// has. Returns how many were adopted.
    @discardableResult
    public func adoptHeld() throws -> Int {
        guard let holder else { return 0 }
        let held = try dataplane.held(above: holder.policy.threshold)
        let n = store.adopt(held, shares: connections.count)
        if n > 0 { logger.notice("adopted conntracks held by an earlier run", metadata: ["entries": "\(n)"]) }
        return n
    }

    /// The first half of a takeover, before the virtual addresses move: returns once every
    /// conntrack received from the peer so far is in the dataplane, forwardable. Its duration
    /// depends on how many writes were still queued, not on the size of the table.
    public func prepareTakeover() async -> Duration {
        state.withLock { $0.switchAt = .now() }
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
    /// their timeouts back as the failover rules say (docs/semantics.md, rules 3, 5 and 6):
    /// the synced timeout counted from the switch (the instant `prepareTakeover` began), or from
    /// a forced synchronization's stamp, with the grace period's random drop instants drawn from
    /// `seed` (default: at random). Each timeout is computed when it is written, so it still
    /// ends at the planned instant. Runs in the background; `holderStatistics` and
    /// `lastFailover` report it when done; with `keepPlan`, `lastFailoverPlan` gives the instant
    /// each entry was planned to expire at (tests and drills; it costs memory per entry).
    public func rearmAfterTakeover(seed: UInt64? = nil, keepPlan: Bool = false) {
        guard let holder else { return }
        let store = self.store
        let threshold = holder.policy.threshold
        let rules = policy ?? PolicySettings()
        // The switch `prepareTakeover` recorded (now, if it was not called); used once.
        let switchAt = PolicyClock.instant(state.withLock { s in
            defer { s.switchAt = nil }
            return s.switchAt ?? .now()
        })
        let random = RandomBox(seed: seed ?? UInt64.random(in: .min ... .max))
        let summary = Mutex(FailoverSummary())
        let plan = Mutex<[ConntrackKey: PolicyInstant]?>(keepPlan ? [:] : nil)
        holder.rearm(
            { kernel in
                // The synced timeout and stamp; an entry adopted from an earlier run has none of
                // its own (it carries the hold timeout): the kernel's default for its kind.
                var entry = store.heldEntry(kernel.key)
                let fallback = entry.map { $0.timeout > threshold } ?? true
                if fallback { entry = HeldEntry(key: kernel.key, timeout: Self.fallbackTimeout(kernel)) }
                guard let entry else { return nil }
                let r = FailoverPlan.reArm(entry, switchAt: switchAt, settings: rules, using: &random.generator)
                summary.withLock { f in
                    if fallback { f.fallback += 1 }
                    if r.countedFrom == switchAt { f.fromSwitch += 1 } else { f.fromStamp += 1 }
                    if r.dropAt != nil { f.graceDrops += 1 }
                }
                if keepPlan { plan.withLock { $0?[kernel.key] = r.expiresAt } }
                return r.timeout(writtenAt: PolicyClock.now())
            },
            done: { [weak self] in
                self?.rearmEnded()
                let f = summary.withLock { $0 }
                let p = plan.withLock { $0 }
                self?.state.withLock { s in
                    s.failover = f
                    s.plan = p
                }
                self?.logger.notice("failover timeouts", metadata: [
                    "from_switch": "\(f.fromSwitch)", "from_forced_sync": "\(f.fromStamp)", "grace_drops": "\(f.graceDrops)",
                    "without_synced_timeout": "\(f.fallback)",
                ])
            })
    }

    /// What the last `rearmAfterTakeover` did, once it is done.
    public var lastFailover: FailoverSummary? { state.withLock { $0.failover } }

    /// The expiry instant planned for each re-armed entry by the last `rearmAfterTakeover`
    /// that kept its plan (the grace period's drop instant, or the switch plus R).
    public var lastFailoverPlan: [ConntrackKey: PolicyInstant]? { state.withLock { $0.plan } }

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

    /// As backup: every share holds a completed resync from the peer, and what it received is
    /// written into the dataplane (the holder's queue is empty). A node that would take
    /// mastership back waits for this (`failback_hold_max`).
    public var resyncedFromPeer: Bool {
        store.resynced && (holder?.statistics.queued ?? 0) == 0
    }

    /// As backup: a master peer has begun sending its table (a resync began on a connection).
    public var resyncFromPeerBegun: Bool { store.resyncBegun }

    /// Binds the listener. Returns the port it listens on (useful with port 0 in tests).
    @discardableResult
    public func startListening() async throws -> Int {
        let endpoint = ReceiverEndpoint(settings: settings, store: store, monitor: monitor, logger: logger)
        applyEventScope(role)
        let listener = try await SyncListener.start(endpoint: endpoint, tls: tls, group: group)
        state.withLock { $0.listener = listener }
        logger.info("sync listener up", metadata: ["address": "\(settings.source)", "port": "\(listener.port)"])
        return listener.port
    }

    /// Subscribes to the dataplane (through the policy) and starts the connections to the peer
    /// at `peerPort` (default: the configured one). The connections send once the policy has
    /// taken the master role (`setRole`), before or after this call.
    public func startSending(peerPort: Int? = nil) {
        for c in connections {
            c.loop.execute { c.start(peerPort: peerPort) }
        }
        gate.start()
    }

    public func start() async throws {
        try await startListening()
        startSending()
    }

    /// A holding backup's own writes make the creations and updates of its table: it follows
    /// deletions only. A master follows everything: at once, or, after a takeover
    /// (`prepareTakeover`), once the re-arm is done. The re-arm writes a timeout into every held
    /// entry, and each write would come back as an event to read in the very seconds the flows'
    /// retransmissions need the CPU; what changed meanwhile is found by the reconciliation the
    /// wider scope starts with (the peer is gone then; a returning one gets it as updates).
    private func applyEventScope(_ role: SyncRole) {
        // Without holding, nothing this node writes comes back as events: the whole table,
        // whatever an earlier engine of the VRF had set.
        guard holder != nil else {
            dataplane.setEventScope(.all)
            return
        }
        let deferred = state.withLock { s in
            s.scopeAfterRearm = role == .master && s.switchAt != nil
            return s.scopeAfterRearm
        }
        if !deferred { dataplane.setEventScope(role == .master ? .all : .deletions) }
    }

    /// The re-arm after a takeover ended: a master deferred by `applyEventScope` follows
    /// everything now.
    private func rearmEnded() {
        let widen = state.withLock { s in
            defer { s.scopeAfterRearm = false }
            return s.scopeAfterRearm && s.role == .master
        }
        if widen { dataplane.setEventScope(.all) }
    }

    /// Master: send the table (each connection resyncs its share, then streams updates).
    /// Backup: stop sending; keep receiving.
    public func setRole(_ role: SyncRole) {
        let old = state.withLock { s in
            defer { s.role = role }
            return s.role
        }
        applyEventScope(role)
        guard old != role else { return }
        holder?.setHolding(role == .backup)
        logger.debug("sync role changed", metadata: ["from": "\(old.rawValue)", "to": "\(role.rawValue)"])
        // The policy takes the role first (adopting what this node held), then the connections:
        // role changes run in order on the policy's thread, so the last one wins everywhere.
        gate.setRole(master: role == .master)
    }

    // MARK: configuration drift

    /// This node's ruleset fingerprint for the VRF, as the ruleset check just read it. Goes to
    /// the peer at once (a RULESET message on every established connection whose peer speaks
    /// version 3), and with every later hello. Sent even when it did not change, so that the
    /// peer's view never stays older than one check.
    public func setLocalRuleset(_ ruleset: RulesetFingerprint) {
        monitor.setLocalRuleset(ruleset)
        guard settings.rulesetCheck else { return }
        for c in connections {
            c.loop.execute { c.sendRuleset(ruleset) }
        }
    }

    /// The comparison of this node's sync settings and ruleset with the peer's.
    public var configDrift: ConfigDrift { monitor.drift }

    /// This node's ruleset fingerprint (nil: not read yet).
    public var localRuleset: RulesetFingerprint? { monitor.localRuleset }

    /// What the peer last said of its ruleset (nil: nothing yet, or a peer before version 3).
    public var peerRuleset: RulesetFingerprint? { monitor.peer?.ruleset }

    /// Resyncs every share (an operator's request).
    public func resyncAll() {
        for c in connections { c.loop.execute { c.requestResync() } }
    }

    /// A forced synchronization (`keepstate sync --vrf NAME`, docs/semantics.md rule 6): a dump
    /// of the table, every eligible conntrack sent at once with the dump's instant as its
    /// activity stamp. Returns once every connection wrote its part (or dropped it), and logs
    /// the completion.
    public func forcedSync() async -> ForcedSyncReport {
        logger.notice("forced synchronization started")
        let report = await withCheckedContinuation { (c: CheckedContinuation<ForcedSyncReport, Never>) in
            gate.forcedSync { c.resume(returning: $0) }
        }
        if let error = report.error {
            logger.error("forced synchronization failed", metadata: ["error": "\(error)"])
        } else {
            logger.notice("forced synchronization complete", metadata: [
                "conntracks": "\(report.conntracks)", "records": "\(report.records)", "newly_synced": "\(report.newlySynced)",
                "skipped": "\(report.skipped.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","))",
                "connections_sent": "\(report.connectionsSent)", "connections_dropped": "\(report.connectionsDropped)",
                "dump_seconds": "\(String(format: "%.3f", report.dumpSeconds))",
                "duration_seconds": "\(String(format: "%.3f", report.seconds))",
            ])
        }
        return report
    }

    /// The conntracks of the table that are not synced, and why (a dump; at most `limit` listed;
    /// with `proto`, only that protocol's, counts and total included).
    public func unsynced(limit: Int, proto: IPProtocolNumber? = nil) async -> UnsyncedListing {
        await withCheckedContinuation { (c: CheckedContinuation<UnsyncedListing, Never>) in
            gate.unsynced(limit: max(limit, 0), proto: proto) { c.resume(returning: $0) }
        }
    }

    public var policyStatistics: PolicyStatistics { gate.statistics }

    /// The conntracks the peer holds as this node last sent them: on a master, the dataplane's
    /// table reduced by the policy (what a resync sends); on a backup, the conntracks that
    /// qualify (the dataplane's mirror).
    public func syncedConntracks() -> [Conntrack] {
        role == .master ? gate.resyncSnapshot(share: 0, of: 1) : dataplane.snapshot(share: 0, of: 1)
    }

    /// Drops connection `index` as a network failure would; it reconnects and resyncs.
    public func killConnection(_ index: Int) {
        guard connections.indices.contains(index) else { return }
        let c = connections[index]
        c.loop.execute { c.kill() }
    }

    /// Whether every connection is established, has sent its resync and has an empty queue, and
    /// the policy has no job waiting.
    public func isIdle() async -> Bool {
        guard gate.isIdle else { return false }
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
        let listener = state.withLock { s in
            defer { s.listener = nil }
            return s.listener
        }
        gate.stop()
        for c in connections {
            try? await c.loop.submit { c.stop() }.get()
        }
        await listener?.close()
        holder?.stop()
        // The event scope stays: a new engine (after a reload) sets its own, and a VRF that no
        // longer syncs widens it (`VRFRuntime`). Widening here would start a reconciliation
        // (a dump of the whole table, holding the writes) that the next engine does not want.
    }
}

/// Breaks the init-time cycle between the store and its holder.
private final class StoreBox: @unchecked Sendable {
    var store: BackupStore?
}

/// The failover's random source, used only on the holder's thread.
private final class RandomBox: @unchecked Sendable {
    var generator: SplitMix64
    init(seed: UInt64) { generator = SplitMix64(seed: seed) }
}
