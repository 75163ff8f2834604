import ArgumentParser
import Config
import Foundation
import Daemon
@testable import KeepstateCLI
import SyncEngine
import Testing

/// A temporary directory removed at the end of the test.
final class TempDir {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("keepstate-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    var path: String { url.path }
    deinit { try? FileManager.default.removeItem(at: url) }
}

/// Where the repository's Examples/ folder is, from this file's location.
let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Examples")

@Suite("keepstate command line")
struct CLITests {
    func run(_ args: [String]) throws {
        var command = try Keepstate.parseAsRoot(args)
        try command.run()
    }

    @Test("the example pair is valid and agrees on its sync settings")
    func examplesAreValid() throws {
        let ha1 = try ConfigLoader.load(path: examples.appendingPathComponent("ha1.conf").path)
        let ha2 = try ConfigLoader.load(path: examples.appendingPathComponent("ha2.conf").path)
        #expect(ha1.routerID == "ha1")
        #expect(ha2.routerID == "ha2")
        let v1 = try #require(ha1.vrf(named: "main")?.sync)
        let v2 = try #require(ha2.vrf(named: "main")?.sync)
        #expect(v1.peer.address == v2.peer.source)
        #expect(v2.peer.address == v1.peer.source)
        #expect(v1.peer.identity == "ha2" && v2.peer.identity == "ha1")
        #expect(ha1.vrf(named: "main")?.syncSettings() == ha2.vrf(named: "main")?.syncSettings())
        try run(["check-config", "--skip-files", examples.appendingPathComponent("ha1.conf").path])
    }

    @Test("the VRRP example pair is valid: same virtual routers, ha1 preferred, the VRF follows the sync group")
    func vrrpExamplesAreValid() throws {
        let paths = ["ha1", "ha2"].map { examples.appendingPathComponent("vrrp/\($0).conf").path }
        let ha1 = try ConfigLoader.load(path: paths[0])
        let ha2 = try ConfigLoader.load(path: paths[1])
        #expect(VRRPSupport.refusals(ha1).isEmpty && VRRPSupport.refusals(ha2).isEmpty)
        func routers(_ c: KeepstateConfig) -> [String] {
            c.vrrpInstances.map { "\($0.name) \($0.interface) vrid \($0.virtualRouterID) v\($0.version) \($0.advertIntervalCentiseconds) "
                + $0.virtualAddresses.map { "\($0.address)/\($0.prefixLength)" }.joined(separator: ",") }
        }
        #expect(routers(ha1) == routers(ha2) && routers(ha1).count == 2)
        #expect(ha1.vrrpInstances.allSatisfy { $0.priority == 150 } && ha2.vrrpInstances.allSatisfy { $0.priority == 100 })
        #expect(ha1.vrrpSyncGroups.map(\.members) == [["VI_OUTSIDE", "VI_INSIDE"]] && ha2.vrrpSyncGroups.map(\.members) == ha1.vrrpSyncGroups.map(\.members))
        let v1 = try #require(ha1.vrf(named: "main")?.sync)
        let v2 = try #require(ha2.vrf(named: "main")?.sync)
        #expect(v1.listenHAGroup == "VG_1" && v2.listenHAGroup == "VG_1")
        #expect(v1.peer.address == v2.peer.source && v2.peer.address == v1.peer.source)
        #expect(ha1.vrf(named: "main")?.syncSettings() == ha2.vrf(named: "main")?.syncSettings())
        for path in paths { try run(["check-config", "--skip-files", path]) }
        // Apart from the VRRP part, each is its static sibling.
        let static1 = try ConfigLoader.load(path: examples.appendingPathComponent("ha1.conf").path)
        #expect(static1.vrf(named: "main")?.syncSettings() == ha1.vrf(named: "main")?.syncSettings())
    }

    @Test("check-config exits 3 on a bad file")
    func checkConfigFails() throws {
        let dir = try TempDir()
        let file = dir.url.appendingPathComponent("bad.conf")
        try "vrf main {\n  bogus 1\n}\n".write(to: file, atomically: true, encoding: .utf8)
        #expect(throws: KeepstateExit.invalidConfig) { try run(["check-config", "--skip-files", file.path]) }
    }

    @Test("pki init and issue make files check-config accepts, then a wrong key is caught")
    func pkiThenCheckConfig() throws {
        let dir = try TempDir()
        let pki = dir.url.appendingPathComponent("pki").path
        try run(["pki", "init", "--dir", pki])
        try run(["pki", "issue", "--dir", pki, "--name", "ha1", "--address", "10.150.0.1"])
        try run(["pki", "issue", "--dir", pki, "--name", "ha2", "--address", "10.150.0.2"])
        let keyMode = try FileManager.default.attributesOfItem(atPath: "\(pki)/ha1.key")[.posixPermissions] as? Int
        #expect(keyMode == 0o600)
        // Refuses to overwrite.
        #expect(throws: (any Error).self) { try run(["pki", "init", "--dir", pki]) }

        var text = try String(contentsOf: examples.appendingPathComponent("ha1.conf"), encoding: .utf8)
        text = text.replacingOccurrences(of: "/etc/keepstate/pki", with: pki)
        let conf = dir.url.appendingPathComponent("ha1.conf")
        try text.write(to: conf, atomically: true, encoding: .utf8)
        try run(["check-config", conf.path])

        // ha2's key with ha1's certificate: the TLS material does not load.
        let mixed = text.replacingOccurrences(of: "\(pki)/ha1.key", with: "\(pki)/ha2.key")
        try mixed.write(to: conf, atomically: true, encoding: .utf8)
        #expect(throws: KeepstateExit.invalidConfig) { try run(["check-config", conf.path]) }
    }

    @Test("the demo (what make drill runs today) passes on a small table")
    func demoPasses() async throws {
        var lines: [String] = []
        let ok = try await Demo.play(conntracks: 3000, operations: 30000, kills: 5, connections: 3, seed: 3,
                                     logLevel: .critical) { lines.append($0) }
        #expect(ok, "\(lines.joined(separator: "\n"))")
        #expect(lines.filter { $0.hasPrefix("PASS") }.count == 4)
        #expect(lines.contains { $0.contains("client 2") })
    }

    @Test("show conntracks --unsynced renders the counts per reason and each conntrack with its reason")
    func unsyncedRendering() {
        let listing = UnsyncedListing(
            role: "master", total: 5, synced: 2, counts: ["alg": 1, "delay-pending": 1, "awaiting-traffic": 1],
            entries: [
                UnsyncedEntry(conntrack: "ipv4 tcp 431999 ESTABLISHED src=10.0.0.1 dst=192.0.2.1 sport=1025 dport=443 src=192.0.2.1 dst=10.0.0.1 sport=443 dport=1025",
                              reason: "delay-pending", delayEndsIn: 3.3),
                UnsyncedEntry(conntrack: "ipv4 udp 28 src=10.1.0.1 dst=8.8.8.8 sport=2049 dport=53 src=8.8.8.8 dst=10.1.0.1 sport=53 dport=2049",
                              reason: "awaiting-traffic", awaitingFor: 12),
            ],
            truncated: true)
        let counts = ConntrackCounts(vrf: "main", synced: ["udp": ["-": 2]], held: 0, role: "master", pending: 2, unsynced: listing)
        #expect(ShowRender.conntracks(counts) == """
            show-conntracks vrf main
                role master
                synced
                    udp 2
                pending 2
                held 0
                unsynced
                    read 5, synced 2, unsynced 3
                    alg 1
                    awaiting-traffic 1
                    delay-pending 1
                    delay-pending (delay ends in 3.3 s): ipv4 tcp 431999 ESTABLISHED src=10.0.0.1 dst=192.0.2.1 sport=1025 dport=443 src=192.0.2.1 dst=10.0.0.1 sport=443 dport=1025
                    awaiting-traffic (no traffic seen for 12.0 s): ipv4 udp 28 src=10.1.0.1 dst=8.8.8.8 sport=2049 dport=53 src=8.8.8.8 dst=10.1.0.1 sport=53 dport=2049
                    ... (more not listed: raise --limit)
            """)
        let backup = ConntrackCounts(vrf: "main", synced: [:], held: 7, role: "backup",
                                     unsynced: UnsyncedListing(role: "backup", note: "this node is backup"))
        #expect(ShowRender.conntracks(backup).hasSuffix("    held 7\n    unsynced\n        note this node is backup"))
        #expect(throws: (any Error).self) { try Keepstate.parseAsRoot(["show", "conntracks", "--unsynced", "--limit", "-3"]) }
    }

    /// Every command of the tree under `root`, `root` included, with its path of names.
    static func commandTree(_ root: any ParsableCommand.Type, path: [String] = []) -> [(path: String, type: any ParsableCommand.Type)] {
        let name = root.configuration.commandName ?? root._commandName
        let here = path + [name]
        return [(here.joined(separator: " "), root)] + root.configuration.subcommands.flatMap { commandTree($0, path: here) }
    }

    @Test("every command's --help has an Example section with a keepstate command line")
    func helpHasExamples() {
        let tree = Self.commandTree(Keepstate.self)
        // The tree is walked, not listed: a new subcommand without an example fails here.
        #expect(tree.count >= 20, "\(tree.map(\.path))")
        for required in ["keepstate run", "keepstate check-config", "keepstate show state", "keepstate show peer", "keepstate show vrrp",
                         "keepstate show conntracks", "keepstate sync", "keepstate set-state", "keepstate reload", "keepstate pki",
                         "keepstate pki init", "keepstate pki issue", "keepstate drill", "keepstate bench"] {
            #expect(tree.contains { $0.path == required }, "\(required) is not in the command tree")
        }
        for (path, command) in tree {
            let help = Keepstate.helpMessage(for: command, includeHidden: true, columns: 200)
            let lines = help.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            // A line "Example:" / "Examples:" / "Example (...):" followed by a command of this subcommand.
            let heading = lines.firstIndex { $0.hasPrefix("Example") && $0.hasSuffix(":") }
            #expect(heading != nil, "\(path) --help has no Example section:\n\(help)")
            if let h = heading, h + 1 < lines.count {
                let example = lines[h + 1]
                #expect(example.hasPrefix("keepstate ") && example.contains(path),
                        "\(path): the first example is not a \(path) command line: \(example)")
            }
        }
    }

    @Test("keepstate --generate-completion-script writes a bash, zsh and fish script that knows every subcommand")
    func completionScripts() throws {
        // The commands shown in --help (hidden ones such as drill-traffic are not completed).
        func visible(_ root: any ParsableCommand.Type) -> [String] {
            guard root.configuration.shouldDisplay else { return [] }
            return [root.configuration.commandName ?? root._commandName] + root.configuration.subcommands.flatMap(visible)
        }
        let names = Set(visible(Keepstate.self))
        #expect(names.isSuperset(of: ["run", "check-config", "show", "vrrp", "conntracks", "sync", "set-state", "reload", "pki", "issue"]),
                "\(names.sorted())")
        for (shell, marker) in [("bash", "complete -o filenames -F _keepstate keepstate"), ("zsh", "#compdef keepstate"),
                                ("fish", "complete -c 'keepstate'")] {
            let r = try ExitCodeTests.keepstate(["--generate-completion-script", shell])
            #expect(r.status == 0 && r.stderr.isEmpty, "\(shell): \(r.status) \(r.stderr)")
            #expect(r.stdout.contains(marker), "\(shell): no `\(marker)` in\n\(r.stdout.prefix(600))")
            for name in names where name != "keepstate" {
                #expect(r.stdout.contains(name), "\(shell): the script does not complete `\(name)`")
            }
            // Options too (fish writes them without the dashes).
            #expect(r.stdout.contains("instance") && r.stdout.contains("unsynced") && r.stdout.contains("socket"), "\(shell): options missing")
            // What the binary writes is what the library generates for this command tree.
            #expect(r.stdout == Keepstate.completionScript(for: CompletionShell(rawValue: shell)!) + "\n")
        }
        let bad = try ExitCodeTests.keepstate(["--generate-completion-script", "tcsh"])
        #expect(bad.status != 0 && bad.stdout.isEmpty, "\(bad)")
    }
}
