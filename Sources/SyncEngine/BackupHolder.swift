import ConntrackModel
public import Dataplane
import Foundation
import Logging
import SyncPolicy

/// What the holder has done, for `show peer`.
public struct HolderStatistics: Sendable, Equatable {
    public var written = 0
    public var refused = 0
    public var failedBatches = 0
    public var queued = 0
    public var reholds = 0
    public var lastError: String?
    public var lastRearm: RearmResult?
    public var lastRearmDuration: Duration?
    public init() {}
}

extension Duration {
    /// The duration in seconds, for logs, reports and `Date` arithmetic.
    public var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) / 1e18
    }
}

/// Writes what the backup store receives into the dataplane, in the store's order, on a thread
/// of its own so that the receiving connections never wait for the kernel.
///
/// Jobs run one at a time: held changes, a periodic re-hold of every stored entry, and the
/// re-arm after a takeover. Because they share one queue, a re-hold queued when the node turns
/// backup again runs after a re-arm still in progress, never under it.
final class BackupHolder: @unchecked Sendable {
    private enum Job {
        case hold([ConntrackUpdate])
        case rehold
        case rearm(@Sendable (Conntrack) -> UInt32?, done: @Sendable () -> Void)
        /// Keys the dataplane refused, written again from the store's current entries.
        case retry([ConntrackKey], attempt: Int)
    }

    /// A refused entry is tried again this many times, 1, 2, 4... seconds apart, before it counts
    /// as refused (the periodic re-hold tries it once more later).
    static let retries = 5

    /// The hold timeout, its re-arm interval and the threshold above which an entry is held.
    let policy: HoldPolicy
    /// Entries are written in batches of at most this many.
    static let batch = 8192
    private let dataplane: any Dataplane
    private let storeEntries: @Sendable () -> [Conntrack]
    private let logger: Logger
    private let cond = NSCondition()
    // Under `cond`:
    private var jobs: [Job] = []
    private var head = 0
    private var queuedUpdates = 0
    private var busy = false
    private var stopped = false
    private var reholding = true
    private var nextRehold: Date
    private var idleWaiters: [CheckedContinuation<Void, Never>] = []
    private var retryAt: [(Date, [ConntrackKey], Int)] = []
    private let storeLookup: @Sendable (ConntrackKey) -> Conntrack?
    private var stats = HolderStatistics()

    init(policy: HoldPolicy, dataplane: any Dataplane, logger: Logger, storeEntries: @escaping @Sendable () -> [Conntrack],
         storeLookup: @escaping @Sendable (ConntrackKey) -> Conntrack?) {
        self.storeLookup = storeLookup
        self.policy = policy
        self.dataplane = dataplane
        self.logger = logger
        self.storeEntries = storeEntries
        nextRehold = Date() + policy.rearmInterval.seconds
        let t = Thread { [self] in run() }
        t.name = "keepstate-hold-\(dataplane.vrf)"
        t.start()
    }

    /// Queues changes the store made. Called under the store's lock: it only appends.
    func enqueue(_ updates: [ConntrackUpdate]) {
        guard !updates.isEmpty else { return }
        cond.lock()
        jobs.append(.hold(updates))
        queuedUpdates += updates.count
        cond.signal()
        cond.unlock()
    }

    /// Backup: held entries are re-held periodically; turning backup again re-holds everything
    /// at once (a re-arm may have shortened timeouts). Master: no more re-holds.
    func setHolding(_ holding: Bool) {
        cond.lock()
        if holding && !reholding { jobs.append(.rehold) }
        reholding = holding
        cond.signal()
        cond.unlock()
    }

    /// Queues the re-arm after a takeover; `done` runs after it (on the holder's thread).
    func rearm(_ timeout: @escaping @Sendable (Conntrack) -> UInt32?, done: @escaping @Sendable () -> Void = {}) {
        cond.lock()
        jobs.append(.rearm(timeout, done: done))
        cond.signal()
        cond.unlock()
    }

    /// Returns once everything queued so far has been written (or refused).
    func flush() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            cond.lock()
            if head == jobs.count && !busy {
                cond.unlock()
                c.resume()
                return
            }
            idleWaiters.append(c)
            cond.unlock()
        }
    }

    var statistics: HolderStatistics {
        cond.lock()
        defer { cond.unlock() }
        var s = stats
        s.queued = queuedUpdates
        return s
    }

    func stop() {
        cond.lock()
        stopped = true
        cond.signal()
        cond.unlock()
    }

    private func run() {
        while true {
            cond.lock()
            while head == jobs.count && !stopped {
                let now = Date()
                if reholding && now >= nextRehold {
                    jobs.append(.rehold)
                    break
                }
                if let i = retryAt.firstIndex(where: { $0.0 <= now }) {
                    let (_, keys, attempt) = retryAt.remove(at: i)
                    jobs.append(.retry(keys, attempt: attempt))
                    break
                }
                var wake = reholding ? nextRehold : now.addingTimeInterval(3600)
                for r in retryAt where r.0 < wake { wake = r.0 }
                _ = cond.wait(until: wake)
            }
            if stopped {
                let waiters = idleWaiters
                idleWaiters = []
                cond.unlock()
                for w in waiters { w.resume() }
                return
            }
            // Consecutive held changes go out as one batch of up to `Self.batch`.
            var batch: [ConntrackUpdate] = []
            var job: Job?
            while head < jobs.count {
                if case .hold(let u) = jobs[head] {
                    if !batch.isEmpty && batch.count + u.count > Self.batch { break }
                    batch.append(contentsOf: u)
                    head += 1
                } else {
                    if batch.isEmpty {
                        job = jobs[head]
                        head += 1
                    }
                    break
                }
            }
            queuedUpdates -= batch.count
            if head > 4096 && head * 2 > jobs.count {
                jobs.removeFirst(head)
                head = 0
            }
            busy = true
            cond.unlock()

            if !batch.isEmpty { write(batch) }
            switch job {
            case .rehold?: rehold()
            case .rearm(let timeout, let done)?:
                runRearm(timeout)
                done()
            case .retry(let keys, let attempt)?: retry(keys, attempt: attempt)
            case .hold?, nil: break
            }

            cond.lock()
            busy = false
            var waiters: [CheckedContinuation<Void, Never>] = []
            // Idle even with retries pending: a takeover must not wait for the kernel's mood.
            if head == jobs.count {
                jobs.removeAll(keepingCapacity: true)
                head = 0
                waiters = idleWaiters
                idleWaiters = []
            }
            cond.unlock()
            for w in waiters { w.resume() }
        }
    }

    private func write(_ batch: [ConntrackUpdate], attempt: Int = 0) {
        // A retry that comes after a takeover writes the entry with its own timeout: the re-arm
        // has already run, and a hold timeout written now would never be taken back.
        cond.lock()
        let holding = reholding
        cond.unlock()
        do {
            if holding {
                try dataplane.hold(batch, timeout: policy.timeout)
            } else {
                try dataplane.apply(batch)
            }
            record { $0.written += batch.count }
        } catch {
            let rejection = error as? any DataplaneWriteRejection
            let rejected = rejection?.rejectedCount ?? batch.count
            // Unknown keys (the whole write failed): every key of the batch is tried again.
            let keys = rejection.map { $0.rejectedKeys.isEmpty ? batch.map(\.key) : $0.rejectedKeys } ?? batch.map(\.key)
            let giveUp = attempt >= Self.retries
            record {
                $0.written += batch.count - rejected
                if giveUp { $0.refused += rejected }
                $0.failedBatches += 1
                $0.lastError = "\(error)"
            }
            if giveUp {
                // Say what happens next, which depends on the role: only a backup re-holds (what
                // the store has, so a refused delete is never tried again).
                cond.lock()
                let again = reholding
                cond.unlock()
                logger.error(again
                    ? "synced conntracks refused by the dataplane after \(Self.retries) retries; the next periodic re-hold writes the stored ones again (refused deletes are not retried)"
                    : "synced conntracks refused by the dataplane after \(Self.retries) retries; given up (this node is master: no re-hold)",
                             metadata: ["error": "\(error)", "entries": "\(rejected)"])
            } else {
                logger.warning("could not hold synced conntracks in the dataplane; retrying",
                               metadata: ["error": "\(error)", "entries": "\(rejected)", "attempt": "\(attempt + 1)"])
                cond.lock()
                retryAt.append((Date().addingTimeInterval(Double(1 << attempt)), keys, attempt + 1))
                cond.unlock()
            }
        }
    }

    /// Writes the store's current version of each key (deletes those it no longer has).
    private func retry(_ keys: [ConntrackKey], attempt: Int) {
        let batch: [ConntrackUpdate] = keys.map { k in storeLookup(k).map { .upsert($0) } ?? .delete(k) }
        write(batch, attempt: attempt)
    }

    private func rehold() {
        let entries = storeEntries()
        var start = 0
        while start < entries.count {
            let part = entries[start..<min(start + Self.batch, entries.count)].map { ConntrackUpdate.upsert($0) }
            start += part.count
            write(part)
        }
        cond.lock()
        stats.reholds += 1
        nextRehold = Date() + policy.rearmInterval.seconds
        cond.unlock()
        logger.debug("re-held synced conntracks", metadata: ["entries": "\(entries.count)"])
    }

    private func runRearm(_ timeout: @Sendable (Conntrack) -> UInt32?) {
        let start = ContinuousClock.now
        // The re-arm is bookkeeping (the held entries already forward); the first second after a
        // takeover belongs to the retransmissions of every flow. Its dump and writes run in this
        // thread's system calls, so they yield the CPU to forwarding at the lowest priority.
        let lowered = ThreadPriority.lower()
        if lowered == nil {
            logger.notice("the re-arm after takeover runs at the usual priority: its thread's nice value could not be lowered",
                          metadata: ["errno": "\(errno)"])
        }
        defer {
            if let lowered, !ThreadPriority.restore(lowered) {
                // The holder thread stays at nice 19: its later writes (as backup again) yield to
                // everything else on a busy machine. Said once per re-arm, with the fix.
                logger.warning("the holder thread stays at nice 19 after the re-arm (raising it again needs CAP_SYS_NICE)",
                               metadata: ["nice": "\(lowered)", "errno": "\(errno)"])
            }
        }
        do {
            let result = try dataplane.rearm(above: policy.threshold, timeout: timeout)
            let took = ContinuousClock.now - start
            record {
                $0.lastRearm = result
                $0.lastRearmDuration = took
            }
            logger.notice(
                "re-armed timeouts after takeover",
                metadata: ["rearmed": "\(result.rearmed)", "vanished": "\(result.vanished)", "skipped": "\(result.skipped)",
                           "refused": "\(result.refused)", "duration": "\(took)"])
            if result.refused > 0 {
                record { $0.lastError = "re-arm: the kernel refused \(result.refused) timeout write(s), errno \(result.firstError)" }
                logger.error("some held entries keep their hold timeout after the takeover: the kernel refused their re-arm",
                             metadata: ["refused": "\(result.refused)", "errno": "\(result.firstError)"])
            }
        } catch {
            record { $0.lastError = "re-arm: \(error)" }
            logger.error("re-arm after takeover failed; held entries keep their hold timeout", metadata: ["error": "\(error)"])
        }
    }

    private func record(_ change: (inout HolderStatistics) -> Void) {
        cond.lock()
        change(&stats)
        cond.unlock()
    }
}

/// The nice value of the calling thread (Linux: per thread), lowered for background work.
enum ThreadPriority {
    /// The lowest priority (nice 19) for the calling thread; returns the former nice value, or
    /// nil when it could not be changed (the work then runs at the usual priority).
    static func lower() -> Int32? {
        // `who` 0 is the calling thread: on Linux the nice value belongs to a thread.
        errno = 0
        let former = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
        guard errno == 0, setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 19) == 0 else { return nil }
        return former
    }

    /// Gives the calling thread its former nice value back; false when it could not (raising it
    /// again needs CAP_SYS_NICE, which root has unless a unit's CapabilityBoundingSet drops it).
    static func restore(_ former: Int32) -> Bool {
        setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, former) == 0
    }
}
