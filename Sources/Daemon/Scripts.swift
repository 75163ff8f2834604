import Config
import Dispatch
import Foundation
import Glibc
import Logging
import Spawn

/// Runs the operator's scripts (`vrrp_script` checks and `notify*` scripts) as child processes,
/// never on the caller's thread: the process is waited for on a thread of its own, and killed
/// (SIGKILL) when it outlives its timeout.
enum ScriptRunner {
    typealias Outcome = Spawn.Outcome

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
    /// `Spawn.run` (posix_spawn and waitpid; the script's process group is killed at its
    /// timeout, so what it started goes too).
    private static func runBlocking(_ arguments: [String], timeout: Double) -> Outcome {
        Spawn.run(arguments, timeout: timeout)
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
