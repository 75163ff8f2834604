import CVRRPNet
import Glibc
import Synchronization
public import VRRP

/// Sends the link-layer announcements of a new master: gratuitous ARP for IPv4 virtual addresses,
/// unsolicited neighbour advertisements for IPv6 ones.
public protocol VRRPAnnouncer: AnyObject, Sendable {
    /// Sends one announcement for `address` (ARP for IPv4, NA for IPv6).
    func announce(_ address: VRRPAddress) throws
    func close()
}

/// The frames, built as keepalived 2.2.7 builds them (`vrrp_arp.c`, `vrrp_ndisc.c`).
public enum VRRPAnnouncementFrame {
    public static let broadcastMAC: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
    /// 33:33:00:00:00:01, the Ethernet group of ff02::1 (RFC 2464 §7).
    public static let allNodesMAC: [UInt8] = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01]
    public static let etherTypeARP: UInt16 = 0x0806
    public static let etherTypeIPv6: UInt16 = 0x86DD

    /// Gratuitous ARP: Ethernet broadcast from `mac`, ARP request with sender = target = `address`,
    /// sender hardware address `mac`, target hardware address ff:ff:ff:ff:ff:ff (as keepalived),
    /// padded to the 60-byte Ethernet minimum.
    public static func gratuitousARP(address: VRRPAddress, mac: [UInt8]) -> [UInt8] {
        let ip = address.bytes
        var f: [UInt8] = []
        f.reserveCapacity(60)
        f += broadcastMAC
        f += mac6(mac)
        f += [0x08, 0x06]
        f += [0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]  // Ethernet, IPv4, hlen 6, plen 4, request
        f += mac6(mac)
        f += ip
        f += broadcastMAC
        f += ip
        f += [UInt8](repeating: 0, count: max(0, 60 - f.count))
        return f
    }

    /// Unsolicited neighbour advertisement (RFC 4861 §7.2.6): Ethernet to 33:33:00:00:00:01 from
    /// `mac`; IPv6 from `address` to ff02::1 with hop limit 255; ICMPv6 type 136 with the override
    /// flag (and the router flag when `router`), target `address`, and the target link-layer
    /// address option.
    public static func unsolicitedNA(address: VRRPAddress, mac: [UInt8], router: Bool) -> [UInt8] {
        let src = address.bytes
        let dst = VRRPAddress.v6(high: 0xFF02_0000_0000_0000, low: 1).bytes
        var icmp: [UInt8] = [136, 0, 0, 0, (router ? 0x80 : 0) | 0x20, 0, 0, 0]
        icmp += src
        icmp += [2, 1] + mac6(mac)  // option 2: target link-layer address, length 1 (8 bytes)
        let length = icmp.count
        let pseudo = src + dst + [UInt8(length >> 24 & 0xFF), UInt8(length >> 16 & 0xFF),
                                  UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF), 0, 0, 0, 58]
        let sum = VRRPChecksum.compute(message: icmp, pseudoHeader: pseudo)
        icmp[2] = UInt8(sum >> 8)
        icmp[3] = UInt8(sum & 0xFF)
        var f: [UInt8] = []
        f += allNodesMAC
        f += mac6(mac)
        f += [0x86, 0xDD]
        f += [0x60, 0, 0, 0, UInt8(length >> 8), UInt8(length & 0xFF), 58, 255]
        f += src
        f += dst
        f += icmp
        return f
    }

    private static func mac6(_ mac: [UInt8]) -> [UInt8] {
        Array(mac.prefix(6)) + [UInt8](repeating: 0, count: max(0, 6 - mac.count))
    }
}

/// Announcements through an `AF_PACKET`/`SOCK_RAW` socket with protocol 0 (it receives nothing),
/// whole frames built here so that the source MAC is ours to choose (the interface MAC; a VMAC
/// later).
final class VRRPPacketAnnouncer: VRRPAnnouncer {
    private let fd: Mutex<Int32>
    let interfaceIndex: Int32
    let mac: [UInt8]
    let router: Bool

    init(fd: Int32, interfaceIndex: Int32, mac: [UInt8], router: Bool) {
        self.fd = Mutex(fd)
        self.interfaceIndex = interfaceIndex
        self.mac = mac
        self.router = router
    }

    /// Makes the socket in the calling thread's network namespace.
    static func makeSocket() throws -> Int32 {
        let s = try Sys.socket(AF_PACKET, Int32(SOCK_RAW.rawValue), 0, "AF_PACKET, SOCK_RAW, 0")
        do {
            try Sys.setNonBlocking(s)
        } catch {
            Glibc.close(s)
            throw error
        }
        return s
    }

    func announce(_ address: VRRPAddress) throws {
        let frame: [UInt8]
        let dstMAC: [UInt8]
        let type: UInt16
        switch address {
        case .v4:
            frame = VRRPAnnouncementFrame.gratuitousARP(address: address, mac: mac)
            dstMAC = VRRPAnnouncementFrame.broadcastMAC
            type = VRRPAnnouncementFrame.etherTypeARP
        case .v6:
            frame = VRRPAnnouncementFrame.unsolicitedNA(address: address, mac: mac, router: router)
            dstMAC = VRRPAnnouncementFrame.allNodesMAC
            type = VRRPAnnouncementFrame.etherTypeIPv6
        }
        try fd.withLock { fd in
            guard fd >= 0 else { throw VRRPSystemError("announce \(address)", errno: EBADF) }
            let n = frame.withUnsafeBufferPointer { f in
                ks_vrrp_packet_send(fd, interfaceIndex, dstMAC, type, f.baseAddress, f.count)
            }
            guard n == frame.count else { throw VRRPSystemError("announce \(address)", errno: n < 0 ? errno : EMSGSIZE) }
        }
    }

    func close() {
        fd.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
    }
}
