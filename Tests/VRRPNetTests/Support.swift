import Logging
import InMemoryLogging
import Synchronization
import TestSupport
import VRRP
import VRRPBench
import VRRPNet

/// Test helper: parses a literal address (test inputs are fixed literals).
func ip(_ text: String) -> VRRPAddress {
    guard let a = VRRPAddress(text) else { preconditionFailure("bad literal \(text)") }
    return a
}

/// A logger whose entries the test can read.
func memoryLogger(_ label: String = "test", level: Logger.Level = .info) -> (Logger, InMemoryLogHandler) {
    var handler = InMemoryLogHandler()
    handler.logLevel = level
    let h = handler
    return (Logger(label: label, factory: { _ in h }), h)
}

/// Virtual addresses with `ip addr add/del` inside the test's namespace, through TestSupport's
/// `run` helper (/32 and /128; IPv6 `nodad` as keepalived adds them). Idempotent.
struct TestIPAddressManager: VirtualAddressManager {
    let namespace: String

    func addVirtualAddresses(_ addresses: [VRRPAddress], interface: String) async throws {
        for a in addresses {
            var args = ["ip", "-n", namespace, "addr", "add", a.family == .ipv4 ? "\(a)/32" : "\(a)/128", "dev", interface]
            if a.family == .ipv6 { args.append("nodad") }
            let r = try run(args)
            guard r.status == 0 || r.output.contains("File exists") else { throw TestFailure("ip addr add \(a): \(r.output)") }
        }
    }

    func removeVirtualAddresses(_ addresses: [VRRPAddress], interface: String) async throws {
        for a in addresses {
            let r = try run(["ip", "-n", namespace, "addr", "del", a.family == .ipv4 ? "\(a)/32" : "\(a)/128", "dev", interface])
            guard r.status == 0 || r.output.contains("Cannot assign requested address") else {
                throw TestFailure("ip addr del \(a): \(r.output)")
            }
        }
    }
}

/// An ordered log of what the fakes saw, shared by hooks, address manager, transport and announcer.
final class EventLog: Sendable {
    private let entries = Mutex<[String]>([])
    func append(_ s: String) { entries.withLock { $0.append(s) } }
    var all: [String] { entries.withLock { $0 } }
}

/// A latch a test opens: whoever waits before `open` resumes then; after it, at once.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
    func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { s -> Bool in
                if s.open { return true }
                s.waiters.append(c)
                return false
            }
            if resumeNow { c.resume() }
        }
    }
    func open() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.open = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }
}

/// Records calls (and can be slow, or held until a test opens `gate`, to show that the runner
/// awaits it).
struct RecordingHooks: VRRPRunnerHooks {
    let log: EventLog
    var delay: Duration = .zero
    var gate: Gate?
    func willBecomeMaster(_ reason: VRRPTransitionReason) async {
        log.append("hook:begin")
        if delay > .zero { try? await Task.sleep(for: delay) }
        if let gate { await gate.wait() }
        log.append("hook:end")
    }
}

struct RecordingAddressManager: VirtualAddressManager {
    let log: EventLog
    func addVirtualAddresses(_ addresses: [VRRPAddress], interface: String) async throws {
        log.append("add:\(addresses.map(\.description).joined(separator: ","))")
    }
    func removeVirtualAddresses(_ addresses: [VRRPAddress], interface: String) async throws {
        log.append("remove:\(addresses.map(\.description).joined(separator: ","))")
    }
}

/// A transport that records what is sent and lets the test inject received packets.
final class FakeTransport: VRRPTransport {
    let sourceAddress: VRRPAddress
    let destinations: [VRRPAddress]
    let isUnicast: Bool
    let log: EventLog
    private let receiver = Mutex<(@Sendable (VRRPInbound) -> Void)?>(nil)
    private let sentMessages = Mutex<[[UInt8]]>([])

    init(source: VRRPAddress, destinations: [VRRPAddress], isUnicast: Bool = false, log: EventLog) {
        self.sourceAddress = source
        self.destinations = destinations
        self.isUnicast = isUnicast
        self.log = log
    }

    func startReceiving(_ receiver: @escaping @Sendable (VRRPInbound) -> Void) { self.receiver.withLock { $0 = receiver } }

    func send(_ message: [UInt8], to destination: VRRPAddress) throws {
        sentMessages.withLock { $0.append(message) }
        log.append("advert:\(message[2])")
    }

    func close() async { receiver.withLock { $0 = nil } }

    func inject(_ inbound: VRRPInbound) {
        let r = receiver.withLock { $0 }
        r?(inbound)
    }

    var sent: [[UInt8]] { sentMessages.withLock { $0 } }
}

final class FakeAnnouncer: VRRPAnnouncer {
    let log: EventLog
    init(log: EventLog) { self.log = log }
    func announce(_ address: VRRPAddress) throws { log.append("announce:\(address)") }
    func close() {}
}

/// Namespace tests need root (creating namespaces, raw sockets); they are skipped otherwise.
let canRunNamespaceTests = isRoot

/// keepalived and tshark are installed (Debian packages `keepalived`, `tshark`).
func have(_ tool: String) -> Bool {
    ((try? run(["sh", "-c", "command -v \(tool)"]))?.status ?? 1) == 0
}
