import ArgumentParser
public import Daemon
import Foundation
import Logging
import ServiceLifecycle
public import SyncEngine

/// Options every command that talks to the daemon shares.
struct SocketOptions: ParsableArguments {
    @Option(name: .long, help: "The daemon's control socket.")
    var socket = KeepstateDaemon.defaultSocketPath

    func send(_ request: ControlRequest) throws -> ControlReply {
        do {
            return try ControlClient.send(request, socketPath: socket)
        } catch {
            // Exit code 2: the daemon could not be reached (docs/operations.md).
            FileHandle.standardError.write(Data("keepstate: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }
}

/// Prints the reply as JSON or hands it to `render`; a refused request exits 1.
func finish(_ reply: ControlReply, json: Bool, render: (ControlReply) -> String) throws {
    if json {
        FileHandle.standardOutput.write(reply.encodedLine())
    } else if reply.ok {
        let text = render(reply)
        if !text.isEmpty { emit(text) }
    }
    if !reply.ok {
        FileHandle.standardError.write(Data("keepstate: \(reply.error ?? "request refused")\n".utf8))
        throw ExitCode(1)
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the daemon.",
        discussion: """
            Loads the configuration (refusing to start on any error, with file:line:col), opens \
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
        var logger = Logger(label: "keepstate")
        logger.logLevel = level
        let service = DaemonService(
            options: KeepstateDaemon.Options(configPath: config, socketPath: socket.socket, socketGroup: socketGroup),
            logger: logger)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: service, successTerminationBehavior: .gracefullyShutdownGroup)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        do {
            try await group.run()
        } catch {
            FileHandle.standardError.write(Data("keepstate: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}

struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the daemon's state.",
        subcommands: [ShowState.self, ShowPeerCommand.self, ShowConntracks.self])
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
        try finish(try socket.send(ControlRequest(command: .showState, vrf: vrf)), json: json) { r in
            r.state.map(ShowRender.state) ?? ""
        }
    }
}

struct ShowPeerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peer",
        abstract: "Per peer, per sync connection and local node statistics.",
        discussion: """
            Example:
              keepstate show peer --vrf main
            """)
    @OptionGroup var socket: SocketOptions
    @Option(help: "Only this VRF.") var vrf: String?
    @Flag(help: "The reply as JSON (schema in docs/operations.md).") var json = false

    func run() throws {
        try finish(try socket.send(ControlRequest(command: .showPeer, vrf: vrf)), json: json) { r in
            (r.peers ?? []).map(ShowPeer.render).joined(separator: "\n")
        }
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
            """)
    @OptionGroup var socket: SocketOptions
    @Option(help: "Only this VRF.") var vrf: String?
    @Flag(help: "Also list the conntracks that are not synced, with the reason.") var unsynced = false
    @Option(help: "With --unsynced: list at most this many per VRF (the counts cover all).")
    var limit = ControlRequest.defaultUnsyncedLimit
    @Flag(help: "The reply as JSON (schema in docs/operations.md).") var json = false

    func validate() throws {
        if limit < 0 { throw ValidationError("--limit must be 0 or more") }
    }

    func run() throws {
        let request = ControlRequest(command: .showConntracks, vrf: vrf, unsynced: unsynced ? true : nil, limit: unsynced ? limit : nil)
        try finish(try socket.send(request), json: json) { r in
            (r.conntracks ?? []).map(ShowRender.conntracks).joined(separator: "\n")
        }
    }
}

struct SetState: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-state",
        abstract: "Override an HA group's state: master, backup, or auto (follow its driver again).",
        discussion: """
            The override survives a reload and shows in `keepstate show state`; a restart \
            clears it.

            Example (planned failover from ha1 to ha2):
              keepstate sync --vrf main            # on ha1
              keepstate set-state ha-group1 backup # on ha1
            """)
    @OptionGroup var socket: SocketOptions
    @Argument(help: "The HA group.") var group: String
    @Argument(help: "master, backup or auto.") var state: String
    @Flag(help: "The reply as JSON.") var json = false

    func run() throws {
        try finish(try socket.send(ControlRequest(command: .setState, group: group, state: state)), json: json) { $0.message ?? "" }
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
        try finish(try socket.send(ControlRequest(command: .reload)), json: json) { $0.message ?? "" }
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
        try finish(try socket.send(ControlRequest(command: .sync, vrf: vrf)), json: json) { $0.message ?? "" }
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
