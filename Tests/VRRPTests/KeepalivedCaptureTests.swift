import Testing
import VRRP

// Captured from keepalived 2.2.7 (Debian 12) in a network namespace: veth0 192.0.2.1/24,
// link-local fe80::9c25:f1ff:fe2b:3dfb, priority 100, advert_int 1. IP TTL/hop limit was 255.
// vrid 51: version 2, auth_type PASS, auth_pass secret12, VIP 192.0.2.100
let kaV2Pass: [UInt8] = [0x21, 0x33, 0x64, 0x01, 0x01, 0x01, 0x49, 0xe7, 0xc0, 0x00, 0x02, 0x64,
                         0x73, 0x65, 0x63, 0x72, 0x65, 0x74, 0x31, 0x32]
let kaV2PassShutdown: [UInt8] = [0x21, 0x33, 0x00, 0x01, 0x01, 0x01, 0xad, 0xe7, 0xc0, 0x00, 0x02, 0x64,
                                 0x73, 0x65, 0x63, 0x72, 0x65, 0x74, 0x31, 0x32]
// vrid 52: version 3, IPv4, VIPs 192.0.2.101 and 192.0.2.102 (checksum with IPv4 pseudo-header)
let kaV3V4: [UInt8] = [0x31, 0x34, 0x64, 0x02, 0x00, 0x64, 0x43, 0x04, 0xc0, 0x00, 0x02, 0x65, 0xc0, 0x00, 0x02, 0x66]
let kaV3V4Shutdown: [UInt8] = [0x31, 0x34, 0x00, 0x02, 0x00, 0x64, 0xa7, 0x04, 0xc0, 0x00, 0x02, 0x65, 0xc0, 0x00, 0x02, 0x66]
// vrid 53: version 3, IPv6, VIP 2001:db8::100
let kaV3V6: [UInt8] = [0x31, 0x35, 0x64, 0x01, 0x00, 0x64, 0x73, 0x41, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
                       0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00]
let kaSource4 = ip("192.0.2.1")
let kaSource6 = ip("fe80::9c25:f1ff:fe2b:3dfb")

@Suite struct KeepalivedCaptureTests {
    let h4 = VRRPIPHeaderInfo(source: kaSource4, destination: vrrpGroupV4, ttlOrHopLimit: 255)
    let h6 = VRRPIPHeaderInfo(source: kaSource6, destination: vrrpGroupV6, ttlOrHopLimit: 255)

    @Test func v2PassAdvertValidatesAndReencodesIdentically() throws {
        let e = VRRPExpectations(version: .v2, vrid: 51, addresses: [ip("192.0.2.100")], advertIntervalSeconds: 1,
                                 authentication: .password(Array("secret12".utf8)))
        let r = try VRRPReceiver.validate(ipHeader: h4, message: kaV2Pass, expectations: e).get()
        #expect(r.packet.priority == 100)
        #expect(r.warnings == [])
        let mine = VRRPPacket.v2(vrid: 51, priority: 100, advertIntervalSeconds: 1, addresses: [ip("192.0.2.100")],
                                 authentication: .password(Array("secret12".utf8)))
        #expect(mine.encode(source: kaSource4, destination: vrrpGroupV4) == kaV2Pass)
        #expect(mine.with(priority: 0).encode(source: kaSource4, destination: vrrpGroupV4) == kaV2PassShutdown)
        #expect(try VRRPReceiver.validate(ipHeader: h4, message: kaV2PassShutdown, expectations: e).get().packet.priority == 0)
    }

    @Test func v3IPv4AdvertUsesPseudoHeaderChecksum() throws {
        let e = VRRPExpectations(version: .v3, vrid: 52, addresses: [ip("192.0.2.101"), ip("192.0.2.102")])
        let r = try VRRPReceiver.validate(ipHeader: h4, message: kaV3V4, expectations: e).get()
        #expect(r.checksumMode == .withPseudoHeader)
        var strict = e
        strict.acceptedChecksumModes = [.messageOnly]
        #expect(VRRPReceiver.validate(ipHeader: h4, message: kaV3V4, expectations: strict).failureValue == .badChecksum(received: 0x4304))
        let mine = VRRPPacket.v3(vrid: 52, priority: 100, maxAdvertIntervalCentiseconds: 100, family: .ipv4,
                                 addresses: [ip("192.0.2.101"), ip("192.0.2.102")])
        #expect(mine.encode(source: kaSource4, destination: vrrpGroupV4, checksumMode: .withPseudoHeader) == kaV3V4)
        #expect(mine.with(priority: 0).encode(source: kaSource4, destination: vrrpGroupV4) == kaV3V4Shutdown)
    }

    @Test func v3IPv6Advert() throws {
        let e = VRRPExpectations(version: .v3, vrid: 53, addresses: [ip("2001:db8::100")])
        let r = try VRRPReceiver.validate(ipHeader: h6, message: kaV3V6, expectations: e).get()
        #expect(r.packet.advertInterval == 100)
        let mine = VRRPPacket.v3(vrid: 53, priority: 100, maxAdvertIntervalCentiseconds: 100, family: .ipv6,
                                 addresses: [ip("2001:db8::100")])
        #expect(mine.encode(source: kaSource6, destination: vrrpGroupV6) == kaV3V6)
    }
}

extension VRRPPacket {
    func with(priority: UInt8) -> VRRPPacket {
        var p = self
        p.priority = priority
        return p
    }
}
