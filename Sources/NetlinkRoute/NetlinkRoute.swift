import CNetlinkRoute
import Glibc
import Synchronization

/// Why an rtnetlink operation failed: the errno (the kernel's own when it refused the request)
/// and what was attempted, naming the interface, address and namespace, e.g.
/// `add 192.0.2.10/24 to eth9 in /run/netns/blue: No such device (errno 19)`.
public struct NetlinkRouteError: Error, Sendable, Equatable, CustomStringConvertible {
    public var operation: String
    public var errno: Int32

    public init(operation: String, errno: Int32) {
        self.operation = operation
        self.errno = errno
    }

    public var description: String {
        "\(operation): \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// A network interface as the kernel reports it (RTM_NEWLINK).
public struct LinkInfo: Sendable, Equatable {
    public var index: Int32
    public var name: String
    /// The hardware address: 6 bytes for Ethernet-like links, empty when the link has none.
    public var mac: [UInt8]
    public var mtu: Int
    /// IFF_UP: set up by an administrator (`ip link set X up`).
    public var isAdminUp: Bool
    /// IFF_RUNNING: operationally up (operstate UP, or UNKNOWN for drivers that report none) —
    /// what VRRP should track.
    public var isOperUp: Bool
    /// IFF_LOWER_UP: the driver reports a carrier.
    public var hasCarrier: Bool
    /// IFLA_INFO_KIND ("veth", "macvlan", "bridge"); empty for links without one (lo, most NICs).
    public var kind: String
    /// IFLA_LINK: the lower link (a macvlan's parent, a veth's peer); 0 when none.
    public var parentIndex: Int32
    /// IFLA_MACVLAN_MODE (0 unless a macvlan).
    var macvlanMode: UInt32

    init(_ l: ks_rt_link) {
        index = l.index
        name = cString(l.name)
        mac = withUnsafeBytes(of: l.mac) { Array($0.prefix(Int(l.mac_len))) }
        mtu = Int(l.mtu)
        isAdminUp = l.flags & 0x1 != 0         // IFF_UP
        isOperUp = l.flags & 0x40 != 0         // IFF_RUNNING
        hasCarrier = l.flags & 0x10000 != 0    // IFF_LOWER_UP
        kind = cString(l.kind)
        parentIndex = l.parent
        macvlanMode = l.macvlan_mode
    }
}

/// An address of an interface (RTM_NEWADDR).
public struct InterfaceAddress: Sendable, Hashable {
    public var address: RouteAddress
    public var prefixLength: Int
    /// The IPv4 label (the interface's name when none was given); nil for IPv6, which has none.
    public var label: String?
    public var interfaceIndex: Int32
    /// IFA_F_* flags (IFA_F_NODAD 0x02, IFA_F_TENTATIVE 0x40, ...).
    public var flags: UInt32

    init?(_ a: ks_rt_addr) {
        let bytes = withUnsafeBytes(of: a.bytes) { Array($0.prefix(a.family == 6 ? 16 : 4)) }
        guard let address = RouteAddress(bytes: bytes) else { return nil }
        self.address = address
        prefixLength = Int(a.prefix)
        label = a.family == 4 ? cString(a.label) : nil
        interfaceIndex = a.index
        flags = a.flags
    }
}

func cString<T>(_ tuple: T) -> String {
    withUnsafeBytes(of: tuple) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}

/// Where the C sinks put what they are handed.
final class Box<T> {
    var items: [T] = []
}

/// One libnl socket in one namespace, used by one caller at a time.
final class RouteSocket: Sendable {
    let netnsPath: String?
    private let handle: Mutex<OpaquePointer>

    init(netnsPath: String?, watch: Bool) throws(NetlinkRouteError) {
        let h: OpaquePointer? = netnsPath.map { p in p.withCString { ks_rt_open($0, watch ? 1 : 0) } } ?? ks_rt_open(nil, watch ? 1 : 0)
        guard let h else {
            throw NetlinkRouteError(operation: "open rtnetlink socket\(netnsPath.map { " in \($0)" } ?? "")", errno: Glibc.errno)
        }
        handle = Mutex(h)
        self.netnsPath = netnsPath
    }

    deinit { handle.withLock { ks_rt_close($0) } }

    /// Runs `body` with the socket; errno from a C call inside is read before anyone else runs.
    func with<R: Sendable>(_ body: (OpaquePointer) throws(NetlinkRouteError) -> R) throws(NetlinkRouteError) -> R {
        try handle.withLock { h throws(NetlinkRouteError) in try body(h) }
    }

    /// `operation` followed by the namespace, for error messages.
    func describe(_ operation: String) -> String {
        netnsPath.map { "\(operation) in \($0)" } ?? operation
    }
}

/// Links, addresses and macvlan links of one network namespace, over libnl-route-3.
///
/// The rtnetlink socket is opened inside the namespace at `netnsPath` (`/run/netns/NAME`; nil for
/// the process's own) by one C call that enters the namespace with setns(2) on the calling thread
/// and returns to the thread's own before it returns; every later request acts in the namespace
/// the socket was made in, without entering it again. Safe to share: calls are serialised on the
/// socket.
public final class NetlinkRoute: Sendable {
    public var netnsPath: String? { socket.netnsPath }
    private let socket: RouteSocket

    public init(netnsPath: String? = nil) throws(NetlinkRouteError) {
        socket = try RouteSocket(netnsPath: netnsPath, watch: false)
    }

    // MARK: links

    /// The link called `name`; ENODEV when there is none.
    public func link(named name: String) throws(NetlinkRouteError) -> LinkInfo {
        try link(named: name, for: "find interface \(name)")
    }

    private func link(named name: String, for operation: @autoclosure () -> String) throws(NetlinkRouteError) -> LinkInfo {
        try socket.with { h throws(NetlinkRouteError) in
            var flat = ks_rt_link()
            guard ks_rt_link_get(h, name, &flat) == 0 else {
                throw NetlinkRouteError(operation: socket.describe(operation()), errno: Glibc.errno)
            }
            return LinkInfo(flat)
        }
    }

    /// Every link of the namespace.
    public func links() throws(NetlinkRouteError) -> [LinkInfo] {
        try socket.with { h throws(NetlinkRouteError) in
            let box = Box<LinkInfo>()
            let r = withExtendedLifetime(box) { ks_rt_links(h, linkSink, Unmanaged.passUnretained(box).toOpaque()) }
            guard r >= 0 else { throw NetlinkRouteError(operation: socket.describe("list links"), errno: Glibc.errno) }
            return box.items
        }
    }

    /// Sets the link `name` administratively up or down (IFF_UP).
    public func setLink(named name: String, up: Bool) throws(NetlinkRouteError) {
        try change(link: name, "set \(name) \(up ? "up" : "down")") { h, index in ks_rt_link_set_up(h, index, up ? 1 : 0) }
    }

    /// Makes the bridge port `name` forward (`true`: STP state forwarding) or not (disabled),
    /// without its link going down: the bridge drops its frames both ways and forgets the MAC
    /// addresses it learnt there. The bridge must not run the kernel's STP.
    public func setBridgePort(named name: String, forwarding: Bool) throws(NetlinkRouteError) {
        try change(link: name, "set bridge port \(name) \(forwarding ? "forwarding" : "disabled")") { h, index in
            ks_rt_bridge_port_set_state(h, index, forwarding ? 3 : 0)
        }
    }

    /// One request about the link `name` (looked up first): `call` returns 0, or -1 with errno.
    private func change(link name: String, _ operation: String,
                        _ call: (OpaquePointer, Int32) -> Int32) throws(NetlinkRouteError) {
        let link = try link(named: name, for: operation)
        try socket.with { h throws(NetlinkRouteError) in
            guard call(h, link.index) == 0 else {
                throw NetlinkRouteError(operation: socket.describe(operation), errno: Glibc.errno)
            }
        }
    }

    /// Deletes the link `name`. Returns false when there was no such link (idempotent).
    @discardableResult
    public func deleteLink(named name: String) throws(NetlinkRouteError) -> Bool {
        try socket.with { h throws(NetlinkRouteError) in
            if ks_rt_link_del(h, name) == 0 { return true }
            if Glibc.errno == ENODEV { return false }
            throw NetlinkRouteError(operation: socket.describe("delete link \(name)"), errno: Glibc.errno)
        }
    }

    /// The MAC address of VRRP's virtual router `vrid`: 00:00:5e:00:01:VRID for IPv4,
    /// 00:00:5e:00:02:VRID for IPv6 (RFC 9568 section 7.3).
    public static func vrrpVirtualMAC(vrid: UInt8, family: RouteAddress.Family) -> [UInt8] {
        [0x00, 0x00, 0x5E, 0x00, family == .ipv4 ? 0x01 : 0x02, vrid]
    }

    /// Creates a macvlan link `name` on `parent` in private mode with the 6-byte `mac` (see
    /// `vrrpVirtualMAC`), administratively up: VRRP's `use_vmac`. Returns false when that link
    /// already exists as asked (and sets it up if it was down); EEXIST when a different link
    /// (another kind, parent, MAC or mode) has the name.
    @discardableResult
    public func createMacvlan(name: String, parent: String, mac: [UInt8]) throws(NetlinkRouteError) -> Bool {
        let macText = mac.map { hex($0) }.joined(separator: ":")
        let operation = "create macvlan \(name) on \(parent) with MAC \(macText)"
        guard mac.count == 6, name.utf8.count < 16 else { throw NetlinkRouteError(operation: socket.describe(operation), errno: EINVAL) }
        let lower = try link(named: parent, for: operation)
        let created = try socket.with { h throws(NetlinkRouteError) in
            if mac.withUnsafeBufferPointer({ ks_rt_macvlan_add(h, name, lower.index, $0.baseAddress) }) == 0 { return true }
            if Glibc.errno == EEXIST { return false }
            throw NetlinkRouteError(operation: socket.describe(operation), errno: Glibc.errno)
        }
        if created { return true }
        let existing = try link(named: name, for: operation)
        let privateMode: UInt32 = 1   // MACVLAN_MODE_PRIVATE
        guard existing.kind == "macvlan", existing.parentIndex == lower.index, existing.mac == mac,
              existing.macvlanMode == privateMode
        else {
            let found = "a link \(name) exists: kind \(existing.kind.isEmpty ? "none" : existing.kind), parent index "
                + "\(existing.parentIndex), MAC \(existing.mac.map { hex($0) }.joined(separator: ":"))"
            throw NetlinkRouteError(operation: socket.describe("\(operation) (\(found))"), errno: EEXIST)
        }
        if !existing.isAdminUp { try setLink(named: name, up: true) }
        return false
    }

    // MARK: addresses

    /// Adds `address`/`prefixLength` to `interface`, with an IPv4 `label` (at most 15 bytes;
    /// ignored for IPv6, which has no labels). IPv6 addresses are added with IFA_F_NODAD: usable
    /// at once, never "tentative". Scope global.
    ///
    /// Returns false when the address was already there (idempotent). "There" is the kernel's
    /// notion: an IPv6 address on that interface whatever its prefix; an IPv4 address with the
    /// same prefix (the same IPv4 address with another prefix is a second entry).
    @discardableResult
    public func addAddress(_ address: RouteAddress, prefixLength: Int, interface: String, label: String? = nil) throws(NetlinkRouteError) -> Bool {
        let operation = "add \(address)/\(prefixLength)\(label.map { " label \($0)" } ?? "") to \(interface)"
        guard (0...address.maxPrefixLength).contains(prefixLength), (label?.utf8.count ?? 0) < 16 else {
            throw NetlinkRouteError(operation: socket.describe(operation), errno: EINVAL)
        }
        let link = try link(named: interface, for: operation)
        var flat = Self.flat(address, prefixLength: prefixLength, index: link.index)
        if address.family == .ipv4, let label {
            withUnsafeMutableBytes(of: &flat.label) { raw in
                for (i, b) in label.utf8.enumerated() { raw[i] = b }
            }
        }
        return try socket.with { [flat] h throws(NetlinkRouteError) in
            if withUnsafePointer(to: flat, { ks_rt_addr_add(h, $0) }) == 0 { return true }
            if Glibc.errno == EEXIST { return false }
            throw NetlinkRouteError(operation: socket.describe(operation), errno: Glibc.errno)
        }
    }

    /// Removes `address` from `interface`: the entry with `prefixLength`, or every entry of that
    /// address when nil. Returns false when there was none, or no such interface (idempotent).
    @discardableResult
    public func removeAddress(_ address: RouteAddress, prefixLength: Int? = nil, interface: String) throws(NetlinkRouteError) -> Bool {
        let operation = "remove \(address)\(prefixLength.map { "/\($0)" } ?? "") from \(interface)"
        let link: LinkInfo
        do {
            link = try self.link(named: interface, for: operation)
        } catch where error.errno == ENODEV {
            return false
        }
        let prefixes: [Int]
        if let prefixLength {
            prefixes = [prefixLength]
        } else {
            prefixes = try addresses(index: link.index, for: operation).filter { $0.address == address }.map(\.prefixLength)
        }
        var removed = false
        for prefix in prefixes {
            let flat = Self.flat(address, prefixLength: prefix, index: link.index)
            removed = try socket.with { h throws(NetlinkRouteError) in
                if withUnsafePointer(to: flat, { ks_rt_addr_del(h, $0) }) == 0 { return true }
                if Glibc.errno == EADDRNOTAVAIL { return false }
                throw NetlinkRouteError(operation: socket.describe(operation), errno: Glibc.errno)
            } || removed
        }
        return removed
    }

    /// The IPv4 and IPv6 addresses of `interface`, in the kernel's order.
    public func addresses(interface: String) throws(NetlinkRouteError) -> [InterfaceAddress] {
        let operation = "list addresses of \(interface)"
        return try addresses(index: link(named: interface, for: operation).index, for: operation)
    }

    /// Every IPv4 and IPv6 address of the namespace.
    public func allAddresses() throws(NetlinkRouteError) -> [InterfaceAddress] {
        try addresses(index: 0, for: "list addresses")
    }

    private func addresses(index: Int32, for operation: String) throws(NetlinkRouteError) -> [InterfaceAddress] {
        try socket.with { h throws(NetlinkRouteError) in
            let box = Box<InterfaceAddress>()
            let r = withExtendedLifetime(box) { ks_rt_addrs(h, index, addressSink, Unmanaged.passUnretained(box).toOpaque()) }
            guard r >= 0 else { throw NetlinkRouteError(operation: socket.describe(operation), errno: Glibc.errno) }
            return box.items
        }
    }

    private static func flat(_ address: RouteAddress, prefixLength: Int, index: Int32) -> ks_rt_addr {
        var flat = ks_rt_addr()
        flat.index = index
        flat.family = address.family == .ipv4 ? 4 : 6
        flat.prefix = UInt8(prefixLength)
        withUnsafeMutableBytes(of: &flat.bytes) { raw in
            for (i, b) in address.bytes.enumerated() { raw[i] = b }
        }
        return flat
    }
}

private func hex(_ b: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(b >> 4)], digits[Int(b & 0xF)]])
}

private let linkSink: ks_rt_link_sink = { link, context in
    guard let link, let context else { return }
    Unmanaged<Box<LinkInfo>>.fromOpaque(context).takeUnretainedValue().items.append(LinkInfo(link.pointee))
}

private let addressSink: ks_rt_addr_sink = { address, context in
    guard let address, let context, let a = InterfaceAddress(address.pointee) else { return }
    Unmanaged<Box<InterfaceAddress>>.fromOpaque(context).takeUnretainedValue().items.append(a)
}
