import Foundation

// The clients' segments as their host sent and received them: packet sockets in the clients'
// namespace that get a copy of every outgoing TCP segment (the kernel's transmit tap, the one
// tcpdump reads) or of every arriving one, stamped by the kernel. A surviving flow's stall is
// the wait for the transmission that crossed the new master (TCP's retransmission schedule on
// the clients' host) plus the answer to it (the router, the server and back): with these
// times the report can say which part is which (docs/drill.md, "The report").

/// TCP segments of one direction: outgoing ones that carry data (keyed by their source port),
/// or arriving ones of any kind (keyed by their destination port), with the kernel's time in
/// CLOCK_REALTIME ns.
final class TransmitTap {
    enum Direction {
        /// Sent by this host, data segments only (new data and retransmissions).
        case outgoing
        /// Arriving for this host: any segment (an ACK says the path is back as well as data).
        case arriving
    }

    let fd: Int32
    let direction: Direction
    private var buf = [UInt8](repeating: 0, count: 256)
    /// Segments of its kind that came without a kernel time (not recorded).
    private(set) var unstamped: UInt32 = 0

    private init(fd: Int32, direction: Direction) {
        self.fd = fd
        self.direction = direction
    }

    /// What the filter passes of a segment: IPv4 and TCP headers with options.
    static let snap: UInt32 = 128

    /// Opens the tap, or says why the kernel refused (not root, no AF_PACKET). Segments queued
    /// before the filter is attached are of no flow's port in the direction read, and ignored.
    static func open(_ direction: Direction) -> Result<TransmitTap, DrillError> {
        // SOCK_DGRAM: each packet from its network header on. ETH_P_ALL: a socket bound to one
        // protocol (ETH_P_IP) gets only what arrives, never the transmit tap's copies.
        let fd = socket(AF_PACKET, Int32(SOCK_DGRAM.rawValue), Int32(UInt16(0x0003).bigEndian))
        guard fd >= 0 else { return .failure(DrillError("packet socket: \(DrillWire.errorName(errno))")) }
        // Classic BPF: the direction (SKF_AD_PKTTYPE: PACKET_OUTGOING, or PACKET_HOST), IPv4
        // (SKF_AD_PROTOCOL), IP protocol TCP; the first `snap` bytes. The rest stays in the kernel.
        var program: [TapFilter] = [
            TapFilter(code: 0x20, jt: 0, jf: 0, k: 0xFFFF_F004),  // ld  [SKF_AD_OFF + SKF_AD_PKTTYPE]
            TapFilter(code: 0x15, jt: 0, jf: 5, k: direction == .outgoing ? 4 : 0),  // jeq #type, else drop
            TapFilter(code: 0x20, jt: 0, jf: 0, k: 0xFFFF_F000),  // ld  [SKF_AD_OFF + SKF_AD_PROTOCOL]
            TapFilter(code: 0x15, jt: 0, jf: 3, k: 0x0800),       // jeq #ETH_P_IP, else drop
            TapFilter(code: 0x30, jt: 0, jf: 0, k: 9),            // ldb [9] (IPv4 protocol)
            TapFilter(code: 0x15, jt: 0, jf: 1, k: 6),            // jeq #IPPROTO_TCP, else drop
            TapFilter(code: 0x06, jt: 0, jf: 0, k: snap),         // ret #snap
            TapFilter(code: 0x06, jt: 0, jf: 0, k: 0),            // drop: ret #0
        ]
        let attached = program.withUnsafeMutableBufferPointer { p in
            var prog = TapProgram(len: UInt16(p.count), filter: p.baseAddress)
            return setsockopt(fd, SOL_SOCKET, 26 /* SO_ATTACH_FILTER */, &prog, socklen_t(MemoryLayout<TapProgram>.size))
        }
        guard attached == 0 else {
            let e = errno
            Glibc.close(fd)
            return .failure(DrillError("the tap's filter: \(DrillWire.errorName(e))"))
        }
        DrillWire.setInt(fd, SOL_SOCKET, DrillWire.soTimestampNS, 1)
        // Room for a burst: every flow's retransmission can leave in one timer tick.
        DrillWire.setInt(fd, SOL_SOCKET, 33 /* SO_RCVBUFFORCE */, 8 << 20)
        DrillWire.setNonBlocking(fd)
        return .success(TransmitTap(fd: fd, direction: direction))
    }

    /// Reads every segment queued; calls `seen` for each of its kind, with the client's port.
    func drain(_ seen: (_ port: UInt16, _ realtime: UInt64) -> Void) {
        while true {
            var kernel: UInt64 = 0
            let n = DrillWire.receive(fd, &buf, kernelTime: &kernel)
            if n < 0 {
                if errno == EINTR { continue }
                return
            }
            let port = direction == .outgoing ? Self.dataSegmentSource(buf.prefix(n)) : Self.segmentDestination(buf.prefix(n))
            guard let port else { continue }
            guard kernel > 0 else {
                unstamped &+= 1
                continue
            }
            seen(port, kernel)
        }
    }

    /// The source port of an IPv4 TCP segment that carries data; nil for anything else (a bare
    /// ACK, a SYN, a short or malformed packet).
    static func dataSegmentSource(_ p: ArraySlice<UInt8>) -> UInt16? {
        let o = p.startIndex
        guard p.count >= 20, p[o] >> 4 == 4, p[o + 9] == 6 else { return nil }
        let ihl = Int(p[o] & 0x0F) * 4
        let total = Int(p[o + 2]) << 8 | Int(p[o + 3])
        guard ihl >= 20, p.count >= ihl + 13, total >= ihl + 20 else { return nil }
        let offset = Int(p[o + ihl + 12] >> 4) * 4
        guard offset >= 20, total > ihl + offset else { return nil }
        return UInt16(p[o + ihl]) << 8 | UInt16(p[o + ihl + 1])
    }

    /// The destination port of an IPv4 TCP segment of any kind; nil for anything else.
    static func segmentDestination(_ p: ArraySlice<UInt8>) -> UInt16? {
        let o = p.startIndex
        guard p.count >= 20, p[o] >> 4 == 4, p[o + 9] == 6 else { return nil }
        let ihl = Int(p[o] & 0x0F) * 4
        guard ihl >= 20, p.count >= ihl + 4 else { return nil }
        return UInt16(p[o + ihl + 2]) << 8 | UInt16(p[o + ihl + 3])
    }

    /// Segments the kernel dropped because the tap's buffer was full (PACKET_STATISTICS; reading
    /// resets the kernel's counter); nil when the kernel did not say.
    func takeDrops() -> UInt32? {
        var stats = (UInt32(0), UInt32(0))  // tpacket_stats: tp_packets, tp_drops
        var len = socklen_t(MemoryLayout<(UInt32, UInt32)>.size)
        guard getsockopt(fd, 263 /* SOL_PACKET */, 6 /* PACKET_STATISTICS */, &stats, &len) == 0 else { return nil }
        return stats.1
    }

    func close() { _ = Glibc.close(fd) }
}

/// struct sock_filter (linux/filter.h).
private struct TapFilter {
    var code: UInt16
    var jt: UInt8
    var jf: UInt8
    var k: UInt32
}

/// struct sock_fprog (linux/filter.h): the length, then (8-aligned) the instructions.
private struct TapProgram {
    var len: UInt16
    var filter: UnsafeMutablePointer<TapFilter>?
}
