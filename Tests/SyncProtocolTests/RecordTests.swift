import ConntrackModel
import NIOCore
import SyncProtocol
import Testing

@Suite struct RecordTests {
    static let protocols: [(IPProtocolNumber, AddressFamily)] = [
        (.tcp, .ipv4), (.tcp, .ipv6), (.udp, .ipv4), (.udp, .ipv6), (.icmp, .ipv4), (.icmpv6, .ipv6),
        (.gre, .ipv4), (.gre, .ipv6), (.sctp, .ipv4), (IPProtocolNumber(rawValue: 0), .ipv4),
    ]

    /// Every combination of family, protocol, NAT, mark and zone.
    static let matrix: [Conntrack] = {
        var out: [Conntrack] = []
        for (proto, family) in protocols {
            for nat in [false, true] {
                for mark: UInt32 in [0, 0x100, .max] {
                    for zone: UInt16 in [0, 1, .max] {
                        let original: ConntrackTuple
                        if family == .ipv4 {
                            original = ConntrackTuple(source: ip4(100, 64, 1, 2), destination: ip4(198, 51, 100, 9), sourcePort: 51000, destinationPort: proto.isICMP ? 0x0800 : 53)
                        } else {
                            original = ConntrackTuple(source: ip6("2001:db8::1"), destination: ip6("2001:db8:ffff::ff"), sourcePort: 51000, destinationPort: proto.isICMP ? 0x8000 : 53)
                        }
                        var reply = original.inverted
                        if nat {
                            reply.destination = family == .ipv4 ? ip4(203, 0, 113, 5) : ip6("2001:db8:1::5")
                            reply.destinationPort = 20002
                        }
                        out.append(Conntrack(
                            family: family, proto: proto, original: original, reply: reply,
                            tcpState: proto == .tcp ? .established : .none, status: [.seenReply, .confirmed],
                            timeout: 120, mark: mark, zone: zone))
                    }
                }
            }
        }
        return out
    }()

    @Test func upsertAndDeleteRoundTripMatrix() throws {
        for c in Self.matrix {
            let payload = encode([.upsert(c), .delete(c.key)])
            #expect(try decodeAll(payload) == [.upsert(c), .delete(c.key)], "\(c)")
        }
    }

    @Test func allTCPStatesRoundTrip() throws {
        for state in TCPState.allCases {
            var c = goldenSNAT
            c.tcpState = state
            #expect(try decodeAll(encode([.upsert(c)])) == [.upsert(c)])
        }
    }

    @Test(arguments: [UInt32(0), 1, 0x7F, 0x80, 0x3FFF, 0x4000, 0x1F_FFFF, 0x20_0000, 0x0FFF_FFFF, 0x1000_0000, .max])
    func varintBoundaries(value: UInt32) throws {
        var c = goldenSNAT
        c.timeout = value
        c.status = ConntrackStatus(rawValue: value)
        let payload = encode([.upsert(c)])
        let varintLength = value < 1 << 7 ? 1 : value < 1 << 14 ? 2 : value < 1 << 21 ? 3 : value < 1 << 28 ? 4 : 5
        #expect(payload.readableBytes == 2 + 24 + 1 + 2 * varintLength)
        #expect(try decodeAll(payload) == [.upsert(c)])
    }

    @Test func largestRecordHasTheDocumentedLength() throws {
        let c = Conntrack(
            family: .ipv6, proto: .tcp,
            original: ConntrackTuple(source: IPAddressBits(high: .max, low: .max), destination: IPAddressBits(high: 1, low: 2), sourcePort: .max, destinationPort: 1),
            reply: ConntrackTuple(source: IPAddressBits(high: 3, low: 4), destination: IPAddressBits(high: 5, low: 6), sourcePort: 7, destinationPort: .max),
            tcpState: .synSent2, status: ConntrackStatus(rawValue: .max), timeout: .max, mark: .max, zone: .max)
        var b = ByteBuffer()
        let record = ConntrackRecord(.upsert(c), activityAgeMilliseconds: .max)
        #expect(b.writeConntrackRecord(record) == 96)
        #expect(RecordCodec.maximumRecordLength == 96)
        #expect(b.readableBytes == 96)
        var decoded: [ConntrackRecord] = []
        try b.readConntrackRecords(into: &decoded)
        #expect(decoded == [record])
    }

    // MARK: Activity age (version 2)

    /// A forced synchronization's upsert: bit 5, then the age in milliseconds after the mark.
    @Test func activityAgeGolden() throws {
        var b = ByteBuffer()
        let n = b.writeConntrackRecord(ConntrackRecord(.upsert(goldenSNAT), activityAgeMilliseconds: 1500))
        #expect(hex(b) == "24" + "06"
            + "64400001" + "c6336407" + "9c40" + "01bb" + "c6336407" + "cb007105" + "01bb" + "4e21"
            + "03" + "9e03" + "80af1a"
            + "dc0b")                                     // 1500 ms
        #expect(n == 34)
        var records: [ConntrackRecord] = []
        try b.readConntrackRecords(into: &records)
        #expect(records == [ConntrackRecord(.upsert(goldenSNAT), activityAgeMilliseconds: 1500)])
    }

    @Test(arguments: [UInt32(0), 1, 300, 0x7F, 0x80, 86_400_000, .max])
    func activityAgeRoundTrip(age: UInt32) throws {
        for c in Self.matrix.prefix(24) {
            var b = ByteBuffer()
            let records = [ConntrackRecord(.upsert(c), activityAgeMilliseconds: age), ConntrackRecord(.upsert(c)),
                           ConntrackRecord(.delete(c.key))]
            for r in records { b.writeConntrackRecord(r) }
            var out: [ConntrackRecord] = []
            try b.readConntrackRecords(into: &out)
            #expect(out == records)
            // The update-only reader drops the age.
            #expect(try decodeAll(encodeRecords(records)) == records.map(\.update))
        }
    }

    @Test func activityAgeEncodedFromAnInstant() {
        let now = NIODeadline.uptimeNanoseconds(10_000_000_000)
        let u = OutgoingUpdate(.upsert(goldenSNAT), activity: now - .milliseconds(2_345))
        #expect(u.record(at: now).activityAgeMilliseconds == 2_345)
        // Never negative; a delete never carries one; no stamp, no age.
        #expect(OutgoingUpdate(.upsert(goldenSNAT), activity: now + .seconds(1)).record(at: now).activityAgeMilliseconds == 0)
        #expect(OutgoingUpdate(.delete(goldenSNAT.key), activity: now).record(at: now).activityAgeMilliseconds == nil)
        #expect(OutgoingUpdate(.upsert(goldenSNAT)).record(at: now).activityAgeMilliseconds == nil)
        // Saturates instead of wrapping.
        #expect(OutgoingUpdate(.upsert(goldenSNAT), activity: .uptimeNanoseconds(0)).record(at: .uptimeNanoseconds(.max))
            .activityAgeMilliseconds == .max)
    }

    @Test func activityAgeTruncatedOrOverlong() {
        let head = "20" + "11" + "64400001c63364079c4001bb" + "00" + "00"
        #expect(caught { try decodeAll(buffer(hex: head)) } == .truncated(what: "activity age", needed: 1))
        #expect(caught { try decodeAll(buffer(hex: head + "80")) } == .truncated(what: "activity age", needed: 1))
        #expect(rejectAfterGoodRecord(head + "8080808080")
            == .invalidField(field: "activity age", reason: "varint longer than 5 bytes"))
    }

    @Test func randomRecordsRoundTrip() throws {
        var rng = TestRNG(seed: 7)
        for _ in 0..<200 {
            let updates = (0..<Int(rng.next() % 50)).map { _ in randomUpdate(&rng) }
            var b = ByteBuffer()
            var written = 0
            for u in updates { written += b.writeConntrackUpdate(u) }
            #expect(written == b.readableBytes)
            #expect(try decodeAll(b) == updates)
        }
    }

    /// A non-TCP conntrack does not carry a TCP state: it decodes as `.none`.
    @Test func tcpStateOnlyForTCP() throws {
        var c = Self.matrix.first { $0.proto == .udp }!
        c.tcpState = .established
        var expected = c
        expected.tcpState = .none
        #expect(try decodeAll(encode([.upsert(c)])) == [.upsert(expected)])
    }

    // MARK: Golden bytes

    @Test func ipv4TCPSourceNATUpsertGolden() {
        var b = ByteBuffer()
        let n = b.writeConntrackUpdate(.upsert(goldenSNAT))
        let expected = "04" + "06"
            + "64400001" + "c6336407" + "9c40" + "01bb"   // 100.64.0.1:40000 -> 198.51.100.7:443
            + "c6336407" + "cb007105" + "01bb" + "4e21"   // 198.51.100.7:443 -> 203.0.113.5:20001
            + "03"                                        // ESTABLISHED
            + "9e03"                                      // status 0x19e
            + "80af1a"                                    // timeout 432000
        #expect(hex(b) == expected)
        #expect(n == 32)
        #expect(n <= 48)
    }

    @Test func deleteGolden() {
        var b = ByteBuffer()
        #expect(b.writeConntrackUpdate(.delete(goldenSNAT.key)) == 14)
        #expect(hex(b) == "0206" + "64400001c63364079c4001bb")
        b.clear()
        var k = goldenSNAT.key
        k.zone = 0x0102
        b.writeConntrackUpdate(.delete(k))
        #expect(hex(b) == "1206" + "64400001c63364079c4001bb" + "0102")
    }

    @Test func ipv6UDPMarkZoneGolden() {
        let c = Conntrack(
            family: .ipv6, proto: .udp,
            original: ConntrackTuple(source: ip6("2001:db8::1"), destination: ip6("2001:db8::2"), sourcePort: 5353, destinationPort: 53),
            status: [.seenReply, .confirmed], timeout: 30, mark: 0xA0B0C0D0, zone: 7)
        var b = ByteBuffer()
        b.writeConntrackUpdate(.upsert(c))
        #expect(hex(b) == "19" + "11"
            + "20010db8000000000000000000000001" + "20010db8000000000000000000000002" + "14e9" + "0035"
            + "0007" + "0a" + "1e" + "a0b0c0d0")
    }

    // MARK: Hostile records

    @Test func everyTruncationThrowsAndLeavesStateUntouched() throws {
        var rng = TestRNG(seed: 11)
        var updates: [ConntrackUpdate] = [.upsert(goldenSNAT), .delete(goldenSNAT.key)]
        updates += Self.matrix.prefix(8).map { .upsert($0) }
        updates += (0..<20).map { _ in randomUpdate(&rng) }
        var boundaries: Set<Int> = [0]
        var full = ByteBuffer()
        for u in updates {
            full.writeConntrackUpdate(u)
            boundaries.insert(full.readableBytes)
        }
        let sentinel = ConntrackUpdate.delete(Self.matrix[0].key)
        for n in 0..<full.readableBytes {
            var prefix = ByteBuffer()
            prefix.writeBytes([0xEE, 0xEE])   // a consumed area, so that the reader index is not zero
            prefix.moveReaderIndex(forwardBy: 2)
            prefix.writeBytes(full.readableBytesView.prefix(n))
            var into = [sentinel]
            let e = caught { try prefix.readConntrackUpdates(into: &into) }
            if boundaries.contains(n) {
                #expect(e == nil, "prefix \(n)")
                #expect(prefix.readableBytes == 0)
                #expect(into == [sentinel] + updates.prefix(updatesBefore(n, boundaries: boundaries)))
            } else {
                #expect(isTruncated(e), "prefix \(n): \(String(describing: e))")
                #expect(into == [sentinel])
                #expect(prefix.readerIndex == 2)
                #expect(prefix.readableBytes == n)
            }
        }
    }

    /// How many whole records a prefix of `n` bytes holds.
    private func updatesBefore(_ n: Int, boundaries: Set<Int>) -> Int {
        boundaries.filter { $0 <= n && $0 > 0 }.count
    }

    /// A payload of one good record followed by `bad`; the error, and that nothing changed.
    private func rejectAfterGoodRecord(_ bad: String) -> SyncProtocolError? {
        var b = ByteBuffer()
        b.writeConntrackUpdate(.upsert(goldenSNAT))
        b.writeBytes(buffer(hex: bad).readableBytesView)
        let before = b.readableBytes
        var into: [ConntrackUpdate] = []
        let e = caught { try b.readConntrackUpdates(into: &into) }
        #expect(into.isEmpty)
        #expect(b.readableBytes == before)
        return e
    }

    @Test(arguments: [UInt8(0x40), 0x80, 0xC0, 0xE0, 0xFF])
    func unknownFlagBits(flags: UInt8) {
        let e = rejectAfterGoodRecord(hex([flags]) + "06" + "64400001c63364079c4001bb" + "03" + "00" + "00")
        #expect(e == .invalidField(field: "record flags", reason: "unknown bits 0x\(String(flags & 0xC0, radix: 16))"))
    }

    @Test func deleteWithReplyMarkOrAge() {
        let tuple = "64400001c63364079c4001bb"
        let reason = "a delete carries no reply tuple, mark or activity age"
        #expect(rejectAfterGoodRecord("06" + "06" + tuple) == .invalidField(field: "record flags", reason: reason))
        #expect(rejectAfterGoodRecord("0a" + "11" + tuple) == .invalidField(field: "record flags", reason: reason))
        #expect(rejectAfterGoodRecord("1e" + "11" + tuple + "0001") == .invalidField(field: "record flags", reason: reason))
        #expect(rejectAfterGoodRecord("22" + "11" + tuple + "05") == .invalidField(field: "record flags", reason: reason))
    }

    @Test(arguments: [UInt8(10), 11, 0x80, 0xFF])
    func tcpStateOutOfRange(state: UInt8) {
        let e = rejectAfterGoodRecord("00" + "06" + "64400001c63364079c4001bb" + hex([state]) + "00" + "00")
        #expect(e == .invalidField(field: "tcp state", reason: "\(state) is not a TCP conntrack state"))
    }

    @Test func overlongVarints() {
        let head = "00" + "11" + "64400001c63364079c4001bb"
        #expect(rejectAfterGoodRecord(head + "8080808080" + "00" + "00")
            == .invalidField(field: "status", reason: "varint longer than 5 bytes"))
        #expect(rejectAfterGoodRecord(head + "00" + "ffffffff8f01")
            == .invalidField(field: "timeout", reason: "varint longer than 5 bytes"))
        // Five bytes, but more than 32 bits.
        #expect(rejectAfterGoodRecord(head + "ffffffff1f" + "00")
            == .invalidField(field: "status", reason: "varint 8589934591 exceeds 32 bits"))
        #expect(rejectAfterGoodRecord(head + "00" + "8080808010")
            == .invalidField(field: "timeout", reason: "varint 4294967296 exceeds 32 bits"))
        // The largest legal five-byte value.
        #expect(rejectAfterGoodRecord(head + "ffffffff0f" + "00" + "ff") != nil) // trailing 0xff: flags with unknown bits
        var b = buffer(hex: head + "ffffffff0f" + "00")
        var into: [ConntrackUpdate] = []
        #expect(caught { try b.readConntrackUpdates(into: &into) } == nil)
        guard case .upsert(let c) = into.first else {
            Issue.record("no upsert")
            return
        }
        #expect(c.status.rawValue == .max)
        #expect(c.timeout == 0)
    }

    @Test func truncatedFieldsNameTheirField() {
        #expect(caught { try decodeAll(buffer(hex: "00")) } == .truncated(what: "record protocol", needed: 1))
        #expect(caught { try decodeAll(buffer(hex: "0011" + "644000")) } == .truncated(what: "tuple", needed: 9))
        #expect(caught { try decodeAll(buffer(hex: "0111" + "00")) } == .truncated(what: "tuple", needed: 35))
        #expect(caught { try decodeAll(buffer(hex: "1211" + "64400001c63364079c4001bb" + "01")) } == .truncated(what: "zone", needed: 1))
        #expect(caught { try decodeAll(buffer(hex: "0006" + "64400001c63364079c4001bb")) } == .truncated(what: "tcp state", needed: 1))
        #expect(caught { try decodeAll(buffer(hex: "0011" + "64400001c63364079c4001bb" + "80")) } == .truncated(what: "status", needed: 1))
        #expect(caught { try decodeAll(buffer(hex: "0811" + "64400001c63364079c4001bb" + "0000" + "0102")) } == .truncated(what: "mark", needed: 2))
    }

    @Test func emptyPayloadDecodesToNothing() throws {
        var b = ByteBuffer()
        var into = [ConntrackUpdate.delete(goldenSNAT.key)]
        try b.readConntrackUpdates(into: &into)
        #expect(into == [.delete(goldenSNAT.key)])
    }
}
