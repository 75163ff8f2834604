import Foundation
import Glibc
public import Logging
import NIOCore
import NIOPosix
import Spawn
import Synchronization
public import VRRP
public import VRRPNet

// A small lab for VRRP runs against keepalived: network namespaces joined by a bridge (a segment
// namespace with one bridge port per host), keepalived and tshark processes, and our runner in a
// host namespace. Every namespace, process and file made here is removed by `teardown()` (also
// called from `deinit`), processes are killed by PID, and traffic stays inside the namespaces.

/// Runs a command and returns its exit status and its combined output.
@discardableResult
public func labRun(_ args: [String]) throws -> (status: Int32, output: String) {
    try Spawn.capture(args)
}

/// Runs a command and throws if it fails.
@discardableResult
public func labMust(_ args: [String]) throws -> String {
    let r = try labRun(args)
    guard r.status == 0 else { throw VRRPLabError("\(args.joined(separator: " ")) exited \(r.status): \(r.output)") }
    return r.output
}

public struct VRRPLabError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}

/// Polls `condition` every `interval` until it holds or `timeout` passes; returns whether it held.
public func labPoll(timeout: Duration, interval: Duration = .milliseconds(20),
                    _ condition: () async throws -> Bool) async rethrows -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while true {
        if try await condition() { return true }
        if clock.now >= deadline { return false }
        try? await Task.sleep(for: interval)
    }
}

private let labCounter = Atomic<Int>(0)

/// A background process whose output goes to a file, in a process group of its own; stopped by
/// PID (or by its group ID, for its children) and reaped here.
///
/// Spawned with `posix_spawn` and reaped with `waitpid`, not with Foundation's `Process`: on this
/// Linux a `Process` whose child exited on a signal sometimes stayed `isRunning` (zombie never
/// reaped) and `waitUntilExit` then spun forever.
public final class LabProcess: @unchecked Sendable {
    public let arguments: [String]
    public let outputPath: String
    public let pid: Int32
    private let lock = NSLock()
    private var exitStatus: Int32?

    /// `input`: a descriptor of the caller for its standard input (the read end of a pipe, say);
    /// nil: /dev/null.
    public init(_ arguments: [String], outputPath: String, input: Int32? = nil) throws {
        self.arguments = arguments
        self.outputPath = outputPath
        do {
            pid = try Spawn.start(arguments, input: input, output: .file(outputPath))
        } catch {
            throw VRRPLabError("\(arguments.first ?? "?"): \(error)")
        }
    }

    /// Reaps the process if it exited (never blocks).
    public var isRunning: Bool {
        lock.lock()
        defer { lock.unlock() }
        return reapLocked(block: false)
    }

    /// true while running. Must hold the lock.
    private func reapLocked(block: Bool) -> Bool {
        if exitStatus != nil { return false }
        switch Spawn.reap(pid, block: block) {
        case .running: return true
        case .exited(let code): exitStatus = code
        case .gone: exitStatus = -1  // reaped elsewhere
        }
        return false
    }

    public var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

    /// Sends `sig` to the process (not to its children), if it has not been reaped.
    public func signal(_ sig: Int32) {
        lock.lock()
        defer { lock.unlock() }
        if reapLocked(block: false) { Glibc.kill(pid, sig) }
    }

    /// Sends `sig` to the process group (the process and its children).
    public func signalGroup(_ sig: Int32) {
        lock.lock()
        defer { lock.unlock() }
        _ = reapLocked(block: false)
        Glibc.kill(-pid, sig)
    }

    /// The exit code once reaped (`WEXITSTATUS`), 128 + the signal if a signal ended it, nil
    /// while it runs (or if it was reaped elsewhere).
    public var exitCode: Int32? {
        lock.lock()
        defer { lock.unlock() }
        _ = reapLocked(block: false)
        guard let s = exitStatus, s >= 0 else { return nil }
        return s
    }

    /// Waits for the process to exit; false on timeout.
    @discardableResult
    public func waitForExit(timeout: Duration) async -> Bool {
        await labPoll(timeout: timeout, interval: .milliseconds(10)) { !self.isRunning }
    }

    /// SIGTERM, then SIGKILL to the group after `grace`.
    public func stop(grace: Duration = .seconds(3)) async {
        signal(SIGTERM)
        if await waitForExit(timeout: grace) { return }
        killGroup()
    }

    /// SIGKILL to the whole group, then reaps the process.
    public func killGroup() {
        lock.lock()
        defer { lock.unlock() }
        Glibc.kill(-pid, SIGKILL)
        _ = reapLocked(block: true)
    }

    deinit { killGroup() }
}

/// A network namespace made by the lab.
public final class LabNamespace: @unchecked Sendable {
    public let name: String
    public var path: String { "/run/netns/\(name)" }
    private var removed = false

    public init(_ tag: String) throws {
        let n = labCounter.add(1, ordering: .relaxed).newValue
        name = "ksv-\(tag)-\(getpid())-\(n)"
        _ = try? labRun(["ip", "netns", "del", name])
        try labMust(["ip", "netns", "add", name])
        try labMust(["ip", "-n", name, "link", "set", "lo", "up"])
    }

    @discardableResult
    public func exec(_ args: [String]) throws -> (status: Int32, output: String) {
        try labRun(["ip", "netns", "exec", name] + args)
    }

    @discardableResult
    public func must(_ args: [String]) throws -> String {
        try labMust(["ip", "netns", "exec", name] + args)
    }

    /// The addresses on `interface` (`ip -o addr show`), without prefix lengths.
    public func addresses(_ interface: String) -> [String] {
        guard let r = try? labRun(["ip", "-n", name, "-o", "addr", "show", "dev", interface]), r.status == 0 else { return [] }
        return r.output.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let i = f.firstIndex(where: { $0 == "inet" || $0 == "inet6" }), i + 1 < f.count else { return nil }
            return String(f[i + 1].split(separator: "/")[0])
        }
    }

    public func has(_ address: String, on interface: String) -> Bool { addresses(interface).contains(address) }

    public func remove() {
        guard !removed else { return }
        removed = true
        _ = try? labRun(["ip", "netns", "del", name])
    }

    deinit { remove() }
}

/// One host on the segment: a namespace with `veth0` bridged into the segment.
public struct LabHost: Sendable {
    public let namespace: LabNamespace
    public let interface: String
    public let port: String
    public let ipv4: String
    public let mac: String
    public var ipv6LinkLocal: String
}

/// A broadcast segment: a namespace with a bridge (no STP, no forward delay, no multicast
/// snooping), plus host namespaces plugged into it.
public final class LabSegment: @unchecked Sendable {
    public let bridge: LabNamespace
    public private(set) var hosts: [LabHost] = []
    public let workDirectory: String
    private var processes: [LabProcess] = []
    private var runners: [LabRunner] = []
    private var tornDown = false

    public init(tag: String) throws {
        bridge = try LabNamespace("\(tag)-seg")
        let n = labCounter.add(1, ordering: .relaxed).newValue
        workDirectory = "/tmp/ksv-\(tag)-\(getpid())-\(n)"
        try? FileManager.default.removeItem(atPath: workDirectory)
        try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
        try labMust(["ip", "-n", bridge.name, "link", "add", "br0", "type", "bridge",
                     "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"])
        try labMust(["ip", "-n", bridge.name, "link", "set", "br0", "up"])
    }

    /// Adds a host with `veth0` = `ipv4`/24 (host number `number` gives MAC 02:00:00:00:00:NN and
    /// link-local fe80::NN); IPv6 duplicate address detection is off so link-local is usable at once.
    @discardableResult
    public func addHost(_ tag: String, number: Int, ipv4: String) throws -> LabHost {
        let ns = try LabNamespace(tag)
        let port = "p\(hosts.count + 1)"
        let mac = String(format: "02:00:00:00:00:%02x", number)
        try labMust(["ip", "-n", bridge.name, "link", "add", port, "type", "veth", "peer", "name", "veth0", "netns", ns.name])
        try labMust(["ip", "-n", bridge.name, "link", "set", port, "master", "br0", "up"])
        try ns.must(["sysctl", "-q", "-w", "net.ipv6.conf.veth0.accept_dad=0"])
        try labMust(["ip", "-n", ns.name, "link", "set", "veth0", "address", mac])
        try labMust(["ip", "-n", ns.name, "addr", "add", "\(ipv4)/24", "dev", "veth0"])
        try labMust(["ip", "-n", ns.name, "addr", "add", "fe80::\(String(number, radix: 16))/64", "dev", "veth0", "nodad"])
        try labMust(["ip", "-n", ns.name, "link", "set", "veth0", "addrgenmode", "none"])
        try labMust(["ip", "-n", ns.name, "link", "set", "veth0", "up"])
        let host = LabHost(namespace: ns, interface: "veth0", port: port, ipv4: ipv4, mac: mac,
                           ipv6LinkLocal: "fe80::\(String(number, radix: 16))")
        hosts.append(host)
        return host
    }

    /// Keeps `process` to be killed by `teardown`.
    public func own(_ process: LabProcess) { processes.append(process) }

    /// Keeps `runner` to be stopped by `shutdown`.
    public func own(_ runner: LabRunner) { runners.append(runner) }

    /// Stops the owned runners (priority 0 if master), then `teardown`.
    public func shutdown() async {
        for r in runners { await r.close() }
        runners.removeAll()
        teardown()
    }

    public func path(_ file: String) -> String { "\(workDirectory)/\(file)" }

    /// Kills every owned process by PID, deletes the namespaces and the work directory.
    public func teardown() {
        guard !tornDown else { return }
        tornDown = true
        for p in processes { p.killGroup() }
        processes.removeAll()
        for h in hosts { h.namespace.remove() }
        bridge.remove()
        try? FileManager.default.removeItem(atPath: workDirectory)
    }

    deinit { teardown() }
}

/// Runs `body` with a new segment and always shuts it down afterwards (runners stopped,
/// processes killed by PID, namespaces and files removed), also when `body` throws.
public func withLabSegment<T>(tag: String, _ body: (LabSegment) async throws -> T) async throws -> T {
    let segment = try LabSegment(tag: tag)
    do {
        let result = try await body(segment)
        await segment.shutdown()
        return result
    } catch {
        await segment.shutdown()
        throw error
    }
}

/// A keepalived VRRP instance for the lab.
public struct KeepalivedInstanceConfig: Sendable {
    public var routerID: String
    public var interface: String = "veth0"
    public var vrid: Int = 51
    public var priority: Int
    /// keepalived `advert_int` text ("0.1", "1").
    public var advertInterval: String
    public var version: Int
    public var virtualAddresses: [String]
    public var nopreempt = false
    public var initialState = "BACKUP"
    public var extraInstanceLines: [String] = []

    public init(routerID: String, priority: Int, advertInterval: String, version: Int, virtualAddresses: [String]) {
        self.routerID = routerID
        self.priority = priority
        self.advertInterval = advertInterval
        self.version = version
        self.virtualAddresses = virtualAddresses
    }

    public var text: String {
        """
        global_defs {
            router_id \(routerID)
            vrrp_version \(version)
            vrrp_garp_master_delay 0
            vrrp_garp_master_repeat 1
        }
        vrrp_instance VI_\(vrid) {
            state \(initialState)
            interface \(interface)
            virtual_router_id \(vrid)
            priority \(priority)
            advert_int \(advertInterval)
            version \(version)
        \(nopreempt ? "    nopreempt\n" : "")\(extraInstanceLines.map { "    \($0)\n" }.joined())    virtual_ipaddress {
        \(virtualAddresses.map { "        \($0)\n" }.joined())    }
        }

        """
    }
}

/// keepalived 2.2.7 run as `ip netns exec NS keepalived -n -l -D -f conf -p pid -r vrrp_pid -c check_pid`.
public final class LabKeepalived: @unchecked Sendable {
    public let host: LabHost
    public let config: KeepalivedInstanceConfig
    public let process: LabProcess
    public let vrrpPIDPath: String

    public init(on host: LabHost, config: KeepalivedInstanceConfig, segment: LabSegment) throws {
        self.host = host
        self.config = config
        let n = labCounter.add(1, ordering: .relaxed).newValue
        let base = segment.path("ka-\(config.routerID)-\(n)")
        try config.text.write(toFile: base + ".conf", atomically: true, encoding: .utf8)
        vrrpPIDPath = base + ".vrrp.pid"
        process = try LabProcess(["ip", "netns", "exec", host.namespace.name, "keepalived", "-n", "-l", "-D",
                                  "-f", base + ".conf", "-p", base + ".pid", "-r", vrrpPIDPath, "-c", base + ".check.pid"],
                                 outputPath: base + ".log")
        segment.own(process)
    }

    /// The VRRP child's PID (from its pid file), once written.
    public var vrrpChildPID: Int32? {
        guard let s = try? String(contentsOfFile: vrrpPIDPath, encoding: .utf8) else { return nil }
        return Int32(s.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Clean stop: SIGTERM; keepalived sends priority 0 and removes its addresses.
    public func stop() async { await process.stop() }

    public var log: String { process.output }
}

/// A tshark capture in a namespace, writing `-T fields` lines (tab-separated) to a file.
public final class LabCapture: @unchecked Sendable {
    public let process: LabProcess
    private let errPath: String

    /// - Parameters:
    ///   - count: stop after this many packets (`-c`), nil: until stopped.
    public init(namespace: LabNamespace, interface: String, filter: String, fields: [String], count: Int? = nil,
                segment: LabSegment) throws {
        let n = labCounter.add(1, ordering: .relaxed).newValue
        let base = segment.path("cap-\(n)")
        errPath = base + ".err"
        var args = ["ip", "netns", "exec", namespace.name, "sh", "-c"]
        var cmd = ["tshark", "-i", interface, "-l", "-n", "-f", "'\(filter)'", "-T", "fields", "-E", "separator=/t"]
        for f in fields { cmd += ["-e", f] }
        if let count { cmd += ["-c", String(count)] }
        args.append("exec " + cmd.joined(separator: " ") + " 2>" + errPath)
        process = try LabProcess(args, outputPath: base + ".out")
        segment.own(process)
    }

    /// Waits until tshark says it is capturing.
    public func waitUntilCapturing(timeout: Duration = .seconds(15)) async throws {
        let ok = await labPoll(timeout: timeout, interval: .milliseconds(50)) {
            ((try? String(contentsOfFile: self.errPath, encoding: .utf8)) ?? "").contains("Capturing on")
                || !self.process.isRunning
        }
        guard ok, process.isRunning else { throw VRRPLabError("tshark did not start: \(stderr)") }
    }

    public var stderr: String { (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "" }

    /// The lines so far, split into fields.
    public var rows: [[String]] {
        process.output.split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
    }

    /// Stops with SIGINT (tshark flushes) and returns the rows.
    public func stop() async -> [[String]] {
        process.signal(SIGINT)
        if !(await process.waitForExit(timeout: .seconds(5))) { process.killGroup() }
        return rows
    }
}

/// `ip addr add/del` in a namespace (the bench's address manager; /32 and /128, IPv6 `nodad`).
public struct LabIPAddressManager: VirtualAddressManager {
    public let namespace: String

    public init(namespace: String) { self.namespace = namespace }

    public func addVirtualAddresses(_ addresses: [VRRPAddress], interface: String) async throws {
        for a in addresses {
            var args = ["ip", "-n", namespace, "addr", "add", a.family == .ipv4 ? "\(a)/32" : "\(a)/128", "dev", interface]
            if a.family == .ipv6 { args.append("nodad") }
            let r = try labRun(args)
            guard r.status == 0 || r.output.contains("File exists") else { throw VRRPLabError("ip addr add \(a): \(r.output)") }
        }
    }

    public func removeVirtualAddresses(_ addresses: [VRRPAddress], interface: String) async throws {
        for a in addresses {
            let r = try labRun(["ip", "-n", namespace, "addr", "del", a.family == .ipv4 ? "\(a)/32" : "\(a)/128", "dev", interface])
            guard r.status == 0 || r.output.contains("Cannot assign requested address") else {
                throw VRRPLabError("ip addr del \(a): \(r.output)")
            }
        }
    }
}

/// Our runner on a lab host: the sockets opened inside the host's namespace, the runner on its
/// own one-thread event loop.
public final class LabRunner: @unchecked Sendable {
    public let runner: VRRPRunner
    public let endpoint: VRRPEndpoint
    private let group: MultiThreadedEventLoopGroup
    private var stopped = false
    private var loopClosed = false

    /// `instance` receives the source address of the adverts (the primary address to configure).
    /// The segment stops the runner when it shuts down.
    public init(on host: LabHost, segment: LabSegment, family: VRRPAddressFamily,
                unicastPeers: [VRRPAddress] = [], checkUnicastSource: Bool = false,
                instance: (VRRPAddress) -> VRRPInstanceConfig,
                gratuitous: VRRPGratuitousConfiguration = .minimal, addressManager: (any VirtualAddressManager)? = nil,
                hooks: any VRRPRunnerHooks = VRRPNoHooks(), logger: Logger) async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        do {
            endpoint = try await VRRPSockets.open(
                VRRPSocketConfiguration(interface: host.interface, family: family, unicastPeers: unicastPeers,
                                        networkNamespacePath: host.namespace.path),
                eventLoop: loop)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        let config = VRRPRunnerConfiguration(instance: instance(endpoint.sourceAddress), interface: host.interface,
                                             gratuitous: gratuitous, checkUnicastSource: checkUnicastSource)
        runner = VRRPRunner(configuration: config, transport: endpoint.transport, announcer: endpoint.announcer,
                            addressManager: addressManager ?? LabIPAddressManager(namespace: host.namespace.name),
                            hooks: hooks, eventLoop: loop, logger: logger)
        segment.own(self)
    }

    public func start() async { await runner.start() }

    /// Statistics and state as they were when `stop()` finished.
    public private(set) var finalStatistics: VRRPRunnerStatistics?

    /// Shuts the runner down (priority 0 if master, addresses removed, sockets closed). The event
    /// loop, which is the runner actor's executor, keeps running until `close()`: calls into the
    /// actor after its loop has stopped would never run.
    public func stop() async {
        guard !stopped else { return }
        stopped = true
        await runner.shutdown()
        finalStatistics = await runner.statistics
    }

    /// `stop()`, then stops the event loop (called by the segment's shutdown).
    public func close() async {
        await stop()
        guard !loopClosed else { return }
        loopClosed = true
        try? await group.shutdownGracefully()
    }

    deinit {
        if !loopClosed { group.shutdownGracefully { _ in } }
    }
}
