import ConntrackModel
import Daemon
import Foundation
import Glibc
import NetfilterConntrack
import PKI
import Synchronization
import SyncPolicy
import TestSupport
import VRRPBench

// Real daemons on real kernel tables: `keepstate run` processes in network namespaces, each node
// with its own namespace and a sync link (a veth) to the other, certificates from the PKI module.
// Everything made here (namespaces, processes, files) goes when the lab does: processes are
// killed by PID (their process group), namespaces deleted by name.

/// A working directory, the namespaces and the processes of one test.
final class KernelLab: @unchecked Sendable {
    let dir: String
    private(set) var namespaces: [TestNamespace] = []
    private var processes: [LabProcess] = []
    private var pipes: [Int32] = []
    private static let counter = Mutex(0)

    init(_ tag: String) throws {
        let n = Self.counter.withLock { $0 += 1; return $0 }
        dir = "/tmp/ks-\(tag)-\(getpid())-\(n)"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let ca = try PKI.makeCA()
        try ca.certificate.write(toFile: "\(dir)/ca.pem", atomically: true, encoding: .utf8)
        for (name, address) in [("ha1", "10.150.0.1"), ("ha2", "10.150.0.2")] {
            let pair = try PKI.issue(name: name, addresses: [address], ca: ca)
            try pair.certificate.write(toFile: "\(dir)/\(name).pem", atomically: true, encoding: .utf8)
            try pair.privateKey.write(toFile: "\(dir)/\(name).key", atomically: true, encoding: .utf8)
        }
    }

    /// A namespace with `lo` up, deleted with the lab.
    func namespace(_ tag: String) throws -> TestNamespace {
        let ns = try TestNamespace(tag)
        namespaces.append(ns)
        try must(["ip", "-n", ns.name, "link", "set", "lo", "up"])
        return ns
    }

    @discardableResult
    func must(_ args: [String]) throws -> String {
        let r = try run(args)
        guard r.status == 0 else { throw TestFailure("\(args.joined(separator: " ")) exited \(r.status): \(r.output)") }
        return r.output
    }

    /// A veth from `a`'s `aName` to `b`'s `bName`, both up, with the addresses given (/24).
    func link(_ a: TestNamespace, _ aName: String, _ aAddress: String?, _ b: TestNamespace, _ bName: String, _ bAddress: String?) throws {
        try must(["ip", "-n", a.name, "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.name])
        for (ns, dev, address) in [(a, aName, aAddress), (b, bName, bAddress)] {
            if let address { try must(["ip", "-n", ns.name, "addr", "add", "\(address)/24", "dev", dev]) }
            try must(["ip", "-n", ns.name, "link", "set", dev, "up"])
        }
    }

    /// Writes sysctls of a namespace through its /proc/sys.
    func sysctl(_ ns: TestNamespace, _ key: String, _ value: String) throws {
        try must(["ip", "netns", "exec", ns.name, "sh", "-c",
                  "echo '\(value)' > /proc/sys/\(key.replacingOccurrences(of: ".", with: "/"))"])
    }

    func nft(_ ns: TestNamespace, _ ruleset: String) throws {
        let n = Self.counter.withLock { $0 += 1; return $0 }
        let file = "\(dir)/nft-\(n).conf"
        try ruleset.write(toFile: file, atomically: true, encoding: .utf8)
        try must(["ip", "netns", "exec", ns.name, "nft", "-f", file])
    }

    /// A background process, killed (its group) when the lab goes.
    func start(_ args: [String], log: String, stdin: Bool = false) throws -> (LabProcess, Int32?) {
        var input: (read: Int32, write: Int32)?
        if stdin {
            var fds: [Int32] = [0, 0]
            guard pipe(&fds) == 0 else { throw TestFailure("pipe: \(String(cString: strerror(errno)))") }
            _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
            input = (fds[0], fds[1])
        }
        let p = try LabProcess(args, outputPath: "\(dir)/\(log)", input: input?.read)
        if let input {
            close(input.read)
            pipes.append(input.write)
        }
        processes.append(p)
        return (p, input?.write)
    }

    /// Closes a standard input `start` made (the traffic generators stop at its end).
    func closeInput(_ fd: Int32?) {
        guard let fd, let i = pipes.firstIndex(of: fd) else { return }
        close(fd)
        pipes.remove(at: i)
    }

    func path(_ file: String) -> String { "\(dir)/\(file)" }

    func teardown() {
        for fd in pipes { close(fd) }
        pipes = []
        for p in processes { p.killGroup() }
        processes = []
        namespaces = []
        try? FileManager.default.removeItem(atPath: dir)
    }

    deinit { teardown() }

    // MARK: daemons

    /// `keepstate run` of node `node` (ha1 or ha2) in `ns`, with `vrfs` (the text of its `vrf`
    /// blocks, from `vrf`), following a static group.
    func daemon(_ node: String, in ns: TestNamespace, state: String, vrfs: String) throws -> KernelDaemon {
        let conf = path("\(node).conf")
        try """
            global_defs { router_id \(node) }
            ha_group g { static_state \(state) }
            \(vrfs)
            """.write(toFile: conf, atomically: true, encoding: .utf8)
        return KernelDaemon(lab: self, node: node, namespace: ns, config: conf, socket: path("\(node).sock"))
    }

    /// A `vrf` block of node `node` syncing with the other node over the sync link.
    func vrf(_ name: String, node: String, netns: String? = nil, port: Int = 3790) -> String {
        let me = node == "ha1" ? "10.150.0.1" : "10.150.0.2"
        let peer = node == "ha1" ? "10.150.0.2" : "10.150.0.1"
        let peerName = node == "ha1" ? "ha2" : "ha1"
        return """
            vrf \(name) {
                \(netns.map { "netns \($0)" } ?? "")
                ha_fp_conntrack {
                    peer \(peerName) { source \(me) address \(peer) port \(port) identity \(peerName) }
                    listen_ha_group g
                    event_threads 2
                    tls { ca \(dir)/ca.pem certificate \(dir)/\(node).pem key \(dir)/\(node).key }
                    heartbeat_interval 0.5
                    dead_interval 3
                }
            }

            """
    }
}

/// One node's `keepstate run`; `start` again after a kill is a restart.
final class KernelDaemon: @unchecked Sendable {
    let lab: KernelLab
    let node: String
    let namespace: TestNamespace
    let config: String
    let socket: String
    private(set) var process: LabProcess?
    private var starts = 0

    init(lab: KernelLab, node: String, namespace: TestNamespace, config: String, socket: String) {
        self.lab = lab
        self.node = node
        self.namespace = namespace
        self.config = config
        self.socket = socket
    }

    func start() throws {
        starts += 1
        process = try lab.start(["ip", "netns", "exec", namespace.name, DaemonProcessTests.executable, "run", "--config", config,
                                 "--socket", socket, "--log-level", "info"], log: "\(node)-\(starts).log").0
    }

    /// SIGKILL, and the exit reaped.
    func kill() async -> Bool {
        guard let process else { return true }
        process.signal(SIGKILL)
        return await process.waitForExit(timeout: .seconds(10))
    }

    var isRunning: Bool { process?.isRunning ?? false }
    var output: String { process?.output ?? "" }

    func request(_ r: ControlRequest) -> ControlReply? {
        try? ControlClient.send(r, socketPath: socket, timeout: .seconds(5))
    }

    func vrf(_ name: String) -> VRFReport? {
        request(ControlRequest(command: .showState))?.state?.vrfs.first { $0.name == name }
    }

    /// Whether the VRF runs with every sync connection established.
    func connected(_ vrf: String) -> Bool {
        guard let v = self.vrf(vrf) else { return false }
        return v.connections > 0 && v.connectionsEstablished == v.connections
    }
}

/// Reads a namespace's kernel table.
func kernelTable(_ ns: TestNamespace) throws -> [Conntrack] {
    try ConntrackNetlink(netnsPath: ns.path).dump()
}

/// What must match between a master's conntrack and the backup's: tuples (the NAT mapping),
/// TCP state and mark.
struct SyncedView: Hashable, CustomStringConvertible {
    var key: ConntrackKey
    var reply: ConntrackTuple
    var tcpState: TCPState
    var mark: UInt32
    init(_ c: Conntrack) {
        key = c.key
        reply = c.reply
        tcpState = c.tcpState
        mark = c.mark
    }
    var description: String { "\(key.proto) \(key.original) -> reply \(reply) \(tcpState) mark \(mark)" }
}

/// The backup's held entries (written by the hold, untouched since), as views.
func heldViews(_ ns: TestNamespace) throws -> [ConntrackKey: SyncedView] {
    let threshold = HoldPolicy().threshold
    var out: [ConntrackKey: SyncedView] = [:]
    for c in try kernelTable(ns) where c.timeout > threshold { out[c.key] = SyncedView(c) }
    return out
}

/// `eventually` for conditions that block (control socket, netlink dumps): polled every 50 ms.
func within(_ seconds: Double, _ condition: () throws -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if (try? condition()) == true { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return (try? condition()) == true
}
