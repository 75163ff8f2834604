/// The keepalived subset: `global_defs` VRRP settings, `vrrp_script`, `vrrp_instance` and
/// `vrrp_sync_group`, validated and with keepalived's defaults applied.
///
/// Defaults follow keepalived.conf(5) and keepalived's sources (`keepalived/include/vrrp.h`:
/// VRRP_PRIO_DFL 100, VRRP_ADVER_DFL 1, VRRP_GARP_DELAY 5 s, VRRP_GARP_REP 5,
/// VRRP_GARP_REFRESH 0, VRRP_GARP_REFRESH_REP 1; `vrrp_track.h`: script interval 1 s, weight 0,
/// timeout unset meaning the interval; `alloc_vrrp_script`: rise 1, fall 1). See
/// docs/configuration.md, section "VRRP (keepalived subset)".
///
/// Addresses are kept as the validated text the operator wrote (the VRRP module parses them);
/// this module imports no other project module.

/// VRRP protocol version of an instance.
public enum VRRPProtocolVersion: Int, Sendable, Equatable, Hashable, CustomStringConvertible {
    /// RFC 3768: IPv4 only, whole-second advert interval, optional simple password.
    case v2 = 2
    /// RFC 5798 / RFC 9568: IPv4 or IPv6, advert interval in centiseconds.
    case v3 = 3

    public var description: String { String(rawValue) }
}

public enum IPFamily: Sendable, Equatable, Hashable, CustomStringConvertible {
    case ipv4
    case ipv6

    public var description: String { self == .ipv4 ? "IPv4" : "IPv6" }
}

/// Gratuitous ARP / unsolicited NA settings of an instance (global `vrrp_garp_*`, overridden
/// per instance by `garp_*`).
public struct GARPSpec: Sendable, Equatable, Hashable {
    public static let defaultMasterDelay = 5
    public static let defaultMasterRepeat = 5
    public static let defaultMasterRefresh = 0
    public static let defaultMasterRefreshRepeat = 1

    /// Seconds after becoming master before the second burst; 0: no second burst.
    public var masterDelay: Int
    /// Messages per burst after becoming master.
    public var masterRepeat: Int
    /// Seconds between refresh bursts while master; 0: no refresh.
    public var masterRefresh: Int
    /// Messages per refresh burst.
    public var masterRefreshRepeat: Int

    public init(masterDelay: Int = GARPSpec.defaultMasterDelay, masterRepeat: Int = GARPSpec.defaultMasterRepeat,
                masterRefresh: Int = GARPSpec.defaultMasterRefresh,
                masterRefreshRepeat: Int = GARPSpec.defaultMasterRefreshRepeat) {
        self.masterDelay = masterDelay
        self.masterRepeat = masterRepeat
        self.masterRefresh = masterRefresh
        self.masterRefreshRepeat = masterRefreshRepeat
    }
}

/// The user (and group) a script runs as: `script_user`, `user`, or a notify's trailing words.
public struct ScriptUserSpec: Sendable, Equatable, Hashable {
    public var user: String
    /// nil: the user's primary group.
    public var group: String?

    public init(user: String, group: String? = nil) {
        self.user = user
        self.group = group
    }
}

/// A command to run: a `vrrp_script`'s `script` or a `notify_*` script.
public struct ScriptCommandSpec: Sendable, Equatable, Hashable {
    /// The command as written (quoted words joined by a space).
    public var text: String
    /// argv: `text` split at blanks, single quotes grouping words (`"/x.sh 'a b' c"` gives
    /// `["/x.sh", "a b", "c"]`). Never empty. The path is not resolved.
    public var arguments: [String]
    /// nil: the global `script_user` (keepalived's default user when that is unset too).
    public var runAs: ScriptUserSpec?
    public var location: SourceLocation

    public init(text: String, arguments: [String], runAs: ScriptUserSpec? = nil, location: SourceLocation) {
        self.text = text
        self.arguments = arguments
        self.runAs = runAs
        self.location = location
    }
}

/// Notify scripts of an instance or a sync group.
public struct NotifySpec: Sendable, Equatable, Hashable {
    public var master: ScriptCommandSpec?
    public var backup: ScriptCommandSpec?
    public var fault: ScriptCommandSpec?
    /// Run when the instance stops (instances only in keepalived; accepted on groups too).
    public var stop: ScriptCommandSpec?
    /// `notify`: run on every transition with 4 more arguments: "GROUP"|"INSTANCE", the name,
    /// the new state ("MASTER"|"BACKUP"|"FAULT"|"STOP") and the priority.
    public var generic: ScriptCommandSpec?

    public init(master: ScriptCommandSpec? = nil, backup: ScriptCommandSpec? = nil, fault: ScriptCommandSpec? = nil,
                stop: ScriptCommandSpec? = nil, generic: ScriptCommandSpec? = nil) {
        self.master = master
        self.backup = backup
        self.fault = fault
        self.stop = stop
        self.generic = generic
    }

    public var isEmpty: Bool { master == nil && backup == nil && fault == nil && stop == nil && generic == nil }
}

/// `global_defs` settings of the VRRP part (`router_id` is `KeepstateConfig.routerID`).
public struct VRRPGlobals: Sendable, Equatable, Hashable {
    /// `vrrp_version`: the version of IPv4 instances without `version` (IPv6 ones use 3). Default 2.
    public var version: VRRPProtocolVersion
    /// `vrrp_garp_master_*`: the defaults of every instance.
    public var garp: GARPSpec
    /// `vrrp_garp_interval`: seconds between gratuitous ARPs on an interface. Default 0.
    public var garpInterval: Double
    /// `vrrp_gna_interval`: seconds between unsolicited NAs on an interface. Default 0.
    public var gnaInterval: Double
    /// `vrrp_check_unicast_src`: default of every instance's `check_unicast_src`.
    public var checkUnicastSource: Bool
    /// `v3_checksum_as_v2`: default of every instance's `v3_checksum_as_v2`.
    public var v3ChecksumAsV2: Bool
    /// `script_user`: who runs scripts that name no user.
    public var scriptUser: ScriptUserSpec?
    /// `enable_script_security`.
    public var enableScriptSecurity: Bool

    public init(version: VRRPProtocolVersion = .v2, garp: GARPSpec = GARPSpec(), garpInterval: Double = 0,
                gnaInterval: Double = 0, checkUnicastSource: Bool = false, v3ChecksumAsV2: Bool = false,
                scriptUser: ScriptUserSpec? = nil, enableScriptSecurity: Bool = false) {
        self.version = version
        self.garp = garp
        self.garpInterval = garpInterval
        self.gnaInterval = gnaInterval
        self.checkUnicastSource = checkUnicastSource
        self.v3ChecksumAsV2 = v3ChecksumAsV2
        self.scriptUser = scriptUser
        self.enableScriptSecurity = enableScriptSecurity
    }
}

/// `vrrp_script NAME { ... }`.
public struct VRRPScriptSpec: Sendable, Equatable, Hashable {
    public static let defaultInterval = 1.0
    public static let defaultRise = 1
    public static let defaultFall = 1

    public var name: String
    /// `script` (and `user`, in `command.runAs`).
    public var command: ScriptCommandSpec
    /// Seconds between runs. Default 1.
    public var interval: Double
    /// Seconds after which a run counts as failed. Default: `interval`.
    public var timeout: Double
    /// -253...253. 0 (default): failure puts the tracking instances in FAULT; otherwise a
    /// positive weight is added while the script succeeds, a negative one while it fails.
    public var weight: Int
    /// `weight N reverse`: the adjustment's direction is reversed.
    public var weightReverse: Bool
    /// Consecutive successes to become OK. Default 1.
    public var rise: Int
    /// Consecutive failures to become KO. Default 1.
    public var fall: Int
    /// `init_fail`: the script starts in the failed state.
    public var initFail: Bool
    public var location: SourceLocation

    public init(name: String, command: ScriptCommandSpec, interval: Double = VRRPScriptSpec.defaultInterval,
                timeout: Double? = nil, weight: Int = 0, weightReverse: Bool = false,
                rise: Int = VRRPScriptSpec.defaultRise, fall: Int = VRRPScriptSpec.defaultFall,
                initFail: Bool = false, location: SourceLocation) {
        self.name = name
        self.command = command
        self.interval = interval
        self.timeout = timeout ?? interval
        self.weight = weight
        self.weightReverse = weightReverse
        self.rise = rise
        self.fall = fall
        self.initFail = initFail
        self.location = location
    }
}

/// One line of `virtual_ipaddress` or `virtual_ipaddress_excluded`.
public struct VirtualAddressSpec: Sendable, Equatable, Hashable {
    /// The address as written, without the prefix (validated by inet_pton).
    public var address: String
    public var family: IPFamily
    /// `/N`; default 32 (IPv4) or 128 (IPv6), as keepalived.
    public var prefixLength: Int
    /// `dev IFNAME`; nil: the instance's interface (its VMAC with `use_vmac`).
    public var dev: String?
    /// `label LABEL` (IPv4 only).
    public var label: String?
    /// From `virtual_ipaddress_excluded`: configured with the others but not sent in adverts.
    public var excluded: Bool
    public var location: SourceLocation

    public init(address: String, family: IPFamily, prefixLength: Int? = nil, dev: String? = nil, label: String? = nil,
                excluded: Bool = false, location: SourceLocation) {
        self.address = address
        self.family = family
        self.prefixLength = prefixLength ?? (family == .ipv4 ? 32 : 128)
        self.dev = dev
        self.label = label
        self.excluded = excluded
        self.location = location
    }
}

/// One `unicast_peer` address.
public struct UnicastPeerSpec: Sendable, Equatable, Hashable {
    public var address: String
    public var location: SourceLocation

    public init(address: String, location: SourceLocation) {
        self.address = address
        self.location = location
    }
}

/// One `track_interface` entry: `IFNAME [weight N [reverse]]`.
public struct TrackInterfaceSpec: Sendable, Equatable, Hashable {
    public var interface: String
    /// -253...253; 0 (default): the interface down puts the instance in FAULT.
    public var weight: Int
    public var reverse: Bool
    public var location: SourceLocation

    public init(interface: String, weight: Int = 0, reverse: Bool = false, location: SourceLocation) {
        self.interface = interface
        self.weight = weight
        self.reverse = reverse
        self.location = location
    }
}

/// One `track_script` entry: `NAME [weight N [reverse|noreverse]]`, resolved against the
/// `vrrp_script` (its weight and reverse flag when the entry gives none).
public struct TrackScriptSpec: Sendable, Equatable, Hashable {
    public var script: String
    public var weight: Int
    public var reverse: Bool
    public var location: SourceLocation

    public init(script: String, weight: Int = 0, reverse: Bool = false, location: SourceLocation) {
        self.script = script
        self.weight = weight
        self.reverse = reverse
        self.location = location
    }
}

/// `use_vmac [NAME]` and `vmac_xmit_base`.
public struct VMACSpec: Sendable, Equatable, Hashable {
    /// nil: the runtime picks one (keepalived uses `vrrp.VRID`).
    public var name: String?
    /// `vmac_xmit_base`: adverts go out of the base interface, not the macvlan.
    public var xmitBase: Bool

    public init(name: String? = nil, xmitBase: Bool = false) {
        self.name = name
        self.xmitBase = xmitBase
    }
}

/// `authentication { auth_type PASS auth_pass X }` (VRRPv2 only; AH is rejected).
public enum VRRPAuthenticationSpec: Sendable, Equatable, Hashable {
    case none
    /// 1 to 8 characters, sent zero-padded to 8 bytes.
    case password(String)
}

/// `vrrp_instance NAME { ... }` with keepalived's defaults applied.
public struct VRRPInstanceSpec: Sendable, Equatable, Hashable {
    public static let defaultPriority: UInt8 = 100
    /// The address owner's priority.
    public static let ownerPriority: UInt8 = 255
    public static let defaultAdvertIntervalCentiseconds: UInt16 = 100

    public var name: String
    /// `state`; default MASTER if the priority is 255, else BACKUP (keepalived).
    public var initialState: HAState
    /// `interface` (required).
    public var interface: String
    /// `virtual_router_id`, 1...255 (required).
    public var virtualRouterID: UInt8
    /// `priority`, 1...255; default 255 with `state MASTER`, else 100 (keepalived).
    public var priority: UInt8
    /// `advert_int` in centiseconds; v2: a multiple of 100 up to 25500, v3: 1...4095. Default 100.
    public var advertIntervalCentiseconds: UInt16
    /// `version`; default 3 for IPv6 instances, else the global `vrrp_version`.
    public var version: VRRPProtocolVersion
    /// The family of `virtual_ipaddress` (IPv6 also with `native_ipv6`).
    public var family: IPFamily
    /// false with `nopreempt`.
    public var preempt: Bool
    /// `preempt_delay` in seconds, 0...1000. Default 0.
    public var preemptDelay: Double
    /// `accept` / `no_accept`; default true (keepalived's default outside vrrp_strict).
    public var acceptMode: Bool
    /// `virtual_ipaddress` (at least one, one family), in adverts.
    public var virtualAddresses: [VirtualAddressSpec]
    /// `virtual_ipaddress_excluded`: configured but not in adverts (any family).
    public var excludedAddresses: [VirtualAddressSpec]
    /// `unicast_src_ip` (or its keepalived synonym `mcast_src_ip`): the source of adverts;
    /// nil: the interface's primary address.
    public var sourceAddress: String?
    /// `unicast_peer`: empty means multicast.
    public var unicastPeers: [UnicastPeerSpec]
    /// `check_unicast_src` (or the global `vrrp_check_unicast_src`).
    public var checkUnicastSource: Bool
    public var authentication: VRRPAuthenticationSpec
    public var trackInterfaces: [TrackInterfaceSpec]
    public var trackScripts: [TrackScriptSpec]
    /// `use_vmac`; nil: no VMAC.
    public var vmac: VMACSpec?
    public var garp: GARPSpec
    public var notify: NotifySpec
    /// `v3_checksum_as_v2` (or the global one): VRRPv3 over IPv4 sends the checksum without the
    /// pseudo-header (RFC 9568); default false: with it (keepalived's default).
    public var v3ChecksumAsV2: Bool
    /// The `vrrp_sync_group` this instance belongs to, if any.
    public var syncGroup: String?
    public var location: SourceLocation

    public init(name: String, initialState: HAState = .backup, interface: String, virtualRouterID: UInt8,
                priority: UInt8 = VRRPInstanceSpec.defaultPriority,
                advertIntervalCentiseconds: UInt16 = VRRPInstanceSpec.defaultAdvertIntervalCentiseconds,
                version: VRRPProtocolVersion = .v2, family: IPFamily = .ipv4, preempt: Bool = true,
                preemptDelay: Double = 0, acceptMode: Bool = true, virtualAddresses: [VirtualAddressSpec],
                excludedAddresses: [VirtualAddressSpec] = [], sourceAddress: String? = nil,
                unicastPeers: [UnicastPeerSpec] = [], checkUnicastSource: Bool = false,
                authentication: VRRPAuthenticationSpec = .none, trackInterfaces: [TrackInterfaceSpec] = [],
                trackScripts: [TrackScriptSpec] = [], vmac: VMACSpec? = nil, garp: GARPSpec = GARPSpec(),
                notify: NotifySpec = NotifySpec(), v3ChecksumAsV2: Bool = false, syncGroup: String? = nil,
                location: SourceLocation) {
        self.name = name
        self.initialState = initialState
        self.interface = interface
        self.virtualRouterID = virtualRouterID
        self.priority = priority
        self.advertIntervalCentiseconds = advertIntervalCentiseconds
        self.version = version
        self.family = family
        self.preempt = preempt
        self.preemptDelay = preemptDelay
        self.acceptMode = acceptMode
        self.virtualAddresses = virtualAddresses
        self.excludedAddresses = excludedAddresses
        self.sourceAddress = sourceAddress
        self.unicastPeers = unicastPeers
        self.checkUnicastSource = checkUnicastSource
        self.authentication = authentication
        self.trackInterfaces = trackInterfaces
        self.trackScripts = trackScripts
        self.vmac = vmac
        self.garp = garp
        self.notify = notify
        self.v3ChecksumAsV2 = v3ChecksumAsV2
        self.syncGroup = syncGroup
        self.location = location
    }

    /// Priority 255: this router owns the virtual addresses.
    public var isAddressOwner: Bool { priority == VRRPInstanceSpec.ownerPriority }
    /// `advert_int` in seconds.
    public var advertInterval: Double { Double(advertIntervalCentiseconds) / 100 }
}

/// `vrrp_sync_group NAME { group { ... } notify_* }`.
public struct VRRPSyncGroupSpec: Sendable, Equatable, Hashable {
    public var name: String
    /// Member `vrrp_instance` names, in the order given.
    public var members: [String]
    public var notify: NotifySpec
    public var location: SourceLocation

    public init(name: String, members: [String], notify: NotifySpec = NotifySpec(), location: SourceLocation) {
        self.name = name
        self.members = members
        self.notify = notify
        self.location = location
    }
}

/// What a `listen_ha_group` name refers to.
public enum HAGroupKind: Sendable, Equatable, Hashable, CustomStringConvertible {
    /// `ha_group NAME { static_state ... }`.
    case staticGroup
    case vrrpInstance
    case vrrpSyncGroup

    public var description: String {
        switch self {
        case .staticGroup: return "ha_group"
        case .vrrpInstance: return "vrrp_instance"
        case .vrrpSyncGroup: return "vrrp_sync_group"
        }
    }
}
