@testable import Daemon
import Foundation
@testable import KeepstateCLI
@testable import SyncEngine
import Testing

/// The output of every `show` for fixed replies, compared with the files under Golden/: NAME.txt
/// is what the command prints, NAME.json what it prints with --json (the documented schema of
/// the control socket's replies; docs/operations.md).
///
/// After an intended change of the output, regenerate the files and review the diff:
///
///     KEEPSTATE_UPDATE_GOLDEN=1 swift test --skip-build --filter GoldenTests
///
/// A normal run compares and fails on any difference (or a missing file).
@Suite("show output golden files")
struct GoldenTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden")
    static var updating: Bool { ProcessInfo.processInfo.environment["KEEPSTATE_UPDATE_GOLDEN"] == "1" }

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var command: ControlCommand
        var reply: ControlReply
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "show-state", command: .showState, reply: Fixtures.state()),
        Case(name: "show-peer", command: .showPeer, reply: Fixtures.peers()),
        Case(name: "show-peer-none", command: .showPeer, reply: { var r = ControlReply(ok: true); r.peers = []; return r }()),
        Case(name: "show-conntracks", command: .showConntracks, reply: Fixtures.conntracks(unsynced: false)),
        Case(name: "show-conntracks-unsynced", command: .showConntracks, reply: Fixtures.conntracks(unsynced: true)),
        Case(name: "show-vrrp", command: .showVRRP, reply: Fixtures.vrrp()),
        Case(name: "show-vrrp-none", command: .showVRRP, reply: { var r = ControlReply(ok: true); r.vrrp = VRRPReport(); return r }()),
        Case(name: "refused", command: .showVRRP, reply: .failure("no vrrp_instance VI_9 (configured: VI_1, VI_2)")),
    ]

    /// Compares `text` with the golden file, or writes it with KEEPSTATE_UPDATE_GOLDEN=1.
    func check(_ text: String, file: String) throws {
        let url = Self.directory.appendingPathComponent(file)
        if Self.updating {
            try FileManager.default.createDirectory(at: Self.directory, withIntermediateDirectories: true)
            try text.write(to: url, atomically: true, encoding: .utf8)
            return
        }
        guard let golden = try? String(contentsOf: url, encoding: .utf8) else {
            Issue.record("missing golden file \(url.path): create it with KEEPSTATE_UPDATE_GOLDEN=1")
            return
        }
        if let difference = Self.difference(golden: golden, output: text) {
            Issue.record("""
                \(file) \(difference)
                (KEEPSTATE_UPDATE_GOLDEN=1 regenerates the files after an intended change)
                """)
        }
    }

    /// nil when equal; otherwise where the output first differs from the golden text.
    static func difference(golden: String, output: String) -> String? {
        guard golden != output else { return nil }
        let a = golden.split(separator: "\n", omittingEmptySubsequences: false)
        let b = output.split(separator: "\n", omittingEmptySubsequences: false)
        let first = zip(a, b).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(a.count, b.count)
        return """
            differs from the output at line \(first + 1):
            golden: \(first < a.count ? String(a[first]) : "(end)")
            output: \(first < b.count ? String(b[first]) : "(end)")
            """
    }

    @Test("a changed output is caught: one field of a fixture changed, or a line more, differs from its golden file")
    func changeIsCaught() throws {
        guard !Self.updating else { return }
        for c in Self.cases where c.reply.ok {
            let golden = try String(contentsOf: Self.directory.appendingPathComponent("\(c.name).txt"), encoding: .utf8)
            #expect(Self.difference(golden: golden, output: ShowRender.human(c.reply, for: c.command)) == nil)
            #expect(Self.difference(golden: golden, output: ShowRender.human(c.reply, for: c.command) + "\n") != nil)
        }
        var changed = Fixtures.vrrp()
        changed.vrrp!.instances[1].effectivePriority = 130
        let golden = try String(contentsOf: Self.directory.appendingPathComponent("show-vrrp.txt"), encoding: .utf8)
        let found = Self.difference(golden: golden, output: ShowRender.human(changed, for: .showVRRP))
        #expect(found?.contains("output:         priority 150 configured, 130 after tracking, 130 advertised") == true, "\(found ?? "nil")")
        let goldenJSON = try String(contentsOf: Self.directory.appendingPathComponent("show-vrrp.json"), encoding: .utf8)
        #expect(Self.difference(golden: goldenJSON, output: ShowRender.json(changed)) != nil)
    }

    @Test("human and JSON output equal the golden files", arguments: GoldenTests.cases)
    func golden(_ c: Case) throws {
        if c.reply.ok { try check(ShowRender.human(c.reply, for: c.command), file: "\(c.name).txt") }
        let json = ShowRender.json(c.reply)
        try check(json, file: "\(c.name).json")
        // The schema reads back: a client decoding the golden JSON gets the same reply.
        #expect(json.hasSuffix("}\n") && json.filter { $0 == "\n" }.count == 1, "one line of JSON")
        let decoded = try JSONDecoder().decode(ControlReply.self, from: Data(json.utf8))
        #expect(decoded == c.reply)
    }

    @Test("every show command has golden files")
    func everyShowIsCovered() {
        let covered = Set(Self.cases.filter(\.reply.ok).map(\.command))
        let shows = ControlCommand.allCases.filter { $0.rawValue.hasPrefix("show-") }
        for command in shows {
            #expect(covered.contains(command), "no golden case for \(command.rawValue)")
        }
        #expect(Self.cases.contains { $0.reply.conntracks?.contains { $0.unsynced != nil } == true }, "show conntracks --unsynced")
        // No file left over from a case that is gone.
        let files = (try? FileManager.default.contentsOfDirectory(atPath: Self.directory.path)) ?? []
        let expected = Set(Self.cases.flatMap { c in c.reply.ok ? ["\(c.name).txt", "\(c.name).json"] : ["\(c.name).json"] })
        #expect(Set(files.filter { $0 != "README.md" }) == expected, "\(files.sorted())")
    }

    @Test("the JSON keys are sorted at every level")
    func sortedKeys() {
        for c in Self.cases {
            #expect(Self.keysSorted(ShowRender.json(c.reply)), "\(c.name): keys out of order")
        }
        #expect(!Self.keysSorted(#"{"b":1,"a":{"c":2}}"#) && !Self.keysSorted(#"{"a":[{"z":1,"y":2}]}"#), "the scanner sees disorder")
        #expect(Self.keysSorted(#"{"a":"}{,\"","b":[1,{"c":{}}]}"#))
    }

    /// Whether every object's keys appear in ascending order (a scanner over the JSON text).
    static func keysSorted(_ json: String) -> Bool {
        var stack: [(object: Bool, keys: [String])] = []
        var expectingKey = false
        var chars = Array(json)[...]
        while let ch = chars.popFirst() {
            switch ch {
            case "{": stack.append((true, [])); expectingKey = true
            case "[": stack.append((false, [])); expectingKey = false
            case "}", "]":
                guard let top = stack.popLast(), top.keys == top.keys.sorted() else { return false }
                expectingKey = false
            case ",": expectingKey = stack.last?.object == true
            case "\"":
                var text = ""
                while let c = chars.popFirst(), c != "\"" {
                    text.append(c)
                    if c == "\\", let escaped = chars.popFirst() { text.append(escaped) }
                }
                if expectingKey { stack[stack.count - 1].keys.append(text); expectingKey = false }
            default: break
            }
        }
        return stack.isEmpty
    }
}

/// Fixed replies, one per `show`, with every optional field present somewhere.
enum Fixtures {
    static func state() -> ControlReply {
        var r = ControlReply(ok: true)
        r.state = StateReport(
            routerID: "ha1", configFile: "/etc/keepstate/keepstate.conf", uptime: 86_412.7,
            groups: [
                GroupReport(name: "VG_1", kind: "vrrp-sync-group", driven: "master", override: "auto", state: "master",
                            since: 3_600.2, transitions: 3, vrfs: ["main"]),
                GroupReport(name: "VI_1", kind: "vrrp-instance", driven: "master", override: "auto", state: "master",
                            since: 3_600.2, transitions: 3, vrfs: [], vrrpState: "master", vrrpPriority: 150),
                GroupReport(name: "VI_2", kind: "vrrp-instance", driven: "backup", override: "backup", state: "backup",
                            since: 12, transitions: 4, vrfs: [], vrrpState: "fault", vrrpPriority: 130,
                            vrrpFault: "tracked interface eth2 is down"),
                GroupReport(name: "ha-group1", kind: "static", driven: "master", override: "auto", state: "master",
                            since: 86_412.7, transitions: 0, vrfs: ["lab"]),
            ],
            vrfs: [
                {
                    var v = VRFReport(name: "main", netns: nil, group: "VG_1", role: "master", conntracks: 1_000_000, held: 0,
                                      holdQueue: 0, holdRefused: 0, lastTakeoverSeconds: 0.0412, lastRearm: 998_731,
                                      connectionsEstablished: 4, connections: 4, dataplaneError: nil)
                    v.synced = 999_812
                    v.drift = "both"
                    v.driftDetails = ["table ip nat chain postrouting differs", "ha_delays.udp.synchronization: here 0, peer 2"]
                    v.rulesetDigest = String(repeating: "3f2a", count: 16)
                    v.peerRulesetDigest = String(repeating: "77b1", count: 16)
                    return v
                }(),
                {
                    var v = VRFReport(name: "lab", netns: "lab", group: "ha-group1", role: "backup", conntracks: 12, held: 3_400,
                                      holdQueue: 17, holdRefused: 2, lastTakeoverSeconds: nil, lastRearm: nil,
                                      connectionsEstablished: 1, connections: 2, dataplaneError: nil)
                    v.drift = "unknown"
                    v.driftReason = "nothing heard from the peer yet"
                    v.driftDetails = []
                    v.rulesetDigest = "unknown (not read yet)"
                    return v
                }(),
                VRFReport(name: "guest", netns: "guest", group: nil, role: "down", conntracks: 0, held: 0, holdQueue: 0,
                          holdRefused: 0, lastTakeoverSeconds: nil, lastRearm: nil, connectionsEstablished: 0, connections: 0,
                          dataplaneError: "cannot open the conntrack table in /run/netns/guest: No such file or directory"),
            ])
        return r
    }

    static func peers() -> ControlReply {
        var c0 = ConnectionStatistics(index: 0)
        c0.transmit = 250_112
        c0.connectionStatus = .established
        c0.resyncs = 2
        c0.lastResyncDuration = 0.8123
        c0.lastResyncRecords = 250_000
        c0.connects = 2
        c0.queueDepth = 3
        c0.resyncWaiting = "table"
        var c1 = ConnectionStatistics(index: 1)
        c1.transmit = 249_870
        c1.transmitError = 12
        c1.buildError = 5
        c1.queueOverflows = 1
        c1.connectionStatus = .connecting
        c1.resyncs = 3
        c1.connects = 3
        c1.lastError = "connection reset by peer"
        var local = LocalNodeStatistics()
        local.receive = 31
        local.receiveError = 1
        local.refusedConnections = 2
        local.acceptedConnections = 6
        local.resyncsCompleted = 4
        local.staleRemoved = 9
        local.storeEntries = 0
        local.lastRefusal = "certificate of 10.150.0.9 names ha3, expected ha2"
        var backupLocal = LocalNodeStatistics()
        backupLocal.receive = 500_000
        backupLocal.acceptedConnections = 2
        backupLocal.resyncsCompleted = 2
        backupLocal.storeEntries = 499_982
        var r = ControlReply(ok: true)
        r.peers = [
            SyncStatistics(vrf: "main", role: "master", peerName: "ha2", source: "10.150.0.1", address: "10.150.0.2",
                           connections: [c0, c1], localNode: local),
            SyncStatistics(vrf: "lab", role: "backup", peerName: "ha2", source: "10.151.0.1", address: "10.151.0.2",
                           connections: [ConnectionStatistics(index: 0)], localNode: backupLocal),
        ]
        return r
    }

    static func conntracks(unsynced: Bool) -> ControlReply {
        var master = ConntrackCounts(
            vrf: "main", synced: ["tcp": ["ESTABLISHED": 812_004, "FIN_WAIT": 210, "TIME_WAIT": 3_011], "udp": ["-": 90_112],
                                  "icmp": ["-": 77]],
            held: 0, role: "master", pending: 1_204)
        var backup = ConntrackCounts(vrf: "lab", synced: ["tcp": ["ESTABLISHED": 9]], held: 3_400, role: "backup")
        if unsynced {
            master.unsynced = UnsyncedListing(
                role: "master", total: 906_618, synced: 905_414,
                counts: ["alg": 3, "delay-pending": 1_150, "awaiting-traffic": 40, "not-established": 11],
                entries: [
                    UnsyncedEntry(conntrack: "ipv4 tcp 431999 ESTABLISHED src=100.64.0.7 dst=192.0.2.1 sport=40112 dport=443 src=192.0.2.1 dst=198.51.100.1 sport=443 dport=40112",
                                  reason: "delay-pending", delayEndsIn: 0.4),
                    UnsyncedEntry(conntrack: "ipv4 udp 28 src=100.64.0.9 dst=203.0.113.53 sport=5353 dport=53 src=203.0.113.53 dst=198.51.100.1 sport=53 dport=5353",
                                  reason: "awaiting-traffic", awaitingFor: 12.25),
                    UnsyncedEntry(conntrack: "ipv4 tcp 120 SYN_SENT src=100.64.0.3 dst=192.0.2.8 sport=51000 dport=80 src=192.0.2.8 dst=198.51.100.1 sport=80 dport=51000",
                                  reason: "not-established"),
                ],
                truncated: true)
            backup.unsynced = UnsyncedListing(role: "backup", note: "this node is backup for VRF lab: it sends nothing")
        }
        var r = ControlReply(ok: true)
        r.conntracks = [master, backup]
        return r
    }

    static func vrrp() -> ControlReply {
        let stats = VRRPStatisticsReport(advertsSent: 36_001, advertSendErrors: 0, advertsReceived: 12, drops: ["vridMismatch": 40, "ttlNot255": 1],
                                         becameMaster: 2, announcementsSent: 10, addressErrors: 0)
        let master = VRRPInstanceReport(
            name: "VI_1", interface: "eth0", vrid: 51, version: 3, family: "ipv4", state: "master", since: 3_600.24,
            transitions: 3, lastReason: "no advert from a master within Master_Down_Interval", configuredPriority: 150,
            trackedPriority: 150, effectivePriority: 150, addressOwner: false, primaryAddress: "198.51.100.2",
            masterAddress: "198.51.100.2",
            lastAdvert: VRRPAdvertReport(source: "198.51.100.3", priority: 0, advertInterval: 0.1, secondsAgo: 3_600.3),
            advertInterval: 0.1, masterAdvertInterval: 0.1, preempt: true, preemptDelay: 0, unicastPeers: [],
            virtualAddresses: [
                VRRPVirtualAddressReport(address: "198.51.100.1", prefixLength: 24, dev: "eth0", label: nil, excluded: false, held: true),
                VRRPVirtualAddressReport(address: "203.0.113.1", prefixLength: 32, dev: "eth0", label: "eth0:nat", excluded: true, held: true),
            ],
            trackInterfaces: [VRRPTrackReport(name: "eth0", status: "up", weight: 0, reverse: false, delta: 0)],
            trackScripts: [VRRPTrackReport(name: "chk_nat", status: "ok", weight: 10, reverse: false, delta: 10)],
            fault: nil,
            failbackHold: VRRPFailbackHoldReport(held: false, heldFor: nil, bound: 120, vrfsBehind: [], settling: false, expired: false, reason: nil),
            syncGroup: "VG_1", statistics: stats)
        let held = VRRPInstanceReport(
            name: "VI_2", interface: "eth1", vrid: 52, version: 3, family: "ipv6", state: "backup", since: 8.04,
            transitions: 1, lastReason: "startup", configuredPriority: 150, trackedPriority: 130, effectivePriority: 1,
            addressOwner: false, primaryAddress: "fe80::2",
            masterAddress: "fe80::3",
            lastAdvert: VRRPAdvertReport(source: "fe80::3", priority: 100, advertInterval: 1, secondsAgo: 0.31),
            advertInterval: 0.5, masterAdvertInterval: 1, preempt: false, preemptDelay: 0, unicastPeers: ["fe80::3"],
            virtualAddresses: [
                VRRPVirtualAddressReport(address: "2001:db8::1", prefixLength: 64, dev: "eth1", label: nil, excluded: false, held: false),
                VRRPVirtualAddressReport(address: "2001:db8:1::1", prefixLength: 128, dev: "eth9", label: nil, excluded: true, held: nil),
            ],
            trackInterfaces: [
                VRRPTrackReport(name: "eth2", status: "down", weight: -20, reverse: false, delta: -20),
                VRRPTrackReport(name: "eth3", status: "down", weight: 5, reverse: true, delta: 5),
            ],
            trackScripts: [VRRPTrackReport(name: "chk_up", status: "ok", weight: 0, reverse: false, delta: 0)],
            fault: nil,
            failbackHold: VRRPFailbackHoldReport(
                held: true, heldFor: 7.96, bound: 120, vrfsBehind: ["main"], settling: false, expired: false,
                reason: "VRF main does not hold the master's whole table yet (resync incomplete); held for at most failback_hold_max 120 s"),
            syncGroup: "VG_1",
            statistics: VRRPStatisticsReport(advertsSent: 0, advertSendErrors: 0, advertsReceived: 16, drops: [:], becameMaster: 0,
                                             announcementsSent: 0, addressErrors: 0))
        let fresh = VRRPInstanceReport(
            name: "VI_3", interface: "eth4", vrid: 7, version: 2, family: "ipv4", state: "initialize", since: nil, transitions: 0,
            lastReason: nil, configuredPriority: 255, trackedPriority: 255, effectivePriority: 255, addressOwner: true,
            primaryAddress: "192.0.2.1", masterAddress: nil, lastAdvert: nil, advertInterval: 1, masterAdvertInterval: 1,
            preempt: true, preemptDelay: 2.5, unicastPeers: [],
            virtualAddresses: [VRRPVirtualAddressReport(address: "192.0.2.1", prefixLength: 32, dev: "eth4", label: nil, excluded: false, held: true)],
            trackInterfaces: [], trackScripts: [], fault: nil,
            failbackHold: VRRPFailbackHoldReport(held: false, heldFor: nil, bound: 60, vrfsBehind: ["lab"], settling: false, expired: false,
                                                 reason: "address owner (priority 255): never held down"),
            syncGroup: nil,
            statistics: VRRPStatisticsReport(advertsSent: 0, advertSendErrors: 0, advertsReceived: 0, drops: [:], becameMaster: 0,
                                             announcementsSent: 0, addressErrors: 0))
        let faulty = VRRPInstanceReport(
            name: "VI_4", interface: "eth5", vrid: 53, version: 3, family: "ipv4", state: "fault", since: 42.0, transitions: 2,
            lastReason: "tracked script chk_up failed", configuredPriority: 100, trackedPriority: 100, effectivePriority: 100,
            addressOwner: false, primaryAddress: "203.0.113.2", masterAddress: "203.0.113.3",
            lastAdvert: VRRPAdvertReport(source: "203.0.113.3", priority: 100, advertInterval: 1, secondsAgo: 0.82),
            advertInterval: 1, masterAdvertInterval: 1, preempt: true, preemptDelay: 0, unicastPeers: [],
            virtualAddresses: [VRRPVirtualAddressReport(address: "203.0.113.10", prefixLength: 24, dev: "eth5", label: nil, excluded: false, held: false)],
            trackInterfaces: [],
            trackScripts: [VRRPTrackReport(name: "chk_up", status: "failed", weight: 0, reverse: false, delta: 0)],
            fault: "tracked script chk_up failed",
            failbackHold: VRRPFailbackHoldReport(
                held: false, heldFor: nil, bound: 120, vrfsBehind: ["dmz"], settling: false, expired: true,
                reason: "failback_hold_max (120 s) ran out before VRF dmz completed the resync; not held again until it does"),
            syncGroup: "VG_2",
            statistics: VRRPStatisticsReport(advertsSent: 0, advertSendErrors: 0, advertsReceived: 51, drops: [:], becameMaster: 0,
                                             announcementsSent: 0, addressErrors: 0))
        var r = ControlReply(ok: true)
        r.vrrp = VRRPReport(
            instances: [master, held, fresh, faulty],
            syncGroups: [
                VRRPSyncGroupReport(name: "VG_1", state: "backup", members: [
                    VRRPSyncGroupMemberReport(name: "VI_1", state: "master"), VRRPSyncGroupMemberReport(name: "VI_2", state: "backup"),
                ]),
                VRRPSyncGroupReport(name: "VG_2", state: "fault", members: [VRRPSyncGroupMemberReport(name: "VI_4", state: "fault")]),
            ])
        return r
    }
}
