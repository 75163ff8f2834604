import Foundation
import Spawn
import Synchronization

// What the drill makes, and undoes on every way out: namespaces, child processes, sysctls of
// the root namespace, files. SIGINT, SIGTERM and SIGHUP run the same cleanup, then exit.

/// A command that failed, with its output.
struct DrillError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Everything the drill made that must go when it ends. Thread-safe; `cleanAll` is idempotent.
final class DrillJanitor: @unchecked Sendable {
    static let shared = DrillJanitor()

    private let lock = NSLock()
    private var namespaces: [String] = []
    private var children: [DrillChild] = []
    private var sysctls: [(key: String, value: String)] = []
    private var paths: [String] = []
    private var aborted = false
    private var signalSources: [any DispatchSourceSignal] = []
    /// Held for a whole cleanup: a second caller (the main thread, while a signal handler
    /// cleans up) waits until the first is done instead of exiting under it.
    private let cleaning = NSLock()
    private var signalled: Int32?

    /// The signal that interrupted the drill, if one did.
    var caughtSignal: Int32? { lock.withLock { signalled } }
    /// Set by `--keep-files`: the working directory stays.
    var keepFiles = false

    var isAborted: Bool { lock.withLock { aborted } }

    /// Registers a namespace before it is made, so that an interruption in between removes it.
    func adopt(namespace: String) { lock.withLock { namespaces.append(namespace) } }

    func forget(namespace: String) { lock.withLock { namespaces.removeAll { $0 == namespace } } }

    /// Registers a child; one started after an interruption is stopped at once.
    func adopt(_ child: DrillChild) {
        let late = lock.withLock { () -> Bool in
            if aborted { return true }
            children.append(child)
            return false
        }
        if late { child.kill() }
    }

    func forget(_ child: DrillChild) { lock.withLock { children.removeAll { $0 === child } } }

    /// Sets a sysctl of the root namespace and remembers the old value (the first one wins).
    func setRootSysctl(_ key: String, _ value: String) {
        let path = "/proc/sys/" + key.replacingOccurrences(of: ".", with: "/")
        guard let old = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) else {
            return
        }
        lock.withLock {
            if !sysctls.contains(where: { $0.key == key }) { sysctls.append((key, old)) }
        }
        try? value.write(toFile: path, atomically: false, encoding: .utf8)
    }

    func adopt(path: String) { lock.withLock { paths.append(path) } }

    /// Stops the children, deletes the namespaces (after killing whatever still runs in them),
    /// puts the sysctls back, removes the files.
    func cleanAll() {
        cleaning.lock()
        defer { cleaning.unlock() }
        let (kids, spaces, settings, files) = lock.withLock { () -> ([DrillChild], [String], [(key: String, value: String)], [String]) in
            aborted = true
            defer { children = []; namespaces = []; sysctls = []; paths = [] }
            return (children, namespaces, sysctls, paths)
        }
        for c in kids { c.terminate(grace: 2) }
        for ns in spaces.reversed() { Self.deleteNamespace(ns) }
        for s in settings.reversed() {
            try? s.value.write(toFile: "/proc/sys/" + s.key.replacingOccurrences(of: ".", with: "/"), atomically: false, encoding: .utf8)
        }
        if !keepFiles { for p in files.reversed() { try? FileManager.default.removeItem(atPath: p) } }
    }

    /// Clears the abort flag for another use in the same process (tests run several drills).
    func reset() { lock.withLock { aborted = false; signalled = nil } }

    static func deleteNamespace(_ ns: String) {
        // Processes still inside (a daemon whose parent lost track of it) keep a namespace alive.
        if let pids = try? Shell.run(["ip", "netns", "pids", ns]), pids.status == 0 {
            for p in pids.output.split(whereSeparator: \.isNewline).compactMap({ Int32($0.trimmingCharacters(in: .whitespaces)) }) {
                Glibc.kill(p, SIGKILL)
            }
        }
        _ = try? Shell.run(["ip", "netns", "del", ns])
    }

    /// SIGINT, SIGTERM and SIGHUP: clean up and exit (130, 143, 129). SIGPIPE is ignored (a
    /// child that died must not kill the drill when it writes to it).
    func trapSignals() {
        signal(SIGPIPE, SIG_IGN)
        lock.withLock {
            guard signalSources.isEmpty else { return }
            for sig in [SIGINT, SIGTERM, SIGHUP] {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                source.setEventHandler { [self] in
                    lock.withLock { signalled = signalled ?? sig }
                    FileHandle.standardError.write(Data("keepstate: signal \(sig): cleaning up\n".utf8))
                    cleanAll()
                    exit(128 + sig)
                }
                source.resume()
                signalSources.append(source)
            }
        }
    }

    /// Removes namespaces and working directories left by drills and conntrackd comparisons that
    /// were killed (SIGKILL leaves no chance to clean up): names `ksd<pid>-...` and
    /// `ks-cmp-<tag>-<node>-<pid>` whose process is gone.
    static func removeLeftovers(log: (String) -> Void) {
        guard let list = try? Shell.run(["ip", "netns", "list"]), list.status == 0 else { return }
        for line in list.output.split(whereSeparator: \.isNewline) {
            let name = String(line.split(separator: " ").first ?? "")
            let owner: Int32?
            if name.hasPrefix("ks-cmp-") {
                owner = name.split(separator: "-").last.flatMap { Int32($0) }
            } else if name.hasPrefix("ksd"), let dash = name.firstIndex(of: "-") {
                owner = Int32(name[name.index(name.startIndex, offsetBy: 3)..<dash])
            } else {
                owner = nil
            }
            guard let pid = owner else { continue }
            if pid == getpid() { continue }
            if Glibc.kill(pid, 0) == 0 || errno == EPERM { continue }
            log("removing namespace \(name), left by process \(pid) which is gone")
            deleteNamespace(name)
        }
        for (dir, prefix) in [("/run", "ksd"), ("/tmp", "ks-cmp-")] {
            guard let entries = try? FileManager.default.contentsOfDirectory(atPath: dir) else { continue }
            for e in entries where e.hasPrefix(prefix) {
                guard let pid = Int32(e.dropFirst(prefix.count)), pid != getpid() else { continue }
                if Glibc.kill(pid, 0) == 0 || errno == EPERM { continue }
                try? FileManager.default.removeItem(atPath: "\(dir)/\(e)")
            }
        }
    }
}

enum Shell {
    /// Runs a command (through `env`, so PATH is searched) and returns its status and output.
    @discardableResult
    static func run(_ args: [String]) throws -> (status: Int32, output: String) {
        try Spawn.capture(args)
    }

    /// Runs a command that must succeed.
    @discardableResult
    static func must(_ args: [String]) throws -> String {
        let r = try run(args)
        guard r.status == 0 else {
            throw DrillError("`\(args.joined(separator: " "))` failed (\(r.status)): \(r.output.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return r.output
    }

    /// Runs `ip -batch` with the given lines (one process for many changes).
    static func ipBatch(_ lines: [String], netns: String? = nil) throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("ksd-ip-\(getpid())-\(UUID().uuidString)")
        try (lines.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        var args = ["ip"]
        if let netns { args += ["-n", netns] }
        try must(args + ["-batch", file.path])
    }
}

/// A child process: its standard output read as lines on a thread of its own, standard error
/// (and standard output, when it is not read as lines) to a log file.
final class DrillChild: @unchecked Sendable {
    let name: String
    let pid: pid_t
    /// The write end of its standard input (-1: none).
    private let input: Int32
    private let cond = NSCondition()
    private var lines: [String] = []
    private var outputClosed = false
    /// Its exit code once reaped (`Spawn.reap`), under `cond`.
    private var exited: Spawn.Reaped = .running

    /// - Parameters:
    ///   - lineOutput: read standard output as lines (`nextLine`); otherwise it goes to the log.
    init(name: String, arguments: [String], log: String, lineOutput: Bool, input withInput: Bool) throws {
        self.name = name
        let logFD = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard logFD >= 0 else { throw DrillError("cannot write \(log): \(String(cString: strerror(errno)))") }
        defer { close(logFD) }
        let output = lineOutput ? try Spawn.pipe() : nil
        let stdin = withInput ? try Spawn.pipe() : nil
        do {
            pid = try Spawn.start(arguments, input: stdin?.read, output: .descriptor(output?.write ?? logFD), errors: .descriptor(logFD))
        } catch {
            for fd in [output?.read, output?.write, stdin?.read, stdin?.write].compactMap({ $0 }) { close(fd) }
            throw DrillError("\(name): \(error)")
        }
        // The child's ends belong to the child now.
        if let output { close(output.write) }
        if let stdin { close(stdin.read) }
        input = stdin?.write ?? -1
        if let output {
            let reader = Thread { [self] in
                var pending: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 65536)
                while true {
                    let n = buffer.withUnsafeMutableBytes { read(output.read, $0.baseAddress, $0.count) }
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { break }
                    pending += buffer[0..<n]
                    var got: [String] = []
                    while let nl = pending.firstIndex(of: 0x0A) {
                        got.append(String(decoding: pending[..<nl], as: UTF8.self))
                        pending.removeSubrange(...nl)
                    }
                    if !got.isEmpty {
                        cond.lock(); lines += got; cond.broadcast(); cond.unlock()
                    }
                }
                close(output.read)
                cond.lock(); outputClosed = true; cond.broadcast(); cond.unlock()
            }
            reader.stackSize = 1 << 20
            reader.start()
        } else {
            outputClosed = true
        }
        DrillJanitor.shared.adopt(self)
    }

    deinit { if input >= 0 && !inputClosed { close(input) } }

    /// Reaps it if it ended (never blocks).
    var isRunning: Bool { reap(block: false) }

    /// true while running.
    private func reap(block: Bool) -> Bool {
        cond.lock()
        defer { cond.unlock() }
        if exited == .running { exited = Spawn.reap(pid, block: block) }
        return exited == .running
    }

    /// The next line of standard output, or nil after `timeout` seconds or at its end.
    func nextLine(timeout: Double) -> String? {
        let deadline = Date(timeIntervalSinceNow: timeout)
        cond.lock()
        defer { cond.unlock() }
        while lines.isEmpty && !outputClosed {
            if !cond.wait(until: deadline) { break }
        }
        return lines.isEmpty ? nil : lines.removeFirst()
    }

    /// The next line that is not `ready`-style noise and parses as `T`.
    func nextJSON<T: Decodable>(_ type: T.Type, timeout: Double) -> T? {
        let deadline = Date(timeIntervalSinceNow: timeout)
        while true {
            let left = deadline.timeIntervalSinceNow
            guard left > 0, let line = nextLine(timeout: left) else { return nil }
            if let v = try? JSONDecoder().decode(T.self, from: Data(line.utf8)) { return v }
        }
    }

    func send(_ line: String) {
        guard input >= 0 else { return }
        let bytes = Array((line + "\n").utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { write(input, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }  // it ended; what it did not read is lost with it
            sent += n
        }
    }

    func closeInput() {
        cond.lock()
        defer { cond.unlock() }
        if input >= 0 { shutdownInput() }
    }

    private var inputClosed = false
    private func shutdownInput() {
        guard !inputClosed else { return }
        inputClosed = true
        close(input)
    }

    /// SIGTERM, then SIGKILL after `grace` seconds.
    func terminate(grace: Double) {
        defer { DrillJanitor.shared.forget(self) }
        guard isRunning else { return }
        Glibc.kill(pid, SIGTERM)
        let deadline = Date(timeIntervalSinceNow: grace)
        while isRunning && Date() < deadline { usleep(10_000) }
        if isRunning { kill() }
    }

    /// SIGKILL, then reaps it (a machine that loses power does not shut down cleanly).
    func kill() {
        guard isRunning else { return }
        Glibc.kill(pid, SIGKILL)
        _ = reap(block: true)
    }

    func wait(timeout: Double) -> Bool {
        let deadline = Date(timeIntervalSinceNow: timeout)
        while isRunning && Date() < deadline { usleep(10_000) }
        return !isRunning
    }
}

/// Keeps every CPU from going idle while it lives: one spinning thread per CPU at the lowest
/// scheduling class (SCHED_IDLE), which runs only when nothing else wants that CPU and gives
/// way at once when something does. The drill starts one just before the failure and stops it
/// once the flows answered again: on a virtual machine (this one) an idle vCPU is halted, and
/// waking it for a packet, a timer or a process took milliseconds, which entered the stalls of
/// runs whose machine was otherwise idle (no background table) and not those of runs kept busy
/// by a million entries (docs/drill.md, "2026-12-07").
final class CPUWaker: Sendable {
    /// What the spinning threads share; they hold this, not the waker, so that the waker's
    /// end (also on an error path) stops them.
    private final class State: Sendable {
        let running = Atomic<Bool>(true)
        let spinning = Atomic<Int>(0)
    }
    private let state = State()
    /// The threads started, one per CPU.
    let threads: Int

    init(cpus: Int = ProcessInfo.processInfo.activeProcessorCount) {
        threads = max(1, cpus)
        for i in 0..<threads {
            let state = self.state
            let t = Thread {
                var p = sched_param(sched_priority: 0)
                // 5: SCHED_IDLE (Glibc defines it only under _GNU_SOURCE); pid 0 is this thread.
                guard sched_setscheduler(0, 5, &p) == 0 else { return }
                state.spinning.add(1, ordering: .relaxed)
                while state.running.load(ordering: .relaxed) {}
                state.spinning.subtract(1, ordering: .relaxed)
            }
            t.name = "drill-awake-\(i)"
            t.start()
        }
    }

    /// Threads spinning now (a thread the kernel refused SCHED_IDLE does not spin).
    var spinning: Int { state.spinning.load(ordering: .relaxed) }

    func stop() { state.running.store(false, ordering: .relaxed) }

    deinit { stop() }
}
