/// Layer 3: the schema-driven statement splitter.
///
/// Design (supports both multi-line and one-line blocks, unambiguously):
/// every keyword has an arity. Inside a block the splitter reads a keyword, then its arguments,
/// then, for block keywords, a `{...}` block. A fixed-arity keyword takes exactly `arity` words
/// (argument words are never taken as keywords). A keyword with optional arguments (keepalived's
/// `notify_master PATH [USER [GROUP]]`, `use_vmac [NAME]`, `script ...`) takes its required
/// words, then optional ones up to the end of the line or an unquoted word that is a keyword of
/// the same block. After that the statement ends; the next item must be an end of line, the end
/// of the block, or — on the same line — another keyword of the same block. So
/// `tls { ca /a.pem  certificate /b.pem  key /c.key }` and the multi-line form yield the same
/// statements. Anything else is "too many arguments". List blocks (`virtual_ipaddress { ... }`)
/// are not split into statements: their lines of words go to the builder as they are.
/// Recovery after an error skips to the next end of line or next keyword known in the block; a
/// rejected (not supported) keyword skips its line and its block.

struct KeySpec: Sendable {
    var name: String
    /// Minimum number of arguments.
    var arity: Int
    /// Maximum number of arguments (`arity` unless the keyword is variadic). Arguments never
    /// run past the end of the line.
    var maxArity: Int
    /// Child keywords for block keywords; nil for plain (non-block) keywords and list blocks.
    var children: [KeySpec]?
    /// A list block (`virtual_ipaddress { ... }`): its content is raw lines of words, not keywords.
    var isList = false
    /// May appear more than once in its block (otherwise a duplicate is an error).
    var repeatable = false
    /// Recognised but rejected: the reason keepstate does not support it.
    var unsupported: String?
    /// A keepalived block: an unknown keyword is reported as not supported by keepstate.
    var keepalived = false

    init(name: String, arity: Int, maxArity: Int? = nil, children: [KeySpec]?, isList: Bool = false,
         repeatable: Bool = false, unsupported: String? = nil, keepalived: Bool = false) {
        self.name = name
        self.arity = arity
        self.maxArity = maxArity ?? arity
        self.children = children
        self.isList = isList
        self.repeatable = repeatable
        self.unsupported = unsupported
        self.keepalived = keepalived
    }

    func child(_ name: String) -> KeySpec? { children?.first { $0.name == name } }
    var isBlock: Bool { children != nil || isList }
    var allowedNames: String { (children ?? []).filter { $0.unsupported == nil }.map(\.name).joined(separator: ", ") }

    /// "1 argument", "1 to 3 arguments", "at least 1 argument".
    var arityText: String {
        if maxArity == arity { return plural(arity, "argument") }
        if maxArity == Int.max { return "at least \(plural(arity, "argument"))" }
        return "\(arity) to \(maxArity) arguments"
    }
}

enum Schema {
    private static func value(_ name: String) -> KeySpec { KeySpec(name: name, arity: 1, children: nil) }
    private static func flag(_ name: String) -> KeySpec { KeySpec(name: name, arity: 0, children: nil) }
    private static func args(_ name: String, _ min: Int, _ max: Int) -> KeySpec {
        KeySpec(name: name, arity: min, maxArity: max, children: nil)
    }
    private static func list(_ name: String) -> KeySpec { KeySpec(name: name, arity: 0, children: nil, isList: true) }
    private static func delays(_ name: String) -> KeySpec {
        KeySpec(name: name, arity: 0, children: [value("synchronization"), value("undefined_grace_period")])
    }
    /// keepalived keywords keepstate recognises and rejects, with the reason.
    private static func rejected(_ reason: String, _ names: [String]) -> [KeySpec] {
        names.map { KeySpec(name: $0, arity: 0, maxArity: Int.max, children: nil, unsupported: reason) }
    }

    private static let notifyKeys = ["notify_master", "notify_backup", "notify_fault", "notify_stop", "notify"]
        .map { args($0, 1, 3) }

    static let globalDefs = KeySpec(name: "global_defs", arity: 0, children: [
        value("router_id"),
        value("metrics_listen"),
        value("vrrp_version"),
        value("vrrp_garp_master_delay"),
        value("vrrp_garp_master_repeat"),
        value("vrrp_garp_master_refresh"),
        value("vrrp_garp_master_refresh_repeat"),
        value("vrrp_garp_interval"),
        value("vrrp_gna_interval"),
        flag("vrrp_check_unicast_src"),
        args("script_user", 1, 2),
        flag("enable_script_security"),
        args("v3_checksum_as_v2", 0, 1),
    ] + rejected("e-mail alerts are not implemented; use notify scripts", [
        "notification_email", "notification_email_from", "smtp_server", "smtp_helo_name", "smtp_connect_timeout",
        "smtp_alert", "smtp_alert_vrrp", "smtp_alert_checker", "no_email_faults", "email_faults",
    ]) + rejected("keepstate does not implement vrrp_strict; remove it and state what it implied explicitly (for example no_accept)", [
        "vrrp_strict",
    ]) + rejected("LVS/IPVS is not implemented", [
        "lvs_id", "lvs_sync_daemon", "lvs_timeouts", "lvs_flush", "lvs_flush_on_stop", "lvs_notify_fifo",
        "lvs_notify_fifo_script", "checker_log_all_failures", "lvs_netlink_cmd_rcv_bufs",
        "lvs_netlink_cmd_rcv_bufs_force", "lvs_netlink_monitor_rcv_bufs", "lvs_netlink_monitor_rcv_bufs_force",
        "nftables_ipvs", "nftables_ipvs_priority", "nftables_ipvs_start_fwmark",
    ]) + rejected("SNMP and D-Bus are not implemented", [
        "snmp_socket", "enable_snmp_vrrp", "enable_snmp_keepalived", "enable_snmp_checker", "enable_snmp_rfc",
        "enable_snmp_rfcv2", "enable_snmp_rfcv3", "enable_traps", "enable_dbus", "dbus_service_name",
        "dbus_no_interface_name",
    ]) + rejected("keepstate uses the IANA groups 224.0.0.18 and ff02::12", [
        "vrrp_mcast_group4", "vrrp_mcast_group6",
    ]) + rejected("not implemented by keepstate's VRRP", [
        "vrrp_garp_lower_prio_repeat", "vrrp_garp_lower_prio_delay", "vrrp_min_garp", "vrrp_garp_extra_if",
        "vrrp_down_timer_adverts", "vrrp_lower_prio_no_advert", "vrrp_higher_prio_send_advert",
        "vrrp_skip_check_adv_addr", "vrrp_notify_priority_changes", "vrrp_startup_delay", "vrrp_delay_after_boot",
        "vrrp_iptables", "vrrp_ipsets", "nftables", "nftables_priority", "nftables_counters", "nftables_ifindex",
        "vrrp_notify_fifo", "vrrp_notify_fifo_script", "notify_fifo", "notify_fifo_script", "dynamic_interfaces",
        "default_interface", "vmac_prefix", "vmac_addr_prefix", "log_unknown_vrids", "disable_local_igmp",
        "vrrp_rx_bufs_policy", "vrrp_rx_bufs_multiplier", "vrrp_netlink_cmd_rcv_bufs",
        "vrrp_netlink_cmd_rcv_bufs_force", "vrrp_netlink_monitor_rcv_bufs", "vrrp_netlink_monitor_rcv_bufs_force",
    ]) + rejected("a keepalived process option with no keepstate equivalent", [
        "net_namespace", "net_namespace_ipvs", "namespace_with_ipsets", "instance", "use_pid_dir",
        "linkbeat_use_polling", "child_wait_time", "tmp_config_directory", "config_save_dir", "process_names",
        "process_name", "vrrp_process_name", "checker_process_name", "bfd_process_name", "use_symlink_paths",
        "set_supplementary_groups", "startup_script", "startup_script_timeout", "shutdown_script",
        "shutdown_script_timeout", "max_auto_priority", "min_auto_priority_delay", "vrrp_priority",
        "checker_priority", "bfd_priority", "vrrp_no_swap", "checker_no_swap", "bfd_no_swap", "vrrp_cpu_affinity",
        "checker_cpu_affinity", "bfd_cpu_affinity", "vrrp_rt_priority", "checker_rt_priority", "bfd_rt_priority",
        "vrrp_rlimit_rttime", "checker_rlimit_rttime", "bfd_rlimit_rttime", "process_monitor_rcv_bufs",
        "process_monitor_rcv_bufs_force", "rs_init_notifies", "no_checker_emails", "umask", "random_seed",
        "reload_check_config", "include_check", "reload_time_file", "reload_repeat", "reload_file",
        "data_use_instance", "state_file_location", "stats_file_location", "json_file_location", "json_version",
        "iproute_usr_dir", "iproute_etc_dir", "fifo_write_vrrp_states_on_reload",
    ]), keepalived: true)

    static let vrrpScript = KeySpec(name: "vrrp_script", arity: 1, children: [
        args("script", 1, Int.max),
        value("interval"),
        value("timeout"),
        args("weight", 1, 2),
        value("rise"),
        value("fall"),
        args("user", 1, 2),
        flag("init_fail"),
    ], repeatable: true, keepalived: true)

    static let vrrpSyncGroup = KeySpec(name: "vrrp_sync_group", arity: 1, children: [
        list("group"),
    ] + notifyKeys + [
        args("smtp_alert", 0, 1),
    ] + rejected("track the member instances instead (sync group tracking is not implemented)", [
        "track_interface", "track_script", "track_file", "track_process", "track_bfd",
        "global_tracking", "sync_group_tracking_weight",
    ]) + rejected("not implemented by keepstate", [
        "notify_deleted", "notify_priority_changes",
    ]), repeatable: true, keepalived: true)

    static let vrrpInstance = KeySpec(name: "vrrp_instance", arity: 1, children: [
        value("state"),
        value("interface"),
        value("virtual_router_id"),
        value("priority"),
        value("advert_int"),
        flag("nopreempt"),
        flag("preempt"),
        value("preempt_delay"),
        value("version"),
        flag("accept"),
        flag("no_accept"),
        list("virtual_ipaddress"),
        list("virtual_ipaddress_excluded"),
        value("unicast_src_ip"),
        value("mcast_src_ip"),
        list("unicast_peer"),
        flag("check_unicast_src"),
        KeySpec(name: "authentication", arity: 0, children: [value("auth_type"), value("auth_pass")], keepalived: true),
        list("track_interface"),
        list("track_script"),
        args("use_vmac", 0, 2),
        flag("vmac_xmit_base"),
        value("garp_master_delay"),
        value("garp_master_repeat"),
        value("garp_master_refresh"),
        value("garp_master_refresh_repeat"),
    ] + notifyKeys + [
        args("smtp_alert", 0, 1),
        flag("native_ipv6"),
        args("v3_checksum_as_v2", 0, 1),
        value("debug"),
    ] + rejected("keepstate does not implement vrrp_strict", [
        "strict_mode",
    ]) + rejected("only track_interface and track_script are implemented", [
        "track_file", "track_process", "track_bfd", "track_src_ip", "dont_track_primary",
    ]) + rejected("keepstate manages virtual addresses only, not routes or rules", [
        "virtual_routes", "virtual_rules", "promote_secondaries",
    ]) + rejected("keepalived's HMAC extension is not implemented (authentication { auth_type PASS } is)", [
        "auth_hmac",
    ]) + rejected("not implemented by keepstate", [
        "use_vmac_addr", "use_ipvlan", "vrf", "mcast_dst_ip", "unicast_ttl", "unicast_fault_no_peer",
        "old_unicast_checksum", "garp_lower_prio_delay", "garp_lower_prio_repeat", "garp_extra_if",
        "vmac_garp_intvl", "down_timer_adverts", "timer_expired_backup", "lower_prio_no_advert",
        "higher_prio_send_advert", "skip_check_adv_addr", "no_virtual_ipaddress", "notify_deleted",
        "notify_master_rx_lower_pri", "notify_priority_changes", "kernel_rx_buf_size", "linkbeat_use_polling",
        "lvs_sync_daemon_interface",
    ]), repeatable: true, keepalived: true)

    static let root = KeySpec(name: "top level", arity: 0, children: [
        globalDefs,
        KeySpec(name: "ha_group", arity: 1, children: [value("static_state")], repeatable: true),
        KeySpec(name: "vrf", arity: 1, children: [
            value("netns"),
            KeySpec(name: "ha_fp_conntrack", arity: 0, children: [
                KeySpec(name: "peer", arity: 1, children: [
                    value("source"), value("address"), value("port"), value("identity"),
                ], repeatable: true),
                value("listen_ha_group"),
                value("event_threads"),
                KeySpec(name: "tls", arity: 0, children: [value("ca"), value("certificate"), value("key")]),
                value("heartbeat_interval"),
                value("dead_interval"),
                value("send_queue_limit"),
                value("failback_hold_max"),
                value("ruleset_check_interval"),
            ]),
            KeySpec(name: "conntrack_timeouts", arity: 0, children: [value("tcp_undefined")]),
            KeySpec(name: "ha_delays", arity: 0, children: [delays("tcp"), delays("udp"), delays("icmp")]),
        ], repeatable: true),
        vrrpScript,
        vrrpSyncGroup,
        vrrpInstance,
    ] + rejected("LVS/IPVS load balancing is not implemented", [
        "virtual_server", "virtual_server_group",
    ]) + rejected("only vrrp_script tracking is implemented", [
        "vrrp_track_process", "track_file", "vrrp_track_file", "bfd_instance", "track_group",
    ]) + rejected("keepstate manages only the virtual addresses of its VRRP instances", [
        "static_ipaddress", "static_routes", "static_rules",
    ]) + rejected("not implemented by keepstate", [
        "linkbeat_interfaces", "garp_group", "interface_up_down_delays",
    ]) + rejected("a keepalived process option with no keepstate equivalent (it belongs inside global_defs in keepalived too)", [
        "net_namespace", "net_namespace_ipvs", "namespace_with_ipsets", "instance", "use_pid_dir",
        "linkbeat_use_polling", "child_wait_time",
    ]))
}

/// A statement as understood by the schema: keyword, its arguments and (for blocks) children.
struct Statement: Sendable {
    var keyword: Token
    var args: [Token]
    var children: [Statement]
    /// The lines of a list block (`virtual_ipaddress { ... }`), each a non-empty list of words.
    var lines: [[Token]] = []
    var name: String { keyword.text }
    var arg: Token? { args.first }
}

struct Splitter {
    var errors: [ConfigError] = []

    private mutating func error(_ at: SourceLocation, _ message: String) {
        errors.append(ConfigError(at: at, message))
    }

    private func describe(_ item: Item?, inBlock: Bool) -> String {
        switch item {
        case .word(let t)?: return t.display
        case .block?: return "'{'"
        case .newline?: return "end of line"
        case nil: return inBlock ? "'}'" : "end of file"
        }
    }

    /// Skips to the next end of line or the next word that is a keyword of `spec` (blocks skipped).
    private func skip(_ items: [Item], from start: Int, spec: KeySpec) -> Int {
        var i = start
        while i < items.count {
            switch items[i] {
            case .newline: return i
            case .word(let t) where spec.child(t.text) != nil: return i
            default: i += 1
            }
        }
        return i
    }

    /// Skips the rest of a rejected statement: its words up to the end of the line or the next
    /// keyword of the block, and its block if it has one.
    private func skipStatement(_ items: [Item], from start: Int, spec: KeySpec) -> Int {
        var i = start
        while i < items.count {
            switch items[i] {
            case .newline: return i
            case .word(let t) where !t.quoted && spec.child(t.text) != nil: return i
            case .word: i += 1
            case .block: return i + 1
            }
        }
        return i
    }

    /// The content of a list block: one entry of words per line; nested blocks are errors.
    private mutating func splitLines(_ items: [Item], key: KeySpec) -> [[Token]] {
        var lines: [[Token]] = []
        var current: [Token] = []
        for item in items {
            switch item {
            case .word(let t):
                current.append(t)
            case .newline:
                if !current.isEmpty { lines.append(current) }
                current = []
            case .block(let open, _):
                error(open.location, "unexpected '{' in '\(key.name)'; expected its entries, one per line")
            }
        }
        if !current.isEmpty { lines.append(current) }
        return lines
    }

    mutating func split(_ items: [Item], spec: KeySpec, inBlock: Bool) -> [Statement] {
        var result: [Statement] = []
        var i = 0
        while i < items.count {
            let kwToken: Token
            switch items[i] {
            case .newline:
                i += 1
                continue
            case .block(let open, _):
                error(open.location, "unexpected '{'; expected a keyword (one of: \(spec.allowedNames))")
                i += 1
                continue
            case .word(let t):
                kwToken = t
            }
            i += 1
            guard let key = spec.child(kwToken.text) else {
                if spec.keepalived {
                    error(kwToken.location, "unknown keyword \(kwToken.display) in \(spec.name): not supported by keepstate; expected one of: \(spec.allowedNames)")
                } else {
                    error(kwToken.location, "unknown keyword \(kwToken.display) in \(spec.name); expected one of: \(spec.allowedNames)")
                }
                i = skip(items, from: i, spec: spec)
                continue
            }
            if let reason = key.unsupported {
                error(kwToken.location, "'\(key.name)' is not supported by keepstate: \(reason)")
                i = skipStatement(items, from: i, spec: spec)
                continue
            }
            var args: [Token] = []
            while args.count < key.maxArity, i < items.count, case .word(let a) = items[i] {
                // Optional arguments stop at a keyword of the block (quote a word to pass it).
                if args.count >= key.arity, !a.quoted, spec.child(a.text) != nil { break }
                args.append(a)
                i += 1
            }
            if args.count < key.arity {
                let next = i < items.count ? items[i] : nil
                var at = kwToken.location
                if case .block(let open, _)? = next { at = open.location }
                error(at, "'\(key.name)' expects \(key.arityText), found \(describe(next, inBlock: inBlock))")
                if case .block? = next { i += 1 }
                i = skip(items, from: i, spec: spec)
                continue
            }
            var children: [Statement] = []
            var lines: [[Token]] = []
            if key.isBlock {
                if i < items.count, case .block(_, let inner) = items[i] {
                    if key.isList {
                        lines = splitLines(inner, key: key)
                    } else {
                        children = split(inner, spec: key, inBlock: true)
                    }
                    i += 1
                } else {
                    let next = i < items.count ? items[i] : nil
                    var at = kwToken.location
                    if case .word(let w)? = next { at = w.location }
                    let what = key.arity == 0 ? "'\(key.name)'" : "'\(key.name) \(args.map(\.text).joined(separator: " "))'"
                    error(at, "expected '{' after \(what), found \(describe(next, inBlock: inBlock))")
                    i = skip(items, from: i, spec: spec)
                    continue
                }
            } else if i < items.count, case .block(let open, _) = items[i] {
                error(open.location, "'\(key.name)' does not take a block; expected end of line, found '{'")
                i += 1
            }
            result.append(Statement(keyword: kwToken, args: args, children: children, lines: lines))
            // After a complete statement: end of line, end of block, or another keyword.
            if i < items.count, case .word(let extra) = items[i], spec.child(extra.text) == nil {
                error(extra.location, "too many arguments for '\(key.name)': expected \(key.arityText), found extra \(extra.display)")
                i = skip(items, from: i + 1, spec: spec)
            }
        }
        return result
    }
}

func plural(_ n: Int, _ word: String) -> String { n == 1 ? "1 \(word)" : "\(n) \(word)s" }
