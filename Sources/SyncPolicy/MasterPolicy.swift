public import ConntrackModel

/// What the policy says about one conntrack the master just saw.
public enum SyncDecision: Sendable, Hashable {
    /// Queue this record for the peer.
    case send(SyncRecord)
    /// Nothing to send; the classification says why (`.synced` when a synced conntrack was
    /// read without anything to report, e.g. a probe answer).
    case skip(SyncClassification)

    public var record: SyncRecord? {
        if case .send(let r) = self { return r }
        return nil
    }
}

/// What a forced synchronization produced (`keepstate sync --vrf NAME`, rule 6).
public struct ForcedSync: Sendable, Hashable {
    /// The instant the conntracks were read: the activity stamp of every record.
    public var at: PolicyInstant
    /// One record per eligible conntrack, each carrying `activity == at`.
    public var records: [SyncRecord]
    /// Of those, how many were not synced before (their delay had not run out).
    public var newlySynced: Int
    /// Conntracks left out, by reason (`.alg`, `.untracked`, `.notEstablished`).
    public var skipped: [SyncClassification: Int]

    public init(at: PolicyInstant, records: [SyncRecord] = [], newlySynced: Int = 0, skipped: [SyncClassification: Int] = [:]) {
        self.at = at
        self.records = records
        self.newlySynced = newlySynced
        self.skipped = skipped
    }
}

/// The master side of the policy for one VRF: which conntracks are synced, the candidates
/// waiting for their delay, and the records to send.
///
/// Feed it, in the order they happen and from one place (an actor or an event loop):
/// - `changed(_:at:)` for every conntrack the dataplane reports new or changed (events, and
///   the differences a reconciliation dump finds);
/// - `destroyed(_:)` for every conntrack that is gone (destroy event, or a get that found
///   nothing);
/// - `dueProbes(at:)` at `nextDeadline()`, then `probed(_:at:)` with what the gets returned;
/// - `resyncRecords(_:)` when a connection's share is resynced;
/// - `forcedSync(_:at:)` for `keepstate sync`.
///
/// The per-key state is one set of synced keys and the delay tracker's candidates; the
/// conntracks themselves stay in the dataplane's mirror.
public struct MasterPolicy: Sendable {
    public var settings: PolicySettings {
        didSet { tracker.probing = settings.probing }
    }
    public private(set) var tracker: DelayTracker
    private var synced = ConntrackKeySet()

    public init(settings: PolicySettings) {
        self.settings = settings
        self.tracker = DelayTracker(probing: settings.probing)
    }

    public var syncedCount: Int { synced.count }

    /// Room for `count` synced keys without growing (a node taking over a large table).
    public mutating func reserveCapacity(_ count: Int) { synced.reserveCapacity(count) }
    public func isSynced(_ key: ConntrackKey) -> Bool { synced.contains(key) }

    private func makeRecord(_ update: ConntrackUpdate, _ reason: SyncRecord.Reason,
                            activity: PolicyInstant? = nil) -> SyncRecord {
        SyncRecord(update: update, reason: reason, activity: activity)
    }

    /// The conntrack as the peer must see it: rule 2 applied to its timeout.
    private func carried(_ c: Conntrack) -> Conntrack {
        var out = c
        out.timeout = SyncRules.carriedTimeout(of: c, settings: settings)
        return out
    }

    /// A conntrack is new or changed on the master (rules 1, 2 and 4).
    ///
    /// - Synced already: an update carrying its current timeout, or `tcpUndefined` when a TCP
    ///   conntrack is no longer ESTABLISHED (`.leftEstablished`).
    /// - Waiting in the tracker: a new reading (may make it ready, or drop it).
    /// - Otherwise: excluded, not established, synced at once (no delay), or tracked from
    ///   `establishedAt` (default: now).
    public mutating func changed(_ c: Conntrack, at now: PolicyInstant, establishedAt: PolicyInstant? = nil) -> SyncDecision {
        if synced.contains(c.key) {
            let reason: SyncRecord.Reason = (c.proto == .tcp && c.tcpState != .established) ? .leftEstablished : .changed
            return .send(makeRecord(.upsert(carried(c)), reason))
        }
        let verdict: DelayTracker.Verdict
        if tracker.contains(c.key) {
            verdict = tracker.observe(c, at: now)
        } else {
            verdict = tracker.track(c, delay: settings.policy(for: c.proto).synchronizationDelay,
                                    establishedAt: establishedAt ?? now, at: now)
        }
        return settle(c, verdict)
    }

    private mutating func settle(_ c: Conntrack, _ verdict: DelayTracker.Verdict) -> SyncDecision {
        switch verdict {
        case .ready:
            synced.insert(c.key)
            return .send(makeRecord(.upsert(carried(c)), .established))
        case .pending(let why), .dropped(let why):
            return .skip(why)
        }
    }

    /// A conntrack is gone. A delete record when it was synced; nil otherwise.
    public mutating func destroyed(_ key: ConntrackKey) -> SyncRecord? {
        tracker.remove(key)
        guard synced.remove(key) else { return nil }
        return makeRecord(.delete(key), .destroyed)
    }

    /// When `dueProbes(at:)` next has work (nil: nothing waits).
    public mutating func nextDeadline() -> PolicyInstant? { tracker.nextDeadline() }

    /// The keys to read now with a batched get (at most `limit`). Answer each with
    /// `probed(_:at:)`, or `destroyed(_:)` when the get finds nothing.
    public mutating func dueProbes(at now: PolicyInstant, limit: Int = .max) -> [ConntrackKey] {
        tracker.due(at: now, limit: limit)
    }

    /// The answer to a probe: the conntrack as a get returned it at `now`.
    public mutating func probed(_ c: Conntrack, at now: PolicyInstant) -> SyncDecision {
        if synced.contains(c.key) { return .skip(.synced) }
        return settle(c, tracker.observe(c, at: now))
    }

    /// Answers to a batch of probes read at `now`: the records to send.
    public mutating func probed(_ answers: [Conntrack], at now: PolicyInstant) -> [SyncRecord] {
        answers.compactMap { probed($0, at: now).record }
    }

    /// Why `c` is or is not synced (rule 7). Reads only.
    public func classify(_ c: Conntrack) -> SyncClassification {
        if let excluded = SyncRules.exclusion(of: c) { return excluded }
        if synced.contains(c.key) { return .synced }
        if !c.isEstablished { return .notEstablished }
        if let cand = tracker.candidate(c.key) { return cand.classification }
        return .notObserved
    }

    /// The records of a full resync, from a snapshot of the share taken now: one for each synced
    /// conntrack in it (rule 2 applied: a synced TCP conntrack outside ESTABLISHED carries
    /// `tcpUndefined`). Snapshot entries that are not synced are left out: the peer must not
    /// hold them.
    public func resyncRecords(_ snapshot: [Conntrack]) -> [SyncRecord] {
        // Probed as one batch in slot order: a node that just took over 1,000,000 entries
        // resyncs its peer at once, and probing at random took 0.4 s of CPU there.
        let isSynced = synced.containsEach(snapshot.map(\.key))
        var out: [SyncRecord] = []
        out.reserveCapacity(min(snapshot.count, synced.count))
        for (i, c) in snapshot.enumerated() where isSynced[i] {
            out.append(makeRecord(.upsert(carried(c)), .resync))
        }
        return out
    }

    /// A forced synchronization (rule 6) over conntracks read at `now` (a dump; call it once
    /// per chunk with each chunk's read instant). Every eligible conntrack is synced at once,
    /// delay or not, and its record carries `activity = now`; synced TCP conntracks outside
    /// ESTABLISHED are refreshed too (with `tcpUndefined`). Excluded and never-established
    /// conntracks are counted in `skipped`.
    public mutating func forcedSync(_ conntracks: [Conntrack], at now: PolicyInstant) -> ForcedSync {
        var result = ForcedSync(at: now)
        result.records.reserveCapacity(conntracks.count)
        for c in conntracks {
            if let excluded = SyncRules.exclusion(of: c) {
                result.skipped[excluded, default: 0] += 1
                continue
            }
            let wasSynced = synced.contains(c.key)
            guard wasSynced || c.isEstablished else {
                result.skipped[.notEstablished, default: 0] += 1
                continue
            }
            if !wasSynced {
                tracker.remove(c.key)
                synced.insert(c.key)
                result.newlySynced += 1
            }
            result.records.append(makeRecord(.upsert(carried(c)), .forced, activity: now))
        }
        return result
    }

    /// Marks conntracks as synced without sending anything: a node that becomes master adopts
    /// what it held as backup (they were synced by the former master and qualify already).
    public mutating func adoptSynced(_ keys: some Sequence<ConntrackKey>) {
        for k in keys {
            tracker.remove(k)
            synced.insert(k)
        }
    }

    /// Adopts `keys` as synced, as `adoptSynced(_:)` does. A policy with no synced key and no
    /// candidate yet (a node taking over) takes the set itself, without inserting a key.
    public mutating func adoptSynced(set keys: ConntrackKeySet) {
        if synced.isEmpty && tracker.count == 0 {
            synced = keys
        } else {
            adoptSynced(keys)
        }
    }

    /// Forgets every key and candidate (the node stops being master).
    public mutating func reset() {
        synced.removeAll()
        tracker.removeAll()
    }
}
