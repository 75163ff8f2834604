public import VRRP

/// A VRRP message received with what the receive checks need from its IP header.
public struct VRRPInboundPacket: Sendable, Equatable {
    public var header: VRRPIPHeaderInfo
    /// The VRRP message (the IP payload).
    public var message: [UInt8]

    public init(header: VRRPIPHeaderInfo, message: [UInt8]) {
        self.header = header
        self.message = message
    }
}

/// What a transport hands to its receiver.
public enum VRRPInbound: Sendable, Equatable {
    case packet(VRRPInboundPacket)
    /// The IP layer could not be read (short IPv4 header, missing hop-limit control message, a
    /// datagram larger than the receive buffer); counted as `VRRPDropReason.malformedIPHeader`.
    case malformed(String)
    /// The socket reported an error on receive (counted in `receiveErrors`, reception goes on).
    case receiveError(String)
}

/// Sends and receives the VRRP messages of one instance on one interface and address family.
///
/// The runner encodes a message per destination (the VRRPv3 checksum covers a pseudo-header with
/// both addresses) and calls `send` once per destination.
public protocol VRRPTransport: AnyObject, Sendable {
    /// IP source of the adverts: the interface's primary IPv4 address, the IPv6 link-local
    /// address, or the configured `unicast_src_ip` / `mcast_src_ip`.
    var sourceAddress: VRRPAddress { get }
    /// Where adverts go: the VRRP multicast group, or the `unicast_peer` list.
    var destinations: [VRRPAddress] { get }
    /// True when `destinations` are unicast peers.
    var isUnicast: Bool { get }
    /// Starts delivering received packets to `receiver` (on any thread, in arrival order).
    func startReceiving(_ receiver: @escaping @Sendable (VRRPInbound) -> Void)
    /// Sends one encoded message. Synchronous and non-blocking: errors (ENETDOWN while the link is
    /// down, ENOBUFS, ...) come back at once and do not close the transport.
    func send(_ message: [UInt8], to destination: VRRPAddress) throws
    /// Stops receiving and closes the sockets. Idempotent.
    func close() async
}

/// Reading the IPv4 header a raw IPv4 socket delivers in front of the payload.
public enum VRRPIPv4Header {
    /// Splits a received IPv4 datagram into what `VRRPReceiver.validate` needs and the VRRP message.
    /// Fails (with a reason) on a short or non-IPv4 header or a total length beyond the datagram.
    public static func parse(_ datagram: [UInt8]) -> Result<VRRPInboundPacket, VRRPIPHeaderError> {
        guard datagram.count >= 20 else { return .failure(.tooShort(datagram.count)) }
        let version = datagram[0] >> 4
        guard version == 4 else { return .failure(.notIPv4(version)) }
        let headerLength = Int(datagram[0] & 0x0F) * 4
        guard headerLength >= 20, datagram.count >= headerLength else {
            return .failure(.badHeaderLength(headerLength))
        }
        let totalLength = Int(datagram[2]) << 8 | Int(datagram[3])
        // The kernel hands the datagram as received; a total length above it is a broken header.
        guard totalLength >= headerLength, totalLength <= datagram.count else {
            return .failure(.badTotalLength(totalLength, received: datagram.count))
        }
        guard let source = VRRPAddress(bytes: datagram[12..<16]),
              let destination = VRRPAddress(bytes: datagram[16..<20]) else {
            return .failure(.tooShort(datagram.count))
        }
        let header = VRRPIPHeaderInfo(source: source, destination: destination, ttlOrHopLimit: datagram[8])
        return .success(VRRPInboundPacket(header: header, message: Array(datagram[headerLength..<totalLength])))
    }
}

public enum VRRPIPHeaderError: Error, Sendable, Equatable, CustomStringConvertible {
    case tooShort(Int)
    case notIPv4(UInt8)
    case badHeaderLength(Int)
    case badTotalLength(Int, received: Int)

    public var description: String {
        switch self {
        case .tooShort(let n): return "IPv4 datagram of \(n) bytes is shorter than an IPv4 header"
        case .notIPv4(let v): return "IP version \(v) on an IPv4 socket"
        case .badHeaderLength(let n): return "IPv4 header length \(n) is invalid"
        case .badTotalLength(let t, let r): return "IPv4 total length \(t) does not fit the \(r) bytes received"
        }
    }
}
