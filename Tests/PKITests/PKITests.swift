import Foundation
import PKI
import Testing
import X509

@Suite("PKI")
struct PKITests {
    @Test("a node certificate is signed by the CA and names the node and its addresses")
    func issueNode() throws {
        let ca = try PKI.makeCA(commonName: "unit CA")
        let node = try PKI.issue(name: "ha1", addresses: ["10.150.0.1", "2001:db8::1"], ca: ca)
        let caCert = try Certificate(pemEncoded: ca.certificate)
        let cert = try Certificate(pemEncoded: node.certificate)
        #expect(cert.issuer == caCert.subject)
        #expect(caCert.publicKey.isValidSignature(cert.signature, for: cert))
        let other = try Certificate(pemEncoded: try PKI.makeCA().certificate)
        #expect(!other.publicKey.isValidSignature(cert.signature, for: cert))
        let der = try cert.serializeAsPEM().derBytes
        let names = try PKI.subjectAltNames(der: der)
        #expect(names.dns == ["ha1"])
        #expect(names.ip == ["10.150.0.1", "2001:db8::1"])
        #expect(try caCert.extensions.basicConstraints == .isCertificateAuthority(maxPathLength: 0))
        #expect(try cert.extensions.basicConstraints == .notCertificateAuthority)
        #expect(cert.notValidAfter > Date().addingTimeInterval(800 * 86400))
    }

    @Test("bad names, bad addresses and a bad CA are refused with a reason")
    func refusals() throws {
        let ca = try PKI.makeCA()
        #expect(throws: PKIError.badName("ha 1")) { try PKI.issue(name: "ha 1", addresses: [], ca: ca) }
        #expect(throws: PKIError.badName("")) { try PKI.issue(name: "", addresses: [], ca: ca) }
        #expect(throws: PKIError.badAddress("10.0.0.256")) { try PKI.issue(name: "ha1", addresses: ["10.0.0.256"], ca: ca) }
        #expect(throws: PKIError.self) { try PKI.issue(name: "ha1", addresses: [], ca: PEMPair(certificate: "junk", privateKey: ca.privateKey)) }
        #expect(throws: PKIError.self) { try PKI.issue(name: "ha1", addresses: [], ca: PEMPair(certificate: ca.certificate, privateKey: "junk")) }
    }

    @Test("address text round trips through bytes")
    func addresses() {
        #expect(PKI.addressBytes("10.1.2.3") == [10, 1, 2, 3])
        #expect(PKI.addressText([10, 1, 2, 3]) == "10.1.2.3")
        #expect(PKI.addressText(PKI.addressBytes("2001:db8::1")!) == "2001:db8::1")
        #expect(PKI.addressBytes("ha1") == nil)
        #expect(PKI.addressText([1, 2, 3]) == "")
    }
}
