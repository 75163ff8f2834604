import CVRRPNet
import Glibc
import NIOCore
import NIOPosix
import Synchronization
import VRRP

/// VRRP over IPv4: two raw sockets for IP protocol 112.
///
/// - Receive: unbound (a raw socket bound to an address only sees packets sent *to* that address,
///   which would hide the multicast adverts), `SO_BINDTODEVICE`, 224.0.0.18 joined on the interface
///   (`ip_mreqn` with the index), `IP_MULTICAST_ALL` off. It is driven by SwiftNIO: the fd is made
///   here (so it can be made inside a network namespace) and adopted with
///   `DatagramBootstrap.withBoundSocket`; the datagrams include the IPv4 header, where TTL, source
///   and destination are read. NIO closes a datagram channel on most read errors, but an
///   unconnected raw socket without `IP_RECVERR` is never told of ICMP errors (`raw_err`), so the
///   ICMP protocol-unreachable replies of a unicast peer without VRRP cannot reach it (tested).
/// - Send: bound to the source address (the pseudo-header of the VRRPv3 checksum needs the exact
///   source the kernel will put in the header), `SO_BINDTODEVICE`, `IP_MULTICAST_IF`, TTL and
///   multicast TTL 255, `IP_MULTICAST_LOOP` off, and a drop-all BPF filter (it would otherwise queue
///   the unicast adverts addressed to us). It is written with a plain non-blocking `sendto`, not a
///   NIO channel: NIO's datagram write path closes the channel on any errno other than EMSGSIZE and
///   EHOSTUNREACH, and a router sees ENETDOWN / ENETUNREACH / ENOBUFS / EADDRNOTAVAIL whenever a
///   link flaps; a VRRP socket must survive those and count them.
final class VRRPIPv4Transport: VRRPTransport {
    let sourceAddress: VRRPAddress
    let destinations: [VRRPAddress]
    let isUnicast: Bool
    private let sendFD: Mutex<Int32>
    private let receiveChannel: any Channel
    private let receiver: ReceiverBox

    private init(sourceAddress: VRRPAddress, destinations: [VRRPAddress], isUnicast: Bool, sendFD: Int32,
                 receiveChannel: any Channel, receiver: ReceiverBox) {
        self.sourceAddress = sourceAddress
        self.destinations = destinations
        self.isUnicast = isUnicast
        self.sendFD = Mutex(sendFD)
        self.receiveChannel = receiveChannel
        self.receiver = receiver
    }

    /// Makes both sockets in the calling thread's network namespace. Returns (receive, send).
    static func makeSockets(interface: VRRPInterface, source: VRRPAddress, multicast: Bool) throws -> (Int32, Int32) {
        let name = interface.name
        let rx = try Sys.socket(AF_INET, Int32(SOCK_RAW.rawValue), Int32(vrrpIPProtocol), "AF_INET, SOCK_RAW, 112")
        do {
            try Sys.bindToDevice(rx, name)
            try Sys.setInt(rx, Int32(IPPROTO_IP), IP_MULTICAST_ALL, 0, "IP_MULTICAST_ALL")
            if multicast {
                var m = ip_mreqn()
                m.imr_multiaddr = Sys.inAddr(.vrrpGroupV4)
                m.imr_ifindex = interface.index
                try Sys.setValue(rx, Int32(IPPROTO_IP), IP_ADD_MEMBERSHIP, m, "IP_ADD_MEMBERSHIP 224.0.0.18 on \(name)")
            }
        } catch {
            Glibc.close(rx)
            throw error
        }
        let tx: Int32
        do {
            tx = try Sys.socket(AF_INET, Int32(SOCK_RAW.rawValue), Int32(vrrpIPProtocol), "AF_INET, SOCK_RAW, 112")
        } catch {
            Glibc.close(rx)
            throw error
        }
        do {
            guard ks_vrrp_attach_drop_all_filter(tx) == 0 else {
                throw VRRPSystemError("setsockopt(SO_ATTACH_FILTER)", errno: errno)
            }
            try Sys.bindToDevice(tx, name)
            var sa = Sys.sockaddrIn(source)
            let r = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(tx, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard r == 0 else { throw VRRPSystemError("bind(\(source)) on \(name)", errno: errno) }
            var m = ip_mreqn()
            m.imr_ifindex = interface.index
            try Sys.setValue(tx, Int32(IPPROTO_IP), IP_MULTICAST_IF, m, "IP_MULTICAST_IF \(name)")
            try Sys.setInt(tx, Int32(IPPROTO_IP), IP_MULTICAST_TTL, 255, "IP_MULTICAST_TTL")
            try Sys.setInt(tx, Int32(IPPROTO_IP), IP_TTL, 255, "IP_TTL")
            try Sys.setInt(tx, Int32(IPPROTO_IP), IP_MULTICAST_LOOP, 0, "IP_MULTICAST_LOOP")
            try Sys.setInt(tx, Int32(IPPROTO_IP), IP_MULTICAST_ALL, 0, "IP_MULTICAST_ALL")
            try Sys.setNonBlocking(tx)
        } catch {
            Glibc.close(rx)
            Glibc.close(tx)
            throw error
        }
        return (rx, tx)
    }

    /// Adopts the sockets made by `makeSockets` (takes ownership of both descriptors).
    static func adopt(receiveFD: Int32, sendFD: Int32, source: VRRPAddress, destinations: [VRRPAddress],
                      isUnicast: Bool, eventLoop: any EventLoop) async throws -> VRRPIPv4Transport {
        let box = ReceiverBox()
        let channel: any Channel
        do {
            channel = try await DatagramBootstrap(group: eventLoop)
                .channelOption(.maxMessagesPerRead, value: 16)
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 4096))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(VRRPIPv4ReceiveHandler(box: box))
                    }
                }
                .withBoundSocket(receiveFD)
                .get()
        } catch {
            // withBoundSocket closes the descriptor only once it made a channel of it.
            Glibc.close(sendFD)
            throw error
        }
        return VRRPIPv4Transport(sourceAddress: source, destinations: destinations, isUnicast: isUnicast,
                                 sendFD: sendFD, receiveChannel: channel, receiver: box)
    }

    func startReceiving(_ receiver: @escaping @Sendable (VRRPInbound) -> Void) {
        self.receiver.set(receiver)
    }

    func send(_ message: [UInt8], to destination: VRRPAddress) throws {
        try sendFD.withLock { fd in
            guard fd >= 0 else { throw VRRPSystemError("sendto \(destination)", errno: EBADF) }
            var sa = Sys.sockaddrIn(destination)
            let n = message.withUnsafeBytes { buf in
                withUnsafePointer(to: &sa) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(fd, buf.baseAddress, buf.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
            guard n == message.count else { throw VRRPSystemError("sendto \(destination)", errno: n < 0 ? errno : EMSGSIZE) }
        }
    }

    func close() async {
        receiver.set(nil)
        sendFD.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
        try? await receiveChannel.close()
    }
}

/// Where the receive handler delivers; set when the runner starts, cleared on close.
final class ReceiverBox: Sendable {
    private let value = Mutex<(@Sendable (VRRPInbound) -> Void)?>(nil)
    func set(_ r: (@Sendable (VRRPInbound) -> Void)?) { value.withLock { $0 = r } }
    func deliver(_ inbound: VRRPInbound) {
        let r = value.withLock { $0 }
        r?(inbound)
    }
}

final class VRRPIPv4ReceiveHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let box: ReceiverBox

    init(box: ReceiverBox) { self.box = box }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = Self.unwrapInboundIn(data).data
        let bytes = buffer.readBytes(length: buffer.readableBytes) ?? []
        switch VRRPIPv4Header.parse(bytes) {
        case .success(let packet): box.deliver(.packet(packet))
        case .failure(let error): box.deliver(.malformed(error.description))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Non-fatal read errors (ECONNREFUSED, ENOMEM) land here; the channel stays open.
        box.deliver(.receiveError("\(error)"))
    }
}
