public import Config
import Foundation
import Logging
import NIOCore
import NetlinkRoute
import SyncEngine
import VRRP
import VRRPNet

/// Adds and removes an instance's `virtual_ipaddress` and `virtual_ipaddress_excluded` entries
/// with libnl-route, each with its prefix, `dev` and `label`. Idempotent, as the runner needs.
struct NetlinkVirtualAddresses: VirtualAddressManager {
    let route: NetlinkRoute
    let specs: [VirtualAddressSpec]

    func addVirtualAddresses(_ addresses: [VRRPAddress], interface: String) async throws {
        for s in specs {
            guard let a = RouteAddress(s.address) else { continue }
            try route.addAddress(a, prefixLength: s.prefixLength, interface: s.dev ?? interface, label: s.label)
        }
    }

    func removeVirtualAddresses(_ addresses: [VRRPAddress], interface: String) async throws {
        var firstError: (any Error)?
        for s in specs {
            guard let a = RouteAddress(s.address) else { continue }
            do {
                try route.removeAddress(a, prefixLength: s.prefixLength, interface: s.dev ?? interface)
            } catch {
                firstError = firstError ?? error
            }
        }
        if let firstError { throw firstError }
    }
}

/// The runner's hook: before an instance adds its addresses, the daemon makes the synced
/// conntracks of every VRF following it (or its sync group) forwardable.
struct DaemonVRRPHooks: VRRPRunnerHooks {
    let groups: [String]
    let willBecomeMaster: @Sendable ([String]) async -> Void

    func willBecomeMaster(_ reason: VRRPTransitionReason) async {
        await willBecomeMaster(groups)
    }
}

/// What the daemon says of the VRFs following an instance's groups: whether one has not yet
/// received its full resync from the master, and the longest `failback_hold_max` of them.
struct FailbackHold: Sendable, Equatable {
    var behind: Bool
    var bound: Double
    /// A master peer has begun sending its table to a VRF behind (it is alive and master).
    var masterPeerSending = false
    /// The VRFs behind, by name (for `show vrrp`).
    var vrfsBehind: [String] = []
    static let none = FailbackHold(behind: false, bound: 0)
}

/// What the configuration parser accepts but `keepstate run` does not run.
public enum VRRPSupport {
    /// One message per refused setting, each starting with its FILE:LINE:COL (for `check-config`
    /// and the daemon's start).
    public static func refusals(_ config: KeepstateConfig) -> [String] {
        var out: [String] = []
        for spec in config.vrrpInstances {
            let at = "\(spec.location): error: vrrp_instance \(spec.name)"
            if spec.vmac != nil {
                out.append("\(at): use_vmac is not run by this build; remove it (the addresses then go on \(spec.interface) with its own MAC)")
            }
            if !spec.acceptMode && !spec.isAddressOwner {
                out.append("\(at): no_accept is not enforced by this build (nothing would drop traffic to the virtual addresses); "
                           + "remove it: a master accepts that traffic, as keepalived does by default")
            }
        }
        if config.vrrpGlobals.enableScriptSecurity {
            let user = config.vrrpGlobals.scriptUser
            var commands = config.vrrpScripts.map(\.command)
            for n in config.vrrpInstances.map(\.notify) + config.vrrpSyncGroups.map(\.notify) {
                commands += [n.master, n.backup, n.fault, n.stop, n.generic].compactMap { $0 }
            }
            for c in commands where (c.runAs ?? user).map({ $0.user == "root" }) ?? true {
                if let why = ScriptRunner.unsafeForRoot(c.arguments[0]) {
                    out.append("\(c.location): error: enable_script_security: \(c.arguments[0]) would run as root, but \(why)")
                }
            }
        }
        return out
    }
}

/// Why VRRP could not start.
struct VRRPStartError: Error, CustomStringConvertible {
    var description: String
}

/// The VRRP instances of the configuration: one `VRRPRunner` each, their tracking
/// (`track_interface`, `track_script`, the instance's own interface), their sync groups
/// (members move together) and notify scripts. It reports each HA group's VRRP state to the
/// daemon through `drive`, and awaits `willBecomeMaster` before an instance takes its addresses.
actor VRRPSupervisor {
    struct Member {
        let spec: VRRPInstanceSpec
        let runner: VRRPRunner
        let endpoint: VRRPEndpoint
        var state: VRRPState = .initialize
        var priority: UInt8
        /// Fault from its own tracking (passed on to its sync group).
        var ownFault: String?
        /// The fault the runner must be in (own or the group's).
        var fault: String?
        /// What the runner was last told (`push`).
        var toldPriority: UInt8
        var toldFault: String?
        /// The failback hold-down (priority 1 while held).
        var hold = FailbackHoldState()
        /// What the daemon last said of the VRFs following the instance (`updateHold`).
        var lastHold = FailbackHold.none
    }

    /// How long an instance that became master while held down, and while a master peer was
    /// sending its table on the sync link, keeps the hold: three Master_Down_Intervals (at
    /// priority 1). The master it did not hear (adverts lost while its links came up) is heard in
    /// that time and takes mastership back at its higher priority, so the node without the table
    /// steps down; if that master is really gone, the node keeps mastership and gets its priority
    /// back. Without a master peer sending (both nodes starting together, or the peer down), a
    /// new master is released at once, so that the configured priorities decide.
    static func masterSettle(_ spec: VRRPInstanceSpec) -> Duration {
        let interval = Double(spec.advertIntervalCentiseconds) / 100
        return .milliseconds(Int64(3 * (3 * interval + interval * 255 / 256) * 1000))
    }

    private let config: KeepstateConfig
    private let logger: Logger
    private let drive: @Sendable ([String: SyncRole]) async -> Void
    private let failbackHold: @Sendable ([String]) async -> FailbackHold
    private let notifier: NotifyQueue
    private var members: [String: Member] = [:]
    private var interfaceUp: [String: Bool] = [:]
    private var scriptOK: [String: Bool] = [:]
    private var checks: [String: ScriptCheck] = [:]
    private var groupStates: [String: String] = [:]
    /// The consumers of the runners' state changes (they end with the runners).
    private var stateTasks: [Task<Void, Never>] = []
    /// The `vrrp_script` loops (cancelled at shutdown).
    private var scriptTasks: [Task<Void, Never>] = []
    /// For `show vrrp`: whether the virtual addresses are on their interfaces.
    private var route: NetlinkRoute?
    private var linkThread: LinkThread?
    /// The consumer of the link thread's changes (in order).
    private var linkChanges: Task<Void, Never>?
    private var stopped = false
    /// States carried over a reload: the first transition of an instance into the state it
    /// had runs no notify script (nothing changed for the scripts).
    private var quietStates: [String: VRRPState] = [:]

    private init(config: KeepstateConfig, logger: Logger, drive: @escaping @Sendable ([String: SyncRole]) async -> Void,
                 failbackHold: @escaping @Sendable ([String]) async -> FailbackHold) {
        self.config = config
        self.logger = logger
        self.drive = drive
        self.failbackHold = failbackHold
        self.notifier = NotifyQueue(logger: logger)
    }

    /// Opens every instance's sockets, then starts them. Nothing runs if one cannot open (the
    /// error names the instance and where it is configured).
    static func start(config: KeepstateConfig, eventLoop: any EventLoop, logger: Logger,
                      willBecomeMaster: @escaping @Sendable ([String]) async -> Void,
                      drive: @escaping @Sendable ([String: SyncRole]) async -> Void,
                      failbackHold: @escaping @Sendable ([String]) async -> FailbackHold) async throws -> VRRPSupervisor {
        let s = try await prepare(config: config, eventLoop: eventLoop, logger: logger, willBecomeMaster: willBecomeMaster,
                                  drive: drive, failbackHold: failbackHold)
        await s.begin(carried: [:])
        return s
    }

    /// Opens every instance's sockets without starting anything (`begin` does): a reload opens
    /// the new configuration's first, so that a failure leaves the running instances alone.
    static func prepare(config: KeepstateConfig, eventLoop: any EventLoop, logger: Logger,
                        willBecomeMaster: @escaping @Sendable ([String]) async -> Void,
                        drive: @escaping @Sendable ([String: SyncRole]) async -> Void,
                        failbackHold: @escaping @Sendable ([String]) async -> FailbackHold) async throws -> VRRPSupervisor {
        let s = VRRPSupervisor(config: config, logger: logger, drive: drive, failbackHold: failbackHold)
        try await s.open(eventLoop: eventLoop, willBecomeMaster: willBecomeMaster)
        return s
    }

    /// Starts the prepared instances. `carried`: the states the same instances had in the
    /// configuration this one replaces (`detachForReload`): one that was master starts as master
    /// at once, with no election and no failback hold, and a state an instance starts in that it
    /// already had runs no notify script.
    func begin(carried: [String: VRRPState]) async {
        await run(carried: carried)
    }

    /// Whether an instance of `next` is the same virtual router as this configuration's
    /// instance of the same name (interface, VRID, address family, VRRP version), so that a
    /// reload can carry its state over instead of leaving and rejoining.
    static func sameRouter(_ a: VRRPInstanceSpec, _ b: VRRPInstanceSpec) -> Bool {
        a.interface == b.interface && a.virtualRouterID == b.virtualRouterID && a.family == b.family && a.version == b.version
    }

    /// A reload's first half: the instances `next` keeps (`sameRouter`) stop without leaving
    /// their virtual routers (no priority 0, addresses kept, except those `next` no longer
    /// lists); the others leave as at shutdown (a master sends priority 0 and removes its
    /// addresses). Returns the kept instances' states, for `begin(carried:)` of the new
    /// supervisor, which must follow at once (the backup takes over after Master_Down_Interval
    /// without adverts).
    func detachForReload(next: KeepstateConfig) async -> [String: VRRPState] {
        stopTracking()
        var carried: [String: VRRPState] = [:]
        for (name, m) in members.sorted(by: { $0.key < $1.key }) {
            guard let spec = next.vrrpInstances.first(where: { $0.name == name }), Self.sameRouter(m.spec, spec) else {
                await m.runner.shutdown()
                continue
            }
            let state = await m.runner.detach()
            carried[name] = state
            guard state == .master, let route else { continue }
            let kept = Set(spec.virtualAddresses + spec.excludedAddresses)
            let gone = (m.spec.virtualAddresses + m.spec.excludedAddresses).filter { !kept.contains($0) }
            if !gone.isEmpty {
                do {
                    try await NetlinkVirtualAddresses(route: route, specs: gone).removeVirtualAddresses([], interface: m.spec.interface)
                } catch {
                    logger.warning("VRRP reload: removing addresses no longer configured failed", metadata: [
                        "group": "\(name)", "error": "\(error)",
                    ])
                }
            }
        }
        await finishStateStreams()
        return carried
    }

    /// No more evaluations: the link watch and the script loops stop.
    private func stopTracking() {
        stopped = true
        linkThread?.stop()
        linkThread = nil
        linkChanges?.cancel()
        linkChanges = nil
        for t in scriptTasks { t.cancel() }
        scriptTasks = []
    }

    /// The runners' state streams deliver their last changes (and their notify scripts) and
    /// end; then the notify scripts queued so far run to their end.
    private func finishStateStreams() async {
        for t in stateTasks { await t.value }
        stateTasks = []
        await notifier.drain()
    }

    private func open(eventLoop: any EventLoop, willBecomeMaster: @escaping @Sendable ([String]) async -> Void) async throws {
        let route: NetlinkRoute
        do {
            route = try NetlinkRoute()
        } catch {
            throw VRRPStartError(description: "VRRP: cannot open rtnetlink: \(error)")
        }
        if let first = VRRPSupport.refusals(config).first { throw VRRPStartError(description: first) }
        var opened: [Member] = []
        do {
            for spec in config.vrrpInstances {
                let where_ = "vrrp_instance \(spec.name) (\(spec.location))"
                let family: VRRPAddressFamily = spec.family == .ipv4 ? .ipv4 : .ipv6
                var source: VRRPAddress?
                if let text = spec.sourceAddress {
                    guard let a = VRRPAddress(text) else { throw VRRPStartError(description: "\(where_): bad unicast_src_ip \(text)") }
                    source = a
                }
                var peers: [VRRPAddress] = []
                for p in spec.unicastPeers {
                    guard let a = VRRPAddress(p.address) else {
                        throw VRRPStartError(description: "\(where_): bad unicast_peer \(p.address) (\(p.location))")
                    }
                    peers.append(a)
                }
                let endpoint: VRRPEndpoint
                do {
                    endpoint = try await VRRPSockets.open(
                        VRRPSocketConfiguration(interface: spec.interface, family: family, sourceAddress: source, unicastPeers: peers),
                        eventLoop: eventLoop)
                } catch {
                    throw VRRPStartError(description: "\(where_): cannot open its VRRP sockets on \(spec.interface): \(error)")
                }
                let heldAtStart = await failbackHold(holdGroups(of: spec)).behind
                let instance = VRRPInstanceConfig(
                    vrid: spec.virtualRouterID, priority: spec.priority,
                    advertIntervalCentiseconds: spec.advertIntervalCentiseconds,
                    version: spec.version == .v2 ? .v2 : .v3, preempt: spec.preempt,
                    preemptDelay: .milliseconds(Int64(spec.preemptDelay * 1000)), acceptMode: spec.acceptMode,
                    primaryAddress: endpoint.sourceAddress,
                    virtualAddresses: spec.virtualAddresses.compactMap { VRRPAddress($0.address) },
                    authentication: {
                        if case .password(let p) = spec.authentication { return .password(Array(p.utf8)) }
                        return .none
                    }(),
                    // `state MASTER` claims mastership at once, unless the failback hold-down
                    // holds the instance (its VRFs do not have the peer's table yet): then it
                    // starts as backup, like any other, at priority 1.
                    startsAsMaster: spec.initialState == .master && !heldAtStart)
                let globals = config.vrrpGlobals
                let gratuitous = VRRPGratuitousConfiguration(
                    masterDelay: .seconds(spec.garp.masterDelay), masterRepeat: spec.garp.masterRepeat,
                    masterRefresh: .seconds(spec.garp.masterRefresh), masterRefreshRepeat: spec.garp.masterRefreshRepeat,
                    interval: .milliseconds(Int64((family == .ipv4 ? globals.garpInterval : globals.gnaInterval) * 1000)))
                let runnerConfig = VRRPRunnerConfiguration(
                    name: spec.name, instance: instance, interface: spec.interface,
                    checksumMode: spec.v3ChecksumAsV2 ? .messageOnly : .withPseudoHeader,
                    gratuitous: gratuitous, checkUnicastSource: spec.checkUnicastSource)
                let groups = groups(of: spec)
                let runner = VRRPRunner(
                    configuration: runnerConfig, transport: endpoint.transport, announcer: endpoint.announcer,
                    addressManager: NetlinkVirtualAddresses(route: route, specs: spec.virtualAddresses + spec.excludedAddresses),
                    hooks: DaemonVRRPHooks(groups: groups, willBecomeMaster: willBecomeMaster),
                    eventLoop: eventLoop, logger: logger)
                opened.append(Member(spec: spec, runner: runner, endpoint: endpoint, priority: spec.priority, toldPriority: spec.priority))
            }
        } catch {
            for m in opened { await m.endpoint.close() }
            throw error
        }
        for m in opened { members[m.spec.name] = m }
        self.route = route
        // Starting states of what is tracked.
        var names = Set<String>()
        for m in opened {
            names.insert(m.spec.interface)
            for t in m.spec.trackInterfaces { names.insert(t.interface) }
        }
        for name in names {
            interfaceUp[name] = (try? route.link(named: name)).map { $0.isAdminUp && $0.isOperUp } ?? false
        }
        for script in usedScripts() {
            checks[script.name] = ScriptCheck(rise: script.rise, fall: script.fall, initiallyOK: !script.initFail)
            scriptOK[script.name] = !script.initFail
        }
        // One stream, one consumer: link changes are applied in the order the kernel told them
        // (a task per batch could apply a quick down-up as up-down).
        let (stream, continuation) = AsyncStream.makeStream(of: [String: Bool].self)
        do {
            linkThread = try LinkThread(names: names) { changes in continuation.yield(changes) }
        } catch {
            logger.warning("VRRP: cannot watch links; track_interface and the instances' own interfaces are read at start only",
                           metadata: ["error": "\(error)"])
        }
        linkChanges = Task { [weak self] in
            for await changes in stream {
                await self?.linksChanged(changes)
            }
        }
    }

    private func usedScripts() -> [VRRPScriptSpec] {
        let used = Set(config.vrrpInstances.flatMap { $0.trackScripts.map(\.script) })
        return config.vrrpScripts.filter { used.contains($0.name) }
    }

    private func run(carried: [String: VRRPState]) async {
        // A master carried over a reload is master from the start: its hold never applies.
        for (name, state) in carried where members[name] != nil {
            members[name]?.state = state
            if state == .master {
                members[name]?.hold.stateChanged(toMaster: true, now: ContinuousClock.now, hold: .none)
            }
        }
        quietStates = carried.filter { members[$0.key] != nil }
        for g in config.vrrpSyncGroups {
            let states = g.members.compactMap { quietStates[$0] }
            if states.count == g.members.count && states.allSatisfy({ $0 == .master }) { groupStates[g.name] = "MASTER" }
            if states.count == g.members.count && states.allSatisfy({ $0 == .backup }) { groupStates[g.name] = "BACKUP" }
        }
        // Before any runner starts: a node behind its peer's table starts with its priority
        // held down, and one whose tracking fails starts in FAULT (a `state MASTER` instance
        // would otherwise be master, addresses and all, for a moment).
        for name in members.keys.sorted() { await updateHold(name) }
        await reevaluateAll()
        for (name, m) in members.sorted(by: { $0.key < $1.key }) {
            let runner = m.runner
            stateTasks.append(Task { [weak self] in
                for await change in runner.stateChanges {
                    await self?.changed(name, change)
                }
            })
            await runner.start(asMaster: carried[name] == .master)
        }
        await reevaluateAll()
        scriptTasks.append(Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(100))
                guard let self else { return }
                await self.holdTick()
            }
        })
        for script in usedScripts() {
            let user = config.vrrpGlobals.scriptUser
            scriptTasks.append(Task { [weak self] in
                let argv = ScriptRunner.argv(script.command, defaultUser: user)
                while !Task.isCancelled {
                    let outcome = await ScriptRunner.run(argv, timeout: script.timeout)
                    guard let self, !Task.isCancelled else { return }
                    await self.scriptRan(script.name, outcome)
                    try? await Task.sleep(for: .milliseconds(Int64(script.interval * 1000)))
                }
            })
        }
    }

    // MARK: failback hold-down

    /// The groups an instance drives: its own and its sync group's.
    private func groups(of spec: VRRPInstanceSpec) -> [String] {
        [spec.name] + (spec.syncGroup.map { [$0] } ?? [])
    }

    /// The groups whose VRFs become master when the instance does: its own, its sync group's,
    /// and the other members' (a sync group moves together). The failback hold-down waits for
    /// all of them.
    private func holdGroups(of spec: VRRPInstanceSpec) -> [String] {
        groups(of: spec) + (spec.syncGroup.flatMap { config.vrrpSyncGroup(named: $0)?.members } ?? []).filter { $0 != spec.name }
    }

    private func holdTick() async {
        for name in members.keys.sorted() where await updateHold(name) { await reevaluate(name) }
    }

    /// Holds an instance's priority down (to 1) while it is not master and a VRF following it has
    /// not received its full resync, for at most the VRFs' `failback_hold_max`. Returns whether
    /// the hold changed.
    @discardableResult
    private func updateHold(_ name: String) async -> Bool {
        guard !stopped, let spec = members[name]?.spec, !spec.isAddressOwner else { return false }
        let hold = await failbackHold(holdGroups(of: spec))
        guard var m = members[name] else { return false }
        let wasHeld = m.hold.isHeld
        let event = m.hold.update(now: ContinuousClock.now, hold: hold, settle: Self.masterSettle(spec))
        m.lastHold = hold
        members[name] = m
        switch event {
        case .held:
            logger.notice("VRRP priority held down until the VRFs hold the master's table", metadata: [
                "group": "\(name)", "failback_hold_max": "\(hold.bound)",
            ])
        case .released(let seconds, let asMaster):
            let why = asMaster ? "this node is master" : "the VRFs hold the master's table"
            logger.notice("VRRP priority no longer held down: \(why)", metadata: [
                "group": "\(name)", "held_seconds": "\(String(format: "%.3f", seconds))",
            ])
        case .expired:
            logger.warning("VRRP priority hold-down ended by failback_hold_max before the resync completed", metadata: [
                "group": "\(name)", "failback_hold_max": "\(hold.bound)",
            ])
        case nil:
            break
        }
        return wasHeld != m.hold.isHeld
    }

    // MARK: tracking

    private func linksChanged(_ changes: [String: Bool]) async {
        var touched = false
        for (name, up) in changes where interfaceUp[name] != up {
            interfaceUp[name] = up
            logger.notice("tracked interface \(up ? "up" : "down")", metadata: ["interface": "\(name)"])
            touched = true
        }
        if touched { await reevaluateAll() }
    }

    private func scriptRan(_ name: String, _ outcome: ScriptRunner.Outcome) async {
        guard var check = checks[name] else { return }
        let change = check.record(success: outcome.succeeded)
        checks[name] = check
        guard let ok = change else { return }
        scriptOK[name] = ok
        logger.notice("vrrp_script \(ok ? "succeeds" : "fails")", metadata: [
            "script": "\(name)", "status": "\(outcome.status.map { "\($0)" } ?? (outcome.timedOut ? "timed out" : outcome.failure ?? "-"))",
        ])
        await reevaluateAll()
    }

    /// After a tracked object changed: every instance's own verdict first, so that each sees
    /// its sync group's current faults, then each runner is told.
    private func reevaluateAll() async {
        for (name, m) in members {
            members[name]?.ownFault = Tracking.own(m.spec, interfaceUp: interfaceUp, scriptOK: scriptOK).fault
        }
        for name in members.keys.sorted() { await reevaluate(name) }
    }

    /// Tells the runner its priority and fault, from what it tracks and its sync group's faults
    /// (the members' `ownFault`, which `reevaluateAll` keeps current).
    private func reevaluate(_ name: String) async {
        guard !stopped, var m = members[name] else { return }
        let before = m
        let own = Tracking.own(m.spec, interfaceUp: interfaceUp, scriptOK: scriptOK)
        let groupFault = m.spec.syncGroup.flatMap { config.vrrpSyncGroup(named: $0) }?.members
            .first { $0 != name && members[$0]?.ownFault != nil }
        let verdict = Tracking.combine(own, groupFault: groupFault)
        m.ownFault = own.fault
        // Failback: a held-down instance advertises priority 1, so it does not preempt.
        m.priority = m.hold.isHeld ? 1 : verdict.priority
        m.fault = verdict.fault
        members[name] = m
        if m.priority != before.priority {
            logger.notice("VRRP priority changed", metadata: [
                "group": "\(name)", "from": "\(before.priority)", "to": "\(m.priority)",
                "why": "\(m.hold.isHeld ? "failback hold-down" : "tracking")",
            ])
        }
        await push(name)
    }

    /// Tells the runner the member's current priority and fault until what it was told is
    /// what the member holds: a reevaluation that ran during an await here is not undone by
    /// this one's older values (each value is marked told before the await that tells it).
    private func push(_ name: String) async {
        while !stopped, let m = members[name] {
            if m.priority != m.toldPriority {
                members[name]?.toldPriority = m.priority
                await m.runner.setPriority(m.priority)
            } else if m.fault != m.toldFault {
                members[name]?.toldFault = m.fault
                if let why = m.fault {
                    await m.runner.enterFault(why)
                } else {
                    await m.runner.leaveFault()
                }
            } else {
                return
            }
        }
    }

    // MARK: transitions

    private func changed(_ name: String, _ change: VRRPStateChange) async {
        guard var m = members[name] else { return }
        m.state = change.to
        members[name] = m
        let spec = m.spec
        // Before the VRFs follow the new state: whether a master peer is sending its table.
        let hold = await failbackHold(holdGroups(of: spec))
        members[name]?.hold.stateChanged(toMaster: change.to == .master, now: ContinuousClock.now, hold: hold)
        // The HA groups: the instance's own, and its sync group's (master while a member is).
        var roles: [String: SyncRole] = [name: change.to == .master ? .master : .backup]
        if let g = spec.syncGroup, let group = config.vrrpSyncGroup(named: g) {
            let anyMaster = group.members.contains { members[$0]?.state == .master }
            roles[g] = anyMaster ? .master : .backup
        }
        await drive(roles)
        // Sync group: the other members follow a member that became master or left it for
        // backup (not one that follows the group itself).
        if let g = spec.syncGroup, let group = config.vrrpSyncGroup(named: g) {
            let following: Bool = if case .syncGroup = change.reason { true } else { false }
            if !following {
                for other in group.members where other != name {
                    guard let o = members[other] else { continue }
                    if change.to == .master { await o.runner.syncGroupMaster(member: name) }
                    if change.from == .master && change.to == .backup { await o.runner.syncGroupBackup(member: name) }
                }
            }
        }
        await notify(name, change)
        // A new master is released at once unless it settles (`masterSettle`; the hold tick
        // releases it then); a new backup behind its peer is held.
        if await updateHold(name) { await reevaluate(name) }
    }

    /// Queues the notify scripts of a transition. Awaited, so that the queue receives them in the
    /// order of the transitions (a detached task per call would not keep that order).
    private func notify(_ name: String, _ change: VRRPStateChange) async {
        guard let m = members[name] else { return }
        if let quiet = quietStates.removeValue(forKey: name), quiet == change.to { return }
        let state: String
        switch change.to {
        case .master: state = "MASTER"
        case .backup: state = "BACKUP"
        case .fault: state = "FAULT"
        case .initialize:
            guard change.reason == .shutdown else { return }
            state = "STOP"
        }
        let user = config.vrrpGlobals.scriptUser
        let spec = m.spec
        await notifier.notify(spec.notify, kind: "INSTANCE", name: name, state: state, priority: Int(m.priority), defaultUser: user)
        guard let g = spec.syncGroup, let group = config.vrrpSyncGroup(named: g) else { return }
        // The group's state: FAULT if a member is, MASTER if all are, BACKUP otherwise; STOP once
        // every member stopped.
        let states = group.members.compactMap { members[$0]?.state }
        let groupState: String
        if states.contains(.fault) {
            groupState = "FAULT"
        } else if states.allSatisfy({ $0 == .master }) {
            groupState = "MASTER"
        } else if states.allSatisfy({ $0 == .initialize }) {
            guard stopped else { return }
            groupState = "STOP"
        } else if states.contains(.initialize) {
            return
        } else {
            groupState = "BACKUP"
        }
        guard groupStates[g] != groupState else { return }
        groupStates[g] = groupState
        await notifier.notify(group.notify, kind: "GROUP", name: g, state: groupState, priority: 0, defaultUser: user)
    }

    // MARK: reports and stop

    struct InstanceReport: Sendable {
        var name: String
        var state: VRRPState
        var priority: UInt8
        var fault: String?
        var statistics: VRRPRunnerStatistics
    }

    func reports() async -> [InstanceReport] {
        var out: [InstanceReport] = []
        for (name, m) in members.sorted(by: { $0.key < $1.key }) {
            out.append(InstanceReport(name: name, state: m.state, priority: m.priority, fault: m.fault,
                                      statistics: await m.runner.statistics))
        }
        return out
    }

    /// `show vrrp`: every instance (or only `only`) and the sync groups (those holding `only`).
    func showReport(instance only: String?) async -> VRRPReport {
        var snapshots: [String: VRRPRunnerSnapshot] = [:]
        for name in members.keys.sorted() {
            if let runner = members[name]?.runner { snapshots[name] = await runner.snapshot }
        }
        // The kernel's addresses, once per interface named.
        var onInterface: [String: [RouteAddress]?] = [:]
        func held(_ a: VirtualAddressSpec, _ interface: String) -> Bool? {
            let dev = a.dev ?? interface
            if onInterface[dev] == nil {
                onInterface[dev] = .some(try? route?.addresses(interface: dev).map(\.address))
            }
            guard let list = onInterface[dev]!, let want = RouteAddress(a.address) else { return nil }
            return list.contains(want)
        }
        let now = ContinuousClock.now
        var instances: [VRRPInstanceReport] = []
        for spec in config.vrrpInstances where only == nil || only == spec.name {
            guard let m = members[spec.name], let snapshot = snapshots[spec.name] else { continue }
            var found: [VirtualAddressSpec: Bool?] = [:]
            for a in spec.virtualAddresses + spec.excludedAddresses { found[a] = held(a, spec.interface) }
            let heldBy = found
            instances.append(VRRPShow.instance(VRRPShow.Inputs(
                spec: spec, snapshot: snapshot, interfaceUp: interfaceUp, scriptOK: scriptOK, effectivePriority: m.priority,
                fault: m.fault, hold: m.hold, lastHold: m.lastHold, now: now, held: { heldBy[$0] ?? nil })))
        }
        let states = snapshots.mapValues(\.performedState)
        let groups = config.vrrpSyncGroups
            .filter { only == nil || $0.members.contains(only!) }
            .map { VRRPShow.syncGroup($0, states: states) }
        return VRRPReport(instances: instances, syncGroups: groups)
    }

    /// Every instance leaves (a master sends priority 0 and removes its addresses), then the
    /// notify scripts queued so far run to their end.
    func shutdown() async {
        stopTracking()
        for m in members.values { await m.runner.shutdown() }
        await finishStateStreams()
    }
}

/// Watches link state changes on a thread of its own and reports those of `names`. The thread
/// ends within a quarter of a second of `stop`.
final class LinkThread: Sendable {
    private final class Flag: @unchecked Sendable {
        private let lock = NSLock()
        private var value = false
        var isSet: Bool { lock.withLock { value } }
        func set() { lock.withLock { value = true } }
    }

    private let stopping = Flag()

    init(names: Set<String>, report: @escaping @Sendable ([String: Bool]) -> Void) throws {
        let watcher = try LinkWatcher()
        let stopping = self.stopping
        let worker = Thread {
            while !stopping.isSet {
                var events: [RouteEvent] = []
                var overrun = false
                do {
                    guard try watcher.wait(timeoutMilliseconds: 250) else { continue }
                    events = try watcher.readEvents()
                } catch {
                    // Events may be lost: pause (no spinning on a broken socket), then read
                    // every watched link again.
                    usleep(100_000)
                    overrun = true
                }
                var changes: [String: Bool] = [:]
                for e in events {
                    switch e {
                    case .link(let info) where names.contains(info.name):
                        changes[info.name] = info.isAdminUp && info.isOperUp
                    case .linkRemoved(let info) where names.contains(info.name):
                        changes[info.name] = false
                    case .overrun:
                        overrun = true
                    default:
                        break
                    }
                }
                // Events were lost: read every watched link again.
                if overrun, let route = try? NetlinkRoute() {
                    for n in names { changes[n] = (try? route.link(named: n)).map { $0.isAdminUp && $0.isOperUp } ?? false }
                }
                if !changes.isEmpty { report(changes) }
            }
        }
        worker.name = "keepstate-links"
        worker.start()
    }

    func stop() { stopping.set() }
}
