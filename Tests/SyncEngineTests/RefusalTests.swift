import ConntrackModel
import Dataplane
import Foundation
import Logging
import NIOCore
import NIOPosix
import SyncEngine
import SyncProtocol
import Testing
import TestSupport

/// A node that tries to sync into ha2 with the given TLS material, from `source`.
private func intruder(_ tls: TLSMaterial, source: String, group: any EventLoopGroup, entries: Int = 100) -> (SyncEngine, MemoryDataplane) {
    var logger = Logger(label: "intruder")
    logger.logLevel = .critical
    let dp = MemoryDataplane(vrf: "main")
    var gen = TrafficGenerator(seed: 5, mix: .fill)
    dp.simulate(gen.next(entries))
    let settings = SyncSettings(
        vrf: "main", nodeID: "intruder", peerName: "ha2", source: source, peerAddress: "127.0.0.2", peerPort: 0,
        listenPort: 0, peerIdentity: "ha2", connections: 1, heartbeatInterval: .milliseconds(200),
        deadInterval: .seconds(1))
    let engine = SyncEngine(settings: settings, tls: tls, dataplane: dp, group: group, logger: logger)
    engine.setRole(.master)
    return (engine, dp)
}

@Suite("Refused connections", .serialized)
struct RefusalTests {
    func expectRefused(_ tls: TLSMaterial, source: String, reason: String) async throws {
        let pair = try await Pair.make(connections: 1, logLevel: .critical)
        let (bad, _) = intruder(tls, source: source, group: pair.group)
        bad.startSending(peerPort: pair.port2)
        let refused = await eventually(10) { await pair.e2.statistics().localNode.refusedConnections >= 1 }
        #expect(refused, "\(reason): not refused")
        let local = await pair.e2.statistics().localNode
        #expect(pair.e2.store.count == 0, "\(reason): data was accepted")
        #expect(local.acceptedConnections == 0)
        let c = await bad.statistics().connections[0]
        #expect(c.connectionStatus != .established)
        await bad.shutdown()
        await pair.shutdown()
    }

    @Test("a certificate from another CA is refused")
    func otherCA() async throws {
        let tls = try TLSMaterial(caPEM: TestPKI.ca.certificate, certificatePEM: TestPKI.rogue.certificate, keyPEM: TestPKI.rogue.privateKey)
        try await expectRefused(tls, source: "127.0.0.1", reason: "other CA")
    }

    @Test("a certificate naming another node is refused")
    func otherNode() async throws {
        try await expectRefused(try TestPKI.material(TestPKI.ha3), source: "127.0.0.1", reason: "ha3's certificate")
    }

    @Test("the right certificate from the wrong address is refused")
    func wrongAddress() async throws {
        try await expectRefused(try TestPKI.material(TestPKI.ha1), source: "127.0.0.3", reason: "wrong source address")
    }

    @Test("control: the right certificate from the right address is accepted")
    func rightPeer() async throws {
        let pair = try await Pair.make(connections: 1, logLevel: .critical)
        let (good, dp) = intruder(try TestPKI.material(TestPKI.ha1), source: "127.0.0.1", group: pair.group)
        good.startSending(peerPort: pair.port2)
        #expect(await eventually(10) { pair.e2.store.count == dp.count })
        #expect(await pair.e2.statistics().localNode.refusedConnections == 0)
        await good.shutdown()
        await pair.shutdown()
    }
}

/// The same checks with an independent TLS client: the system's `openssl s_client`.
@Suite("Refused connections, checked with openssl s_client", .serialized)
struct OpenSSLClientTests {
    static let openssl: String? = ["/usr/bin/openssl", "/usr/local/bin/openssl"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Runs s_client against ha2 with `stdin` as the bytes to send; returns what it printed.
    func sClient(port: Int, dir: URL, cert: String?, stdin: [UInt8]) throws -> (status: Int32, out: [UInt8], err: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.openssl!)
        var args = ["s_client", "-quiet", "-tls1_3", "-connect", "127.0.0.2:\(port)", "-CAfile", dir.appendingPathComponent("ca.pem").path,
                    "-verify_return_error"]
        if let cert {
            args += ["-cert", dir.appendingPathComponent("\(cert).pem").path, "-key", dir.appendingPathComponent("\(cert).key").path]
        }
        p.arguments = args
        let input = Pipe(), output = Pipe(), error = Pipe()
        p.standardInput = input
        p.standardOutput = output
        p.standardError = error
        try p.run()
        try input.fileHandleForWriting.write(contentsOf: Data(stdin))
        // Keep stdin open briefly so s_client reads the reply before it sees EOF.
        let outData = output.fileHandleForReading.readDataToEndOfFile()
        try? input.fileHandleForWriting.close()
        let errData = error.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, Array(outData), String(decoding: errData, as: UTF8.self))
    }

    func hello() -> [UInt8] {
        var b = ByteBuffer()
        b.writeSyncMessage(.hello(Hello(nodeID: "ha1", vrf: "main", connectionIndex: 0, connectionCount: 1,
                                        fingerprint: [], settings: [])), sequence: 0)
        return Array(b.readableBytesView)
    }

    func ack(_ bytes: [UInt8]) -> HelloAck? {
        var b = ByteBuffer(bytes: bytes)
        guard let frame = try? b.readSyncFrame(), frame.type == .helloAck,
              case .helloAck(let ack)? = try? SyncControlMessage.decode(type: frame.type, payload: frame.payload)
        else { return nil }
        return ack
    }

    @Test("s_client without a certificate, with another CA's, with another node's: refused; with ha1's: accepted",
          .enabled(if: openssl != nil, "openssl is not installed"))
    func sClientRefusals() async throws {
        let dir = try TestPKI.writeFiles()
        defer { try? FileManager.default.removeItem(at: dir) }
        let pair = try await Pair.make(connections: 1, logLevel: .critical)

        let none = try sClient(port: pair.port2, dir: dir, cert: nil, stdin: hello())
        #expect(ack(none.out) == nil, "no certificate: got an answer")
        #expect(none.err.lowercased().contains("certificate required") || none.err.lowercased().contains("alert"), "\(none.err)")

        let rogue = try sClient(port: pair.port2, dir: dir, cert: "rogue", stdin: hello())
        #expect(ack(rogue.out) == nil, "another CA: got an answer")
        #expect(rogue.err.lowercased().contains("unknown ca") || rogue.err.lowercased().contains("alert"), "\(rogue.err)")

        let ha3 = try sClient(port: pair.port2, dir: dir, cert: "ha3", stdin: hello())
        let refusal = ack(ha3.out)
        #expect(refusal?.status == .peerNotAllowed, "ha3: \(String(describing: refusal))")

        let ha1 = try sClient(port: pair.port2, dir: dir, cert: "ha1", stdin: hello())
        #expect(ack(ha1.out)?.status.isAccepted == true, "ha1 control: \(ha1.err)")

        // A peer speaking version 4 is told which versions this node speaks.
        var v2 = ByteBuffer()
        v2.writeSyncMessage(.hello(Hello(version: 4, nodeID: "ha1", vrf: "main", connectionIndex: 0, connectionCount: 1,
                                         fingerprint: [], settings: [])), sequence: 0)
        let other = try sClient(port: pair.port2, dir: dir, cert: "ha1", stdin: Array(v2.readableBytesView))
        var reply = ByteBuffer(bytes: other.out)
        let frame = try #require(try reply.readSyncFrame())
        let message = try SyncControlMessage.decode(type: frame.type, payload: frame.payload)
        guard case .error(let code, let text) = message else {
            Issue.record("expected an ERROR frame, got \(message)")
            return
        }
        #expect(code == .unsupportedVersion)
        #expect(text.contains("version 4") && text.contains("speaks 1 to 3"), "\(text)")

        let local = await pair.e2.statistics().localNode
        #expect(local.refusedConnections >= 3)
        await pair.shutdown()
    }

    @Test("a version 2 peer (no ruleset field) is accepted: its ack has no trailing ruleset and only the settings version 2 knows; the drift says why the ruleset is unknown",
          .enabled(if: openssl != nil, "openssl is not installed"))
    func versionTwoPeer() async throws {
        let dir = try TestPKI.writeFiles()
        defer { try? FileManager.default.removeItem(at: dir) }
        let mine = [SyncSettingPair(key: "conntrack_timeouts.tcp_undefined", value: "10"),
                    SyncSettingPair(key: "ha_fp_conntrack.failback_hold_max", value: "120")]
        let pair = try await Pair.make(connections: 1, logLevel: .critical, settings2: mine)
        pair.e2.setLocalRuleset(.known(RulesetDigest(digest: [UInt8](repeating: 7, count: 32), parts: [])))
        var b = ByteBuffer()
        // What a version 2 node sends: no failback_hold_max, no ruleset.
        b.writeSyncMessage(.hello(Hello(version: 2, nodeID: "ha1", vrf: "main", connectionIndex: 0, connectionCount: 1,
                                        fingerprint: [1], settings: [mine[0]])), sequence: 0)
        let old = try sClient(port: pair.port2, dir: dir, cert: "ha1", stdin: Array(b.readableBytesView))
        let reply = try #require(ack(old.out), "no ack: \(old.err)")
        #expect(reply.status == .accepted, "the key version 2 lacks is no difference")
        #expect(reply.ruleset == nil, "a version 2 sender refuses trailing bytes")
        #expect(reply.settings == [mine[0]])
        #expect(await eventually(10) {
            pair.e2.configDrift == ConfigDrift(
                kind: .unknown, reason: "the peer speaks protocol version 2, without ruleset fingerprints")
        }, "\(pair.e2.configDrift)")
        await pair.shutdown()
    }
}
