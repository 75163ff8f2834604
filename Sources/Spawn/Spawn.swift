public import Glibc

/// Child processes started with `posix_spawnp` and reaped with `waitpid`: the daemon's scripts,
/// the drill's and the lab's helpers, the tests' commands. Not Foundation's `Process`: on this
/// Linux a `Process` whose child ended on a signal sometimes stayed `isRunning` (never reaped),
/// and waiting for it took a second or forever.
///
/// Every child gets a process group of its own (so that a timeout or a teardown can signal what
/// it started too), no blocked signals, the default disposition for the signals it may be sent,
/// /dev/null for standard input, and no descriptor of the caller's beyond 0, 1 and 2.
public enum Spawn {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// Where a child's standard output and error go.
    public enum Output: Sendable {
        case null
        /// A file, created or truncated.
        case file(String)
        /// A descriptor of the caller (duplicated in the child).
        case descriptor(Int32)
    }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later; Debian 12 has 2.36),
    /// looked up at run time: Swift's Glibc module does not declare it (it is a `_GNU_SOURCE`
    /// declaration). nil on a C library without it; children then inherit what is not O_CLOEXEC.
    private static let addCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32).self)
    }()

    /// Starts `arguments` (the first is looked up in PATH) and returns its PID.
    /// - Parameters:
    ///   - input: a descriptor of the caller for its standard input; nil: /dev/null.
    ///   - output: its standard output.
    ///   - errors: its standard error; nil: with its standard output.
    public static func start(_ arguments: [String], input: Int32? = nil, output: Output = .null,
                             errors: Output? = nil) throws(Failure) -> pid_t {
        guard let first = arguments.first else { throw Failure("empty command") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let input {
            posix_spawn_file_actions_adddup2(&actions, input, 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        func direct(_ o: Output, to fd: Int32) {
            switch o {
            case .null: posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", O_WRONLY, 0)
            case .file(let path): posix_spawn_file_actions_addopen(&actions, fd, path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            case .descriptor(let d): posix_spawn_file_actions_adddup2(&actions, d, fd)
            }
        }
        direct(output, to: 1)
        if let errors {
            direct(errors, to: 2)
        } else {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        // Nothing else of the caller's: descriptors opened without O_CLOEXEC (SwiftNIO's
        // listening sockets among them) would otherwise live on in the child. A notify script
        // that left a process running kept the daemon's sync listener bound (a restarted daemon
        // could not bind its port), and under `make test` a `keepstate run` started by one test
        // held another test's listener open.
        if let closeFrom = Self.addCloseFrom {
            _ = closeFrom(&actions, 3)
        }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGINT, SIGTERM, SIGPIPE, SIGCHLD, SIGHUP] { sigaddset(&defaults, sig) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setpgroup(&attr, 0)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var pid: pid_t = 0
        let r = posix_spawnp(&pid, first, &actions, &attr, &argv, environ)
        guard r == 0 else { throw Failure("\(first): \(String(cString: strerror(r)))") }
        return pid
    }

    /// What `waitpid` said of a child.
    public enum Reaped: Equatable, Sendable {
        case running
        /// Its exit code; 128 + the signal if a signal ended it, as a shell reports it.
        case exited(Int32)
        /// Reaped elsewhere (ECHILD).
        case gone
    }

    /// Reaps `pid` if it ended; `block` waits for it.
    public static func reap(_ pid: pid_t, block: Bool) -> Reaped {
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, block ? 0 : WNOHANG)
            if r == 0 { return .running }
            if r == pid { return .exited((status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)) }
            if errno == EINTR { continue }
            return .gone
        }
    }

    /// How `run` ended.
    public struct Outcome: Sendable, Equatable {
        /// The exit code (128 + signal); nil when it was killed for its timeout or did not start.
        public var status: Int32?
        public var timedOut = false
        /// Why it could not start.
        public var failure: String?
        public var succeeded: Bool { status == 0 }

        public init(status: Int32?, timedOut: Bool = false, failure: String? = nil) {
            self.status = status
            self.timedOut = timedOut
            self.failure = failure
        }
    }

    /// Runs `arguments` to the end on the calling thread, output discarded; after `timeout`
    /// seconds its whole process group is killed (SIGKILL).
    public static func run(_ arguments: [String], timeout: Double) -> Outcome {
        let pid: pid_t
        do {
            pid = try start(arguments)
        } catch {
            return Outcome(status: nil, failure: error.description)
        }
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        let end = Double(deadline.tv_sec) + Double(deadline.tv_nsec) / 1e9 + max(0.001, timeout)
        var pause: useconds_t = 1000
        while true {
            switch reap(pid, block: false) {
            case .exited(let code): return Outcome(status: code)
            case .gone: return Outcome(status: nil, failure: "waitpid: the child was reaped elsewhere")
            case .running: break
            }
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            if Double(now.tv_sec) + Double(now.tv_nsec) / 1e9 >= end {
                kill(-pid, SIGKILL)
                _ = reap(pid, block: true)
                return Outcome(status: nil, timedOut: true)
            }
            usleep(pause)
            pause = min(pause * 2, 20_000)
        }
    }

    /// What `capture(_:timeout:limit:)` read from a child.
    public struct Captured: Sendable, Equatable {
        /// The exit code (128 + signal); nil when it did not start, was killed for its timeout
        /// or for printing more than the limit.
        public var status: Int32?
        public var output: [UInt8]
        public var errors: [UInt8]
        public var timedOut = false
        /// Why it could not start, or why it was killed (other than its timeout).
        public var failure: String?

        public init(status: Int32?, output: [UInt8] = [], errors: [UInt8] = [], timedOut: Bool = false, failure: String? = nil) {
            self.status = status
            self.output = output
            self.errors = errors
            self.timedOut = timedOut
            self.failure = failure
        }
    }

    /// Runs `arguments` to the end on the calling thread and returns its standard output and
    /// error apart. After `timeout` seconds, or once it printed more than `limit` bytes, its
    /// whole process group is killed (SIGKILL).
    public static func capture(_ arguments: [String], timeout: Double, limit: Int = 64 << 20) -> Captured {
        let out: (read: Int32, write: Int32)
        let err: (read: Int32, write: Int32)
        do {
            out = try pipe()
        } catch {
            return Captured(status: nil, failure: error.description)
        }
        do {
            err = try pipe()
        } catch {
            close(out.read)
            close(out.write)
            return Captured(status: nil, failure: error.description)
        }
        let pid: pid_t
        do {
            pid = try start(arguments, output: .descriptor(out.write), errors: .descriptor(err.write))
        } catch {
            for fd in [out.read, out.write, err.read, err.write] { close(fd) }
            return Captured(status: nil, failure: error.description)
        }
        close(out.write)
        close(err.write)
        defer {
            close(out.read)
            close(err.read)
        }
        let end = monotonicSeconds() + max(0.001, timeout)
        var result = Captured(status: nil)
        var open: [Int32] = [out.read, err.read]
        var buffer = [UInt8](repeating: 0, count: 65536)
        func killGroup() {
            kill(-pid, SIGKILL)
            _ = reap(pid, block: true)
        }
        while !open.isEmpty {
            let left = end - monotonicSeconds()
            if left <= 0 {
                killGroup()
                result.timedOut = true
                return result
            }
            var fds = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&fds, nfds_t(fds.count), Int32(min(left * 1000 + 1, 60_000)))
            if ready < 0 {
                if errno == EINTR { continue }
                killGroup()
                result.failure = "poll: \(String(cString: strerror(errno)))"
                return result
            }
            for p in fds where p.revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(p.fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    if p.fd == out.read { result.output += buffer[0..<n] } else { result.errors += buffer[0..<n] }
                    if result.output.count + result.errors.count > limit {
                        killGroup()
                        result.failure = "\(arguments[0]) printed more than \(limit) bytes"
                        return result
                    }
                } else if n == 0 || (errno != EINTR && errno != EAGAIN) {
                    open.removeAll { $0 == p.fd }
                }
            }
        }
        // Both outputs closed: the child is ending (or closed them and goes on until its timeout).
        var pause: useconds_t = 1000
        while true {
            switch reap(pid, block: false) {
            case .exited(let code):
                result.status = code
                return result
            case .gone:
                result.failure = "waitpid: the child was reaped elsewhere"
                return result
            case .running:
                break
            }
            if monotonicSeconds() >= end {
                killGroup()
                result.timedOut = true
                return result
            }
            usleep(pause)
            pause = min(pause * 2, 20_000)
        }
    }

    static func monotonicSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }

    /// A pipe whose ends are closed on exec (a child gets one only through `start`'s
    /// `input`, `output` or `errors`).
    public static func pipe() throws(Failure) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        guard Glibc.pipe(&fds) == 0 else { throw Failure("pipe: \(String(cString: strerror(errno)))") }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return (fds[0], fds[1])
    }

    /// Runs `arguments` to the end and returns its exit code and its standard output and error
    /// together.
    public static func capture(_ arguments: [String]) throws(Failure) -> (status: Int32, output: String) {
        let fds = try pipe()
        let pid: pid_t
        do {
            pid = try start(arguments, output: .descriptor(fds.write))
        } catch {
            close(fds.read)
            close(fds.write)
            throw error
        }
        close(fds.write)
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fds.read, $0.baseAddress, $0.count) }
            if n > 0 { data += buffer[0..<n]; continue }
            if n < 0 && errno == EINTR { continue }
            break
        }
        close(fds.read)
        switch reap(pid, block: true) {
        case .exited(let code): return (code, String(decoding: data, as: UTF8.self))
        case .running, .gone: throw Failure("\(arguments[0]): its exit status was lost (reaped elsewhere)")
        }
    }
}
