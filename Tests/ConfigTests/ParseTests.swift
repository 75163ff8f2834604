import Foundation
import Testing
import Config

let golden = """
! keepstate configuration
global_defs {
    router_id ha1          # this node
}
ha_group g1 {
    static_state master
}
ha_group g2 { static_state BACKUP }
vrf blue {
    netns ns-blue
    ha_fp_conntrack {
        peer p1 {
            source 10.150.0.1
            address 10.150.0.2
            port 4000
            identity node2.example
        }
        listen_ha_group g1
        event_threads 8
        tls {
            ca certs/ca.pem
            certificate /abs/cert.pem
            key ../keys/node.key
        }
        heartbeat_interval 0.5
        dead_interval 2.5
        send_queue_limit 2048
    }
    conntrack_timeouts {
        tcp_undefined 30
    }
    ha_delays {
        tcp {
            synchronization 5
            undefined_grace_period 20
        }
        udp { synchronization 1  undefined_grace_period 10 }
        icmp { synchronization 2 }
    }
}
vrf red.1 { ha_fp_conntrack { peer peer1 { source fd00::1  address fd00::2 } listen_ha_group g2  tls { ca /a.pem  certificate /b.pem  key /c.key } } }
"""

@Suite struct ParseTests {
    @Test func goldenTwoVRFs() throws {
        let c = try ConfigLoader.parse(text: golden, file: "k.conf", baseDirectory: "/etc/keepstate")
        #expect(c.routerID == "ha1")
        #expect(c.sources == ["k.conf"])
        #expect(c.haGroups == [
            HAGroupConfig(name: "g1", staticState: .master, location: SourceLocation(file: "k.conf", line: 5, column: 1)),
            HAGroupConfig(name: "g2", staticState: .backup, location: SourceLocation(file: "k.conf", line: 8, column: 1)),
        ])
        #expect(c.vrfs.map(\.name) == ["blue", "red.1"])

        let blue = c.vrfs[0]
        #expect(blue.netns == "ns-blue")
        #expect(blue.location == SourceLocation(file: "k.conf", line: 9, column: 1))
        let s = try #require(blue.sync)
        #expect(s.peer == PeerConfig(name: "p1", source: "10.150.0.1", address: "10.150.0.2", port: 4000, identity: "node2.example"))
        #expect(s.listenHAGroup == "g1")
        #expect(s.eventThreads == 8)
        #expect(s.tls == TLSFiles(ca: "/etc/keepstate/certs/ca.pem", certificate: "/abs/cert.pem", key: "/etc/keys/node.key",
                                  caLocation: SourceLocation(file: "k.conf", line: 21, column: 13),
                                  certificateLocation: SourceLocation(file: "k.conf", line: 22, column: 13),
                                  keyLocation: SourceLocation(file: "k.conf", line: 23, column: 13)))
        #expect(s.heartbeatInterval == 0.5)
        #expect(s.deadInterval == 2.5)
        #expect(s.sendQueueLimit == 2048)
        #expect(blue.timeouts == ConntrackTimeouts(tcpUndefined: 30))
        #expect(blue.delays == HADelays(tcp: ProtocolDelays(synchronization: 5, undefinedGracePeriod: 20),
                                        udp: ProtocolDelays(synchronization: 1, undefinedGracePeriod: 10),
                                        icmp: ProtocolDelays(synchronization: 2, undefinedGracePeriod: nil)))

        let red = c.vrfs[1]
        let r = try #require(red.sync)
        #expect(red.netns == nil)
        #expect(r.peer == PeerConfig(name: "peer1", source: "fd00::1", address: "fd00::2", port: 3790, identity: "peer1"))
        #expect(r.listenHAGroup == "g2")
        #expect([r.tls.ca, r.tls.certificate, r.tls.key] == ["/a.pem", "/b.pem", "/c.key"])
        #expect(r.tls.keyLocation == SourceLocation(file: "k.conf", line: 41, column: 135))
    }

    @Test func defaultsApplied() throws {
        let c = try ConfigLoader.parse(text: syncWith(""), file: "t.conf", baseDirectory: "/x")
        #expect(c.routerID == ProcessInfo.processInfo.hostName)
        let v = try #require(c.vrfs.first)
        let s = try #require(v.sync)
        #expect(s.peer.port == 3790)
        #expect(s.peer.identity == "p")
        #expect(s.eventThreads == 4)
        #expect(s.heartbeatInterval == 1)
        #expect(s.deadInterval == 3)
        #expect(s.sendQueueLimit == 1_048_576)
        #expect(s.failbackHoldMax == 120)
        #expect(v.netns == nil)
        #expect(v.timeouts.tcpUndefined == 10)
        #expect(v.delays == HADelays())
        #expect(v.delays.udp.synchronization == 0 && v.delays.udp.undefinedGracePeriod == nil)
    }

    @Test func deadIntervalDefaultsToThreeHeartbeats() throws {
        let c = try ConfigLoader.parse(text: syncWith("heartbeat_interval 0.25"), file: "t.conf")
        #expect(c.vrfs.first?.sync?.deadInterval == 0.75)
    }

    @Test func vrfWithoutSyncAndGroupWithoutVRF() throws {
        let c = try ConfigLoader.parse(text: "ha_group lonely { static_state BACKUP }\nvrf plain { netns ns1 }\n", file: "t.conf")
        #expect(c.haGroups.map(\.name) == ["lonely"])
        #expect(c.vrfs.first?.sync == nil)
        #expect(c.vrfs.first?.netns == "ns1")
        let empty = try ConfigLoader.parse(text: "ha_group g { static_state master }", file: "t.conf")
        #expect(empty.vrfs.isEmpty)
    }

    @Test func commentsBothStyles() throws {
        let text = """
        # hash comment
        ! bang comment
        global_defs { # trailing
            router_id node-a ! trailing bang
            ! router_id ignored
        }
        ha_group g#1 { static_state MASTER }   # '#' inside a word is part of it
        """
        let c = try ConfigLoader.parse(text: text, file: "t.conf")
        #expect(c.routerID == "node-a")
        #expect(c.haGroups.map(\.name) == ["g#1"])
    }

    @Test func quotedStrings() throws {
        let text = #"""
        global_defs { router_id "my \"router\" \\ one" }
        ha_group "g { 1 }" { static_state "BACKUP" }
        vrf v { ha_fp_conntrack {
            peer p { source 10.0.0.1 address 10.0.0.2 identity "a b" }
            listen_ha_group "g { 1 }"
            tls { ca "dir with space/ca.pem" certificate "#c.pem" key "!k.key" }
        } }
        """#
        let c = try ConfigLoader.parse(text: text, file: "t.conf", baseDirectory: "/base")
        #expect(c.routerID == #"my "router" \ one"#)
        #expect(c.haGroups.first?.name == "g { 1 }")
        let s = try #require(c.vrfs.first?.sync)
        #expect(s.peer.identity == "a b")
        #expect(s.listenHAGroup == "g { 1 }")
        #expect(s.tls.ca == "/base/dir with space/ca.pem")
        #expect(s.tls.certificate == "/base/#c.pem")
        #expect(s.tls.key == "/base/!k.key")
    }

    @Test func oneLineAndMultiLineFormsAreEquivalent() throws {
        let multi = """
        ha_group g {
            static_state MASTER
        }
        vrf v {
            ha_fp_conntrack {
                peer p {
                    source 10.0.0.1
                    address 10.0.0.2
                }
                listen_ha_group g
                tls {
                    ca /a
                    certificate /b
                    key /c
                }
            }
            ha_delays {
                tcp {
                    synchronization 1
                    undefined_grace_period 10
                }
            }
        }
        """
        let one = "ha_group g { static_state MASTER } vrf v { ha_fp_conntrack { peer p { source 10.0.0.1 address 10.0.0.2 } listen_ha_group g tls { ca /a certificate /b key /c } } ha_delays { tcp { synchronization 1  undefined_grace_period 10 } } }"
        let a = try ConfigLoader.parse(text: multi, file: "t.conf")
        let b = try ConfigLoader.parse(text: one, file: "t.conf")
        #expect(a.vrfs.first?.sync?.peer == b.vrfs.first?.sync?.peer)
        #expect(a.vrfs.first?.delays == b.vrfs.first?.delays)
        #expect(b.vrfs.first?.delays.tcp == ProtocolDelays(synchronization: 1, undefinedGracePeriod: 10))
        #expect(a.vrfs.first?.sync?.tls.ca == b.vrfs.first?.sync?.tls.ca)
    }

    @Test func argumentEqualToKeywordIsAnArgument() throws {
        // Arity decides: the word after 'listen_ha_group' is its argument even if it is a keyword.
        let c = try ConfigLoader.parse(text: syncWith("").replacingOccurrences(of: "ha_group g ", with: "ha_group tls ")
            .replacingOccurrences(of: "listen_ha_group g", with: "listen_ha_group tls"), file: "t.conf")
        #expect(c.vrfs.first?.sync?.listenHAGroup == "tls")
    }

    @Test func syncSettingsCanonicalAndSorted() throws {
        let c = try ConfigLoader.parse(text: golden, file: "k.conf")
        let s = c.vrfs[0].syncSettings().map(\.description)
        #expect(s == [
            "conntrack_timeouts.tcp_undefined=30",
            "ha_delays.icmp.synchronization=2",
            "ha_delays.icmp.undefined_grace_period=unset",
            "ha_delays.tcp.synchronization=5",
            "ha_delays.tcp.undefined_grace_period=20",
            "ha_delays.udp.synchronization=1",
            "ha_delays.udp.undefined_grace_period=10",
            "ha_fp_conntrack.failback_hold_max=120",
        ])
        #expect(c.vrfs[1].syncSettings().first == SyncSetting(key: "conntrack_timeouts.tcp_undefined", value: "10"))
        #expect(c.vrfs[0].syncSettings() != c.vrfs[1].syncSettings())
    }

    @Test func rulesetCheckInterval() throws {
        let c = try ConfigLoader.parse(text: golden, file: "k.conf")
        #expect(c.vrfs[0].sync?.rulesetCheckInterval == SyncConfig.defaultRulesetCheckInterval)
        for (text, value) in [("ruleset_check_interval 0", 0.0), ("ruleset_check_interval 1", 1.0), ("ruleset_check_interval 0.5", 0.5)] {
            let v = try ConfigLoader.parse(text: syncWith(text), file: "t.conf")
            #expect(v.vrfs.first?.sync?.rulesetCheckInterval == value, "\(text)")
        }
        // Not a sync-relevant setting: the nodes may check at different intervals.
        let a = try ConfigLoader.parse(text: syncWith("ruleset_check_interval 1"), file: "t.conf")
        let b = try ConfigLoader.parse(text: syncWith("ruleset_check_interval 60"), file: "t.conf")
        #expect(a.vrfs[0].syncSettings() == b.vrfs[0].syncSettings())
        // failback_hold_max is one.
        let h = try ConfigLoader.parse(text: syncWith("failback_hold_max 5"), file: "t.conf")
        #expect(h.vrfs[0].syncSettings().contains(SyncSetting(key: "ha_fp_conntrack.failback_hold_max", value: "5")))
        #expect(h.vrfs[0].syncSettings() != a.vrfs[0].syncSettings())
    }

    @Test func errorDescriptionFormat() {
        let e = ConfigError(file: "a.conf", line: 3, column: 7, message: "boom")
        #expect(e.description == "a.conf:3:7: error: boom")
        let all = ConfigErrors([e, ConfigError(file: "b", line: 1, column: 1, message: "x")])
        #expect(all.description == "a.conf:3:7: error: boom\nb:1:1: error: x")
    }
}
