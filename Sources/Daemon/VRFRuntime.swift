import ConntrackModel
public import Config
public import Dataplane
import Logging
import NIOCore
public import SyncEngine
public import SyncPolicy
import SyncProtocol

/// Opens a VRF's dataplane: the kernel table of its namespace in the daemon, a memory table in
/// tests without root.
public typealias DataplaneFactory = @Sendable (VRFConfig) throws -> any Dataplane

extension SyncSettings {
    /// The engine settings of one VRF of a validated configuration, or nil when the VRF does
    /// not sync (it has no `ha_fp_conntrack` block).
    public init?(vrf: VRFConfig, routerID: String) {
        guard let sync = vrf.sync else { return nil }
        self.init(
            vrf: vrf.name,
            nodeID: routerID,
            peerName: sync.peer.name,
            source: sync.peer.source,
            peerAddress: sync.peer.address,
            peerPort: Int(sync.peer.port),
            listenPort: Int(sync.peer.port),
            peerIdentity: sync.peer.identity,
            connections: sync.eventThreads,
            heartbeatInterval: .nanoseconds(Int64(sync.heartbeatInterval * 1e9)),
            deadInterval: .nanoseconds(Int64(sync.deadInterval * 1e9)),
            queueLimit: sync.sendQueueLimit,
            syncSettings: vrf.syncSettings().map { SyncSettingPair(key: $0.key, value: $0.value) },
            rulesetCheck: sync.rulesetCheckInterval > 0)
    }

    /// Whether a reload from `self` to `other` needs new sync connections.
    func differs(from other: SyncSettings) -> Bool {
        vrf != other.vrf || nodeID != other.nodeID || peerName != other.peerName || source != other.source
            || peerAddress != other.peerAddress || peerPort != other.peerPort || listenPort != other.listenPort
            || peerIdentity != other.peerIdentity || connections != other.connections
            || heartbeatInterval != other.heartbeatInterval || deadInterval != other.deadInterval
            || queueLimit != other.queueLimit || syncSettings != other.syncSettings || rulesetCheck != other.rulesetCheck
    }
}

extension PolicySettings {
    /// The sync rules of one VRF of a validated configuration (`conntrack_timeouts`,
    /// `ha_delays`); every other setting keeps the policy's default (hold 14 days, grace
    /// window W = G, `kernelExpiry`).
    public init(vrf: VRFConfig) {
        func protocolPolicy(_ d: ProtocolDelays) -> ProtocolPolicy {
            ProtocolPolicy(synchronizationSeconds: d.synchronization, undefinedGracePeriodSeconds: d.undefinedGracePeriod)
        }
        self.init(
            tcpUndefined: vrf.timeouts.tcpUndefined, tcp: protocolPolicy(vrf.delays.tcp), udp: protocolPolicy(vrf.delays.udp),
            icmp: protocolPolicy(vrf.delays.icmp))
    }
}

/// One VRF in the daemon: its dataplane (kept across reloads) and its sync engine.
final class VRFRuntime {
    private(set) var config: VRFConfig
    let dataplane: any Dataplane
    private(set) var engine: SyncEngine?
    private(set) var settings: SyncSettings?
    private(set) var tlsFiles: TLSFiles?
    private(set) var role: SyncRole = .backup
    private(set) var lastTakeover: Duration?
    /// The ruleset check (a VRF that syncs, unless `ruleset_check_interval 0`).
    private var rulesetWatcher: RulesetWatcher?
    private let group: any EventLoopGroup
    private let logger: Logger

    init(config: VRFConfig, dataplane: any Dataplane, group: any EventLoopGroup, logger: Logger) {
        self.config = config
        self.dataplane = dataplane
        self.group = group
        var logger = logger
        logger[metadataKey: "vrf"] = "\(config.name)"
        self.logger = logger
        // One line when the table stops being followed (namespace gone, dumps failing) and one
        // when it is followed again: `show state` alone would leave monitoring blind to it.
        dataplane.onProblemChange { [logger] problem in
            if let problem {
                logger.error("the VRF's conntrack table is not followed", metadata: ["error": "\(problem)"])
            } else {
                logger.notice("the VRF's conntrack table is followed again")
            }
        }
    }

    /// Starts (or restarts, after a reload that changed the sync settings) the sync engine. The
    /// dataplane and what it holds stay: a new engine adopts the held entries and the peer
    /// resyncs them.
    nonisolated(nonsending) func startSync(routerID: String, role: SyncRole) async throws {
        // The TLS files first: if they fail, the running engine keeps running.
        let sync = config.sync
        let settings = SyncSettings(vrf: config, routerID: routerID)
        let tls = try sync.map { try TLSMaterial(caPath: $0.tls.ca, certificatePath: $0.tls.certificate, keyPath: $0.tls.key) }
        if let engine {
            await engine.shutdown()
            self.engine = nil
        }
        guard let sync, let settings, let tls else {
            updateRulesetWatcher(engine: nil)
            // No engine decides any more: the table is followed whole.
            dataplane.setEventScope(.all)
            return
        }
        let engine = SyncEngine(settings: settings, tls: tls, dataplane: dataplane, group: group, logger: logger,
                                policy: PolicySettings(vrf: config))
        // Before the listener and the connections: the first hellos carry the last fingerprint.
        updateRulesetWatcher(engine: engine)
        do {
            try engine.adoptHeld()
            engine.setRole(role)
            self.role = role
            try await engine.startListening()
        } catch {
            // Nothing of a failed start keeps running: not the ruleset watcher (its thread and
            // its `nft` runs, one more at each reload that retried the VRF), not the engine.
            updateRulesetWatcher(engine: nil)
            await engine.shutdown()
            // No engine decides any more (this one may have narrowed it as backup).
            dataplane.setEventScope(.all)
            throw error
        }
        engine.startSending()
        self.engine = engine
        self.settings = settings
        self.tlsFiles = sync.tls
    }

    /// Takes a changed configuration of the same VRF; restarts the engine only when its
    /// settings or TLS files changed.
    nonisolated(nonsending) func reconfigure(_ new: VRFConfig, routerID: String) async throws {
        let old = settings
        config = new
        let next = SyncSettings(vrf: new, routerID: routerID)
        let same: Bool
        switch (old, next) {
        case (nil, nil): same = true
        case (let a?, let b?): same = !a.differs(from: b) && tlsFiles == new.sync?.tls
        default: same = false
        }
        if same {
            // A reload reads the ruleset again (and takes a new interval).
            updateRulesetWatcher(engine: engine)
            return
        }
        logger.notice("sync settings changed: restarting the sync connections (the table stays)")
        try await startSync(routerID: routerID, role: role)
    }

    /// Starts, re-points or stops the ruleset check for `engine` as the configuration says.
    private func updateRulesetWatcher(engine: SyncEngine?) {
        guard let engine, let interval = config.sync?.rulesetCheckInterval, interval > 0 else {
            rulesetWatcher?.stop()
            rulesetWatcher = nil
            return
        }
        if let w = rulesetWatcher {
            w.reconfigure(interval: interval)
            w.attach(engine)
        } else {
            let w = RulesetWatcher(netns: config.netns, interval: interval, logger: logger)
            w.attach(engine)
            w.start()
            rulesetWatcher = w
        }
    }

    /// Backup to master: every synced conntrack forwardable first, then the role (the caller
    /// moves addresses in between when VRRP drives), then the timeouts re-armed in the background.
    nonisolated(nonsending) func prepareMaster() async -> Duration? {
        guard role == .backup, let engine else { return nil }
        let took = await engine.prepareTakeover()
        lastTakeover = took
        return took
    }

    /// Moves to `new`. A call made while another waits in `prepareMaster` wins: the waiting one
    /// then returns without changing the role.
    nonisolated(nonsending) func setRole(_ new: SyncRole) async {
        guard new != targetRole else { return }
        pendingRole = new
        if new == .master { _ = await prepareMaster() }
        guard pendingRole == new else { return }
        pendingRole = nil
        role = new
        guard let engine else { return }
        engine.setRole(new)
        if new == .master { engine.rearmAfterTakeover() }
    }

    /// The role a `setRole` in progress moves to, if any.
    private var pendingRole: SyncRole?
    /// The role this VRF has or is moving to.
    var targetRole: SyncRole { pendingRole ?? role }

    /// Whether this VRF, as backup, holds a completed resync from its peer (true without sync).
    var resyncedFromPeer: Bool { engine?.resyncedFromPeer ?? true }

    /// Whether a master peer has begun sending its table to this VRF (false without sync).
    var resyncFromPeerBegun: Bool { engine?.resyncFromPeerBegun ?? false }

    nonisolated(nonsending) func stop() async {
        rulesetWatcher?.stop()
        rulesetWatcher = nil
        if let engine { await engine.shutdown() }
        engine = nil
        // The kernel table's event thread holds the dataplane until told to stop.
        dataplane.stop()
    }

    nonisolated(nonsending) func report(groupName: String?) async -> VRFReport {
        let stats = await engine?.statistics()
        let holder = engine?.holderStatistics
        var report = VRFReport(
            name: config.name, netns: config.netns, group: groupName, role: role.rawValue,
            conntracks: dataplane.count, held: engine?.store.count ?? 0, holdQueue: holder?.queued ?? 0,
            holdRefused: holder?.refused ?? 0, lastTakeoverSeconds: lastTakeover.map(\.seconds),
            lastRearm: holder?.lastRearm?.rearmed,
            connectionsEstablished: stats?.connections.filter { $0.connectionStatus == .established }.count ?? 0,
            connections: stats?.connections.count ?? 0, dataplaneError: dataplane.dataplaneError)
        if role == .master, let engine { report.synced = engine.policyStatistics.synced }
        if let engine {
            let drift = engine.configDrift
            report.drift = drift.kind.rawValue
            report.driftReason = drift.reason
            report.driftDetails = drift.details
            report.rulesetDigest = engine.localRuleset.map { "\($0)" } ?? "unknown (not read yet)"
            report.peerRulesetDigest = engine.peerRuleset.map { "\($0)" }
        }
        return report
    }

    /// `show conntracks`; with `unsynced`, also the conntracks not synced (a dump of the table).
    nonisolated(nonsending) func counts(unsynced limit: Int?, proto: IPProtocolNumber? = nil) async -> ConntrackCounts {
        var synced: [String: [String: Int]] = [:]
        for c in engine?.syncedConntracks() ?? dataplane.snapshot(share: 0, of: 1) where proto == nil || c.proto == proto {
            let state = c.proto == .tcp ? "\(c.tcpState)" : "-"
            synced["\(c.proto)", default: [:]][state, default: 0] += 1
        }
        var out = ConntrackCounts(vrf: config.name, synced: synced, held: engine?.store.count ?? 0, role: role.rawValue)
        if role == .master { out.pending = engine?.policyStatistics.candidates }
        if let limit {
            if let engine {
                out.unsynced = await engine.unsynced(limit: limit, proto: proto)
            } else {
                out.unsynced = UnsyncedListing(role: role.rawValue, note: "this VRF does not sync")
            }
        }
        return out
    }
}

