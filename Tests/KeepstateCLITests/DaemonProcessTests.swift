import Daemon
import Foundation
import Glibc
import Testing
import TestSupport

/// `keepstate run` as the separate process an operator starts: systemd readiness, SIGHUP reload
/// (and refusal of a bad file), SIGTERM stop. What docs/operations.md promises about them.
@Suite("keepstate run as a process", .serialized, .enabled(if: isRoot, "needs root for the VRF's network namespace"))
struct DaemonProcessTests {
    /// The `keepstate` executable built next to the test bundle.
    static var executable: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("keepstate").path
    }

    /// A datagram socket standing in for systemd's $NOTIFY_SOCKET.
    final class NotifySocket {
        let path: String
        let fd: Int32
        init(path: String) throws {
            self.path = path
            unlink(path)
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { raw in
                for (i, b) in path.utf8.enumerated() { raw[i] = b }
            }
            let r = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard fd >= 0, r == 0 else { throw TestFailure("notify socket: \(String(cString: strerror(errno)))") }
        }
        /// The next message, or nil after `seconds`.
        func next(within seconds: Int) -> String? {
            var tv = timeval(tv_sec: seconds, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &buffer, buffer.count, 0)
            return n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : nil
        }
        deinit {
            close(fd)
            unlink(path)
        }
    }

    func state(_ socket: String) throws -> GroupReport? {
        try ControlClient.send(ControlRequest(command: .showState), socketPath: socket).state?.groups.first
    }

    @Test("ready is notified once up; SIGHUP reloads and refuses a bad file; SIGTERM stops cleanly")
    func lifecycle() throws {
        let ns = try TestNamespace("run")
        let dir = "/tmp/ks-run-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let conf = "\(dir)/k.conf"
        let socket = "\(dir)/k.sock"
        func write(_ state: String) throws {
            try """
                global_defs { router_id t1 }
                ha_group g { static_state \(state) }
                vrf main { netns \(ns.name) }
                """.write(toFile: conf, atomically: true, encoding: .utf8)
        }
        try write("MASTER")
        let notify = try NotifySocket(path: "\(dir)/notify")
        #expect(FileManager.default.isExecutableFile(atPath: Self.executable), "build the keepstate product first: \(Self.executable)")

        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.executable)
        p.arguments = ["run", "--config", conf, "--socket", socket, "--log-level", "warning"]
        var env = ProcessInfo.processInfo.environment
        env["NOTIFY_SOCKET"] = notify.path
        p.environment = env
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }

        #expect(notify.next(within: 30)?.hasPrefix("READY=1") == true)
        #expect(try state(socket)?.state == "master")
        // The commands against the running daemon: no VRRP here (said, exit 0), a refusal exits 1.
        let none = try ExitCodeTests.keepstate(["show", "vrrp", "--socket", socket])
        #expect(none.status == 0 && none.stdout == "show-vrrp: no VRRP configured (the configuration has no vrrp_instance)\n", "\(none)")
        let noneJSON = try ExitCodeTests.keepstate(["show", "vrrp", "--json", "--socket", socket])
        #expect(noneJSON.status == 0 && noneJSON.stdout.contains(#""vrrp":{"instances":[],"syncGroups":[]}"#), "\(noneJSON)")
        let refused = try ExitCodeTests.keepstate(["sync", "--vrf", "nope", "--socket", socket])
        #expect(refused.status == 1 && refused.stderr == "keepstate: sync refused by the daemon: no VRF nope (configured: main)\n", "\(refused)")
        let shown = try ExitCodeTests.keepstate(["show", "state", "--socket", socket])
        #expect(shown.status == 0 && shown.stdout.hasPrefix("show-state router t1\n"), "\(shown)")

        try write("BACKUP")
        kill(p.processIdentifier, SIGHUP)
        #expect(notify.next(within: 10) == "STATUS=reloaded")
        #expect(try state(socket)?.state == "backup")

        try "vrf main { bogus 1 }".write(toFile: conf, atomically: true, encoding: .utf8)
        kill(p.processIdentifier, SIGHUP)
        #expect(notify.next(within: 10) == "STATUS=reload refused")
        #expect(try state(socket)?.state == "backup", "the running configuration stays")

        kill(p.processIdentifier, SIGTERM)
        #expect(notify.next(within: 10) == "STOPPING=1")
        let deadline = Date().addingTimeInterval(10)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        #expect(!p.isRunning)
        if !p.isRunning {
            #expect(p.terminationStatus == 0)
        }
        #expect(!FileManager.default.fileExists(atPath: socket), "the control socket is removed")
    }
}
