/// The meaning of a keepstate configuration file.
public struct KeepstateConfig: Sendable, Equatable {
    /// Node identity (`global_defs { router_id }`), default: the host name.
    public var routerID: String
    /// Statically controlled HA groups, in file order.
    public var haGroups: [HAGroupConfig]
    /// VRFs in file order.
    public var vrfs: [VRFConfig]
    /// Every file read (the main file first, then includes in reading order).
    public var sources: [String]
    /// The VRRP settings of `global_defs` (defaults when there are none).
    public var vrrpGlobals: VRRPGlobals
    /// `vrrp_script` blocks in file order.
    public var vrrpScripts: [VRRPScriptSpec]
    /// `vrrp_instance` blocks in file order.
    public var vrrpInstances: [VRRPInstanceSpec]
    /// `vrrp_sync_group` blocks in file order.
    public var vrrpSyncGroups: [VRRPSyncGroupSpec]
    /// `global_defs { metrics_listen ADDRESS:PORT }`: where the Prometheus endpoint listens;
    /// nil (the default): no metrics listener.
    public var metricsListen: ListenEndpoint?

    public init(routerID: String, haGroups: [HAGroupConfig] = [], vrfs: [VRFConfig] = [], sources: [String] = [],
                vrrpGlobals: VRRPGlobals = VRRPGlobals(), vrrpScripts: [VRRPScriptSpec] = [],
                vrrpInstances: [VRRPInstanceSpec] = [], vrrpSyncGroups: [VRRPSyncGroupSpec] = [],
                metricsListen: ListenEndpoint? = nil) {
        self.routerID = routerID
        self.haGroups = haGroups
        self.vrfs = vrfs
        self.sources = sources
        self.vrrpGlobals = vrrpGlobals
        self.vrrpScripts = vrrpScripts
        self.vrrpInstances = vrrpInstances
        self.vrrpSyncGroups = vrrpSyncGroups
        self.metricsListen = metricsListen
    }

    public func haGroup(named name: String) -> HAGroupConfig? { haGroups.first { $0.name == name } }
    public func vrf(named name: String) -> VRFConfig? { vrfs.first { $0.name == name } }
    public func vrrpInstance(named name: String) -> VRRPInstanceSpec? { vrrpInstances.first { $0.name == name } }
    public func vrrpSyncGroup(named name: String) -> VRRPSyncGroupSpec? { vrrpSyncGroups.first { $0.name == name } }
    public func vrrpScript(named name: String) -> VRRPScriptSpec? { vrrpScripts.first { $0.name == name } }

    /// What a `listen_ha_group` name refers to (the three kinds share one namespace).
    public func haGroupKind(named name: String) -> HAGroupKind? {
        if haGroup(named: name) != nil { return .staticGroup }
        if vrrpInstance(named: name) != nil { return .vrrpInstance }
        if vrrpSyncGroup(named: name) != nil { return .vrrpSyncGroup }
        return nil
    }
}

/// A TCP address and port to listen on (`metrics_listen`).
public struct ListenEndpoint: Sendable, Equatable, CustomStringConvertible {
    /// An IPv4 or IPv6 literal, without brackets.
    public var address: String
    public var port: UInt16
    public var location: SourceLocation

    public init(address: String, port: UInt16, location: SourceLocation) {
        self.address = address
        self.port = port
        self.location = location
    }

    public var isIPv6: Bool { address.contains(":") }

    /// As written in the configuration: `127.0.0.1:9469`, `[::1]:9469`.
    public var description: String { isIPv6 ? "[\(address)]:\(port)" : "\(address):\(port)" }

    /// Address and port equal, wherever they were written.
    public func sameEndpoint(as other: ListenEndpoint?) -> Bool {
        guard let other else { return false }
        return address == other.address && port == other.port
    }
}

public enum HAState: String, Sendable, Equatable {
    case master = "MASTER"
    case backup = "BACKUP"
}

public struct HAGroupConfig: Sendable, Equatable {
    public var name: String
    public var staticState: HAState
    public var location: SourceLocation

    public init(name: String, staticState: HAState, location: SourceLocation) {
        self.name = name
        self.staticState = staticState
        self.location = location
    }
}

public struct VRFConfig: Sendable, Equatable {
    public var name: String
    /// Network namespace of the VRF; nil means the daemon's own.
    public var netns: String?
    /// `ha_fp_conntrack` settings; nil when the VRF does not synchronise.
    public var sync: SyncConfig?
    public var timeouts: ConntrackTimeouts
    public var delays: HADelays
    public var location: SourceLocation

    public init(name: String, netns: String? = nil, sync: SyncConfig? = nil,
                timeouts: ConntrackTimeouts = ConntrackTimeouts(), delays: HADelays = HADelays(),
                location: SourceLocation) {
        self.name = name
        self.netns = netns
        self.sync = sync
        self.timeouts = timeouts
        self.delays = delays
        self.location = location
    }

    /// Canonical, key-sorted sync-relevant settings; both nodes compare them to detect drift.
    /// They are the settings whose difference makes a failover (or failback) behave
    /// differently depending on which node is master (docs/operations.md, "Configuration
    /// drift"): `tcp_undefined`, the delays and grace periods of each protocol, and
    /// `failback_hold_max` (when the VRF syncs).
    public func syncSettings() -> [SyncSetting] {
        var out = [SyncSetting(key: "conntrack_timeouts.tcp_undefined", value: String(timeouts.tcpUndefined))]
        if let sync {
            out.append(SyncSetting(key: "ha_fp_conntrack.failback_hold_max", value: fmt(sync.failbackHoldMax)))
        }
        for (proto, d) in [("tcp", delays.tcp), ("udp", delays.udp), ("icmp", delays.icmp)] {
            out.append(SyncSetting(key: "ha_delays.\(proto).synchronization", value: String(d.synchronization)))
            out.append(SyncSetting(key: "ha_delays.\(proto).undefined_grace_period",
                                   value: d.undefinedGracePeriod.map { String($0) } ?? "unset"))
        }
        return out.sorted { $0.key < $1.key }
    }
}

public struct SyncSetting: Sendable, Equatable, CustomStringConvertible {
    public var key: String
    public var value: String
    public init(key: String, value: String) {
        self.key = key
        self.value = value
    }
    public var description: String { "\(key)=\(value)" }
}

public struct SyncConfig: Sendable, Equatable {
    public static let defaultEventThreads = 4
    public static let defaultHeartbeatInterval = 1.0
    public static let defaultSendQueueLimit = 1_048_576
    public static let defaultFailbackHoldMax = 120.0
    public static let defaultRulesetCheckInterval = 30.0
    /// The shortest `ruleset_check_interval` other than 0 (each check runs `nft`).
    public static let minimumRulesetCheckInterval = 0.5

    public var peer: PeerConfig
    /// The `ha_group`, `vrrp_instance` or `vrrp_sync_group` whose state this VRF follows
    /// (`KeepstateConfig.haGroupKind(named:)` tells which).
    public var listenHAGroup: String
    public var eventThreads: Int
    public var tls: TLSFiles
    public var heartbeatInterval: Double
    public var deadInterval: Double
    public var sendQueueLimit: Int
    /// `failback_hold_max`: seconds a VRRP instance this VRF follows keeps its priority held
    /// down (to 1) while, as backup, it has not received a full resync from the master; 0: no
    /// hold-down.
    public var failbackHoldMax: Double
    /// `ruleset_check_interval`: seconds between two reads of this VRF's nftables ruleset,
    /// whose fingerprint is compared with the peer's; 0: no ruleset check.
    public var rulesetCheckInterval: Double

    public init(peer: PeerConfig, listenHAGroup: String, eventThreads: Int = SyncConfig.defaultEventThreads,
                tls: TLSFiles, heartbeatInterval: Double = SyncConfig.defaultHeartbeatInterval,
                deadInterval: Double? = nil, sendQueueLimit: Int = SyncConfig.defaultSendQueueLimit,
                failbackHoldMax: Double = SyncConfig.defaultFailbackHoldMax,
                rulesetCheckInterval: Double = SyncConfig.defaultRulesetCheckInterval) {
        self.peer = peer
        self.listenHAGroup = listenHAGroup
        self.eventThreads = eventThreads
        self.tls = tls
        self.heartbeatInterval = heartbeatInterval
        self.deadInterval = deadInterval ?? 3 * heartbeatInterval
        self.sendQueueLimit = sendQueueLimit
        self.failbackHoldMax = failbackHoldMax
        self.rulesetCheckInterval = rulesetCheckInterval
    }
}

public struct PeerConfig: Sendable, Equatable {
    public static let defaultPort: UInt16 = 3790

    public var name: String
    /// Local address to bind/connect from (IPv4 or IPv6, as written).
    public var source: String
    /// The peer's address, same family as `source`.
    public var address: String
    public var port: UInt16
    /// Name the peer's certificate must carry (DNS SAN).
    public var identity: String

    public init(name: String, source: String, address: String, port: UInt16 = PeerConfig.defaultPort, identity: String? = nil) {
        self.name = name
        self.source = source
        self.address = address
        self.port = port
        self.identity = identity ?? name
    }
}

/// Absolute paths of the TLS files, with the location of the line naming each.
public struct TLSFiles: Sendable, Equatable {
    public var ca: String
    public var certificate: String
    public var key: String
    public var caLocation: SourceLocation
    public var certificateLocation: SourceLocation
    public var keyLocation: SourceLocation

    public init(ca: String, certificate: String, key: String,
                caLocation: SourceLocation, certificateLocation: SourceLocation, keyLocation: SourceLocation) {
        self.ca = ca
        self.certificate = certificate
        self.key = key
        self.caLocation = caLocation
        self.certificateLocation = certificateLocation
        self.keyLocation = keyLocation
    }
}

public struct ConntrackTimeouts: Sendable, Equatable {
    public var tcpUndefined: Int
    public init(tcpUndefined: Int = 10) { self.tcpUndefined = tcpUndefined }
}

public struct ProtocolDelays: Sendable, Equatable {
    public var synchronization: Int
    public var undefinedGracePeriod: Int?
    public init(synchronization: Int = 0, undefinedGracePeriod: Int? = nil) {
        self.synchronization = synchronization
        self.undefinedGracePeriod = undefinedGracePeriod
    }
}

public struct HADelays: Sendable, Equatable {
    public var tcp: ProtocolDelays
    public var udp: ProtocolDelays
    public var icmp: ProtocolDelays
    public init(tcp: ProtocolDelays = ProtocolDelays(), udp: ProtocolDelays = ProtocolDelays(), icmp: ProtocolDelays = ProtocolDelays()) {
        self.tcp = tcp
        self.udp = udp
        self.icmp = icmp
    }
}

extension KeepstateConfig {
    /// Checks that every TLS file named in the configuration is a readable regular file.
    /// Errors are located at the `ca` / `certificate` / `key` keyword.
    public func validateFiles() throws(ConfigErrors) {
        var errors: [ConfigError] = []
        for vrf in vrfs {
            guard let tls = vrf.sync?.tls else { continue }
            for (what, path, loc) in [("CA certificate", tls.ca, tls.caLocation),
                                      ("certificate", tls.certificate, tls.certificateLocation),
                                      ("private key", tls.key, tls.keyLocation)]
            where !Paths.isReadableFile(path) {
                errors.append(ConfigError(at: loc, "cannot read \(what) file '\(path)'; expected a readable regular file"))
            }
        }
        if !errors.isEmpty { throw ConfigErrors(errors.sortedByLocation(fileOrder: sources)) }
    }
}
