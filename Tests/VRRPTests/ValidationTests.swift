import Testing
import VRRP

let v2Header = VRRPIPHeaderInfo(source: ip("10.0.0.254"), destination: vrrpGroupV4, ttlOrHopLimit: 255)
let v3V4Header = VRRPIPHeaderInfo(source: ip("192.0.2.1"), destination: vrrpGroupV4, ttlOrHopLimit: 255)
let v3V6Header = VRRPIPHeaderInfo(source: ip("fe80::1"), destination: vrrpGroupV6, ttlOrHopLimit: 255)

let v2Expect = VRRPExpectations(version: .v2, vrid: 1, addresses: [ip("10.0.0.1"), ip("10.0.0.2")],
                                advertIntervalSeconds: 1, authentication: .password(Array("pw".utf8)))
let v3V4Expect = VRRPExpectations(version: .v3, vrid: 10, addresses: [ip("192.0.2.10")])
let v3V6Expect = VRRPExpectations(version: .v3, vrid: 20, addresses: [ip("2001:db8::10")])

/// Re-encodes a v2 packet after a change (checksum recomputed so the check under test is reached).
func v2Bytes(_ change: (inout VRRPPacket) -> Void) -> [UInt8] {
    var p = v2Packet
    change(&p)
    return p.encode(source: v2Header.source, destination: vrrpGroupV4)
}

func v3V4Bytes(_ mode: VRRPChecksumMode = .withPseudoHeader, _ change: (inout VRRPPacket) -> Void) -> [UInt8] {
    var p = v3V4Packet
    change(&p)
    return p.encode(source: v3V4Header.source, destination: vrrpGroupV4, checksumMode: mode)
}

@Suite struct ValidationTests {
    @Test func acceptsGoldenV2() throws {
        let r = try VRRPReceiver.validate(ipHeader: v2Header, message: goldenV2Pass, expectations: v2Expect).get()
        #expect(r.packet.vrid == 1)
        #expect(r.warnings == [])
        #expect(r.checksumMode == .messageOnly)
    }

    @Test func acceptsV3IPv4InBothChecksumFormsByDefault() throws {
        let a = try VRRPReceiver.validate(ipHeader: v3V4Header, message: goldenV3V4PseudoHeader, expectations: v3V4Expect).get()
        #expect(a.checksumMode == .withPseudoHeader)
        let b = try VRRPReceiver.validate(ipHeader: v3V4Header, message: goldenV3V4MessageOnly, expectations: v3V4Expect).get()
        #expect(b.checksumMode == .messageOnly)
    }

    @Test func checksumModesAreConfigurable() {
        var onlyRFC = v3V4Expect
        onlyRFC.acceptedChecksumModes = [.messageOnly]
        #expect(VRRPReceiver.validate(ipHeader: v3V4Header, message: goldenV3V4PseudoHeader, expectations: onlyRFC).failureValue
                == .badChecksum(received: 0x05f5))
        var onlyPseudo = v3V4Expect
        onlyPseudo.acceptedChecksumModes = [.withPseudoHeader]
        #expect(VRRPReceiver.validate(ipHeader: v3V4Header, message: goldenV3V4MessageOnly, expectations: onlyPseudo).failureValue
                == .badChecksum(received: 0xa885))
    }

    @Test func pseudoHeaderChecksumDependsOnTheIPSource() {
        let other = VRRPIPHeaderInfo(source: ip("192.0.2.2"), destination: vrrpGroupV4, ttlOrHopLimit: 255)
        var onlyPseudo = v3V4Expect
        onlyPseudo.acceptedChecksumModes = [.withPseudoHeader]
        #expect(VRRPReceiver.validate(ipHeader: other, message: goldenV3V4PseudoHeader, expectations: onlyPseudo).failureValue
                == .badChecksum(received: 0x05f5))
    }

    @Test func acceptsV3IPv6AndRejectsWrongPseudoHeader() {
        #expect(VRRPReceiver.validate(ipHeader: v3V6Header, message: goldenV3V6, expectations: v3V6Expect).successValue?.checksumMode
                == .withPseudoHeader)
        let other = VRRPIPHeaderInfo(source: ip("fe80::2"), destination: vrrpGroupV6, ttlOrHopLimit: 255)
        #expect(VRRPReceiver.validate(ipHeader: other, message: goldenV3V6, expectations: v3V6Expect).failureValue
                == .badChecksum(received: 0x0c9e))
    }

    @Test func ttlMustBe255() {
        for ttl: UInt8 in [0, 1, 64, 254] {
            let h = VRRPIPHeaderInfo(source: v2Header.source, destination: vrrpGroupV4, ttlOrHopLimit: ttl)
            #expect(VRRPReceiver.validate(ipHeader: h, message: goldenV2Pass, expectations: v2Expect).failureValue
                    == .ttlNot255(received: ttl))
        }
        let h6 = VRRPIPHeaderInfo(source: ip("fe80::1"), destination: vrrpGroupV6, ttlOrHopLimit: 64)
        #expect(VRRPReceiver.validate(ipHeader: h6, message: goldenV3V6, expectations: v3V6Expect).failureValue
                == .ttlNot255(received: 64))
        #expect(VRRPDrop.ttlNot255(received: 64).description.hasPrefix("TTL/hop limit 64, must be 255: the packet crossed a router"))
    }

    @Test func versionMustMatch() {
        var v3Expect = v2Expect
        v3Expect.version = .v3
        #expect(VRRPReceiver.validate(ipHeader: v2Header, message: goldenV2Pass, expectations: v3Expect).failureValue
                == .versionMismatch(received: 2, expected: 3))
        var b = goldenV2Pass
        b[0] = 0x11
        #expect(VRRPReceiver.validate(ipHeader: v2Header, message: b, expectations: v2Expect).failureValue == .unknownVersion(1))
    }

    @Test func v2OverIPv6IsRejected() {
        let e = VRRPExpectations(version: .v2, vrid: 20, addresses: [ip("2001:db8::10")])
        var b = goldenV3V6
        b[0] = 0x21
        #expect(VRRPReceiver.validate(ipHeader: v3V6Header, message: b, expectations: e).failureValue == .versionFamilyMismatch)
    }

    @Test func familyMustMatchTheConfiguredAddresses() {
        #expect(VRRPReceiver.validate(ipHeader: v3V6Header, message: goldenV3V6, expectations: v3V4Expect).failureValue
                == .addressFamilyMismatch)
    }

    @Test func typeMustBeOne() {
        for t: UInt8 in [0, 2, 15] {
            let b = v2Bytes { $0.type = t }
            #expect(VRRPReceiver.validate(ipHeader: v2Header, message: b, expectations: v2Expect).failureValue == .invalidType(t))
        }
    }

    @Test func everyTruncationIsRejectedByValidate() {
        let cases: [(VRRPIPHeaderInfo, [UInt8], VRRPExpectations)] = [
            (v2Header, goldenV2Pass, v2Expect), (v3V4Header, goldenV3V4PseudoHeader, v3V4Expect),
            (v3V4Header, goldenV3V4MessageOnly, v3V4Expect), (v3V6Header, goldenV3V6, v3V6Expect),
        ]
        for (h, golden, e) in cases {
            for n in 0..<golden.count {
                let r = VRRPReceiver.validate(ipHeader: h, message: Array(golden.prefix(n)), expectations: e)
                #expect(r.failureValue == .truncated(length: n, required: n < 8 ? 8 : golden.count))
            }
        }
    }

    @Test func countCoveringMoreAddressesThanPresentIsTruncated() {
        var b = goldenV3V4MessageOnly
        b[3] = 2
        #expect(VRRPReceiver.validate(ipHeader: v3V4Header, message: b, expectations: v3V4Expect).failureValue
                == .truncated(length: 12, required: 16))
    }

    @Test func corruptedChecksumIsRejected() {
        var b = goldenV2Pass
        b[2] = 199
        #expect(VRRPReceiver.validate(ipHeader: v2Header, message: b, expectations: v2Expect).failureValue
                == .badChecksum(received: 0x9180))
    }

    @Test func otherVRIDIsCountedSeparately() {
        var e = v2Expect
        e.vrid = 7
        #expect(VRRPReceiver.validate(ipHeader: v2Header, message: goldenV2Pass, expectations: e).failureValue
                == .vridMismatch(received: 1, local: 7))
    }

    @Test func v3AddressCountZeroIsInvalid() {
        let b = v3V4Bytes { $0.addresses = [] }
        #expect(VRRPReceiver.validate(ipHeader: v3V4Header, message: b, expectations: v3V4Expect).failureValue == .addressCountZero)
    }

    @Test func v3MaxAdvertIntervalZeroIsInvalid() {
        let b = v3V4Bytes { $0.advertInterval = 0 }
        #expect(VRRPReceiver.validate(ipHeader: v3V4Header, message: b, expectations: v3V4Expect).failureValue == .maxAdvertIntervalZero)
    }

    @Test func v3AddressMismatchIsOnlyAWarning() throws {
        let b = v3V4Bytes { $0.addresses = [ip("192.0.2.99")] }
        let r = try VRRPReceiver.validate(ipHeader: v3V4Header, message: b, expectations: v3V4Expect).get()
        #expect(r.warnings == [.addressListMismatch(received: [ip("192.0.2.99")], configured: [ip("192.0.2.10")])])
    }

    @Test func v3IntervalDifferenceIsAccepted() throws {
        let b = v3V4Bytes { $0.advertInterval = 300 }
        #expect(try VRRPReceiver.validate(ipHeader: v3V4Header, message: b, expectations: v3V4Expect).get().packet.advertInterval == 300)
    }

    @Test func v2AdvertIntervalMustMatch() {
        let b = v2Bytes { $0.advertInterval = 3 }
        #expect(VRRPReceiver.validate(ipHeader: v2Header, message: b, expectations: v2Expect).failureValue
                == .advertIntervalMismatch(received: 3, local: 1))
    }

    @Test func v2AuthTypeMustMatch() {
        let none = v2Bytes { $0.authType = 0; $0.authData = [0, 0, 0, 0, 0, 0, 0, 0] }
        #expect(VRRPReceiver.validate(ipHeader: v2Header, message: none, expectations: v2Expect).failureValue
                == .authTypeMismatch(received: 0, local: 1))
        var noAuth = v2Expect
        noAuth.authentication = .none
        #expect(VRRPReceiver.validate(ipHeader: v2Header, message: goldenV2Pass, expectations: noAuth).failureValue
                == .authTypeMismatch(received: 1, local: 0))
        #expect(VRRPReceiver.validate(ipHeader: v2Header, message: none, expectations: noAuth).successValue != nil)
    }

    @Test func v2AuthenticationHeaderIsRejected() {
        let ah = v2Bytes { $0.authType = 2 }
        #expect(VRRPReceiver.validate(ipHeader: v2Header, message: ah, expectations: v2Expect).failureValue == .authHeaderUnsupported)
    }

    @Test func v2PasswordMustMatch() {
        var e = v2Expect
        e.authentication = .password(Array("px".utf8))
        #expect(VRRPReceiver.validate(ipHeader: v2Header, message: goldenV2Pass, expectations: e).failureValue == .passwordMismatch)
    }

    @Test func v2AddressMismatchDropsUnlessOwnerIsInvolved() throws {
        let b = v2Bytes { $0.addresses = [ip("10.0.0.1")] }
        #expect(VRRPReceiver.validate(ipHeader: v2Header, message: b, expectations: v2Expect).failureValue
                == .addressListMismatch(received: [ip("10.0.0.1")], configured: [ip("10.0.0.1"), ip("10.0.0.2")]))
        // Sent by the owner: processed, with a warning.
        let owner = v2Bytes { $0.addresses = [ip("10.0.0.1")]; $0.priority = 255 }
        let r = try VRRPReceiver.validate(ipHeader: v2Header, message: owner, expectations: v2Expect).get()
        #expect(r.warnings == [.addressListMismatch(received: [ip("10.0.0.1")], configured: [ip("10.0.0.1"), ip("10.0.0.2")])])
        // Local router is the owner: processed, with warnings.
        var e = v2Expect
        e.localIsOwner = true
        let r2 = try VRRPReceiver.validate(ipHeader: v2Header, message: b, expectations: e).get()
        #expect(r2.warnings == [.receivedByOwner,
                                .addressListMismatch(received: [ip("10.0.0.1")], configured: [ip("10.0.0.1"), ip("10.0.0.2")])])
    }

    @Test func addressOrderDoesNotMatter() {
        let b = v2Bytes { $0.addresses = [ip("10.0.0.2"), ip("10.0.0.1")] }
        #expect(VRRPReceiver.validate(ipHeader: v2Header, message: b, expectations: v2Expect).successValue?.warnings == [])
    }

    @Test func dropDescriptionsAreReadable() {
        #expect(VRRPDrop.badChecksum(received: 0x05f5).description.hasPrefix("checksum 0x05f5 is wrong"))
        #expect(VRRPDrop.vridMismatch(received: 1, local: 7).description
                == "advert for VRID 1, this instance is VRID 7: another virtual router on the link")
    }
}
