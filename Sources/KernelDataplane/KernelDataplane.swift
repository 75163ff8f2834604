public import ConntrackModel
public import Dataplane
import Foundation
import Glibc
import NetfilterConntrack
import Synchronization

/// A VRF's conntrack table in the Linux kernel, through ctnetlink, in the VRF's network namespace.
///
/// It keeps a mirror of the conntracks that qualify for sync (established; not expected by an
/// ALG helper) fed by the kernel's events, so that `snapshot` is an in-memory copy consistent with
/// the change stream, as `Dataplane` requires, and never a kernel dump on the sync path. When the
/// kernel reports that it dropped events (ENOBUFS), the mirror is rebuilt from a dump and the
/// differences are delivered as changes: nothing is lost silently (`overruns` counts them).
public final class KernelDataplane: Dataplane, @unchecked Sendable {
    public let vrf: String
    public let netnsPath: String?

    private struct State {
        var mirror = ConntrackTable<UInt8>()
        var subscribers = SubscriberList()
        var overruns = 0
        var reconciliations = 0
        var failedReconciliations = 0
        var lastError: String?
        /// The last reconciliation's dump failed (cleared by one that succeeds).
        var reconcileFailing = false
        /// The VRF's namespace was deleted or replaced since the sockets were opened.
        var namespaceProblem: String?
        /// The `dataplaneError` last told to `problemHandler`.
        var reportedProblem: String?
        var problemHandler: (@Sendable (String?) -> Void)?
        var eventsSeen = 0
        var eventScope = DataplaneEventScope.all
        /// Joining the creation and update events failed: the table is followed only by the
        /// periodic reconciliation until a later scope change succeeds.
        var scopeProblem: String?
        /// Set when the scope became `.all` again: a reconciliation runs at once (what changed
        /// while only deletions were followed), and the periodic ones count from it.
        var reconcileNow = false
        /// The scope widened and the reconciliation that catches up has not succeeded yet.
        var catchingUp = false
        /// Counts the widenings: a reconciliation whose dump began before the last one (the
        /// scope narrowed and widened again meanwhile) does not end the catching up.
        var widenings = 0
    }

    private let state = Mutex(State())
    private let events: ConntrackNetlink
    /// Writes and dumps; used under `writeLock` (one netlink request at a time).
    private let command: ConntrackNetlink
    private let writeLock = NSLock()
    /// Gets (the sync delay's probes), on a socket of their own, opened at the first use.
    private let getter: Mutex<ConntrackNetlink?> = Mutex(nil)
    private let stopped = Atomic<Bool>(false)
    /// `eventScope == .all && !catchingUp`, kept beside the state at each change: read by the
    /// sync connections' event loops, which must not wait for the state lock while a
    /// reconciliation of a million entries holds it.
    private let wholeTable = Atomic<Bool>(true)
    private var thread: Thread?

    /// The value `nf_conntrack_events` had in the namespace before this dataplane set it to 1.
    /// When it was not 1, conntracks created before now may not report their changes; the
    /// periodic reconciliation catches those.
    public let previousEventsSetting: Int
    private let reconcileInterval: Double
    private var lastReconcile = ContinuousClock.now
    /// The namespace's identity (device and inode of `netnsPath`) when the sockets were opened.
    private let namespaceIdentity: NamespaceIdentity?
    private var lastNamespaceCheck = ContinuousClock.now

    struct NamespaceIdentity: Equatable {
        var device: UInt64
        var inode: UInt64

        /// What `path` names now; nil when nothing is there.
        init?(path: String) {
            var st = stat()
            guard stat(path, &st) == 0 else { return nil }
            device = UInt64(st.st_dev)
            inode = UInt64(st.st_ino)
        }
    }

    /// Opens the VRF's sockets, fills the mirror from a dump and starts reading events.
    /// `netnsPath` is `/run/netns/NAME` for a VRF in a namespace, nil for the daemon's own.
    /// Every `reconcileInterval` seconds a dump is compared with the mirror (0: never).
    public init(vrf: String, netnsPath: String?, receiveBuffer: Int = 8 << 20, reconcileInterval: Double = 30) throws {
        self.vrf = vrf
        self.netnsPath = netnsPath
        self.reconcileInterval = reconcileInterval
        previousEventsSetting = try ConntrackNetlink.enableEvents(netnsPath: netnsPath)
        events = try ConntrackNetlink(netnsPath: netnsPath, events: true)
        try events.setReceiveBuffer(bytes: receiveBuffer)
        try events.setNonBlocking()
        command = try ConntrackNetlink(netnsPath: netnsPath)
        namespaceIdentity = netnsPath.flatMap { NamespaceIdentity(path: $0) }
        let initial = try command.dump()
        state.withLock { s in
            for c in initial where Self.qualifies(c) { s.mirror.upsert(c, tag: 0) }
        }
        let t = Thread { [weak self] in self?.readLoop() }
        t.name = "keepstate-ct-\(vrf)"
        thread = t
        t.start()
    }

    deinit { stop() }

    /// Stops reading events. The sockets close when the object goes.
    public func stop() {
        stopped.store(true, ordering: .relaxed)
    }

    /// A backup (`.deletions`) leaves the kernel's creation and update event groups: this thread
    /// reads no echo of the holder's writes (and the kernel builds none when no other socket of
    /// the host listens to those groups; its listener list is one for all namespaces). The
    /// mirror takes those writes directly (`write`). What else changes meanwhile (a conntrack of
    /// the backup's own traffic, a state change by a packet crossing it) shows at the
    /// reconciliation that widening the scope starts with; deletions are followed all along.
    ///
    /// The scope is what was asked even when the socket option fails. A failed join is a
    /// `dataplaneError` (logged by the daemon): creations and updates then show only at the
    /// periodic reconciliations. A failed leave only costs the echoes' reading.
    public func setEventScope(_ scope: DataplaneEventScope) {
        let changed = state.withLock { s in
            defer {
                s.eventScope = scope
                wholeTable.store(scope == .all && !s.catchingUp, ordering: .relaxed)
            }
            if s.eventScope != scope && scope == .all {
                s.reconcileNow = true
                s.catchingUp = true
                s.widenings += 1
            }
            return s.eventScope != scope
        }
        guard changed else { return }
        var problem: String?
        do {
            try events.setCreationAndUpdateEvents(scope == .all)
        } catch {
            if scope == .all {
                problem = "\(error): " + (reconcileInterval > 0
                    ? "creations and updates of conntracks are seen only every \(reconcileInterval) s, by the periodic reconciliation"
                    : "creations and updates of conntracks are not seen (no periodic reconciliation)")
            }
            state.withLock { $0.lastError = "\(error)" }
        }
        state.withLock { $0.scopeProblem = problem }
        reportProblemChange()
    }

    public var eventScope: DataplaneEventScope { state.withLock { $0.eventScope } }

    public var followsWholeTable: Bool { wholeTable.load(ordering: .relaxed) }

    /// Whether a conntrack enters the mirror: established (TCP ESTABLISHED, others seen both
    /// ways) and not excluded (`isSyncExcluded`; `SyncRules.isEligible` is the same rule).
    public static func qualifies(_ c: Conntrack) -> Bool {
        c.isEstablished && !c.isSyncExcluded
    }

    public var count: Int { state.withLock { $0.mirror.count } }
    /// Kernel events read so far.
    public var eventsSeen: Int { state.withLock { $0.eventsSeen } }
    /// How many event overruns were recovered by a dump.
    public var overruns: Int { state.withLock { $0.overruns } }
    /// How many dumps were compared with the mirror (overruns and periodic ones).
    public var reconciliations: Int { state.withLock { $0.reconciliations } }
    /// Reconciliations whose dump failed (the mirror may be stale until one succeeds), and why
    /// the last one failed.
    public var failedReconciliations: Int { state.withLock { $0.failedReconciliations } }
    public var lastError: String? { state.withLock { $0.lastError } }

    /// Why the table is not followed right now: the VRF's namespace was deleted (or another
    /// one took its name) while the daemon ran, or the last reconciliation's dump failed.
    /// Checked once a second.
    public var dataplaneError: String? {
        state.withLock { Self.problem($0) }
    }

    public var tableLost: Bool { state.withLock { $0.namespaceProblem != nil } }

    public func onProblemChange(_ handler: @escaping @Sendable (String?) -> Void) {
        state.withLock { $0.problemHandler = handler }
    }

    private static func problem(_ s: State) -> String? {
        s.namespaceProblem ?? s.scopeProblem ?? (s.reconcileFailing ? s.lastError : nil)
    }

    /// Tells the handler when `dataplaneError` changed since it was last told (outside the lock).
    private func reportProblemChange() {
        let change: ((@Sendable (String?) -> Void), String?)? = state.withLock { s in
            let now = Self.problem(s)
            guard now != s.reportedProblem, let handler = s.problemHandler else { return nil }
            s.reportedProblem = now
            return (handler, now)
        }
        if let (handler, problem) = change { handler(problem) }
    }

    /// Compares what `netnsPath` names with the namespace the sockets were opened in. The
    /// sockets keep a deleted namespace alive, so reads and writes go on without an error: only
    /// the path tells that nothing else can reach that table any more.
    private func checkNamespace() {
        guard let netnsPath, let opened = namespaceIdentity else { return }
        let problem: String?
        switch NamespaceIdentity(path: netnsPath) {
        case nil:
            problem = "network namespace \(netnsPath) was deleted while the VRF ran: its conntracks are no longer followed "
                + "(recreate the namespace, then `keepstate reload` reopens the VRF)"
        case let now? where now != opened:
            problem = "network namespace \(netnsPath) was replaced by another namespace of that name: the VRF still follows "
                + "the old one (`keepstate reload` reopens the VRF in the new one)"
        default:
            problem = nil
        }
        state.withLock { s in
            if s.namespaceProblem != problem { s.namespaceProblem = problem }
        }
        reportProblemChange()
    }

    public func dump() throws -> [Conntrack] {
        writeLock.lock()
        defer { writeLock.unlock() }
        return try command.dump()
    }

    public func get(_ keys: [ConntrackKey]) throws -> DataplaneReading {
        guard !keys.isEmpty else { return DataplaneReading() }
        return try getter.withLock { socket in
            if socket == nil { socket = try ConntrackNetlink(netnsPath: netnsPath) }
            let r = try socket!.get(keys)
            return DataplaneReading(found: r.found, gone: r.gone)
        }
    }

    public func snapshot(share: Int, of count: Int) -> [Conntrack] {
        state.withLock { $0.mirror.entries(inShare: share, of: count) }
    }

    public func snapshotKeys() -> [ConntrackKey] {
        state.withLock { $0.mirror.entries.map(\.key) }
    }

    public func snapshot(keys: [ConntrackKey]) -> [Conntrack] {
        state.withLock { $0.mirror.entries(of: keys) }
    }

    public func subscribe(_ sink: @escaping @Sendable ([ConntrackUpdate]) -> Void) -> DataplaneSubscription {
        state.withLock { $0.subscribers.add(sink) }
    }

    public func unsubscribe(_ subscription: DataplaneSubscription) {
        state.withLock { $0.subscribers.remove(subscription) }
    }

    public struct WriteError: DataplaneWriteRejection, CustomStringConvertible {
        public var rejected: Int
        public var rejectedCount: Int { rejected }
        /// The keys whose write the kernel refused (empty when unknown).
        public var rejectedKeys: [ConntrackKey] = []
        public var firstError: Int32
        public var description: String {
            "the kernel refused \(rejected) conntrack write(s); first: \(String(cString: strerror(firstError)))"
        }
    }

    /// Writes synced conntracks into the kernel table (TCP with the be-liberal flags) and deletes.
    /// The mirror takes the same changes first, so the events these writes cause compare equal
    /// and are not delivered: Keepstate's own writes are never echoed to the peer. Within one
    /// batch the last change of a key wins, as if applied in order. Entries the kernel refuses
    /// get their former mirror state back, and the call throws.
    public func apply(_ updates: [ConntrackUpdate]) throws {
        try write(updates, holdTimeout: nil)
    }

    /// As `apply`, but the kernel gets `timeout` for every upsert while the mirror keeps the
    /// synced entry (what this node sends on if it becomes master).
    public func hold(_ updates: [ConntrackUpdate], timeout: UInt32) throws {
        try write(updates, holdTimeout: timeout)
    }

    public func held(above threshold: UInt32) throws -> [Conntrack] {
        try dump().filter { $0.timeout > threshold }
    }

    /// Dumps the table and sets the timeout of every entry still above `threshold`. A packet
    /// between the dump and the write resets the kernel's timeout first; the write then replaces
    /// it with the rearmed value, which is the entry's full synced timeout or the policy's.
    /// `timeout` is asked chunk by chunk, right before the chunk is written, so that a timeout
    /// computed for an instant is written at that instant (not seconds later, after the whole
    /// table's timeouts were computed).
    public func rearm(above threshold: UInt32, timeout: (Conntrack) -> UInt32?) throws -> RearmResult {
        var result = RearmResult()
        var held: [Conntrack] = []
        for c in try dump() {
            if c.timeout > threshold { held.append(c) } else { result.skipped += 1 }
        }
        let chunk = 4096
        var start = 0
        while start < held.count {
            var part: [Conntrack] = []
            part.reserveCapacity(chunk)
            for c in held[start..<min(start + chunk, held.count)] {
                guard let t = timeout(c) else { result.skipped += 1; continue }
                var r = c
                r.timeout = t
                part.append(r)
            }
            start = min(start + chunk, held.count)
            guard !part.isEmpty else { continue }
            var errors: [Int32]
            do {
                writeLock.lock()
                defer { writeLock.unlock() }
                errors = try command.setTimeouts(part).errors
            } catch {
                // The chunk as a whole failed (the socket, not an entry): counted as refused,
                // and the re-arm goes on with the next chunk.
                errors = Array(repeating: error.errno == 0 ? EIO : error.errno, count: part.count)
            }
            // A refusal does not stop the re-arm of the others.
            for e in errors {
                if e == 0 {
                    result.rearmed += 1
                } else if e == ENOENT {
                    result.vanished += 1
                } else {
                    result.refused += 1
                    if result.firstError == 0 { result.firstError = e }
                }
            }
        }
        return result
    }

    private func write(_ updates: [ConntrackUpdate], holdTimeout: UInt32?) throws {
        var last: [ConntrackKey: Int] = [:]
        last.reserveCapacity(updates.count)
        for (i, u) in updates.enumerated() { last[u.key] = i }
        var creates: [Conntrack] = []
        var deletes: [ConntrackKey] = []
        for (i, u) in updates.enumerated() where last[u.key] == i {
            switch u {
            case .upsert(let c): creates.append(c)
            case .delete(let k): deletes.append(k)
            }
        }
        // The write lock first, across the mirror's update and the kernel's: a reconciliation
        // (which holds it from its dump to its new mirror) then never puts a dump from before
        // these writes over a mirror that has them.
        writeLock.lock()
        defer { writeLock.unlock() }
        let (formerCreated, formerDeleted) = state.withLock { s in
            (creates.map { s.mirror.replace($0, tag: 0) }, deletes.map { s.mirror.remove($0) })
        }
        if let holdTimeout {
            for i in creates.indices { creates[i].timeout = holdTimeout }
        }
        var failed: [(ConntrackKey, Conntrack?)] = []
        var firstError: Int32 = 0
        // A call that fails as a whole (the socket, not an entry) counts as every entry refused,
        // so that the mirror is put back below as for single refusals.
        func errors(_ count: Int, _ call: () throws(NetfilterError) -> [Int32]) -> [Int32] {
            do { return try call() } catch { return Array(repeating: error.errno == 0 ? EIO : error.errno, count: count) }
        }
        if !creates.isEmpty {
            for (i, e) in errors(creates.count, { () throws(NetfilterError) in try command.upsert(creates).errors }).enumerated() where e != 0 {
                failed.append((creates[i].key, formerCreated[i]))
                if firstError == 0 { firstError = e }
            }
        }
        if !deletes.isEmpty {
            // ENOENT on delete: already gone, which is what was wanted.
            for (i, e) in errors(deletes.count, { () throws(NetfilterError) in try command.delete(deletes).errors }).enumerated()
            where e != 0 && e != ENOENT {
                failed.append((deletes[i], formerDeleted[i]))
                if firstError == 0 { firstError = e }
            }
        }
        guard !failed.isEmpty else { return }
        state.withLock { s in
            for (key, former) in failed {
                if let former { s.mirror.upsert(former, tag: 0) } else { s.mirror.remove(key) }
            }
        }
        throw WriteError(rejected: failed.count, rejectedKeys: failed.map(\.0), firstError: firstError)
    }

    // MARK: events

    private func readLoop() {
        var pfd = pollfd(fd: events.fileDescriptor, events: Int16(POLLIN), revents: 0)
        while !stopped.load(ordering: .relaxed) {
            if ContinuousClock.now - lastNamespaceCheck > .seconds(1) {
                lastNamespaceCheck = ContinuousClock.now
                checkNamespace()
            }
            // Periodic reconciliations follow the whole table (`.all`, a master). A holding backup
            // has none: at a million entries one holds the mirror and the writes for seconds, and a
            // takeover that waits for the holder would wait for it too. Widening the scope again
            // starts with one (see `setEventScope`).
            let (scope, now, catchingUp) = state.withLock { s in
                defer { s.reconcileNow = false }
                return (s.eventScope, s.reconcileNow, s.catchingUp)
            }
            let since = ContinuousClock.now - lastReconcile
            // At once after the scope widened; a catching-up one that failed, again a second
            // later (a master's resyncs wait for it); then every `reconcileInterval`.
            if now || scope == .all && (catchingUp && since > .seconds(1)
                || reconcileInterval > 0 && since > .milliseconds(Int(reconcileInterval * 1000))) {
                lastReconcile = ContinuousClock.now
                reconcile(countAsOverrun: false)
                reportProblemChange()
            }
            let r = poll(&pfd, 1, 100)
            if r <= 0 { continue }
            do {
                let batch = try events.readEvents()
                if !batch.isEmpty { deliver(batch) }
            } catch {
                // ENOBUFS: the kernel dropped events. Any other read error may have lost some
                // too. Either way a dump puts the mirror right and tells the subscribers.
                reconcile(countAsOverrun: true)
                reportProblemChange()
            }
        }
    }

    /// Turns kernel events into sync changes against the mirror, and delivers them in order.
    private func deliver(_ batch: [ConntrackEvent]) {
        state.withLock { s in
            s.eventsSeen += batch.count
            var changes: [ConntrackUpdate] = []
            changes.reserveCapacity(batch.count)
            for e in batch {
                let c = e.conntrack
                switch e.kind {
                case .destroy:
                    if s.mirror.remove(c.key) != nil { changes.append(.delete(c.key)) }
                case .new, .update:
                    if let held = s.mirror[c.key] {
                        // A synced conntrack changed: its state, status or mark (events do not
                        // come for timeout refreshes alone). An echo of our own write is equal.
                        if !held.sameExceptTimeout(c) {
                            s.mirror.upsert(c, tag: 0)
                            changes.append(.upsert(c))
                        }
                    } else if Self.qualifies(c) {
                        s.mirror.upsert(c, tag: 0)
                        changes.append(.upsert(c))
                    }
                }
            }
            s.subscribers.deliver(changes)
        }
    }

    /// Rebuilds the mirror from a dump and delivers the differences: after lost events, and
    /// periodically for conntracks that report no events.
    private func reconcile(countAsOverrun: Bool) {
        // Drop what is queued first: every change from here on is either in the dump or arrives
        // as an event after it (and compares equal to the mirror if it is both).
        _ = try? events.readEvents()
        let widenings = state.withLock { $0.widenings }
        let table: [Conntrack]
        // Held from the dump until the new mirror is in place (see `write`).
        writeLock.lock()
        defer { writeLock.unlock() }
        do {
            table = try command.dump()
        } catch {
            // The mirror stays as it was; the next reconciliation tries again.
            state.withLock { s in
                s.failedReconciliations += 1
                s.reconcileFailing = true
                s.lastError = "reconciliation dump failed: \(error)"
            }
            return
        }
        state.withLock { s in
            if countAsOverrun { s.overruns += 1 }
            s.reconciliations += 1
            s.reconcileFailing = false
            var fresh = ConntrackTable<UInt8>(minimumCapacity: table.count)
            var changes: [ConntrackUpdate] = []
            // What the mirror holds stays while the kernel has it, as `deliver` keeps it: a
            // synced TCP conntrack that left ESTABLISHED (closing) is followed until destroyed.
            for c in table where s.mirror[c.key] != nil || Self.qualifies(c) {
                fresh.upsert(c, tag: 0)
                if let held = s.mirror[c.key], held.sameExceptTimeout(c) { continue }
                changes.append(.upsert(c))
            }
            for c in s.mirror.entries where fresh[c.key] == nil { changes.append(.delete(c.key)) }
            s.mirror = fresh
            if s.widenings == widenings {
                s.catchingUp = false
                wholeTable.store(s.eventScope == .all, ordering: .relaxed)
            }
            s.subscribers.deliver(changes)
        }
    }
}
