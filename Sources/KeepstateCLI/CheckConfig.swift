import ArgumentParser
import Config
import Daemon
import Foundation

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate a configuration file without starting anything.",
        discussion: """
            Prints every error as FILE:LINE:COLUMN: error: MESSAGE and exits 3 if there is any; \
            prints a summary and exits 0 otherwise. The TLS files named by each VRF are loaded \
            too (skip with --skip-files when checking a file for another machine).

            Examples:
              keepstate check-config /etc/keepstate/keepstate.conf
              keepstate check-config --skip-files ha2.conf     # a file for another machine
            """)

    @Argument(help: "The configuration file.")
    var file: String

    @Flag(help: "Do not open the TLS files the configuration names.")
    var skipFiles = false

    func run() throws {
        let config = try Self.validate(file, files: !skipFiles)
        print(Self.summary(config, file: file), terminator: "")
    }

    /// Loads and checks a configuration as `check-config` does: the file, what this build
    /// refuses (VRRP), and with `files` the TLS files it names (read and matched). Every problem
    /// goes to standard error with its `file:line`; then it throws `KeepstateExit.invalidConfig`
    /// (exit 3). `keepstate run` calls it too, before anything starts.
    static func validate(_ file: String, files: Bool) throws -> KeepstateConfig {
        let config: KeepstateConfig
        do {
            config = try ConfigLoader.load(path: file)
            if files { try config.validateFiles() }
        } catch {
            FileHandle.standardError.write(Data("\(error)\n".utf8))
            throw KeepstateExit.invalidConfig
        }
        let refusals = VRRPSupport.refusals(config)
        for r in refusals { FileHandle.standardError.write(Data("\(r)\n".utf8)) }
        if !refusals.isEmpty { throw KeepstateExit.invalidConfig }
        if files {
            let problems = KeepstateDaemon.tlsProblems(config)
            for p in problems { FileHandle.standardError.write(Data("\(p)\n".utf8)) }
            if !problems.isEmpty { throw KeepstateExit.invalidConfig }
        }
        return config
    }

    static func summary(_ config: KeepstateConfig, file: String) -> String {
        var out = "\(file): ok\n"
        out += "router_id \(config.routerID)\n"
        if let m = config.metricsListen { out += "metrics_listen \(m) (GET /metrics)\n" }
        for g in config.haGroups {
            out += "ha_group \(g.name): static \(g.staticState.rawValue)\n"
        }
        for v in config.vrfs {
            out += "vrf \(v.name)\(v.netns.map { " (netns \($0))" } ?? ""):"
            if let s = v.sync {
                out += " sync with \(s.peer.name) \(s.peer.address):\(s.peer.port) from \(s.peer.source)"
                out += ", \(s.eventThreads) connection(s), listens to \(s.listenHAGroup)\n"
            } else {
                out += " no sync\n"
            }
            for setting in v.syncSettings() { out += "    \(setting.key) \(setting.value)\n" }
        }
        return out
    }
}
