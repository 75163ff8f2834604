import NIOCore
import SyncProtocol
import Testing

/// The ruleset fingerprint on the wire (version 3): HELLO field, HELLO_ACK trailing field,
/// RULESET message; and the comparison that names a drift.
@Suite struct RulesetWireTests {
    static func digest(_ parts: [(String, UInt8)], whole: UInt8 = 0x42) -> RulesetDigest {
        RulesetDigest(digest: [UInt8](repeating: whole, count: 32),
                      parts: parts.map { RulesetPart(name: $0.0, digest: [UInt8](repeating: $0.1, count: 8)) })
    }

    static func decode(_ type: SyncMessageType, _ bytes: [UInt8]) -> Result<SyncControlMessage, SyncProtocolError> {
        Result { () throws(SyncProtocolError) in try SyncControlMessage.decode(type: type, payload: ByteBuffer(bytes: bytes)) }
    }

    static func roundTrip(_ m: SyncControlMessage) throws -> SyncControlMessage {
        var wire = ByteBuffer()
        wire.writeSyncMessage(m, sequence: 0)
        let frame = try #require(try wire.readSyncFrame())
        return try SyncControlMessage.decode(type: frame.type, payload: frame.payload)
    }

    @Test func largestHelloFitsInAFrame() throws {
        let parts = (0..<RulesetDigest.maximumParts).map { i in
            RulesetPart(name: "table inet t\(i) chain " + String(repeating: "c", count: 255), digest: [UInt8](repeating: UInt8(i & 0xFF), count: 8))
        }
        let hello = Hello(
            nodeID: String(repeating: "x", count: 255), vrf: String(repeating: "v", count: 255), connectionIndex: 0,
            connectionCount: 1, fingerprint: [UInt8](repeating: 1, count: 255),
            settings: (0..<SyncWire.maximumSettings).map {
                SyncSettingPair(key: "k\($0)" + String(repeating: "k", count: 250), value: String(repeating: "v", count: 255))
            },
            ruleset: .known(RulesetDigest(digest: [UInt8](repeating: 7, count: 32), parts: parts)))
        var wire = ByteBuffer()
        wire.writeSyncMessage(.hello(hello), sequence: 0)
        #expect(wire.readableBytes <= SyncWire.maximumFrameLength)
        let frame = try #require(try wire.readSyncFrame())
        guard case .hello(let h) = try SyncControlMessage.decode(type: .hello, payload: frame.payload),
              case .known(let d)? = h.ruleset else {
            Issue.record("not a hello with a ruleset")
            return
        }
        // Names are cut to 255 bytes on the wire, and stay unique here (the index comes first).
        #expect(d.parts.count == RulesetDigest.maximumParts)
        #expect(d.parts.allSatisfy { $0.name.utf8.count == 255 })
        #expect(d.parts.map(\.digest) == parts.map(\.digest))
    }

    @Test func moreThanTheMaximumPartsTravelsAsTheDigestOnly() throws {
        let parts = (0...RulesetDigest.maximumParts).map { RulesetPart(name: "table ip t\($0)", digest: [UInt8](repeating: 0, count: 8)) }
        let m = try Self.roundTrip(.ruleset(.known(RulesetDigest(digest: Array(0..<32), parts: parts))))
        #expect(m == .ruleset(.known(RulesetDigest(digest: Array(0..<32), parts: [], partsOmitted: true))))
    }

    @Test func namesThatCollideOnceCutAreSentOnce() throws {
        let long = String(repeating: "a", count: 300)
        let d = RulesetDigest(digest: Array(0..<32), parts: [
            RulesetPart(name: long + "1", digest: [1, 1, 1, 1, 1, 1, 1, 1]),
            RulesetPart(name: long + "2", digest: [2, 2, 2, 2, 2, 2, 2, 2]),
            RulesetPart(name: "b", digest: [3, 3, 3, 3, 3, 3, 3, 3]),
        ])
        let m = try Self.roundTrip(.ruleset(.known(d)))
        #expect(m == .ruleset(.known(RulesetDigest(digest: Array(0..<32), parts: [
            RulesetPart(name: String(repeating: "a", count: 255), digest: [1, 1, 1, 1, 1, 1, 1, 1]),
            RulesetPart(name: "b", digest: [3, 3, 3, 3, 3, 3, 3, 3]),
        ]))))
    }

    static let digest32 = [UInt8(32)] + [UInt8](repeating: 0xAA, count: 32)

    @Test(arguments: [
        ([UInt8(3)], SyncProtocolError.invalidField(field: "ruleset kind", reason: "3 is not 0, 1 or 2")),
        ([0xFF], .invalidField(field: "ruleset kind", reason: "255 is not 0, 1 or 2")),
        ([1, 31] + [UInt8](repeating: 0, count: 31), .invalidField(field: "ruleset digest", reason: "31 bytes, expected 32")),
        ([2, 0], .invalidField(field: "ruleset digest", reason: "0 bytes, expected 32")),
        ([1] + digest32 + [0x08, 0x01], .invalidField(field: "ruleset part count", reason: "2049 exceeds 2048")),
        ([1] + digest32 + [0, 1, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8], .invalidField(field: "ruleset part name", reason: "empty")),
        ([1] + digest32 + [0, 1, 1, 0xFF, 8, 1, 2, 3, 4, 5, 6, 7, 8], .invalidField(field: "ruleset part name", reason: "not valid UTF-8")),
        ([1] + digest32 + [0, 1, 1, 0x61, 7, 1, 2, 3, 4, 5, 6, 7], .invalidField(field: "ruleset part digest", reason: "7 bytes, expected 8")),
        ([1] + digest32 + [0, 2, 1, 0x61, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0x61, 8, 1, 2, 3, 4, 5, 6, 7, 8],
         .invalidField(field: "ruleset part name", reason: "'a' appears twice")),
        ([0, 0, 2, 0xC3, 0x28], .invalidField(field: "ruleset reason", reason: "not valid UTF-8")),
        // A str16 longer than any encoder writes (it cuts at 4096 bytes).
        ([0, 0x10, 0x01] + [UInt8](repeating: 0x61, count: 4097), .invalidField(field: "ruleset reason", reason: "4097 bytes, more than 4096")),
    ] as [([UInt8], SyncProtocolError)])
    func badRulesetFields(bytes: [UInt8], error: SyncProtocolError) {
        #expect(Self.decode(.ruleset, bytes).failure == error)
        // The same field in a version 3 hello.
        var hello = MessageTests.helloPayload(ruleset: bytes)
        #expect(caught { try SyncControlMessage.decode(type: .hello, payload: hello) } == error)
        hello = MessageTests.helloPayload(ruleset: [])
        #expect(isTruncated(caught { try SyncControlMessage.decode(type: .hello, payload: hello) }), "a version 3 hello needs one")
    }

    @Test func ackTrailingRuleset() throws {
        // A version 3 ack may end before the ruleset (it answers a version 2 hello)...
        let ack = HelloAck(status: .accepted, version: 3, nodeID: "n", fingerprint: [], settings: [], message: "")
        #expect(try Self.roundTrip(.helloAck(ack)) == .helloAck(ack))
        let payload = MessageTests.payload(.helloAck(ack))
        // ...but what follows its message must be a whole ruleset.
        var p = payload
        p.writeInteger(UInt8(0))
        #expect(isTruncated(caught { try SyncControlMessage.decode(type: .helloAck, payload: p) }))
        p = payload
        p.writeBytes([9])
        #expect(caught { try SyncControlMessage.decode(type: .helloAck, payload: p) }
            == .invalidField(field: "ruleset kind", reason: "9 is not 0, 1 or 2"))
        // A version 2 ack has none: the encoder leaves it out, the decoder refuses the bytes.
        var v2 = ack
        v2.version = 2
        v2.ruleset = .unknown(reason: "x")
        let encoded = MessageTests.payload(.helloAck(v2))
        #expect(try SyncControlMessage.decode(type: .helloAck, payload: encoded) == .helloAck({ var a = v2; a.ruleset = nil; return a }()))
        p = encoded
        p.writeBytes([0, 0, 0])
        #expect(caught { try SyncControlMessage.decode(type: .helloAck, payload: p) } == .trailingBytes(message: "HELLO_ACK", count: 3))
    }

    @Test func sessionsAndRuleset() throws {
        var r = ReceiverSession()
        #expect(caught { try r.receive(type: .ruleset, sequence: 0) } == .unexpectedMessage("RULESET", state: "awaiting hello"))
        r = ReceiverSession()
        try r.receive(type: .hello, sequence: 0)
        _ = try r.handle(.hello(sampleHello))
        try r.receive(type: .ruleset, sequence: 1)
        #expect(try r.handle(.ruleset(.unknown(reason: "x"))) == .peerRuleset(.unknown(reason: "x")))
        // The receiver never sends one.
        var s = SenderSession()
        try s.receive(type: .helloAck, sequence: 0)
        _ = try s.handle(.helloAck(HelloAck(status: .accepted, nodeID: "n", fingerprint: [], settings: [], message: "")))
        #expect(caught { try s.handle(.ruleset(.unknown(reason: "x"))) } == .unexpectedMessage("RULESET", state: "sending"))
    }

    // MARK: naming and comparison

    @Test func differencesNameThePartsAndCollapseLonelyTables() {
        let mine = Self.digest([
            ("table inet filter", 1), ("table inet filter chain input", 2), ("table inet filter set allowed", 3),
            ("table ip nat", 4), ("table ip nat chain postrouting", 5), ("table ip raw", 6), ("table ip raw chain pre", 7),
        ], whole: 1)
        let theirs = Self.digest([
            ("table inet filter", 1), ("table inet filter chain input", 2), ("table inet filter chain forward", 9),
            ("table ip nat", 4), ("table ip nat chain postrouting", 0xF5), ("table ip6 nat", 8), ("table ip6 nat chain x", 8),
        ], whole: 2)
        #expect(mine.differences(from: theirs) == [
            "table inet filter chain forward only on the peer",
            "table inet filter set allowed only on this node",
            "table ip nat chain postrouting differs",
            "table ip raw only on this node",
            "table ip6 nat only on the peer",
        ])
        #expect(theirs.differences(from: mine).contains("table ip nat chain postrouting differs"))
        #expect(mine.differences(from: mine) == [])
        // Same parts, other digest (the 64-bit part digests collided): still a difference.
        var collided = mine
        collided.digest[0] ^= 1
        #expect(mine.differences(from: collided) == ["ruleset differs"])
        var omitted = theirs
        omitted.partsOmitted = true
        omitted.parts = []
        #expect(mine.differences(from: omitted) == ["ruleset differs (too many tables, chains and sets to name them)"])
    }

    static let settings = [SyncSettingPair(key: "conntrack_timeouts.tcp_undefined", value: "10"),
                           SyncSettingPair(key: "ha_fp_conntrack.failback_hold_max", value: "120")]

    static func peer(version: UInt16 = 3, settings: [SyncSettingPair] = RulesetWireTests.settings,
                     ruleset: RulesetFingerprint?) -> PeerConfiguration {
        PeerConfiguration(nodeID: "ha2", version: version, settings: settings, ruleset: ruleset)
    }

    @Test func driftKinds() {
        let a = RulesetFingerprint.known(Self.digest([("table ip nat", 1), ("table ip nat chain postrouting", 2)], whole: 1))
        let b = RulesetFingerprint.known(Self.digest([("table ip nat", 1), ("table ip nat chain postrouting", 3)], whole: 2))
        let other = [SyncSettingPair(key: "conntrack_timeouts.tcp_undefined", value: "20"), Self.settings[1]]
        func compare(_ local: RulesetFingerprint?, _ peer: PeerConfiguration?, check: Bool = true) -> ConfigDrift {
            ConfigDrift.compare(localSettings: Self.settings, localRuleset: local, peer: peer, compareRuleset: check)
        }
        #expect(compare(a, nil) == ConfigDrift(kind: .unknown, reason: "nothing heard from the peer yet"))
        #expect(compare(a, Self.peer(ruleset: a)) == ConfigDrift(kind: .none))
        #expect(compare(a, Self.peer(ruleset: b)) == ConfigDrift(kind: .ruleset, details: ["table ip nat chain postrouting differs"]))
        #expect(compare(a, Self.peer(settings: other, ruleset: a))
            == ConfigDrift(kind: .settings, details: ["conntrack_timeouts.tcp_undefined: here 10, peer 20"]))
        #expect(compare(a, Self.peer(settings: other, ruleset: b)) == ConfigDrift(kind: .both, details: [
            "conntrack_timeouts.tcp_undefined: here 10, peer 20", "table ip nat chain postrouting differs",
        ]))
        #expect(compare(nil, Self.peer(ruleset: a)).description == "unknown (this node's ruleset has not been read yet)")
        #expect(compare(.unknown(reason: "nft: not found"), Self.peer(ruleset: a)).description == "unknown (this node: nft: not found)")
        #expect(compare(a, Self.peer(ruleset: .unknown(reason: "timed out"))).description == "unknown (the peer: timed out)")
        // A known settings drift is reported even when the ruleset cannot be compared.
        #expect(compare(a, Self.peer(settings: other, ruleset: .unknown(reason: "timed out"))) == ConfigDrift(
            kind: .settings, reason: "the peer: timed out",
            details: ["conntrack_timeouts.tcp_undefined: here 10, peer 20", "ruleset unknown: the peer: timed out"]))
        // With the check off here, only the settings count.
        #expect(compare(.unknown(reason: "off"), Self.peer(ruleset: b), check: false) == ConfigDrift(kind: .none))
        #expect(ConfigDrift(kind: .both).isDrift && !ConfigDrift(kind: .unknown).isDrift && !ConfigDrift(kind: .none).isDrift)
    }

    @Test func olderPeers() {
        let a = RulesetFingerprint.known(Self.digest([("table ip nat", 1)]))
        // A version 2 peer sends no ruleset and not the settings version 3 added.
        let v2 = Self.peer(version: 2, settings: [Self.settings[0]], ruleset: nil)
        #expect(ConfigDrift.compare(localSettings: Self.settings, localRuleset: a, peer: v2).description
            == "unknown (the peer speaks protocol version 2, without ruleset fingerprints)")
        #expect(SettingsDrift.differences(local: Self.settings, remote: [Self.settings[0]], peerVersion: 2) == [])
        #expect(SettingsDrift.differences(local: Self.settings, remote: [Self.settings[0]], peerVersion: 3)
            == ["ha_fp_conntrack.failback_hold_max: here 120, peer absent"])
        // A key it does send is compared.
        let changed = [SyncSettingPair(key: "conntrack_timeouts.tcp_undefined", value: "11")]
        #expect(SettingsDrift.differences(local: Self.settings, remote: changed, peerVersion: 2)
            == ["conntrack_timeouts.tcp_undefined: here 10, peer 11"])
    }

    @Test func detailsAreCapped() {
        let mine = Self.digest((0..<40).map { ("table ip t\($0)", 1) }, whole: 1)
        let theirs = Self.digest([], whole: 2)
        let d = ConfigDrift.compare(localSettings: [], localRuleset: .known(mine),
                                    peer: PeerConfiguration(nodeID: "p", version: 3, settings: [], ruleset: .known(theirs)))
        #expect(d.kind == .ruleset && d.details.count == ConfigDrift.maximumDetails)
        #expect(d.details.last == "... and 9 more")
    }
}

extension Result {
    var failure: Failure? {
        if case .failure(let e) = self { return e }
        return nil
    }
}
