import Foundation
import NetlinkRoute
import Testing
import TestSupport

/// A namespace with a veth pair vx0/vx1 (this kernel has no dummy driver), kept for all of `body`.
func withVethNamespace(_ tag: String, _ body: (TestNamespace) throws -> Void) throws {
    let ns = try TestNamespace(tag)
    try withExtendedLifetime(ns) {
        let r = try ns.exec(["ip", "link", "add", "vx0", "type", "veth", "peer", "name", "vx1"])
        guard r.status == 0 else { throw TestFailure("ip link add veth: \(r.output)") }
        try body(ns)
    }
}

func ip(_ ns: TestNamespace, _ args: String...) throws -> String {
    try ns.exec(["ip"] + args).output
}

func address(_ text: String) throws -> RouteAddress { try #require(RouteAddress(text)) }

/// The inode of a namespace file (/proc/thread-self/ns/net, /run/netns/NAME).
func inode(_ path: String) -> UInt64 {
    var st = stat()
    return stat(path, &st) == 0 ? UInt64(st.st_ino) : 0
}

/// Reads events until `done` says enough or five seconds pass.
func events(_ watcher: LinkWatcher, until done: ([RouteEvent]) -> Bool) throws -> [RouteEvent] {
    let deadline = ContinuousClock.now + .seconds(5)
    var got: [RouteEvent] = []
    while !done(got), ContinuousClock.now < deadline {
        if try watcher.wait(timeoutMilliseconds: 100) { got += try watcher.readEvents() }
    }
    return got
}

@Suite("libnl-route wrapper against real kernel namespaces", .serialized, .enabled(if: isRoot, "needs root for network namespaces"))
struct NetlinkRouteTests {
    @Test("IPv4 with prefix and label: add and remove are idempotent; `ip` and addresses() agree")
    func ipv4() throws {
        try withVethNamespace("v4") { ns in
            let nl = try NetlinkRoute(netnsPath: ns.path)
            let vip = try address("192.0.2.10")
            #expect(try nl.addAddress(vip, prefixLength: 24, interface: "vx0", label: "vx0:vip") == true)
            #expect(try nl.addAddress(vip, prefixLength: 24, interface: "vx0", label: "vx0:vip") == false)
            #expect(try nl.addAddress(try address("198.51.100.7"), prefixLength: 32, interface: "vx0") == true)

            let shown = try ip(ns, "-o", "addr", "show", "dev", "vx0")
            #expect(shown.contains("inet 192.0.2.10/24 scope global vx0:vip"), "\(shown)")
            #expect(shown.contains("inet 198.51.100.7/32 scope global vx0"), "\(shown)")
            let listed = try nl.addresses(interface: "vx0")
            #expect(listed.map(\.address) == [vip, try address("198.51.100.7")])
            #expect(listed.first?.prefixLength == 24 && listed.first?.label == "vx0:vip")
            #expect(listed.last?.prefixLength == 32 && listed.last?.label == "vx0")
            #expect(listed.allSatisfy { $0.interfaceIndex == (try? nl.link(named: "vx0").index) })
            #expect(try nl.addresses(interface: "vx1").isEmpty)

            #expect(try nl.removeAddress(vip, prefixLength: 24, interface: "vx0") == true)
            #expect(try nl.removeAddress(vip, prefixLength: 24, interface: "vx0") == false)
            #expect(try nl.removeAddress(try address("198.51.100.7"), interface: "vx0") == true)   // any prefix
            #expect(try nl.removeAddress(try address("198.51.100.7"), interface: "vx0") == false)
            #expect(!(try ip(ns, "-o", "addr", "show", "dev", "vx0")).contains("inet "))
            #expect(try nl.addresses(interface: "vx0").isEmpty)
        }
    }

    @Test("IPv6 with prefix: added with nodad (never tentative), idempotent both ways")
    func ipv6() throws {
        try withVethNamespace("v6") { ns in
            let nl = try NetlinkRoute(netnsPath: ns.path)
            try nl.setLink(named: "vx1", up: true)
            try nl.setLink(named: "vx0", up: true)
            let vip = try address("2001:db8:1::10")
            #expect(try nl.addAddress(vip, prefixLength: 64, interface: "vx0", label: "ignored") == true)
            #expect(try nl.addAddress(vip, prefixLength: 64, interface: "vx0") == false)
            // The kernel keys IPv6 addresses by address alone: another prefix is "already there".
            #expect(try nl.addAddress(vip, prefixLength: 80, interface: "vx0") == false)

            let shown = try ip(ns, "-o", "-6", "addr", "show", "dev", "vx0", "scope", "global")
            #expect(shown.contains("inet6 2001:db8:1::10/64 scope global nodad"), "\(shown)")
            #expect(!shown.contains("tentative"), "\(shown)")
            let mine = try #require(try nl.addresses(interface: "vx0").first { $0.address == vip })
            #expect(mine.prefixLength == 64 && mine.label == nil)
            // IFA_F_NODAD and never IFA_F_TENTATIVE (a tentative address cannot be bound to).
            #expect(mine.flags & 0x02 != 0 && mine.flags & 0x40 == 0)

            #expect(try nl.removeAddress(vip, prefixLength: 64, interface: "vx0") == true)
            #expect(try nl.removeAddress(vip, prefixLength: 64, interface: "vx0") == false)
            #expect(!(try ip(ns, "-o", "-6", "addr", "show", "dev", "vx0")).contains("2001:db8:1::10"))
            #expect(try nl.addresses(interface: "vx0").allSatisfy { $0.address != vip })
        }
    }

    @Test("a missing interface is an error naming it and the address; removal from it is a no-op")
    func missingInterface() throws {
        try withVethNamespace("missing") { ns in
            let nl = try NetlinkRoute(netnsPath: ns.path)
            let vip = try address("192.0.2.1")
            let error = #expect(throws: NetlinkRouteError.self) {
                try nl.addAddress(vip, prefixLength: 24, interface: "nosuch0")
            }
            #expect(error?.errno == ENODEV)
            #expect(error?.description == "add 192.0.2.1/24 to nosuch0 in \(ns.path): No such device (errno 19)")
            let lookup = #expect(throws: NetlinkRouteError.self) { try nl.link(named: "nosuch0") }
            #expect(lookup?.errno == ENODEV && lookup?.description.contains("nosuch0") == true)
            #expect(try nl.removeAddress(vip, prefixLength: 24, interface: "nosuch0") == false)
            let badPrefix = #expect(throws: NetlinkRouteError.self) { try nl.addAddress(vip, prefixLength: 33, interface: "vx0") }
            #expect(badPrefix?.errno == EINVAL)
            let badLabel = #expect(throws: NetlinkRouteError.self) {
                try nl.addAddress(vip, prefixLength: 24, interface: "vx0", label: "a-label-over-15-bytes")
            }
            #expect(badLabel?.errno == EINVAL)
        }
    }

    @Test("links: index, name, MAC, MTU, admin and operational state as `ip` shows them")
    func links() throws {
        try withVethNamespace("links") { ns in
            let nl = try NetlinkRoute(netnsPath: ns.path)
            // (Kernels with built-in tunnels add their fallback devices, tunl0 and sit0, to every namespace.)
            #expect(Set(try nl.links().map(\.name)).isSuperset(of: ["lo", "vx0", "vx1"]))
            var vx0 = try nl.link(named: "vx0")
            let vx1 = try nl.link(named: "vx1")
            let shown = try ip(ns, "-o", "link", "show", "dev", "vx0")
            #expect(shown.hasPrefix("\(vx0.index): vx0@vx1:"), "\(shown)")
            let mac = vx0.mac.map { String(format: "%02x", $0) }.joined(separator: ":")
            #expect(vx0.mac.count == 6 && shown.contains("link/ether \(mac) "), "\(shown)")
            #expect(vx0.mtu == 1500 && vx0.kind == "veth" && vx0.parentIndex == vx1.index)
            #expect(!vx0.isAdminUp && !vx0.isOperUp && !vx0.hasCarrier)

            try nl.setLink(named: "vx0", up: true)   // the peer is down: up, but no carrier
            vx0 = try nl.link(named: "vx0")
            #expect(vx0.isAdminUp && !vx0.isOperUp && !vx0.hasCarrier)
            try nl.setLink(named: "vx1", up: true)
            vx0 = try nl.link(named: "vx0")
            #expect(vx0.isAdminUp && vx0.isOperUp && vx0.hasCarrier)
            #expect(try ip(ns, "-o", "link", "show", "dev", "vx0").contains("state UP"))
            let lo = try nl.link(named: "lo")
            #expect(lo.index == 1 && lo.mac == [0, 0, 0, 0, 0, 0] && lo.kind.isEmpty)
        }
    }

    @Test("the watcher reports `ip link set down/up` and address changes in its namespace")
    func watcher() throws {
        try withVethNamespace("watch") { ns in
            let watcher = try LinkWatcher(netnsPath: ns.path)
            #expect(try watcher.readEvents().isEmpty)   // non-blocking
            let nl = try NetlinkRoute(netnsPath: ns.path)
            let index = try nl.link(named: "vx0").index
            func vx0(_ e: RouteEvent) -> LinkInfo? {
                if case .link(let l) = e, l.index == index { return l }
                return nil
            }

            _ = try ns.exec(["ip", "link", "set", "vx1", "up"])
            _ = try ns.exec(["ip", "link", "set", "vx0", "up"])
            var got = try events(watcher) { $0.contains { vx0($0)?.isOperUp == true } }
            let up = try #require(got.compactMap(vx0).last)
            #expect(up.name == "vx0" && up.isAdminUp && up.isOperUp && up.hasCarrier)

            _ = try ns.exec(["ip", "link", "set", "vx0", "down"])
            got = try events(watcher) { $0.contains { vx0($0)?.isAdminUp == false } }
            let down = try #require(got.compactMap(vx0).last)
            #expect(!down.isAdminUp && !down.isOperUp)

            // The peer losing its carrier: vx0 stays admin up but is no longer operationally up.
            _ = try ns.exec(["ip", "link", "set", "vx0", "up"])
            _ = try events(watcher) { $0.contains { vx0($0)?.isOperUp == true } }
            _ = try ns.exec(["ip", "link", "set", "vx1", "down"])
            got = try events(watcher) { $0.contains { vx0($0)?.isOperUp == false } }
            let lost = try #require(got.compactMap(vx0).last)
            #expect(lost.isAdminUp && !lost.isOperUp && !lost.hasCarrier)

            let vip = try address("192.0.2.77")
            try nl.addAddress(vip, prefixLength: 32, interface: "vx0")
            got = try events(watcher) { $0.contains { if case .addressAdded(let a) = $0 { a.address == vip } else { false } } }
            #expect(got.contains(where: { if case .addressAdded(let a) = $0 { a.interfaceIndex == index && a.prefixLength == 32 } else { false } }))
            try nl.removeAddress(vip, interface: "vx0")
            got = try events(watcher) { $0.contains { if case .addressRemoved(let a) = $0 { a.address == vip } else { false } } }
            #expect(got.contains { if case .addressRemoved(let a) = $0 { a.address == vip } else { false } })

            _ = try ns.exec(["ip", "link", "del", "vx0"])
            got = try events(watcher) { $0.contains { if case .linkRemoved(let l) = $0 { l.name == "vx0" } else { false } } }
            #expect(got.contains { if case .linkRemoved(let l) = $0 { l.index == index } else { false } })
        }
    }

    @Test("a watcher that falls behind reports an overrun, then goes on reporting")
    func watcherOverrun() throws {
        try withVethNamespace("overrun") { ns in
            let watcher = try LinkWatcher(netnsPath: ns.path)
            let nl = try NetlinkRoute(netnsPath: ns.path)
            // Far more link messages than the 1 MiB receive buffer holds, none read meanwhile.
            for _ in 0..<3000 {
                try nl.setLink(named: "vx0", up: true)
                try nl.setLink(named: "vx0", up: false)
            }
            var got = try events(watcher) { $0.contains(.overrun) }
            #expect(got.contains(.overrun))
            while try watcher.wait(timeoutMilliseconds: 0) { _ = try watcher.readEvents() }
            try nl.setLink(named: "vx0", up: true)
            got = try events(watcher) { $0.contains { if case .link(let l) = $0 { l.name == "vx0" && l.isAdminUp } else { false } } }
            #expect(got.contains { if case .link(let l) = $0 { l.name == "vx0" && l.isAdminUp } else { false } })
        }
    }

    @Test("macvlan for use_vmac: private mode, VRRP MAC, up; create and delete are idempotent")
    func macvlan() throws {
        try withVethNamespace("vmac") { ns in
            let nl = try NetlinkRoute(netnsPath: ns.path)
            let parent = try nl.link(named: "vx0")
            let mac4 = NetlinkRoute.vrrpVirtualMAC(vrid: 51, family: .ipv4)
            let mac6 = NetlinkRoute.vrrpVirtualMAC(vrid: 51, family: .ipv6)
            #expect(try nl.createMacvlan(name: "vrrp4.51", parent: "vx0", mac: mac4) == true)
            #expect(try nl.createMacvlan(name: "vrrp6.51", parent: "vx0", mac: mac6) == true)
            #expect(try nl.createMacvlan(name: "vrrp4.51", parent: "vx0", mac: mac4) == false)

            let shown4 = try ip(ns, "-d", "link", "show", "vrrp4.51")
            #expect(shown4.contains("vrrp4.51@vx0: <"), "\(shown4)")
            #expect(shown4.contains(",UP"), "\(shown4)")
            #expect(shown4.contains("link/ether 00:00:5e:00:01:33 "), "\(shown4)")
            #expect(shown4.contains("macvlan mode private"), "\(shown4)")
            #expect(try ip(ns, "-d", "link", "show", "vrrp6.51").contains("link/ether 00:00:5e:00:02:33 "))
            let vmac = try nl.link(named: "vrrp4.51")
            #expect(vmac.kind == "macvlan" && vmac.parentIndex == parent.index && vmac.mac == mac4 && vmac.isAdminUp)

            // Already there but down: brought up again.
            _ = try ns.exec(["ip", "link", "set", "vrrp4.51", "down"])
            #expect(try nl.createMacvlan(name: "vrrp4.51", parent: "vx0", mac: mac4) == false)
            #expect(try nl.link(named: "vrrp4.51").isAdminUp)

            // The name taken by something else is an error, not success.
            let clash = #expect(throws: NetlinkRouteError.self) { try nl.createMacvlan(name: "vrrp4.51", parent: "vx0", mac: mac6) }
            #expect(clash?.errno == EEXIST && clash?.description.contains("vrrp4.51") == true)
            _ = try ns.exec(["ip", "link", "add", "bridged", "link", "vx0", "type", "macvlan", "mode", "bridge"])
            let mode = #expect(throws: NetlinkRouteError.self) { try nl.createMacvlan(name: "bridged", parent: "vx0", mac: mac4) }
            #expect(mode?.errno == EEXIST)
            let missing = #expect(throws: NetlinkRouteError.self) { try nl.createMacvlan(name: "vrrp4.52", parent: "nosuch0", mac: mac4) }
            #expect(missing?.errno == ENODEV && missing?.description.contains("nosuch0") == true)
            // Two up macvlans with one MAC on one parent (two VRRP instances with one VRID): the
            // kernel's EADDRINUSE, which libnl alone would have folded into "exists".
            let sameMAC = #expect(throws: NetlinkRouteError.self) { try nl.createMacvlan(name: "vrrp4.dup", parent: "vx0", mac: mac4) }
            #expect(sameMAC?.errno == EADDRINUSE, "\(String(describing: sameMAC))")
            #expect(try ns.exec(["ip", "link", "show", "vrrp4.dup"]).status != 0)

            #expect(try nl.deleteLink(named: "vrrp4.51") == true)
            #expect(try nl.deleteLink(named: "vrrp4.51") == false)
            #expect(try ns.exec(["ip", "link", "show", "vrrp4.51"]).status != 0)
            #expect(try nl.deleteLink(named: "vrrp6.51") == true)
            let left = Set(try nl.links().map(\.name))
            #expect(left.isSuperset(of: ["lo", "vx0", "vx1", "bridged"]) && !left.contains { $0.hasPrefix("vrrp") })
        }
    }

    @Test("a bridge port stops forwarding and forwards again, its link staying up; a missing port is an error naming it")
    func bridgePortState() throws {
        try withVethNamespace("brport") { ns in
            for args in [["ip", "link", "add", "br0", "type", "bridge", "stp_state", "0"], ["ip", "link", "set", "vx0", "master", "br0"],
                         ["ip", "link", "set", "br0", "up"], ["ip", "link", "set", "vx0", "up"], ["ip", "link", "set", "vx1", "up"]] {
                let r = try ns.exec(args)
                guard r.status == 0 else { throw TestFailure("\(args.joined(separator: " ")): \(r.output)") }
            }
            let nl = try NetlinkRoute(netnsPath: ns.path)
            func state() throws -> String { try ip(ns, "-d", "link", "show", "vx0") }
            let before = try state()
            #expect(before.contains(" state forwarding "), "\(before)")
            try nl.setBridgePort(named: "vx0", forwarding: false)
            let disabled = try state()
            #expect(disabled.contains(" state disabled "), "\(disabled)")
            #expect(try nl.link(named: "vx0").isAdminUp)
            try nl.setBridgePort(named: "vx0", forwarding: true)
            let again = try state()
            #expect(again.contains(" state forwarding "), "\(again)")
            let missing = #expect(throws: NetlinkRouteError.self) { try nl.setBridgePort(named: "nosuch0", forwarding: false) }
            #expect(missing?.errno == ENODEV && missing?.description.contains("nosuch0") == true)
            // Not a bridge port: the kernel's refusal, not success.
            #expect(throws: NetlinkRouteError.self) { try nl.setBridgePort(named: "vx1", forwarding: false) }
        }
    }

    @Test("each call enters the namespace and returns the calling thread to its own")
    func namespaceIsPerCall() throws {
        try withVethNamespace("enter") { ns in
            let threadBefore = inode("/proc/thread-self/ns/net"), processBefore = inode("/proc/self/ns/net")
            #expect(threadBefore != 0 && threadBefore != inode(ns.path))
            let nl = try NetlinkRoute(netnsPath: ns.path)
            let watcher = try LinkWatcher(netnsPath: ns.path)
            #expect(inode("/proc/thread-self/ns/net") == threadBefore)
            try nl.addAddress(try address("192.0.2.5"), prefixLength: 24, interface: "vx0")
            try nl.createMacvlan(name: "vm0", parent: "vx0", mac: NetlinkRoute.vrrpVirtualMAC(vrid: 1, family: .ipv4))
            #expect(try nl.links().contains { $0.name == "vm0" })
            _ = try watcher.readEvents()
            #expect(inode("/proc/thread-self/ns/net") == threadBefore)
            #expect(inode("/proc/self/ns/net") == processBefore)

            // What was made went into the namespace, not here.
            let here = try NetlinkRoute()
            #expect(here.netnsPath == nil)
            #expect(throws: NetlinkRouteError.self) { try here.link(named: "vx0") }
            #expect(try ip(ns, "-o", "addr", "show", "dev", "vx0").contains("192.0.2.5/24"))

            let bad = #expect(throws: NetlinkRouteError.self) { try NetlinkRoute(netnsPath: "/run/netns/ks-no-such-namespace") }
            #expect(bad?.errno == ENOENT && bad?.description.contains("/run/netns/ks-no-such-namespace") == true)
            #expect(inode("/proc/thread-self/ns/net") == threadBefore)
        }
    }
}
