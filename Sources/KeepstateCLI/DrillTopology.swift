import Foundation
import NetlinkRoute

/// The drill's network: five namespaces named `ksd<pid>-<run>-<role>`.
///
/// ```
///  clients (cl)                bridge namespace (br)                     server (sv)
///  c0 100.64.0.10/24 ── cl ─┐                             ┌─ sv ── s0 198.51.100.10/24
///                           bin (inside)            bout (outside)
///        ┌──────── r1in ────┤                             ├──── r1out ───────┐
///        │         r2in ────┘                             └──── r2out ──┐    │
///  r1: in0 100.64.0.2   out0 198.51.100.2   sync0 10.150.0.1 ── r1sync ─┐ bsync (bridge ns)
///  r2: in0 100.64.0.3   out0 198.51.100.3   sync0 10.150.0.2 ── r2sync ─┘
///  virtual addresses (on the master): 100.64.0.1/24 on in0, 198.51.100.1/24 on out0
/// ```
///
/// The clients' default route is the inside virtual address; the server reaches the outside
/// virtual address on its link (clients' traffic is source-NATed to it). The clients' ports lie
/// outside the NAT's port range (60000-65535 against 20000-59999), so the NAT must choose every
/// flow's port: a router that never saw a flow chooses another one (otherwise it would keep the
/// client's port, as the first router did, and the control run would pass by luck).
final class DrillTopology {
    struct Router {
        let name: String
        let netns: String
        let inside: String
        let outside: String
        let sync: String
        let priority: Int
    }

    static let insideVIP = "100.64.0.1"
    static let outsideVIP = "198.51.100.1"
    static let client = "100.64.0.10"
    static let server = "198.51.100.10"
    static let natPorts = "20000-59999"
    static let clientPorts = "60000 65535"
    static let routerInterfaces = ["in0", "out0", "sync0"]

    let tag: String
    let clients: String
    let serverNS: String
    let bridge: String
    let r1: Router
    let r2: Router
    private(set) var made: [String] = []

    init(tag: String) {
        self.tag = tag
        clients = "\(tag)-cl"
        serverNS = "\(tag)-sv"
        bridge = "\(tag)-br"
        r1 = Router(name: "r1", netns: "\(tag)-r1", inside: "100.64.0.2", outside: "198.51.100.2", sync: "10.150.0.1", priority: 150)
        r2 = Router(name: "r2", netns: "\(tag)-r2", inside: "100.64.0.3", outside: "198.51.100.3", sync: "10.150.0.2", priority: 100)
    }

    var namespaces: [String] { [bridge, clients, serverNS, r1.netns, r2.netns] }

    /// The nftables ruleset of a router: the forward chain accepts established and related,
    /// new connections only from inside, drops invalid; clients leave through SNAT to the
    /// outside virtual address and a port range.
    static let ruleset = """
        flush ruleset
        table inet keepstate_drill {
            chain forward {
                type filter hook forward priority filter; policy drop;
                ct state invalid counter drop
                ct state established,related counter accept
                iifname "in0" oifname "out0" ct state new counter accept
                counter comment "dropped by policy"
            }
            chain postrouting {
                type nat hook postrouting priority srcnat; policy accept;
                oifname "out0" meta l4proto { tcp, udp } snat ip to \(outsideVIP):\(natPorts)
            }
        }

        """

    /// Makes the namespaces, links, addresses, routes, sysctls and rulesets. `loose` is the
    /// routers' nf_conntrack_tcp_loose.
    func build(loose: Int, workdir: String) throws {
        for ns in namespaces {
            DrillJanitor.shared.adopt(namespace: ns)
            try Shell.must(["ip", "netns", "add", ns])
            made.append(ns)
            try Shell.must(["ip", "-n", ns, "link", "set", "lo", "up"])
        }
        var br: [String] = []
        for b in ["bin", "bout", "bsync"] {
            br.append("link add \(b) type bridge stp_state 0 forward_delay 0 mcast_snooping 0")
            br.append("link set \(b) up")
        }
        try Shell.ipBatch(br, netns: bridge)

        // A veth from `ns`'s `local` to the bridge port `port` on bridge `on`.
        func attach(_ ns: String, _ local: String, port: String, on: String) throws {
            try Shell.must(["ip", "-n", ns, "link", "add", local, "type", "veth", "peer", "name", port, "netns", bridge])
            try Shell.must(["ip", "-n", bridge, "link", "set", port, "master", on, "up"])
            try Shell.must(["ip", "-n", ns, "link", "set", local, "up"])
        }
        try attach(clients, "c0", port: "cl", on: "bin")
        try attach(serverNS, "s0", port: "sv", on: "bout")
        for r in [r1, r2] {
            try attach(r.netns, "in0", port: "\(r.name)in", on: "bin")
            try attach(r.netns, "out0", port: "\(r.name)out", on: "bout")
        }
        // The sync link: a segment of its own (a bridge, as a switch or a crossover cable).
        for r in [r1, r2] { try attach(r.netns, "sync0", port: "\(r.name)sync", on: "bsync") }

        try Shell.ipBatch(["addr add \(Self.client)/24 dev c0", "route add default via \(Self.insideVIP)"], netns: clients)
        try Shell.ipBatch(["addr add \(Self.server)/24 dev s0"], netns: serverNS)
        let rules = "\(workdir)/\(tag)-nft.conf"
        try Self.ruleset.write(toFile: rules, atomically: true, encoding: .utf8)
        for r in [r1, r2] {
            try Shell.ipBatch([
                "addr add \(r.inside)/24 dev in0",
                "addr add \(r.outside)/24 dev out0",
                "addr add \(r.sync)/24 dev sync0",
                "link set sync0 up",
            ], netns: r.netns)
            try Shell.must(["ip", "netns", "exec", r.netns, "nft", "-f", rules])
            try Self.sysctl(r.netns, ["net.ipv4.ip_forward": "1", "net.netfilter.nf_conntrack_tcp_loose": "\(loose)"])
        }
        try Self.sysctl(clients, ["net.ipv4.ip_local_port_range": Self.clientPorts])
    }

    /// Writes sysctls of a namespace through its /proc/sys (no procps needed).
    static func sysctl(_ netns: String, _ values: [String: String]) throws {
        let script = values.sorted { $0.key < $1.key }
            .map { "echo '\($0.value)' > /proc/sys/\($0.key.replacingOccurrences(of: ".", with: "/"))" }
            .joined(separator: " && ")
        try Shell.must(["ip", "netns", "exec", netns, "sh", "-c", script])
    }

    /// The failure of router `r`, as one step.
    ///
    /// `power`: every process in its namespace stops at once (SIGSTOP: none reacts to the
    /// failure; a VRRP daemon would send priority 0 on a link still up for a few microseconds,
    /// which a machine without power never does), then its three ports on the bridges stop
    /// forwarding (in-process netlink: three messages): what the network sees of a machine that
    /// lost power. Its links are not set down: in this one kernel, shared by both routers, a
    /// link going down makes a kernel worker walk the conntrack hash of every namespace
    /// (nf_nat_masquerade's device notifier, built into the kernel), which with 1,000,000
    /// entries per router took a whole CPU for over 4 s right when the survivor takes over. A
    /// real standby never pays for its peer's links.
    ///
    /// Without `power` (`--failure links`): r's own links go down, its processes keep running.
    ///
    /// The netlink sockets and the process list are taken first, so that the stop and the cut
    /// are microseconds apart even on a loaded machine (opened in between, a 0.2 s gap let the
    /// stopped router forward while its peer already counted its silence). Returns the instant
    /// just before the first of them, and the stopped processes, for `killAll`.
    func fail(_ r: Router, power: Bool) throws -> (at: UInt64, stopped: [pid_t]) {
        let nl = try NetlinkRoute(netnsPath: "/run/netns/\(power ? bridge : r.netns)")
        let pids = power
            ? try Shell.must(["ip", "netns", "pids", r.netns]).split(whereSeparator: \.isWhitespace).compactMap { pid_t($0) }
            : []
        let t = monotonicNanoseconds()
        for p in pids { kill(p, SIGSTOP) }
        if power {
            for port in Self.ports(of: r) { try nl.setBridgePort(named: port, forwarding: false) }
        } else {
            for i in Self.routerInterfaces { try nl.setLink(named: i, up: false) }
        }
        return (t, pids)
    }

    /// Router `r`'s ports on the bridges (inside, outside, sync).
    static func ports(of r: Router) -> [String] { ["\(r.name)in", "\(r.name)out", "\(r.name)sync"] }

    /// The return of a router that `fail(_:power: true)` cut off: its ports forward again.
    func portsForwarding(_ r: Router) throws {
        let nl = try NetlinkRoute(netnsPath: "/run/netns/\(bridge)")
        for port in Self.ports(of: r) { try nl.setBridgePort(named: port, forwarding: true) }
    }

    /// The retransmission timeouts (ms) of the clients' established TCP connections to the
    /// server, read with `ss -ti` in the clients' namespace: what bounds a surviving flow's stall.
    func clientRTOs() -> [Double] {
        guard let out = try? Shell.run(["ip", "netns", "exec", clients, "ss", "-tin", "state", "established",
                                        "dst", Self.server]).output else { return [] }
        return DrillAnalysis.rtos(fromSS: out)
    }

    func killAll(_ pids: [pid_t]) {
        for p in pids { kill(p, SIGKILL) }
    }

    func linksUp(_ r: Router) throws {
        let nl = try NetlinkRoute(netnsPath: "/run/netns/\(r.netns)")
        for i in Self.routerInterfaces { try nl.setLink(named: i, up: true) }
    }

    /// Adds the virtual addresses (in-process netlink: no process to start on the failover path).
    func addVIPs(_ r: Router) throws {
        let nl = try NetlinkRoute(netnsPath: "/run/netns/\(r.netns)")
        for (vip, dev) in [(Self.insideVIP, "in0"), (Self.outsideVIP, "out0")] {
            guard let a = RouteAddress(vip) else { throw DrillError("bad address \(vip)") }
            _ = try nl.addAddress(a, prefixLength: 24, interface: dev)
        }
    }

    /// Removes the virtual addresses where they are (netlink; an absent one is no error).
    func removeVIPs(_ r: Router) throws {
        let nl = try NetlinkRoute(netnsPath: "/run/netns/\(r.netns)")
        for (vip, dev) in [(Self.insideVIP, "in0"), (Self.outsideVIP, "out0")] {
            guard let a = RouteAddress(vip) else { throw DrillError("bad address \(vip)") }
            _ = try nl.removeAddress(a, prefixLength: 24, interface: dev)
        }
    }

    /// Whether the router holds both virtual addresses (a `vipWatcher` asked once).
    func hasVIPs(_ r: Router) throws -> Bool { try vipWatcher(r)() }

    /// A poller of whether the router holds both virtual addresses: one netlink socket in its
    /// namespace, a dump per call (no process started, nothing asked of the daemon, so polling
    /// every few milliseconds at the takeover does not load the router being measured). A
    /// failed dump counts as not holding them.
    func vipWatcher(_ r: Router) throws -> () -> Bool {
        let nl = try NetlinkRoute(netnsPath: "/run/netns/\(r.netns)")
        let wanted: Set<String> = [Self.insideVIP, Self.outsideVIP]
        return {
            guard let all = try? nl.allAddresses() else { return false }
            return wanted.isSubset(of: Set(all.map(\.address.description)))
        }
    }

    /// Forgets the virtual addresses' link-layer addresses on the client and the server (the
    /// static driver has no gratuitous ARP: they ask again and the new holder answers).
    func flushNeighbours() {
        _ = try? Shell.run(["ip", "-n", clients, "neigh", "flush", "dev", "c0"])
        _ = try? Shell.run(["ip", "-n", serverNS, "neigh", "flush", "dev", "s0"])
    }

    /// A rebooted machine's conntrack table is empty.
    func flushConntrack(_ r: Router) throws {
        try Shell.must(["ip", "netns", "exec", r.netns, "conntrack", "-F"])
    }

    /// The forward chain's counters of a router (invalid, established, new, policy drops).
    func forwardCounters(_ r: Router) -> String {
        guard let out = try? Shell.run(["ip", "netns", "exec", r.netns, "nft", "list", "chain", "inet", "keepstate_drill", "forward"]).output
        else { return "" }
        return out.split(whereSeparator: \.isNewline).filter { $0.contains("counter packets") }
            .map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: "; ")
    }

    func destroy() {
        for ns in made.reversed() {
            DrillJanitor.deleteNamespace(ns)
            DrillJanitor.shared.forget(namespace: ns)
        }
        made = []
    }
}
