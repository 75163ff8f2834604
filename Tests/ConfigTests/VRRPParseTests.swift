import Foundation
import Testing
import Config

/// A keepalived.conf as found on a Debian firewall pair: two instances in a sync group with
/// notify scripts, a track script, unicast peers, a VRRPv3 instance at 0.1 s and an IPv6 one.
let keepalivedConf = #"""
! Configuration File for keepalived

global_defs {
   router_id fw1
   script_user root
   enable_script_security
   vrrp_garp_master_delay 1
   vrrp_garp_master_refresh 60
   vrrp_garp_interval 0.001
   vrrp_gna_interval 0.000001
   vrrp_check_unicast_src
}

vrrp_script chk_haproxy {
    script "/usr/bin/killall -0 haproxy"
    interval 2
    timeout 3
    weight -20
    rise 2
    fall 3
}

vrrp_script chk_routes {
    script /usr/local/bin/check-routes --table main
    user nobody nogroup
    init_fail
}

vrrp_sync_group VG_FW {
    group {
        VI_OUTSIDE
        VI_INSIDE
    }
    notify_master "/etc/keepalived/notify.sh master"
    notify_backup "/etc/keepalived/notify.sh backup"
    notify_fault "/etc/keepalived/notify.sh fault"
}

vrrp_instance VI_OUTSIDE {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass s3cr3t
    }
    unicast_src_ip 198.51.100.2
    unicast_peer {
        198.51.100.3
    }
    virtual_ipaddress {
        198.51.100.1/24 dev eth0 label eth0:vip
        198.51.100.10/24
    }
    virtual_ipaddress_excluded {
        2001:db8::10/64 dev eth0
    }
    track_interface {
        eth0
        eth2
    }
    track_script {
        chk_routes
    }
    garp_master_delay 2
}

vrrp_instance VI_INSIDE {
    state BACKUP
    interface eth1
    virtual_router_id 52
    priority 150
    version 3
    advert_int 0.1
    nopreempt
    no_accept
    virtual_ipaddress {
        10.0.0.1/24
    }
    use_vmac vrrp.52
    vmac_xmit_base
    v3_checksum_as_v2
    notify "/etc/keepalived/notify-any.sh 'inside net'" keepalived_script
    smtp_alert
}

vrrp_instance VI_V6 {
    interface eth1
    virtual_router_id 60
    advert_int 0.5
    preempt_delay 10.5
    virtual_ipaddress {
        fe80::1/64
        2001:db8:1::1/64
    }
    track_script {
        chk_haproxy weight -30
    }
    notify_stop /etc/keepalived/stop.sh
}
"""#

func loc(_ line: Int, _ column: Int, file: String = "keepalived.conf") -> Config.SourceLocation {
    Config.SourceLocation(file: file, line: line, column: column)
}

@Suite struct VRRPParseTests {
    @Test func realisticKeepalivedConfLoadsWithoutVRF() throws {
        let c = try ConfigLoader.parse(text: keepalivedConf, file: "keepalived.conf", baseDirectory: "/etc/keepalived")
        #expect(c.routerID == "fw1")
        #expect(c.vrfs.isEmpty && c.haGroups.isEmpty)

        #expect(c.vrrpGlobals == VRRPGlobals(
            version: .v2,
            garp: GARPSpec(masterDelay: 1, masterRepeat: 5, masterRefresh: 60, masterRefreshRepeat: 1),
            garpInterval: 0.001, gnaInterval: 0.000001, checkUnicastSource: true, v3ChecksumAsV2: false,
            scriptUser: ScriptUserSpec(user: "root"), enableScriptSecurity: true))

        #expect(c.vrrpScripts == [
            VRRPScriptSpec(name: "chk_haproxy",
                           command: ScriptCommandSpec(text: "/usr/bin/killall -0 haproxy",
                                                      arguments: ["/usr/bin/killall", "-0", "haproxy"], location: loc(15, 5)),
                           interval: 2, timeout: 3, weight: -20, rise: 2, fall: 3, location: loc(14, 1)),
            VRRPScriptSpec(name: "chk_routes",
                           command: ScriptCommandSpec(text: "/usr/local/bin/check-routes --table main",
                                                      arguments: ["/usr/local/bin/check-routes", "--table", "main"],
                                                      runAs: ScriptUserSpec(user: "nobody", group: "nogroup"), location: loc(24, 5)),
                           initFail: true, location: loc(23, 1)),
        ])
        #expect(c.vrrpScripts[1].interval == 1 && c.vrrpScripts[1].timeout == 1)

        #expect(c.vrrpSyncGroups == [
            VRRPSyncGroupSpec(name: "VG_FW", members: ["VI_OUTSIDE", "VI_INSIDE"], notify: NotifySpec(
                master: ScriptCommandSpec(text: "/etc/keepalived/notify.sh master",
                                          arguments: ["/etc/keepalived/notify.sh", "master"], location: loc(34, 5)),
                backup: ScriptCommandSpec(text: "/etc/keepalived/notify.sh backup",
                                          arguments: ["/etc/keepalived/notify.sh", "backup"], location: loc(35, 5)),
                fault: ScriptCommandSpec(text: "/etc/keepalived/notify.sh fault",
                                         arguments: ["/etc/keepalived/notify.sh", "fault"], location: loc(36, 5))),
                location: loc(29, 1)),
        ])

        #expect(c.vrrpInstances.map(\.name) == ["VI_OUTSIDE", "VI_INSIDE", "VI_V6"])
        let outside = try #require(c.vrrpInstance(named: "VI_OUTSIDE"))
        #expect(outside == VRRPInstanceSpec(
            name: "VI_OUTSIDE", initialState: .master, interface: "eth0", virtualRouterID: 51, priority: 150,
            advertIntervalCentiseconds: 100, version: .v2, family: .ipv4, preempt: true, preemptDelay: 0, acceptMode: true,
            virtualAddresses: [
                VirtualAddressSpec(address: "198.51.100.1", family: .ipv4, prefixLength: 24, dev: "eth0", label: "eth0:vip",
                                   location: loc(54, 9)),
                VirtualAddressSpec(address: "198.51.100.10", family: .ipv4, prefixLength: 24, location: loc(55, 9)),
            ],
            excludedAddresses: [
                VirtualAddressSpec(address: "2001:db8::10", family: .ipv6, prefixLength: 64, dev: "eth0", excluded: true,
                                   location: loc(58, 9)),
            ],
            sourceAddress: "198.51.100.2", unicastPeers: [UnicastPeerSpec(address: "198.51.100.3", location: loc(51, 9))],
            checkUnicastSource: true, authentication: .password("s3cr3t"),
            trackInterfaces: [TrackInterfaceSpec(interface: "eth0", location: loc(61, 9)),
                              TrackInterfaceSpec(interface: "eth2", location: loc(62, 9))],
            trackScripts: [TrackScriptSpec(script: "chk_routes", location: loc(65, 9))],
            vmac: nil, garp: GARPSpec(masterDelay: 2, masterRepeat: 5, masterRefresh: 60, masterRefreshRepeat: 1),
            notify: NotifySpec(), v3ChecksumAsV2: false, syncGroup: "VG_FW", location: loc(39, 1)))
        #expect(!outside.isAddressOwner)

        let inside = try #require(c.vrrpInstance(named: "VI_INSIDE"))
        #expect(inside.initialState == .backup)
        #expect(inside.version == .v3)
        #expect(inside.advertIntervalCentiseconds == 10)
        #expect(inside.advertInterval == 0.1)
        #expect(!inside.preempt)
        #expect(!inside.acceptMode)
        #expect(inside.vmac == VMACSpec(name: "vrrp.52", xmitBase: true))
        #expect(inside.v3ChecksumAsV2)
        #expect(inside.checkUnicastSource) // from vrrp_check_unicast_src
        #expect(inside.garp == GARPSpec(masterDelay: 1, masterRepeat: 5, masterRefresh: 60, masterRefreshRepeat: 1))
        #expect(inside.notify == NotifySpec(generic: ScriptCommandSpec(
            text: "/etc/keepalived/notify-any.sh 'inside net'", arguments: ["/etc/keepalived/notify-any.sh", "inside net"],
            runAs: ScriptUserSpec(user: "keepalived_script"), location: loc(85, 5))))
        #expect(inside.syncGroup == "VG_FW")

        let v6 = try #require(c.vrrpInstance(named: "VI_V6"))
        #expect(v6.family == .ipv6)
        #expect(v6.version == .v3) // IPv6 instances use version 3 whatever vrrp_version says
        #expect(v6.priority == 100 && v6.initialState == .backup)
        #expect(v6.advertIntervalCentiseconds == 50)
        #expect(v6.preemptDelay == 10.5)
        #expect(v6.virtualAddresses.map(\.address) == ["fe80::1", "2001:db8:1::1"])
        #expect(v6.virtualAddresses.map(\.prefixLength) == [64, 64])
        #expect(v6.trackScripts == [TrackScriptSpec(script: "chk_haproxy", weight: -30, reverse: false, location: loc(99, 9))])
        #expect(v6.notify.stop?.arguments == ["/etc/keepalived/stop.sh"])
        #expect(v6.syncGroup == nil)
        #expect(v6.authentication == .none && v6.unicastPeers.isEmpty && v6.sourceAddress == nil)
    }

    @Test func migrationAddsVRFThatListensToTheSyncGroupOrAnInstance() throws {
        let sync = """

        vrf blue {
            ha_fp_conntrack {
                peer fw2 { source 10.150.0.1 address 10.150.0.2 }
                listen_ha_group VG_FW
                tls { ca ca.pem certificate fw1.pem key fw1.key }
            }
        }
        vrf red { ha_fp_conntrack { peer fw2 { source 10.151.0.1 address 10.151.0.2 } listen_ha_group VI_V6  tls { ca ca.pem certificate fw1.pem key fw1.key } } }
        ha_group lab { static_state BACKUP }
        """
        let c = try ConfigLoader.parse(text: keepalivedConf + sync, file: "keepalived.conf", baseDirectory: "/etc/keepstate")
        #expect(c.vrfs.map { $0.sync?.listenHAGroup } == ["VG_FW", "VI_V6"])
        #expect(c.haGroupKind(named: "VG_FW") == .vrrpSyncGroup)
        #expect(c.haGroupKind(named: "VI_V6") == .vrrpInstance)
        #expect(c.haGroupKind(named: "lab") == .staticGroup)
        #expect(c.haGroupKind(named: "chk_haproxy") == nil) // scripts are not HA groups
        #expect(c.vrfs[0].sync?.tls.ca == "/etc/keepstate/ca.pem")
    }

    @Test func instanceDefaults() throws {
        let c = try ConfigLoader.parse(text: """
        vrrp_instance VI_1 {
            interface eth0
            virtual_router_id 1
            virtual_ipaddress {
                192.0.2.1
            }
        }
        """, file: "t.conf")
        #expect(c.vrrpGlobals == VRRPGlobals())
        #expect(c.vrrpGlobals.version == .v2 && c.vrrpGlobals.garp == GARPSpec(masterDelay: 5, masterRepeat: 5, masterRefresh: 0, masterRefreshRepeat: 1))
        #expect(c.vrrpGlobals.garpInterval == 0 && c.vrrpGlobals.gnaInterval == 0 && c.vrrpGlobals.scriptUser == nil)
        let i = try #require(c.vrrpInstances.first)
        #expect(i == VRRPInstanceSpec(
            name: "VI_1", interface: "eth0", virtualRouterID: 1,
            virtualAddresses: [VirtualAddressSpec(address: "192.0.2.1", family: .ipv4, location: loc(5, 9, file: "t.conf"))],
            location: loc(1, 1, file: "t.conf")))
        #expect(i.initialState == .backup && i.priority == 100 && i.advertIntervalCentiseconds == 100)
        #expect(i.version == .v2 && i.family == .ipv4 && i.preempt && i.preemptDelay == 0 && i.acceptMode)
        #expect(i.virtualAddresses[0].prefixLength == 32 && i.virtualAddresses[0].dev == nil)
        #expect(i.garp == GARPSpec() && !i.v3ChecksumAsV2 && !i.checkUnicastSource && i.authentication == .none)
        #expect(i.vmac == nil && i.notify.isEmpty && i.trackScripts.isEmpty && i.syncGroup == nil)
    }

    @Test func scriptDefaultsTimeoutIsTheInterval() throws {
        let c = try ConfigLoader.parse(text: """
        vrrp_script a { script /bin/true }
        vrrp_script b { script /bin/true  interval 3.5 }
        vrrp_script c { script "/bin/check 'x y'"  weight 10 reverse }
        """, file: "t.conf")
        #expect(c.vrrpScripts.map(\.interval) == [1, 3.5, 1])
        #expect(c.vrrpScripts.map(\.timeout) == [1, 3.5, 1])
        #expect(c.vrrpScripts.map(\.weight) == [0, 0, 10])
        #expect(c.vrrpScripts.map(\.weightReverse) == [false, false, true])
        #expect(c.vrrpScripts.map(\.rise) == [1, 1, 1] && c.vrrpScripts.map(\.fall) == [1, 1, 1])
        #expect(c.vrrpScripts[2].command.arguments == ["/bin/check", "x y"])
        #expect(c.vrrpScripts.allSatisfy { !$0.initFail && $0.command.runAs == nil })
    }

    @Test func stateAndPriorityDeriveEachOtherAsKeepalived() throws {
        func instance(_ extra: String) throws -> VRRPInstanceSpec {
            let c = try ConfigLoader.parse(text: "vrrp_instance I { interface eth0  virtual_router_id 9  \(extra)\n virtual_ipaddress { 192.0.2.1 } }", file: "t.conf")
            return try #require(c.vrrpInstances.first)
        }
        // keepalived's vrrp_complete_instance: no priority and state MASTER gives 255 (the owner);
        // no state and priority 255 gives MASTER.
        let a = try instance("state MASTER")
        #expect(a.priority == 255 && a.isAddressOwner && a.initialState == .master)
        let b = try instance("priority 255")
        #expect(b.initialState == .master)
        let c = try instance("state MASTER  priority 200")
        #expect(c.priority == 200 && c.initialState == .master)
        let d = try instance("priority 50")
        #expect(d.initialState == .backup)
    }

    @Test func versionAndChecksumFromGlobals() throws {
        let c = try ConfigLoader.parse(text: """
        global_defs { vrrp_version 3  v3_checksum_as_v2 }
        vrrp_instance A { interface eth0  virtual_router_id 1  advert_int 0.25
            virtual_ipaddress { 192.0.2.1 } }
        vrrp_instance B { interface eth0  virtual_router_id 2  version 2  v3_checksum_as_v2 off
            virtual_ipaddress { 192.0.2.2 } }
        """, file: "t.conf")
        #expect(c.vrrpGlobals.version == .v3 && c.vrrpGlobals.v3ChecksumAsV2)
        #expect(c.vrrpInstances.map(\.version) == [.v3, .v2])
        #expect(c.vrrpInstances.map(\.advertIntervalCentiseconds) == [25, 100])
        #expect(c.vrrpInstances.map(\.v3ChecksumAsV2) == [true, false])
    }

    @Test func oneLineListsAndSeveralEntriesPerLine() throws {
        let c = try ConfigLoader.parse(text: """
        vrrp_script chk { script /bin/true }
        vrrp_instance I { interface eth0 virtual_router_id 7 priority 90 virtual_ipaddress { 192.0.2.1/24 dev eth1 192.0.2.2 } track_interface { eth1 eth2 weight 5 reverse eth3 } track_script { chk weight -5 } }
        """, file: "t.conf")
        let i = try #require(c.vrrpInstances.first)
        #expect(i.virtualAddresses.map(\.address) == ["192.0.2.1", "192.0.2.2"])
        #expect(i.virtualAddresses.map(\.dev) == ["eth1", nil])
        #expect(i.trackInterfaces.map(\.interface) == ["eth1", "eth2", "eth3"])
        #expect(i.trackInterfaces.map(\.weight) == [0, 5, 0])
        #expect(i.trackInterfaces.map(\.reverse) == [false, true, false])
        #expect(i.trackScripts.map(\.weight) == [-5])
    }

    @Test func acceptedAndIgnoredKeywords() throws {
        // smtp_alert needs an smtp_server to do anything in keepalived, and smtp_server is
        // rejected; debug is "not implemented yet" in keepalived itself.
        let c = try ConfigLoader.parse(text: """
        vrrp_instance I { interface eth0  virtual_router_id 1  smtp_alert  debug 2  preempt
            virtual_ipaddress { 192.0.2.1 } }
        vrrp_sync_group G { group { I }  smtp_alert off }
        """, file: "t.conf")
        #expect(c.vrrpInstances.first?.preempt == true)
        #expect(c.vrrpSyncGroups.first?.members == ["I"])
    }

    @Test func mcastSrcIPIsASynonymOfUnicastSrcIP() throws {
        let c = try ConfigLoader.parse(text: """
        vrrp_instance I { interface eth0  virtual_router_id 1  mcast_src_ip 192.0.2.10
            virtual_ipaddress { 192.0.2.1 } }
        """, file: "t.conf")
        #expect(c.vrrpInstances.first?.sourceAddress == "192.0.2.10")
    }

    @Test func sameVRIDOnOtherInterfaceFamilyOrDisjointUnicastPeersIsFine() throws {
        let c = try ConfigLoader.parse(text: """
        vrrp_instance A { interface eth0  virtual_router_id 1  virtual_ipaddress { 192.0.2.1 } }
        vrrp_instance B { interface eth1  virtual_router_id 1  virtual_ipaddress { 192.0.2.2 } }
        vrrp_instance C { interface eth0  virtual_router_id 1  virtual_ipaddress { fe80::1 } }
        vrrp_instance D { interface eth2  virtual_router_id 1  unicast_peer { 192.0.2.20 }  virtual_ipaddress { 192.0.2.3 } }
        vrrp_instance E { interface eth2  virtual_router_id 1  unicast_peer { 192.0.2.21 }  virtual_ipaddress { 192.0.2.4 } }
        """, file: "t.conf")
        #expect(c.vrrpInstances.count == 5)
    }

    @Test func vrrpInIncludedFile() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try dir.write("keepstate.conf", "include keepalived.conf\nvrf v { ha_fp_conntrack { peer p { source 10.0.0.1 address 10.0.0.2 } listen_ha_group VG_FW  tls { ca a certificate b key c } } }\n")
        try dir.write("keepalived.conf", keepalivedConf)
        let c = try ConfigLoader.load(path: dir.path + "/keepstate.conf")
        #expect(c.vrrpInstances.first?.location == SourceLocation(file: dir.path + "/keepalived.conf", line: 39, column: 1))
        #expect(c.haGroupKind(named: "VG_FW") == .vrrpSyncGroup)
    }
}
