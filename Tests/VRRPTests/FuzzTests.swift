import Testing
import VRRP

@Suite struct FuzzTests {
    @Test func randomBytesNeverTrap() {
        var rng = SplitMix64(seed: 0x5652_5250)
        var accepted = 0
        let expectations = [v2Expect, v3V4Expect, v3V6Expect]
        let headers = [v2Header, v3V4Header, v3V6Header]
        for i in 0..<10_000 {
            let len = Int(rng.next() % 64)
            var bytes = (0..<len).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            if i % 2 == 0, !bytes.isEmpty { bytes[0] = (bytes[0] & 0x0F) | (i % 4 == 0 ? 0x20 : 0x30) }
            let k = i % 3
            let family: VRRPAddressFamily = k == 2 ? .ipv6 : .ipv4
            _ = try? VRRPPacket.decode(bytes, family: family)
            if case .success = VRRPReceiver.validate(ipHeader: headers[k], message: bytes, expectations: expectations[k]) {
                accepted += 1
            }
        }
        #expect(accepted == 0)
    }

    @Test func mutatedGoldenPacketsNeverTrap() {
        var rng = SplitMix64(seed: 42)
        let goldens: [([UInt8], VRRPIPHeaderInfo, VRRPExpectations)] = [
            (goldenV2Pass, v2Header, v2Expect), (goldenV3V4PseudoHeader, v3V4Header, v3V4Expect),
            (goldenV3V6, v3V6Header, v3V6Expect),
        ]
        for i in 0..<3_000 {
            let (golden, h, e) = goldens[i % 3]
            var b = golden
            let flips = 1 + Int(rng.next() % 3)
            for _ in 0..<flips {
                let pos = Int(rng.next() % UInt64(b.count))
                b[pos] ^= UInt8(truncatingIfNeeded: rng.next() | 1)
            }
            _ = VRRPReceiver.validate(ipHeader: h, message: b, expectations: e)
        }
    }
}
