import ArgumentParser
import ConntrackModel
import Dataplane
import Foundation
import Logging
import NIOCore
import SyncEngine
import SyncProtocol

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure the sync engine and print a table (medians of several runs).",
        discussion: """
            Build with `swift build -c release` first (`make bench` does). Measured, each \
            --runs times, medians reported:
              codec      encode + decode of upserts in one thread, no TLS (the baseline)
              sync N     end-to-end upserts per second over mutual TLS on loopback with N \
            connections: from the first connection attempt until the backup holds the table
              resync     time to resync the whole table after every sync connection is killed
              bytes      bytes per IPv4 TCP NAT upsert on the wire (frame headers included)
              memory     resident bytes per conntrack held by the backup (measured in a child \
            process so that nothing else is on its heap)
            With --conntrackd (root): `keepstate run` on two namespaces against Debian's \
            conntrackd (FTFW over UDP) between the same two, in the same run: live sync of \
            kernel events (entries/s, CPU µs per entry of each daemon), full resync after a \
            sync connection loss, resync after a restart of the master's daemon against the \
            kernel's dump rate, backup memory per entry; medians and ratios to conntrackd.

            Examples:
              keepstate bench --conntracks 1000000 --runs 3
              keepstate bench --conntrackd --comparison-only --comparison-entries 1000000 --runs 3
            """)

    @Option(help: "Conntracks in the master's table.")
    var conntracks = 1_000_000

    @Option(help: "Runs of each measurement (the median is reported).")
    var runs = 3

    @Option(help: "Connection counts to measure, comma separated.")
    var connections = "1,2,4"

    @Option(help: ArgumentHelp("Internal: measure memory in this process and print it.", visibility: .hidden))
    var childMemory: Int?

    @Option(help: "Kernel table sizes to measure (root only; 0 to skip), comma separated.")
    var kernel = "100000,1000000"

    @Flag(help: "Also compare keepstate's daemons with conntrackd (FTFW) on two namespaces (root).")
    var conntrackd = false

    @Option(help: "Table sizes of the conntrackd comparison, comma separated (created while both daemons run).")
    var comparisonEntries = "100000,1000000"

    @Flag(help: "Only the conntrackd comparison (implies --conntrackd).")
    var comparisonOnly = false

    func run() async throws {
        if let n = childMemory {
            print(String(format: "%.1f", Self.memoryPerEntry(n)))
            return
        }
        let counts = connections.split(separator: ",").compactMap { Int($0) }.filter { $0 >= 1 && $0 <= 64 }
        var rows: [(String, String, String)] = []
        func median(_ xs: [Double]) -> Double {
            let s = xs.sorted()
            return s.isEmpty ? .nan : s[s.count / 2]
        }
        if comparisonOnly {
            guard getuid() == 0 else {
                throw ValidationError("--comparison-only needs root (network namespaces, nf_conntrack_max)")
            }
            try compareWithConntrackd(counts: counts)
            return
        }
        print("keepstate bench: \(conntracks) conntracks, \(runs) runs each, \(ProcessInfo.processInfo.activeProcessorCount) cores")

        var codec: [Double] = []
        for _ in 0..<runs { codec.append(Self.codecRate(conntracks)) }
        let baseline = median(codec)
        rows.append(("codec encode+decode, 1 thread (baseline)", Self.rate(baseline), "1.00"))

        var best = 0.0
        for n in counts {
            var rates: [Double] = []
            for _ in 0..<runs { rates.append(try await Self.syncRate(conntracks, connections: n)) }
            let m = median(rates)
            best = max(best, m)
            rows.append(("sync over TLS, \(n) connection(s)", Self.rate(m), String(format: "%.2f", m / baseline)))
        }

        var resyncs: [Double] = []
        for _ in 0..<runs { resyncs.append(try await Self.resyncTime(conntracks, connections: counts.max() ?? 4)) }
        rows.append(("resync after all connections killed", String(format: "%.3f s", median(resyncs)), "-"))

        let bytes = Self.bytesPerUpsert()
        rows.append(("bytes per IPv4 TCP NAT upsert (frames)", String(format: "%.2f B", bytes.frame), "-"))
        rows.append(("  with TLS 1.3 record overhead", String(format: "%.2f B", bytes.tls), "-"))

        var mem: [Double] = []
        for _ in 0..<runs { mem.append(try Self.memoryInChild(conntracks)) }
        rows.append(("backup memory per conntrack (RSS)", String(format: "%.1f B", median(mem)), "-"))

        let sizes = kernel.split(separator: ",").compactMap { Int($0) }.filter { $0 > 0 }
        if !sizes.isEmpty && getuid() != 0 {
            emit("kernel measurements skipped: they need root (network namespaces, nf_conntrack_max)")
        } else {
            for n in sizes {
                var figures: [KernelBench.Figures] = []
                for _ in 0..<runs { figures.append(try KernelBench.measure(entries: n)) }
                rows.append(("kernel: batched create, \(n) conntracks", Self.rate(median(figures.map(\.create))), "-"))
                rows.append(("kernel: create, CPU per conntrack (writer thread)", String(format: "%.2f µs", median(figures.map(\.createMicros))), "-"))
                rows.append(("kernel: dump, \(n) conntracks", Self.rate(median(figures.map(\.dump))), "-"))
                rows.append(("kernel: timeout re-arm (update), \(n)", Self.rate(median(figures.map(\.rearm))), "-"))
            }
            let c = counts.max() ?? 4
            for n in sizes {
                var f: [KernelBench.Failover] = []
                for _ in 0..<runs { f.append(try await KernelBench.failover(entries: n, connections: c)) }
                rows.append(("kernel sync: into the backup's table, \(n)", Self.rate(median(f.map(\.initialSync))), "-"))
                rows.append(("kernel sync: resync after connection loss, \(n)", String(format: "%.3f s", median(f.map(\.resyncAfterLoss))), "-"))
                rows.append(("failover: decision to all forwardable, \(n)", String(format: "%.4f s", median(f.map(\.forwardable))), "-"))
                rows.append(("failover: background re-arm, \(n)", String(format: "%.3f s", median(f.map(\.rearm))), "-"))
            }
        }

        let w = rows.map(\.0.count).max() ?? 10
        print("")
        print("| " + "measurement".padding(toLength: w, withPad: " ", startingAt: 0) + " | median         | vs baseline |")
        print("|" + String(repeating: "-", count: w + 2) + "|----------------|-------------|")
        for r in rows {
            print("| " + r.0.padding(toLength: w, withPad: " ", startingAt: 0) + " | "
                  + r.1.padding(toLength: 14, withPad: " ", startingAt: 0) + " | "
                  + r.2.padding(toLength: 11, withPad: " ", startingAt: 0) + " |")
        }
        // After the main table: a comparison that fails does not take the figures above with it.
        if conntrackd { try compareWithConntrackd(counts: counts) }
    }

    /// The conntrackd comparison's table (printed as soon as it is measured).
    func compareWithConntrackd(counts: [Int]) throws {
        guard getuid() == 0 else {
            emit("conntrackd comparison skipped: it needs root (network namespaces, nf_conntrack_max)")
            return
        }
        guard DrillRun.onPath("conntrackd") else { throw ValidationError("conntrackd is not installed (make deps installs it)") }
        // Namespaces (and the daemons in them), sysctls and files go on every way out, an
        // interruption included (an interrupted run once left both conntrackd running).
        DrillJanitor.removeLeftovers { emit($0) }
        DrillJanitor.shared.trapSignals()
        defer { DrillJanitor.shared.cleanAll() }
        let connections = counts.max() ?? 4
        for n in comparisonEntries.split(separator: ",").compactMap({ Int($0) }).filter({ $0 > 0 }) {
            try compareWithConntrackd(entries: n, connections: connections)
        }
    }

    func compareWithConntrackd(entries comparisonEntries: Int, connections: Int) throws {
        let load = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?"
        print("keepstate bench --conntrackd: \(comparisonEntries) conntracks, \(runs) runs each, \(connections) connections, "
              + "\(ProcessInfo.processInfo.activeProcessorCount) cores, load average \(load)")
        let rows = try SyncComparison.measure(entries: comparisonEntries, runs: runs, connections: connections) { emit($0) }
        let after = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?"
        let w = rows.map(\.0.count).max() ?? 10
        print("")
        print("| " + "measurement (medians)".padding(toLength: w, withPad: " ", startingAt: 0) + " | keepstate    | conntrackd   | ratio |")
        print("|" + String(repeating: "-", count: w + 2) + "|--------------|--------------|-------|")
        for r in rows {
            print("| " + r.0.padding(toLength: w, withPad: " ", startingAt: 0) + " | " + r.1.padding(toLength: 12, withPad: " ", startingAt: 0)
                  + " | " + r.2.padding(toLength: 12, withPad: " ", startingAt: 0) + " | " + r.3.padding(toLength: 5, withPad: " ", startingAt: 0) + " |")
        }
        print("load average after: \(after)")
        print("")
    }

    static func rate(_ perSecond: Double) -> String {
        String(format: "%.0f /s", perSecond)
    }

    /// Encodes `n` conntracks into UPDATES frames and decodes them again, in one thread.
    static func codecRate(_ n: Int) -> Double {
        let records = (0..<UInt64(n)).map { TrafficGenerator.conntrack(number: $0) }
        let start = ContinuousClock.now
        var decoded: [ConntrackUpdate] = []
        decoded.reserveCapacity(SyncWire.recordsPerFrame)
        var total = 0
        forEachFrame(of: records) { buffer in
            if let frame = try? buffer.readSyncFrame() {
                var payload = frame.payload
                decoded.removeAll(keepingCapacity: true)
                try? payload.readConntrackUpdates(into: &decoded)
                total += decoded.count
            }
        }
        let seconds = (ContinuousClock.now - start).seconds
        precondition(total == n, "codec benchmark lost records")
        return Double(n) / seconds
    }

    /// Time for a backup to receive a master's whole table from a cold start, as a rate.
    static func syncRate(_ n: Int, connections: Int) async throws -> Double {
        let pair = try LoopbackPair(connections: connections, logLevel: .error, queueLimit: 1 << 22)
        fill(pair.dp1, count: n)
        try await pair.listen()
        pair.e1.setRole(.master)
        let start = ContinuousClock.now
        pair.startSending()
        let done = await waitUntil(timeout: .seconds(300), every: .milliseconds(1)) { pair.e2.store.count == n }
        let seconds = (ContinuousClock.now - start).seconds
        await pair.shutdown()
        guard done else { throw ValidationError("sync of \(n) conntracks did not complete") }
        return Double(n) / seconds
    }

    /// Time from killing every connection until every share has completed a new resync.
    static func resyncTime(_ n: Int, connections: Int) async throws -> Double {
        let pair = try LoopbackPair(connections: connections, logLevel: .error, queueLimit: 1 << 22)
        fill(pair.dp1, count: n)
        try await pair.listen()
        pair.e1.setRole(.master)
        pair.startSending()
        guard await waitUntil(timeout: .seconds(300), { pair.e2.store.count == n }),
              await waitUntil(timeout: .seconds(60), { await pair.e1.isIdle() })
        else { throw ValidationError("initial sync did not complete") }
        let before = await pair.e2.statistics().localNode.resyncsCompleted
        let start = ContinuousClock.now
        for i in 0..<connections { pair.e1.killConnection(i) }
        let done = await waitUntil(timeout: .seconds(300), every: .milliseconds(1)) {
            await pair.e2.statistics().localNode.resyncsCompleted >= before + UInt64(connections)
        }
        let seconds = (ContinuousClock.now - start).seconds
        let intact = pair.e2.store.count == n
        await pair.shutdown()
        guard done, intact else { throw ValidationError("resync after connection loss did not complete") }
        return seconds
    }

    /// Frames `records` as the sender does (UPDATES frames of `SyncWire.recordsPerFrame`
    /// upserts) and hands each frame to `body`.
    static func forEachFrame(of records: [Conntrack], _ body: (inout ByteBuffer) -> Void) {
        var buffer = ByteBuffer()
        var i = 0
        while i < records.count {
            buffer.clear()
            let end = min(records.count, i + SyncWire.recordsPerFrame)
            let at = buffer.beginSyncFrame(.updates, sequence: 0)
            for c in records[i..<end] { buffer.writeConntrackUpdate(.upsert(c)) }
            buffer.endSyncFrame(lengthAt: at)
            body(&buffer)
            i = end
        }
    }

    /// Bytes of UPDATES frames per IPv4 TCP NAT upsert, as the sender frames them.
    static func bytesPerUpsert() -> (frame: Double, tls: Double) {
        var records: [Conntrack] = []
        var n: UInt64 = 0
        while records.count < 150_000 {
            let c = TrafficGenerator.conntrack(number: n)
            if c.proto == .tcp && c.isNAT && c.family == .ipv4 { records.append(c) }
            n += 1
        }
        var bytes = 0
        forEachFrame(of: records) { bytes += $0.readableBytes }
        let frame = Double(bytes) / Double(records.count)
        // TLS 1.3 with AES-GCM: 5-byte header, 1 content-type byte, 16-byte tag per record of
        // at most 16 KiB of plaintext.
        let tls = frame * (1 + 22.0 / 16384.0)
        return (frame, tls)
    }

    /// Runs `keepstate bench --child-memory N` and reads its answer.
    static func memoryInChild(_ n: Int) throws -> Double {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe")
        process.arguments = ["bench", "--child-memory", "\(n)"]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard process.terminationStatus == 0, let value = Double(text) else {
            throw ValidationError("memory child failed: \(text)")
        }
        return value
    }

    /// Resident bytes per entry of a backup store filled as the receiver fills it: decoded
    /// frames applied in batches. The records are generated per batch so that only the store
    /// grows.
    static func memoryPerEntry(_ n: Int) -> Double {
        let store = BackupStore()
        let before = residentBytes()
        var batch: [ConntrackUpdate] = []
        batch.reserveCapacity(SyncWire.recordsPerFrame)
        let epoch = store.beginEpoch(share: 0)
        for i in 0..<UInt64(n) {
            batch.append(.upsert(TrafficGenerator.conntrack(number: i)))
            if batch.count == SyncWire.recordsPerFrame {
                store.apply(batch, epoch: epoch, share: 0)
                batch.removeAll(keepingCapacity: true)
            }
        }
        store.apply(batch, epoch: epoch, share: 0)
        let after = residentBytes()
        precondition(store.count == n)
        return Double(after - before) / Double(n)
    }

    static func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}
