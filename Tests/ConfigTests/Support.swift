import ConntrackModel
import Foundation
import Config

/// Parses `text` as file "t.conf" and returns the error descriptions (empty on success).
func errorLines(_ text: String, base: String = "/etc/keepstate") -> [String] {
    do {
        _ = try ConfigLoader.parse(text: text, file: "t.conf", baseDirectory: base)
        return []
    } catch {
        return error.errors.map(\.description)
    }
}

/// A minimal valid VRF with synchronisation; `extra` becomes line 7, starting at column 9.
func syncWith(_ extra: String) -> String {
    """
    ha_group g { static_state MASTER }
    vrf v {
        ha_fp_conntrack {
            peer p { source 10.0.0.1 address 10.0.0.2 }
            listen_ha_group g
            tls { ca ca.pem certificate c.pem key k.key }
            \(extra)
        }
    }
    """
}

/// A temporary directory removed by `cleanup()`.
struct TempDir {
    let path: String

    init() throws {
        path = (NSTemporaryDirectory() as NSString).appendingPathComponent("cfgtest-" + UUID().uuidString)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func write(_ relative: String, _ text: String) throws {
        let full = path + "/" + relative
        let dir = (full as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try text.write(toFile: full, atomically: true, encoding: .utf8)
    }

    func cleanup() { try? FileManager.default.removeItem(atPath: path) }
}

/// The deterministic generator of the fuzz tests.
typealias SplitMix64 = ConntrackModel.SplitMix64
