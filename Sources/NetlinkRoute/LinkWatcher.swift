import CNetlinkRoute
import Glibc

/// A change that a `LinkWatcher` reports.
public enum RouteEvent: Sendable, Equatable {
    /// RTM_NEWLINK: a link appeared or changed (up/down, carrier, MTU, name, MAC).
    case link(LinkInfo)
    /// RTM_DELLINK.
    case linkRemoved(LinkInfo)
    /// RTM_NEWADDR: an address was added (or its flags changed, e.g. DAD finished).
    case addressAdded(InterfaceAddress)
    /// RTM_DELADDR.
    case addressRemoved(InterfaceAddress)
    /// The kernel dropped events because the receive buffer was full: what was missed is lost,
    /// so re-read the state (`NetlinkRoute.links()`, `addresses(interface:)`).
    case overrun
}

/// Link and address events of one network namespace, for a poll loop.
///
/// A non-blocking rtnetlink socket, opened in the namespace at `netnsPath` (nil: the process's
/// own; entered and left inside one C call as for `NetlinkRoute`) and subscribed to
/// RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR and RTNLGRP_IPV6_IFADDR. Wait for `fileDescriptor` to be
/// readable (poll(2), epoll, a DispatchSource, or `wait(timeoutMilliseconds:)`), then call
/// `readEvents()`, which never blocks. No thread of its own and no callbacks: the owner decides
/// where events are handled. It reports changes only: read the starting state with
/// `NetlinkRoute` after opening the watcher, so nothing falls between the two.
public final class LinkWatcher: Sendable {
    public var netnsPath: String? { socket.netnsPath }
    private let socket: RouteSocket
    /// The socket's descriptor, owned by the watcher (closed when it is released): poll it for
    /// reading, never read from it or close it.
    public let fileDescriptor: Int32

    public init(netnsPath: String? = nil) throws(NetlinkRouteError) {
        socket = try RouteSocket(netnsPath: netnsPath, watch: true)
        fileDescriptor = try socket.with { ks_rt_fd($0) }
    }

    /// The events waiting, in the kernel's order; empty when none. Bridge-port copies of link
    /// messages (AF_BRIDGE) and addresses of other families are left out.
    public func readEvents() throws(NetlinkRouteError) -> [RouteEvent] {
        try socket.with { h throws(NetlinkRouteError) in
            let box = Box<RouteEvent>()
            let r = withExtendedLifetime(box) { ks_rt_read_events(h, eventSink, Unmanaged.passUnretained(box).toOpaque()) }
            if r < 0 {
                guard Glibc.errno == ENOBUFS else {
                    throw NetlinkRouteError(operation: socket.describe("read link events"), errno: Glibc.errno)
                }
                box.items.append(.overrun)
            }
            return box.items
        }
    }

    /// Waits until events are waiting, at most `timeoutMilliseconds` (negative: no limit).
    /// Returns whether there are some. For a thread that does nothing else.
    public func wait(timeoutMilliseconds: Int32) throws(NetlinkRouteError) -> Bool {
        var p = pollfd(fd: fileDescriptor, events: Int16(POLLIN), revents: 0)
        while true {
            let r = poll(&p, 1, timeoutMilliseconds)
            if r >= 0 { return r > 0 }
            if Glibc.errno != EINTR { throw NetlinkRouteError(operation: socket.describe("wait for link events"), errno: Glibc.errno) }
        }
    }
}

private let eventSink: ks_rt_event_sink = { event, context in
    guard let e = event?.pointee, let context else { return }
    let box = Unmanaged<Box<RouteEvent>>.fromOpaque(context).takeUnretainedValue()
    switch Int(e.kind) {
    case Int(KS_RT_LINK_NEW): box.items.append(.link(LinkInfo(e.link)))
    case Int(KS_RT_LINK_DEL): box.items.append(.linkRemoved(LinkInfo(e.link)))
    case Int(KS_RT_ADDR_NEW): if let a = InterfaceAddress(e.addr) { box.items.append(.addressAdded(a)) }
    case Int(KS_RT_ADDR_DEL): if let a = InterfaceAddress(e.addr) { box.items.append(.addressRemoved(a)) }
    default: break
    }
}
