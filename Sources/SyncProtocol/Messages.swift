public import NIOCore

/// Constants of the sync wire format (docs/protocol.md).
public enum SyncWire {
    /// The protocol version this build speaks (and sends in its hellos). Version 2 adds the
    /// activity age of forced-synchronization records (record flag bit 5); version 3 the
    /// ruleset fingerprint (a HELLO field, a HELLO_ACK trailing field, the RULESET message).
    public static let version: UInt16 = 3
    /// The oldest version whose hellos this build accepts. A version 1 sender never sets the
    /// bits version 2 added, so its stream decodes as it always did; a version 1 or 2 hello
    /// has no ruleset field.
    public static let minimumVersion: UInt16 = 1
    /// The first version with the ruleset fingerprint.
    public static let rulesetVersion: UInt16 = 3
    /// The longest `str16` (bytes): encoders cut longer strings at a character boundary,
    /// decoders refuse them (`invalidField`).
    public static let maximumString16 = 4096
    /// "KSYN": the first bytes of every hello.
    public static let magic: UInt32 = 0x4B53_594E
    /// Bytes of the frame header: length u32, type u8, sequence u32.
    public static let headerLength = 9
    /// The most bytes a frame may announce after its length field.
    public static let maximumFrameLength = 1 << 20
    /// Records a sender puts in one UPDATES frame: about 50 KiB of IPv4 records, and at most
    /// 141 KiB of the largest records (96 bytes), well under `maximumFrameLength`.
    public static let recordsPerFrame = 1500
    /// Limits on hello contents.
    public static let maximumConnections: UInt16 = 64
    public static let maximumSettings = 256
}

/// The message types (byte 4 of every frame).
public struct SyncMessageType: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let hello = SyncMessageType(rawValue: 0x01)
    public static let helloAck = SyncMessageType(rawValue: 0x02)
    public static let resyncBegin = SyncMessageType(rawValue: 0x03)
    public static let resyncEnd = SyncMessageType(rawValue: 0x04)
    public static let updates = SyncMessageType(rawValue: 0x05)
    public static let heartbeat = SyncMessageType(rawValue: 0x06)
    public static let error = SyncMessageType(rawValue: 0x07)
    /// Version 3: the sender's ruleset fingerprint changed (sender to receiver, after the
    /// HELLO_ACK, only to a receiver whose HELLO_ACK says version 3 or later).
    public static let ruleset = SyncMessageType(rawValue: 0x08)

    public var isKnown: Bool { (0x01...0x08).contains(rawValue) }

    public var description: String {
        switch self {
        case .hello: "HELLO"
        case .helloAck: "HELLO_ACK"
        case .resyncBegin: "RESYNC_BEGIN"
        case .resyncEnd: "RESYNC_END"
        case .updates: "UPDATES"
        case .heartbeat: "HEARTBEAT"
        case .error: "ERROR"
        case .ruleset: "RULESET"
        default: "TYPE_0x\(String(rawValue, radix: 16))"
        }
    }
}

/// One sync-relevant setting, compared between the two nodes to name configuration drift.
public struct SyncSettingPair: Sendable, Hashable {
    public var key: String
    public var value: String
    public init(key: String, value: String) {
        self.key = key
        self.value = value
    }
}

/// The first message on every sync connection, from the sending side.
public struct Hello: Sendable, Hashable {
    public var version: UInt16
    /// The sending node's `router_id`.
    public var nodeID: String
    public var vrf: String
    /// Which share this connection carries, and how many there are.
    public var connectionIndex: UInt16
    public var connectionCount: UInt16
    /// SHA-256 of the canonical sync-relevant settings.
    public var fingerprint: [UInt8]
    /// The settings themselves, so that a receiver can say which differ.
    public var settings: [SyncSettingPair]
    /// Version 3 and later: the sender's ruleset fingerprint for this VRF. nil in a version 1
    /// or 2 hello; a version 3 hello always carries one (nil is sent as unknown).
    public var ruleset: RulesetFingerprint?

    public init(
        version: UInt16 = SyncWire.version, nodeID: String, vrf: String, connectionIndex: UInt16,
        connectionCount: UInt16, fingerprint: [UInt8], settings: [SyncSettingPair], ruleset: RulesetFingerprint? = nil
    ) {
        self.version = version
        self.nodeID = nodeID
        self.vrf = vrf
        self.connectionIndex = connectionIndex
        self.connectionCount = connectionCount
        self.fingerprint = fingerprint
        self.settings = settings
        self.ruleset = ruleset
    }
}

/// The receiver's answer to a hello.
public struct HelloAck: Sendable, Hashable {
    public struct Status: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public var rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// Accepted; the settings agree.
        public static let accepted = Status(rawValue: 0)
        /// Accepted, but the sync-relevant settings differ (see `settings`).
        public static let acceptedWithDrift = Status(rawValue: 1)
        public static let unsupportedVersion = Status(rawValue: 2)
        public static let unknownVRF = Status(rawValue: 3)
        /// The certificate or the source address is not the configured peer of this VRF.
        public static let peerNotAllowed = Status(rawValue: 4)
        public static let badConnectionIndex = Status(rawValue: 5)

        public var isAccepted: Bool { self == .accepted || self == .acceptedWithDrift }

        public var description: String {
            switch self {
            case .accepted: "accepted"
            case .acceptedWithDrift: "accepted-with-config-drift"
            case .unsupportedVersion: "unsupported-version"
            case .unknownVRF: "unknown-vrf"
            case .peerNotAllowed: "peer-not-allowed"
            case .badConnectionIndex: "bad-connection-index"
            default: "status-\(rawValue)"
            }
        }
    }

    public var status: Status
    public var version: UInt16
    public var nodeID: String
    public var fingerprint: [UInt8]
    public var settings: [SyncSettingPair]
    public var message: String
    /// The receiver's ruleset fingerprint: a trailing field, present (version 3 and later) when
    /// the ack answers a version 3 hello, so that a version 1 or 2 sender never sees it.
    public var ruleset: RulesetFingerprint?

    public init(
        status: Status, version: UInt16 = SyncWire.version, nodeID: String, fingerprint: [UInt8],
        settings: [SyncSettingPair], message: String, ruleset: RulesetFingerprint? = nil
    ) {
        self.status = status
        self.version = version
        self.nodeID = nodeID
        self.fingerprint = fingerprint
        self.settings = settings
        self.message = message
        self.ruleset = ruleset
    }
}

/// Every message but UPDATES, which is decoded by the record codec straight into a batch.
public enum SyncControlMessage: Sendable, Hashable {
    case hello(Hello)
    case helloAck(HelloAck)
    case resyncBegin(generation: UInt32)
    case resyncEnd(generation: UInt32, count: UInt64)
    case heartbeat
    case error(code: SyncErrorCode, message: String)
    /// Version 3: the sender's ruleset fingerprint changed.
    case ruleset(RulesetFingerprint)

    public var type: SyncMessageType {
        switch self {
        case .hello: .hello
        case .helloAck: .helloAck
        case .resyncBegin: .resyncBegin
        case .resyncEnd: .resyncEnd
        case .heartbeat: .heartbeat
        case .error: .error
        case .ruleset: .ruleset
        }
    }
}

/// A frame as cut from the stream: its type, sequence number and payload.
public struct SyncFrame: Sendable {
    public var type: SyncMessageType
    public var sequence: UInt32
    public var payload: ByteBuffer

    public init(type: SyncMessageType, sequence: UInt32, payload: ByteBuffer) {
        self.type = type
        self.sequence = sequence
        self.payload = payload
    }
}

extension ByteBuffer {
    /// Cuts one frame from the front of the readable bytes. Returns nil (consuming nothing)
    /// while the frame is incomplete; throws when the header is impossible.
    public mutating func readSyncFrame() throws(SyncProtocolError) -> SyncFrame? {
        guard readableBytes >= 4, let length = getInteger(at: readerIndex, as: UInt32.self) else { return nil }
        guard length >= 5 else { throw .frameTooShort(length: Int(length)) }
        guard length <= SyncWire.maximumFrameLength else {
            throw .frameTooLarge(length: Int(length), maximum: SyncWire.maximumFrameLength)
        }
        guard readableBytes >= 4 + Int(length) else { return nil }
        moveReaderIndex(forwardBy: 4)
        // These two reads cannot fail: the length check above guarantees the bytes.
        let type = readInteger(as: UInt8.self) ?? 0
        let sequence = readInteger(as: UInt32.self) ?? 0
        let payload = readSlice(length: Int(length) - 5) ?? ByteBuffer()
        return SyncFrame(type: SyncMessageType(rawValue: type), sequence: sequence, payload: payload)
    }

    /// Starts a frame: writes a header with a placeholder length. Pass the returned index to
    /// `endSyncFrame(lengthAt:)` once the payload is written.
    public mutating func beginSyncFrame(_ type: SyncMessageType, sequence: UInt32) -> Int {
        let at = writerIndex
        writeInteger(UInt32(0))
        writeInteger(type.rawValue)
        writeInteger(sequence)
        return at
    }

    /// Patches the length of a frame started with `beginSyncFrame`.
    public mutating func endSyncFrame(lengthAt at: Int) {
        setInteger(UInt32(writerIndex - at - 4), at: at)
    }

    /// Writes a whole control frame.
    public mutating func writeSyncMessage(_ message: SyncControlMessage, sequence: UInt32) {
        let at = beginSyncFrame(message.type, sequence: sequence)
        switch message {
        case .hello(let h):
            writeInteger(SyncWire.magic)
            writeInteger(h.version)
            writeString8(h.nodeID)
            writeString8(h.vrf)
            writeInteger(h.connectionIndex)
            writeInteger(h.connectionCount)
            writeBytes8(h.fingerprint)
            writeSettings(h.settings)
            if h.version >= SyncWire.rulesetVersion {
                writeRulesetFingerprint(h.ruleset ?? .unknown(reason: "not reported"))
            }
        case .helloAck(let a):
            writeInteger(a.status.rawValue)
            writeInteger(a.version)
            writeString8(a.nodeID)
            writeBytes8(a.fingerprint)
            writeSettings(a.settings)
            writeString16(a.message)
            if a.version >= SyncWire.rulesetVersion, let ruleset = a.ruleset { writeRulesetFingerprint(ruleset) }
        case .resyncBegin(let g):
            writeInteger(g)
        case .resyncEnd(let g, let count):
            writeInteger(g)
            writeInteger(count)
        case .heartbeat:
            break
        case .error(let code, let message):
            writeInteger(code.rawValue)
            writeString16(message)
        case .ruleset(let r):
            writeRulesetFingerprint(r)
        }
        endSyncFrame(lengthAt: at)
    }

    // Strings longer than their length prefix allows are cut at a character boundary; the
    // validated configuration never produces one.
    mutating func writeString8(_ s: String) { writeLengthPrefixed(Array(s.utf8), max: 255, width: 1, utf8: true) }
    mutating func writeString16(_ s: String) { writeLengthPrefixed(Array(s.utf8), max: SyncWire.maximumString16, width: 2, utf8: true) }
    mutating func writeBytes8(_ b: [UInt8]) { writeLengthPrefixed(b, max: 255, width: 1, utf8: false) }

    private mutating func writeLengthPrefixed(_ bytes: [UInt8], max: Int, width: Int, utf8: Bool) {
        var bytes = bytes
        if bytes.count > max {
            bytes = Array(bytes.prefix(max))
            // A cut string must stay valid UTF-8: drop the partial character at the end.
            while utf8, !bytes.isEmpty, String(validating: bytes, as: UTF8.self) == nil { bytes.removeLast() }
        }
        if width == 1 { writeInteger(UInt8(bytes.count)) } else { writeInteger(UInt16(bytes.count)) }
        writeBytes(bytes)
    }

    private mutating func writeSettings(_ settings: [SyncSettingPair]) {
        let list = settings.prefix(SyncWire.maximumSettings)
        writeInteger(UInt16(list.count))
        for s in list {
            writeString8(s.key)
            writeString8(s.value)
        }
    }
}

extension SyncControlMessage {
    /// Decodes the payload of a control frame of the given type. The whole payload must be
    /// consumed; UPDATES is not a control message.
    public static func decode(type: SyncMessageType, payload: ByteBuffer) throws(SyncProtocolError) -> SyncControlMessage {
        let result: Result<SyncControlMessage, SyncProtocolError> = payload.withUnsafeReadableBytes { ptr in
            var r = RawReader(ptr)
            do throws(SyncProtocolError) {
                let m = try decode(type: type, &r)
                if r.remaining != 0 { throw SyncProtocolError.trailingBytes(message: "\(type)", count: r.remaining) }
                return .success(m)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    private static func decode(type: SyncMessageType, _ r: inout RawReader) throws(SyncProtocolError) -> SyncControlMessage {
        switch type {
        case .hello:
            guard try r.u32("magic") == SyncWire.magic else { throw .badMagic }
            let version = try r.u16("version")
            guard (SyncWire.minimumVersion...SyncWire.version).contains(version) else { throw .unsupportedVersion(version) }
            let node = try r.string8("node id")
            let vrf = try r.string8("vrf")
            let index = try r.u16("connection index")
            let count = try r.u16("connection count")
            guard count >= 1, count <= SyncWire.maximumConnections else {
                throw .invalidField(field: "connection count", reason: "\(count) is outside 1...\(SyncWire.maximumConnections)")
            }
            guard index < count else {
                throw .invalidField(field: "connection index", reason: "\(index) is not below the count \(count)")
            }
            guard !node.isEmpty else { throw .invalidField(field: "node id", reason: "empty") }
            guard !vrf.isEmpty else { throw .invalidField(field: "vrf", reason: "empty") }
            let fingerprint = try r.bytes(Int(try r.u8("fingerprint")), "fingerprint")
            let settings = try decodeSettings(&r)
            var ruleset: RulesetFingerprint?
            if version >= SyncWire.rulesetVersion { ruleset = try RulesetFingerprint.decode(&r) }
            return .hello(Hello(
                version: version, nodeID: node, vrf: vrf, connectionIndex: index, connectionCount: count,
                fingerprint: fingerprint, settings: settings, ruleset: ruleset))
        case .helloAck:
            let status = HelloAck.Status(rawValue: try r.u8("status"))
            let version = try r.u16("version")
            let node = try r.string8("node id")
            let fingerprint = try r.bytes(Int(try r.u8("fingerprint")), "fingerprint")
            let settings = try decodeSettings(&r)
            let message = try r.string16("message")
            // Trailing and optional: an ack to a version 1 or 2 hello has none.
            var ruleset: RulesetFingerprint?
            if version >= SyncWire.rulesetVersion && r.remaining > 0 { ruleset = try RulesetFingerprint.decode(&r) }
            return .helloAck(HelloAck(
                status: status, version: version, nodeID: node, fingerprint: fingerprint, settings: settings,
                message: message, ruleset: ruleset))
        case .resyncBegin:
            return .resyncBegin(generation: try r.u32("generation"))
        case .resyncEnd:
            return .resyncEnd(generation: try r.u32("generation"), count: try r.u64("count"))
        case .heartbeat:
            return .heartbeat
        case .error:
            return .error(code: SyncErrorCode(rawValue: try r.u16("error code")), message: try r.string16("error message"))
        case .ruleset:
            return .ruleset(try RulesetFingerprint.decode(&r))
        default:
            throw .unknownMessageType(type.rawValue)
        }
    }

    private static func decodeSettings(_ r: inout RawReader) throws(SyncProtocolError) -> [SyncSettingPair] {
        let n = Int(try r.u16("settings count"))
        guard n <= SyncWire.maximumSettings else {
            throw .invalidField(field: "settings count", reason: "\(n) exceeds \(SyncWire.maximumSettings)")
        }
        var out: [SyncSettingPair] = []
        out.reserveCapacity(n)
        for _ in 0..<n {
            out.append(SyncSettingPair(key: try r.string8("setting key"), value: try r.string8("setting value")))
        }
        return out
    }
}
