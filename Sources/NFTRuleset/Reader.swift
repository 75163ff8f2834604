import Spawn
public import SyncProtocol

/// Reads a VRF's ruleset with `nft -j list ruleset` in its network namespace (`ip netns exec
/// NS nft ...`; the daemon's own namespace for a VRF without `netns`) and fingerprints it.
/// Blocks the calling thread for at most `timeout` (then nft is killed): call it on a thread of
/// its own, never on an event loop or the concurrency pool.
public enum NFTRulesetReader {
    /// How long one `nft` may run.
    public static let timeout = 10.0
    /// The most output read from it (a ruleset larger than this is "unknown").
    public static let outputLimit = 64 << 20

    public static func command(netns: String?) -> [String] {
        let nft = ["nft", "-j", "list", "ruleset"]
        guard let netns else { return nft }
        return ["ip", "netns", "exec", netns] + nft
    }

    /// The fingerprint, or `.unknown` with the reason nft could not give it. Never throws.
    public static func read(netns: String?, timeout: Double = NFTRulesetReader.timeout) -> RulesetFingerprint {
        let argv = command(netns: netns)
        let r = Spawn.capture(argv, timeout: timeout, limit: outputLimit)
        if r.timedOut { return .unknown(reason: "`\(argv.joined(separator: " "))` did not finish within \(Int(timeout)) s") }
        if let failure = r.failure { return .unknown(reason: "`\(argv.joined(separator: " "))`: \(failure)") }
        guard let status = r.status else { return .unknown(reason: "`\(argv.joined(separator: " "))`: no exit status") }
        guard status == 0 else {
            let text = String(decoding: r.errors.isEmpty ? r.output : r.errors, as: UTF8.self)
            let first = text.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
            return .unknown(reason: "`\(argv.joined(separator: " "))` exited with status \(status)\(first.isEmpty ? "" : ": \(first)")")
        }
        return fingerprint(output: r.output)
    }

    /// The fingerprint of nft's standard output.
    public static func fingerprint(output: [UInt8]) -> RulesetFingerprint {
        do {
            return .known(try NFTRuleset.fingerprint(json: output))
        } catch {
            return .unknown(reason: error.description)
        }
    }
}
