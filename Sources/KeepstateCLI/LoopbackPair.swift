import ConntrackModel
import Dataplane
import Foundation
import Logging
import NIOCore
import NIOPosix
import PKI
import SyncEngine

/// Two sync engines in one process, ha1 on 127.0.0.1 and ha2 on 127.0.0.2, each with a memory
/// dataplane, over real mutual TLS on loopback (used by `demo` and `bench`).
final class LoopbackPair {
    let group: MultiThreadedEventLoopGroup
    let logger: Logger
    let ca: PEMPair
    let certs: [String: PEMPair]
    var dp1: MemoryDataplane
    var dp2: MemoryDataplane
    var e1: SyncEngine
    var e2: SyncEngine
    var port1 = 0
    var port2 = 0
    let connections: Int

    init(connections: Int, threads: Int = 2, logLevel: Logger.Level = .warning, queueLimit: Int = 1 << 20) throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        var logger = Logger(label: "keepstate")
        logger.logLevel = logLevel
        self.logger = logger
        self.connections = connections
        ca = try PKI.makeCA(commonName: "keepstate loopback CA")
        certs = [
            "ha1": try PKI.issue(name: "ha1", addresses: ["127.0.0.1"], ca: ca),
            "ha2": try PKI.issue(name: "ha2", addresses: ["127.0.0.2"], ca: ca),
        ]
        dp1 = MemoryDataplane(vrf: "main")
        dp2 = MemoryDataplane(vrf: "main")
        e1 = try Self.engine("ha1", dataplane: dp1, certs: certs, ca: ca, connections: connections, group: group, logger: logger, queueLimit: queueLimit)
        e2 = try Self.engine("ha2", dataplane: dp2, certs: certs, ca: ca, connections: connections, group: group, logger: logger, queueLimit: queueLimit)
    }

    static func engine(_ node: String, dataplane: any Dataplane, certs: [String: PEMPair], ca: PEMPair, connections: Int,
                       group: any EventLoopGroup, logger: Logger, queueLimit: Int, listenPort: Int = 0) throws -> SyncEngine {
        let me = node == "ha1" ? "127.0.0.1" : "127.0.0.2"
        let peer = node == "ha1" ? "127.0.0.2" : "127.0.0.1"
        let peerName = node == "ha1" ? "ha2" : "ha1"
        let settings = SyncSettings(
            vrf: "main", nodeID: node, peerName: peerName, source: me, peerAddress: peer, peerPort: 0, listenPort: listenPort,
            peerIdentity: peerName, connections: connections, heartbeatInterval: .milliseconds(250),
            deadInterval: .milliseconds(1000), queueLimit: queueLimit,
            syncSettings: [.init(key: "conntrack_timeouts.tcp_undefined", value: "10")])
        let pem = certs[node]!
        let tls = try TLSMaterial(caPEM: ca.certificate, certificatePEM: pem.certificate, keyPEM: pem.privateKey)
        return SyncEngine(settings: settings, tls: tls, dataplane: dataplane, group: group, logger: logger)
    }

    /// Listens on ports below the ephemeral range (32768 and up here): a restarted node binds
    /// its port again, and in a range where outgoing connections pick their ports, another
    /// connection may hold it by then (seen: EADDRINUSE when `make test` runs every suite).
    func listen() async throws {
        let queueLimit = e1.settings.queueLimit
        await e1.shutdown()
        await e2.shutdown()
        (e1, port1) = try await Self.listenBelowEphemeral("ha1", dataplane: dp1, certs: certs, ca: ca, connections: connections,
                                                          group: group, logger: logger, queueLimit: queueLimit)
        (e2, port2) = try await Self.listenBelowEphemeral("ha2", dataplane: dp2, certs: certs, ca: ca, connections: connections,
                                                          group: group, logger: logger, queueLimit: queueLimit)
    }

    static func listenBelowEphemeral(_ node: String, dataplane: any Dataplane, certs: [String: PEMPair], ca: PEMPair,
                                     connections: Int, group: any EventLoopGroup, logger: Logger,
                                     queueLimit: Int) async throws -> (SyncEngine, Int) {
        var lastError: (any Error)?
        for _ in 0..<20 {
            let port = Int.random(in: 20_000..<32_000)
            let e = try engine(node, dataplane: dataplane, certs: certs, ca: ca, connections: connections, group: group,
                               logger: logger, queueLimit: queueLimit, listenPort: port)
            do {
                return (e, try await e.startListening())
            } catch {
                lastError = error
                await e.shutdown()
            }
        }
        throw lastError!
    }

    func startSending() {
        e1.startSending(peerPort: port2)
        e2.startSending(peerPort: port1)
    }

    /// Replaces ha1 by a fresh process-like instance with an empty table (a restarted node).
    func restartNode1() async throws {
        await e1.shutdown()
        dp1 = MemoryDataplane(vrf: "main")
        // Same port as before, as a real restart would use: ha2's connections find it again.
        // The old listener's close may still be under way (seen under load: EADDRINUSE), so
        // the bind is tried again for up to 10 s.
        var attempt = 0
        while true {
            e1 = try Self.engine("ha1", dataplane: dp1, certs: certs, ca: ca, connections: connections, group: group,
                                 logger: logger, queueLimit: 1 << 20, listenPort: port1)
            do {
                port1 = try await e1.startListening()
                break
            } catch {
                await e1.shutdown()
                attempt += 1
                if attempt >= 200 { throw error }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        e1.startSending(peerPort: port2)
    }

    func shutdown() async {
        await e1.shutdown()
        await e2.shutdown()
        try? await group.shutdownGracefully()
    }
}

/// Fills a memory dataplane with `count` distinct established conntracks (no events: nothing
/// is subscribed yet, or the caller wants them as a resync source).
func fill(_ dataplane: MemoryDataplane, count: Int, offset: UInt64 = 0) {
    var batch: [ConntrackUpdate] = []
    batch.reserveCapacity(10_000)
    for n in 0..<UInt64(count) {
        batch.append(.upsert(TrafficGenerator.conntrack(number: n + offset)))
        if batch.count == 10_000 {
            dataplane.simulate(batch)
            batch.removeAll(keepingCapacity: true)
        }
    }
    if !batch.isEmpty { dataplane.simulate(batch) }
}

/// Waits until `condition` holds, polling every `every`; false after `timeout`.
func waitUntil(timeout: Duration, every: Duration = .milliseconds(2), _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: every)
    }
    return await condition()
}

/// Whether two tables hold the same keys with entries that `same` finds equal (default: equal
/// in every field; a backup's dataplane compares with `sameExceptTimeout`, since it holds entries
/// with its own hold timeout and only other changes are written to it).
func tablesEqual(_ a: [Conntrack], _ b: [Conntrack], _ same: (Conntrack, Conntrack) -> Bool = { $0 == $1 }) -> Bool {
    guard a.count == b.count else { return false }
    var d: [ConntrackKey: Conntrack] = [:]
    d.reserveCapacity(a.count)
    for c in a { d[c.key] = c }
    for c in b {
        guard let o = d[c.key], same(o, c) else { return false }
    }
    return true
}
