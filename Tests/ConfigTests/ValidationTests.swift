import Foundation
import Testing
import Config

private let allowedTop = "global_defs, ha_group, vrf, vrrp_script, vrrp_sync_group, vrrp_instance"
private let allowedSync = "peer, listen_ha_group, event_threads, tls, heartbeat_interval, dead_interval, send_queue_limit, failback_hold_max, ruleset_check_interval"

@Suite struct ValidationTests {
    @Test(arguments: [
        ("foo 1", "7:9: error: unknown keyword 'foo' in ha_fp_conntrack; expected one of: \(allowedSync)"),
        ("event_threads 0", "7:23: error: value 0 for 'event_threads' is out of range; expected an integer in 1...64"),
        ("event_threads 65", "7:23: error: value 65 for 'event_threads' is out of range; expected an integer in 1...64"),
        ("event_threads x4", "7:23: error: invalid value 'x4' for 'event_threads'; expected an integer in 1...64"),
        ("event_threads -1", "7:23: error: invalid value '-1' for 'event_threads'; expected an integer in 1...64"),
        ("event_threads 99999999999999999999999", "7:23: error: value 99999999999999999999999 for 'event_threads' is out of range; expected an integer in 1...64"),
        ("heartbeat_interval 0.01", "7:28: error: value 0.01 for 'heartbeat_interval' is out of range; expected a decimal number of seconds in 0.05...60"),
        ("heartbeat_interval 61", "7:28: error: value 61 for 'heartbeat_interval' is out of range; expected a decimal number of seconds in 0.05...60"),
        ("heartbeat_interval 1e3", "7:28: error: invalid value '1e3' for 'heartbeat_interval'; expected a decimal number of seconds in 0.05...60"),
        ("heartbeat_interval nan", "7:28: error: invalid value 'nan' for 'heartbeat_interval'; expected a decimal number of seconds in 0.05...60"),
        ("dead_interval 1", "7:23: error: dead_interval 1 must be greater than heartbeat_interval (1)"),
        ("dead_interval 0.5", "7:23: error: dead_interval 0.5 must be greater than heartbeat_interval (1)"),
        ("send_queue_limit 1023", "7:26: error: value 1023 for 'send_queue_limit' is out of range; expected an integer in 1024...67108864"),
        ("failback_hold_max 3601", "7:27: error: value 3601 for 'failback_hold_max' is out of range; expected a decimal number of seconds in 0...3600"),
        ("failback_hold_max -1", "7:27: error: invalid value '-1' for 'failback_hold_max'; expected a decimal number of seconds in 0...3600"),
        ("ruleset_check_interval 3601", "7:32: error: value 3601 for 'ruleset_check_interval' is out of range; expected a decimal number of seconds in 0...3600"),
        ("ruleset_check_interval 0.2", "7:32: error: ruleset_check_interval 0.2 is too short; expected 0 (no check) or 0.5 to 3600 seconds"),
        ("ruleset_check_interval x", "7:32: error: invalid value 'x' for 'ruleset_check_interval'; expected a decimal number of seconds in 0...3600"),
        ("send_queue_limit 67108865", "7:26: error: value 67108865 for 'send_queue_limit' is out of range; expected an integer in 1024...67108864"),
        ("listen_ha_group g", "7:9: error: duplicate 'listen_ha_group' in ha_fp_conntrack; first given at line 5"),
        ("peer q { source 10.0.0.1 address 10.0.0.3 }", "7:9: error: only one peer per VRF is supported; found peer 'q' here and peer 'p' at line 4"),
        ("event_threads", "7:9: error: 'event_threads' expects 1 argument, found end of line"),
        ("event_threads 1 2", "7:25: error: too many arguments for 'event_threads': expected 1 argument, found extra '2'"),
        ("event_threads { 1 }", "7:23: error: 'event_threads' expects 1 argument, found '{'"),
        ("event_threads 2 { }", "7:25: error: 'event_threads' does not take a block; expected end of line, found '{'"),
        ("tls /a.pem", "7:13: error: expected '{' after 'tls', found '/a.pem'"),
        ("vrrp_script chk", "7:9: error: unknown keyword 'vrrp_script' in ha_fp_conntrack; expected one of: \(allowedSync)"),
        ("event_threads \"4", "7:23: error: unterminated string; expected a closing '\"' before the end of the line"),
    ])
    func syncBlockErrors(extra: String, expected: String) {
        #expect(errorLines(syncWith(extra)) == ["t.conf:" + expected])
    }

    @Test func validBaseHasNoErrors() {
        #expect(errorLines(syncWith("")) == [])
        #expect(errorLines(syncWith("event_threads 64  heartbeat_interval 0.05  dead_interval 0.06  send_queue_limit 1024")) == [])
    }

    @Test func unknownTopLevelKeywordListsAllowed() {
        #expect(errorLines("  bogus x y\n") == [
            "t.conf:1:3: error: unknown keyword 'bogus' in top level; expected one of: \(allowedTop)",
        ])
    }

    @Test(arguments: [
        ("virtual_server", "LVS/IPVS load balancing is not implemented"),
        ("virtual_server_group", "LVS/IPVS load balancing is not implemented"),
        ("vrrp_track_process", "only vrrp_script tracking is implemented"),
        ("track_file", "only vrrp_script tracking is implemented"),
        ("bfd_instance", "only vrrp_script tracking is implemented"),
        ("static_ipaddress", "keepstate manages only the virtual addresses of its VRRP instances"),
    ])
    func unsupportedKeywords(keyword: String, reason: String) {
        // The whole statement, block included, is skipped: no further errors from its content.
        let text = "ha_group g { static_state MASTER }\n\(keyword) VI_1 80 {\n  state MASTER\n}\nvrf v { }\n"
        #expect(errorLines(text) == ["t.conf:2:1: error: '\(keyword)' is not supported by keepstate: \(reason)"])
    }

    @Test func missingRequiredKeysAtBlockKeyword() {
        let text = """
        ha_group g { }
        vrf v {
            ha_fp_conntrack {
                peer p { port 5 }
                tls { ca /a }
            }
        }
        """
        #expect(errorLines(text) == [
            "t.conf:1:1: error: missing required 'static_state' in ha_group",
            "t.conf:3:5: error: missing required 'listen_ha_group' in ha_fp_conntrack",
            "t.conf:4:9: error: missing required 'source' in peer",
            "t.conf:4:9: error: missing required 'address' in peer",
            "t.conf:5:9: error: missing required 'certificate' in tls",
            "t.conf:5:9: error: missing required 'key' in tls",
        ])
    }

    @Test func unknownHAGroup() {
        let text = syncWith("").replacingOccurrences(of: "listen_ha_group g", with: "listen_ha_group nope")
        #expect(errorLines(text) == [
            "t.conf:5:25: error: unknown HA group 'nope'; expected the name of an ha_group, vrrp_instance or vrrp_sync_group (declared: ha_group 'g')",
        ])
    }

    @Test func haGroupMayBeDeclaredAfterUse() {
        let text = syncWith("").replacingOccurrences(of: "ha_group g { static_state MASTER }", with: "") + "\nha_group g { static_state MASTER }\n"
        #expect(errorLines(text) == [])
    }

    @Test func badIPAndFamilyMismatch() {
        let bad = syncWith("").replacingOccurrences(of: "source 10.0.0.1", with: "source 10.0.0.300")
        #expect(errorLines(bad) == [
            "t.conf:4:25: error: invalid IP address '10.0.0.300' for 'source'; expected an IPv4 or IPv6 address",
        ])
        let mixed = syncWith("").replacingOccurrences(of: "address 10.0.0.2", with: "address fd00::2")
        #expect(errorLines(mixed) == [
            "t.conf:4:42: error: address 'fd00::2' is IPv6 but source '10.0.0.1' is IPv4; expected both of the same address family",
        ])
    }

    @Test func portRange() {
        #expect(errorLines(syncWith("").replacingOccurrences(of: "address 10.0.0.2", with: "address 10.0.0.2 port 0")) == [
            "t.conf:4:56: error: value 0 for 'port' is out of range; expected an integer in 1...65535",
        ])
        #expect(errorLines(syncWith("").replacingOccurrences(of: "address 10.0.0.2", with: "address 10.0.0.2 port 65536")) == [
            "t.conf:4:56: error: value 65536 for 'port' is out of range; expected an integer in 1...65535",
        ])
    }

    @Test func duplicateNames() {
        let text = """
        ha_group g { static_state MASTER }
        ha_group g { static_state BACKUP }
        vrf v { }
        vrf w { }
        vrf v { netns x }
        """
        #expect(errorLines(text) == [
            "t.conf:2:10: error: duplicate ha_group name 'g'; first declared at line 1",
            "t.conf:5:5: error: duplicate vrf name 'v'; first declared at line 3",
        ])
    }

    @Test func badNames() {
        let text = """
        vrf bad/name { }
        vrf abcdefghijklmnopqrstuvwxyz0123456 { }
        vrf ok { netns a/b }
        ha_group g { static_state slave }
        """
        #expect(errorLines(text) == [
            "t.conf:1:5: error: invalid vrf name 'bad/name'; expected 1 to 32 characters from [A-Za-z0-9_.-]",
            "t.conf:2:5: error: invalid vrf name 'abcdefghijklmnopqrstuvwxyz0123456'; expected 1 to 32 characters from [A-Za-z0-9_.-]",
            "t.conf:3:16: error: invalid network namespace name 'a/b'; expected a file name without '/'",
            "t.conf:4:27: error: invalid static_state 'slave'; expected MASTER or BACKUP",
        ])
    }

    @Test func timeoutAndDelayRanges() {
        let text = """
        vrf v {
            conntrack_timeouts { tcp_undefined 0 }
            ha_delays {
                tcp { synchronization 86401 }
                udp { undefined_grace_period x }
                icmp { synchronization 86400 undefined_grace_period 0 }
            }
        }
        """
        #expect(errorLines(text) == [
            "t.conf:2:40: error: value 0 for 'tcp_undefined' is out of range; expected an integer of seconds in 1...86400",
            "t.conf:4:31: error: value 86401 for 'synchronization' is out of range; expected an integer of seconds in 0...86400",
            "t.conf:5:38: error: invalid value 'x' for 'undefined_grace_period'; expected an integer of seconds in 0...86400",
        ])
    }

    @Test func duplicateKeyInOneLineBlock() {
        #expect(errorLines("vrf v { ha_delays { tcp { synchronization 1 synchronization 2 } } }") == [
            "t.conf:1:45: error: duplicate 'synchronization' in tcp; first given at line 1",
        ])
    }

    @Test func recoveryInOneLineBlockContinuesWithNextKeyword() {
        #expect(errorLines("vrf v { ha_delays { tcp { foo 1 synchronization x undefined_grace_period 5 6 } } }") == [
            "t.conf:1:27: error: unknown keyword 'foo' in tcp; expected one of: synchronization, undefined_grace_period",
            "t.conf:1:49: error: invalid value 'x' for 'synchronization'; expected an integer of seconds in 0...86400",
            "t.conf:1:76: error: too many arguments for 'undefined_grace_period': expected 1 argument, found extra '6'",
        ])
    }

    @Test func bracesAndBlocks() {
        #expect(errorLines("vrf v {\n  netns x\n") == [
            "t.conf:1:7: error: unclosed '{'; expected a matching '}' before the end of the file",
        ])
        #expect(errorLines("vrf v { }\n}\n") == ["t.conf:2:1: error: unexpected '}' with no matching '{'"])
        #expect(errorLines("vrf v netns x\n") == ["t.conf:1:7: error: expected '{' after 'vrf v', found 'netns'"])
        #expect(errorLines("vrf v\n{ }\n") == [
            "t.conf:1:1: error: expected '{' after 'vrf v', found end of line",
            "t.conf:2:1: error: unexpected '{'; expected a keyword (one of: \(allowedTop))",
        ])
        #expect(errorLines("vrf { netns x }") == ["t.conf:1:5: error: 'vrf' expects 1 argument, found '{'"])
        #expect(errorLines("vrf v { conntrack_timeouts 5 }") == [
            "t.conf:1:28: error: expected '{' after 'conntrack_timeouts', found '5'",
        ])
        #expect(errorLines("global_defs { router_id \"unterminated }\n") == [
            "t.conf:1:13: error: unclosed '{'; expected a matching '}' before the end of the file",
            "t.conf:1:25: error: unterminated string; expected a closing '\"' before the end of the line",
        ])
    }

    @Test func allErrorsCollectedAndSorted() {
        let text = """
        vrf v {
            conntrack_timeouts { tcp_undefined 0 }
            netns a/b
            bogus
        }
        ha_group g { static_state x }
        global_defs { router_id a }
        global_defs { router_id b }
        """
        let errs = errorLines(text)
        #expect(errs.count == 5)
        #expect(errs.map { $0.split(separator: ":")[1] } == ["2", "3", "4", "6", "8"])
        #expect(errs.last == "t.conf:8:1: error: duplicate 'global_defs'; first given at line 7")
    }

    @Test func validateFilesReportsUnreadableTLSFiles() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try dir.write("ca.pem", "x")
        let c = try ConfigLoader.parse(text: syncWith(""), file: "t.conf", baseDirectory: dir.path)
        #expect(c.vrfs.first?.sync?.tls.ca == dir.path + "/ca.pem")
        do {
            try c.validateFiles()
            Issue.record("expected errors")
        } catch {
            #expect(error.errors.map(\.description) == [
                "t.conf:6:25: error: cannot read certificate file '\(dir.path)/c.pem'; expected a readable regular file",
                "t.conf:6:43: error: cannot read private key file '\(dir.path)/k.key'; expected a readable regular file",
            ])
        }
        try dir.write("c.pem", "x")
        try dir.write("k.key", "x")
        try c.validateFiles()
    }
}
