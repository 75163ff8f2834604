import Foundation
import NFTRuleset
import Spawn
import SyncProtocol
import Testing
import TestSupport

/// A ruleset in nft's own syntax, loaded with `nft -f`.
let cgnatRuleset = """
    table inet filter {
      set allowed { type ipv4_addr; elements = { 10.0.0.1, 10.0.0.2 } }
      set dyn { type ipv4_addr; size 65535; flags dynamic,timeout; timeout 1m; }
      set ds { type ipv4_addr; size 65535; flags dynamic; }
      counter c1 { packets 5 bytes 10 }
      chain forward { type filter hook forward priority 0; policy drop;
        ct state established,related counter accept
        ip saddr @allowed counter accept
        ip saddr 192.168.0.0/16 update @dyn { ip saddr } counter
        ip saddr 1.1.1.1 add @ds { ip saddr }
      }
    }
    table ip nat {
      chain postrouting { type nat hook postrouting priority 100;
        meta l4proto { tcp, udp } snat ip to 203.0.113.5:20000-59999
      }
    }

    """

@Suite("nft in a network namespace", .serialized, .enabled(if: isRoot, "needs root: network namespaces and nftables"))
struct ReaderTests {
    static func load(_ ns: TestNamespace, _ text: String) throws {
        let file = "/tmp/ks-nft-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).nft"
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let r = try ns.exec(["nft", "-f", file])
        guard r.status == 0 else { throw TestFailure("nft -f: \(r.output)") }
    }

    @Test("the live ruleset: elements added to dynamic sets and counters do not count, a new rule does, named by its chain")
    func liveRuleset() throws {
        let ns = try TestNamespace("nft")
        try Self.load(ns, cgnatRuleset)
        guard case .known(let first) = NFTRulesetReader.read(netns: ns.name) else {
            Issue.record("\(NFTRulesetReader.read(netns: ns.name))")
            return
        }
        #expect(first.parts.map(\.name).contains("table ip nat chain postrouting"))

        // What traffic would do: dynamic elements, counter values.
        try ns.exec(["nft", "add element inet filter dyn { 192.168.3.3 timeout 30s }"])
        try ns.exec(["nft", "add element inet filter ds { 1.1.1.1 }"])
        try ns.exec(["nft", "reset counters"])
        #expect(NFTRulesetReader.read(netns: ns.name) == .known(first))

        // The same rules loaded again from scratch (new handles) fingerprint the same.
        try ns.exec(["nft", "flush ruleset"])
        try Self.load(ns, cgnatRuleset)
        #expect(NFTRulesetReader.read(netns: ns.name) == .known(first))

        // An operator's extra rule.
        try ns.exec(["nft", "add rule ip nat postrouting ip protocol icmp snat ip to 203.0.113.5"])
        guard case .known(let changed) = NFTRulesetReader.read(netns: ns.name) else {
            Issue.record("unreadable after the change")
            return
        }
        #expect(changed.differences(from: first) == ["table ip nat chain postrouting differs"])
        // Taken out again (its handle is gone too): the same as before.
        try ns.exec(["nft", "flush chain ip nat postrouting"])
        try ns.exec(["nft", "add rule ip nat postrouting meta l4proto { tcp, udp } snat ip to 203.0.113.5:20000-59999"])
        #expect(NFTRulesetReader.read(netns: ns.name) == .known(first))
    }

    @Test("a namespace that does not exist is unknown, with the reason")
    func missingNamespace() {
        let r = NFTRulesetReader.read(netns: "ks-no-such-namespace-\(getpid())")
        guard case .unknown(let why) = r else {
            Issue.record("read \(r)")
            return
        }
        #expect(why.contains("exited with status"), "\(why)")
    }
}

@Suite struct CaptureTests {
    @Test func outputAndErrorsApartWithTheStatus() {
        let r = Spawn.capture(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout: 20)
        #expect(r.status == 3 && !r.timedOut && r.failure == nil)
        #expect(String(decoding: r.output, as: UTF8.self) == "out\n")
        #expect(String(decoding: r.errors, as: UTF8.self) == "err\n")
    }

    @Test func aHungChildIsKilledAtItsTimeout() {
        let start = ContinuousClock.now
        // The grandchild keeps the pipe open: the whole process group goes.
        let r = Spawn.capture(["sh", "-c", "sleep 30 & sleep 30"], timeout: 0.3)
        #expect(r.timedOut && r.status == nil)
        #expect(ContinuousClock.now - start < .seconds(10))
    }

    @Test func tooMuchOutputIsCut() {
        let r = Spawn.capture(["sh", "-c", "yes"], timeout: 20, limit: 100_000)
        #expect(r.status == nil && r.failure?.contains("more than 100000 bytes") == true)
    }

    @Test func aMissingCommandIsAFailure() {
        let r = Spawn.capture(["ks-no-such-command-\(getpid())"], timeout: 5)
        #expect(r.status == nil && r.failure != nil)
    }
}
