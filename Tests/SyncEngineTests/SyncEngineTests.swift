import ConntrackModel
import Dataplane
import Foundation
import InMemoryLogging
import Logging
import NIOCore
import SyncEngine
import SyncProtocol
import Testing
import TestSupport

@Suite("Sync over mutual TLS on loopback", .serialized)
struct SyncEngineTests {
    @Test("a master's table and its later changes reach the backup exactly")
    func basicSync() async throws {
        let pair = try await Pair.make(connections: 4)
        var gen = TrafficGenerator(seed: 1, mix: .fill)
        pair.dp1.simulate(gen.next(10_000))
        pair.e1.setRole(.master)
        pair.startSending()
        var converged = await eventually { pair.e2.store.count == 10_000 }
        #expect(converged)
        // Live changes after the resync.
        gen.mix = .steady
        for _ in 0..<20 { pair.dp1.simulate(gen.next(1000)) }
        converged = await eventually {
            await pair.e1.isIdle() && asDictionary(pair.e2.store.dump()) == asDictionary(pair.dp1.dump())
        }
        #expect(converged)
        let stats = await pair.e1.statistics()
        #expect(stats.connections.count == 4)
        #expect(stats.connections.allSatisfy { $0.connectionStatus == .established })
        #expect(stats.connections.map(\.transmit).reduce(0, +) >= 10_000)
        let local = await pair.e2.statistics().localNode
        #expect(local.receive >= 10_000)
        #expect(local.receiveError == 0)
        #expect(local.refusedConnections == 0)
        // The backup sends nothing while backup.
        #expect(pair.e1.store.count == 0)
        await pair.shutdown()
    }

    @Test("a role change makes the other node send its table; the old copy is replaced")
    func roleChangeResyncs() async throws {
        let pair = try await Pair.make(connections: 2)
        var gen1 = TrafficGenerator(seed: 2, mix: .fill)
        pair.dp1.simulate(gen1.next(3000))
        pair.e1.setRole(.master)
        pair.startSending()
        #expect(await eventually { pair.e2.store.count == 3000 })
        // ha2 takes over with a different table; ha1 becomes backup.
        var gen2 = TrafficGenerator(seed: 3, mix: .fill)
        pair.dp2.simulate(gen2.next(500))
        pair.e1.setRole(.backup)
        pair.e2.setRole(.master)
        #expect(await eventually { asDictionary(pair.e1.store.dump()) == asDictionary(pair.dp2.dump()) })
        await pair.shutdown()
    }
}

@Suite("Hello checks", .serialized)
struct HelloCheckTests {
    @Test("differing sync settings: accepted, and both logs name each difference")
    func driftIsNamed() async throws {
        let log1 = InMemoryLogHandler()
        let log2 = InMemoryLogHandler()
        let pair = try await Pair.make(
            connections: 1,
            settings1: [.init(key: "conntrack_timeouts.tcp_undefined", value: "10"), .init(key: "ha_delays.tcp.synchronization", value: "1")],
            settings2: [.init(key: "conntrack_timeouts.tcp_undefined", value: "20"), .init(key: "ha_delays.tcp.synchronization", value: "1")],
            logger1: Logger(label: "ha1") { _ in log1 }, logger2: Logger(label: "ha2") { _ in log2 })
        var gen = TrafficGenerator(seed: 4, mix: .fill)
        pair.dp1.simulate(gen.next(100))
        pair.e1.setRole(.master)
        pair.startSending()
        #expect(await eventually { pair.e2.store.count == 100 })
        func differences(_ log: InMemoryLogHandler) -> [String] {
            log.entries.filter { $0.level == .warning && "\($0.message)" == "configuration drift with the peer" }
                .compactMap { $0.metadata["differences"].map { "\($0)" } }
        }
        // One warning per node (not one per connection), naming the setting.
        #expect(await eventually { differences(log1).count == 1 && differences(log2).count == 1 })
        #expect(differences(log2).first?.hasPrefix("conntrack_timeouts.tcp_undefined: here 20, peer 10") == true, "\(log2.entries)")
        #expect(differences(log1).first?.hasPrefix("conntrack_timeouts.tcp_undefined: here 10, peer 20") == true, "\(log1.entries)")
        #expect(pair.e1.configDrift.kind == .settings && pair.e2.configDrift.kind == .settings)
        #expect(await pair.e1.statistics().connections[0].connectionStatus == .established)
        await pair.shutdown()
    }

    static func ruleset(_ chain: UInt8) -> RulesetFingerprint {
        .known(RulesetDigest(digest: [UInt8](repeating: chain, count: 32), parts: [
            RulesetPart(name: "table ip nat", digest: [UInt8](repeating: 1, count: 8)),
            RulesetPart(name: "table ip nat chain postrouting", digest: [UInt8](repeating: chain, count: 8)),
        ]))
    }

    @Test("ruleset fingerprints: exchanged in the hellos, a change after the sessions came up reaches the peer, one warning when it appears and one notice when it clears")
    func rulesetDriftFollowsChanges() async throws {
        let log1 = InMemoryLogHandler()
        let log2 = InMemoryLogHandler()
        // One connection: RULESET messages carry no sequence number, so with several connections
        // two changes in quick succession can arrive out of order and the older one shows until
        // the next check sends the fingerprint again (a known limit, docs/operations.md); this
        // test changes the ruleset several times within milliseconds.
        let pair = try await Pair.make(connections: 1, logger1: Logger(label: "ha1") { _ in log1 }, logger2: Logger(label: "ha2") { _ in log2 })
        #expect(pair.e1.configDrift.description == "unknown (nothing heard from the peer yet)")
        pair.e1.setLocalRuleset(Self.ruleset(2))
        pair.e2.setLocalRuleset(Self.ruleset(2))
        pair.startSending()
        #expect(await eventually { pair.e1.configDrift.kind == .none && pair.e2.configDrift.kind == .none })
        #expect(pair.e1.peerRuleset == Self.ruleset(2))
        // Every connection up both ways: an ack still on its way carries the ruleset of when it
        // was built, and would undo a newer RULESET until the next check (one interval).
        #expect(await eventually {
            let a = await pair.e1.statistics().connections, b = await pair.e2.statistics().connections
            return (a + b).allSatisfy { $0.connectionStatus == .established }
        })

        // ha2's ruleset changes while the connections are up: its RULESET messages tell ha1.
        pair.e2.setLocalRuleset(Self.ruleset(3))
        #expect(await eventually {
            pair.e1.configDrift == ConfigDrift(kind: .ruleset, details: ["table ip nat chain postrouting differs"])
                && pair.e2.configDrift.kind == .ruleset
        })
        #expect(pair.e1.peerRuleset == Self.ruleset(3))
        // The same again (every check sends it): no second warning.
        pair.e2.setLocalRuleset(Self.ruleset(3))
        pair.e2.setLocalRuleset(.unknown(reason: "nft timed out"))
        #expect(await eventually { pair.e1.configDrift.description == "unknown (the peer: nft timed out)" })
        pair.e2.setLocalRuleset(Self.ruleset(3))
        #expect(await eventually { pair.e1.configDrift.kind == .ruleset })
        pair.e2.setLocalRuleset(Self.ruleset(2))
        #expect(await eventually { pair.e1.configDrift.kind == .none && pair.e2.configDrift.kind == .none })

        func lines(_ log: InMemoryLogHandler, _ level: Logger.Level, _ message: String) -> [InMemoryLogHandler.Entry] {
            log.entries.filter { $0.level == level && "\($0.message)" == message }
        }
        for log in [log1, log2] {
            let warnings = lines(log, .warning, "configuration drift with the peer")
            #expect(warnings.count == 1, "\(log.entries)")
            #expect(warnings.first?.metadata["drift"] == "ruleset")
            #expect(warnings.first?.metadata["differences"] == "table ip nat chain postrouting differs")
            #expect(warnings.first?.metadata["vrf"] == "main" && warnings.first?.metadata["peer"] != nil)
            #expect(lines(log, .notice, "configuration drift with the peer cleared").count == 1, "\(log.entries)")
        }
        await pair.shutdown()
    }

    @Test("with the ruleset check off on one node, its peer says why the ruleset is unknown and still compares the settings")
    func rulesetCheckOff() async throws {
        let pair = try await Pair.make(connections: 1, rulesetCheck1: false)
        pair.e2.setLocalRuleset(Self.ruleset(2))
        pair.startSending()
        #expect(await eventually {
            pair.e2.configDrift.description == "unknown (the peer: the ruleset check is off (ruleset_check_interval 0))"
                && pair.e1.configDrift.kind == .none
        })
        await pair.shutdown()
    }
}
