import Foundation
import Glibc
import Logging
import Testing
import TestSupport
import VRRP
import VRRPBench
import VRRPNet

/// Every test that makes namespaces and processes, one at a time (timing-sensitive, 2 cores).
@Suite(.serialized, .timeLimit(.minutes(1)), .enabled(if: canRunNamespaceTests, "needs root: network namespaces and raw sockets"))
struct NamespaceTests {}

let vip4 = "192.0.2.100"

/// A segment with keepalived on host "ka" (192.0.2.1) and our runner on host "ks" (192.0.2.2),
/// unless the addresses are swapped.
struct InteropLab {
    let segment: LabSegment
    let ka: LabHost
    let ks: LabHost

    init(_ segment: LabSegment, swapAddresses: Bool = false) throws {
        self.segment = segment
        ka = try segment.addHost("ka", number: 1, ipv4: swapAddresses ? "192.0.2.2" : "192.0.2.1")
        ks = try segment.addHost("ks", number: 2, ipv4: swapAddresses ? "192.0.2.1" : "192.0.2.2")
    }

    func keepalived(priority: Int, version: Int, advert: String = "0.1", vips: [String] = [vip4],
                    configure: (inout KeepalivedInstanceConfig) -> Void = { _ in }) throws -> LabKeepalived {
        var c = KeepalivedInstanceConfig(routerID: "ka", priority: priority, advertInterval: advert, version: version,
                                         virtualAddresses: vips)
        configure(&c)
        return try LabKeepalived(on: ka, config: c, segment: segment)
    }

    func ours(priority: UInt8, version: VRRPVersion, advertCentiseconds: UInt16 = 10, family: VRRPAddressFamily = .ipv4,
              vips: [String] = [vip4], unicastPeers: [String] = [], logger: Logger) async throws -> LabRunner {
        try await LabRunner(on: ks, segment: segment, family: family, unicastPeers: unicastPeers.map(ip),
                            checkUnicastSource: !unicastPeers.isEmpty, instance: { source in
            VRRPInstanceConfig(vrid: 51, priority: priority, advertIntervalCentiseconds: advertCentiseconds,
                               version: version, primaryAddress: source, virtualAddresses: vips.map(ip))
        }, addressManager: TestIPAddressManager(namespace: ks.namespace.name), logger: logger)
    }

    /// Who holds `vip` now.
    func holders(_ vip: String = vip4) -> [String] {
        var out: [String] = []
        if ka.namespace.has(vip, on: "veth0") { out.append("keepalived") }
        if ks.namespace.has(vip, on: "veth0") { out.append("ours") }
        return out
    }

    /// Waits until exactly `who` holds `vip` (and keeps holding it for `stable`).
    func waitForHolder(_ who: String, vip: String = vip4, timeout: Duration = .seconds(10),
                       stable: Duration = .milliseconds(300)) async -> [String] {
        let ok = await labPoll(timeout: timeout) { holders(vip) == [who] }
        guard ok else { return holders(vip) }
        try? await Task.sleep(for: stable)
        return holders(vip)
    }
}

extension NamespaceTests {
    // As root these run: `make test` installs keepalived, and a missing one fails them (never a skip).
    @Suite
    struct KeepalivedInterop {
        @Test func v3OursHigherPreemptsKeepalivedAndOurShutdownHandsBack() async throws {
            let (logger, logs) = memoryLogger()
            try await withLabSegment(tag: "v3hi") { segment in
                let lab = try InteropLab(segment)
                let ka = try lab.keepalived(priority: 100, version: 3)
                #expect(await lab.waitForHolder("keepalived") == ["keepalived"], "\(ka.log)")
                let ours = try await lab.ours(priority: 150, version: .v3, logger: logger)
                await ours.start()
                #expect(await lab.waitForHolder("ours") == ["ours"], "\(ka.log)")
                #expect(await ours.runner.state == .master)
                #expect(ka.log.contains("Entering BACKUP STATE"))
                await ours.stop()
                #expect(await lab.waitForHolder("keepalived") == ["keepalived"], "\(ka.log)")
                let stats = try #require(ours.finalStatistics)
                #expect(stats.advertsReceived > 0)
                #expect(stats.drops.isEmpty, "\(stats.drops) \(logs.entries)")
                #expect(stats.becameMaster == 1)
            }
        }

        @Test func v3KeepalivedHigherPreemptsOursAndSigtermHandsOverAfterSkewTime() async throws {
            let (logger, logs) = memoryLogger()
            try await withLabSegment(tag: "v3lo") { segment in
                let lab = try InteropLab(segment)
                let ours = try await lab.ours(priority: 100, version: .v3, logger: logger)
                await ours.start()
                #expect(await lab.waitForHolder("ours") == ["ours"])
                let ka = try lab.keepalived(priority: 150, version: 3)
                #expect(await lab.waitForHolder("keepalived") == ["keepalived"], "\(ka.log)")
                #expect(await ours.runner.state == .backup)
                // SIGTERM: keepalived sends priority 0, we take over after Skew_Time (60 ms at priority
                // 100), well before Master_Down_Interval (360 ms) would have run out.
                let t0 = ours.runner.now()
                ka.process.signal(SIGTERM)
                #expect(await lab.waitForHolder("ours") == ["ours"], "\(ka.log)")
                let last = try #require(await ours.runner.statistics.lastTransition)
                #expect(last.to == .master)
                #expect(last.reason == .masterDownTimerExpired)
                #expect(last.at - t0 < .milliseconds(250), "took \(last.at - t0)")
                let stats = await ours.runner.statistics
                #expect(stats.drops.isEmpty, "\(stats.drops) \(logs.entries)")
                #expect(stats.becameMaster == 2)
            }
        }

        @Test func v3KeepalivedLinkCutMakesOursMasterAfterMasterDownInterval() async throws {
            let (logger, _) = memoryLogger()
            try await withLabSegment(tag: "v3cut") { segment in
                let lab = try InteropLab(segment)
                let ka = try lab.keepalived(priority: 150, version: 3)
                #expect(await lab.waitForHolder("keepalived") == ["keepalived"], "\(ka.log)")
                let ours = try await lab.ours(priority: 100, version: .v3, logger: logger)
                await ours.start()
                #expect(await labPoll(timeout: .seconds(2)) { await ours.runner.statistics.advertsReceived >= 3 })
                #expect(await ours.runner.state == .backup)
                let t0 = ours.runner.now()
                try lab.ka.namespace.must(["ip", "link", "set", "veth0", "down"])
                #expect(await lab.waitForHolder("ours") == ["ours"], "\(ka.log)")
                let last = try #require(await ours.runner.statistics.lastTransition)
                #expect(last.to == .master)
                // Master_Down_Interval = 3 * 100 ms + Skew_Time 60 ms, counted from the last advert
                // (at most one interval before the cut).
                let elapsed = last.at - t0
                #expect(elapsed >= .milliseconds(250) && elapsed < .milliseconds(600), "took \(elapsed)")
                #expect(ka.log.contains("FAULT"), "\(ka.log)")
            }
        }

        @Test(arguments: [false, true])
        func v3EqualPriorityHigherPrimaryAddressWins(oursHasHigherAddress: Bool) async throws {
            let (logger, _) = memoryLogger()
            try await withLabSegment(tag: "v3eq") { segment in
                let lab = try InteropLab(segment, swapAddresses: !oursHasHigherAddress)
                // Both sides drop VRRP until both are master, then the partition heals and the lower
                // primary address must yield.
                for host in [lab.ka, lab.ks] { try partition(host.namespace) }
                let ka = try lab.keepalived(priority: 100, version: 3)
                let ours = try await lab.ours(priority: 100, version: .v3, logger: logger)
                await ours.start()
                #expect(await labPoll(timeout: .seconds(5)) { lab.holders() == ["keepalived", "ours"] }, "\(ka.log)")
                for host in [lab.ka, lab.ks] { try heal(host.namespace) }
                let winner = oursHasHigherAddress ? "ours" : "keepalived"
                #expect(await lab.waitForHolder(winner) == [winner], "\(ka.log)")
                #expect(await ours.runner.state == (oursHasHigherAddress ? .master : .backup))
                if !oursHasHigherAddress {
                    let last = try #require(await ours.runner.statistics.lastTransition)
                    #expect(last.reason == .equalPriorityHigherAddress(priority: 100, source: ip("192.0.2.2")))
                }
            }
        }

        @Test func v2OursHigherWinsAndOurShutdownHandsBack() async throws {
            let (logger, logs) = memoryLogger()
            try await withLabSegment(tag: "v2hi") { segment in
                let lab = try InteropLab(segment)
                // Started together: ours (150) runs out of Master_Down_Interval first (3.41 s vs 3.61 s).
                let ka = try lab.keepalived(priority: 100, version: 2, advert: "1")
                let ours = try await lab.ours(priority: 150, version: .v2, advertCentiseconds: 100, logger: logger)
                await ours.start()
                #expect(await lab.waitForHolder("ours", stable: .milliseconds(1200)) == ["ours"], "\(ka.log)")
                #expect(ka.log.contains("Entering BACKUP STATE"))
                await ours.stop()
                // keepalived takes over after its Skew_Time (0.61 s) on our priority-0 advert.
                #expect(await lab.waitForHolder("keepalived", timeout: .seconds(3), stable: .zero) == ["keepalived"], "\(ka.log)")
                let stats = try #require(ours.finalStatistics)
                #expect(stats.advertsReceived == 0)  // keepalived, backup, never sent one
                #expect(stats.drops.isEmpty, "\(stats.drops) \(logs.entries)")
            }
        }

        @Test func v2KeepalivedHigherWinsAndSigtermHandsOver() async throws {
            let (logger, logs) = memoryLogger()
            try await withLabSegment(tag: "v2lo") { segment in
                let lab = try InteropLab(segment)
                let ka = try lab.keepalived(priority: 150, version: 2, advert: "1")
                let ours = try await lab.ours(priority: 100, version: .v2, advertCentiseconds: 100, logger: logger)
                await ours.start()
                #expect(await lab.waitForHolder("keepalived", stable: .milliseconds(1200)) == ["keepalived"], "\(ka.log)")
                #expect(await ours.runner.state == .backup)
                let t0 = ours.runner.now()
                ka.process.signal(SIGTERM)
                #expect(await lab.waitForHolder("ours", timeout: .seconds(3), stable: .zero) == ["ours"], "\(ka.log)")
                let last = try #require(await ours.runner.statistics.lastTransition)
                // v2 Skew_Time at priority 100: 156/256 s = 609 ms; Master_Down_Interval would be 3.6 s.
                #expect(last.at - t0 < .milliseconds(1200), "took \(last.at - t0)")
                let stats = await ours.runner.statistics
                #expect(stats.advertsReceived > 0)
                #expect(stats.drops.isEmpty, "\(stats.drops) \(logs.entries)")
            }
        }

        @Test func v3UnicastPeersBothWays() async throws {
            let (logger, logs) = memoryLogger()
            try await withLabSegment(tag: "v3uni") { segment in
                let lab = try InteropLab(segment)
                let ka = try lab.keepalived(priority: 150, version: 3) { c in
                    c.extraInstanceLines = ["unicast_src_ip 192.0.2.1", "unicast_peer {", "    192.0.2.2", "}"]
                }
                #expect(await lab.waitForHolder("keepalived") == ["keepalived"], "\(ka.log)")
                let ours = try await lab.ours(priority: 100, version: .v3, unicastPeers: ["192.0.2.1"], logger: logger)
                await ours.start()
                let heard = await labPoll(timeout: .seconds(2)) { await ours.runner.statistics.advertsReceived >= 3 }
                #expect(heard)
                #expect(await ours.runner.state == .backup)
                ka.process.signal(SIGTERM)
                #expect(await lab.waitForHolder("ours") == ["ours"], "\(ka.log)")
                // keepalived comes back with the higher priority and takes over from our unicast adverts.
                let ka2 = try lab.keepalived(priority: 150, version: 3) { c in
                    c.extraInstanceLines = ["unicast_src_ip 192.0.2.1", "unicast_peer {", "    192.0.2.2", "}"]
                }
                #expect(await lab.waitForHolder("keepalived") == ["keepalived"], "\(ka2.log)")
                #expect(ka2.log.contains("192.0.2.2"), "keepalived heard our unicast adverts: \(ka2.log)")
                let stats = await ours.runner.statistics
                #expect(stats.drops.isEmpty, "\(stats.drops) \(logs.entries)")
            }
        }

        /// While the unicast peer runs no VRRP, its kernel answers our adverts with ICMP protocol
        /// unreachable. That must not stop our reception (an unconnected raw socket without
        /// IP_RECVERR is not told of ICMP errors, so NIO's receive channel sees no read error): when
        /// keepalived starts there with a higher priority, we hear it and step back.
        @Test func unicastPeerWithoutVRRPListenerDoesNotBreakReception() async throws {
            let (logger, logs) = memoryLogger()
            try await withLabSegment(tag: "v3icmp") { segment in
                let lab = try InteropLab(segment)
                let ours = try await lab.ours(priority: 100, version: .v3, unicastPeers: ["192.0.2.1"], logger: logger)
                await ours.start()
                #expect(await lab.waitForHolder("ours") == ["ours"])
                try await Task.sleep(for: .milliseconds(500))  // ~5 adverts answered with ICMP errors
                let ka = try lab.keepalived(priority: 150, version: 3) { c in
                    c.extraInstanceLines = ["unicast_src_ip 192.0.2.1", "unicast_peer {", "    192.0.2.2", "}"]
                }
                #expect(await lab.waitForHolder("keepalived") == ["keepalived"], "\(ka.log) \(logs.entries)")
                #expect(await ours.runner.state == .backup)
                let stats = await ours.runner.statistics
                #expect(stats.receiveErrors == 0 && stats.advertSendErrors == 0, "\(stats)")
            }
        }

        /// keepalived runs VRRPv2 on the VRID we run as v3: its adverts are dropped and counted as
        /// `versionMismatch`, logged once (rate limited) with our group name.
        @Test func mismatchedVersionFromKeepalivedIsDroppedCountedAndLogged() async throws {
            let (logger, logs) = memoryLogger()
            try await withLabSegment(tag: "v2v3") { segment in
                let lab = try InteropLab(segment)
                // Priority 255 and `state MASTER`: keepalived goes master at once (either alone: it
                // waits Master_Down_Interval like any backup).
                let ka = try lab.keepalived(priority: 255, version: 2, advert: "1") { $0.initialState = "MASTER" }
                // A slow v3 instance: while it is backup it sends nothing, so keepalived keeps sending.
                // (keepalived 2.2.7 quirk: a master that keeps receiving packets for its VRID that it
                // discards, such as our v3 adverts at 10/s, stops sending its own adverts.)
                let ours = try await lab.ours(priority: 100, version: .v3, advertCentiseconds: 200, logger: logger)
                await ours.start()
                let dropped = await labPoll(timeout: .seconds(4)) {
                    (await ours.runner.statistics.drops[.versionMismatch] ?? 0) >= 2
                }
                let stats = await ours.runner.statistics
                #expect(dropped, "\(stats) \(ka.log)")
                #expect(stats.advertsReceived == 0)
                let lines = logs.entries.filter { $0.metadata["vrrp.drop"] == "versionMismatch" }
                #expect(lines.count == 1)
                #expect(lines.first?.metadata["group"] == "vrid-51")
            }
        }

        @Test func v3IPv6KeepalivedHigherThenSigtermHandsOver() async throws {
            let (logger, logs) = memoryLogger()
            let vip6 = "2001:db8::100"
            try await withLabSegment(tag: "v3six") { segment in
                let lab = try InteropLab(segment)
                let ka = try lab.keepalived(priority: 150, version: 3, vips: ["\(vip6)/128"])
                #expect(await lab.waitForHolder("keepalived", vip: vip6) == ["keepalived"], "\(ka.log)")
                let ours = try await lab.ours(priority: 100, version: .v3, family: .ipv6, vips: [vip6], logger: logger)
                await ours.start()
                let heard = await labPoll(timeout: .seconds(2)) { await ours.runner.statistics.advertsReceived >= 3 }
                let early = await ours.runner.statistics
                #expect(heard, "\(early) \(logs.entries)")
                #expect(await ours.runner.state == .backup)
                ka.process.signal(SIGTERM)
                #expect(await lab.waitForHolder("ours", vip: vip6) == ["ours"], "\(ka.log)")
                let stats = await ours.runner.statistics
                #expect(stats.drops.isEmpty, "\(stats.drops) \(logs.entries)")
            }
        }
    }
}

/// Drops VRRP (IP protocol 112, both families) arriving in `namespace`.
func partition(_ namespace: LabNamespace) throws {
    try namespace.must(["nft", "add table inet ksvrrp; add chain inet ksvrrp in { type filter hook input priority 0 ; } ; add rule inet ksvrrp in meta l4proto 112 drop"])
}

func heal(_ namespace: LabNamespace) throws {
    try namespace.must(["nft", "delete table inet ksvrrp"])
}
