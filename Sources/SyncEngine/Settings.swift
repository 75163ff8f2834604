public import NIOCore
public import SyncProtocol
import NIOSSL
import PKI
import Crypto

/// Everything one VRF's sync engine needs to know, independent of the configuration file format.
public struct SyncSettings: Sendable {
    public var vrf: String
    /// This node's `router_id`, sent in every hello.
    public var nodeID: String
    public var peerName: String
    /// Local address: the listener binds it, and outgoing connections leave from it.
    public var source: String
    /// The peer's address and sync port.
    public var peerAddress: String
    public var peerPort: Int
    /// The port this node listens on (the peer's `port` setting names the same port on the peer).
    public var listenPort: Int
    /// The DNS name the peer's certificate must carry (or its IP SAN must be `peerAddress`).
    public var peerIdentity: String
    /// Sync connections to the peer (the reference's event threads).
    public var connections: Int
    public var heartbeatInterval: TimeAmount
    public var deadInterval: TimeAmount
    /// Bound of each connection's send queue, in records.
    public var queueLimit: Int
    /// The sync-relevant settings compared with the peer's.
    public var syncSettings: [SyncSettingPair]
    /// Whether this node reads its ruleset and compares it with the peer's (false:
    /// `ruleset_check_interval 0`; the drift then covers the settings only).
    public var rulesetCheck: Bool

    public init(
        vrf: String, nodeID: String, peerName: String, source: String, peerAddress: String, peerPort: Int,
        listenPort: Int, peerIdentity: String, connections: Int = 4, heartbeatInterval: TimeAmount = .seconds(1),
        deadInterval: TimeAmount = .seconds(3), queueLimit: Int = 1 << 20, syncSettings: [SyncSettingPair] = [],
        rulesetCheck: Bool = true
    ) {
        self.vrf = vrf
        self.nodeID = nodeID
        self.peerName = peerName
        self.source = source
        self.peerAddress = peerAddress
        self.peerPort = peerPort
        self.listenPort = listenPort
        self.peerIdentity = peerIdentity
        self.connections = connections
        self.heartbeatInterval = heartbeatInterval
        self.deadInterval = deadInterval
        self.queueLimit = queueLimit
        self.syncSettings = syncSettings
        self.rulesetCheck = rulesetCheck
    }

    /// SHA-256 over the canonical `key=value\n` lines of `syncSettings`, sorted by key.
    public var fingerprint: [UInt8] { Self.fingerprint(syncSettings) }

    /// The sync-relevant settings as a hello or ack of protocol `version` carries them: before
    /// version 3, without the keys version 3 added (`SettingsDrift.sinceVersion3`), so that an
    /// older peer, which does not have them, sees no difference in them.
    public func syncSettings(forVersion version: UInt16) -> [SyncSettingPair] {
        guard version < SyncWire.rulesetVersion else { return syncSettings }
        return syncSettings.filter { !SettingsDrift.sinceVersion3.contains($0.key) }
    }

    /// The fingerprint of `syncSettings(forVersion:)`.
    public func fingerprint(forVersion version: UInt16) -> [UInt8] {
        Self.fingerprint(syncSettings(forVersion: version))
    }

    static func fingerprint(_ settings: [SyncSettingPair]) -> [UInt8] {
        let text = settings.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)\n" }.joined()
        return Array(SHA256.hash(data: Array(text.utf8)))
    }
}

public enum TLSMaterialError: Error, CustomStringConvertible {
    case unreadable(what: String, path: String, reason: String)
    case empty(what: String, path: String)
    case mismatch(certificate: String, key: String, reason: String)

    public var description: String {
        switch self {
        case .unreadable(let what, let path, let reason): "cannot load the \(what) from \(path): \(reason)"
        case .empty(let what, let path): "\(path) holds no \(what)"
        case .mismatch(let certificate, let key, let reason):
            "the key \(key) does not go with the certificate \(certificate) (\(reason)); issue both with `keepstate pki issue`"
        }
    }
}

/// The node's TLS identity and the CA it trusts, ready for both the listener and the clients.
/// TLS 1.3 only; both sides present and verify certificates.
public struct TLSMaterial: Sendable {
    let serverContext: NIOSSLContext
    let clientContext: NIOSSLContext

    public init(caPath: String, certificatePath: String, keyPath: String) throws {
        func load<T>(_ what: String, _ path: String, _ body: () throws -> T) throws -> T {
            do { return try body() } catch {
                throw TLSMaterialError.unreadable(what: what, path: path, reason: "\(error)")
            }
        }
        let ca = try load("CA certificate", caPath) { try NIOSSLCertificate.fromPEMFile(caPath) }
        guard !ca.isEmpty else { throw TLSMaterialError.empty(what: "CA certificate", path: caPath) }
        let chain = try load("certificate", certificatePath) { try NIOSSLCertificate.fromPEMFile(certificatePath) }
        guard !chain.isEmpty else { throw TLSMaterialError.empty(what: "certificate", path: certificatePath) }
        let key = try load("private key", keyPath) { try NIOSSLPrivateKey(file: keyPath, format: .pem) }
        do {
            try self.init(ca: ca, chain: chain, key: key)
        } catch {
            throw TLSMaterialError.mismatch(certificate: certificatePath, key: keyPath, reason: "\(error)")
        }
    }

    /// From PEM text (tests, and `keepstate pki` output held in memory).
    public init(caPEM: String, certificatePEM: String, keyPEM: String) throws {
        let ca = try NIOSSLCertificate.fromPEMBytes(Array(caPEM.utf8))
        let chain = try NIOSSLCertificate.fromPEMBytes(Array(certificatePEM.utf8))
        let key = try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)
        try self.init(ca: ca, chain: chain, key: key)
    }

    init(ca: [NIOSSLCertificate], chain: [NIOSSLCertificate], key: NIOSSLPrivateKey) throws {
        var server = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        server.minimumTLSVersion = .tlsv13
        server.trustRoots = .certificates(ca)
        // The chain is verified against the CA; the name is checked against the configured
        // peer once the hello says which VRF the connection serves.
        server.certificateVerification = .noHostnameVerification
        var client = TLSConfiguration.makeClientConfiguration()
        client.minimumTLSVersion = .tlsv13
        client.trustRoots = .certificates(ca)
        client.certificateChain = chain.map { .certificate($0) }
        client.privateKey = .privateKey(key)
        client.certificateVerification = .noHostnameVerification
        serverContext = try NIOSSLContext(configuration: server)
        clientContext = try NIOSSLContext(configuration: client)
    }
}

/// Whether a peer's certificate names the configured peer.
enum PeerIdentity {
    /// nil when the certificate carries DNS name `identity` or IP address `address`; otherwise
    /// why not, for the log.
    static func mismatch(certificate: NIOSSLCertificate?, identity: String, address: String) -> String? {
        guard let certificate else { return "the peer presented no certificate" }
        let names: (dns: [String], ip: [String])
        do {
            names = try PKI.subjectAltNames(der: try certificate.toDERBytes())
        } catch {
            return "the peer's certificate cannot be parsed: \(error)"
        }
        if names.dns.contains(where: { $0.lowercased() == identity.lowercased() }) { return nil }
        let wanted = PKI.addressBytes(address)
        if let wanted, names.ip.contains(where: { PKI.addressBytes($0) == wanted }) { return nil }
        let carried = (names.dns.map { "DNS:\($0)" } + names.ip.map { "IP:\($0)" }).joined(separator: ", ")
        return "the peer's certificate names \(carried.isEmpty ? "nothing" : carried), not DNS:\(identity) or IP:\(address)"
    }

    static func sameAddress(_ a: String, _ b: String) -> Bool {
        guard let x = PKI.addressBytes(a), let y = PKI.addressBytes(b) else { return a == b }
        return x == y
    }
}
