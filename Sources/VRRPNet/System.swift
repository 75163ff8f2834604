import CVRRPNet
import Glibc
public import VRRP

/// A failed system call of the VRRP I/O layer.
public struct VRRPSystemError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What was attempted, e.g. `setsockopt(IP_ADD_MEMBERSHIP) on veth0`.
    public var operation: String
    public var errno: Int32

    public init(_ operation: String, errno: Int32) {
        self.operation = operation
        self.errno = errno
    }

    public var description: String { "\(operation): \(String(cString: strerror(errno))) (errno \(errno))" }
}

/// Any other failure to set up VRRP I/O (an interface or address that does not exist, ...).
public struct VRRPSetupError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Network namespaces for VRRP sockets.
///
/// A socket belongs to the network namespace of the thread that creates it, for its whole life.
/// `withNetworkNamespace` moves the *calling thread* into a namespace, runs a synchronous body
/// (socket creation, interface lookups: `getifaddrs` and `if_nametoindex` open their own sockets, so
/// they also see the namespace of the thread) and moves it back, as the conntrack shim does per
/// call. The body must not suspend: the thread is only borrowed. Sockets made inside keep working
/// from any thread afterwards, so the event loop and the receive thread never change namespace.
public enum VRRPNetworkNamespace {
    /// Runs `body` with the calling thread in the network namespace at `path`
    /// (`/run/netns/NAME` or `/proc/PID/ns/net`); `nil` runs it where the thread is.
    public static func with<T>(_ path: String?, _ body: () throws -> T) throws -> T {
        guard let path else { return try body() }
        var selfFD: Int32 = -1
        guard ks_vrrp_netns_enter(path, &selfFD) == 0 else {
            throw VRRPSystemError("setns(\(path))", errno: errno)
        }
        defer { ks_vrrp_netns_leave(selfFD) }
        return try body()
    }
}

// MARK: small socket helpers (internal)

enum Sys {
    static func socket(_ domain: Int32, _ type: Int32, _ proto: Int32, _ what: String) throws -> Int32 {
        let fd = Glibc.socket(domain, type | Int32(SOCK_CLOEXEC.rawValue), proto)
        guard fd >= 0 else { throw VRRPSystemError("socket(\(what))", errno: errno) }
        return fd
    }

    static func setInt(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32, _ what: String) throws {
        var v = value
        guard setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw VRRPSystemError("setsockopt(\(what))", errno: errno)
        }
    }

    static func setValue<T>(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: T, _ what: String) throws {
        var v = value
        let r = withUnsafePointer(to: &v) { setsockopt(fd, level, name, $0, socklen_t(MemoryLayout<T>.size)) }
        guard r == 0 else { throw VRRPSystemError("setsockopt(\(what))", errno: errno) }
    }

    static func bindToDevice(_ fd: Int32, _ name: String) throws {
        guard ks_vrrp_bind_to_device(fd, name) == 0 else {
            throw VRRPSystemError("setsockopt(SO_BINDTODEVICE \(name))", errno: errno)
        }
    }

    static func setNonBlocking(_ fd: Int32) throws {
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else {
            throw VRRPSystemError("fcntl(O_NONBLOCK)", errno: errno)
        }
    }

    static func inAddr(_ a: VRRPAddress) -> in_addr {
        guard case .v4(let v) = a else { return in_addr(s_addr: 0) }
        return in_addr(s_addr: v.bigEndian)
    }

    static func in6Addr(_ a: VRRPAddress) -> in6_addr {
        var out = in6_addr()
        let b = a.bytes
        withUnsafeMutableBytes(of: &out) { raw in
            for i in 0..<min(16, b.count) { raw[i] = b[i] }
        }
        return out
    }

    static func sockaddrIn(_ a: VRRPAddress) -> sockaddr_in {
        var s = sockaddr_in()
        s.sin_family = sa_family_t(AF_INET)
        s.sin_addr = inAddr(a)
        return s
    }
}

extension VRRPAddress {
    /// 224.0.0.18, the IPv4 VRRP multicast group (RFC 5798 §5.1.1.2).
    public static let vrrpGroupV4 = VRRPAddress.v4(0xE000_0012)
    /// ff02::12, the IPv6 VRRP multicast group (RFC 5798 §5.1.2.2).
    public static let vrrpGroupV6 = VRRPAddress.v6(high: 0xFF02_0000_0000_0000, low: 0x12)

    /// Multicast (224.0.0.0/4, ff00::/8).
    public var isMulticast: Bool {
        switch self {
        case .v4(let v): return v >> 28 == 0xE
        case .v6(let hi, _): return hi >> 56 == 0xFF
        }
    }

    /// IPv6 link-local unicast (fe80::/10) or link-local multicast (ff02::/16).
    public var isLinkLocal: Bool {
        switch self {
        case .v4(let v): return v >> 16 == 0xA9FE
        case .v6(let hi, _): return hi >> 54 == 0x3FA || hi >> 48 == 0xFF02
        }
    }
}
