public import ArgumentParser
import Foundation
import Logging

/// The `keepstate` command.
public struct Keepstate: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "keepstate",
        abstract: "Keep firewall and CG-NAT conntrack state alive across a router failover.",
        discussion: """
            keepstate streams every qualifying conntrack from the master router's table to the \
            backup over several mutually authenticated TLS connections, so that the backup can \
            take over without resetting connections.

            Examples (start here; docs/operations.md has the whole path to a running pair):
              keepstate pki init --dir /etc/keepstate/pki             # a CA for the sync links
              keepstate pki issue --dir /etc/keepstate/pki --name ha1 --address 10.150.0.1
              keepstate check-config /etc/keepstate/keepstate.conf    # file:line:col errors
              keepstate run --config /etc/keepstate/keepstate.conf    # the daemon (systemd: Examples/)
              keepstate show state                                    # what the daemon does
              keepstate demo                                          # two nodes in one process

            Exit codes: 0 ok, 1 refused by the daemon or failed, 2 daemon not reachable, 3 invalid \
            configuration, 64 usage error (docs/operations.md).
            """,
        version: "0.1.0",
        subcommands: [Run.self, CheckConfig.self, Show.self, SetState.self, Sync.self, Reload.self, PKICommand.self, Demo.self, Bench.self, Drill.self, DrillTraffic.self]
    )

    public init() {}

    /// The process entry point: logs go to standard error; reports are written with `emit`
    /// (unbuffered), so the two interleave in the order they happen.
    public static func runMain() async {
        LoggingSystem.bootstrap { label in StreamLogHandler.standardError(label: label) }
        await main()
    }
}

/// Writes one line to standard output at once (no stdio buffering).
func emit(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
