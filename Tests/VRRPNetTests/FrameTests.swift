import Testing
import VRRP
import VRRPNet

@Suite struct FrameTests {
    let mac: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02]

    @Test func gratuitousARPIsABroadcastRequestWithSenderEqualToTarget() {
        let f = VRRPAnnouncementFrame.gratuitousARP(address: ip("192.0.2.100"), mac: mac)
        let expected: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF] + mac + [0x08, 0x06]
            + [0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01] + mac + [192, 0, 2, 100]
            + [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF] + [192, 0, 2, 100]
        #expect(f.count == 60)
        #expect(Array(f.prefix(42)) == expected)
        #expect(f.suffix(18).allSatisfy { $0 == 0 })
    }

    @Test(arguments: [false, true])
    func unsolicitedNAHasOverrideFlagTargetOptionAndValidChecksum(router: Bool) {
        let vip = ip("2001:db8::100")
        let f = VRRPAnnouncementFrame.unsolicitedNA(address: vip, mac: mac, router: router)
        #expect(f.count == 14 + 40 + 32)
        #expect(Array(f[0..<6]) == [0x33, 0x33, 0, 0, 0, 1])
        #expect(Array(f[6..<12]) == mac)
        #expect(Array(f[12..<14]) == [0x86, 0xDD])
        let ip6 = Array(f[14..<54])
        #expect(ip6[0] == 0x60 && ip6[4] == 0 && ip6[5] == 32 && ip6[6] == 58 && ip6[7] == 255)
        #expect(Array(ip6[8..<24]) == vip.bytes)
        #expect(Array(ip6[24..<40]) == ip("ff02::1").bytes)
        let icmp = Array(f[54...])
        #expect(icmp[0] == 136 && icmp[1] == 0)
        #expect(icmp[4] == (router ? 0xA0 : 0x20))  // R (if router), not S, O
        #expect(Array(icmp[8..<24]) == vip.bytes)
        #expect(Array(icmp[24..<32]) == [2, 1] + mac)
        // The checksum over the ICMPv6 pseudo-header and the message verifies (sums to zero).
        let pseudo = vip.bytes + ip("ff02::1").bytes + [0, 0, 0, 32, 0, 0, 0, 58]
        #expect(VRRPChecksum.compute(message: icmp, pseudoHeader: pseudo) == 0)
    }

    @Test func ipv4HeaderIsSplitFromTheMessage() throws {
        let message: [UInt8] = [0x31, 0x33, 0x64, 0x01, 0x00, 0x0A, 0x00, 0x00, 192, 0, 2, 100]
        var header: [UInt8] = [0x45, 0, 0, UInt8(20 + message.count), 0, 0, 0, 0, 255, 112, 0, 0, 192, 0, 2, 1, 224, 0, 0, 18]
        let p = try VRRPIPv4Header.parse(header + message).get()
        #expect(p.header == VRRPIPHeaderInfo(source: ip("192.0.2.1"), destination: ip("224.0.0.18"), ttlOrHopLimit: 255))
        #expect(p.message == message)
        // IP options (IHL 6) are skipped; bytes after the total length are not part of the message.
        header[0] = 0x46
        header[3] = UInt8(24 + message.count)
        let withOptions = try VRRPIPv4Header.parse(header + [1, 1, 1, 0] + message + [0xEE, 0xEE]).get()
        #expect(withOptions.message == message)
    }

    @Test func brokenIPv4HeadersAreRejected() {
        #expect(VRRPIPv4Header.parse([0x45, 0, 0]).failure == .tooShort(3))
        var h: [UInt8] = [0x45, 0, 0, 40, 0, 0, 0, 0, 255, 112, 0, 0, 192, 0, 2, 1, 224, 0, 0, 18]
        #expect(VRRPIPv4Header.parse(h).failure == .badTotalLength(40, received: 20))
        h[0] = 0x65
        #expect(VRRPIPv4Header.parse(h).failure == .notIPv4(6))
        h[0] = 0x44
        #expect(VRRPIPv4Header.parse(h).failure == .badHeaderLength(16))
    }

    @Test func everyDropHasItsOwnCounterKey() {
        let drops: [VRRPDrop] = [
            .ttlNot255(received: 64), .unknownVersion(4), .versionMismatch(received: 2, expected: 3), .versionFamilyMismatch,
            .addressFamilyMismatch, .invalidType(2), .truncated(length: 3, required: 8), .badChecksum(received: 1),
            .vridMismatch(received: 1, local: 2), .addressCountZero, .maxAdvertIntervalZero,
            .advertIntervalMismatch(received: 2, local: 1), .authHeaderUnsupported, .authTypeMismatch(received: 1, local: 0),
            .passwordMismatch, .addressListMismatch(received: [], configured: []),
        ]
        let reasons = drops.map(VRRPDropReason.init)
        #expect(Set(reasons).count == drops.count)
        #expect(reasons.map(\.rawValue) == [
            "ttlNot255", "unknownVersion", "versionMismatch", "versionFamilyMismatch", "addressFamilyMismatch",
            "invalidType", "truncated", "badChecksum", "vridMismatch", "addressCountZero", "maxAdvertIntervalZero",
            "advertIntervalMismatch", "authHeaderUnsupported", "authTypeMismatch", "passwordMismatch", "addressListMismatch",
        ])
        #expect(Set(VRRPDropReason.allCases).subtracting(reasons) == [.malformedIPHeader, .notFromUnicastPeer])
    }

    @Test func rateLimiterLogsOncePerIntervalAndCountsWhatItHeldBack() {
        var l = VRRPLogRateLimiter(interval: .seconds(10))
        let t0 = VRRPInstant(nanoseconds: 1_000)
        #expect(l.admit("a", now: t0) == 0)
        #expect(l.admit("a", now: t0 + .seconds(1)) == nil)
        #expect(l.admit("b", now: t0 + .seconds(1)) == 0)
        #expect(l.admit("a", now: t0 + .seconds(9)) == nil)
        #expect(l.admit("a", now: t0 + .seconds(10)) == 2)
        #expect(l.admit("a", now: t0 + .seconds(11)) == nil)
    }

    @Test func gratuitousBurstsRoundRobinTheAddressesAtTheInterval() {
        var g = VRRPGratuitousConfiguration.keepalivedDefaults
        #expect(g.masterDelay == .seconds(5) && g.masterRepeat == 5 && g.masterRefresh == .zero
                && g.masterRefreshRepeat == 1 && g.interval == .zero)
        g.interval = .milliseconds(10)
        let plan = g.burst(addresses: [ip("192.0.2.1"), ip("192.0.2.2")], count: 2)
        #expect(plan.map(\.address) == [ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.1"), ip("192.0.2.2")])
        #expect(plan.map(\.offset) == [.zero, .milliseconds(10), .milliseconds(20), .milliseconds(30)])
        #expect(VRRPGratuitousConfiguration.minimal.burst(addresses: [ip("192.0.2.1")], count: 1).count == 1)
    }
}

extension Result {
    var failure: Failure? {
        if case .failure(let f) = self { return f }
        return nil
    }
}
