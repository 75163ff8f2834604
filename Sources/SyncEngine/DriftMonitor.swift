import Logging
import SyncProtocol
import Synchronization

/// One VRF's comparison of this node's configuration with its peer's (`ConfigDrift`): this
/// node's ruleset fingerprint as the ruleset check last read it, and the peer's settings and
/// ruleset as it last said them (in a HELLO, a HELLO_ACK or a RULESET message; the latest
/// wins). Logs one warning when a drift appears (or what differs changes) and one notice when it
/// clears, with the engine's `vrf` and `peer` metadata.
final class DriftMonitor: Sendable {
    private struct State {
        var localRuleset: RulesetFingerprint?
        var peer: PeerConfiguration?
        var logged = ConfigDrift(kind: .unknown, reason: "nothing heard from the peer yet")
    }

    let localSettings: [SyncSettingPair]
    /// False when this node does not read its ruleset (`ruleset_check_interval 0`).
    let compareRuleset: Bool
    private let logger: Logger
    private let state = Mutex(State())

    init(localSettings: [SyncSettingPair], compareRuleset: Bool, logger: Logger) {
        self.localSettings = localSettings
        self.compareRuleset = compareRuleset
        self.logger = logger
    }

    static let checkOff = "the ruleset check is off (ruleset_check_interval 0)"
    static let notReadYet = "the ruleset has not been read yet"

    /// What this node tells its peer about its ruleset.
    var localRulesetForWire: RulesetFingerprint {
        guard compareRuleset else { return .unknown(reason: Self.checkOff) }
        return state.withLock { $0.localRuleset } ?? .unknown(reason: Self.notReadYet)
    }

    var localRuleset: RulesetFingerprint? {
        guard compareRuleset else { return .unknown(reason: Self.checkOff) }
        return state.withLock { $0.localRuleset }
    }

    var peer: PeerConfiguration? { state.withLock { $0.peer } }

    var drift: ConfigDrift {
        state.withLock { s in
            ConfigDrift.compare(localSettings: localSettings, localRuleset: s.localRuleset, peer: s.peer,
                                compareRuleset: compareRuleset)
        }
    }

    func setLocalRuleset(_ ruleset: RulesetFingerprint) {
        update { $0.localRuleset = ruleset }
    }

    /// A HELLO or HELLO_ACK from the peer. One without a ruleset from a version 3 peer (it
    /// answered a version 2 hello of ours) keeps the ruleset heard before.
    func heard(_ peer: PeerConfiguration) {
        update { s in
            var p = peer
            if p.ruleset == nil, p.version >= SyncWire.rulesetVersion { p.ruleset = s.peer?.ruleset }
            s.peer = p
        }
    }

    /// A RULESET message from the peer.
    func heardRuleset(_ ruleset: RulesetFingerprint, from hello: Hello) {
        update { s in
            var p = s.peer ?? PeerConfiguration(nodeID: hello.nodeID, version: hello.version, settings: hello.settings, ruleset: nil)
            p.ruleset = ruleset
            s.peer = p
        }
    }

    private func update(_ body: (inout State) -> Void) {
        let (before, after, node) = state.withLock { s -> (ConfigDrift, ConfigDrift, String?) in
            body(&s)
            let now = ConfigDrift.compare(localSettings: localSettings, localRuleset: s.localRuleset, peer: s.peer,
                                          compareRuleset: compareRuleset)
            let before = s.logged
            // Only drifts and their end are logged: an unknown that follows a drift is kept as
            // the drift it was, so that a drift back is not logged twice.
            if now.isDrift || now.kind == .none { s.logged = now }
            return (before, now, s.peer?.nodeID)
        }
        let metadata: Logger.Metadata = [
            "drift": "\(after.kind.rawValue)", "differences": "\(after.details.joined(separator: "; "))",
            "peer.node": "\(node ?? "?")",
        ]
        if after.isDrift, before != after {
            logger.warning("configuration drift with the peer", metadata: metadata)
        } else if after.kind == .none, before.isDrift {
            logger.notice("configuration drift with the peer cleared", metadata: ["peer.node": "\(node ?? "?")"])
        }
    }
}
