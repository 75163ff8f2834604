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
            log.entries.filter { $0.level == .warning && "\($0.message)".contains("sync settings differ") }
                .compactMap { $0.metadata["differences"].map { "\($0)" } }
        }
        #expect(differences(log2).contains("conntrack_timeouts.tcp_undefined: here 20, peer 10"), "\(log2.entries)")
        #expect(differences(log1).contains("conntrack_timeouts.tcp_undefined: here 10, peer 20"), "\(log1.entries)")
        #expect(await pair.e1.statistics().connections[0].connectionStatus == .established)
        await pair.shutdown()
    }
}
