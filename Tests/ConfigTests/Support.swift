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

/// SplitMix64: small deterministic generator for the fuzz tests.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
