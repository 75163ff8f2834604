import CVRRPNet
import Glibc
public import VRRP

/// What VRRP needs to know about a network interface, read in the namespace it lives in.
public struct VRRPInterface: Sendable, Equatable {
    public var name: String
    public var index: Int32
    /// Hardware address (6 bytes on Ethernet; empty if the interface has none).
    public var mac: [UInt8]
    /// IPv4 addresses in the kernel's order: the first is the primary one.
    public var ipv4: [VRRPAddress]
    /// IPv6 addresses in the kernel's order (link-local and others).
    public var ipv6: [VRRPAddress]
    /// `IFF_UP` and `IFF_RUNNING` (carrier).
    public var isUp: Bool
    public var isRunning: Bool
    /// `net.ipv6.conf.IF.forwarding`: unsolicited NAs then carry the router flag (as keepalived).
    public var ipv6Forwarding: Bool

    public init(name: String, index: Int32, mac: [UInt8], ipv4: [VRRPAddress] = [], ipv6: [VRRPAddress] = [],
                isUp: Bool = true, isRunning: Bool = true, ipv6Forwarding: Bool = false) {
        self.name = name
        self.index = index
        self.mac = mac
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.isUp = isUp
        self.isRunning = isRunning
        self.ipv6Forwarding = ipv6Forwarding
    }

    /// The first IPv6 link-local address (the source of VRRPv3 IPv6 adverts, RFC 5798 §5.1.2.1).
    public var ipv6LinkLocal: VRRPAddress? { ipv6.first { $0.isLinkLocal } }

    /// Reads the interface from the current thread's network namespace (wrap the call in
    /// `VRRPNetworkNamespace.with` to read another one).
    public static func lookup(_ name: String) throws -> VRRPInterface {
        var head: UnsafeMutablePointer<ifaddrs>? = nil
        guard getifaddrs(&head) == 0 else { throw VRRPSystemError("getifaddrs", errno: errno) }
        defer { freeifaddrs(head) }
        var found = false
        var result = VRRPInterface(name: name, index: 0, mac: [], isUp: false, isRunning: false)
        var cursor = head
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let cname = entry.pointee.ifa_name, String(cString: cname) == name else { continue }
            found = true
            let flags = entry.pointee.ifa_flags
            result.isUp = flags & UInt32(IFF_UP) != 0
            result.isRunning = flags & UInt32(IFF_RUNNING) != 0
            guard let sa = entry.pointee.ifa_addr else { continue }
            switch Int32(sa.pointee.sa_family) {
            case AF_PACKET:
                var mac = [UInt8](repeating: 0, count: 32)
                var index: Int32 = 0
                let n = ks_vrrp_sockaddr_ll_info(sa, &mac, mac.count, &index)
                result.mac = Array(mac.prefix(Int(n)))
                result.index = index
            case AF_INET:
                let a = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr.s_addr }
                result.ipv4.append(.v4(UInt32(bigEndian: a)))
            case AF_INET6:
                let bytes = sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                    withUnsafeBytes(of: p.pointee.sin6_addr) { Array($0) }
                }
                if let a = VRRPAddress(bytes: bytes) { result.ipv6.append(a) }
            default:
                break
            }
        }
        guard found else { throw VRRPSetupError("interface \(name) does not exist in this network namespace") }
        if result.index == 0 {
            let i = if_nametoindex(name)
            guard i != 0 else { throw VRRPSystemError("if_nametoindex(\(name))", errno: errno) }
            result.index = Int32(i)
        }
        result.ipv6Forwarding = readSysctl("/proc/sys/net/ipv6/conf/\(name)/forwarding") == "1"
        return result
    }

    /// /proc/sys/net resolves to the network namespace of the thread that opens it.
    private static func readSysctl(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 32)
        let n = read(fd, &buf, buf.count)
        guard n > 0 else { return nil }
        return String(decoding: buf.prefix(n), as: UTF8.self).trimmingWhitespace()
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return String(s)
    }
}
