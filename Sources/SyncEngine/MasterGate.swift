import ConntrackModel
import Dataplane
import Foundation
import Logging
import NIOCore
import SyncPolicy
import SyncProtocol
import Synchronization

/// The master side of one VRF's sync, between the dataplane's change stream and the sync
/// connections: it runs `MasterPolicy` (docs/semantics.md) on one serial executor, a thread of
/// its own, and hands the records it produces to the connection of each key's share.
///
/// ```
///   dataplane sink ──jobs──▶ gate thread: MasterPolicy ──records, split by share──▶ connection loops
///                            ▲   │ batched gets (delays), dumps (forced sync, unsynced listing)
///                            │   ▼
///                            dataplane
/// ```
///
/// Everything that reads the kernel for the policy runs on that thread too, between two jobs:
/// the gets of the delay probes and the dump of a forced synchronization. So every change the
/// policy processed before a read is older than the read, and no stale reading can follow a
/// newer change to the peer. Events that arrive meanwhile wait in the job queue (the sink only
/// appends). The policy itself sits behind a mutex, which the connection loops take for a
/// resync's snapshot: the dataplane's snapshot of the share, filtered to the synced conntracks
/// (with rule 2 applied).
///
/// Ordering (why records need no version): a record is handed to its connection's loop with
/// `execute`, which is FIFO. A record handed over before a resync's snapshot is taken on that
/// loop is reflected in the snapshot, which the dataplane and the policy took afterwards; one
/// handed over after it is sent after the resync's records. So the last record the peer
/// receives for a key is the latest.
///
/// With `settings == nil` (pass-through, transport tests and benchmarks) every change goes on
/// as the dataplane reported it and a resync sends the dataplane's snapshot.
final class MasterGate: @unchecked Sendable {
    private enum Job {
        case changes([ConntrackUpdate])
        case role(master: Bool)
        case forcedSync(@Sendable (ForcedSyncReport) -> Void)
        case unsynced(limit: Int, proto: IPProtocolNumber?, @Sendable (UnsyncedListing) -> Void)
    }

    private struct PolicyState {
        var master = false
        var policy: MasterPolicy?
        var stats = PolicyStatistics()
    }

    let settings: PolicySettings?
    private let dataplane: any Dataplane
    /// Set once by the engine before `start`.
    var connections: [ShareConnection] = []
    /// The keys this node holds for its peer: adopted as synced when it becomes master.
    private let heldKeys: @Sendable () -> [ConntrackKey]
    private let logger: Logger
    private let state = Mutex(PolicyState())
    /// Conntracks read per get of the delay probes.
    static let probeBatch = 4096

    private let cond = NSCondition()
    // Under `cond`:
    private var jobs: [Job] = []
    private var head = 0
    private var busy = false
    private var started = false
    private var stopped = false
    private var subscription: DataplaneSubscription?

    init(settings: PolicySettings?, dataplane: any Dataplane, logger: Logger, heldKeys: @escaping @Sendable () -> [ConntrackKey]) {
        self.settings = settings
        self.dataplane = dataplane
        self.logger = logger
        self.heldKeys = heldKeys
    }

    // MARK: called from outside

    /// Subscribes to the dataplane and starts the thread. Jobs queued before (a role) run first.
    func start() {
        cond.lock()
        guard !started, !stopped else {
            cond.unlock()
            return
        }
        started = true
        cond.unlock()
        // Not under `cond`: the sink takes `cond` under the dataplane's lock.
        let sub = dataplane.subscribe { [weak self] updates in self?.enqueue(.changes(updates)) }
        cond.lock()
        if stopped {
            let orphans = Array(jobs[head...])
            jobs = []
            head = 0
            cond.unlock()
            dataplane.unsubscribe(sub)
            for job in orphans { Self.abandon(job) }
            return
        }
        subscription = sub
        let t = Thread { [self] in run() }
        t.name = "keepstate-policy-\(dataplane.vrf)"
        t.start()
        cond.unlock()
    }

    /// Stops the thread; jobs still queued complete with an error.
    func stop() {
        cond.lock()
        let sub = subscription
        subscription = nil
        stopped = true
        let orphans = started ? [] : Array(jobs[head...])
        if !started {
            jobs = []
            head = 0
        }
        cond.signal()
        cond.unlock()
        if let sub { dataplane.unsubscribe(sub) }
        for job in orphans { Self.abandon(job) }
    }

    /// The node becomes master (the policy adopts what it held, then the connections start
    /// their resyncs) or backup (the connections stop sending, then the policy forgets).
    func setRole(master: Bool) { enqueue(.role(master: master)) }

    func forcedSync(_ done: @escaping @Sendable (ForcedSyncReport) -> Void) { enqueue(.forcedSync(done)) }

    func unsynced(limit: Int, proto: IPProtocolNumber?, _ done: @escaping @Sendable (UnsyncedListing) -> Void) {
        enqueue(.unsynced(limit: limit, proto: proto, done))
    }

    /// Whether no job waits or runs (probes may still be scheduled).
    var isIdle: Bool {
        cond.lock()
        defer { cond.unlock() }
        return head == jobs.count && !busy
    }

    var statistics: PolicyStatistics {
        state.withLock { s in
            var out = s.stats
            out.synced = s.policy?.syncedCount ?? 0
            out.candidates = s.policy?.tracker.count ?? 0
            return out
        }
    }

    /// A resync's records for one share, on the connection's loop: the dataplane's snapshot,
    /// reduced to what the peer must hold.
    func resyncSnapshot(share: Int, of count: Int) -> [Conntrack] {
        let snapshot = dataplane.snapshot(share: share, of: count)
        guard settings != nil else { return snapshot }
        return state.withLock { s in
            guard s.master, let policy = s.policy else { return [] }
            return policy.resyncRecords(snapshot).compactMap(\.conntrack)
        }
    }

    // MARK: the thread

    private func enqueue(_ job: Job) {
        cond.lock()
        if stopped {
            cond.unlock()
            Self.abandon(job)
            return
        }
        jobs.append(job)
        cond.signal()
        cond.unlock()
    }

    private static func abandon(_ job: Job) {
        switch job {
        case .forcedSync(let done): done(ForcedSyncReport(error: "the sync engine stopped"))
        case .unsynced(_, _, let done): done(UnsyncedListing(role: "backup", note: "the sync engine stopped"))
        case .changes, .role: break
        }
    }

    private func run() {
        var nextProbe: NIODeadline? = nil
        while true {
            cond.lock()
            while head == jobs.count && !stopped {
                if let p = nextProbe, NIODeadline.now() >= p { break }
                let wait = nextProbe.map { Double(($0 - .now()).nanoseconds) / 1e9 } ?? 3600
                _ = cond.wait(until: Date(timeIntervalSinceNow: max(wait, 0.001)))
            }
            if stopped {
                let orphans = Array(jobs[head...])
                jobs = []
                head = 0
                cond.unlock()
                for job in orphans { Self.abandon(job) }
                return
            }
            // A due probe goes before the next job, so a flood of events cannot starve it.
            var job: Job?
            if nextProbe.map({ NIODeadline.now() < $0 }) ?? true, head < jobs.count {
                job = jobs[head]
                head += 1
                if head == jobs.count {
                    jobs.removeAll(keepingCapacity: jobs.capacity <= 4096)
                    head = 0
                } else if head > 4096 && head * 2 > jobs.count {
                    jobs.removeFirst(head)
                    head = 0
                }
            }
            busy = true
            cond.unlock()

            if let job { perform(job) } else { probe() }
            nextProbe = state.withLock { s in
                s.master ? s.policy?.nextDeadline().map(PolicyClock.deadline) : nil
            }

            cond.lock()
            busy = false
            cond.unlock()
        }
    }

    private func perform(_ job: Job) {
        switch job {
        case .changes(let updates): changes(updates)
        case .role(let master): role(master: master)
        case .forcedSync(let done): runForcedSync(done)
        case .unsynced(let limit, let proto, let done): done(unsynced(limit: limit, proto: proto))
        }
    }

    /// Hands records to the connections of their shares, in order.
    private func dispatch(_ updates: [OutgoingUpdate]) {
        guard !updates.isEmpty, !connections.isEmpty else { return }
        let n = connections.count
        if n == 1 {
            let c = connections[0]
            c.loop.execute { c.enqueue(updates) }
            return
        }
        var parts = [[OutgoingUpdate]](repeating: [], count: n)
        for u in updates { parts[u.update.key.share(of: n)].append(u) }
        for (i, part) in parts.enumerated() where !part.isEmpty {
            let c = connections[i]
            c.loop.execute { c.enqueue(part) }
        }
    }

    private func changes(_ updates: [ConntrackUpdate]) {
        guard settings != nil else {
            dispatch(updates.map { OutgoingUpdate($0) })
            return
        }
        let now = PolicyClock.now()
        let out: [OutgoingUpdate] = state.withLock { s in
            guard s.master, s.policy != nil else { return [] }
            var out: [OutgoingUpdate] = []
            for u in updates {
                switch u {
                case .upsert(let c):
                    if let r = s.policy!.changed(c, at: now).record { out.append(OutgoingUpdate(r.update)) }
                case .delete(let k):
                    if let r = s.policy!.destroyed(k) { out.append(OutgoingUpdate(r.update)) }
                }
            }
            s.stats.records += out.count
            return out
        }
        dispatch(out)
    }

    private func role(master: Bool) {
        if master {
            if let settings {
                // Adopt what this node held for its peer (synced by the former master), then
                // judge the rest of the table as new: its delays count from now. (Not at a lower
                // priority, unlike the re-arm: the policy's events and a returning peer's resync
                // wait for it, and a nice 19 thread starved for over 20 s under a loaded
                // `make test`.)
                let heldList = heldKeys()
                let now = PolicyClock.now()
                var policy = MasterPolicy(settings: settings)
                var adopted = 0
                if heldList.isEmpty {
                    // A restarted master holds nothing: every conntrack is judged as new.
                    let mirror = dataplane.snapshot(share: 0, of: 1)
                    policy.reserveCapacity(mirror.count)
                    for c in mirror { _ = policy.changed(c, at: now) }
                } else {
                    // A held entry still in the table is adopted as synced; any other is judged
                    // as new. With 1,000,000 entries this ran 1.2 s of CPU as a copy of the
                    // table and a hash set built and probed at random, beside the flows it
                    // takes over; the keys alone, and sets built and probed in slot order
                    // (`ConntrackKeySet(distinct:)`, `containsEach`), keep it to a few passes.
                    let tableKeys = dataplane.snapshotKeys()
                    // Room for the whole table: the held set becomes the policy's synced set, and
                    // the rest of the table joins it as the policy syncs it (no rebuild of a
                    // million keys during the takeover).
                    let held = ConntrackKeySet(distinct: heldList, minimumCapacity: tableKeys.count)
                    let isHeld = held.containsEach(tableKeys)
                    var others: [ConntrackKey] = []
                    for (i, k) in tableKeys.enumerated() where !isHeld[i] { others.append(k) }
                    adopted = tableKeys.count - others.count
                    if adopted == held.count {
                        // Usually every held entry is in the table: the held set itself is adopted.
                        policy.adoptSynced(set: held)
                    } else {
                        var kept: [ConntrackKey] = []
                        kept.reserveCapacity(adopted)
                        for (i, k) in tableKeys.enumerated() where isHeld[i] { kept.append(k) }
                        policy.adoptSynced(set: ConntrackKeySet(distinct: kept, minimumCapacity: tableKeys.count))
                    }
                    for c in dataplane.snapshot(keys: others) { _ = policy.changed(c, at: now) }
                }
                state.withLock { s in
                    s.policy = policy
                    s.master = true
                }
                logger.info("sync policy ready", metadata: [
                    "adopted": "\(adopted)", "synced": "\(policy.syncedCount)", "pending": "\(policy.tracker.count)",
                ])
            } else {
                state.withLock { $0.master = true }
            }
            for c in connections { c.loop.execute { c.setActive(true) } }
        } else {
            // Stop the connections first: a resync from a policy that forgot everything would
            // sweep the peer's copy.
            let done = connections.map { c in c.loop.submit { c.setActive(false) } }
            for f in done { _ = try? f.wait() }
            state.withLock { s in
                s.master = false
                s.policy = nil
            }
        }
    }

    /// The delay probes that are due: batched gets of just those conntracks.
    private func probe() {
        while true {
            let now = PolicyClock.now()
            let keys: [ConntrackKey] = state.withLock { s in
                s.master ? (s.policy?.dueProbes(at: now, limit: Self.probeBatch) ?? []) : []
            }
            if keys.isEmpty { return }
            let before = NIODeadline.now()
            let reading: DataplaneReading
            do {
                reading = try dataplane.get(keys)
            } catch {
                // The keys were rescheduled by `dueProbes`: they are asked for again later.
                state.withLock { $0.stats.probeErrors += 1 }
                logger.warning("reading conntracks for the sync delay failed", metadata: ["error": "\(error)", "keys": "\(keys.count)"])
                return
            }
            // The kernel read them between `before` and now: the midpoint is off by at most
            // half the call, well inside the inference's margin.
            let after = NIODeadline.now()
            let at = PolicyClock.instant(before + .nanoseconds((after - before).nanoseconds / 2))
            let out: [OutgoingUpdate] = state.withLock { s in
                guard s.master, s.policy != nil else { return [] }
                s.stats.probeBatches += 1
                s.stats.probedConntracks += reading.found.count
                var out: [OutgoingUpdate] = []
                for c in reading.found {
                    if let r = s.policy!.probed(c, at: at).record { out.append(OutgoingUpdate(r.update)) }
                }
                for k in reading.gone {
                    if let r = s.policy!.destroyed(k) { out.append(OutgoingUpdate(r.update)) }
                }
                s.stats.records += out.count
                return out
            }
            dispatch(out)
            if keys.count < Self.probeBatch { return }
        }
    }

    /// Rule 6: a dump, every eligible conntrack sent with the dump's instant as its stamp.
    private func runForcedSync(_ done: @escaping @Sendable (ForcedSyncReport) -> Void) {
        let started = NIODeadline.now()
        guard state.withLock({ $0.master }) else {
            done(ForcedSyncReport(error: "this node is not master for the VRF"))
            return
        }
        let table: [Conntrack]
        do {
            table = try dataplane.dump()
        } catch {
            done(ForcedSyncReport(error: "dump failed: \(error)"))
            return
        }
        // The stamp is the end of the dump: entries read earlier get a later stamp than their
        // read, which keeps them a little longer after a failover (the safe side).
        let readAt = NIODeadline.now()
        var report = ForcedSyncReport(conntracks: table.count, dumpSeconds: Double((readAt - started).nanoseconds) / 1e9)
        let out: [OutgoingUpdate] = state.withLock { s in
            var out: [OutgoingUpdate] = []
            if settings != nil, s.policy != nil {
                let f = s.policy!.forcedSync(table, at: PolicyClock.instant(readAt))
                out = f.records.map { OutgoingUpdate($0.update, activity: readAt) }
                report.newlySynced = f.newlySynced
                for (why, n) in f.skipped { report.skipped[why.label, default: 0] += n }
            } else {
                for c in table {
                    if let why = SyncRules.exclusion(of: c) {
                        report.skipped[why.label, default: 0] += 1
                    } else if !c.isEstablished {
                        report.skipped[SyncClassification.notEstablished.label, default: 0] += 1
                    } else {
                        out.append(OutgoingUpdate(.upsert(c), activity: readAt))
                    }
                }
            }
            s.stats.records += out.count
            return out
        }
        report.records = out.count
        let n = connections.count
        var parts = [[OutgoingUpdate]](repeating: [], count: n)
        for u in out { parts[u.update.key.share(of: n)].append(u) }
        var sent: [EventLoopFuture<Bool>] = []
        for (i, part) in parts.enumerated() where !part.isEmpty {
            let c = connections[i]
            sent.append(c.loop.flatSubmit { c.enqueueTracked(part) })
        }
        guard let loop = connections.first?.loop, !sent.isEmpty else {
            report.seconds = Double((NIODeadline.now() - started).nanoseconds) / 1e9
            finish(report, done)
            return
        }
        let finalReport = report
        EventLoopFuture.whenAllComplete(sent, on: loop).whenSuccess { [self] results in
            var r = finalReport
            for result in results {
                if case .success(true) = result { r.connectionsSent += 1 } else { r.connectionsDropped += 1 }
            }
            r.seconds = Double((NIODeadline.now() - started).nanoseconds) / 1e9
            finish(r, done)
        }
    }

    private func finish(_ report: ForcedSyncReport, _ done: @Sendable (ForcedSyncReport) -> Void) {
        state.withLock { $0.stats.lastForcedSync = report }
        done(report)
    }

    /// Rule 7: every conntrack of the table that is not synced, and why.
    private func unsynced(limit: Int, proto: IPProtocolNumber?) -> UnsyncedListing {
        guard state.withLock({ $0.master }) else {
            return UnsyncedListing(role: "backup", note: "this node is backup for the VRF and sends nothing; ask the master")
        }
        let table: [Conntrack]
        do {
            table = try dataplane.dump().filter { proto == nil || $0.proto == proto }
        } catch {
            return UnsyncedListing(role: "master", note: "dump failed: \(error)")
        }
        let now = PolicyClock.now()
        return state.withLock { s in
            var out = UnsyncedListing(role: "master", total: table.count)
            for c in table {
                let why: SyncClassification
                if let policy = s.policy {
                    why = policy.classify(c)
                } else {
                    why = SyncRules.exclusion(of: c) ?? (c.isEstablished ? .synced : .notEstablished)
                }
                if why == .synced {
                    out.synced += 1
                    continue
                }
                out.counts[why.label, default: 0] += 1
                guard out.entries.count < limit else {
                    out.truncated = true
                    continue
                }
                var entry = UnsyncedEntry(conntrack: c.description, reason: why.label)
                switch why {
                case .delayPending(let until): entry.delayEndsIn = max((until - now).seconds, 0)
                case .awaitingTraffic(let since): entry.awaitingFor = max((now - since).seconds, 0)
                default: break
                }
                out.entries.append(entry)
            }
            return out
        }
    }
}
