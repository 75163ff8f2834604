import ArgumentParser
import ConntrackModel
import Dataplane
import Foundation
import Logging
import SyncEngine

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run two sync nodes in this process over mutual TLS on loopback and break things.",
        discussion: """
            ha1 (127.0.0.1) is master with a memory dataplane holding --conntracks entries; ha2 \
            (127.0.0.2) is backup. The demo syncs the table, plays --operations creations, \
            updates and deletions while killing --kills random sync connections mid-stream, \
            checks that ha2 holds exactly ha1's table, then fails over to ha2, restarts ha1 with \
            an empty table and checks that ha2 resyncs it. Exits 1 if any table differs.

            No root, kernel or network namespace is involved: this shows the sync engine alone.

            Examples:
              keepstate demo
              keepstate demo --conntracks 100000 --operations 1000000 --kills 50
            """)

    @Option(help: "Conntracks in ha1's table before the sync starts.")
    var conntracks = 100_000

    @Option(help: "Table changes played while connections are being killed.")
    var operations = 1_000_000

    @Option(help: "Sync connections killed at random points during the churn.")
    var kills = 50

    @Option(help: "Sync connections per peer (event threads).")
    var connections = 4

    @Option(help: "Seed of the traffic and of the kill schedule.")
    var seed: UInt64 = 1

    @Flag(help: "Log every state change (info level); by default only errors are logged.")
    var verbose = false

    func run() async throws {
        let ok = try await Self.play(
            conntracks: conntracks, operations: operations, kills: kills, connections: connections, seed: seed,
            logLevel: verbose ? .info : .error) { emit($0) }
        if !ok { throw ExitCode(1) }
    }

    /// The demo's steps; `say` receives each report line. Returns whether every check held.
    static func play(conntracks: Int, operations: Int, kills: Int, connections: Int, seed: UInt64,
                     logLevel: Logger.Level, say: (String) -> Void) async throws -> Bool {
        let pair = try LoopbackPair(connections: connections, logLevel: logLevel)
        var ok = true
        func check(_ what: String, _ passed: Bool) {
            say("\(passed ? "PASS" : "FAIL") \(what)")
            if !passed { ok = false }
        }
        let clock = ContinuousClock()

        say("== 1. initial sync: ha1 master with \(conntracks) conntracks, ha2 backup, \(connections) TLS connections")
        var gen = TrafficGenerator(seed: seed, mix: .fill, maximumLive: conntracks)
        while pair.dp1.count < conntracks { pair.dp1.simulate(gen.next(min(10_000, conntracks - pair.dp1.count))) }
        try await pair.listen()
        pair.e1.setRole(.master)
        var t0 = clock.now
        pair.startSending()
        let synced = await waitUntil(timeout: .seconds(120)) { pair.e2.store.count == pair.dp1.count }
        say("   ha2 holds \(pair.e2.store.count) conntracks after \(clock.now - t0)")
        check("ha2 holds ha1's table", synced && tablesEqual(pair.e2.store.dump(), pair.dp1.dump()))

        say("== 2. churn: \(operations) operations on ~\(conntracks) live conntracks, \(kills) connections killed mid-stream")
        gen.mix = .steady
        var rng = SplitMix64(seed: seed ^ 0xD1CE)
        let batch = 1000
        let batches = max(1, operations / batch)
        var killAt = Set<Int>()
        while killAt.count < min(kills, batches) { killAt.insert(Int(rng.next() % UInt64(batches))) }
        t0 = clock.now
        for b in 0..<batches {
            pair.dp1.simulate(gen.next(batch))
            if killAt.contains(b) { pair.e1.killConnection(Int(rng.next() % UInt64(connections))) }
            if b % 50 == 0 { await Task.yield() }
        }
        say("   churn played in \(clock.now - t0)")
        let converged = await waitUntil(timeout: .seconds(120)) {
            guard await pair.e1.isIdle(), pair.e2.store.count == pair.dp1.count else { return false }
            return tablesEqual(pair.e2.store.dump(), pair.dp1.dump())
        }
        check("ha2 holds exactly ha1's table (\(pair.dp1.count) conntracks: tuples, NAT, state, timeouts) after \(kills) kills",
              converged)
        let s1 = await pair.e1.statistics()
        say("   resyncs: \(s1.connections.map(\.resyncs).reduce(0, +)), records sent: \(s1.connections.map(\.transmit).reduce(0, +))")

        say("== 3. failover: ha1 dies, ha2 becomes master with what it already holds")
        await pair.e1.shutdown()
        t0 = clock.now
        let held = pair.e2.store.dump()
        let took = await pair.e2.prepareTakeover()
        pair.e2.setRole(.master)
        say("   \(held.count) synced conntracks forwardable in ha2's dataplane \(took) after the takeover decision")
        check("ha2's dataplane holds every synced conntrack (tuples, NAT, state, mark)",
              pair.dp2.count == held.count && tablesEqual(pair.dp2.dump(), held) { $0.sameExceptTimeout($1) })

        say("== 4. ha1 restarts with an empty table and is resynced by ha2")
        try await pair.restartNode1()
        let resynced = await waitUntil(timeout: .seconds(120)) {
            pair.e1.store.count == pair.dp2.count && tablesEqual(pair.e1.store.dump(), pair.dp2.dump())
        }
        check("restarted ha1 holds ha2's table (\(pair.e1.store.count) conntracks)", resynced)

        say("")
        say(ShowPeer.render(await pair.e2.statistics()))
        say(ShowPeer.render(await pair.e1.statistics()))
        await pair.shutdown()
        say(ok ? "demo: all checks passed" : "demo: FAILED")
        return ok
    }
}
