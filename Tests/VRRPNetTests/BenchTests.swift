import Foundation
import Testing
import TestSupport
import VRRPBench

/// Not a test: `VRRP_BENCH=1 swift test --filter takeoverBench` runs the benchmark and prints it
/// (`VRRP_BENCH_RUNS` runs per case, default 5). Run it alone: it is timing-sensitive.
@Suite(.enabled(if: isRoot && ProcessInfo.processInfo.environment["VRRP_BENCH"] != nil, "set VRRP_BENCH=1 (as root) to run the benchmark"))
struct VRRPBenchmark {
    @Test(.timeLimit(.minutes(10)))
    func takeoverBench() async throws {
        let (logger, _) = memoryLogger()
        let runs = Int(ProcessInfo.processInfo.environment["VRRP_BENCH_RUNS"] ?? "") ?? 5
        let rows = try await VRRPTakeoverBench.run(options: .init(runs: runs), logger: logger)
        print(VRRPTakeoverBench.format(rows))
        #expect(rows.count == 4)
        #expect(rows.allSatisfy { $0.failedRuns == 0 })
    }
}
