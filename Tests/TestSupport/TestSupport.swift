import Foundation
import Spawn
import Synchronization

// Shared by the test targets: network namespaces made by a test and removed after it, and
// running commands. Everything a test makes here, it removes.

public let isRoot = getuid() == 0

private let namespaceCounter = Atomic<Int>(0)

/// A network namespace made for one test and deleted after it.
public final class TestNamespace {
    public let name: String
    public var path: String { "/run/netns/\(name)" }

    public init(_ tag: String) throws {
        let n = namespaceCounter.add(1, ordering: .relaxed).newValue
        name = "ks-\(tag)-\(getpid())-\(n)"
        _ = try? run(["ip", "netns", "del", name])
        let r = try run(["ip", "netns", "add", name])
        guard r.status == 0 else { throw TestFailure("ip netns add \(name): \(r.output)") }
    }

    deinit { _ = try? run(["ip", "netns", "del", name]) }

    /// Runs a command inside the namespace.
    @discardableResult
    public func exec(_ args: [String]) throws -> (status: Int32, output: String) {
        try run(["ip", "netns", "exec", name] + args)
    }
}

public struct TestFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

@discardableResult
public func run(_ args: [String]) throws -> (status: Int32, output: String) {
    try Spawn.capture(args)
}


/// Polls `condition` until it holds or `seconds` pass (I/O tests only; unit tests drive time).
/// A condition that throws counts as not holding yet.
public func eventually(_ seconds: Double = 20, _ condition: () async throws -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if (try? await condition()) == true { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return (try? await condition()) == true
}
