import ConntrackModel
import ArgumentParser
import Config
public import Daemon
import Foundation
import Logging
import ServiceLifecycle
public import SyncEngine

/// The exit codes of `keepstate` (docs/operations.md, "Exit codes").
enum KeepstateExit {
    static let ok = ExitCode(0)
    /// The daemon answered the request with an error (unknown VRF, group or instance, sync on a
    /// backup, reload refused), or a command failed (the demo's tables differ, pki refused to
    /// overwrite a file, the daemon stopped on an error).
    static let refused = ExitCode(1)
    /// The daemon could not be reached: no socket file, nobody listening on it, permission
    /// denied, no reply in time, or a reply that is not understood.
    static let unreachable = ExitCode(2)
    /// The configuration is invalid (`check-config`, and `run` refusing to start on it).
    static let invalidConfig = ExitCode(3)
    /// A command-line usage error (swift-argument-parser's EX_USAGE).
    static let usage = ExitCode(64)
}

/// Options every command that talks to the daemon shares.
struct SocketOptions: ParsableArguments {
    @Option(name: .long, help: "The daemon's control socket.")
    var socket = KeepstateDaemon.defaultSocketPath

    func send(_ request: ControlRequest) throws -> ControlReply {
        do {
            return try ControlClient.send(request, socketPath: socket)
        } catch {
            FileHandle.standardError.write(Data("keepstate: \(error)\n".utf8))
            throw KeepstateExit.unreachable
        }
    }
}

/// Writes a reply's output (`ShowRender`): JSON with `json`, the human text of an `ok` reply
/// otherwise. A refused request says why on standard error and exits 1.
func finish(_ reply: ControlReply, for command: ControlCommand, json: Bool) throws {
    if json {
        FileHandle.standardOutput.write(Data(ShowRender.json(reply).utf8))
    } else if reply.ok {
        if let part = ShowRender.missing(reply, for: command) {
            FileHandle.standardError.write(Data(("keepstate: the daemon's reply to \(command.rawValue) has no \"\(part)\": it "
                + "runs another keepstate version than this command; restart it (systemctl restart keepstate) to run the "
                + "installed version\n").utf8))
            throw KeepstateExit.refused
        }
        FileHandle.standardOutput.write(Data(ShowRender.human(reply, for: command).utf8))
    }
    if !reply.ok {
        FileHandle.standardError.write(Data("keepstate: \(refusal(reply, for: command))\n".utf8))
        throw KeepstateExit.refused
    }
}

/// What standard error says of a refused request.
func refusal(_ reply: ControlReply, for command: ControlCommand) -> String {
    let error = reply.error ?? "no reason given"
    if error.contains(#"bad value for "command""#) {
        return "the daemon does not know the command \(command.rawValue): it runs an older keepstate than this one; "
            + "restart it (systemctl restart keepstate) to run the installed version"
    }
    return "\(command.rawValue) refused by the daemon: \(error)"
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the daemon.",
        discussion: """
            Loads the configuration (refusing to start on any error, with file:line:col, exit \
            code 3), opens \
            the control socket, every VRF's conntrack table and sync connections, and runs until \
            SIGTERM or SIGINT. SIGHUP (or `keepstate reload`) reloads the configuration; an \
            invalid one is refused and the running one stays. Under systemd (Type=notify) it \
            reports readiness once the control socket and the VRFs are up.

            Example:
              keepstate run --config /etc/keepstate/keepstate.conf
              keepstate run --config ha1.conf --socket /run/keepstate-ha1.sock --log-level debug
            """)

    @Option(help: "The configuration file.")
    var config = "/etc/keepstate/keepstate.conf"

    @OptionGroup var socket: SocketOptions

    @Option(help: "A group allowed to use the control socket besides root.")
    var socketGroup: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    func run() async throws {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        // An invalid configuration (the file, a refused VRRP setting, unreadable or mismatched
        // TLS files) exits 3 before anything starts, as `check-config` says it; systemd does not
        // restart the unit for it. The daemon loads the file again when it starts.
        do {
            _ = try CheckConfig.validate(config, files: true)
        } catch {
            FileHandle.standardError.write(Data("keepstate: the configuration is invalid; nothing started\n".utf8))
            throw error
        }
        var logger = Logger(label: "keepstate")
        logger.logLevel = level
        let service = DaemonService(
            options: KeepstateDaemon.Options(configPath: config, socketPath: socket.socket, socketGroup: socketGroup),
            logger: logger, metrics: DaemonMetrics.bootstrapSystem())
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: service, successTerminationBehavior: .gracefullyShutdownGroup)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        do {
            try await group.run()
        } catch let errors as ConfigErrors {
            FileHandle.standardError.write(Data("\(errors)\nkeepstate: the configuration is invalid; nothing started\n".utf8))
            throw KeepstateExit.invalidConfig
        } catch {
            FileHandle.standardError.write(Data("keepstate: \(error)\n".utf8))
            throw KeepstateExit.refused
        }
    }
}

struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the daemon's state.",
        discussion: """
            Each asks the running daemon over its control socket; --json prints the reply as one \
            line of JSON with sorted keys (schema in docs/operations.md).

            Examples:
              keepstate show state
              keepstate show peer --vrf main
              keepstate show vrrp --instance VI_1
              keepstate show conntracks --vrf main --unsynced
            """,
        subcommands: [ShowState.self, ShowPeerCommand.self, ShowVRRP.self, ShowConntracks.self])
}

struct ShowVRRP: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vrrp",
        abstract: "VRRP instances (state, priorities, master, addresses, tracking, failback hold) and sync groups.",
        discussion: """
            Per vrrp_instance: its state and since when, the configured priority, the priority \
            after tracking and the one advertised (1 while the failback hold-down holds it, with \
            the reason), the master's address as last heard, the advert interval, preempt, every \
            virtual address and whether this node holds it, every tracked interface and script \
            with its status and weight, the fault's reason; per vrrp_sync_group its members. \
            Without VRRP in the configuration it says so (and exits 0).

            Examples:
              keepstate show vrrp
              keepstate show vrrp --instance VI_1 --json
            """)
    @OptionGroup var socket: SocketOptions
    @Option(help: "Only this vrrp_instance (and the sync group it is in).") var instance: String?
    @Flag(help: "The reply as JSON (schema in docs/operations.md).") var json = false

    func run() throws {
        try finish(try socket.send(ControlRequest(command: .showVRRP, instance: instance)), for: .showVRRP, json: json)
    }
}

struct ShowState: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "state",
        abstract: "HA groups (driver, override, state) and VRFs (role, conntracks, held, connections).",
        discussion: """
            Example:
              keepstate show state
              keepstate show state --vrf main --json
            """)
    @OptionGroup var socket: SocketOptions
    @Option(help: "Only this VRF.") var vrf: String?
    @Flag(help: "The reply as JSON (schema in docs/operations.md).") var json = false

    func run() throws {
        try finish(try socket.send(ControlRequest(command: .showState, vrf: vrf)), for: .showState, json: json)
    }
}

struct ShowPeerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peer",
        abstract: "Per peer, per sync connection and local node statistics.",
        discussion: """
            Examples:
              keepstate show peer
              keepstate show peer --vrf main --json
            """)
    @OptionGroup var socket: SocketOptions
    @Option(help: "Only this VRF.") var vrf: String?
    @Flag(help: "The reply as JSON (schema in docs/operations.md).") var json = false

    func run() throws {
        try finish(try socket.send(ControlRequest(command: .showPeer, vrf: vrf)), for: .showPeer, json: json)
    }
}

struct ShowConntracks: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conntracks",
        abstract: "Synced conntracks by protocol and state, and those held for the peer.",
        discussion: """
            With --unsynced, the master also reads its whole table and lists the conntracks it \
            does not sync, each with its reason (alg, untracked, not-established, delay-pending, \
            awaiting-traffic, not-observed; see docs/semantics.md), at most --limit of them, and \
            counts every one of them per reason.

            Example:
              keepstate show conntracks --vrf main
              keepstate show conntracks --vrf main --unsynced --limit 20
              keepstate show conntracks --proto udp --unsynced
            """)
    @OptionGroup var socket: SocketOptions
    @Option(help: "Only this VRF.") var vrf: String?
    @Option(help: ArgumentHelp("Only this protocol: \(IPProtocolNumber.nameHelp).")) var proto: String?
    @Flag(help: "Also list the conntracks that are not synced, with the reason.") var unsynced = false
    @Option(help: "With --unsynced: list at most this many per VRF (the counts cover all).")
    var limit = ControlRequest.defaultUnsyncedLimit
    @Flag(help: "The reply as JSON (schema in docs/operations.md).") var json = false

    func validate() throws {
        if limit < 0 { throw ValidationError("--limit must be 0 or more") }
        if let proto, IPProtocolNumber(name: proto) == nil {
            throw ValidationError("--proto \(proto) is not a protocol: give \(IPProtocolNumber.nameHelp)")
        }
    }

    func run() throws {
        let request = ControlRequest(command: .showConntracks, vrf: vrf, unsynced: unsynced ? true : nil, limit: unsynced ? limit : nil,
                                     proto: proto)
        try finish(try socket.send(request), for: .showConntracks, json: json)
    }
}

struct SetState: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-state",
        abstract: "Override an HA group's state: master, backup, or auto (follow its driver again).",
        discussion: """
            The override survives a reload and shows in `keepstate show state`; a restart \
            clears it. On a VRRP group it sets what the VRFs following the group do, not what \
            VRRP advertises.

            Examples:
              keepstate set-state ha-group1 backup   # this node gives the group up
              keepstate set-state ha-group1 auto     # back to its driver (static state or VRRP)

            A planned failover from ha1 to ha2: on ha1 `keepstate sync --vrf main`, wait for \
            the log line `forced synchronization complete`, then `keepstate set-state ha-group1 \
            backup` on ha1 and `keepstate set-state ha-group1 master` on ha2.
            """)
    @OptionGroup var socket: SocketOptions
    @Argument(help: "The HA group.") var group: String
    @Argument(help: "master, backup or auto.") var state: String
    @Flag(help: "The reply as JSON.") var json = false

    func run() throws {
        try finish(try socket.send(ControlRequest(command: .setState, group: group, state: state)), for: .setState, json: json)
    }
}

struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Reload the daemon's configuration (as SIGHUP does), and say what changed.",
        discussion: """
            An invalid configuration is refused with its errors and the running one stays.

            Example:
              keepstate check-config /etc/keepstate/keepstate.conf && keepstate reload
            """)
    @OptionGroup var socket: SocketOptions
    @Flag(help: "The reply as JSON.") var json = false

    func run() throws {
        try finish(try socket.send(ControlRequest(command: .reload)), for: .reload, json: json)
    }
}

struct Sync: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Forced synchronization of a VRF (on the master), before a planned failover.",
        discussion: """
            Reads the whole table and sends every eligible conntrack now, those still waiting \
            for their synchronization delay included, each stamped with the instant of the read. \
            A failover within a conntrack's timeout after this counts that timeout from the read \
            instead of from the switch (docs/semantics.md). Answers at once; the log line \
            `forced synchronization complete` gives the counts and the duration: wait for it \
            before switching over.

            Example:
              keepstate sync --vrf main
            """)
    @OptionGroup var socket: SocketOptions
    @Option(help: "The VRF.") var vrf: String
    @Flag(help: "The reply as JSON.") var json = false

    func run() throws {
        try finish(try socket.send(ControlRequest(command: .sync, vrf: vrf)), for: .sync, json: json)
    }
}

/// Human renderings of `show` replies, in the indented style of `show peer`.
public enum ShowRender {
    public static func state(_ s: StateReport) -> String {
        var out = "show-state router \(s.routerID)\n"
        out += "    config \(s.configFile)\n"
        out += "    uptime \(String(format: "%.0f", s.uptime)) s\n"
        for g in s.groups {
            out += "    ha-group \(g.name)\n"
            out += "        kind \(g.kind)\n"
            out += "        state \(g.state)\n"
            out += "        driven \(g.driven)\n"
            out += "        override \(g.override)\n"
            if let v = g.vrrpState {
                out += "        vrrp \(v) priority \(g.vrrpPriority.map { "\($0)" } ?? "-")\n"
            }
            if let f = g.vrrpFault { out += "        fault \(f)\n" }
            out += "        since \(String(format: "%.0f", g.since)) s, \(g.transitions) transition(s)\n"
            if !g.vrfs.isEmpty { out += "        vrfs \(g.vrfs.joined(separator: " "))\n" }
        }
        for v in s.vrfs {
            out += "    vrf \(v.name)\n"
            out += "        netns \(v.netns ?? "(own)")\n"
            out += "        ha-group \(v.group ?? "-")\n"
            out += "        role \(v.role)\n"
            out += "        conntracks \(v.conntracks)\n"
            if let synced = v.synced { out += "        synced \(synced)\n" }
            out += "        held \(v.held)\n"
            if v.holdQueue > 0 || v.holdRefused > 0 { out += "        hold queue \(v.holdQueue) refused \(v.holdRefused)\n" }
            out += "        connections \(v.connectionsEstablished)/\(v.connections) established\n"
            if let t = v.lastTakeoverSeconds { out += "        last-takeover \(String(format: "%.4f", t)) s\n" }
            if let r = v.lastRearm { out += "        last-rearm \(r)\n" }
            if let e = v.dataplaneError { out += "        error \(e)\n" }
            out += drift(v)
        }
        return String(out.dropLast())
    }

    /// The configuration drift lines of a VRF that syncs (nothing for one that does not):
    /// both ruleset digests (their first 16 hex digits), `drift KIND` and what differs.
    public static func drift(_ v: VRFReport) -> String {
        guard let kind = v.drift else { return "" }
        func short(_ d: String?) -> String {
            guard let d else { return "-" }
            return d.hasPrefix("unknown") ? d : String(d.prefix(16))
        }
        var out = "        ruleset \(short(v.rulesetDigest)) peer \(short(v.peerRulesetDigest))\n"
        out += "        drift \(kind)\(kind == "unknown" ? " (\(v.driftReason ?? "?"))" : "")\n"
        for d in v.driftDetails ?? [] { out += "            \(d)\n" }
        return out
    }

    public static func conntracks(_ c: ConntrackCounts) -> String {
        var out = "show-conntracks vrf \(c.vrf)\n"
        if let r = c.role { out += "    role \(r)\n" }
        out += "    synced\n"
        for proto in c.synced.keys.sorted() {
            let states = c.synced[proto]!
            let total = states.values.reduce(0, +)
            out += "        \(proto) \(total)\n"
            if proto == "tcp" {
                for st in states.keys.sorted() { out += "            \(st) \(states[st]!)\n" }
            }
        }
        if let p = c.pending { out += "    pending \(p)\n" }
        out += "    held \(c.held)"
        if let u = c.unsynced { out += "\n" + unsynced(u) }
        return out
    }

    public static func unsynced(_ u: UnsyncedListing) -> String {
        var out = "    unsynced"
        if let note = u.note {
            out += "\n        note \(note)"
            if u.total == 0 { return out }
        }
        out += "\n        read \(u.total), synced \(u.synced), unsynced \(u.counts.values.reduce(0, +))"
        for reason in u.counts.keys.sorted() { out += "\n        \(reason) \(u.counts[reason]!)" }
        for e in u.entries {
            var line = "\n        \(e.reason)"
            if let t = e.delayEndsIn { line += " (delay ends in \(String(format: "%.1f", t)) s)" }
            if let t = e.awaitingFor { line += " (no traffic seen for \(String(format: "%.1f", t)) s)" }
            out += line + ": \(e.conntrack)"
        }
        if u.truncated { out += "\n        ... (more not listed: raise --limit)" }
        return out
    }
}
