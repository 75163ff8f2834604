import ConntrackModel
import NIOCore
import SyncProtocol
import Testing

@Suite struct MessageTests {
    static let allMessages: [SyncControlMessage] = {
        var out: [SyncControlMessage] = [
            .hello(sampleHello),
            .hello(Hello(nodeID: "n", vrf: "v", connectionIndex: 0, connectionCount: 1, fingerprint: [], settings: [])),
            .hello(Hello(
                nodeID: String(repeating: "x", count: 255), vrf: "blue", connectionIndex: 63, connectionCount: 64,
                fingerprint: [UInt8](repeating: 0xFF, count: 255),
                settings: (0..<256).map { SyncSettingPair(key: "k\($0)", value: "") })),
            .resyncBegin(generation: 0),
            .resyncBegin(generation: .max),
            .resyncEnd(generation: 7, count: 0),
            .resyncEnd(generation: .max, count: .max),
            .heartbeat,
            .error(code: .gap, message: "sequence gap"),
            .error(code: SyncErrorCode(rawValue: 0xFFFF), message: ""),
        ]
        let statuses: [HelloAck.Status] = [
            .accepted, .acceptedWithDrift, .unsupportedVersion, .unknownVRF, .peerNotAllowed, .badConnectionIndex,
            HelloAck.Status(rawValue: 200),
        ]
        for s in statuses {
            out.append(.helloAck(HelloAck(
                status: s, version: 1, nodeID: "ha2", fingerprint: [1, 2, 3], settings: sampleSettings, message: "status \(s)")))
        }
        out.append(.helloAck(HelloAck(status: .unsupportedVersion, version: 9, nodeID: "", fingerprint: [], settings: [], message: "")))
        return out
    }()

    @Test(arguments: allMessages)
    func controlMessageRoundTrip(message: SyncControlMessage) throws {
        var wire = ByteBuffer()
        wire.writeSyncMessage(message, sequence: 0xDEAD_BEEF)
        let total = wire.readableBytes
        let frame = try #require(try wire.readSyncFrame())
        #expect(wire.readableBytes == 0)
        #expect(frame.type == message.type)
        #expect(frame.sequence == 0xDEAD_BEEF)
        #expect(frame.payload.readableBytes == total - SyncWire.headerLength)
        #expect(try SyncControlMessage.decode(type: frame.type, payload: frame.payload) == message)
    }

    @Test func framesFollowEachOtherInOneBuffer() throws {
        var wire = ByteBuffer()
        for (i, m) in Self.allMessages.enumerated() { wire.writeSyncMessage(m, sequence: UInt32(i)) }
        var decoded: [SyncControlMessage] = []
        while let frame = try wire.readSyncFrame() {
            #expect(frame.sequence == UInt32(decoded.count))
            decoded.append(try SyncControlMessage.decode(type: frame.type, payload: frame.payload))
        }
        #expect(decoded == Self.allMessages)
        #expect(wire.readableBytes == 0)
    }

    // MARK: Golden bytes

    @Test func heartbeatFrameGolden() {
        var wire = ByteBuffer()
        wire.writeSyncMessage(.heartbeat, sequence: 7)
        #expect(hex(wire) == "00000005" + "06" + "00000007")
    }

    @Test func resyncFramesGolden() {
        var wire = ByteBuffer()
        wire.writeSyncMessage(.resyncBegin(generation: 0x0102_0304), sequence: 1)
        #expect(hex(wire) == "00000009" + "03" + "00000001" + "01020304")
        wire.clear()
        wire.writeSyncMessage(.resyncEnd(generation: 0x0102_0304, count: 0x1122_3344_5566_7788), sequence: 0x100)
        #expect(hex(wire) == "00000011" + "04" + "00000100" + "01020304" + "1122334455667788")
    }

    @Test func errorFrameGolden() {
        var wire = ByteBuffer()
        wire.writeSyncMessage(.error(code: .protocolViolation, message: "no"), sequence: 2)
        #expect(hex(wire) == "0000000b" + "07" + "00000002" + "0005" + "0002" + "6e6f")
    }

    @Test func helloFrameGolden() {
        var wire = ByteBuffer()
        let hello = Hello(
            nodeID: "ha1", vrf: "red", connectionIndex: 1, connectionCount: 4, fingerprint: [0xAA, 0xBB],
            settings: [SyncSettingPair(key: "k", value: "v")])
        wire.writeSyncMessage(.hello(hello), sequence: 0)
        #expect(hex(wire) ==
            "00000020" + "01" + "00000000"
            + "4b53594e" + "0002" + "03686131" + "03726564" + "0001" + "0004" + "02aabb" + "0001" + "016b" + "0176")
    }

    @Test func helloAckFrameGolden() {
        var wire = ByteBuffer()
        let ack = HelloAck(status: .acceptedWithDrift, nodeID: "ha2", fingerprint: [0x01], settings: [], message: "ok")
        wire.writeSyncMessage(.helloAck(ack), sequence: 0)
        #expect(hex(wire) == "00000014" + "02" + "00000000" + "01" + "0002" + "03686132" + "0101" + "0000" + "00026f6b")
    }

    @Test func updatesFrameGolden() throws {
        var wire = ByteBuffer()
        let at = wire.beginSyncFrame(.updates, sequence: 42)
        wire.writeConntrackUpdate(.upsert(goldenSNAT))
        wire.endSyncFrame(lengthAt: at)
        #expect(hex(wire) ==
            "00000025" + "05" + "0000002a"
            + "0406" + "64400001c63364079c4001bb" + "c6336407cb00710501bb4e21" + "03" + "9e03" + "80af1a")
        let frame = try #require(try wire.readSyncFrame())
        #expect(frame.type == .updates)
        #expect(frame.sequence == 42)
        #expect(try decodeAll(frame.payload) == [.upsert(goldenSNAT)])
        // UPDATES is not a control message.
        #expect(caught { try SyncControlMessage.decode(type: .updates, payload: frame.payload) } == .unknownMessageType(5))
    }

    // MARK: Framing errors

    @Test func everyPrefixOfAFrameIsIncomplete() throws {
        var whole = ByteBuffer()
        whole.writeSyncMessage(.hello(sampleHello), sequence: 3)
        for n in 0..<whole.readableBytes {
            var prefix = whole.getSlice(at: whole.readerIndex, length: n)!
            #expect(try prefix.readSyncFrame() == nil, "prefix \(n)")
            #expect(prefix.readableBytes == n, "consumed nothing")
        }
    }

    @Test(arguments: [UInt32(0), 1, 2, 3, 4])
    func frameTooShort(length: UInt32) {
        var wire = ByteBuffer()
        wire.writeInteger(length)
        wire.writeBytes([UInt8](repeating: 6, count: 16))
        let before = wire.readableBytes
        #expect(caught { try wire.readSyncFrame() } == .frameTooShort(length: Int(length)))
        #expect(wire.readableBytes == before)
    }

    @Test(arguments: [UInt32(1 << 20) + 1, 0x7FFF_FFFF, UInt32.max])
    func frameTooLarge(length: UInt32) {
        var wire = ByteBuffer()
        wire.writeInteger(length)
        #expect(caught { try wire.readSyncFrame() } == .frameTooLarge(length: Int(length), maximum: 1 << 20))
        #expect(wire.readableBytes == 4)
    }

    @Test func largestFrameIsAccepted() throws {
        var wire = ByteBuffer()
        wire.writeInteger(UInt32(1 << 20))
        wire.writeInteger(SyncMessageType.updates.rawValue)
        wire.writeInteger(UInt32(9))
        wire.writeRepeatingByte(0, count: (1 << 20) - 6)
        #expect(try wire.readSyncFrame() == nil) // one byte short
        wire.writeInteger(UInt8(0))
        let frame = try #require(try wire.readSyncFrame())
        #expect(frame.payload.readableBytes == (1 << 20) - 5)
        #expect(frame.sequence == 9)
    }

    @Test(arguments: [UInt8(0x00), 0x05, 0x08, 0x7F, 0xFF])
    func unknownMessageType(type: UInt8) throws {
        var wire = buffer(hex: "00000005" + hex([type]) + "00000000")
        let frame = try #require(try wire.readSyncFrame())
        #expect(frame.type.rawValue == type)
        #expect(!frame.type.isKnown || type == 5)
        #expect(caught { try SyncControlMessage.decode(type: frame.type, payload: frame.payload) } == .unknownMessageType(type))
    }

    // MARK: Hostile control payloads

    static func payload(_ message: SyncControlMessage) -> ByteBuffer {
        var wire = ByteBuffer()
        wire.writeSyncMessage(message, sequence: 0)
        return wire.getSlice(at: SyncWire.headerLength, length: wire.readableBytes - SyncWire.headerLength)!
    }

    @Test(arguments: allMessages)
    func everyTruncatedPayloadThrowsTruncated(message: SyncControlMessage) {
        let full = Self.payload(message)
        for n in 0..<full.readableBytes {
            let prefix = full.getSlice(at: full.readerIndex, length: n)!
            let e = caught { try SyncControlMessage.decode(type: message.type, payload: prefix) }
            #expect(isTruncated(e), "\(message.type) prefix \(n): \(String(describing: e))")
        }
    }

    @Test(arguments: allMessages)
    func trailingBytesAreRejected(message: SyncControlMessage) {
        var p = Self.payload(message)
        p.writeInteger(UInt8(0))
        #expect(caught { try SyncControlMessage.decode(type: message.type, payload: p) }
            == .trailingBytes(message: "\(message.type)", count: 1))
    }

    /// A hello payload with the given fields, byte by byte.
    static func helloPayload(
        magic: UInt32 = SyncWire.magic, version: UInt16 = SyncWire.version, node: [UInt8] = Array("ha1".utf8),
        vrf: [UInt8] = Array("red".utf8), index: UInt16 = 0, count: UInt16 = 4, settingsCount: UInt16 = 0
    ) -> ByteBuffer {
        var b = ByteBuffer()
        b.writeInteger(magic)
        b.writeInteger(version)
        b.writeInteger(UInt8(node.count)); b.writeBytes(node)
        b.writeInteger(UInt8(vrf.count)); b.writeBytes(vrf)
        b.writeInteger(index)
        b.writeInteger(count)
        b.writeInteger(UInt8(0))
        b.writeInteger(settingsCount)
        return b
    }

    @Test func helloBuilderMatchesEncoder() throws {
        #expect(try SyncControlMessage.decode(type: .hello, payload: Self.helloPayload())
            == .hello(Hello(nodeID: "ha1", vrf: "red", connectionIndex: 0, connectionCount: 4, fingerprint: [], settings: [])))
    }

    @Test func helloBadMagic() {
        #expect(caught { try SyncControlMessage.decode(type: .hello, payload: Self.helloPayload(magic: 0x4854_5450)) } == .badMagic)
        // A TLS-less HTTP client, say: fewer bytes than the magic.
        #expect(isTruncated(caught { try SyncControlMessage.decode(type: .hello, payload: ByteBuffer(string: "GE")) }))
        #expect(SyncProtocolError.badMagic.errorCode == .notKeepstate)
    }

    /// Version 2 only added a record field, so a version 1 sender is still accepted.
    @Test func helloVersionOneIsAccepted() throws {
        #expect(SyncWire.version == 2 && SyncWire.minimumVersion == 1)
        #expect(try SyncControlMessage.decode(type: .hello, payload: Self.helloPayload(version: 1))
            == .hello(Hello(version: 1, nodeID: "ha1", vrf: "red", connectionIndex: 0, connectionCount: 4, fingerprint: [], settings: [])))
    }

    @Test(arguments: [UInt16(0), 3, 0xFFFF])
    func helloUnsupportedVersion(version: UInt16) {
        let e = caught { try SyncControlMessage.decode(type: .hello, payload: Self.helloPayload(version: version)) }
        #expect(e == .unsupportedVersion(version))
        #expect(e?.errorCode == .unsupportedVersion)
    }

    @Test func helloConnectionIndexAndCount() {
        func decode(index: UInt16, count: UInt16) -> SyncProtocolError? {
            caught { try SyncControlMessage.decode(type: .hello, payload: Self.helloPayload(index: index, count: count)) }
        }
        #expect(decode(index: 4, count: 4) == .invalidField(field: "connection index", reason: "4 is not below the count 4"))
        #expect(decode(index: 0xFFFF, count: 1) == .invalidField(field: "connection index", reason: "65535 is not below the count 1"))
        #expect(decode(index: 0, count: 0) == .invalidField(field: "connection count", reason: "0 is outside 1...64"))
        #expect(decode(index: 0, count: 65) == .invalidField(field: "connection count", reason: "65 is outside 1...64"))
        #expect(decode(index: 63, count: 64) == nil)
        #expect(decode(index: 0, count: 1) == nil)
    }

    @Test func helloStringFields() {
        func decode(node: [UInt8], vrf: [UInt8]) -> SyncProtocolError? {
            caught { try SyncControlMessage.decode(type: .hello, payload: Self.helloPayload(node: node, vrf: vrf)) }
        }
        #expect(decode(node: [], vrf: Array("red".utf8)) == .invalidField(field: "node id", reason: "empty"))
        #expect(decode(node: Array("a".utf8), vrf: []) == .invalidField(field: "vrf", reason: "empty"))
        #expect(decode(node: [0x68, 0xFF, 0x61], vrf: Array("red".utf8)) == .invalidField(field: "node id", reason: "not valid UTF-8"))
        #expect(decode(node: [0xC3], vrf: Array("red".utf8)) == .invalidField(field: "node id", reason: "not valid UTF-8"))
        #expect(decode(node: Array("a".utf8), vrf: [0xED, 0xA0, 0x80]) == .invalidField(field: "vrf", reason: "not valid UTF-8"))
        #expect(decode(node: Array("ü".utf8), vrf: Array("✓".utf8)) == nil)
    }

    @Test func helloSettingsCountLimit() {
        var p = Self.helloPayload(settingsCount: 257)
        #expect(caught { try SyncControlMessage.decode(type: .hello, payload: p) }
            == .invalidField(field: "settings count", reason: "257 exceeds 256"))
        p = Self.helloPayload(settingsCount: 1)
        p.writeBytes([1, 0x6B, 1, 0xFF])   // key "k", value not UTF-8
        #expect(caught { try SyncControlMessage.decode(type: .hello, payload: p) }
            == .invalidField(field: "setting value", reason: "not valid UTF-8"))
    }

    @Test func errorMessageNotUTF8() {
        let p = buffer(hex: "0001" + "0002" + "c328")
        #expect(caught { try SyncControlMessage.decode(type: .error, payload: p) }
            == .invalidField(field: "error message", reason: "not valid UTF-8"))
    }

    /// Over-long strings are cut to their prefix's maximum, at a UTF-8 boundary.
    @Test func longStringsAreCutAtScalarBoundaries() throws {
        let hello = Hello(
            nodeID: String(repeating: "é", count: 200), vrf: "red", connectionIndex: 0, connectionCount: 1,
            fingerprint: [], settings: [])
        var wire = ByteBuffer()
        wire.writeSyncMessage(.hello(hello), sequence: 0)
        var frame = try #require(try wire.readSyncFrame())
        guard case .hello(let h) = try SyncControlMessage.decode(type: .hello, payload: frame.payload) else {
            Issue.record("not a hello")
            return
        }
        #expect(h.nodeID == String(repeating: "é", count: 127))

        wire.clear()
        wire.writeSyncMessage(.error(code: .malformed, message: String(repeating: "é", count: 5_000)), sequence: 0)
        frame = try #require(try wire.readSyncFrame())
        #expect(try SyncControlMessage.decode(type: .error, payload: frame.payload)
            == .error(code: .malformed, message: String(repeating: "é", count: 2_048)))
    }

    /// The settings list is cut at 256 entries, the most a decoder accepts.
    @Test func tooManySettingsAreCut() throws {
        let settings = (0..<300).map { SyncSettingPair(key: "k\($0)", value: "v") }
        let ack = HelloAck(status: .accepted, nodeID: "n", fingerprint: [], settings: settings, message: "")
        var wire = ByteBuffer()
        wire.writeSyncMessage(.helloAck(ack), sequence: 0)
        let frame = try #require(try wire.readSyncFrame())
        guard case .helloAck(let a) = try SyncControlMessage.decode(type: .helloAck, payload: frame.payload) else {
            Issue.record("not a hello ack")
            return
        }
        #expect(a.settings == Array(settings.prefix(256)))
    }

    /// The fingerprint is binary: an over-long one is cut to 255 bytes, not like a string.
    @Test func longFingerprintIsCutToItsFirst255Bytes() throws {
        let hello = Hello(
            nodeID: "n", vrf: "v", connectionIndex: 0, connectionCount: 1,
            fingerprint: [UInt8](repeating: 0xFF, count: 300), settings: [])
        var wire = ByteBuffer()
        wire.writeSyncMessage(.hello(hello), sequence: 0)
        let frame = try #require(try wire.readSyncFrame())
        guard case .hello(let h) = try SyncControlMessage.decode(type: .hello, payload: frame.payload) else {
            Issue.record("not a hello")
            return
        }
        #expect(h.fingerprint == [UInt8](repeating: 0xFF, count: 255))
    }

    @Test func errorCodesAndDescriptions() {
        #expect(SyncProtocolError.sequenceGap(expected: 1, received: 2).errorCode == .gap)
        #expect(SyncProtocolError.resyncMismatch("x").errorCode == .gap)
        #expect(SyncProtocolError.unexpectedMessage("A", state: "b").errorCode == .protocolViolation)
        #expect(SyncProtocolError.truncated(what: "x", needed: 1).errorCode == .malformed)
        #expect(SyncProtocolError.frameTooLarge(length: 2, maximum: 1).errorCode == .malformed)
        #expect(SyncProtocolError.unknownMessageType(0xAB).description == "unknown message type 0xab")
        #expect(SyncProtocolError.unsupportedVersion(3).description == "unsupported protocol version 3 (this build speaks 1 to 2)")
        #expect(SyncErrorCode(rawValue: 99).description == "code-99")
        #expect(SyncMessageType(rawValue: 0x1F).description == "TYPE_0x1f")
        #expect(HelloAck.Status.acceptedWithDrift.isAccepted)
        #expect(!HelloAck.Status.peerNotAllowed.isAccepted)
    }
}
