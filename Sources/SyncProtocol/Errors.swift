/// Why bytes from a peer could not be decoded. Every decoder throws one of these and never traps;
/// the receiver answers with an `ERROR` frame naming the case and drops the connection, which
/// the sender turns into a resync of that connection's share.
public enum SyncProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The input ended `needed` bytes too early while reading `what`.
    case truncated(what: String, needed: Int)
    /// A frame header announced more than `maximum` bytes.
    case frameTooLarge(length: Int, maximum: Int)
    /// A frame header announced fewer bytes than a frame header needs.
    case frameTooShort(length: Int)
    case unknownMessageType(UInt8)
    /// The first frame was not a Keepstate hello (magic bytes differ): not our protocol.
    case badMagic
    /// The peer speaks a protocol version this build does not.
    case unsupportedVersion(UInt16)
    /// A field held a value the protocol does not allow.
    case invalidField(field: String, reason: String)
    /// Bytes were left in a message after its last field.
    case trailingBytes(message: String, count: Int)
    /// A frame's sequence number was not the one after the previous frame's.
    case sequenceGap(expected: UInt32, received: UInt32)
    /// A message arrived in a state where the protocol does not allow it.
    case unexpectedMessage(String, state: String)
    /// A resync ended with another generation or count than it carried.
    case resyncMismatch(String)

    public var description: String {
        switch self {
        case .truncated(let what, let needed): "truncated \(what): \(needed) more byte(s) needed"
        case .frameTooLarge(let length, let maximum): "frame of \(length) bytes exceeds the maximum of \(maximum)"
        case .frameTooShort(let length): "frame length \(length) is shorter than a frame header"
        case .unknownMessageType(let t): "unknown message type 0x\(String(t, radix: 16))"
        case .badMagic: "not a keepstate sync hello (bad magic)"
        case .unsupportedVersion(let v):
            "unsupported protocol version \(v) (this build speaks \(SyncWire.minimumVersion) to \(SyncWire.version))"
        case .invalidField(let field, let reason): "invalid \(field): \(reason)"
        case .trailingBytes(let message, let count): "\(count) unexpected trailing byte(s) after \(message)"
        case .sequenceGap(let expected, let received): "sequence gap: expected frame \(expected), received \(received)"
        case .unexpectedMessage(let m, let state): "unexpected \(m) while \(state)"
        case .resyncMismatch(let why): "resync mismatch: \(why)"
        }
    }

    /// The code carried in an ERROR frame for this failure.
    public var errorCode: SyncErrorCode {
        switch self {
        case .unsupportedVersion: .unsupportedVersion
        case .badMagic: .notKeepstate
        case .sequenceGap, .resyncMismatch: .gap
        case .unexpectedMessage: .protocolViolation
        default: .malformed
        }
    }
}

/// Codes of the ERROR message, stable on the wire.
public struct SyncErrorCode: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let malformed = SyncErrorCode(rawValue: 1)
    public static let unsupportedVersion = SyncErrorCode(rawValue: 2)
    public static let notKeepstate = SyncErrorCode(rawValue: 3)
    public static let gap = SyncErrorCode(rawValue: 4)
    public static let protocolViolation = SyncErrorCode(rawValue: 5)
    public static let peerDead = SyncErrorCode(rawValue: 6)
    public static let shuttingDown = SyncErrorCode(rawValue: 7)

    public var description: String {
        switch self {
        case .malformed: "malformed"
        case .unsupportedVersion: "unsupported-version"
        case .notKeepstate: "not-keepstate"
        case .gap: "gap"
        case .protocolViolation: "protocol-violation"
        case .peerDead: "peer-dead"
        case .shuttingDown: "shutting-down"
        default: "code-\(rawValue)"
        }
    }
}
