import Daemon
import Foundation
import Glibc
@testable import KeepstateCLI
import Testing
import TestSupport

/// The `keepstate` executable's exit codes and error messages (docs/operations.md, "Exit
/// codes"), run as the separate process a script runs.
@Suite("keepstate exit codes")
struct ExitCodeTests {
    struct Outcome {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs the built `keepstate` (optionally through `runuser -u USER --`), with a deadline.
    static func keepstate(_ args: [String], as user: String? = nil) throws -> Outcome {
        let p = Process()
        if let user {
            p.executableURL = URL(fileURLWithPath: "/usr/sbin/runuser")
            p.arguments = ["-u", user, "--", DaemonProcessTests.executable] + args
        } else {
            p.executableURL = URL(fileURLWithPath: DaemonProcessTests.executable)
            p.arguments = args
        }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // Read both pipes to their end (a full pipe would block the child), then reap it.
        final class Box: @unchecked Sendable { var data = Data() }
        let errData = Box()
        let done = DispatchSemaphore(value: 0)
        Thread {
            errData.data = err.fileHandleForReading.readDataToEndOfFile()
            done.signal()
        }.start()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        done.wait()
        p.waitUntilExit()
        return Outcome(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                       stderr: String(decoding: errData.data, as: UTF8.self))
    }

    /// A directory under /tmp, removed at the end (short: Unix socket paths hold 107 bytes).
    final class Dir {
        let path = "/tmp/ks-exit-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        init() throws { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) }
        deinit { try? FileManager.default.removeItem(atPath: path) }
    }

    /// Every command that talks to the daemon, with valid arguments.
    static let daemonCommands: [[String]] = [
        ["show", "state"], ["show", "peer"], ["show", "vrrp"], ["show", "conntracks", "--unsynced"],
        ["sync", "--vrf", "main"], ["set-state", "g1", "master"], ["reload"],
    ]

    @Test("a missing control socket: exit 2, and the message names the socket and what to check")
    func missingSocket() throws {
        let dir = try Dir()
        let socket = "\(dir.path)/control.sock"
        for command in Self.daemonCommands {
            for json in [false, true] {
                let r = try Self.keepstate(command + ["--socket", socket] + (json ? ["--json"] : []))
                #expect(r.status == 2, "\(command): \(r.status) \(r.stderr)")
                #expect(r.stderr == "keepstate: cannot connect to \(socket): No such file or directory — is `keepstate run` running? (see --socket)\n")
                #expect(r.stdout.isEmpty)
            }
        }
    }

    @Test("a socket file nobody listens on: exit 2, connection refused")
    func nobodyListening() throws {
        let dir = try Dir()
        let socket = "\(dir.path)/stale.sock"
        let fd = try FakeDaemon.bound(socket)
        defer { close(fd) }
        let r = try Self.keepstate(["show", "state", "--socket", socket])
        #expect(r.status == 2)
        #expect(r.stderr.hasPrefix("keepstate: cannot connect to \(socket): Connection refused — the socket file exists but no daemon listens"), "\(r.stderr)")
    }

    @Test("a user who may not use the socket: exit 2, permission denied, and what to do",
          .enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/runuser"),
                   "needs root to run the client as another user (runuser)"))
    func permissionDenied() throws {
        let dir = try Dir()
        chmod(dir.path, 0o755)
        let socket = "\(dir.path)/root.sock"
        let daemon = try FakeDaemon(path: socket, replies: [])
        defer { daemon.stop() }
        chmod(socket, 0o600)
        // The executable must be reachable by the user for this to say anything.
        let probe = try Self.keepstate(["--version"], as: "nobody")
        try #require(probe.status == 0, "nobody cannot run \(DaemonProcessTests.executable): \(probe.stderr)")
        let r = try Self.keepstate(["show", "state", "--socket", socket], as: "nobody")
        #expect(r.status == 2)
        #expect(r.stderr.contains("cannot connect to \(socket): Permission denied — the control socket is for root"), "\(r.stderr)")
    }

    @Test("the daemon refuses: exit 1 with its reason; an older daemon is named as such; no reply: exit 2")
    func daemonRefuses() throws {
        let dir = try Dir()
        let socket = "\(dir.path)/k.sock"
        let refusal = ControlReply.failure("no VRF nope (configured: main)")
        let old = ControlReply.failure(#"request is not a control request: bad value for "command""#)
        let daemon = try FakeDaemon(path: socket, replies: [refusal, refusal, old, nil])
        defer { daemon.stop() }

        var r = try Self.keepstate(["sync", "--vrf", "nope", "--socket", socket])
        #expect(r.status == 1)
        #expect(r.stderr == "keepstate: sync refused by the daemon: no VRF nope (configured: main)\n")
        #expect(r.stdout.isEmpty)
        // With --json the reply is printed too, and the exit code is the same.
        r = try Self.keepstate(["show", "peer", "--vrf", "nope", "--json", "--socket", socket])
        #expect(r.status == 1)
        #expect(r.stdout == ShowRender.json(refusal))
        r = try Self.keepstate(["show", "vrrp", "--socket", socket])
        #expect(r.status == 1)
        #expect(r.stderr.contains("the daemon does not know the command show-vrrp: it runs an older keepstate than this one"), "\(r.stderr)")
        r = try Self.keepstate(["show", "state", "--socket", socket])
        #expect(r.status == 2)
        #expect(r.stderr.contains("closed the connection without a reply"), "\(r.stderr)")
        #expect(daemon.requests.count == 4)
        #expect(daemon.requests.first == ControlRequest(command: .sync, vrf: "nope"))
    }

    @Test("an ok reply: exit 0 and exactly the rendered output, human and JSON")
    func okReply() throws {
        let dir = try Dir()
        let socket = "\(dir.path)/k.sock"
        let reply = Fixtures.vrrp()
        let daemon = try FakeDaemon(path: socket, replies: [reply, reply])
        defer { daemon.stop() }
        var r = try Self.keepstate(["show", "vrrp", "--instance", "VI_1", "--socket", socket])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == ShowRender.human(reply, for: .showVRRP))
        r = try Self.keepstate(["show", "vrrp", "--json", "--socket", socket])
        #expect(r.status == 0)
        #expect(r.stdout == ShowRender.json(reply))
        #expect(daemon.requests == [ControlRequest(command: .showVRRP, instance: "VI_1"), ControlRequest(command: .showVRRP)])
    }

    @Test("usage errors exit 64; an invalid configuration exits 3 from check-config and from run")
    func usageAndConfig() throws {
        for args in [["show", "vrrp", "--bogus"], ["set-state", "g1"], ["show", "conntracks", "--unsynced", "--limit", "-1"],
                     ["frobnicate"], ["run", "--log-level", "loud"]] {
            let r = try Self.keepstate(args)
            #expect(r.status == 64, "\(args): \(r.status) \(r.stderr)")
        }
        let dir = try Dir()
        let bad = "\(dir.path)/bad.conf"
        try "vrf main {\n  bogus 1\n}\n".write(toFile: bad, atomically: true, encoding: .utf8)
        var r = try Self.keepstate(["check-config", "--skip-files", bad])
        #expect(r.status == 3)
        #expect(r.stderr.hasPrefix("\(bad):2:3: error: "), "\(r.stderr)")
        r = try Self.keepstate(["run", "--config", bad, "--socket", "\(dir.path)/k.sock"])
        #expect(r.status == 3)
        #expect(r.stderr.contains("\(bad):2:3: error: ") && r.stderr.contains("the configuration is invalid; nothing started"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "\(dir.path)/k.sock"), "nothing started")
        r = try Self.keepstate(["run", "--config", "\(dir.path)/missing.conf", "--socket", "\(dir.path)/k.sock"])
        #expect(r.status == 3)
        #expect(r.stderr.contains("cannot read configuration file"))
        r = try Self.keepstate(["check-config", "--skip-files", examples.appendingPathComponent("ha1.conf").path])
        #expect(r.status == 0, "\(r.stderr)")
        r = try Self.keepstate(["--help"])
        #expect(r.status == 0 && r.stdout.contains("Exit codes: 0 ok"))
    }
}

extension ExitCodeTests {
    @Test("pki: a missing CA and a file that exists exit 1, saying what to run")
    func pkiErrors() throws {
        let dir = try Dir()
        var r = try Self.keepstate(["pki", "issue", "--dir", dir.path, "--name", "ha1"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("cannot read the CA certificate at \(dir.path)/ca.pem: run `keepstate pki init --dir \(dir.path)` first"),
                "\(r.stderr)")
        r = try Self.keepstate(["pki", "init", "--dir", dir.path])
        #expect(r.status == 0, "\(r.stderr)")
        r = try Self.keepstate(["pki", "init", "--dir", dir.path])
        #expect(r.status == 1)
        #expect(r.stderr.contains("\(dir.path)/ca.pem exists; pass --force to replace it"), "\(r.stderr)")
    }
}

/// A stand-in for the daemon: answers each connection on a Unix socket with the next reply
/// (nil: closes without one) and records the requests.
final class FakeDaemon: @unchecked Sendable {
    private let fd: Int32
    private let path: String
    private let box = Box()
    private let thread: Thread

    var requests: [ControlRequest] { box.all }

    /// A socket bound to `path` (not listening).
    static func bound(_ path: String) throws -> Int32 {
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
        }
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, r == 0 else { throw TestFailure("bind \(path): \(String(cString: strerror(errno)))") }
        return fd
    }

    init(path: String, replies: [ControlReply?]) throws {
        self.path = path
        fd = try Self.bound(path)
        guard listen(fd, 8) == 0 else { throw TestFailure("listen: \(String(cString: strerror(errno)))") }
        let fd = self.fd
        let box = self.box
        thread = Thread {
            for reply in replies {
                let c = accept(fd, nil, nil)
                guard c >= 0 else { return }
                var line = Data()
                var byte: UInt8 = 0
                while read(c, &byte, 1) == 1 && byte != 0x0A { line.append(byte) }
                if let request = try? JSONDecoder().decode(ControlRequest.self, from: line) { box.add(request) }
                if let reply {
                    let data = reply.encodedLine()
                    _ = data.withUnsafeBytes { write(c, $0.baseAddress, $0.count) }
                }
                close(c)
            }
        }
        thread.start()
    }

    final class Box: @unchecked Sendable {
        private let lock = NSLock()
        private var items: [ControlRequest] = []
        func add(_ r: ControlRequest) { lock.withLock { items.append(r) } }
        var all: [ControlRequest] { lock.withLock { items } }
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
        unlink(path)
    }
}

