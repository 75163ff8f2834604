import Config
@testable import Daemon
import Dispatch
import Foundation
import MetricsHTTP
@testable import SyncEngine
import Testing

/// The Prometheus endpoint: samples recorded from `show` replies, served on 127.0.0.1 with an
/// ephemeral port, read back over HTTP.
@Suite struct MetricsTests {
    private static func state(transitions: Int, role: String, takeover: Double?, drift: String? = nil) -> StateReport {
        var blue = VRFReport(name: "blue", netns: "ns-blue", group: "VI_1", role: role, conntracks: 42, held: 7,
                             holdQueue: 0, holdRefused: 0, lastTakeoverSeconds: takeover, lastRearm: nil,
                             connectionsEstablished: 1, connections: 2, dataplaneError: nil)
        blue.drift = drift
        return StateReport(
            routerID: "r1", configFile: "/etc/keepstate/keepstate.conf", uptime: 12,
            groups: [GroupReport(name: "VI_1", kind: "vrrp-instance", driven: "MASTER", override: "auto", state: "MASTER",
                                 since: 3.5, transitions: transitions, vrfs: ["blue"], vrrpState: "master",
                                 vrrpPriority: 150, vrrpFault: nil)],
            vrfs: [blue])
    }

    private static func peer(transmit: UInt64, resyncs: UInt64) -> SyncStatistics {
        var c0 = ConnectionStatistics(index: 0)
        c0.transmit = transmit
        c0.connectionStatus = .established
        c0.queueDepth = 3
        c0.resyncs = resyncs
        c0.lastResyncDuration = 0.25
        var c1 = ConnectionStatistics(index: 1)
        c1.connectionStatus = .connecting
        var local = LocalNodeStatistics()
        local.receive = 9
        local.storeEntries = 7
        return SyncStatistics(vrf: "blue", role: "master", peerName: "b.example", source: "10.0.0.1",
                              address: "10.0.0.2:7640", connections: [c0, c1], localNode: local)
    }

    @Test func scrapeServesRecordedMetrics() async throws {
        let metrics = DaemonMetrics()
        let counts = [ConntrackCounts(vrf: "blue", synced: ["tcp": ["established": 30], "udp": ["-": 5]], held: 7,
                                      role: "master", pending: 4)]
        metrics.record(state: Self.state(transitions: 2, role: "backup", takeover: nil),
                       peers: [Self.peer(transmit: 5, resyncs: 1)], conntracks: counts)
        // A second sample: counters follow the absolute values shown by `show peer`.
        // The VRRP instances of the `show vrrp` golden reply (KeepstateCLITests/Golden).
        let golden = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("KeepstateCLITests/Golden/show-vrrp.json")
        let vrrp = try #require(try JSONDecoder().decode(ControlReply.self, from: Data(contentsOf: golden)).vrrp)
        metrics.record(state: Self.state(transitions: 3, role: "master", takeover: 0.75, drift: "ruleset"),
                       peers: [Self.peer(transmit: 12, resyncs: 2)], conntracks: counts, vrrp: vrrp)

        let server = try await MetricsHTTPServer.start(host: "127.0.0.1", port: 0) { metrics.render() }
        defer { Task { await server.stop() } }
        #expect(server.port > 0)

        let (status, body) = try await httpGet(port: server.port, path: "/metrics")
        #expect(status == 200)
        let lines = Set(body.split(separator: "\n").map(String.init))
        for expected in [
            #"keepstate_group_master{group="VI_1"} 1.0"#,
            #"keepstate_vrrp_transitions_total{instance="VI_1"} 3"#,
            #"keepstate_vrrp_effective_priority{instance="VI_2"} 1.0"#,
            #"keepstate_vrrp_adverts_sent_total{instance="VI_1"} 36001"#,
            #"keepstate_vrrp_dropped_total{instance="VI_1",reason="vridMismatch"} 40"#,
            #"keepstate_group_transitions_total{group="VI_1"} 3"#,
            #"keepstate_vrrp_state{group="VI_1",state="master"} 1.0"#,
            #"keepstate_vrrp_state{group="VI_1",state="backup"} 0.0"#,
            #"keepstate_vrrp_priority{group="VI_1"} 150.0"#,
            #"keepstate_vrf_master{vrf="blue"} 1.0"#,
            #"keepstate_conntracks{vrf="blue"} 42.0"#,
            #"keepstate_conntracks_held{vrf="blue"} 7.0"#,
            #"keepstate_last_takeover_seconds{vrf="blue"} 0.75"#,
            #"keepstate_conntracks_synced{vrf="blue",proto="tcp",state="established"} 30.0"#,
            #"keepstate_conntracks_unsynced{vrf="blue"} 4.0"#,
            #"keepstate_sync_transmit_total{vrf="blue",peer="b.example",connection="0"} 12"#,
            #"keepstate_sync_resyncs_total{vrf="blue",peer="b.example",connection="0"} 2"#,
            #"keepstate_sync_last_resync_seconds{vrf="blue",peer="b.example",connection="0"} 0.25"#,
            #"keepstate_sync_connection_established{vrf="blue",peer="b.example",connection="1"} 0.0"#,
            #"keepstate_sync_queue_depth{vrf="blue",peer="b.example",connection="0"} 3.0"#,
            #"keepstate_sync_received_total{vrf="blue",peer="b.example"} 9"#,
            #"keepstate_sync_store_entries{vrf="blue",peer="b.example"} 7.0"#,
            #"keepstate_dataplane_error{vrf="blue"} 0.0"#,
            #"keepstate_config_drift{vrf="blue",kind="ruleset"} 1.0"#,
            #"keepstate_config_drift{vrf="blue",kind="none"} 0.0"#,
        ] {
            #expect(lines.contains(expected), "missing \(expected) in:\n\(body)")
        }
        #expect(lines.contains("# TYPE keepstate_sync_transmit_total counter"))
        #expect(lines.contains("# TYPE keepstate_conntracks gauge"))

        let (notFound, _) = try await httpGet(port: server.port, path: "/")
        #expect(notFound == 404)
    }

    /// A counter that goes down (an engine restarted by a reload) counts the new value anew.
    @Test func counterResetCountsAnew() async throws {
        let metrics = DaemonMetrics()
        metrics.record(state: Self.state(transitions: 1, role: "master", takeover: nil),
                       peers: [Self.peer(transmit: 10, resyncs: 1)], conntracks: [])
        metrics.record(state: Self.state(transitions: 1, role: "master", takeover: nil),
                       peers: [Self.peer(transmit: 4, resyncs: 1)], conntracks: [])
        let text = metrics.render()
        #expect(text.contains(#"keepstate_sync_transmit_total{vrf="blue",peer="b.example",connection="0"} 14"#), "\(text)")
    }
}

/// A blocking HTTP/1.0 GET on a Dispatch thread (not the cooperative pool, which serves the
/// scrape). Returns the status code and the body.
private func httpGet(port: Int, path: String) async throws -> (Int, String) {
    try await withCheckedThrowingContinuation { (k: CheckedContinuation<(Int, String), any Error>) in
        DispatchQueue.global().async {
            k.resume(with: Result { try blockingGet(port: port, path: path) })
        }
    }
}

private struct HTTPTestError: Error, CustomStringConvertible {
    var description: String
}

private func blockingGet(port: Int, path: String) throws -> (Int, String) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw HTTPTestError(description: "socket: errno \(errno)") }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 30, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { throw HTTPTestError(description: "connect: errno \(errno)") }
    let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
    guard send(fd, request, request.count, 0) == request.count else { throw HTTPTestError(description: "send: errno \(errno)") }
    var response: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = recv(fd, &chunk, chunk.count, 0)
        if n < 0 { throw HTTPTestError(description: "recv: errno \(errno)") }
        if n == 0 { break }
        response += chunk[0..<n]
    }
    let text = String(decoding: response, as: UTF8.self)
    guard let split = text.range(of: "\r\n\r\n") else { throw HTTPTestError(description: "no header end in \(text)") }
    let statusLine = text[..<split.lowerBound].split(separator: "\r\n").first ?? ""
    let parts = statusLine.split(separator: " ")
    guard parts.count >= 2, let code = Int(parts[1]) else { throw HTTPTestError(description: "bad status line \(statusLine)") }
    return (code, String(text[split.upperBound...]))
}
