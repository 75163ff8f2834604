import ConntrackModel
@testable import Daemon
import Dataplane
import Foundation
import Logging
import PKI
import Synchronization
import Testing
import TestSupport

/// A temporary directory removed at the end of the test.
final class TempDir {
    let path: String
    init() throws {
        path = "/tmp/ks-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

final class Registry: Sendable {
    let m = Mutex<[String: MemoryDataplane]>([:])
    func withLock<R>(_ body: (inout [String: MemoryDataplane]) -> R) -> R { m.withLock { body(&$0) } }
}

final class Counter: Sendable {
    let m = Mutex(0)
    func add() { m.withLock { $0 += 1 } }
    var value: Int { m.withLock { $0 } }
}

/// Two daemons in this process on 127.0.0.1 and 127.0.0.2, memory dataplanes, real TLS and
/// real control sockets.
final class DaemonPair: @unchecked Sendable {
    let dir = try! TempDir()
    /// Below the ephemeral range (32768 and up): no outgoing connection of a test running
    /// alongside can hold it.
    let port = Int.random(in: 20_000...32_000)
    let dataplanes = Registry()
    var daemons: [String: KeepstateDaemon] = [:]

    init() throws {
        let ca = try PKI.makeCA()
        try ca.certificate.write(toFile: "\(dir.path)/ca.pem", atomically: true, encoding: .utf8)
        for (name, address) in [("ha1", "127.0.0.1"), ("ha2", "127.0.0.2")] {
            let pair = try PKI.issue(name: name, addresses: [address], ca: ca)
            try pair.certificate.write(toFile: "\(dir.path)/\(name).pem", atomically: true, encoding: .utf8)
            try pair.privateKey.write(toFile: "\(dir.path)/\(name).key", atomically: true, encoding: .utf8)
        }
    }

    func config(_ node: String, state: String, port: Int? = nil, tcpUndefined: Int = 10, extra: String = "",
                netns: String? = nil, syncExtra: String = "") -> String {
        let me = node == "ha1" ? "127.0.0.1" : "127.0.0.2"
        let peer = node == "ha1" ? "127.0.0.2" : "127.0.0.1"
        let peerName = node == "ha1" ? "ha2" : "ha1"
        return """
            global_defs { router_id \(node) }
            ha_group g1 { static_state \(state) }
            vrf main {
                \(netns.map { "netns \($0)" } ?? "")
                ha_fp_conntrack {
                    peer \(peerName) { source \(me) address \(peer) port \(port ?? self.port) identity \(peerName) }
                    listen_ha_group g1
                    event_threads 2
                    tls { ca \(dir.path)/ca.pem certificate \(dir.path)/\(node).pem key \(dir.path)/\(node).key }
                    heartbeat_interval 0.2
                    dead_interval 1
                    \(syncExtra)
                }
                conntrack_timeouts { tcp_undefined \(tcpUndefined) }
                \(extra)
            }
            """
    }

    func socket(_ node: String) -> String { "\(dir.path)/\(node).sock" }
    func configPath(_ node: String) -> String { "\(dir.path)/\(node).conf" }

    /// With `netns`, the VRF is that namespace and its dataplane the kernel's table there.
    func start(_ node: String, state: String, extra: String = "", netns: String? = nil, syncExtra: String = "") async throws {
        try config(node, state: state, extra: extra, netns: netns, syncExtra: syncExtra)
            .write(toFile: configPath(node), atomically: true, encoding: .utf8)
        var logger = Logger(label: node)
        logger.logLevel = .critical
        let dps = dataplanes
        let memory: DataplaneFactory = { vrf in
            dps.withLock { d in
                if let existing = d["\(node)/\(vrf.name)"] { return existing }
                let dp = MemoryDataplane(vrf: vrf.name)
                d["\(node)/\(vrf.name)"] = dp
                return dp
            }
        }
        let options = KeepstateDaemon.Options(configPath: configPath(node), socketPath: socket(node),
                                              dataplaneFactory: netns == nil ? memory : nil)
        let daemon = try KeepstateDaemon(options: options, logger: logger)
        try await daemon.start()
        daemons[node] = daemon
    }

    func dataplane(_ node: String) -> MemoryDataplane? { dataplanes.withLock { $0["\(node)/main"] } }

    /// The client blocks: it runs on a thread of its own, never on the concurrency pool that the
    /// daemons need.
    func request(_ node: String, _ r: ControlRequest) async throws -> ControlReply {
        let path = socket(node)
        return try await offPool { try ControlClient.send(r, socketPath: path) }
    }

    func vrf(_ node: String) async throws -> VRFReport? {
        try await request(node, ControlRequest(command: .showState)).state?.vrfs.first
    }

    func stop() async {
        for d in daemons.values { await d.shutdown() }
        daemons = [:]
    }
}

func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { c in
        Thread { c.resume(with: Result { try body() }) }.start()
    }
}



@Suite("The daemon, two nodes in one process", .serialized)
struct DaemonTests {
    @Test("static groups sync master to backup; set-state moves the roles; a reload changing a timeout and the peer port keeps the tables")
    func pairLifecycle() async throws {
        let pair = try DaemonPair()
        try await pair.start("ha1", state: "MASTER")
        try await pair.start("ha2", state: "BACKUP")
        let dp1 = try #require(pair.dataplane("ha1"))
        dp1.simulate((0..<UInt64(1000)).map { .upsert(TrafficGenerator.conntrack(number: $0)) })
        #expect(await eventually { try await pair.vrf("ha2")?.held == 1000 })
        #expect(try await pair.vrf("ha1")?.role == "master")
        #expect(try await pair.vrf("ha2")?.role == "backup")
        #expect(pair.dataplane("ha2")?.count == 1000, "the backup holds the table in its dataplane")

        // The operator moves mastership to ha2.
        let r1 = try await pair.request("ha1", ControlRequest(command: .setState, group: "g1", state: "backup"))
        #expect(r1.ok && r1.message == "group g1: override backup, state backup")
        let r2 = try await pair.request("ha2", ControlRequest(command: .setState, group: "g1", state: "master"))
        #expect(r2.ok)
        let state2 = try #require(try await pair.request("ha2", ControlRequest(command: .showState)).state)
        #expect(state2.groups.first?.override == "master" && state2.groups.first?.driven == "backup")
        #expect(state2.vrfs.first?.role == "master")
        #expect(state2.vrfs.first?.lastTakeoverSeconds != nil)
        // ha2 now sends; ha1 holds ha2's table.
        #expect(await eventually { try await pair.vrf("ha1")?.held == 1000 })
        let forced = try await pair.request("ha1", ControlRequest(command: .sync, vrf: "main"))
        #expect(!forced.ok && forced.error?.contains("run the forced synchronization on the master") == true)
        #expect(try await pair.request("ha2", ControlRequest(command: .sync, vrf: "main")).ok)

        // Reload both with another port and another tcp_undefined: connections restart, the
        // tables stay, the overrides stay.
        let newPort = pair.port + 1
        try pair.config("ha1", state: "MASTER", port: newPort, tcpUndefined: 30).write(toFile: pair.configPath("ha1"), atomically: true, encoding: .utf8)
        try pair.config("ha2", state: "BACKUP", port: newPort, tcpUndefined: 30).write(toFile: pair.configPath("ha2"), atomically: true, encoding: .utf8)
        let re1 = try await pair.request("ha1", ControlRequest(command: .reload))
        let re2 = try await pair.request("ha2", ControlRequest(command: .reload))
        #expect(re1.ok && re1.message == "reloaded: updated VRF main", "\(re1)")
        #expect(re2.ok)
        #expect(await eventually {
            guard let v1 = try await pair.vrf("ha1"), let v2 = try await pair.vrf("ha2") else { return false }
            return v1.held == 1000 && v2.conntracks == 1000 && v1.connectionsEstablished == 2 && v2.connectionsEstablished == 2
        })
        #expect(try await pair.vrf("ha2")?.role == "master", "the override survived the reload")
        let peers = try #require(try await pair.request("ha2", ControlRequest(command: .showPeer)).peers)
        #expect(peers.first?.connections.count == 2)

        // A TLS key that does not match its certificate (ha2's key under ha1's name): refused
        // as check-config refuses it, naming the certificate's line; the sync goes on.
        let keyPath = "\(pair.dir.path)/ha1.key"
        let goodKey = try String(contentsOfFile: keyPath, encoding: .utf8)
        try String(contentsOfFile: "\(pair.dir.path)/ha2.key", encoding: .utf8).write(toFile: keyPath, atomically: true, encoding: .utf8)
        try pair.config("ha1", state: "MASTER", port: newPort, tcpUndefined: 31).write(toFile: pair.configPath("ha1"), atomically: true, encoding: .utf8)
        let badTLS = try await pair.request("ha1", ControlRequest(command: .reload))
        #expect(!badTLS.ok && badTLS.error?.contains("ha1.conf:") == true && badTLS.error?.contains("reload refused") == true, "\(badTLS)")
        try goodKey.write(toFile: keyPath, atomically: true, encoding: .utf8)
        #expect(await eventually(5) { try await pair.vrf("ha1")?.connectionsEstablished == 2 })
        #expect(try await pair.vrf("ha1")?.held == 1000)

        // An invalid configuration is refused whole; the running one stays.
        try "vrf main { bogus_keyword 1 }".write(toFile: pair.configPath("ha1"), atomically: true, encoding: .utf8)
        let bad = try await pair.request("ha1", ControlRequest(command: .reload))
        #expect(!bad.ok && bad.error?.contains("ha1.conf:1:") == true, "\(bad)")
        #expect(try await pair.vrf("ha1")?.held == 1000)

        // Back to auto: ha1 follows its file (MASTER) again... which the bad reload did not change.
        let auto = try await pair.request("ha1", ControlRequest(command: .setState, group: "g1", state: "auto"))
        #expect(auto.ok && auto.message == "group g1: override auto, state master")
        let unknown = try await pair.request("ha1", ControlRequest(command: .setState, group: "nope", state: "master"))
        #expect(!unknown.ok && unknown.error == "no HA group nope (configured: g1)")
        await pair.stop()
    }

    @Test("show conntracks --unsynced lists what a delay holds back, with the reason; sync sends it at once and answers before it is done")
    func unsyncedAndForcedSync() async throws {
        let pair = try DaemonPair()
        let delays = "ha_delays { tcp { synchronization 600 } }"
        try await pair.start("ha1", state: "MASTER", extra: delays)
        try await pair.start("ha2", state: "BACKUP", extra: delays)
        let dp1 = try #require(pair.dataplane("ha1"))
        // 70 TCP (held back by the delay), 20 UDP and 10 ICMP (no delay).
        dp1.simulate((0..<UInt64(100)).map { .upsert(TrafficGenerator.conntrack(number: $0)) })
        #expect(await eventually { try await pair.vrf("ha2")?.held == 30 })

        let reply = try await pair.request("ha1", ControlRequest(command: .showConntracks, vrf: "main", unsynced: true, limit: 5))
        let counts = try #require(reply.conntracks?.first)
        let listing = try #require(counts.unsynced)
        #expect(listing.role == "master" && listing.total == 100 && listing.synced == 30)
        #expect(listing.counts == ["delay-pending": 70])
        #expect(listing.entries.count == 5 && listing.truncated)
        #expect(listing.entries.allSatisfy { $0.reason == "delay-pending" && ($0.delayEndsIn ?? 0) > 590 && $0.conntrack.hasPrefix("ipv4 tcp ") })
        #expect(counts.role == "master" && counts.pending == 70)
        #expect(counts.synced["tcp"] == nil && counts.synced["udp"]?["-"] == 20 && counts.synced["icmp"]?["-"] == 10)
        // Without --unsynced nothing is read; a backup sends nothing and says so.
        #expect(try await pair.request("ha1", ControlRequest(command: .showConntracks)).conntracks?.first?.unsynced == nil)
        let backup = try await pair.request("ha2", ControlRequest(command: .showConntracks, unsynced: true))
        #expect(backup.conntracks?.first?.unsynced?.role == "backup" && backup.conntracks?.first?.unsynced?.entries == [])
        let negative = try await pair.request("ha1", ControlRequest(command: .showConntracks, unsynced: true, limit: -1))
        #expect(!negative.ok)
        // --proto: counts, total and listing of that protocol only.
        let tcpOnly = try #require(try await pair.request("ha1", ControlRequest(command: .showConntracks, unsynced: true, limit: 5,
                                                                               proto: "tcp")).conntracks?.first)
        #expect(tcpOnly.unsynced?.total == 70 && tcpOnly.unsynced?.synced == 0 && tcpOnly.unsynced?.counts == ["delay-pending": 70])
        #expect(tcpOnly.synced.isEmpty)
        let udpOnly = try #require(try await pair.request("ha1", ControlRequest(command: .showConntracks, unsynced: true,
                                                                               proto: "17")).conntracks?.first)
        #expect(udpOnly.unsynced?.total == 20 && udpOnly.unsynced?.counts == [:] && udpOnly.synced.keys.sorted() == ["udp"])
        let unknownProto = try await pair.request("ha1", ControlRequest(command: .showConntracks, proto: "tcpp"))
        #expect(!unknownProto.ok && unknownProto.error?.hasPrefix("unknown protocol tcpp") == true, "\(unknownProto)")

        // The forced synchronization syncs them regardless of the delay.
        let forced = try await pair.request("ha1", ControlRequest(command: .sync, vrf: "main"))
        #expect(forced.ok && forced.message == "synchronization of VRF main started, completion will appear in the log", "\(forced)")
        #expect(await eventually { try await pair.vrf("ha2")?.held == 100 })
        let after = try #require(try await pair.request("ha1", ControlRequest(command: .showConntracks, unsynced: true)).conntracks?.first)
        #expect(after.unsynced?.counts == [:] && after.unsynced?.synced == 100 && after.pending == 0)
        await pair.stop()
    }

    @Test("show-vrrp without VRRP: ok with empty lists; an unknown instance is refused; a version-1 request without the new fields still works")
    func showVRRPWithoutVRRP() async throws {
        let pair = try DaemonPair()
        try await pair.start("ha1", state: "MASTER")
        let reply = try await pair.request("ha1", ControlRequest(command: .showVRRP))
        #expect(reply.ok && reply.vrrp == VRRPReport())
        #expect(String(decoding: reply.encodedLine(), as: UTF8.self).contains(#""vrrp":{"instances":[],"syncGroups":[]}"#))
        let refused = try await pair.request("ha1", ControlRequest(command: .showVRRP, instance: "VI_1"))
        #expect(!refused.ok && refused.error == "no vrrp_instance VI_1: the configuration has no VRRP")
        // A client from before show-vrrp: its requests have no `instance` and decode the same.
        let path = pair.socket("ha1")
        let old = try await offPool { try ControlClient.exchange(Data(#"{"version":1,"command":"show-state"}"#.utf8 + [0x0A]), socketPath: path) }
        let decoded = try JSONDecoder().decode(ControlReply.self, from: old)
        #expect(decoded.ok && decoded.state?.routerID == "ha1" && decoded.vrrp == nil)
        await pair.stop()
    }

    @Test("the control socket answers malformed, oversized and concurrent requests, and stays up")
    func controlSocketAbuse() async throws {
        let pair = try DaemonPair()
        try await pair.start("ha1", state: "MASTER")
        let path = pair.socket("ha1")
        func raw(_ s: String) async throws -> ControlReply {
            let data = try await offPool { try ControlClient.exchange(Data(s.utf8), socketPath: path) }
            return try JSONDecoder().decode(ControlReply.self, from: data)
        }
        #expect(try await raw("show state\n").error == "request is not a control request: malformed JSON")
        #expect(try await raw("{\"version\":7,\"command\":\"sync\"}\n").error?.contains("version 7 not supported") == true)
        #expect(try await raw(String(repeating: "x", count: 100_000)).error?.hasPrefix("request longer than 16384 bytes") == true)
        #expect(try await raw("{\"version\":1,\"command\":\"show-state\"}").error == "request ended without a newline")
        #expect(try await raw("\u{0}\u{1}\u{2}\n").ok == false)
        let attrs = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attrs[.posixPermissions] as? Int) == 0o600)

        let ok = Counter()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<32 {
                group.addTask {
                    if (try? await offPool { try ControlClient.send(ControlRequest(command: .showState), socketPath: path) })?.ok == true {
                        ok.add()
                    }
                }
            }
        }
        #expect(ok.value == 32)
        #expect(try await pair.request("ha1", ControlRequest(command: .showConntracks)).conntracks?.first?.vrf == "main")
        await pair.stop()
        #expect(!FileManager.default.fileExists(atPath: path), "the socket file is removed on shutdown")
    }
}
