public import Foundation

public import SyncEngine

/// The control socket's protocol: one JSON object per line each way, a request and its reply.
/// Version 1. The schema is documented in docs/operations.md; fields are only ever added.
public enum ControlProtocol {
    public static let version = 1
    /// A request longer than this is refused without being parsed.
    public static let maximumRequestBytes = 16 * 1024
}

public enum ControlCommand: String, Codable, Sendable, CaseIterable {
    case showState = "show-state"
    case showPeer = "show-peer"
    case showConntracks = "show-conntracks"
    /// Added within version 1: a daemon from before it answers `bad value for "command"`.
    case showVRRP = "show-vrrp"
    case setState = "set-state"
    case sync
    case reload
}

public struct ControlRequest: Codable, Sendable, Equatable {
    public var version: Int
    public var command: ControlCommand
    /// Restricts `show-*` to one VRF; names the VRF of `sync`.
    public var vrf: String?
    /// `set-state`: the HA group and `master`, `backup` or `auto`.
    public var group: String?
    public var state: String?
    /// `show-conntracks`: also list the conntracks that are not synced, with their reasons
    /// (a dump of each VRF's table), at most `limit` per VRF (default 100).
    public var unsynced: Bool?
    public var limit: Int?
    /// `show-vrrp`: only this `vrrp_instance` (and the sync group it is in).
    public var instance: String?
    /// `show-conntracks`: only conntracks of this protocol (a name such as `tcp`, or a number).
    public var proto: String?

    public static let defaultUnsyncedLimit = 100

    public init(command: ControlCommand, vrf: String? = nil, group: String? = nil, state: String? = nil,
                unsynced: Bool? = nil, limit: Int? = nil, instance: String? = nil, proto: String? = nil) {
        self.version = ControlProtocol.version
        self.command = command
        self.vrf = vrf
        self.group = group
        self.state = state
        self.unsynced = unsynced
        self.limit = limit
        self.instance = instance
        self.proto = proto
    }
}

extension ControlRequest {
    private struct Versioned: Decodable { var version: Int }

    /// Decodes one request line (without its newline).
    public static func decode(_ line: some Collection<UInt8>) throws(ControlRequestError) -> ControlRequest {
        guard line.count <= ControlProtocol.maximumRequestBytes else { throw ControlRequestError.tooLong(line.count) }
        // The version first, so that a newer client gets a clear answer rather than a schema error.
        let data = Data(line)
        let versioned: Versioned
        do {
            versioned = try JSONDecoder().decode(Versioned.self, from: data)
        } catch {
            throw ControlRequestError.notJSON(ControlRequestError.explain(error))
        }
        guard versioned.version == ControlProtocol.version else { throw ControlRequestError.unsupportedVersion(versioned.version) }
        do {
            return try JSONDecoder().decode(ControlRequest.self, from: data)
        } catch {
            throw ControlRequestError.notJSON(ControlRequestError.explain(error))
        }
    }
}

/// What can be wrong with a request; the reply's `error` says it in words.
public enum ControlRequestError: Error, Equatable, CustomStringConvertible {
    case tooLong(Int)
    case notJSON(String)
    case unsupportedVersion(Int)

    public var description: String {
        switch self {
        case .tooLong(let n):
            return "request longer than \(ControlProtocol.maximumRequestBytes) bytes (\(n) read)"
        case .notJSON(let why):
            return "request is not a control request: \(why)"
        case .unsupportedVersion(let v):
            return "request version \(v) not supported (this daemon speaks version \(ControlProtocol.version))"
        }
    }

    static func explain(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): return "missing field \"\(key.stringValue)\""
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
            return "wrong type at \"\(c.codingPath.map(\.stringValue).joined(separator: "."))\""
        case DecodingError.dataCorrupted(let c):
            if let key = c.codingPath.last { return "bad value for \"\(key.stringValue)\"" }
            return "malformed JSON"
        default: return "malformed JSON"
        }
    }
}

/// One HA group as `show state` reports it.
public struct GroupReport: Codable, Sendable, Equatable {
    public var name: String
    /// `static` (an `ha_group`), `vrrp-instance` or `vrrp-sync-group`.
    public var kind: String
    /// What drives the group without an override: the configured static state or VRRP's state.
    public var driven: String
    /// `auto`, `master` or `backup` (set with `keepstate set-state`).
    public var override: String
    /// What the VRFs listening to the group do.
    public var state: String
    /// Seconds since the state last changed.
    public var since: Double
    public var transitions: Int
    public var vrfs: [String]
    /// VRRP instances only: the state machine's state (`initialize`, `backup`, `master`,
    /// `fault`), its priority after tracking, and why it is in FAULT.
    public var vrrpState: String?
    public var vrrpPriority: Int?
    public var vrrpFault: String?
}

/// One VRF as `show state` reports it.
public struct VRFReport: Codable, Sendable, Equatable {
    public var name: String
    public var netns: String?
    public var group: String?
    public var role: String
    /// Conntracks of this node that qualify for sync (the dataplane's mirror).
    public var conntracks: Int
    /// Master: the conntracks its sync policy has synced to the peer, which a peer in sync holds
    /// (the mirror can count more: conntracks waiting for their delay, and closed ones the
    /// kernel has not reaped yet). Absent on a backup.
    public var synced: Int?
    /// Conntracks received from the peer and held.
    public var held: Int
    public var holdQueue: Int
    public var holdRefused: Int
    public var lastTakeoverSeconds: Double?
    public var lastRearm: Int?
    public var connectionsEstablished: Int
    public var connections: Int
    public var dataplaneError: String?
    /// A VRF that syncs: whether this node's configuration differs from its peer's
    /// (docs/operations.md, "Configuration drift"): `none`, `ruleset`, `settings`, `both`, or
    /// `unknown` (then `driftReason` says why).
    public var drift: String?
    public var driftReason: String?
    /// What differs, one line each (`table ip nat chain postrouting differs`,
    /// `conntrack_timeouts.tcp_undefined: here 10, peer 20`).
    public var driftDetails: [String]?
    /// This node's normalised ruleset digest (SHA-256, hex), or `unknown (why)`.
    public var rulesetDigest: String?
    /// The peer's, as it last said it (absent until it did, and from a peer before protocol
    /// version 3).
    public var peerRulesetDigest: String?
}

public struct StateReport: Codable, Sendable, Equatable {
    public var routerID: String
    public var configFile: String
    public var uptime: Double
    public var groups: [GroupReport]
    public var vrfs: [VRFReport]
}

/// Conntrack counts of one VRF (`show conntracks`).
public struct ConntrackCounts: Codable, Sendable, Equatable {
    public var vrf: String
    /// By protocol name, then TCP state or "-": on a master the conntracks synced to the peer;
    /// on a backup those of its own table that would be (they qualify).
    public var synced: [String: [String: Int]]
    /// Held for the peer.
    public var held: Int
    /// `master` or `backup` (absent from daemons before the sync policy).
    public var role: String?
    /// Master: conntracks waiting for their synchronization delay or for traffic after it.
    public var pending: Int?
    /// With `unsynced` in the request: the conntracks not synced and why.
    public var unsynced: UnsyncedListing?

    public init(vrf: String, synced: [String: [String: Int]], held: Int, role: String? = nil, pending: Int? = nil,
                unsynced: UnsyncedListing? = nil) {
        self.vrf = vrf
        self.synced = synced
        self.held = held
        self.role = role
        self.pending = pending
        self.unsynced = unsynced
    }
}

/// `show vrrp`: every `vrrp_instance` and `vrrp_sync_group` (both lists empty when the
/// configuration has no VRRP).
public struct VRRPReport: Codable, Sendable, Equatable {
    public var instances: [VRRPInstanceReport]
    public var syncGroups: [VRRPSyncGroupReport]

    public init(instances: [VRRPInstanceReport] = [], syncGroups: [VRRPSyncGroupReport] = []) {
        self.instances = instances
        self.syncGroups = syncGroups
    }
}

/// One `vrrp_instance` as `show vrrp` reports it.
public struct VRRPInstanceReport: Codable, Sendable, Equatable {
    public var name: String
    public var interface: String
    public var vrid: Int
    /// 2 or 3.
    public var version: Int
    /// `ipv4` or `ipv6`.
    public var family: String
    /// `initialize`, `backup`, `master` or `fault` (the last transition performed).
    public var state: String
    /// Seconds since the last transition; nil before the first.
    public var since: Double?
    public var transitions: Int
    /// Why the last transition happened.
    public var lastReason: String?
    /// `priority` as configured.
    public var configuredPriority: Int
    /// After the `track_interface` and `track_script` weights.
    public var trackedPriority: Int
    /// What the instance advertises: `trackedPriority`, or 1 while the failback hold holds it.
    public var effectivePriority: Int
    /// Priority 255: this node owns the virtual addresses.
    public var addressOwner: Bool
    /// This node's address on the segment (the adverts' source, the tie-break).
    public var primaryAddress: String
    /// The master's address as last seen: this node's primary address while it is master;
    /// otherwise the source of the last advert received with a priority above 0 (nil: none).
    public var masterAddress: String?
    /// The last advert received (from any router of this VRID).
    public var lastAdvert: VRRPAdvertReport?
    /// `advert_int` in seconds, and the master's (VRRPv3 learns it from the master's adverts).
    public var advertInterval: Double
    public var masterAdvertInterval: Double
    public var preempt: Bool
    /// `preempt_delay` in seconds.
    public var preemptDelay: Double
    /// `unicast_peer` addresses; empty: multicast.
    public var unicastPeers: [String]
    public var virtualAddresses: [VRRPVirtualAddressReport]
    public var trackInterfaces: [VRRPTrackReport]
    public var trackScripts: [VRRPTrackReport]
    /// Why the instance is in FAULT (its own tracking or a member of its sync group).
    public var fault: String?
    public var failbackHold: VRRPFailbackHoldReport
    public var syncGroup: String?
    public var statistics: VRRPStatisticsReport
}

/// An advert as the instance last received it.
public struct VRRPAdvertReport: Codable, Sendable, Equatable {
    public var source: String
    public var priority: Int
    /// Its advert interval in seconds.
    public var advertInterval: Double
    public var secondsAgo: Double
}

/// One `virtual_ipaddress` or `virtual_ipaddress_excluded` entry.
public struct VRRPVirtualAddressReport: Codable, Sendable, Equatable {
    public var address: String
    public var prefixLength: Int
    /// The interface it goes on (`dev`, else the instance's).
    public var dev: String
    public var label: String?
    /// From `virtual_ipaddress_excluded` (not in adverts).
    public var excluded: Bool
    /// Whether the kernel has it on `dev` now; nil: the addresses could not be read.
    public var held: Bool?
}

/// One `track_interface` or `track_script` entry.
public struct VRRPTrackReport: Codable, Sendable, Equatable {
    public var name: String
    /// Interfaces: `up` or `down`; scripts: `ok` or `failed`.
    public var status: String
    /// 0: a failure puts the instance in FAULT; otherwise added (positive, while fine) or
    /// added (negative, while failed) to the priority; `reverse` swaps fine and failed.
    public var weight: Int
    public var reverse: Bool
    /// What it adds to the priority now.
    public var delta: Int
}

/// The failback hold-down of an instance (docs/vrrp.md, "Failback hold-down").
public struct VRRPFailbackHoldReport: Codable, Sendable, Equatable {
    /// The priority is held down to 1.
    public var held: Bool
    /// Seconds it has been held.
    public var heldFor: Double?
    /// The longest `failback_hold_max` of the VRFs that follow it (0: none has a hold).
    public var bound: Double
    /// VRFs following it that have not received the master's whole table.
    public var vrfsBehind: [String]
    /// Held while it settles as a new master (a master peer was sending its table).
    public var settling: Bool
    /// `failback_hold_max` ran out in this episode: not held again until the VRFs are in sync.
    public var expired: Bool
    /// Why it is held, or why it is not although VRFs are behind.
    public var reason: String?
}

/// The runner's counters.
public struct VRRPStatisticsReport: Codable, Sendable, Equatable {
    public var advertsSent: Int
    public var advertSendErrors: Int
    public var advertsReceived: Int
    /// Received packets dropped, by reason (`ttlNot255`, `vridMismatch`, ...).
    public var drops: [String: Int]
    public var becameMaster: Int
    public var announcementsSent: Int
    public var addressErrors: Int
}

/// One `vrrp_sync_group`.
public struct VRRPSyncGroupReport: Codable, Sendable, Equatable {
    public var name: String
    /// keepalived's view: `fault` if a member is, `master` if all are, `initialize` if all are,
    /// `backup` otherwise.
    public var state: String
    public var members: [VRRPSyncGroupMemberReport]
}

public struct VRRPSyncGroupMemberReport: Codable, Sendable, Equatable {
    public var name: String
    public var state: String
}

public struct ControlReply: Codable, Sendable, Equatable {
    public var version: Int = ControlProtocol.version
    public var ok: Bool
    public var error: String?
    /// A sentence for commands that change something (`set-state`, `sync`, `reload`).
    public var message: String?
    public var state: StateReport?
    public var peers: [SyncStatistics]?
    public var conntracks: [ConntrackCounts]?
    /// `show-vrrp`.
    public var vrrp: VRRPReport?

    public init(ok: Bool, error: String? = nil, message: String? = nil) {
        self.ok = ok
        self.error = error
        self.message = message
    }

    public static func failure(_ error: String) -> ControlReply { ControlReply(ok: false, error: error) }

    /// One line of JSON with sorted keys (stable for golden tests and scripts).
    public func encodedLine() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var data = (try? encoder.encode(self)) ?? Data(#"{"ok":false,"error":"reply could not be encoded","version":1}"#.utf8)
        data.append(0x0A)
        return data
    }
}
