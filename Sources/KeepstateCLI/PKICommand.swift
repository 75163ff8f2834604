import ArgumentParser
import Foundation
import PKI

struct PKICommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pki",
        abstract: "Create the CA and node certificates of the sync connections.",
        discussion: """
            Both nodes must hold a certificate from the same CA; each node checks that the \
            other's certificate names the configured peer (its `identity`, by default the peer's \
            name in the configuration, or its address).

            Example, for two nodes ha1 (10.150.0.1) and ha2 (10.150.0.2):
              keepstate pki init  --dir /etc/keepstate/pki
              keepstate pki issue --dir /etc/keepstate/pki --name ha1 --address 10.150.0.1
              keepstate pki issue --dir /etc/keepstate/pki --name ha2 --address 10.150.0.2
            Then copy ca.pem, ha2.pem and ha2.key to ha2. Keep ca.key offline.
            """,
        subcommands: [Init.self, Issue.self]
    )

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a CA: DIR/ca.pem (certificate) and DIR/ca.key (private key, mode 0600).",
            discussion: """
                Example:
                  keepstate pki init --dir /etc/keepstate/pki
                """)

        @Option(help: "Directory for ca.pem and ca.key (created if missing).")
        var dir: String

        @Option(help: "Validity in days.")
        var days: Int = 3650

        @Flag(help: "Overwrite an existing CA. Certificates it issued stop being trusted.")
        var force = false

        func run() throws {
            let ca = try PKI.makeCA(validDays: days)
            try FileOutput.write(ca, dir: dir, name: "ca", force: force)
            print("created \(dir)/ca.pem and \(dir)/ca.key")
        }
    }

    struct Issue: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue a node certificate: DIR/NAME.pem and DIR/NAME.key, signed by DIR/ca.pem.",
            discussion: """
                Example:
                  keepstate pki issue --dir /etc/keepstate/pki --name ha1 --address 10.150.0.1
                """)

        @Option(help: "Directory holding ca.pem and ca.key; the node files are written there too.")
        var dir: String

        @Option(help: "The node's name (its router_id; the peer's `identity` setting must match it).")
        var name: String

        @Option(help: "A sync address of the node (repeat for several). Carried as IP subjectAltName.")
        var address: [String] = []

        @Option(help: "Validity in days.")
        var days: Int = 825

        @Flag(help: "Overwrite existing node files.")
        var force = false

        func run() throws {
            let caCert = try FileOutput.read("\(dir)/ca.pem", what: "the CA certificate",
                                             fix: "run `keepstate pki init --dir \(dir)` first, or pass the --dir that holds ca.pem")
            let caKey = try FileOutput.read("\(dir)/ca.key", what: "the CA key",
                                            fix: "issue certificates where ca.key is (where `keepstate pki init` ran)")
            let pair = try PKI.issue(name: name, addresses: address, ca: PEMPair(certificate: caCert, privateKey: caKey), validDays: days)
            try FileOutput.write(pair, dir: dir, name: name, force: force)
            print("created \(dir)/\(name).pem and \(dir)/\(name).key (DNS:\(name)\(address.map { ", IP:\($0)" }.joined()))")
        }
    }
}

enum FileOutput {
    struct Refused: Error, CustomStringConvertible {
        var description: String
    }

    static func read(_ path: String, what: String, fix: String) throws -> String {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw Refused(description: "cannot read \(what) at \(path): \(fix)")
        }
        return text
    }

    static func write(_ pair: PEMPair, dir: String, name: String, force: Bool) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let cert = "\(dir)/\(name).pem"
        let key = "\(dir)/\(name).key"
        if !force {
            for p in [cert, key] where fm.fileExists(atPath: p) {
                throw Refused(description: "\(p) exists; pass --force to replace it")
            }
        }
        // The key is created with mode 0600 before any byte is written.
        _ = fm.createFile(atPath: key, contents: nil, attributes: [.posixPermissions: 0o600])
        try fm.setAttributes([.posixPermissions: 0o600], ofItemAtPath: key)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: key))
        try handle.truncate(atOffset: 0)
        try handle.write(contentsOf: Data(pair.privateKey.utf8))
        try handle.close()
        try Data(pair.certificate.utf8).write(to: URL(fileURLWithPath: cert))
    }
}
