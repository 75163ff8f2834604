import Foundation
import Glibc
import Logging
import Testing
import VRRP
import VRRPBench
import VRRPNet

extension NamespaceTests {
    /// What tshark's dissectors say about what we put on the wire, captured on the segment's bridge.
    // As root these run: `make test` installs tshark, and a missing one fails them (never a skip).
    @Suite
    struct OnTheWire {
        /// v2, v3 over IPv4 (pseudo-header checksum, tshark's default) and v3 over IPv6: tshark
        /// reports the VRRP checksum Good (`vrrp.checksum.status` 1, as for keepalived's own adverts)
        /// and TTL / hop limit 255.
        @Test func advertsAreWellFormedForTshark() async throws {
            let (logger, _) = memoryLogger()
            try await withLabSegment(tag: "wire") { segment in
                let host = try segment.addHost("ks", number: 2, ipv4: "192.0.2.2")
                let capture = try LabCapture(
                    namespace: segment.bridge, interface: "br0", filter: "ip proto 112 or ip6 proto 112",
                    fields: ["vrrp.version", "vrrp.virt_rtr_id", "vrrp.checksum.status", "ip.ttl", "ipv6.hlim",
                             "vrrp.prio", "vrrp.ip_addr", "vrrp.ipv6_addr"],
                    segment: segment)
                try await capture.waitUntilCapturing()
                // Priority 255 (address owner): master at once, so the capture is short.
                let v2 = try await LabRunner(on: host, segment: segment, family: .ipv4, instance: {
                    VRRPInstanceConfig(vrid: 10, priority: 255, advertIntervalCentiseconds: 100, version: .v2,
                                       primaryAddress: $0, virtualAddresses: [ip("192.0.2.110")])
                }, addressManager: TestIPAddressManager(namespace: host.namespace.name), logger: logger)
                let v3 = try await LabRunner(on: host, segment: segment, family: .ipv4, instance: {
                    VRRPInstanceConfig(vrid: 11, priority: 255, advertIntervalCentiseconds: 10, version: .v3,
                                       primaryAddress: $0, virtualAddresses: [ip("192.0.2.111"), ip("192.0.2.112")])
                }, addressManager: TestIPAddressManager(namespace: host.namespace.name), logger: logger)
                let v6 = try await LabRunner(on: host, segment: segment, family: .ipv6, instance: {
                    VRRPInstanceConfig(vrid: 12, priority: 255, advertIntervalCentiseconds: 10, version: .v3,
                                       primaryAddress: $0, virtualAddresses: [ip("2001:db8::112")])
                }, addressManager: TestIPAddressManager(namespace: host.namespace.name), logger: logger)
                for r in [v2, v3, v6] { await r.start() }
                func count(_ vrid: String) -> Int { capture.rows.filter { $0.count > 1 && $0[1] == vrid }.count }
                let enough = await labPoll(timeout: .seconds(6)) { count("10") >= 3 && count("11") >= 5 && count("12") >= 5 }
                #expect(enough, "\(capture.rows) \(capture.stderr)")
                for r in [v2, v3, v6] { await r.stop() }
                // The shutdown adverts (priority 0).
                let zeros = await labPoll(timeout: .seconds(3)) { capture.rows.filter { $0.count > 5 && $0[5] == "0" }.count >= 3 }
                #expect(zeros, "\(capture.rows.suffix(6))")
                let rows = await capture.stop()
                for vrid in ["10", "11", "12"] {
                    let mine = rows.filter { $0.count >= 8 && $0[1] == vrid && $0[5] != "0" }
                    #expect(mine.count >= 3, "vrid \(vrid): \(rows)")
                    for r in mine {
                        #expect(r[2] == "1", "checksum status of \(r)")  // 1 = PROTO_CHECKSUM_E_GOOD
                        #expect(r[0] == (vrid == "10" ? "2" : "3"))
                        #expect(r[5] == "255")
                        if vrid == "12" {
                            #expect(r[4] == "255" && r[7] == "2001:db8::112", "\(r)")
                        } else {
                            #expect(r[3] == "255", "\(r)")
                        }
                    }
                    // The shutdown advert (priority 0) is well formed too.
                    let zero = rows.filter { $0.count >= 8 && $0[1] == vrid && $0[5] == "0" }
                    #expect(zero.count == 1 && zero.allSatisfy { $0[2] == "1" }, "vrid \(vrid): \(zero)")
                }
                let v3Row = rows.first { $0.count >= 8 && $0[1] == "11" }
                #expect(v3Row?[6] == "192.0.2.111,192.0.2.112")
            }
        }

        /// After becoming master: gratuitous ARP (sender = target = VIP, from our MAC, broadcast)
        /// and unsolicited NA (type 136, override flag, target = VIP, to ff02::1, hop limit 255,
        /// target link-layer option = our MAC), in two bursts `masterDelay` apart.
        @Test func gratuitousARPAndUnsolicitedNAAfterBecomingMaster() async throws {
            let (logger, _) = memoryLogger()
            try await withLabSegment(tag: "garp") { segment in
                let host = try segment.addHost("ks", number: 2, ipv4: "192.0.2.2")
                let peer = try segment.addHost("pe", number: 3, ipv4: "192.0.2.3")
                // Captured in the peer's namespace: what a neighbour on the segment receives.
                let capture = try LabCapture(
                    namespace: peer.namespace, interface: "veth0",
                    filter: "arp or (icmp6 and ip6[40] == 136) or ip proto 112",
                    fields: ["frame.time_epoch", "eth.src", "eth.dst", "arp.opcode", "arp.src.hw_mac",
                             "arp.src.proto_ipv4", "arp.dst.proto_ipv4", "icmpv6.type", "icmpv6.nd.na.target_address",
                             "icmpv6.nd.na.flag.o", "icmpv6.nd.na.flag.s", "ipv6.hlim", "ipv6.dst", "icmpv6.opt.linkaddr",
                             "icmpv6.checksum.status", "ipv6.src", "vrrp.virt_rtr_id"],
                    segment: segment)
                try await capture.waitUntilCapturing()
                // tshark says "Capturing on" a moment before packets really reach it: a beacon
                // instance (VRID 99) runs until its adverts show up, so the first burst is not lost.
                let beacon = try await LabRunner(on: host, segment: segment, family: .ipv4, instance: {
                    VRRPInstanceConfig(vrid: 99, priority: 255, advertIntervalCentiseconds: 10, version: .v3,
                                       primaryAddress: $0, virtualAddresses: [ip("192.0.2.199")])
                }, gratuitous: VRRPGratuitousConfiguration(masterDelay: .zero, masterRepeat: 0),
                   addressManager: TestIPAddressManager(namespace: host.namespace.name), logger: logger)
                await beacon.start()
                #expect(await labPoll(timeout: .seconds(5)) { capture.rows.contains { $0.last == "99" } })
                let garp = VRRPGratuitousConfiguration(masterDelay: .milliseconds(500), masterRepeat: 2)
                let r4 = try await LabRunner(on: host, segment: segment, family: .ipv4, instance: {
                    VRRPInstanceConfig(vrid: 21, priority: 255, advertIntervalCentiseconds: 10, version: .v3,
                                       primaryAddress: $0, virtualAddresses: [ip("192.0.2.121"), ip("192.0.2.122")])
                }, gratuitous: garp, addressManager: TestIPAddressManager(namespace: host.namespace.name), logger: logger)
                let r6 = try await LabRunner(on: host, segment: segment, family: .ipv6, instance: {
                    VRRPInstanceConfig(vrid: 22, priority: 255, advertIntervalCentiseconds: 10, version: .v3,
                                       primaryAddress: $0, virtualAddresses: [ip("2001:db8::122")])
                }, gratuitous: garp, addressManager: TestIPAddressManager(namespace: host.namespace.name), logger: logger)
                await r4.start()
                await r6.start()
                let arps = { capture.rows.filter { $0.count >= 17 && $0[3] == "1" && $0[5] == $0[6] } }
                let nas = { capture.rows.filter { $0.count >= 17 && $0[7] == "136" } }
                let all = await labPoll(timeout: .seconds(5)) { arps().count >= 8 && nas().count >= 4 }
                #expect(all, "\(capture.rows)")
                let stats4 = await r4.runner.statistics
                #expect(stats4.announcementsSent == 8)
                let rows = await capture.stop()
                let a = rows.filter { $0.count >= 17 && $0[3] == "1" }
                for vip in ["192.0.2.121", "192.0.2.122"] {
                    let forVIP = a.filter { $0[5] == vip }
                    #expect(forVIP.count == 4, "\(vip): \(a)")
                    for r in forVIP {
                        #expect(r[1] == host.mac && r[4] == host.mac && r[2] == "ff:ff:ff:ff:ff:ff" && r[6] == vip, "\(r)")
                    }
                    // Two bursts of two, the second `masterDelay` after the first.
                    if forVIP.count == 4, let t0 = Double(forVIP[0][0]), let t2 = Double(forVIP[2][0]) {
                        #expect(abs((t2 - t0) - 0.5) < 0.1, "bursts \(t2 - t0) s apart")
                    }
                }
                let n = rows.filter { $0.count >= 17 && $0[7] == "136" }
                #expect(n.count == 4, "\(n)")
                for r in n {
                    #expect(r[8] == "2001:db8::122" && r[9] == "1" && r[10] == "0", "\(r)")
                    #expect(r[11] == "255" && r[12] == "ff02::1" && r[13] == host.mac && r[14] == "1", "\(r)")
                    #expect(r[15] == "2001:db8::122" && r[2] == "33:33:00:00:00:01", "\(r)")
                }
            }
        }
    }
}
