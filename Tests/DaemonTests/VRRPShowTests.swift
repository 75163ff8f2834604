import Config
@testable import Daemon
import Foundation
import Testing
import VRRP
import VRRPNet

/// `show vrrp`'s report of an instance from the supervisor's and the runner's state (pure).
@Suite("show vrrp report")
struct VRRPShowTests {
    func config() throws -> KeepstateConfig {
        try ConfigLoader.parse(text: """
            vrrp_script chk_nat { script "/bin/true" weight 10 }
            vrrp_script chk_up { script "/bin/true" }
            vrrp_instance VI_1 {
                interface eth0
                virtual_router_id 51
                priority 150
                advert_int 0.1
                version 3
                preempt_delay 2
                track_interface {
                    eth1
                    eth2 weight -20
                }
                track_script {
                    chk_nat
                    chk_up
                }
                virtual_ipaddress { 198.51.100.1/24 }
                virtual_ipaddress_excluded { 203.0.113.1 dev eth3 label eth3:nat }
            }
            vrrp_instance VI_2 {
                interface eth0
                virtual_router_id 52
                virtual_ipaddress { 198.51.100.9 }
            }
            vrrp_instance VI_3 {
                interface eth0
                virtual_router_id 53
                virtual_ipaddress { 198.51.100.10 }
            }
            vrrp_sync_group G {
                group {
                    VI_2
                    VI_3
                }
            }
            """)
    }

    let t0 = ContinuousClock.now
    let primary = VRRPAddress("198.51.100.2")!

    func inputs(_ spec: VRRPInstanceSpec, state: VRRPState, lastAdvert: VRRPAdvertSeen? = nil, up: [String: Bool],
                scripts: [String: Bool], hold: FailbackHoldState = FailbackHoldState(), lastHold: FailbackHold = .none,
                effective: UInt8? = nil) -> VRRPShow.Inputs {
        var stats = VRRPRunnerStatistics()
        stats.transitions = 2
        stats.advertsReceived = 7
        stats.drops = [.ttlNot255: 1]
        stats.lastAdvert = lastAdvert
        stats.lastTransition = VRRPStateChange(from: .backup, to: state, reason: .masterDownTimerExpired,
                                               at: VRRPInstant(nanoseconds: 1_000_000_000), wallClock: .seconds(1))
        let machine = VRRPInstanceState(config: VRRPInstanceConfig(
            vrid: spec.virtualRouterID, priority: spec.priority, advertIntervalCentiseconds: spec.advertIntervalCentiseconds,
            primaryAddress: primary))
        let snapshot = VRRPRunnerSnapshot(instance: machine, statistics: stats, performedState: state,
                                          now: VRRPInstant(nanoseconds: 13_500_000_000))
        return VRRPShow.Inputs(
            spec: spec, snapshot: snapshot, interfaceUp: up, scriptOK: scripts,
            effectivePriority: effective ?? spec.priority, fault: nil, hold: hold, lastHold: lastHold, now: t0 + .seconds(5),
            held: { $0.excluded ? nil : state == .master })
    }

    @Test("a master: itself as master, priorities after tracking, each tracked object's delta, addresses held")
    func master() throws {
        let spec = try #require(try config().vrrpInstance(named: "VI_1"))
        let r = VRRPShow.instance(inputs(
            spec, state: .master, up: ["eth0": true, "eth1": true, "eth2": false], scripts: ["chk_nat": true, "chk_up": true]))
        #expect(r.state == "master" && r.masterAddress == "198.51.100.2" && r.primaryAddress == "198.51.100.2")
        #expect(r.since == 12.5 && r.transitions == 2 && r.lastReason == "no advert from a master within Master_Down_Interval")
        // 150 - 20 (eth2 down) + 10 (chk_nat fine).
        #expect(r.configuredPriority == 150 && r.trackedPriority == 140)
        #expect(r.trackInterfaces == [
            VRRPTrackReport(name: "eth1", status: "up", weight: 0, reverse: false, delta: 0),
            VRRPTrackReport(name: "eth2", status: "down", weight: -20, reverse: false, delta: -20),
        ])
        #expect(r.trackScripts.map(\.delta) == [10, 0] && r.trackScripts.map(\.status) == ["ok", "ok"])
        #expect(r.virtualAddresses == [
            VRRPVirtualAddressReport(address: "198.51.100.1", prefixLength: 24, dev: "eth0", label: nil, excluded: false, held: true),
            VRRPVirtualAddressReport(address: "203.0.113.1", prefixLength: 32, dev: "eth3", label: "eth3:nat", excluded: true, held: nil),
        ])
        #expect(r.advertInterval == 0.1 && r.preempt && r.preemptDelay == 2 && r.syncGroup == nil)
        #expect(r.statistics.drops == ["ttlNot255": 1] && r.statistics.advertsReceived == 7)
        #expect(r.failbackHold.held == false && r.failbackHold.reason == nil)
    }

    @Test("a backup names the master it hears; a priority-0 advert leaves no master")
    func backup() throws {
        let spec = try #require(try config().vrrpInstance(named: "VI_2"))
        let heard = VRRPAdvertSeen(source: VRRPAddress("198.51.100.3")!, priority: 200, advertIntervalCentiseconds: 100,
                                   at: VRRPInstant(nanoseconds: 13_000_000_000))
        var r = VRRPShow.instance(inputs(spec, state: .backup, lastAdvert: heard, up: ["eth0": true], scripts: [:]))
        #expect(r.masterAddress == "198.51.100.3" && r.syncGroup == "G")
        #expect(r.lastAdvert == VRRPAdvertReport(source: "198.51.100.3", priority: 200, advertInterval: 1, secondsAgo: 0.5))
        #expect(r.virtualAddresses.map(\.held) == [false])
        var left = heard
        left.priority = 0
        r = VRRPShow.instance(inputs(spec, state: .backup, lastAdvert: left, up: ["eth0": true], scripts: [:]))
        #expect(r.masterAddress == nil && r.lastAdvert?.priority == 0)
        r = VRRPShow.instance(inputs(spec, state: .backup, up: ["eth0": true], scripts: [:]))
        #expect(r.masterAddress == nil && r.lastAdvert == nil)
    }

    @Test("the failback hold: held with the VRFs behind and the bound; expired; settling; the owner")
    func hold() throws {
        let spec = try #require(try config().vrrpInstance(named: "VI_1"))
        let behind = FailbackHold(behind: true, bound: 120, vrfsBehind: ["main"])
        var h = FailbackHoldState()
        #expect(h.update(now: t0, hold: behind, settle: .seconds(1)) == .held)
        var r = VRRPShow.instance(inputs(spec, state: .backup, up: ["eth0": true], scripts: [:], hold: h, lastHold: behind, effective: 1))
        #expect(r.effectivePriority == 1)
        #expect(r.failbackHold == VRRPFailbackHoldReport(
            held: true, heldFor: 5, bound: 120, vrfsBehind: ["main"], settling: false, expired: false,
            reason: "VRF main does not hold the master's whole table yet (resync incomplete); held for at most failback_hold_max 120 s"))

        #expect(h.update(now: t0 + .seconds(121), hold: behind, settle: .seconds(1)) == .expired)
        r = VRRPShow.instance(inputs(spec, state: .backup, up: ["eth0": true], scripts: [:], hold: h, lastHold: behind))
        #expect(!r.failbackHold.held && r.failbackHold.expired)
        #expect(r.failbackHold.reason == "failback_hold_max (120 s) ran out before VRF main completed the resync; not held again until it does")

        var s = FailbackHoldState()
        let sending = FailbackHold(behind: true, bound: 120, masterPeerSending: true, vrfsBehind: ["lab", "main"])
        _ = s.update(now: t0, hold: sending, settle: .seconds(1))
        s.stateChanged(toMaster: true, now: t0, hold: sending)
        r = VRRPShow.instance(inputs(spec, state: .master, up: ["eth0": true], scripts: [:], hold: s, lastHold: sending, effective: 1))
        #expect(r.failbackHold.held && r.failbackHold.settling && r.failbackHold.vrfsBehind == ["lab", "main"])
        #expect(r.failbackHold.reason?.hasPrefix("became master while a master peer was sending its table") == true)

        // Master and not held although a VRF is behind: said so.
        r = VRRPShow.instance(inputs(spec, state: .master, up: ["eth0": true], scripts: [:], lastHold: behind))
        #expect(r.failbackHold.reason == "this node is master: not held down")
    }

    @Test("a sync group's state: fault if one member is, master if all are, else backup")
    func syncGroup() throws {
        let group = try #require(try config().vrrpSyncGroup(named: "G"))
        #expect(VRRPShow.syncGroup(group, states: ["VI_3": .master, "VI_2": .master]).state == "master")
        #expect(VRRPShow.syncGroup(group, states: ["VI_3": .master, "VI_2": .backup]).state == "backup")
        #expect(VRRPShow.syncGroup(group, states: ["VI_3": .fault, "VI_2": .master]).state == "fault")
        #expect(VRRPShow.syncGroup(group, states: [:]).state == "initialize")
        #expect(VRRPShow.syncGroup(group, states: ["VI_3": .master, "VI_2": .backup]).members == [
            VRRPSyncGroupMemberReport(name: "VI_2", state: "backup"), VRRPSyncGroupMemberReport(name: "VI_3", state: "master"),
        ])
    }
}
