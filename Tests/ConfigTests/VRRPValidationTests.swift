import Foundation
import Testing
import Config

/// A minimal valid instance; `extra` becomes line 7 from column 5, `vip` line 5 from column 9.
func instanceWith(_ extra: String, vip: String = "192.0.2.1/24", before: String = "") -> String {
    """
    \(before)vrrp_instance VI_1 {
        interface eth0
        virtual_router_id 51
        virtual_ipaddress {
            \(vip)
        }
        \(extra)
    }
    """
}

private let allowedInstance = "state, interface, virtual_router_id, priority, advert_int, nopreempt, preempt, preempt_delay, version, accept, no_accept, virtual_ipaddress, virtual_ipaddress_excluded, unicast_src_ip, mcast_src_ip, unicast_peer, check_unicast_src, authentication, track_interface, track_script, use_vmac, vmac_xmit_base, garp_master_delay, garp_master_repeat, garp_master_refresh, garp_master_refresh_repeat, notify_master, notify_backup, notify_fault, notify_stop, notify, smtp_alert, native_ipv6, v3_checksum_as_v2, debug"

@Suite struct VRRPValidationTests {
    @Test func baseIsValid() {
        #expect(errorLines(instanceWith("")) == [])
    }

    @Test(arguments: [
        // Ranges and values.
        ("priority 0", "7:14: error: value 0 for 'priority' is out of range; expected an integer in 1...255"),
        ("priority 256", "7:14: error: value 256 for 'priority' is out of range; expected an integer in 1...255"),
        ("priority high", "7:14: error: invalid value 'high' for 'priority'; expected an integer in 1...255"),
        ("state master", "7:11: error: invalid state 'master'; expected MASTER or BACKUP (upper case, as keepalived requires)"),
        ("version 4", "7:13: error: value 4 for 'version' is out of range; expected an integer in 2...3"),
        ("advert_int 0", "7:16: error: invalid value '0' for 'advert_int'; expected a number of seconds above 0 (VRRPv2: 1...255 whole seconds, VRRPv3: 0.01...40.95)"),
        ("advert_int -1", "7:16: error: invalid value '-1' for 'advert_int'; expected a number of seconds above 0 (VRRPv2: 1...255 whole seconds, VRRPv3: 0.01...40.95)"),
        ("advert_int 0.5", "7:16: error: advert_int 0.5 is not valid for VRRP version 2; expected whole seconds in 1...255 (use version 3 for sub-second adverts)"),
        ("advert_int 256", "7:16: error: advert_int 256 is not valid for VRRP version 2; expected whole seconds in 1...255 (use version 3 for sub-second adverts)"),
        ("version 3  advert_int 41", "7:27: error: advert_int 41 is not valid for VRRP version 3; expected 0.01...40.95 seconds in steps of 0.01"),
        ("version 3  advert_int 0.125", "7:27: error: advert_int 0.125 is not valid for VRRP version 3; expected 0.01...40.95 seconds in steps of 0.01"),
        ("preempt_delay 1001", "7:19: error: value 1001 for 'preempt_delay' is out of range; expected a decimal number of seconds in 0...1000"),
        ("garp_master_repeat 0", "7:24: error: value 0 for 'garp_master_repeat' is out of range; expected an integer in 1...1000"),
        ("garp_master_delay -1", "7:23: error: invalid value '-1' for 'garp_master_delay'; expected an integer of seconds in 0...86400"),
        ("smtp_alert maybe", "7:16: error: invalid value 'maybe' for 'smtp_alert'; expected one of: on, off, true, false, yes, no"),
        ("v3_checksum_as_v2 nope", "7:23: error: invalid value 'nope' for 'v3_checksum_as_v2'; expected one of: on, off, true, false, yes, no"),
        ("debug 5", "7:11: error: value 5 for 'debug' is out of range; expected an integer in 0...4"),
        ("interface eth1", "7:5: error: duplicate 'interface' in vrrp_instance; first given at line 2"),
        ("use_vmac bad/name", "7:14: error: invalid interface name 'bad/name' for 'use_vmac'; expected 1 to 15 characters without '/', ':' or blanks"),
        ("use_vmac v1 02:00:5e:00:01:33", "7:17: error: unsupported 'use_vmac' option '02:00:5e:00:01:33'; keepstate supports 'use_vmac [NAME]' (no MAC address, group or netlink_notify_msg)"),
        // Contradictions keepalived resolves silently.
        ("state MASTER  nopreempt", "7:19: error: 'nopreempt' contradicts priority 255: the address owner always preempts (keepalived ignores it)"),
        ("state MASTER  priority 200  nopreempt", "7:33: error: 'nopreempt' needs state BACKUP: with state MASTER keepalived clears it"),
        ("priority 255  state BACKUP", "7:25: error: state BACKUP contradicts priority 255: the address owner starts as MASTER (keepalived changes it silently)"),
        ("nopreempt  preempt", "7:16: error: 'preempt' contradicts 'nopreempt' at line 7"),
        ("accept  no_accept", "7:13: error: 'no_accept' contradicts 'accept' at line 7"),
        ("nopreempt  preempt_delay 5", "7:30: error: 'preempt_delay' contradicts 'nopreempt' (keepalived ignores it)"),
        ("state MASTER  priority 200  preempt_delay 5", "7:47: error: 'preempt_delay' needs state BACKUP: with state MASTER keepalived clears it"),
        ("vmac_xmit_base", "7:5: error: 'vmac_xmit_base' needs 'use_vmac' (keepalived ignores it without)"),
        ("use_vmac  unicast_peer { 192.0.2.9 }", "7:5: error: 'use_vmac' with 'unicast_peer' needs 'vmac_xmit_base' (keepalived sets it silently)"),
        ("unicast_src_ip 192.0.2.7  mcast_src_ip 192.0.2.8", "7:31: error: 'mcast_src_ip' repeats 'unicast_src_ip' at line 7; keepalived treats them as one setting, give one"),
        // Authentication.
        ("authentication { auth_type AH  auth_pass x }", "7:32: error: 'auth_type AH' (IPsec AH) is not supported by keepstate; use PASS or no authentication"),
        ("authentication { auth_type PASS  auth_pass 123456789 }", "7:48: error: invalid auth_pass '123456789'; expected 1 to 8 bytes (keepalived sends only the first 8 and truncates longer ones)"),
        ("authentication { auth_type PASS }", "7:5: error: missing required 'auth_pass' in authentication"),
        ("version 3  authentication { auth_type PASS  auth_pass x }", "7:16: error: 'authentication' is VRRPv2 only; this instance runs version 3 (keepalived ignores it)"),
        // Families and peers.
        ("unicast_peer { 2001:db8::2 }", "7:20: error: unicast peer 2001:db8::2 is IPv6 but the virtual addresses are IPv4"),
        ("unicast_src_ip 2001:db8::1", "7:20: error: 'unicast_src_ip' 2001:db8::1 is IPv6 but the virtual addresses are IPv4"),
        ("unicast_src_ip 192.0.2.999", "7:20: error: invalid IP address '192.0.2.999' for 'unicast_src_ip'; expected an IPv4 or IPv6 address"),
        ("unicast_peer { 192.0.2.9 min_ttl 1 }", "7:30: error: option 'min_ttl' of 'unicast_peer' is not supported by keepstate"),
        ("unicast_peer { 192.0.2.9\n        192.0.2.9 }", "8:9: error: duplicate unicast peer 192.0.2.9; already given at line 7"),
        ("unicast_src_ip 192.0.2.9  unicast_peer { 192.0.2.9 }", "7:46: error: unicast peer 192.0.2.9 is this router's own source address"),
        ("unicast_peer { }", "7:5: error: 'unicast_peer' is empty; expected at least one address (omit the block for multicast)"),
        ("unicast_peer { peer1 }", "7:20: error: invalid address 'peer1' in 'unicast_peer'; expected an IPv4 or IPv6 address"),
        ("native_ipv6", "7:5: error: 'native_ipv6' contradicts the IPv4 virtual address 192.0.2.1 at line 5"),
        ("virtual_ipaddress_excluded { 192.0.2.1 }", "7:34: error: duplicate virtual address 192.0.2.1; already given at line 5"),
        // Tracking.
        ("track_script { nope }", "7:20: error: unknown vrrp_script 'nope' in track_script (none is declared)"),
        ("track_interface { eth1 weight 300 }", "7:35: error: value 300 for 'weight' is out of range; expected an integer in -253...253"),
        ("track_interface { eth1 weight }", "7:28: error: 'weight' in 'track_interface' expects a value in -253...253, found end of line"),
        ("track_interface { eth1 reverse }", "7:28: error: 'reverse' in 'track_interface' must follow 'weight N'"),
        ("track_interface { eth1:0 }", "7:23: error: invalid interface name 'eth1:0' for 'track_interface'; expected 1 to 15 characters without '/', ':' or blanks"),
        ("priority 255  track_interface { eth1 weight -10 }", "7:37: error: track_interface 'eth1' has weight -10 but the instance has priority 255: the address owner's priority never changes; use weight 0 (FAULT on failure) or a lower priority"),
        // Notify scripts.
        ("notify_master \"/x.sh 'unclosed\"", "7:19: error: unclosed single quote in the command of 'notify_master' \"/x.sh 'unclosed\""),
        ("notify_master /x.sh root :grp", "7:30: error: the ':GROUP' form of 'notify_master' (supplementary groups) is not supported by keepstate; expected USER [GROUP]"),
        ("notify_master /x.sh a b c", "7:29: error: too many arguments for 'notify_master': expected 1 to 3 arguments, found extra 'c'"),
        ("notify_master \"\"", "7:19: error: empty command for 'notify_master'; expected a program and its arguments"),
        ("notify_backup", "7:5: error: 'notify_backup' expects 1 to 3 arguments, found end of line"),
        // Not supported / unknown.
        ("track_file { /tmp/x }", "7:5: error: 'track_file' is not supported by keepstate: only track_interface and track_script are implemented"),
        ("track_process { haproxy }", "7:5: error: 'track_process' is not supported by keepstate: only track_interface and track_script are implemented"),
        ("track_bfd { bfd1 }", "7:5: error: 'track_bfd' is not supported by keepstate: only track_interface and track_script are implemented"),
        ("strict_mode", "7:5: error: 'strict_mode' is not supported by keepstate: keepstate does not implement vrrp_strict"),
        ("virtual_routes { 0.0.0.0/0 via 192.0.2.254 }", "7:5: error: 'virtual_routes' is not supported by keepstate: keepstate manages virtual addresses only, not routes or rules"),
        ("mcast_dst_ip 224.0.0.19", "7:5: error: 'mcast_dst_ip' is not supported by keepstate: not implemented by keepstate"),
        ("priorty 100", "7:5: error: unknown keyword 'priorty' in vrrp_instance: not supported by keepstate; expected one of: \(allowedInstance)"),
    ])
    func instanceErrors(extra: String, expected: String) {
        #expect(errorLines(instanceWith(extra)) == ["t.conf:" + expected])
    }

    @Test func unknownKeywordInAuthentication() {
        #expect(errorLines(instanceWith("authentication { auth_hmac x }")) == [
            "t.conf:7:5: error: missing required 'auth_type' in authentication",
            "t.conf:7:5: error: missing required 'auth_pass' in authentication",
            "t.conf:7:22: error: unknown keyword 'auth_hmac' in authentication: not supported by keepstate; expected one of: auth_type, auth_pass",
        ])
    }

    @Test(arguments: [
        ("192.0.2.1/33", "5:9: error: invalid prefix length '/33' in '192.0.2.1/33'; expected 0...32 for an IPv4 address"),
        ("192.0.2.1/x", "5:9: error: invalid prefix length '/x' in '192.0.2.1/x'; expected 0...32 for an IPv4 address"),
        ("192.0.2.300", "5:9: error: invalid address '192.0.2.300' in 'virtual_ipaddress'; expected an IPv4 or IPv6 address with an optional /PREFIX"),
        ("192.0.2.1/24 scope global", "5:22: error: option 'scope' of 'virtual_ipaddress' is not supported by keepstate; supported options: dev, label"),
        ("192.0.2.1/24 no_track", "5:22: error: option 'no_track' of 'virtual_ipaddress' is not supported by keepstate; supported options: dev, label"),
        ("192.0.2.1/24 frob", "5:22: error: unexpected 'frob' in 'virtual_ipaddress'; expected 'dev', 'label' or the next address"),
        ("192.0.2.1/24 dev", "5:22: error: 'dev' in 'virtual_ipaddress' expects a value, found end of line"),
        ("192.0.2.1/24 dev eth1 dev eth2", "5:31: error: duplicate 'dev' for address '192.0.2.1/24'"),
        ("192.0.2.1/24 label eth1:x", "5:9: error: label 'eth1:x' of 192.0.2.1 must be 'eth0' or start with 'eth0:'"),
        ("192.0.2.1/24 label eth0:abcdefghijk", "5:28: error: invalid label 'eth0:abcdefghijk'; expected 1 to 15 characters without blanks"),
        ("192.0.2.1 2001:db8::1", "5:19: error: virtual address 2001:db8::1 is IPv6 but 192.0.2.1 is IPv4; the addresses of 'virtual_ipaddress' must be of one family (put the others in virtual_ipaddress_excluded)"),
        ("192.0.2.1 192.0.2.1/32", "5:19: error: duplicate virtual address 192.0.2.1; already given at line 5"),
        ("2001:db8::1/64", "5:9: error: the first IPv6 virtual address must be link-local (fe80::/10) for multicast VRRPv3 (RFC 5798 5.2.9); 2001:db8::1 is not"),
        ("fe80::1 label x", "5:23: error: 'label' applies to IPv4 addresses only; fe80::1 is IPv6"),
        ("192.0.2.1 { x }", "5:19: error: unexpected '{' in 'virtual_ipaddress'; expected its entries, one per line"),
    ])
    func virtualAddressErrors(vip: String, expected: String) {
        #expect(errorLines(instanceWith("", vip: vip)) == ["t.conf:" + expected])
    }

    @Test func ipv6Rules() {
        // Explicit version 2 with IPv6 addresses.
        #expect(errorLines(instanceWith("version 2", vip: "fe80::1")) == [
            "t.conf:7:13: error: VRRP version 2 carries IPv4 addresses only; this instance's addresses are IPv6 (use version 3)",
        ])
        // A global vrrp_version 2 does not matter: IPv6 instances run version 3 (keepalived).
        #expect(errorLines(instanceWith("advert_int 0.05", vip: "fe80::1", before: "global_defs { vrrp_version 2 }\n")) == [])
        // With unicast peers the first address need not be link-local (keepalived's rule).
        #expect(errorLines(instanceWith("unicast_peer { 2001:db8::2 }", vip: "2001:db8::1/64")) == [])
        // native_ipv6 with IPv6 addresses is fine.
        #expect(errorLines(instanceWith("native_ipv6", vip: "fe80::1")) == [])
    }

    @Test func missingRequiredAndEmptyBlocks() {
        #expect(errorLines("vrrp_instance VI_1 {\n    state BACKUP\n}\n") == [
            "t.conf:1:1: error: missing required 'interface' in vrrp_instance",
            "t.conf:1:1: error: missing required 'virtual_router_id' in vrrp_instance",
            "t.conf:1:1: error: missing required 'virtual_ipaddress' in vrrp_instance",
        ])
        #expect(errorLines("vrrp_instance VI_1 { interface eth0  virtual_router_id 0\n  virtual_ipaddress { }\n}") == [
            "t.conf:1:56: error: value 0 for 'virtual_router_id' is out of range; expected an integer in 1...255",
            "t.conf:2:3: error: 'virtual_ipaddress' is empty; expected at least one address",
        ])
        #expect(errorLines("vrrp_instance { interface eth0 }") == [
            "t.conf:1:15: error: 'vrrp_instance' expects 1 argument, found '{'",
        ])
    }

    @Test(arguments: [
        ("vrrp_strict", "1:15: error: 'vrrp_strict' is not supported by keepstate: keepstate does not implement vrrp_strict; remove it and state what it implied explicitly (for example no_accept)"),
        ("notification_email { ops@example.com }", "1:15: error: 'notification_email' is not supported by keepstate: e-mail alerts are not implemented; use notify scripts"),
        ("smtp_server 192.0.2.25", "1:15: error: 'smtp_server' is not supported by keepstate: e-mail alerts are not implemented; use notify scripts"),
        ("lvs_id LVS_DEVEL", "1:15: error: 'lvs_id' is not supported by keepstate: LVS/IPVS is not implemented"),
        ("vrrp_mcast_group4 224.0.0.19", "1:15: error: 'vrrp_mcast_group4' is not supported by keepstate: keepstate uses the IANA groups 224.0.0.18 and ff02::12"),
        ("vrrp_skip_check_adv_addr", "1:15: error: 'vrrp_skip_check_adv_addr' is not supported by keepstate: not implemented by keepstate's VRRP"),
        ("vrrp_version 4", "1:28: error: value 4 for 'vrrp_version' is out of range; expected an integer in 2...3"),
        ("vrrp_garp_interval -1", "1:34: error: invalid value '-1' for 'vrrp_garp_interval'; expected a decimal number of seconds in 0...60"),
        ("vrrp_garp_master_refresh_repeat 0", "1:47: error: value 0 for 'vrrp_garp_master_refresh_repeat' is out of range; expected an integer in 1...1000"),
        ("script_user", "1:15: error: 'script_user' expects 1 to 2 arguments, found '}'"),
        ("script_user root :wheel", "1:32: error: the ':GROUP' form of 'script_user' (supplementary groups) is not supported by keepstate; expected USER [GROUP]"),
        ("enable_snmp_vrrp", "1:15: error: 'enable_snmp_vrrp' is not supported by keepstate: SNMP and D-Bus are not implemented"),
        ("frobnicate 1", "1:15: error: unknown keyword 'frobnicate' in global_defs: not supported by keepstate; expected one of: router_id, metrics_listen, vrrp_version, vrrp_garp_master_delay, vrrp_garp_master_repeat, vrrp_garp_master_refresh, vrrp_garp_master_refresh_repeat, vrrp_garp_interval, vrrp_gna_interval, vrrp_check_unicast_src, script_user, enable_script_security, v3_checksum_as_v2"),
    ])
    func globalDefsErrors(statement: String, expected: String) {
        #expect(errorLines("global_defs { \(statement) }") == ["t.conf:" + expected])
    }

    @Test func globalDefsAccepted() throws {
        let c = try ConfigLoader.parse(text: """
        global_defs {
            vrrp_version 3
            vrrp_garp_master_repeat 2
            vrrp_garp_master_refresh_repeat 3
            script_user keepalived_script users
            v3_checksum_as_v2 yes
        }
        """, file: "t.conf")
        #expect(c.vrrpGlobals.version == .v3)
        #expect(c.vrrpGlobals.garp == GARPSpec(masterDelay: 5, masterRepeat: 2, masterRefresh: 0, masterRefreshRepeat: 3))
        #expect(c.vrrpGlobals.scriptUser == ScriptUserSpec(user: "keepalived_script", group: "users"))
        #expect(c.vrrpGlobals.v3ChecksumAsV2 && !c.vrrpGlobals.enableScriptSecurity && !c.vrrpGlobals.checkUnicastSource)
    }

    @Test(arguments: [
        ("interval 2", "1:1: error: missing required 'script' in vrrp_script"),
        ("script \"\"", "1:26: error: empty command for 'script'; expected a program and its arguments"),
        ("script /bin/true  interval 0", "1:46: error: value 0 for 'interval' is out of range; expected a decimal number of seconds in 0.001...86400"),
        ("script /bin/true  timeout x", "1:45: error: invalid value 'x' for 'timeout'; expected a decimal number of seconds in 0.001...86400"),
        ("script /bin/true  weight 254", "1:44: error: value 254 for 'weight' is out of range; expected an integer in -253...253"),
        ("script /bin/true  weight 2 sideways", "1:46: error: invalid option 'sideways' for 'weight'; expected 'reverse' or nothing"),
        ("script /bin/true  rise 0", "1:42: error: value 0 for 'rise' is out of range; expected an integer in 1...1000000"),
        ("script /bin/true  fall -1", "1:42: error: invalid value '-1' for 'fall'; expected an integer in 1...1000000"),
        ("script /bin/true  user", "1:37: error: 'user' expects 1 to 2 arguments, found '}'"),
        ("script /bin/true  init_fail yes", "1:47: error: too many arguments for 'init_fail': expected 0 arguments, found extra 'yes'"),
    ])
    func scriptErrors(body: String, expected: String) {
        #expect(errorLines("vrrp_script chk { \(body) }") == ["t.conf:" + expected])
    }

    @Test func syncGroupErrors() {
        let instances = """
        vrrp_script chk { script /bin/true  weight -10 }
        vrrp_instance A { interface eth0  virtual_router_id 1  virtual_ipaddress { 192.0.2.1 } }
        vrrp_instance B { interface eth0  virtual_router_id 2  virtual_ipaddress { 192.0.2.2 }
            track_script { chk } }
        vrrp_instance C { interface eth0  virtual_router_id 3  virtual_ipaddress { 192.0.2.3 }
            track_interface { eth1 weight 10 } }

        """ // 6 lines, groups from line 7
        #expect(errorLines(instances + "vrrp_sync_group G { group { A X } }") == [
            "t.conf:7:31: error: unknown vrrp_instance 'X' in the group of vrrp_sync_group 'G' (declared: A, B, C)",
        ])
        #expect(errorLines(instances + "vrrp_sync_group G { group { A A } }") == [
            "t.conf:7:31: error: vrrp_instance 'A' is listed twice; first at line 7",
        ])
        #expect(errorLines(instances + "vrrp_sync_group G { group { A } }\nvrrp_sync_group H { group { A } }") == [
            "t.conf:8:29: error: vrrp_instance 'A' is already in vrrp_sync_group 'G' at line 7; an instance belongs to at most one sync group",
        ])
        #expect(errorLines(instances + "vrrp_sync_group G { group { } }") == [
            "t.conf:7:21: error: 'group' is empty; expected the names of vrrp_instance blocks",
        ])
        #expect(errorLines(instances + "vrrp_sync_group G { notify_master /x.sh }") == [
            "t.conf:7:1: error: missing required 'group' in vrrp_sync_group",
        ])
        #expect(errorLines(instances + "vrrp_sync_group G { group { A }  track_script { chk } }") == [
            "t.conf:7:34: error: 'track_script' is not supported by keepstate: track the member instances instead (sync group tracking is not implemented)",
        ])
        // keepalived ignores the weights of trackers of sync group members: rejected.
        #expect(errorLines(instances + "vrrp_sync_group G { group { B C } }") == [
            "t.conf:4:20: error: track_script 'chk' of vrrp_instance 'B' has weight -10 but the instance is in vrrp_sync_group 'G': keepalived ignores tracking weights of sync group members; use weight 0 (FAULT on failure)",
            "t.conf:6:23: error: track_interface 'eth1' of vrrp_instance 'C' has weight 10 but the instance is in vrrp_sync_group 'G': keepalived ignores tracking weights of sync group members; use weight 0 (FAULT on failure)",
        ])
        #expect(errorLines(instances.replacingOccurrences(of: "track_script { chk }", with: "track_script { chk weight 0 }")
            + "vrrp_sync_group G { group { B } }") == [])
    }

    @Test func namesShareOneNamespace() {
        let vi = "vrrp_instance X { interface eth0  virtual_router_id 1  virtual_ipaddress { 192.0.2.1 } }\n"
        #expect(errorLines("ha_group X { static_state MASTER }\n" + vi) == [
            "t.conf:2:15: error: vrrp_instance name 'X' is already used by the ha_group declared at line 1; ha_group, vrrp_instance and vrrp_sync_group names must be unique (listen_ha_group refers to them by name)",
        ])
        #expect(errorLines(vi + "ha_group X { static_state MASTER }\n") == [
            "t.conf:2:10: error: ha_group name 'X' is already used by the vrrp_instance declared at line 1; ha_group, vrrp_instance and vrrp_sync_group names must be unique (listen_ha_group refers to them by name)",
        ])
        #expect(errorLines(vi + "vrrp_sync_group X { group { X } }\n") == [
            "t.conf:2:17: error: vrrp_sync_group name 'X' is already used by the vrrp_instance declared at line 1; ha_group, vrrp_instance and vrrp_sync_group names must be unique (listen_ha_group refers to them by name)",
        ])
        #expect(errorLines(vi + vi.replacingOccurrences(of: "192.0.2.1", with: "192.0.2.2")) == [
            "t.conf:2:15: error: duplicate vrrp_instance name 'X'; first declared at line 1",
        ])
        #expect(errorLines("vrrp_script s { script /a }\nvrrp_script s { script /b }\n") == [
            "t.conf:2:13: error: duplicate vrrp_script name 's'; first declared at line 1",
        ])
        // Scripts have their own namespace.
        #expect(errorLines(vi + "vrrp_script X { script /a }\n") == [])
    }

    @Test func acrossInstances() {
        let a = "vrrp_instance A { interface eth0  virtual_router_id 7  virtual_ipaddress { 192.0.2.1 } }\n"
        #expect(errorLines(a + "vrrp_instance B { interface eth0  virtual_router_id 7  virtual_ipaddress { 192.0.2.2 } }\n") == [
            "t.conf:2:53: error: virtual_router_id 7 is already used on eth0 (IPv4) by vrrp_instance 'A' at line 1",
        ])
        #expect(errorLines(a + "vrrp_instance B { interface eth1  virtual_router_id 8  virtual_ipaddress { 192.0.2.1/24 } }\n") == [
            "t.conf:2:76: error: virtual address 192.0.2.1 is also used by vrrp_instance 'A' at line 1",
        ])
        // Unicast instances may share a VRID on an interface only with disjoint peers.
        let u = "vrrp_instance A { interface eth0  virtual_router_id 7  unicast_peer { 192.0.2.20 }  virtual_ipaddress { 192.0.2.1 } }\n"
        #expect(errorLines(u + u.replacingOccurrences(of: "A {", with: "B {").replacingOccurrences(of: "192.0.2.1 ", with: "192.0.2.2 ")) == [
            "t.conf:2:53: error: virtual_router_id 7 is already used on eth0 (IPv4) by vrrp_instance 'A' at line 1",
        ])
    }

    @Test func listenHAGroupNamesAnyKindAndListsThemWhenUnknown() {
        let base = """
        ha_group g { static_state MASTER }
        vrrp_instance VI { interface eth0  virtual_router_id 1  virtual_ipaddress { 192.0.2.1 } }
        vrrp_sync_group VG { group { VI } }
        vrf v {
            ha_fp_conntrack {
                peer p { source 10.0.0.1 address 10.0.0.2 }
                listen_ha_group NAME
                tls { ca ca.pem certificate c.pem key k.key }
            }
        }
        """
        for name in ["g", "VI", "VG"] {
            #expect(errorLines(base.replacingOccurrences(of: "NAME", with: name)) == [])
        }
        #expect(errorLines(base.replacingOccurrences(of: "NAME", with: "VI_9")) == [
            "t.conf:7:25: error: unknown HA group 'VI_9'; expected the name of an ha_group, vrrp_instance or vrrp_sync_group (declared: ha_group 'g', vrrp_instance 'VI', vrrp_sync_group 'VG')",
        ])
        #expect(errorLines(syncWith("").replacingOccurrences(of: "ha_group g { static_state MASTER }", with: "")) == [
            "t.conf:5:25: error: unknown HA group 'g'; expected the name of an ha_group, vrrp_instance or vrrp_sync_group (none is declared)",
        ])
    }

    @Test(arguments: [
        ("virtual_server_group VSG { 192.0.2.1 80 }", "virtual_server_group", "LVS/IPVS load balancing is not implemented"),
        ("vrrp_track_process haproxy { process haproxy }", "vrrp_track_process", "only vrrp_script tracking is implemented"),
        ("vrrp_track_file f { file /x }", "vrrp_track_file", "only vrrp_script tracking is implemented"),
        ("static_routes { 10.0.0.0/8 via 192.0.2.254 }", "static_routes", "keepstate manages only the virtual addresses of its VRRP instances"),
        ("garp_group { garp_interval 1 }", "garp_group", "not implemented by keepstate"),
        ("net_namespace blue", "net_namespace", "a keepalived process option with no keepstate equivalent (it belongs inside global_defs in keepalived too)"),
    ])
    func topLevelRejected(statement: String, keyword: String, reason: String) {
        // The rejected statement and its block are skipped; the next one on the line is still read.
        #expect(errorLines(statement + " ha_group g { static_state x }") == [
            "t.conf:1:1: error: '\(keyword)' is not supported by keepstate: \(reason)",
            "t.conf:1:\(statement.count + 28): error: invalid static_state 'x'; expected MASTER or BACKUP",
        ])
    }

    @Test func errorsAreCollectedAcrossVRRPBlocksAndSorted() {
        let text = """
        vrrp_instance A {
            interface eth0
            virtual_router_id 300
            priority 0
            virtual_ipaddress { 192.0.2.1/40 }
            track_script { missing }
        }
        global_defs { vrrp_strict }
        """
        let errs = errorLines(text)
        #expect(errs == [
            "t.conf:3:23: error: value 300 for 'virtual_router_id' is out of range; expected an integer in 1...255",
            "t.conf:4:14: error: value 0 for 'priority' is out of range; expected an integer in 1...255",
            "t.conf:5:25: error: invalid prefix length '/40' in '192.0.2.1/40'; expected 0...32 for an IPv4 address",
            "t.conf:6:20: error: unknown vrrp_script 'missing' in track_script (none is declared)",
            "t.conf:8:15: error: 'vrrp_strict' is not supported by keepstate: keepstate does not implement vrrp_strict; remove it and state what it implied explicitly (for example no_accept)",
        ])
    }

    @Test func mutatedKeepalivedConfNeverCrashes() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        var parsed = 0
        for text in tokenMutations(of: keepalivedConf, seed: 0x7672_7270, count: 1500) {
            do {
                _ = try ConfigLoader.parse(text: text, file: "f.conf", baseDirectory: dir.path)
                parsed += 1
            } catch {
                #expect(!error.errors.isEmpty)
                #expect(error.errors.allSatisfy { $0.file == "f.conf" && $0.line >= 1 && $0.column >= 1 && !$0.message.isEmpty })
            }
        }
        #expect(parsed > 0 && parsed < 1500)
    }
}
