import CVRRPNet
import Glibc
import NIOPosix
import Synchronization
import VRRP

// Not in Swift's Glibc module on every libc version; values from <linux/in6.h>.
private let ipv6MulticastAll: Int32 = 29
private let ipv6RecvPktInfo: Int32 = 49
private let ipv6RecvHopLimit: Int32 = 51

/// VRRP over IPv6: one raw socket for next header 112, handled with Glibc on a dedicated thread.
///
/// Why not SwiftNIO here: an IPv6 raw socket delivers the payload without the IPv6 header, so the
/// hop limit (which must be 255) and the destination address (part of the checksum's
/// pseudo-header) only come as `IPV6_HOPLIMIT` / `IPV6_PKTINFO` control messages, and NIO's
/// `AddressedEnvelope.Metadata` carries only ECN and packet info, never the hop limit. Sending
/// needs the link-local source as an `IPV6_PKTINFO` control message (binding the socket to it
/// would stop it from seeing ff02::12), which NIO cannot send either.
///
/// The socket is unbound, `SO_BINDTODEVICE`, joins ff02::12 on the interface, has multicast and
/// unicast hop limit 255, multicast loop off, `IPV6_MULTICAST_ALL` off, and `IPV6_RECVHOPLIMIT` and
/// `IPV6_RECVPKTINFO` on. `IPV6_CHECKSUM` stays off (the default for protocols other than ICMPv6):
/// the codec computes the checksum with the IPv6 pseudo-header itself when sending, and on receive
/// `VRRPReceiver.validate` checks it, so a bad checksum is counted as `badChecksum` instead of being
/// dropped unseen by the kernel.
///
/// The receive thread is a one-thread `NIOThreadPool` blocked in `poll` on the socket and an
/// eventfd that `close` signals. Sends are plain non-blocking `sendmsg` calls from the caller.
final class VRRPIPv6Transport: VRRPTransport {
    let sourceAddress: VRRPAddress
    let destinations: [VRRPAddress]
    let isUnicast: Bool
    private let interfaceIndex: Int32
    /// The socket; -1 once closed. Sends take the lock so a closed descriptor number is never reused.
    private let fd: Mutex<Int32>
    private let rawFD: Int32
    private let wakeFD: Int32
    private let receiver = ReceiverBox()
    private let thread = Mutex<(pool: NIOThreadPool, task: Task<Void, Never>)?>(nil)
    private let closed = Mutex(false)

    init(fd: Int32, wakeFD: Int32, interfaceIndex: Int32, source: VRRPAddress, destinations: [VRRPAddress], isUnicast: Bool) {
        self.fd = Mutex(fd)
        self.rawFD = fd
        self.wakeFD = wakeFD
        self.interfaceIndex = interfaceIndex
        self.sourceAddress = source
        self.destinations = destinations
        self.isUnicast = isUnicast
    }

    /// Makes the socket (and the eventfd) in the calling thread's network namespace.
    static func makeSocket(interface: VRRPInterface, multicast: Bool) throws -> (fd: Int32, wake: Int32) {
        let s = try Sys.socket(AF_INET6, Int32(SOCK_RAW.rawValue), Int32(vrrpIPProtocol), "AF_INET6, SOCK_RAW, 112")
        do {
            let v6 = Int32(IPPROTO_IPV6)
            try Sys.bindToDevice(s, interface.name)
            try Sys.setInt(s, v6, ipv6RecvHopLimit, 1, "IPV6_RECVHOPLIMIT")
            try Sys.setInt(s, v6, ipv6RecvPktInfo, 1, "IPV6_RECVPKTINFO")
            try Sys.setInt(s, v6, IPV6_MULTICAST_HOPS, 255, "IPV6_MULTICAST_HOPS")
            try Sys.setInt(s, v6, IPV6_UNICAST_HOPS, 255, "IPV6_UNICAST_HOPS")
            try Sys.setInt(s, v6, IPV6_MULTICAST_LOOP, 0, "IPV6_MULTICAST_LOOP")
            try Sys.setValue(s, v6, IPV6_MULTICAST_IF, UInt32(interface.index), "IPV6_MULTICAST_IF \(interface.name)")
            // Linux 4.20+; older kernels deliver every joined group, which the VRID check absorbs.
            _ = try? Sys.setInt(s, v6, ipv6MulticastAll, 0, "IPV6_MULTICAST_ALL")
            if multicast {
                let m = ipv6_mreq(ipv6mr_multiaddr: Sys.in6Addr(.vrrpGroupV6), ipv6mr_interface: UInt32(interface.index))
                try Sys.setValue(s, v6, IPV6_ADD_MEMBERSHIP, m, "IPV6_ADD_MEMBERSHIP ff02::12 on \(interface.name)")
            }
            try Sys.setNonBlocking(s)
        } catch {
            Glibc.close(s)
            throw error
        }
        let wake = eventfd(0, Int32(EFD_CLOEXEC) | Int32(EFD_NONBLOCK))
        guard wake >= 0 else {
            let e = errno
            Glibc.close(s)
            throw VRRPSystemError("eventfd", errno: e)
        }
        return (s, wake)
    }

    func startReceiving(_ receiver: @escaping @Sendable (VRRPInbound) -> Void) {
        self.receiver.set(receiver)
        thread.withLock { t in
            guard t == nil, !closed.withLock({ $0 }) else { return }
            let pool = NIOThreadPool(numberOfThreads: 1)
            pool.start()
            let fd = rawFD, wake = wakeFD, box = self.receiver
            let task = Task {
                _ = try? await pool.runIfActive { Self.receiveLoop(fd: fd, wake: wake, box: box) }
            }
            t = (pool, task)
        }
    }

    private static func receiveLoop(fd: Int32, wake: Int32, box: ReceiverBox) {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var src = [UInt8](repeating: 0, count: 16)
        var dst = [UInt8](repeating: 0, count: 16)
        while true {
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
            let r = poll(&fds, 2, -1)
            if r < 0 {
                if errno == EINTR { continue }
                box.deliver(.malformed("poll: errno \(errno)"))
                return
            }
            if fds[1].revents != 0 { return }
            if fds[0].revents & Int16(POLLNVAL) != 0 { return }  // closed under us
            if fds[0].revents & Int16(POLLERR) != 0 {
                // A pending socket error (not expected: no IPV6_RECVERR, not connected): read it,
                // which clears it, report it and go on.
                var e: Int32 = 0
                var len = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len)
                box.deliver(.receiveError("socket error \(e)"))
            }
            guard fds[0].revents & Int16(POLLIN) != 0 else { continue }
            // Drain everything queued.
            while true {
                var hop: Int32 = -1, ifindex: Int32 = 0, truncated: Int32 = 0
                let n = buffer.withUnsafeMutableBufferPointer { b in
                    ks_vrrp6_recv(fd, b.baseAddress, b.count, &src, &dst, &hop, &ifindex, &truncated)
                }
                if n < 0 {
                    let e = errno
                    if e == EINTR { continue }
                    if e != EAGAIN && e != EWOULDBLOCK { box.deliver(.receiveError("recvmsg: errno \(e)")) }
                    break  // EAGAIN: queue empty; other errors were reported, next poll
                }
                guard truncated == 0 else { box.deliver(.malformed("IPv6 datagram larger than the receive buffer")); continue }
                guard hop >= 0, hop <= 255, dst.contains(where: { $0 != 0 }),
                      let source = VRRPAddress(bytes: src), let destination = VRRPAddress(bytes: dst) else {
                    box.deliver(.malformed("IPv6 datagram without hop-limit or packet-info control message"))
                    continue
                }
                let header = VRRPIPHeaderInfo(source: source, destination: destination, ttlOrHopLimit: UInt8(hop))
                box.deliver(.packet(VRRPInboundPacket(header: header, message: Array(buffer[0..<n]))))
            }
        }
    }

    func send(_ message: [UInt8], to destination: VRRPAddress) throws {
        let src = sourceAddress.bytes
        let dst = destination.bytes
        let scope: UInt32 = destination.isLinkLocal ? UInt32(interfaceIndex) : 0
        try fd.withLock { fd in
            guard fd >= 0 else { throw VRRPSystemError("sendmsg \(destination)", errno: EBADF) }
            let n = message.withUnsafeBufferPointer { m in
                ks_vrrp6_send(fd, m.baseAddress, m.count, dst, scope, src, interfaceIndex)
            }
            guard n == message.count else { throw VRRPSystemError("sendmsg \(destination)", errno: n < 0 ? errno : EMSGSIZE) }
        }
    }

    func close() async {
        let already = closed.withLock { c in
            defer { c = true }
            return c
        }
        guard !already else { return }
        receiver.set(nil)
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
        if let t = thread.withLock({ $0 }) {
            await t.task.value
            try? await t.pool.shutdownGracefully()
        }
        fd.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
        Glibc.close(wakeFD)
    }
}
