/// IP protocol numbers Keepstate treats specially. Any other protocol number is carried as is.
public struct IPProtocolNumber: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let icmp = IPProtocolNumber(rawValue: 1)
    public static let tcp = IPProtocolNumber(rawValue: 6)
    public static let udp = IPProtocolNumber(rawValue: 17)
    public static let gre = IPProtocolNumber(rawValue: 47)
    public static let icmpv6 = IPProtocolNumber(rawValue: 58)
    public static let sctp = IPProtocolNumber(rawValue: 132)
    public static let udplite = IPProtocolNumber(rawValue: 136)

    /// The protocols with a name (`description`).
    public static let named: [IPProtocolNumber] = [.tcp, .udp, .icmp, .icmpv6, .gre, .sctp, .udplite]

    /// What `init(name:)` takes, for messages: the names, or a number.
    public static var nameHelp: String {
        named.map(\.description).joined(separator: ", ") + ", or a number 0-255"
    }

    /// The protocol a name (one of `named`'s) or a number 0-255 stands for; nil otherwise.
    public init?(name: String) {
        let lower = name.lowercased()
        if let n = UInt8(lower) {
            self.init(rawValue: n)
            return
        }
        guard let known = Self.named.first(where: { $0.description == lower }) else { return nil }
        self = known
    }

    /// Whether the tuple's two 16-bit fields are ports (TCP, UDP, SCTP, UDP-Lite).
    public var hasPorts: Bool { self == .tcp || self == .udp || self == .sctp || self == .udplite }
    /// Whether the tuple's two 16-bit fields are ICMP id and type/code.
    public var isICMP: Bool { self == .icmp || self == .icmpv6 }

    public var description: String {
        switch self {
        case .icmp: "icmp"
        case .tcp: "tcp"
        case .udp: "udp"
        case .gre: "gre"
        case .icmpv6: "icmpv6"
        case .sctp: "sctp"
        case .udplite: "udplite"
        default: "proto-\(rawValue)"
        }
    }
}

/// One direction of a connection.
///
/// For TCP, UDP, SCTP and UDP-Lite the two 16-bit fields are the ports. For ICMP and ICMPv6,
/// `sourcePort` is the identifier and `destinationPort` packs type (high byte) and code (low
/// byte), as the kernel keys them. For other protocols both are zero.
public struct ConntrackTuple: Sendable, Hashable {
    public var source: IPAddressBits
    public var destination: IPAddressBits
    public var sourcePort: UInt16
    public var destinationPort: UInt16

    @inlinable
    public init(source: IPAddressBits, destination: IPAddressBits, sourcePort: UInt16, destinationPort: UInt16) {
        self.source = source
        self.destination = destination
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
    }

    /// The tuple a reply would carry when no address or port is translated.
    @inlinable
    public var inverted: ConntrackTuple {
        ConntrackTuple(source: destination, destination: source, sourcePort: destinationPort, destinationPort: sourcePort)
    }
}

/// The TCP conntrack states, numbered as the kernel numbers them (`enum tcp_conntrack`).
public enum TCPState: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case none = 0
    case synSent = 1
    case synRecv = 2
    case established = 3
    case finWait = 4
    case closeWait = 5
    case lastAck = 6
    case timeWait = 7
    case close = 8
    case synSent2 = 9

    public var description: String {
        switch self {
        case .none: "NONE"
        case .synSent: "SYN_SENT"
        case .synRecv: "SYN_RECV"
        case .established: "ESTABLISHED"
        case .finWait: "FIN_WAIT"
        case .closeWait: "CLOSE_WAIT"
        case .lastAck: "LAST_ACK"
        case .timeWait: "TIME_WAIT"
        case .close: "CLOSE"
        case .synSent2: "SYN_SENT2"
        }
    }
}

/// Conntrack status bits, as the kernel numbers them (`enum ip_conntrack_status`).
public struct ConntrackStatus: OptionSet, Sendable, Hashable {
    public var rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let expected = ConntrackStatus(rawValue: 1 << 0)
    public static let seenReply = ConntrackStatus(rawValue: 1 << 1)
    public static let assured = ConntrackStatus(rawValue: 1 << 2)
    public static let confirmed = ConntrackStatus(rawValue: 1 << 3)
    public static let sourceNAT = ConntrackStatus(rawValue: 1 << 4)
    public static let destinationNAT = ConntrackStatus(rawValue: 1 << 5)
    public static let sequenceAdjust = ConntrackStatus(rawValue: 1 << 6)
    public static let sourceNATDone = ConntrackStatus(rawValue: 1 << 7)
    public static let destinationNATDone = ConntrackStatus(rawValue: 1 << 8)
    public static let dying = ConntrackStatus(rawValue: 1 << 9)
    public static let fixedTimeout = ConntrackStatus(rawValue: 1 << 10)
    public static let template = ConntrackStatus(rawValue: 1 << 11)
    public static let untracked = ConntrackStatus(rawValue: 1 << 12)
    public static let helper = ConntrackStatus(rawValue: 1 << 13)
    public static let offload = ConntrackStatus(rawValue: 1 << 14)
}

/// What identifies a conntrack inside one VRF: family, protocol, zone and the original tuple.
///
/// The VRF is not a field: every table, sync session and store belongs to exactly one VRF, so
/// conntracks of two VRFs can never meet in one container.
public struct ConntrackKey: Sendable, Hashable {
    public var original: ConntrackTuple
    public var family: AddressFamily
    public var proto: IPProtocolNumber
    public var zone: UInt16

    @inlinable
    public init(family: AddressFamily, proto: IPProtocolNumber, original: ConntrackTuple, zone: UInt16 = 0) {
        self.original = original
        self.family = family
        self.proto = proto
        self.zone = zone
    }

    /// A hash that is the same on every node and every run (Swift's `Hasher` is seeded per
    /// process, so it cannot choose a sync connection). Documented in docs/protocol.md.
    @inlinable
    public var stableHash: UInt64 {
        var h: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ (UInt64(family.rawValue) << 8 | UInt64(proto.rawValue)) ^ UInt64(zone) << 16
        @inline(__always) func mix(_ h: inout UInt64, _ v: UInt64) {
            h ^= v
            h &*= 0xBF58_476D_1CE4_E5B9
            h ^= h >> 31
        }
        mix(&h, original.source.high)
        mix(&h, original.source.low)
        mix(&h, original.destination.high)
        mix(&h, original.destination.low)
        mix(&h, UInt64(original.sourcePort) << 16 | UInt64(original.destinationPort))
        h &*= 0x94D0_49BB_1331_11EB
        h ^= h >> 29
        return h
    }

    /// Sets and dictionaries of keys hash the stable hash (one word) instead of each field:
    /// the master's policy does several such lookups per kernel event. Equal keys have equal
    /// stable hashes, and `Hasher` still seeds the result per process.
    @inlinable
    public func hash(into hasher: inout Hasher) {
        hasher.combine(stableHash)
    }

    /// Which of `count` sync connections carries this conntrack.
    @inlinable
    public func share(of count: Int) -> Int {
        Int(truncatingIfNeeded: (stableHash >> 32) % UInt64(max(count, 1)))
    }
}

/// One connection tracked by the kernel, with everything a peer needs to recreate it exactly.
///
/// `reply` differs from `original.inverted` when NAT translated the connection: for a CG-NAT
/// source NAT, the reply's destination address and port are the public ones.
public struct Conntrack: Sendable, Hashable {
    public var original: ConntrackTuple
    public var reply: ConntrackTuple
    /// Seconds left before the conntrack expires, as last read from the table.
    public var timeout: UInt32
    public var status: ConntrackStatus
    public var mark: UInt32
    public var zone: UInt16
    public var family: AddressFamily
    public var proto: IPProtocolNumber
    /// Meaningful for TCP only; `.none` otherwise.
    public var tcpState: TCPState

    @inlinable
    public init(
        family: AddressFamily,
        proto: IPProtocolNumber,
        original: ConntrackTuple,
        reply: ConntrackTuple? = nil,
        tcpState: TCPState = .none,
        status: ConntrackStatus = [.seenReply, .assured, .confirmed],
        timeout: UInt32,
        mark: UInt32 = 0,
        zone: UInt16 = 0
    ) {
        self.original = original
        self.reply = reply ?? original.inverted
        self.timeout = timeout
        self.status = status
        self.mark = mark
        self.zone = zone
        self.family = family
        self.proto = proto
        self.tcpState = tcpState
    }

    @inlinable
    public var key: ConntrackKey {
        ConntrackKey(family: family, proto: proto, original: original, zone: zone)
    }

    /// Equal in everything but the remaining timeout (which changes by itself).
    @inlinable
    public func sameExceptTimeout(_ other: Conntrack) -> Bool {
        original == other.original && reply == other.reply && tcpState == other.tcpState && status == other.status
            && mark == other.mark && zone == other.zone && family == other.family && proto == other.proto
    }

    /// Whether addresses or ports are translated in either direction.
    @inlinable
    public var isNAT: Bool { reply != original.inverted }

    /// Whether the conntrack is established in the sense of the sync rules: TCP in the
    /// ESTABLISHED state; any other protocol once traffic was seen in both directions.
    @inlinable
    public var isEstablished: Bool {
        proto == .tcp ? tcpState == .established : status.contains(.seenReply)
    }
}

extension Conntrack: CustomStringConvertible {
    /// One line in the style of `conntrack -L`.
    public var description: String {
        func side(_ t: ConntrackTuple) -> String {
            var s = "src=\(t.source.formatted(family)) dst=\(t.destination.formatted(family))"
            if proto.hasPorts {
                s += " sport=\(t.sourcePort) dport=\(t.destinationPort)"
            } else if proto.isICMP {
                s += " type=\(t.destinationPort >> 8) code=\(t.destinationPort & 0xFF) id=\(t.sourcePort)"
            }
            return s
        }
        var line = "\(family) \(proto) \(timeout)"
        if proto == .tcp { line += " \(tcpState)" }
        line += " " + side(original) + " " + side(reply)
        if mark != 0 { line += " mark=\(mark)" }
        if zone != 0 { line += " zone=\(zone)" }
        return line
    }
}

/// One change to a conntrack, as carried in an UPDATES frame.
public enum ConntrackUpdate: Sendable, Hashable {
    case upsert(Conntrack)
    case delete(ConntrackKey)

    @inlinable
    public var key: ConntrackKey {
        switch self {
        case .upsert(let c): c.key
        case .delete(let k): k
        }
    }
}

extension Conntrack {
    /// Never synced, whatever its state (docs/semantics.md, rule 1): created from an ALG
    /// helper's expectation, a template, or untracked.
    public var isSyncExcluded: Bool { !status.isDisjoint(with: [.expected, .template, .untracked]) }
}
