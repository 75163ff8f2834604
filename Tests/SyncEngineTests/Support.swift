import ConntrackModel
import Dataplane
import Foundation
import Logging
import NIOCore
import NIOPosix
import PKI
import SyncEngine
import SyncPolicy
import SyncProtocol

/// A CA and node certificates made once per test process.
enum TestPKI {
    static let ca: PEMPair = try! PKI.makeCA(commonName: "test CA")
    static let otherCA: PEMPair = try! PKI.makeCA(commonName: "rogue CA")
    static let ha1: PEMPair = try! PKI.issue(name: "ha1", addresses: ["127.0.0.1"], ca: ca)
    static let ha2: PEMPair = try! PKI.issue(name: "ha2", addresses: ["127.0.0.2"], ca: ca)
    static let ha3: PEMPair = try! PKI.issue(name: "ha3", addresses: ["127.0.0.3"], ca: ca)
    static let rogue: PEMPair = try! PKI.issue(name: "ha1", addresses: ["127.0.0.1"], ca: otherCA)

    static func material(_ node: PEMPair, ca: PEMPair = TestPKI.ca) throws -> TLSMaterial {
        try TLSMaterial(caPEM: ca.certificate, certificatePEM: node.certificate, keyPEM: node.privateKey)
    }

    /// Writes the PEM files into a fresh directory (for openssl and file-based loading).
    static func writeFiles() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("keepstate-pki-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let files: [(String, String)] = [
            ("ca.pem", ca.certificate), ("ha1.pem", ha1.certificate), ("ha1.key", ha1.privateKey),
            ("ha2.pem", ha2.certificate), ("ha2.key", ha2.privateKey), ("ha3.pem", ha3.certificate),
            ("ha3.key", ha3.privateKey), ("rogue.pem", rogue.certificate), ("rogue.key", rogue.privateKey),
        ]
        for (name, text) in files { try text.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8) }
        return dir
    }
}

/// Two engines, ha1 (127.0.0.1) and ha2 (127.0.0.2), over TLS on loopback. Their dataplanes are
/// the memory dataplanes `dp1` and `dp2` unless others are passed to `make`.
struct Pair {
    let group: MultiThreadedEventLoopGroup
    let dp1: MemoryDataplane
    let dp2: MemoryDataplane
    let e1: SyncEngine
    let e2: SyncEngine
    let port1: Int
    let port2: Int

    static func settings(node: String, source: String, peer: String, peerName: String, connections: Int,
                         queueLimit: Int = 1 << 20, syncSettings: [SyncSettingPair] = [], listenPort: Int = 0,
                         vrf: String = "main", rulesetCheck: Bool = true) -> SyncSettings {
        SyncSettings(
            vrf: vrf, nodeID: node, peerName: peerName, source: source, peerAddress: peer, peerPort: 0,
            listenPort: listenPort, peerIdentity: peerName, connections: connections,
            heartbeatInterval: .milliseconds(200), deadInterval: .milliseconds(1500), queueLimit: queueLimit,
            syncSettings: syncSettings, rulesetCheck: rulesetCheck)
    }

    static func make(connections: Int = 4, queueLimit: Int = 1 << 20, logLevel: Logger.Level = .warning,
                     settings1: [SyncSettingPair] = [], settings2: [SyncSettingPair] = [],
                     logger1: Logger? = nil, logger2: Logger? = nil,
                     dataplane1: (any Dataplane)? = nil, dataplane2: (any Dataplane)? = nil,
                     policy1: PolicySettings? = nil, policy2: PolicySettings? = nil, vrf: String = "main",
                     rulesetCheck1: Bool = true) async throws -> Pair {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var logger = Logger(label: "test")
        logger.logLevel = logLevel
        let dp1 = MemoryDataplane(vrf: "main")
        let dp2 = MemoryDataplane(vrf: "main")
        let e1 = SyncEngine(
            settings: settings(node: "ha1", source: "127.0.0.1", peer: "127.0.0.2", peerName: "ha2", connections: connections,
                               queueLimit: queueLimit, syncSettings: settings1, vrf: vrf, rulesetCheck: rulesetCheck1),
            tls: try TestPKI.material(TestPKI.ha1), dataplane: dataplane1 ?? dp1, group: group, logger: logger1 ?? logger,
            policy: policy1)
        let e2 = SyncEngine(
            settings: settings(node: "ha2", source: "127.0.0.2", peer: "127.0.0.1", peerName: "ha1", connections: connections,
                               queueLimit: queueLimit, syncSettings: settings2, vrf: vrf),
            tls: try TestPKI.material(TestPKI.ha2), dataplane: dataplane2 ?? dp2, group: group, logger: logger2 ?? logger,
            policy: policy2)
        let p1 = try await e1.startListening()
        let p2 = try await e2.startListening()
        return Pair(group: group, dp1: dp1, dp2: dp2, e1: e1, e2: e2, port1: p1, port2: p2)
    }

    func startSending() {
        e1.startSending(peerPort: port2)
        e2.startSending(peerPort: port1)
    }

    func shutdown() async {
        await e1.shutdown()
        await e2.shutdown()
        try? await group.shutdownGracefully()
    }
}


/// The table as a dictionary, for exact comparison.
func asDictionary(_ entries: [Conntrack]) -> [ConntrackKey: Conntrack] {
    var d: [ConntrackKey: Conntrack] = [:]
    d.reserveCapacity(entries.count)
    for c in entries { d[c.key] = c }
    return d
}
