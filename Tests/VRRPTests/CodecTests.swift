import Testing
import VRRP

// Golden bytes computed by an independent reference (RFC 1071 sum in Python), not by this codec.
let goldenV2Pass: [UInt8] = [
    0x21, 0x01, 0xc8, 0x02, 0x01, 0x01, 0x91, 0x80, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02,
    0x70, 0x77, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
]
let goldenV3V4PseudoHeader: [UInt8] = [0x31, 0x0a, 0x64, 0x01, 0x00, 0x64, 0x05, 0xf5, 0xc0, 0x00, 0x02, 0x0a]
let goldenV3V4MessageOnly: [UInt8] = [0x31, 0x0a, 0x64, 0x01, 0x00, 0x64, 0xa8, 0x85, 0xc0, 0x00, 0x02, 0x0a]
let goldenV3V6: [UInt8] = [
    0x31, 0x14, 0x96, 0x01, 0x00, 0x64, 0x0c, 0x9e, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
]

let v2Packet = VRRPPacket.v2(vrid: 1, priority: 200, advertIntervalSeconds: 1,
                             addresses: [ip("10.0.0.1"), ip("10.0.0.2")],
                             authentication: .password(Array("pw".utf8)))
let v3V4Packet = VRRPPacket.v3(vrid: 10, priority: 100, maxAdvertIntervalCentiseconds: 100,
                               family: .ipv4, addresses: [ip("192.0.2.10")])
let v3V6Packet = VRRPPacket.v3(vrid: 20, priority: 150, maxAdvertIntervalCentiseconds: 100,
                               family: .ipv6, addresses: [ip("2001:db8::10")])

@Suite struct CodecTests {
    @Test func encodeV2PasswordAdvert() {
        #expect(v2Packet.encode(source: ip("10.0.0.254"), destination: vrrpGroupV4) == goldenV2Pass)
    }

    @Test func encodeV3IPv4WithPseudoHeader() {
        #expect(v3V4Packet.encode(source: ip("192.0.2.1"), destination: vrrpGroupV4, checksumMode: .withPseudoHeader)
                == goldenV3V4PseudoHeader)
    }

    @Test func encodeV3IPv4MessageOnly() {
        #expect(v3V4Packet.encode(source: ip("192.0.2.1"), destination: vrrpGroupV4, checksumMode: .messageOnly)
                == goldenV3V4MessageOnly)
    }

    @Test func encodeV3IPv6AlwaysUsesPseudoHeader() {
        #expect(v3V6Packet.encode(source: ip("fe80::1"), destination: vrrpGroupV6) == goldenV3V6)
        #expect(v3V6Packet.encode(source: ip("fe80::1"), destination: vrrpGroupV6, checksumMode: .messageOnly) == goldenV3V6)
    }

    @Test func decodeV2FieldByField() throws {
        let p = try VRRPPacket.decode(goldenV2Pass, family: .ipv4)
        #expect(p.version == .v2)
        #expect(p.type == 1)
        #expect(p.vrid == 1)
        #expect(p.priority == 200)
        #expect(p.addressCount == 2)
        #expect(p.authType == 1)
        #expect(p.advertInterval == 1)
        #expect(p.checksum == 0x9180)
        #expect(p.addresses == [ip("10.0.0.1"), ip("10.0.0.2")])
        #expect(p.authData == [0x70, 0x77, 0, 0, 0, 0, 0, 0])
        var expected = v2Packet
        expected.checksum = 0x9180
        #expect(p == expected)
    }

    @Test func decodeV3IPv4AndIPv6() throws {
        let p4 = try VRRPPacket.decode(goldenV3V4PseudoHeader, family: .ipv4)
        var e4 = v3V4Packet
        e4.checksum = 0x05f5
        #expect(p4 == e4)
        let p6 = try VRRPPacket.decode(goldenV3V6, family: .ipv6)
        var e6 = v3V6Packet
        e6.checksum = 0x0c9e
        #expect(p6 == e6)
        #expect(p6.addresses == [ip("2001:db8::10")])
    }

    @Test func v3ReservedBitsAreSentAsZeroAndDecodedSeparately() throws {
        var p = v3V4Packet
        p.advertInterval = 0xF0FA  // rsvd bits set by the caller: masked on send
        let bytes = p.encode(source: ip("192.0.2.1"), destination: vrrpGroupV4)
        #expect(bytes[4] == 0x00)
        #expect(bytes[5] == 0xFA)
        var withReserved = goldenV3V4MessageOnly
        withReserved[4] = 0xA0
        let d = try VRRPPacket.decode(withReserved, family: .ipv4)
        #expect(d.reserved == 0xA)
        #expect(d.advertInterval == 100)
    }

    @Test func v3MaxAdvertIntervalUsesTwelveBits() throws {
        let p = VRRPPacket.v3(vrid: 1, priority: 1, maxAdvertIntervalCentiseconds: 4095, family: .ipv4, addresses: [ip("192.0.2.1")])
        let bytes = p.encode(source: ip("192.0.2.2"), destination: vrrpGroupV4)
        #expect(bytes[4] == 0x0F)
        #expect(bytes[5] == 0xFF)
        #expect(try VRRPPacket.decode(bytes, family: .ipv4).advertInterval == 4095)
    }

    @Test func passwordLongerThanEightBytesIsCut() {
        #expect(VRRPAuthentication.password(Array("0123456789".utf8)).authData == Array("01234567".utf8))
    }

    @Test func everyTruncationIsRejectedWithTypedReason() {
        let cases: [([UInt8], VRRPAddressFamily, Int)] = [
            (goldenV2Pass, .ipv4, 24), (goldenV3V4PseudoHeader, .ipv4, 12),
            (goldenV3V4MessageOnly, .ipv4, 12), (goldenV3V6, .ipv6, 24),
        ]
        for (golden, family, full) in cases {
            for n in 0..<golden.count {
                let required = n < 8 ? 8 : full
                #expect(throws: VRRPDrop.truncated(length: n, required: required)) {
                    try VRRPPacket.decode(Array(golden.prefix(n)), family: family)
                }
            }
        }
    }

    @Test func decodeUnknownVersionAndV2OverIPv6() {
        var b = goldenV2Pass
        b[0] = 0x41
        #expect(throws: VRRPDrop.unknownVersion(4)) { try VRRPPacket.decode(b, family: .ipv4) }
        #expect(throws: VRRPDrop.versionFamilyMismatch) { try VRRPPacket.decode(goldenV2Pass, family: .ipv6) }
    }

    @Test func trailingBytesAfterTheMessageAreIgnoredByDecode() throws {
        let p = try VRRPPacket.decode(goldenV3V4MessageOnly + [0, 0], family: .ipv4)
        #expect(p.addresses == [ip("192.0.2.10")])
    }

    @Test func addressParsingAndPrinting() {
        #expect(ip("192.0.2.1") == .v4(0xC000_0201))
        #expect(ip("2001:db8::10").description == "2001:db8::10")
        #expect(ip("fe80::9c25:f1ff:fe2b:3dfb").description == "fe80::9c25:f1ff:fe2b:3dfb")
        #expect(ip("::").description == "::")
        #expect(VRRPAddress("1.2.3") == nil)
        #expect(VRRPAddress("256.1.1.1") == nil)
        #expect(VRRPAddress("1::2::3") == nil)
        #expect(VRRPAddress(bytes: [1, 2, 3]) == nil)
        #expect(ip("192.0.2.2") > ip("192.0.2.1"))
        #expect(ip("fe80::2") > ip("fe80::1"))
        #expect(ip("8000::") > ip("7fff::ffff"))  // unsigned comparison
    }
}
