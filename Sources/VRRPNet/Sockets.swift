import Glibc
public import NIOCore
public import VRRP

/// Where and how one VRRP instance talks.
public struct VRRPSocketConfiguration: Sendable, Equatable {
    public var interface: String
    public var family: VRRPAddressFamily
    /// keepalived `unicast_src_ip` / `mcast_src_ip`. Default: the interface's primary IPv4 address,
    /// or its IPv6 link-local address.
    public var sourceAddress: VRRPAddress?
    /// keepalived `unicast_peer`: adverts go to each of these instead of the multicast group, and
    /// the group is not joined.
    public var unicastPeers: [VRRPAddress]
    /// Network namespace (`/run/netns/NAME`) in which the interface lives; nil: the caller's.
    public var networkNamespacePath: String?

    public init(interface: String, family: VRRPAddressFamily, sourceAddress: VRRPAddress? = nil,
                unicastPeers: [VRRPAddress] = [], networkNamespacePath: String? = nil) {
        self.interface = interface
        self.family = family
        self.sourceAddress = sourceAddress
        self.unicastPeers = unicastPeers
        self.networkNamespacePath = networkNamespacePath
    }
}

/// The sockets of one instance: the VRRP transport and the ARP/NA announcer, and what was read
/// about the interface when they were made.
public struct VRRPEndpoint: Sendable {
    public let interface: VRRPInterface
    public let transport: any VRRPTransport
    public let announcer: any VRRPAnnouncer

    public init(interface: VRRPInterface, transport: any VRRPTransport, announcer: any VRRPAnnouncer) {
        self.interface = interface
        self.transport = transport
        self.announcer = announcer
    }

    /// The IP source of the adverts; the instance's `primaryAddress` must be this (tie-break).
    public var sourceAddress: VRRPAddress { transport.sourceAddress }

    public func close() async {
        await transport.close()
        announcer.close()
    }
}

public enum VRRPSockets {
    /// Opens the sockets of one instance: one transport per instance (each raw socket sees every
    /// VRRP packet on the interface; other VRIDs are counted as `vridMismatch`).
    ///
    /// Everything that depends on the network namespace (interface lookup, the sockets) happens
    /// inside `VRRPNetworkNamespace.with(configuration.networkNamespacePath)` on the calling thread;
    /// IPv4 reception is then registered on `eventLoop` (pass the runner's loop).
    public static func open(_ configuration: VRRPSocketConfiguration, eventLoop: any EventLoop) async throws -> VRRPEndpoint {
        struct Made: Sendable {
            var interface: VRRPInterface
            var source: VRRPAddress
            var vrrp: (Int32, Int32)
            var packet: Int32
        }
        let c = configuration
        for peer in c.unicastPeers where peer.family != c.family {
            throw VRRPSetupError("unicast peer \(peer) is not \(c.family)")
        }
        let made: Made = try VRRPNetworkNamespace.with(c.networkNamespacePath) {
            let interface = try VRRPInterface.lookup(c.interface)
            let source: VRRPAddress
            switch c.family {
            case .ipv4:
                guard let s = c.sourceAddress ?? interface.ipv4.first else {
                    throw VRRPSetupError("interface \(c.interface) has no IPv4 address to send VRRP adverts from")
                }
                source = s
            case .ipv6:
                guard let s = c.sourceAddress ?? interface.ipv6LinkLocal else {
                    throw VRRPSetupError("interface \(c.interface) has no IPv6 link-local address to send VRRP adverts from")
                }
                source = s
            }
            guard source.family == c.family else { throw VRRPSetupError("source address \(source) is not \(c.family)") }
            let multicast = c.unicastPeers.isEmpty
            let vrrp: (Int32, Int32)
            switch c.family {
            case .ipv4:
                vrrp = try VRRPIPv4Transport.makeSockets(interface: interface, source: source, multicast: multicast)
            case .ipv6:
                let s = try VRRPIPv6Transport.makeSocket(interface: interface, multicast: multicast)
                vrrp = (s.fd, s.wake)
            }
            let packet: Int32
            do {
                packet = try VRRPPacketAnnouncer.makeSocket()
            } catch {
                close(vrrp.0)
                close(vrrp.1)
                throw error
            }
            return Made(interface: interface, source: source, vrrp: vrrp, packet: packet)
        }
        let destinations = c.unicastPeers.isEmpty
            ? [c.family == .ipv4 ? VRRPAddress.vrrpGroupV4 : VRRPAddress.vrrpGroupV6]
            : c.unicastPeers
        let announcer = VRRPPacketAnnouncer(fd: made.packet, interfaceIndex: made.interface.index,
                                            mac: made.interface.mac, router: made.interface.ipv6Forwarding)
        let transport: any VRRPTransport
        do {
            switch c.family {
            case .ipv4:
                transport = try await VRRPIPv4Transport.adopt(
                    receiveFD: made.vrrp.0, sendFD: made.vrrp.1, source: made.source,
                    destinations: destinations, isUnicast: !c.unicastPeers.isEmpty, eventLoop: eventLoop)
            case .ipv6:
                transport = VRRPIPv6Transport(fd: made.vrrp.0, wakeFD: made.vrrp.1, interfaceIndex: made.interface.index,
                                              source: made.source, destinations: destinations,
                                              isUnicast: !c.unicastPeers.isEmpty)
            }
        } catch {
            announcer.close()
            throw error
        }
        return VRRPEndpoint(interface: made.interface, transport: transport, announcer: announcer)
    }
}
