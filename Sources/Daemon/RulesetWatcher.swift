import Foundation
import Logging
import NFTRuleset
import SyncEngine
import SyncProtocol

/// The ruleset check of one VRF: on a thread of its own, reads the VRF's nftables ruleset
/// (`nft -j list ruleset` in its namespace, at most `NFTRulesetReader.timeout` each time) at
/// start, every `interval` seconds, and at once when asked (a reload), and hands each
/// fingerprint to the VRF's sync engine, which compares it with the peer's and sends it to the
/// peer. Never on an event loop or the concurrency pool: a hung nft delays only the next check.
final class RulesetWatcher: @unchecked Sendable {
    // Everything below is guarded by `condition`'s lock.
    private let condition = NSCondition()
    private var interval: Double
    private var wake = false
    private var stopped = false
    private var engine: SyncEngine?
    private var last: RulesetFingerprint?

    private let netns: String?
    private let logger: Logger
    /// The reader (tests put another in).
    private let read: @Sendable (String?) -> RulesetFingerprint

    init(netns: String?, interval: Double, logger: Logger,
         read: @escaping @Sendable (String?) -> RulesetFingerprint = { NFTRulesetReader.read(netns: $0) }) {
        self.netns = netns
        self.interval = interval
        self.logger = logger
        self.read = read
    }

    func start() {
        let t = Thread { [self] in run() }
        t.name = "keepstate-ruleset"
        t.start()
    }

    /// The engine the fingerprints go to; it gets the last one at once (so that its first
    /// hellos carry it), and a new check starts.
    func attach(_ engine: SyncEngine?) {
        condition.lock()
        self.engine = engine
        let last = self.last
        wake = true
        condition.signal()
        condition.unlock()
        if let engine, let last { engine.setLocalRuleset(last) }
    }

    /// A new interval (a reload); checks again at once.
    func reconfigure(interval: Double) {
        condition.lock()
        self.interval = interval
        wake = true
        condition.signal()
        condition.unlock()
    }

    func stop() {
        condition.lock()
        stopped = true
        engine = nil
        condition.signal()
        condition.unlock()
    }

    private func run() {
        var previous: RulesetFingerprint?
        while true {
            let fingerprint = read(netns)
            condition.lock()
            if stopped {
                condition.unlock()
                return
            }
            last = fingerprint
            let engine = self.engine
            condition.unlock()
            engine?.setLocalRuleset(fingerprint)
            log(fingerprint, after: previous)
            previous = fingerprint

            condition.lock()
            let until = Date(timeIntervalSinceNow: interval)
            while !wake && !stopped {
                if !condition.wait(until: until) { break }
            }
            wake = false
            let done = stopped
            condition.unlock()
            if done { return }
        }
    }

    private func log(_ now: RulesetFingerprint, after before: RulesetFingerprint?) {
        guard now != before else { return }
        switch (before, now) {
        case (_, .unknown(let why)):
            if case .unknown(let old)? = before, old == why { return }
            logger.warning("cannot read the nftables ruleset; its drift from the peer is unknown", metadata: ["reason": "\(why)"])
        case (.unknown?, .known(let d)), (nil, .known(let d)):
            logger.info("nftables ruleset read", metadata: ["digest": "\(d.hex)", "parts": "\(d.parts.count)"])
        case (.known?, .known(let d)):
            logger.info("nftables ruleset changed", metadata: ["digest": "\(d.hex)", "parts": "\(d.parts.count)"])
        }
    }
}
