/// What a node last heard of its peer's configuration for one VRF: from a HELLO it received, a
/// HELLO_ACK answering its own hello, or a RULESET message (the latest wins).
public struct PeerConfiguration: Sendable, Hashable {
    public var nodeID: String
    /// The protocol version of the message it came in.
    public var version: UInt16
    public var settings: [SyncSettingPair]
    /// nil from a version 1 or 2 peer.
    public var ruleset: RulesetFingerprint?

    public init(nodeID: String, version: UInt16, settings: [SyncSettingPair], ruleset: RulesetFingerprint?) {
        self.nodeID = nodeID
        self.version = version
        self.settings = settings
        self.ruleset = ruleset
    }
}

/// Whether the two nodes of a VRF run the same firewall / CG-NAT ruleset and the same
/// sync-relevant settings, and what differs (`show state`, docs/operations.md).
public struct ConfigDrift: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        case none, ruleset, settings, both, unknown
    }

    public var kind: Kind
    /// Why a comparison could not be made: for `unknown`, and for the ruleset half when only
    /// the settings differ (then also in `details`).
    public var reason: String?
    /// One line per difference (settings first, as `key: here X, peer Y`; then ruleset parts),
    /// at most `maximumDetails` and a last line saying how many more there were.
    public var details: [String]

    public static let maximumDetails = 32

    public init(kind: Kind, reason: String? = nil, details: [String] = []) {
        self.kind = kind
        self.reason = reason
        self.details = details
    }

    /// `none`, `ruleset`, `settings`, `both` or `unknown (why)`.
    public var description: String {
        kind == .unknown ? "unknown (\(reason ?? "?"))" : kind.rawValue
    }

    /// Whether the nodes are known to differ.
    public var isDrift: Bool { kind == .ruleset || kind == .settings || kind == .both }

    /// Compares this node's settings and ruleset with what the peer last said. With
    /// `compareRuleset` false (this node's ruleset check is off) only the settings count.
    public static func compare(
        localSettings: [SyncSettingPair], localRuleset: RulesetFingerprint?, peer: PeerConfiguration?,
        compareRuleset: Bool = true
    ) -> ConfigDrift {
        guard let peer else { return ConfigDrift(kind: .unknown, reason: "nothing heard from the peer yet") }
        let settings = SettingsDrift.differences(local: localSettings, remote: peer.settings, peerVersion: peer.version)
        var ruleset: [String] = []
        var unknown: String?
        if compareRuleset {
            switch (localRuleset, peer.ruleset) {
            case (nil, _):
                unknown = "this node's ruleset has not been read yet"
            case (.unknown(let why)?, _):
                unknown = "this node: \(why)"
            case (_, nil):
                unknown = "the peer speaks protocol version \(peer.version), without ruleset fingerprints"
            case (_, .unknown(let why)?):
                unknown = "the peer: \(why)"
            case (.known(let mine)?, .known(let theirs)?):
                ruleset = mine.differences(from: theirs)
            }
        }
        let kind: Kind = switch (settings.isEmpty, ruleset.isEmpty) {
        case (false, false): .both
        case (false, true): .settings
        case (true, false): .ruleset
        case (true, true): unknown == nil ? .none : .unknown
        }
        var details = settings + ruleset
        if let unknown, kind == .settings { details.append("ruleset unknown: \(unknown)") }
        if details.count > maximumDetails {
            let more = details.count - (maximumDetails - 1)
            details = Array(details.prefix(maximumDetails - 1)) + ["... and \(more) more"]
        }
        return ConfigDrift(kind: kind, reason: unknown, details: details)
    }
}
