import ConntrackModel
public import Dataplane
import Foundation
import Logging

/// How a backup keeps the conntracks it receives in its dataplane.
public struct HoldSettings: Sendable, Equatable {
    /// The timeout a held entry gets in the kernel table: far enough that nothing expires while
    /// this node is backup (default 14 days; the kernel accepts up to INT_MAX jiffies).
    public var timeout: UInt32
    /// Entries are written in batches of at most this many.
    public var batch: Int

    public init(timeout: UInt32 = 1_209_600, batch: Int = 8192) {
        self.timeout = max(timeout, 60)
        self.batch = max(batch, 1)
    }

    /// An entry whose remaining timeout is above this is held (no packet has refreshed it):
    /// half the hold timeout, above the kernel's own longest default (TCP established, 5 days).
    public var threshold: UInt32 { timeout / 2 }
    /// Every held entry is written again this often while the node is backup, so that its
    /// remaining timeout never falls to the threshold.
    public var reholdInterval: Duration { .seconds(Int64(timeout / 4)) }
}

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
        case rearm(@Sendable (Conntrack) -> UInt32?)
        /// Keys the dataplane refused, written again from the store's current entries.
        case retry([ConntrackKey], attempt: Int)
    }

    /// A refused entry is tried again this many times, 1, 2, 4... seconds apart, before it counts
    /// as refused (the periodic re-hold tries it once more later).
    static let retries = 5

    let settings: HoldSettings
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

    init(settings: HoldSettings, dataplane: any Dataplane, logger: Logger, storeEntries: @escaping @Sendable () -> [Conntrack],
         storeLookup: @escaping @Sendable (ConntrackKey) -> Conntrack?) {
        self.storeLookup = storeLookup
        self.settings = settings
        self.dataplane = dataplane
        self.logger = logger
        self.storeEntries = storeEntries
        nextRehold = Date().addingTimeInterval(Double(settings.timeout / 4))
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

    /// Queues the re-arm after a takeover.
    func rearm(_ timeout: @escaping @Sendable (Conntrack) -> UInt32?) {
        cond.lock()
        jobs.append(.rearm(timeout))
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
            // Consecutive held changes go out as one batch of up to `settings.batch`.
            var batch: [ConntrackUpdate] = []
            var job: Job?
            while head < jobs.count {
                if case .hold(let u) = jobs[head] {
                    if !batch.isEmpty && batch.count + u.count > settings.batch { break }
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
            case .rearm(let timeout)?: runRearm(timeout)
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
        do {
            try dataplane.hold(batch, timeout: settings.timeout)
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
                logger.error("synced conntracks refused by the dataplane; the next re-hold tries again",
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
            let part = entries[start..<min(start + settings.batch, entries.count)].map { ConntrackUpdate.upsert($0) }
            start += part.count
            write(part)
        }
        cond.lock()
        stats.reholds += 1
        nextRehold = Date().addingTimeInterval(Double(settings.timeout / 4))
        cond.unlock()
        logger.debug("re-held synced conntracks", metadata: ["entries": "\(entries.count)"])
    }

    private func runRearm(_ timeout: @Sendable (Conntrack) -> UInt32?) {
        let start = ContinuousClock.now
        do {
            let result = try dataplane.rearm(above: settings.threshold, timeout: timeout)
            let took = ContinuousClock.now - start
            record {
                $0.lastRearm = result
                $0.lastRearmDuration = took
            }
            logger.notice(
                "re-armed timeouts after takeover",
                metadata: ["rearmed": "\(result.rearmed)", "vanished": "\(result.vanished)", "skipped": "\(result.skipped)", "duration": "\(took)"])
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
