import Glibc
public import Logging
public import NIOCore
public import VRRP

/// Runs one VRRP instance: the pure `VRRPInstanceState` makes every protocol decision; the runner
/// gives it the time, the received adverts and the timer, and performs the actions it returns.
///
/// **One serial executor.** The actor runs on the NIO event loop passed in (its `unownedExecutor`
/// is the loop), so timers (`scheduleTask`, timerfd precision) and IPv4 reception happen on the
/// same thread as the state machine, with no hop in between.
///
/// **Time.** The clock is NIO's monotonic `NIODeadline.now()` mapped one to one to `VRRPInstant`
/// (nanoseconds); the timer is armed for the state machine's `nextDeadline` after every event.
///
/// **Actions in order.** Actions run strictly in the order the state machine returned them,
/// across events: `becomeMaster` awaits `hooks.willBecomeMaster` before the next action (the
/// state machine returns `addVirtualAddresses` right after it), and the address calls are awaited
/// too. Events that arrive meanwhile are fed to the state machine at once (its timers stay exact)
/// and their actions queue behind. Queued adverts and announcements that have become stale (the
/// state machine is no longer master when their turn comes) are skipped, as is adding addresses
/// then; removing them is always performed.
public actor VRRPRunner {
    public nonisolated let eventLoop: any EventLoop
    public nonisolated let configuration: VRRPRunnerConfiguration
    /// State changes as they are performed (finished by `shutdown`).
    public nonisolated let stateChanges: AsyncStream<VRRPStateChange>

    public nonisolated var unownedExecutor: UnownedSerialExecutor {
        eventLoop.executor.asUnownedSerialExecutor()
    }

    private let stateContinuation: AsyncStream<VRRPStateChange>.Continuation
    private let transport: any VRRPTransport
    private let announcer: (any VRRPAnnouncer)?
    private let addressManager: any VirtualAddressManager
    private let hooks: any VRRPRunnerHooks
    private let expectations: VRRPExpectations
    private let logger: Logger

    private var machine: VRRPInstanceState
    private var stats = VRRPRunnerStatistics()
    private var reportedState: VRRPState = .initialize
    private var phase: Phase = .created

    private var pending: [VRRPAction] = []
    private var pendingHead = 0
    private var busy = false
    private var idleWaiters: [CheckedContinuation<Void, Never>] = []

    private var timer: (deadline: VRRPInstant, task: Scheduled<Void>)?
    private var announcementGeneration = 0
    private var announcementTasks: [Int: Scheduled<Void>] = [:]
    private var nextAnnouncementTask = 0
    private var logLimiter: VRRPLogRateLimiter

    private enum Phase { case created, running, stopping, stopped }

    /// - Parameters:
    ///   - transport: the VRRP sockets (`VRRPSockets.open(...).transport`); its `sourceAddress`
    ///     should be `configuration.instance.primaryAddress` (the equal-priority tie-break compares
    ///     the peer's source with it).
    ///   - announcer: gratuitous ARP / NA; nil sends none.
    ///   - eventLoop: the runner's executor; IPv4 transports should be registered on it.
    ///   - logger: every message carries the metadata `group` = `configuration.name`.
    public init(configuration: VRRPRunnerConfiguration, transport: any VRRPTransport,
                announcer: (any VRRPAnnouncer)?, addressManager: any VirtualAddressManager,
                hooks: any VRRPRunnerHooks = VRRPNoHooks(), eventLoop: any EventLoop, logger: Logger) {
        self.configuration = configuration
        self.transport = transport
        self.announcer = announcer
        self.addressManager = addressManager
        self.hooks = hooks
        self.eventLoop = eventLoop
        self.expectations = configuration.expectations
        var logger = logger
        logger[metadataKey: "group"] = "\(configuration.name)"
        self.logger = logger
        self.machine = VRRPInstanceState(config: configuration.instance)
        self.logLimiter = VRRPLogRateLimiter(interval: configuration.dropLogInterval)
        (self.stateChanges, self.stateContinuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1024))
        if transport.sourceAddress != configuration.instance.primaryAddress {
            logger.warning("VRRP adverts are sent from a different address than the configured primary address",
                           metadata: ["vrrp.source": "\(transport.sourceAddress)",
                                      "vrrp.primary": "\(configuration.instance.primaryAddress)"])
        }
    }

    // MARK: public interface

    /// The runner's clock.
    public nonisolated func now() -> VRRPInstant {
        VRRPInstant(nanoseconds: Int64(NIODeadline.now().uptimeNanoseconds))
    }

    public var state: VRRPState { machine.state }
    /// A copy of the state machine (timers, priority, learned interval).
    public var instance: VRRPInstanceState { machine }
    public var statistics: VRRPRunnerStatistics { stats }
    /// The state machine, the counters and the state last performed, read at one instant.
    public var snapshot: VRRPRunnerSnapshot {
        VRRPRunnerSnapshot(instance: machine, statistics: stats, performedState: reportedState, now: now())
    }

    /// Starts receiving and enters Backup (or Master for the address owner). Once only.
    /// Starts the instance. `asMaster`: it takes mastership at once (as `state MASTER` does),
    /// for an instance that was master before a reload replaced its runner.
    public func start(asMaster: Bool = false) {
        guard phase == .created else { return }
        phase = .running
        logger.info("VRRP instance starting", metadata: [
            "vrrp.vrid": "\(configuration.instance.vrid)", "vrrp.version": "\(configuration.instance.version.rawValue)",
            "vrrp.priority": "\(configuration.instance.priority)", "vrrp.interface": "\(configuration.interface)",
            "vrrp.source": "\(transport.sourceAddress)",
            "vrrp.destinations": "\(transport.destinations.map(\.description).joined(separator: ","))",
        ])
        let loop = eventLoop
        transport.startReceiving { [self] inbound in
            if loop.inEventLoop {
                self.assumeIsolated { $0.handle(inbound) }
            } else {
                loop.execute { self.assumeIsolated { $0.handle(inbound) } }
            }
        }
        apply(machine.startup(now: now(), claimMastership: asMaster))
    }

    /// Tracking changed the effective priority (track_script / track_interface weights).
    /// Before `start`, it sets the priority the instance starts with.
    public func setPriority(_ priority: UInt8) {
        guard phase == .created || phase == .running else { return }
        apply(machine.setPriority(priority, now: now()))
    }

    /// The link watcher saw the interface go down: Fault (addresses removed if master).
    public func linkDown() {
        guard phase == .running else { return }
        apply(machine.linkDown(now: now()))
    }

    /// The link came back: Initialize, then Backup (or Master for the owner).
    public func linkUp() {
        guard phase == .running else { return }
        apply(machine.linkUp(now: now()))
    }

    /// Tracking failed (`why` is logged as the reason): Fault, addresses removed if master.
    /// Before `start`, the instance starts in Fault.
    public func enterFault(_ why: String) {
        guard phase == .created || phase == .running else { return }
        apply(machine.enterFault(.tracking(why), now: now()))
    }

    /// Tracking recovered: Initialize, then Backup (or Master for the owner).
    public func leaveFault() {
        guard phase == .created || phase == .running else { return }
        apply(machine.leaveFault(.trackingRecovered, now: now()))
    }

    /// Another member of the instance's `vrrp_sync_group` became master: from Backup, this one
    /// becomes master too.
    public func syncGroupMaster(member: String) {
        guard phase == .running else { return }
        apply(machine.syncGroupMaster(member: member, now: now()))
    }

    /// Another member of the sync group left Master for Backup: from Master, this one follows.
    public func syncGroupBackup(member: String) {
        guard phase == .running else { return }
        apply(machine.syncGroupBackup(member: member, now: now()))
    }

    /// Stops without leaving the virtual router, for a reload that starts the instance again
    /// at once: no priority 0 advert, the addresses stay where they are, no transition is
    /// reported. Returns the state the instance was in (a new runner for the same virtual
    /// router starts as master if it was). Actions still queued are finished first. Idempotent.
    public func detach() async -> VRRPState {
        switch phase {
        case .created:
            phase = .stopped
            await closeIO()
            return machine.state
        case .stopping, .stopped:
            await waitUntilIdle()
            return machine.state
        case .running:
            break
        }
        phase = .stopping
        await waitUntilIdle()
        stopAnnouncements()
        phase = .stopped
        await closeIO()
        logger.info("VRRP instance detached for a reload", metadata: ["vrrp.state": "\(Self.name(machine.state))"])
        return machine.state
    }

    /// Leaves the virtual router: as master, sends an advert with priority 0 (the backup takes
    /// over after Skew_Time) and removes the addresses; then closes the sockets. Returns when all
    /// of it is done. Idempotent.
    public func shutdown() async {
        switch phase {
        case .created:
            phase = .stopped
            await closeIO()
            return
        case .stopping, .stopped:
            await waitUntilIdle()
            return
        case .running:
            break
        }
        let actions = machine.shutdown(now: now())
        phase = .stopping
        apply(actions)
        await waitUntilIdle()
        stopAnnouncements()
        phase = .stopped
        await closeIO()
        logger.info("VRRP instance stopped")
    }

    /// Returns when no action is queued or running.
    public func waitUntilIdle() async {
        if !busy && pendingHead == pending.count { return }
        await withCheckedContinuation { idleWaiters.append($0) }
    }

    // MARK: events

    private func handle(_ inbound: VRRPInbound) {
        guard phase == .running else { return }
        let now = now()
        switch inbound {
        case .malformed(let why):
            drop(.malformedIPHeader, detail: why, source: nil, now: now)
        case .receiveError(let what):
            stats.receiveErrors += 1
            if let held = logLimiter.admit("receive", now: now) {
                logger.warning("VRRP receive error", metadata: ["error": "\(what)", "vrrp.suppressed": "\(held)"])
            }
        case .packet(let p):
            if configuration.checkUnicastSource && transport.isUnicast && !transport.destinations.contains(p.header.source) {
                drop(.notFromUnicastPeer, detail: "source is not a unicast peer", source: p.header.source, now: now)
                return
            }
            switch VRRPReceiver.validate(ipHeader: p.header, message: p.message, expectations: expectations) {
            case .failure(let d):
                drop(VRRPDropReason(d), detail: d.description, source: p.header.source, now: now)
            case .success(let advert):
                stats.advertsReceived += 1
                let interval = advert.packet.version == .v2 ? advert.packet.advertInterval * 100 : advert.packet.advertInterval
                stats.lastAdvert = VRRPAdvertSeen(source: p.header.source, priority: advert.packet.priority,
                                                  advertIntervalCentiseconds: interval, at: now)
                for w in advert.warnings {
                    stats.warnings += 1
                    if let held = logLimiter.admit("warning.\(w)", now: now) {
                        logger.warning("VRRP advert accepted with a warning", metadata: [
                            "vrrp.warning": "\(w)", "vrrp.source": "\(p.header.source)", "vrrp.suppressed": "\(held)",
                        ])
                    }
                }
                apply(machine.receivedAdvert(advert.packet, from: p.header.source, now: now))
            }
        }
    }

    private func drop(_ reason: VRRPDropReason, detail: String, source: VRRPAddress?, now: VRRPInstant) {
        stats.drops[reason, default: 0] += 1
        guard let held = logLimiter.admit("drop.\(reason.rawValue)", now: now) else { return }
        let metadata: Logger.Metadata = [
            "vrrp.drop": "\(reason.rawValue)", "vrrp.drop.detail": "\(detail)",
            "vrrp.source": "\(source.map(\.description) ?? "-")", "vrrp.suppressed": "\(held)",
        ]
        if reason == .vridMismatch {
            logger.debug("VRRP packet for another virtual router", metadata: metadata)
        } else {
            logger.warning("VRRP packet dropped", metadata: metadata)
        }
    }

    private func timerFired(deadline: VRRPInstant) {
        guard let t = timer, t.deadline == deadline else { return }
        timer = nil
        guard phase == .running else { return }
        apply(machine.timerFired(now: now()))
    }

    // MARK: actions

    private func apply(_ actions: [VRRPAction]) {
        rearmTimer()
        guard !actions.isEmpty else { return }
        pending.append(contentsOf: actions)
        drain()
    }

    private func rearmTimer() {
        let next = phase == .running ? machine.nextDeadline : nil
        if let t = timer {
            if t.deadline == next { return }
            t.task.cancel()
            timer = nil
        }
        guard let next else { return }
        let task = eventLoop.scheduleTask(deadline: .uptimeNanoseconds(UInt64(max(0, next.nanoseconds)))) { [self] in
            self.assumeIsolated { $0.timerFired(deadline: next) }
        }
        timer = (next, task)
    }

    private func drain() {
        while !busy && pendingHead < pending.count {
            let action = pending[pendingHead]
            pendingHead += 1
            perform(action)
        }
        if pendingHead == pending.count {
            pending.removeAll(keepingCapacity: true)
            pendingHead = 0
            if !busy {
                let waiters = idleWaiters
                idleWaiters = []
                for w in waiters { w.resume() }
            }
        }
    }

    private func perform(_ action: VRRPAction) {
        switch action {
        case .sendAdvert(let priority):
            // A queued advert is stale once the machine left Master (priority 0 is the shutdown advert).
            guard priority == 0 || machine.state == .master else { return }
            sendAdvert(priority: priority)
        case .becomeMaster(let reason):
            transition(to: .master, reason: reason)
            stats.becameMaster += 1
            let hooks = self.hooks
            runAsync("willBecomeMaster") { await hooks.willBecomeMaster(reason) }
        case .becomeBackup(let reason):
            stopAnnouncements()
            transition(to: .backup, reason: reason)
        case .enterFault(let reason):
            stopAnnouncements()
            transition(to: .fault, reason: reason)
        case .enterInitialize(let reason):
            stopAnnouncements()
            transition(to: .initialize, reason: reason)
        case .addVirtualAddresses:
            guard machine.state == .master else { return }
            let m = addressManager, a = configuration.instance.virtualAddresses, i = configuration.interface
            runAsync("addVirtualAddresses") { try await m.addVirtualAddresses(a, interface: i) }
        case .removeVirtualAddresses:
            let m = addressManager, a = configuration.instance.virtualAddresses, i = configuration.interface
            runAsync("removeVirtualAddresses") { try await m.removeVirtualAddresses(a, interface: i) }
        case .sendGratuitousARP:
            guard machine.state == .master else { return }
            startAnnouncements()
        }
    }

    /// Runs one awaited action; the queue waits for it.
    private func runAsync(_ what: String, _ body: @escaping @Sendable () async throws -> Void) {
        busy = true
        Task {
            do {
                try await body()
            } catch {
                self.stats.addressErrors += 1
                self.logger.error("VRRP action failed", metadata: ["vrrp.action": "\(what)", "error": "\(error)"])
            }
            self.busy = false
            self.drain()
        }
    }

    private func transition(to new: VRRPState, reason: VRRPTransitionReason) {
        let change = VRRPStateChange(from: reportedState, to: new, reason: reason, at: now(), wallClock: Self.wallClock())
        reportedState = new
        stats.transitions += 1
        stats.lastTransition = change
        logger.notice("VRRP state \(Self.name(change.from)) -> \(Self.name(new))", metadata: [
            "vrrp.reason": "\(reason)", "vrrp.priority": "\(machine.priority)",
        ])
        stateContinuation.yield(change)
    }

    private func sendAdvert(priority: UInt8) {
        let packet = machine.config.advert(priority: priority)
        let source = transport.sourceAddress
        for destination in transport.destinations {
            let bytes = packet.encode(source: source, destination: destination, checksumMode: configuration.checksumMode)
            do {
                try transport.send(bytes, to: destination)
                stats.advertsSent += 1
            } catch {
                stats.advertSendErrors += 1
                if let held = logLimiter.admit("send", now: now()) {
                    logger.warning("VRRP advert not sent", metadata: [
                        "error": "\(error)", "vrrp.destination": "\(destination)", "vrrp.suppressed": "\(held)",
                    ])
                }
            }
        }
    }

    // MARK: gratuitous ARP / unsolicited NA

    private func startAnnouncements() {
        stopAnnouncements()
        guard announcer != nil, !configuration.instance.virtualAddresses.isEmpty else { return }
        let g = configuration.gratuitous
        let generation = announcementGeneration
        announceBurst(count: g.masterRepeat, generation: generation)
        if g.masterDelay > .zero {
            schedule(after: g.masterDelay, generation: generation) { runner in
                runner.announceBurst(count: g.masterRepeat, generation: generation)
            }
        }
        if g.masterRefresh > .zero { scheduleRefresh(generation: generation) }
    }

    private func scheduleRefresh(generation: Int) {
        let g = configuration.gratuitous
        schedule(after: g.masterRefresh, generation: generation) { runner in
            runner.announceBurst(count: g.masterRefreshRepeat, generation: generation)
            runner.scheduleRefresh(generation: generation)
        }
    }

    private func announceBurst(count: Int, generation: Int) {
        let plan = configuration.gratuitous.burst(addresses: configuration.instance.virtualAddresses, count: count)
        for item in plan {
            if item.offset <= .zero {
                announce(item.address)
            } else {
                let address = item.address
                schedule(after: item.offset, generation: generation) { $0.announce(address) }
            }
        }
    }

    private func schedule(after delay: Duration, generation: Int, _ body: @escaping @Sendable (isolated VRRPRunner) -> Void) {
        let id = nextAnnouncementTask
        nextAnnouncementTask += 1
        let nanos = VRRPInstant(sinceOrigin: delay).nanoseconds
        let task = eventLoop.scheduleTask(in: .nanoseconds(nanos)) { [self] in
            self.assumeIsolated { runner in
                runner.announcementTasks[id] = nil
                guard runner.announcementGeneration == generation, runner.machine.state == .master,
                      runner.phase == .running else { return }
                body(runner)
            }
        }
        announcementTasks[id] = task
    }

    private func announce(_ address: VRRPAddress) {
        guard let announcer else { return }
        do {
            try announcer.announce(address)
            stats.announcementsSent += 1
        } catch {
            stats.announcementErrors += 1
            if let held = logLimiter.admit("announce", now: now()) {
                logger.warning("gratuitous ARP / unsolicited NA not sent", metadata: [
                    "error": "\(error)", "vrrp.address": "\(address)", "vrrp.suppressed": "\(held)",
                ])
            }
        }
    }

    private func stopAnnouncements() {
        announcementGeneration += 1
        for (_, t) in announcementTasks { t.cancel() }
        announcementTasks = [:]
    }

    private func closeIO() async {
        timer?.task.cancel()
        timer = nil
        await transport.close()
        announcer?.close()
        stateContinuation.finish()
    }

    // MARK: helpers

    private static func wallClock() -> Duration {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return .seconds(ts.tv_sec) + .nanoseconds(ts.tv_nsec)
    }

    static func name(_ s: VRRPState) -> String {
        switch s {
        case .initialize: return "INIT"
        case .backup: return "BACKUP"
        case .master: return "MASTER"
        case .fault: return "FAULT"
        }
    }
}
