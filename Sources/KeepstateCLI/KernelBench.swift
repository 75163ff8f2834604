import ConntrackModel
import Dataplane
import Foundation
import NetfilterConntrack

/// Kernel table measurements (root): batched create, dump and timeout re-arm of N conntracks in
/// a network namespace made for the run and deleted after it.
enum KernelBench {
    struct Figures {
        var create: Double
        var dump: Double
        var rearm: Double
    }

    static func run(_ args: [String]) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static func sysctl(_ key: String) -> String? {
        (try? String(contentsOfFile: "/proc/sys/" + key.replacingOccurrences(of: ".", with: "/"), encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func setSysctl(_ key: String, _ value: String) {
        try? value.write(toFile: "/proc/sys/" + key.replacingOccurrences(of: ".", with: "/"), atomically: false, encoding: .utf8)
    }

    /// Measures one size. Raises nf_conntrack_max in the root namespace for the run (it is
    /// read-only inside a namespace) and puts the old value back.
    static func measure(entries n: Int) throws -> Figures {
        let oldMax = sysctl("net.netfilter.nf_conntrack_max")
        if let oldMax, let current = Int(oldMax), current < n + 1024 {
            setSysctl("net.netfilter.nf_conntrack_max", "\(n + 1024)")
        }
        defer { if let oldMax { setSysctl("net.netfilter.nf_conntrack_max", oldMax) } }
        let ns = "ks-bench-\(getpid())"
        _ = try? run(["ip", "netns", "del", ns])
        let made = try run(["ip", "netns", "add", ns])
        guard made.status == 0 else { throw FileOutput.Refused(description: "ip netns add \(ns): \(made.output)") }
        defer { _ = try? run(["ip", "netns", "del", ns]) }

        let nl = try ConntrackNetlink(netnsPath: "/run/netns/\(ns)")
        var items = (0..<UInt64(n)).map { TrafficGenerator.conntrack(number: $0) }
        for i in items.indices { items[i].timeout = 3600 }
        let clock = ContinuousClock()
        var t = clock.now
        let created = try nl.create(items)
        let createSeconds = (clock.now - t).seconds
        guard created.rejected == 0 else {
            throw FileOutput.Refused(description: "the kernel refused \(created.rejected) creations (errno \(created.firstError))")
        }
        t = clock.now
        let dumped = try nl.dump()
        let dumpSeconds = (clock.now - t).seconds
        guard dumped.count == n else { throw FileOutput.Refused(description: "dumped \(dumped.count) of \(n)") }
        for i in items.indices { items[i].timeout = 120 }
        t = clock.now
        let rearmed = try nl.update(items)
        let rearmSeconds = (clock.now - t).seconds
        guard rearmed.rejected == 0 else { throw FileOutput.Refused(description: "re-arm refused \(rearmed.rejected)") }
        return Figures(create: Double(n) / createSeconds, dump: Double(n) / dumpSeconds, rearm: Double(n) / rearmSeconds)
    }
}
