import ConntrackModel
import NIOCore
import SyncProtocol
import Testing

@Suite struct MessageTests {
    static let allMessages: [SyncControlMessage] = {
        var out: [SyncControlMessage] = [
            .hello(sampleHello),
            .hello(Hello(nodeID: "n", vrf: "v", connectionIndex: 0, connectionCount: 1, fingerprint: [], settings: [],
                         ruleset: .unknown(reason: ""))),
            .hello(Hello(
                nodeID: String(repeating: "x", count: 255), vrf: "blue", connectionIndex: 63, connectionCount: 64,
                fingerprint: [UInt8](repeating: 0xFF, count: 255),
                settings: (0..<256).map { SyncSettingPair(key: "k\($0)", value: "") },
                ruleset: .known(RulesetDigest(
                    digest: [UInt8](repeating: 0xEE, count: 32),
                    parts: [RulesetPart(name: String(repeating: "n", count: 255), digest: [UInt8](repeating: 0xFF, count: 8))])))),
            .hello(Hello(version: 3, nodeID: "n", vrf: "v", connectionIndex: 0, connectionCount: 1, fingerprint: [], settings: [],
                         ruleset: .known(RulesetDigest(digest: Array(0..<32), parts: [], partsOmitted: true)))),
            .hello(Hello(version: 3, nodeID: "n", vrf: "v", connectionIndex: 0, connectionCount: 1, fingerprint: [], settings: [],
                         ruleset: .unknown(reason: String(repeating: "é", count: 2048)))),
            // Versions 1 and 2: no ruleset field.
            .hello(Hello(version: 2, nodeID: "n", vrf: "v", connectionIndex: 0, connectionCount: 1, fingerprint: [1], settings: [])),
            .hello(Hello(version: 1, nodeID: "n", vrf: "v", connectionIndex: 0, connectionCount: 1, fingerprint: [1], settings: [])),
            .ruleset(.known(sampleDigest)),
            .ruleset(.known(RulesetDigest(digest: Array(0..<32), parts: []))),
            .ruleset(.known(RulesetDigest(digest: Array(0..<32), parts: [], partsOmitted: true))),
            .ruleset(.unknown(reason: "nft: command not found")),
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
        out += acksWithRuleset.map { .helloAck($0) }
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
            settings: [SyncSettingPair(key: "k", value: "v")], ruleset: .unknown(reason: "no"))
        wire.writeSyncMessage(.hello(hello), sequence: 0)
        #expect(hex(wire) ==
            "00000025" + "01" + "00000000"
            + "4b53594e" + "0003" + "03686131" + "03726564" + "0001" + "0004" + "02aabb" + "0001" + "016b" + "0176"
            + "00" + "0002" + "6e6f")
        // Version 2: the same without the ruleset.
        wire.clear()
        var v2 = hello
        v2.version = 2
        wire.writeSyncMessage(.hello(v2), sequence: 0)
        #expect(hex(wire) ==
            "00000020" + "01" + "00000000"
            + "4b53594e" + "0002" + "03686131" + "03726564" + "0001" + "0004" + "02aabb" + "0001" + "016b" + "0176")
    }

    @Test func helloAckFrameGolden() {
        var wire = ByteBuffer()
        var ack = HelloAck(status: .acceptedWithDrift, nodeID: "ha2", fingerprint: [0x01], settings: [], message: "ok")
        wire.writeSyncMessage(.helloAck(ack), sequence: 0)
        #expect(hex(wire) == "00000014" + "02" + "00000000" + "01" + "0003" + "03686132" + "0101" + "0000" + "00026f6b")
        // With the receiver's ruleset, trailing.
        ack.ruleset = .known(RulesetDigest(digest: [UInt8](repeating: 0x11, count: 32), parts: [], partsOmitted: true))
        wire.clear()
        wire.writeSyncMessage(.helloAck(ack), sequence: 0)
        #expect(hex(wire) == "00000036" + "02" + "00000000" + "01" + "0003" + "03686132" + "0101" + "0000" + "00026f6b"
            + "02" + "20" + String(repeating: "11", count: 32))
    }

    @Test func rulesetFrameGolden() {
        var wire = ByteBuffer()
        let digest = RulesetDigest(digest: [UInt8](repeating: 0xAB, count: 32),
                                   parts: [RulesetPart(name: "table ip nat", digest: [1, 2, 3, 4, 5, 6, 7, 8])])
        wire.writeSyncMessage(.ruleset(.known(digest)), sequence: 5)
        #expect(hex(wire) == "0000003f" + "08" + "00000005"
            + "01" + "20" + String(repeating: "ab", count: 32) + "0001"
            + "0c" + hex(Array("table ip nat".utf8)) + "08" + "0102030405060708")
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

    @Test(arguments: [UInt8(0x00), 0x05, 0x09, 0x7F, 0xFF])
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

    /// Version 3 acks with the receiver's ruleset (a trailing field).
    static let acksWithRuleset: [HelloAck] = [
        HelloAck(status: .accepted, version: 3, nodeID: "ha2", fingerprint: [9], settings: sampleSettings, message: "",
                 ruleset: .known(sampleDigest)),
        HelloAck(status: .acceptedWithDrift, version: 3, nodeID: "ha2", fingerprint: [], settings: [], message: "x",
                 ruleset: .unknown(reason: "not read yet")),
    ]

    @Test(arguments: allMessages)
    func everyTruncatedPayloadThrowsTruncated(message: SyncControlMessage) {
        let full = Self.payload(message)
        // An ack cut right before its trailing ruleset is a whole ack without one.
        var whole = -1
        if case .helloAck(var a) = message, a.ruleset != nil {
            a.ruleset = nil
            whole = Self.payload(.helloAck(a)).readableBytes
        }
        for n in 0..<full.readableBytes where n != whole {
            let prefix = full.getSlice(at: full.readerIndex, length: n)!
            let e = caught { try SyncControlMessage.decode(type: message.type, payload: prefix) }
            #expect(isTruncated(e), "\(message.type) prefix \(n): \(String(describing: e))")
        }
    }

    @Test(arguments: allMessages)
    func trailingBytesAreRejected(message: SyncControlMessage) {
        var p = Self.payload(message)
        p.writeInteger(UInt8(0))
        let e = caught { try SyncControlMessage.decode(type: message.type, payload: p) }
        if case .helloAck(let a) = message, a.version >= SyncWire.rulesetVersion, a.ruleset == nil {
            // Bytes after the message of a version 3 ack are its ruleset: one byte is a cut one.
            #expect(isTruncated(e), "\(String(describing: e))")
        } else {
            #expect(e == .trailingBytes(message: "\(message.type)", count: 1))
        }
    }

    /// A hello payload with the given fields, byte by byte.
    static func helloPayload(
        magic: UInt32 = SyncWire.magic, version: UInt16 = SyncWire.version, node: [UInt8] = Array("ha1".utf8),
        vrf: [UInt8] = Array("red".utf8), index: UInt16 = 0, count: UInt16 = 4, settingsCount: UInt16 = 0,
        ruleset: [UInt8] = [0, 0, 0]
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
        // Version 3: the ruleset (default: unknown, empty reason).
        if version >= 3 { b.writeBytes(ruleset) }
        return b
    }

    @Test func helloBuilderMatchesEncoder() throws {
        #expect(try SyncControlMessage.decode(type: .hello, payload: Self.helloPayload())
            == .hello(Hello(nodeID: "ha1", vrf: "red", connectionIndex: 0, connectionCount: 4, fingerprint: [], settings: [],
                            ruleset: .unknown(reason: ""))))
    }

    @Test func helloBadMagic() {
        #expect(caught { try SyncControlMessage.decode(type: .hello, payload: Self.helloPayload(magic: 0x4854_5450)) } == .badMagic)
        // A TLS-less HTTP client, say: fewer bytes than the magic.
        #expect(isTruncated(caught { try SyncControlMessage.decode(type: .hello, payload: ByteBuffer(string: "GE")) }))
        #expect(SyncProtocolError.badMagic.errorCode == .notKeepstate)
    }

    /// Version 2 only added a record field and version 3 a trailing hello field, so version 1
    /// and 2 senders are still accepted, without a ruleset.
    @Test(arguments: [UInt16(1), 2])
    func olderHellosAreAccepted(version: UInt16) throws {
        #expect(SyncWire.version == 3 && SyncWire.minimumVersion == 1 && SyncWire.rulesetVersion == 3)
        #expect(try SyncControlMessage.decode(type: .hello, payload: Self.helloPayload(version: version))
            == .hello(Hello(version: version, nodeID: "ha1", vrf: "red", connectionIndex: 0, connectionCount: 4, fingerprint: [],
                            settings: [])))
        // A version 2 hello with the ruleset field has a byte too many for its version.
        var p = Self.helloPayload(version: version)
        p.writeBytes([0, 0, 0])
        #expect(caught { try SyncControlMessage.decode(type: .hello, payload: p) } == .trailingBytes(message: "HELLO", count: 3))
    }

    @Test(arguments: [UInt16(0), 4, 0xFFFF])
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
        var p = Self.helloPayload(version: 2, settingsCount: 257)
        #expect(caught { try SyncControlMessage.decode(type: .hello, payload: p) }
            == .invalidField(field: "settings count", reason: "257 exceeds 256"))
        p = Self.helloPayload(version: 2, settingsCount: 1)
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
        #expect(SyncProtocolError.unsupportedVersion(4).description == "unsupported protocol version 4 (this build speaks 1 to 3)")
        #expect(SyncMessageType.ruleset.description == "RULESET" && SyncMessageType.ruleset.isKnown)
        #expect(SyncErrorCode(rawValue: 99).description == "code-99")
        #expect(SyncMessageType(rawValue: 0x1F).description == "TYPE_0x1f")
        #expect(HelloAck.Status.acceptedWithDrift.isAccepted)
        #expect(!HelloAck.Status.peerNotAllowed.isAccepted)
    }
}
