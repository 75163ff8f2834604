import Config
import Dispatch
import Foundation
import Glibc
import Logging

/// Runs the operator's scripts (`vrrp_script` checks and `notify*` scripts) as child processes,
/// never on the caller's thread: the process is waited for on a thread of its own, and killed
/// (SIGKILL) when it outlives its timeout.
enum ScriptRunner {
    struct Outcome: Sendable, Equatable {
        /// The exit status; nil when it was killed for its timeout or could not start.
        var status: Int32?
        var timedOut = false
        /// Why it could not start.
        var failure: String?
        var succeeded: Bool { status == 0 }
    }

    /// argv, prefixed by `runuser` when the script runs as another user (keepalived's `user`,
    /// `script_user`, or a notify script's trailing user and group).
    static func argv(_ command: ScriptCommandSpec, defaultUser: ScriptUserSpec?) -> [String] {
        guard let user = command.runAs ?? defaultUser, user.user != "root" else { return command.arguments }
        var prefix = ["/usr/sbin/runuser", "-u", user.user]
        if let g = user.group { prefix += ["-g", g] }
        return prefix + ["--"] + command.arguments
    }

    /// keepalived's `enable_script_security` rule for a script run as root: the file and every
    /// directory above it must be owned by root and not writable by group or others (through a
    /// symbolic link too). Returns why not, or nil when the path is safe.
    static func unsafeForRoot(_ path: String) -> String? {
        guard path.hasPrefix("/") else { return "its path is not absolute" }
        var resolved = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard realpath(path, &resolved) != nil else { return "it cannot be resolved (\(String(cString: strerror(errno))))" }
        var p = String(decoding: resolved.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        while true {
            var st = stat()
            guard stat(p, &st) == 0 else { return "\(p) cannot be read (\(String(cString: strerror(errno))))" }
            if st.st_uid != 0 { return "\(p) is not owned by root" }
            if st.st_mode & (S_IWGRP | S_IWOTH) != 0 { return "\(p) is writable by its group or others" }
            if p == "/" { return nil }
            p = (p as NSString).deletingLastPathComponent
            if p.isEmpty { p = "/" }
        }
    }

    static func run(_ arguments: [String], timeout: Double) async -> Outcome {
        await withCheckedContinuation { (c: CheckedContinuation<Outcome, Never>) in
            let t = Thread {
                c.resume(returning: runBlocking(arguments, timeout: timeout))
            }
            t.name = "keepstate-script"
            t.start()
        }
    }

    /// posix_spawn and waitpid (Foundation's `Process` has been seen here not to report a child
    /// killed by a signal): the script gets a process group of its own, so that a timeout kills
    /// what it started too, and /dev/null for its standard streams.
    private static func runBlocking(_ arguments: [String], timeout: Double) -> Outcome {
        guard let first = arguments.first else { return Outcome(status: nil, failure: "empty command") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd in Int32(0)...2 { posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0) }
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
        let r = posix_spawn(&pid, first, &actions, &attr, &argv, environ)
        guard r == 0 else { return Outcome(status: nil, failure: "\(first): \(String(cString: strerror(r)))") }
        let deadline = DispatchTime.now() + max(0.001, timeout)
        var pause: useconds_t = 1000
        var status: Int32 = 0
        while true {
            let w = waitpid(pid, &status, WNOHANG)
            if w == pid { break }
            if w < 0 && errno != EINTR { return Outcome(status: nil, failure: "waitpid: \(String(cString: strerror(errno)))") }
            if DispatchTime.now() >= deadline {
                kill(-pid, SIGKILL)
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                return Outcome(status: nil, timedOut: true)
            }
            usleep(pause)
            pause = min(pause * 2, 20_000)
        }
        // Exited: its status; killed by a signal: 128 + the signal, as a shell reports it.
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Outcome(status: code)
    }
}

/// Runs notify scripts in order, one at a time per instance or group, each with a timeout;
/// a slow script delays the next notification of the same name only, never the daemon.
actor NotifyQueue {
    /// A notify script that runs longer is killed.
    static let timeout = 30.0

    private let logger: Logger
    private var tails: [String: Task<Void, Never>] = [:]

    init(logger: Logger) { self.logger = logger }

    /// Queues the scripts of one transition of `name` (`kind` is INSTANCE or GROUP).
    func notify(_ spec: NotifySpec, kind: String, name: String, state: String, priority: Int, defaultUser: ScriptUserSpec?) {
        var commands: [[String]] = []
        let specific: ScriptCommandSpec? = switch state {
        case "MASTER": spec.master
        case "BACKUP": spec.backup
        case "FAULT": spec.fault
        case "STOP": spec.stop
        default: nil
        }
        if let s = specific { commands.append(ScriptRunner.argv(s, defaultUser: defaultUser)) }
        if let g = spec.generic {
            commands.append(ScriptRunner.argv(g, defaultUser: defaultUser) + [kind, name, state, "\(priority)"])
        }
        guard !commands.isEmpty else { return }
        let previous = tails[name]
        let logger = self.logger
        tails[name] = Task {
            await previous?.value
            for argv in commands {
                let outcome = await ScriptRunner.run(argv, timeout: Self.timeout)
                let metadata: Logger.Metadata = ["script": "\(argv.joined(separator: " "))", "group": "\(name)", "state": "\(state)"]
                if outcome.succeeded {
                    logger.info("notify script ran", metadata: metadata)
                } else if outcome.timedOut {
                    logger.warning("notify script killed after \(Int(Self.timeout)) s", metadata: metadata)
                } else if let why = outcome.failure {
                    logger.warning("notify script could not start: \(why)", metadata: metadata)
                } else {
                    logger.warning("notify script exited with status \(outcome.status ?? -1)", metadata: metadata)
                }
            }
        }
    }

    /// Returns when every queued script has run.
    func drain() async {
        for t in tails.values { await t.value }
    }
}

/// The rise/fall logic of one `vrrp_script` (pure): the result of each run goes in, the state
/// comes out when it changes.
struct ScriptCheck: Sendable, Equatable {
    let rise: Int
    let fall: Int
    private(set) var ok: Bool
    private var successes = 0
    private var failures = 0

    init(rise: Int, fall: Int, initiallyOK: Bool) {
        self.rise = max(1, rise)
        self.fall = max(1, fall)
        self.ok = initiallyOK
    }

    /// Returns the new state when this run changed it.
    mutating func record(success: Bool) -> Bool? {
        if success {
            failures = 0
            successes += 1
            if !ok && successes >= rise { ok = true; return true }
        } else {
            successes = 0
            failures += 1
            if ok && failures >= fall { ok = false; return false }
        }
        return nil
    }
}
