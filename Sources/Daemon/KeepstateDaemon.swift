import ConntrackModel
public import Config
import Dataplane
import Foundation
import KernelDataplane
public import Logging
import NIOCore
import NIOPosix
import SyncEngine

/// The daemon: its configuration, HA groups, VRFs (each a dataplane and a sync engine) and the
/// control socket. An actor: control requests, reloads and state changes run one at a time.
public actor KeepstateDaemon {
    public struct Options: Sendable {
        public var configPath: String
        public var socketPath: String
        /// When set, the control socket is group-readable and -writable by this group.
        public var socketGroup: String?
        public var dataplaneFactory: DataplaneFactory

        public init(configPath: String, socketPath: String = KeepstateDaemon.defaultSocketPath, socketGroup: String? = nil,
                    dataplaneFactory: DataplaneFactory? = nil) {
            self.configPath = configPath
            self.socketPath = socketPath
            self.socketGroup = socketGroup
            self.dataplaneFactory = dataplaneFactory ?? { vrf in
                try KernelDataplane(vrf: vrf.name, netnsPath: vrf.netns.map { "/run/netns/\($0)" })
            }
        }
    }

    public static let defaultSocketPath = "/run/keepstate/keepstate.sock"

    let options: Options
    let logger: Logger
    private var config: KeepstateConfig
    private var groups: [String: HAGroupState] = [:]
    /// Overrides survive reloads (and only reloads): they are the operator's, not the file's.
    private var overrides: [String: StateOverride] = [:]
    private var vrfs: [String: VRFRuntime] = [:]
    /// VRFs whose dataplane or engine failed to start, and why; the others run regardless.
    private var failed: [String: String] = [:]
    private let eventLoops: MultiThreadedEventLoopGroup
    /// VRRP's own thread: adverts are sent and received on time while the sync connections'
    /// threads are busy with a resync (a master's advert late by Master_Down_Interval, 0.34 s
    /// at `advert_int 0.1`, makes its backup take over).
    private let vrrpLoop: MultiThreadedEventLoopGroup
    private var control: ControlServer?
    private var vrrp: VRRPSupervisor?
    private let started = ContinuousClock.now
    /// Where the metrics listener binds (read at start; a reload does not move it).
    var metricsListen: ListenEndpoint? { config.metricsListen }

    /// Loads and validates the configuration; nothing starts until `start`.
    public init(options: Options, logger: Logger) throws {
        self.options = options
        self.logger = logger
        self.config = try ConfigLoader.load(path: options.configPath)
        eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        vrrpLoop = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    /// Opens the control socket, the dataplanes and the sync engines, and sets every group's
    /// initial state. A VRF that fails to start is reported (log, `show state`) and the others
    /// run.
    public func start() async throws {
        control = try await ControlServer.start(
            path: options.socketPath, group: options.socketGroup, eventLoops: eventLoops, logger: logger
        ) { [weak self] request in
            guard let self else { return .failure("daemon stopping") }
            return await self.handle(request)
        }
        buildGroups()
        for vrf in config.vrfs { await startVRF(vrf) }
        if !config.vrrpInstances.isEmpty {
            // After the VRFs: an instance that becomes master makes their conntracks forwardable
            // first. If VRRP cannot start, nothing stays running.
            do {
                let supervisor = try await prepareVRRP(config)
                await supervisor.begin(carried: [:])
                vrrp = supervisor
            } catch {
                logger.error("VRRP could not start; stopping", metadata: ["error": "\(error)"])
                await shutdown()
                throw error
            }
        }
        logger.notice("keepstate running", metadata: [
            "config": "\(options.configPath)", "vrfs": "\(config.vrfs.map(\.name).joined(separator: ","))",
            "socket": "\(options.socketPath)",
        ])
    }

    /// Each VRF's TLS files read as the sync engine reads them (certificate, key, CA; the key
    /// matches the certificate): one `FILE:LINE:COL: error: ...` line per VRF whose files fail.
    /// `check-config`, `run` and a reload all refuse a configuration that has any.
    public static func tlsProblems(_ config: KeepstateConfig) -> [String] {
        config.vrfs.compactMap { vrf in
            guard let tls = vrf.sync?.tls else { return nil }
            do {
                _ = try TLSMaterial(caPath: tls.ca, certificatePath: tls.certificate, keyPath: tls.key)
                return nil
            } catch {
                return "\(tls.certificateLocation): error: \(error)"
            }
        }
    }

    /// The VRRP instances of `config`, their sockets open, not started.
    private func prepareVRRP(_ config: KeepstateConfig) async throws -> VRRPSupervisor {
        try await VRRPSupervisor.prepare(
            config: config, eventLoop: vrrpLoop.next(), logger: logger,
            willBecomeMaster: { [weak self] groups in
                await self?.drive(Dictionary(uniqueKeysWithValues: groups.map { ($0, SyncRole.master) }))
            },
            drive: { [weak self] roles in await self?.drive(roles) },
            failbackHold: { [weak self] groups in await self?.failbackHold(groups) ?? .none })
    }

    public func shutdown() async {
        logger.notice("keepstate stopping")
        // VRRP first: a master hands over at once (priority 0) while the VRFs still sync.
        await vrrp?.shutdown()
        vrrp = nil
        for v in vrfs.values { await v.stop() }
        vrfs = [:]
        await control?.close()
        control = nil
        try? await eventLoops.shutdownGracefully()
        try? await vrrpLoop.shutdownGracefully()
    }

    // MARK: groups

    private func buildGroups() {
        let now = ContinuousClock.now
        var next: [String: HAGroupState] = [:]
        for g in config.haGroups {
            let role: SyncRole = g.staticState == .master ? .master : .backup
            if var old = groups[g.name] {
                _ = old.drive(role, now: now)
                next[g.name] = old
            } else {
                next[g.name] = HAGroupState(name: g.name, kind: .static, driven: role, override: overrides[g.name] ?? .auto, now: now)
            }
        }
        // VRRP groups start as backup; their runners drive them.
        let vrrpGroups = config.vrrpInstances.map { ($0.name, GroupKind.vrrpInstance) }
            + config.vrrpSyncGroups.map { ($0.name, GroupKind.vrrpSyncGroup) }
        for (name, kind) in vrrpGroups {
            next[name] = groups[name] ?? HAGroupState(name: name, kind: kind, driven: .backup, override: overrides[name] ?? .auto, now: now)
        }
        groups = next
        overrides = overrides.filter { next[$0.key] != nil }
    }

    /// Whether an instance that is not master must keep its priority held down, and for how
    /// long at most: some VRF following `groups` has not received its full resync from the
    /// master yet (`failback_hold_max` of those VRFs, the longest).
    func failbackHold(_ groups: [String]) -> FailbackHold {
        var behind: [String] = []
        var masterPeer = false
        var bound = 0.0
        for v in vrfs.values {
            guard let name = groupName(of: v.config), groups.contains(name), let sync = v.config.sync,
                  sync.failbackHoldMax > 0 else { continue }
            bound = max(bound, sync.failbackHoldMax)
            if !v.resyncedFromPeer { behind.append(v.config.name) }
            if v.resyncFromPeerBegun { masterPeer = true }
        }
        return behind.isEmpty ? .none
            : FailbackHold(behind: true, bound: bound, masterPeerSending: masterPeer, vrfsBehind: behind.sorted())
    }

    /// VRRP's states: each group's driven role, then the VRFs that follow it. Awaited by an
    /// instance about to become master: the VRFs' synced conntracks are forwardable on return.
    func drive(_ roles: [String: SyncRole]) async {
        let now = ContinuousClock.now
        for (name, role) in roles.sorted(by: { $0.key < $1.key }) {
            guard var g = groups[name] else { continue }
            let before = g.driven
            let changed = g.drive(role, now: now)
            groups[name] = g
            if before != role {
                logger.notice("HA group driven by VRRP", metadata: [
                    "group": "\(name)", "from": "\(before.rawValue)", "to": "\(role.rawValue)",
                    "state": "\(g.effective.rawValue)", "override": "\(g.override.rawValue)",
                ])
            }
            if changed != nil { await apply(group: name) }
        }
    }

    private func groupName(of vrf: VRFConfig) -> String? { vrf.sync?.listenHAGroup }

    private func role(of vrf: VRFConfig) -> SyncRole {
        groupName(of: vrf).flatMap { groups[$0]?.effective } ?? .backup
    }

    /// Moves every VRF listening to `group` to its role.
    /// The group's role is read again for each VRF: a change made while one VRF waited for its
    /// takeover is what the next ones get (and the waiting one yields to it, `setRole`).
    private func apply(group name: String) async {
        for v in vrfs.values where groupName(of: v.config) == name {
            guard let want = groups[name]?.effective, v.targetRole != want else { continue }
            let from = v.role
            await v.setRole(want)
            guard v.role == want else { continue }
            logger.notice("VRF role changed", metadata: [
                "vrf": "\(v.config.name)", "group": "\(name)", "from": "\(from.rawValue)", "to": "\(want.rawValue)",
                "takeover": "\(v.lastTakeover.map { "\($0)" } ?? "-")",
            ])
        }
    }

    // MARK: VRFs

    private func startVRF(_ vrf: VRFConfig) async {
        do {
            let dataplane = try options.dataplaneFactory(vrf)
            let runtime = VRFRuntime(config: vrf, dataplane: dataplane, group: eventLoops, logger: logger)
            try await runtime.startSync(routerID: config.routerID, role: role(of: vrf))
            vrfs[vrf.name] = runtime
            failed[vrf.name] = nil
            logger.notice("VRF started", metadata: [
                "vrf": "\(vrf.name)", "netns": "\(vrf.netns ?? "(own)")", "role": "\(runtime.role.rawValue)",
                "conntracks": "\(dataplane.count)",
            ])
        } catch {
            failed[vrf.name] = "\(error)"
            logger.error("VRF could not start; the other VRFs run", metadata: ["vrf": "\(vrf.name)", "error": "\(error)"])
        }
    }

    // MARK: requests

    func handle(_ request: ControlRequest) async -> ControlReply {
        switch request.command {
        case .showState:
            var reply = ControlReply(ok: true)
            reply.state = await stateReport(vrf: request.vrf)
            return reply
        case .showPeer:
            var peers: [SyncStatistics] = []
            for name in vrfs.keys.sorted() where request.vrf == nil || request.vrf == name {
                if let s = await vrfs[name]?.engine?.statistics() { peers.append(s) }
            }
            if let v = request.vrf, vrfs[v] == nil { return .failure(unknownVRF(v)) }
            var reply = ControlReply(ok: true)
            reply.peers = peers
            return reply
        case .showConntracks:
            if let v = request.vrf, vrfs[v] == nil { return .failure(unknownVRF(v)) }
            if let limit = request.limit, limit < 0 { return .failure("limit must be 0 or more (got \(limit))") }
            let unsyncedLimit = request.unsynced == true ? request.limit ?? ControlRequest.defaultUnsyncedLimit : nil
            var proto: IPProtocolNumber?
            if let name = request.proto {
                guard let p = IPProtocolNumber(name: name) else {
                    return .failure("unknown protocol \(name): give \(IPProtocolNumber.nameHelp)")
                }
                proto = p
            }
            var reply = ControlReply(ok: true)
            var counts: [ConntrackCounts] = []
            for name in vrfs.keys.sorted() where request.vrf == nil || request.vrf == name {
                if let runtime = vrfs[name] { counts.append(await runtime.counts(unsynced: unsyncedLimit, proto: proto)) }
            }
            reply.conntracks = counts
            return reply
        case .showVRRP:
            let names = config.vrrpInstances.map(\.name)
            if let i = request.instance, !names.contains(i) {
                return .failure(names.isEmpty ? "no vrrp_instance \(i): the configuration has no VRRP"
                                : "no vrrp_instance \(i) (configured: \(names.joined(separator: ", ")))")
            }
            var reply = ControlReply(ok: true)
            reply.vrrp = await vrrp?.showReport(instance: request.instance) ?? VRRPReport()
            return reply
        case .setState:
            return await setState(group: request.group, state: request.state)
        case .sync:
            guard let v = request.vrf else { return .failure("sync needs a VRF: keepstate sync --vrf NAME") }
            guard let runtime = vrfs[v] else { return .failure(unknownVRF(v)) }
            guard runtime.role == .master, let engine = runtime.engine else {
                return .failure("VRF \(v) is \(runtime.role.rawValue) here: run the forced synchronization on the master")
            }
            // Answer at once; the engine logs the completion (counts and duration).
            Task { _ = await engine.forcedSync() }
            return ControlReply(ok: true, message: "synchronization of VRF \(v) started, completion will appear in the log")
        case .reload:
            return await reload()
        }
    }

    private func unknownVRF(_ name: String) -> String {
        "no VRF \(name) (configured: \(config.vrfs.map(\.name).joined(separator: ", ")))"
    }

    func setState(group: String?, state: String?) async -> ControlReply {
        guard let name = group, var g = groups[name] else {
            return .failure("no HA group \(group ?? "(none given)") (configured: \(groups.keys.sorted().joined(separator: ", ")))")
        }
        guard let o = state.flatMap({ StateOverride(rawValue: $0.lowercased()) }) else {
            return .failure("state must be master, backup or auto (got \(state ?? "nothing"))")
        }
        let changed = g.setOverride(o, now: .now)
        groups[name] = g
        overrides[name] = o == .auto ? nil : o
        logger.notice("state override set", metadata: [
            "group": "\(name)", "override": "\(o.rawValue)", "state": "\(g.effective.rawValue)",
        ])
        if changed != nil { await apply(group: name) }
        return ControlReply(ok: true, message: "group \(name): override \(o.rawValue), state \(g.effective.rawValue)")
    }

    /// Loads the configuration again. An invalid one is refused whole and the running one
    /// stays. Otherwise: removed VRFs stop, new ones start, changed sync settings restart only
    /// that VRF's connections (its table stays), and groups take their new static states.
    public func reload() async -> ControlReply {
        let new: KeepstateConfig
        do {
            new = try ConfigLoader.load(path: options.configPath)
            try new.validateFiles()
        } catch {
            logger.error("reload refused; the running configuration stays", metadata: ["error": "\(error)"])
            return .failure("reload refused, the running configuration stays:\n\(error)")
        }
        // The TLS files as `check-config` reads them: a VRF whose new files fail would otherwise
        // stop syncing after an `ok`.
        let tlsProblems = Self.tlsProblems(new)
        if !tlsProblems.isEmpty {
            let text = tlsProblems.joined(separator: "\n")
            logger.error("reload refused; the running configuration stays", metadata: ["error": "\(text)"])
            return .failure("reload refused, the running configuration stays:\n\(text)")
        }
        let old = config
        // Changed VRRP settings: the new instances' sockets are opened first (a failure refuses
        // the reload with the running instances untouched); after the VRFs, the running
        // instances stop without leaving their virtual routers and the new ones start in the
        // state each had (docs/vrrp.md, "Reload").
        let vrrpChanged = Self.vrrpSettings(old) != Self.vrrpSettings(new)
        var nextVRRP: VRRPSupervisor?
        if vrrpChanged {
            if let refusal = VRRPSupport.refusals(new).first {
                logger.error("reload refused; the running configuration stays", metadata: ["error": "\(refusal)"])
                return .failure("reload refused, the running configuration stays:\n\(refusal)")
            }
            if !new.vrrpInstances.isEmpty {
                do {
                    nextVRRP = try await prepareVRRP(new)
                } catch {
                    logger.error("reload refused; the running configuration stays", metadata: ["error": "\(error)"])
                    return .failure("reload refused, the running configuration stays:\n\(error)")
                }
            }
        }
        config = new
        buildGroups()
        var changes: [String] = []
        for vrf in old.vrfs where new.vrf(named: vrf.name) == nil {
            await vrfs[vrf.name]?.stop()
            vrfs[vrf.name] = nil
            failed[vrf.name] = nil
            changes.append("removed VRF \(vrf.name)")
        }
        for vrf in new.vrfs {
            // A VRF whose dataplane lost its table (its namespace deleted or replaced) is
            // opened again, in the namespace its name now gives.
            if let runtime = vrfs[vrf.name], old.vrf(named: vrf.name)?.netns == vrf.netns, !runtime.dataplane.tableLost {
                if old.vrf(named: vrf.name) != vrf || old.routerID != new.routerID {
                    do {
                        try await runtime.reconfigure(vrf, routerID: new.routerID)
                        changes.append("updated VRF \(vrf.name)")
                    } catch {
                        failed[vrf.name] = "\(error)"
                        changes.append("VRF \(vrf.name) failed: \(error)")
                    }
                }
            } else {
                await vrfs[vrf.name]?.stop()
                vrfs[vrf.name] = nil
                await startVRF(vrf)
                changes.append("started VRF \(vrf.name)")
            }
        }
        if vrrpChanged {
            let carried = await vrrp?.detachForReload(next: new) ?? [:]
            vrrp = nextVRRP
            await nextVRRP?.begin(carried: carried)
            let kept = carried.keys.sorted().map { "\($0) \(carried[$0]!)" }
            let fresh = new.vrrpInstances.map(\.name).filter { carried[$0] == nil }.sorted()
            changes.append("VRRP restarted (carried over: \(kept.isEmpty ? "none" : kept.joined(separator: ", "))"
                + (fresh.isEmpty ? "" : "; new: \(fresh.joined(separator: ", "))") + ")")
        }
        for name in groups.keys.sorted() { await apply(group: name) }
        let summary = changes.isEmpty ? "no change" : changes.joined(separator: "; ")
        logger.notice("configuration reloaded", metadata: ["changes": "\(summary)"])
        return ControlReply(ok: true, message: "reloaded: \(summary)")
    }

    /// The VRRP part of a configuration without the places it was read from (moving a block
    /// or adding a comment is no change).
    struct VRRPSettings: Equatable {
        var globals: VRRPGlobals
        var scripts: [VRRPScriptSpec]
        var instances: [VRRPInstanceSpec]
        var syncGroups: [VRRPSyncGroupSpec]
    }

    static func vrrpSettings(_ c: KeepstateConfig) -> VRRPSettings {
        let nowhere = SourceLocation(file: "", line: 0, column: 0)
        func bare(_ s: ScriptCommandSpec?) -> ScriptCommandSpec? {
            s.map { var x = $0; x.location = nowhere; return x }
        }
        func bare(_ n: NotifySpec) -> NotifySpec {
            NotifySpec(master: bare(n.master), backup: bare(n.backup), fault: bare(n.fault), stop: bare(n.stop), generic: bare(n.generic))
        }
        func bare(_ a: [VirtualAddressSpec]) -> [VirtualAddressSpec] { a.map { var x = $0; x.location = nowhere; return x } }
        return VRRPSettings(
            globals: c.vrrpGlobals,
            scripts: c.vrrpScripts.map { var x = $0; x.location = nowhere; x.command = bare(x.command)!; return x },
            instances: c.vrrpInstances.map { i in
                var x = i
                x.location = nowhere
                x.virtualAddresses = bare(x.virtualAddresses)
                x.excludedAddresses = bare(x.excludedAddresses)
                x.unicastPeers = x.unicastPeers.map { var p = $0; p.location = nowhere; return p }
                x.trackInterfaces = x.trackInterfaces.map { var t = $0; t.location = nowhere; return t }
                x.trackScripts = x.trackScripts.map { var t = $0; t.location = nowhere; return t }
                x.notify = bare(x.notify)
                return x
            },
            syncGroups: c.vrrpSyncGroups.map { var x = $0; x.location = nowhere; x.notify = bare(x.notify); return x })
    }

    func stateReport(vrf only: String?) async -> StateReport {
        let now = ContinuousClock.now
        var groupReports: [GroupReport] = []
        var instances: [String: VRRPSupervisor.InstanceReport] = [:]
        for r in await vrrp?.reports() ?? [] { instances[r.name] = r }
        for name in groups.keys.sorted() {
            let g = groups[name]!
            let i = instances[name]
            groupReports.append(GroupReport(
                name: name, kind: g.kind.rawValue, driven: g.driven.rawValue, override: g.override.rawValue,
                state: g.effective.rawValue, since: (now - g.since).seconds, transitions: g.transitions,
                vrfs: config.vrfs.filter { groupName(of: $0) == name }.map(\.name),
                vrrpState: i.map { "\($0.state)" }, vrrpPriority: i.map { Int($0.priority) }, vrrpFault: i?.fault))
        }
        var vrfReports: [VRFReport] = []
        for vrf in config.vrfs where only == nil || only == vrf.name {
            if let runtime = vrfs[vrf.name] {
                vrfReports.append(await runtime.report(groupName: groupName(of: vrf)))
            } else {
                vrfReports.append(VRFReport(
                    name: vrf.name, netns: vrf.netns, group: groupName(of: vrf), role: "down", conntracks: 0, held: 0,
                    holdQueue: 0, holdRefused: 0, lastTakeoverSeconds: nil, lastRearm: nil, connectionsEstablished: 0,
                    connections: 0, dataplaneError: failed[vrf.name]))
            }
        }
        return StateReport(
            routerID: config.routerID, configFile: options.configPath, uptime: (now - started).seconds,
            groups: groupReports, vrfs: vrfReports)
    }
}
