import Crypto
public import Foundation
import SwiftASN1
import X509

/// A certificate and its private key, both PEM.
public struct PEMPair: Sendable, Equatable {
    public var certificate: String
    public var privateKey: String
    public init(certificate: String, privateKey: String) {
        self.certificate = certificate
        self.privateKey = privateKey
    }
}

public enum PKIError: Error, CustomStringConvertible, Equatable {
    case badAddress(String)
    case badName(String)
    case unreadable(String, reason: String)

    public var description: String {
        switch self {
        case .badAddress(let a): "'\(a)' is not an IPv4 or IPv6 address"
        case .badName(let n): "'\(n)' is not a usable node name (letters, digits, '-', '.', '_'; 1 to 63 characters)"
        case .unreadable(let what, let reason): "cannot read \(what): \(reason)"
        }
    }
}

/// Makes the certificates of the sync connections: one CA per deployment, one certificate per
/// node naming it (DNS name = the node's identity) and its sync addresses (IP SANs).
/// Keys are ECDSA P-256; certificates are good for both TLS client and server use.
public enum PKI {
    public static func makeCA(commonName: String = "Keepstate sync CA", validDays: Int = 3650, now: Date = Date()) throws -> PEMPair {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName {
            OrganizationName("keepstate")
            CommonName(commonName)
        }
        let publicKey = Certificate.PublicKey(key.publicKey)
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
            Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            SubjectKeyIdentifier(hash: publicKey)
        }
        let cert = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-300),
            notValidAfter: now.addingTimeInterval(Double(validDays) * 86400),
            issuer: name,
            subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions,
            issuerPrivateKey: Certificate.PrivateKey(key))
        return PEMPair(certificate: try cert.serializeAsPEM().pemString, privateKey: key.pemRepresentation)
    }

    /// Issues a node certificate signed by `ca`.
    public static func issue(
        name: String, addresses: [String], ca: PEMPair, validDays: Int = 825, now: Date = Date()
    ) throws -> PEMPair {
        guard isValidNodeName(name) else { throw PKIError.badName(name) }
        let caCert: Certificate
        let caKey: P256.Signing.PrivateKey
        do {
            caCert = try Certificate(pemEncoded: ca.certificate)
        } catch {
            throw PKIError.unreadable("the CA certificate", reason: "\(error)")
        }
        do {
            caKey = try P256.Signing.PrivateKey(pemRepresentation: ca.privateKey)
        } catch {
            throw PKIError.unreadable("the CA key (ECDSA P-256 PEM expected)", reason: "\(error)")
        }
        var sans: [GeneralName] = [.dnsName(name)]
        for a in addresses {
            guard let bytes = addressBytes(a) else { throw PKIError.badAddress(a) }
            sans.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(bytes))))
        }
        let key = P256.Signing.PrivateKey()
        let publicKey = Certificate.PublicKey(key.publicKey)
        let subject = try DistinguishedName {
            OrganizationName("keepstate")
            CommonName(name)
        }
        let caSKI = try caCert.extensions.subjectKeyIdentifier
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            try ExtendedKeyUsage([.serverAuth, .clientAuth])
            SubjectAlternativeNames(sans)
            SubjectKeyIdentifier(hash: publicKey)
            if let ski = caSKI {
                AuthorityKeyIdentifier(keyIdentifier: ski.keyIdentifier)
            }
        }
        let cert = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-300),
            notValidAfter: now.addingTimeInterval(Double(validDays) * 86400),
            issuer: caCert.subject,
            subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions,
            issuerPrivateKey: Certificate.PrivateKey(caKey))
        return PEMPair(certificate: try cert.serializeAsPEM().pemString, privateKey: key.pemRepresentation)
    }

    public static func isValidNodeName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 63
            && name.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-._".unicodeScalars.contains($0)) }
    }

    /// The names a certificate (DER) carries in its subjectAltName: DNS names, and IP
    /// addresses as text.
    public static func subjectAltNames(der: [UInt8]) throws -> (dns: [String], ip: [String]) {
        let cert = try Certificate(derEncoded: der)
        var dns: [String] = []
        var ips: [String] = []
        if let sans = try cert.extensions.subjectAlternativeNames {
            for n in sans {
                switch n {
                case .dnsName(let d): dns.append(d)
                case .ipAddress(let o): ips.append(addressText(Array(o.bytes)))
                default: break
                }
            }
        }
        return (dns, ips)
    }

    /// Network-order bytes of an IPv4 or IPv6 address in text.
    public static func addressBytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }

    /// Canonical text of a 4- or 16-byte address ("" for another length).
    public static func addressText(_ bytes: [UInt8]) -> String {
        var buffer = [CChar](repeating: 0, count: 64)
        let family = bytes.count == 4 ? AF_INET : (bytes.count == 16 ? AF_INET6 : -1)
        guard family >= 0 else { return "" }
        let ok = bytes.withUnsafeBytes { src in
            inet_ntop(family, src.baseAddress, &buffer, socklen_t(buffer.count)) != nil
        }
        guard ok else { return "" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
