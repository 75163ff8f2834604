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

    @Test("check-config exits 1 on a bad file")
    func checkConfigFails() throws {
        let dir = try TempDir()
        let file = dir.url.appendingPathComponent("bad.conf")
        try "vrf main {\n  bogus 1\n}\n".write(to: file, atomically: true, encoding: .utf8)
        #expect(throws: ExitCode(1)) { try run(["check-config", "--skip-files", file.path]) }
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
        #expect(throws: ExitCode(1)) { try run(["check-config", conf.path]) }
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

    @Test("every subcommand's help has an example")
    func helpHasExamples() {
        for command in [CheckConfig.self, PKICommand.Init.self, PKICommand.Issue.self, Demo.self, Bench.self] as [any ParsableCommand.Type] {
            let help = command.helpMessage()
            #expect(help.contains("Example"), "\(command) help lacks an example")
        }
    }
}
