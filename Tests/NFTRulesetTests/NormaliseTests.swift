import NFTRuleset
import SyncProtocol
import Testing

/// `nft -j list ruleset` as nftables 1.0.6 (Debian 12) prints it, for one CG-NAT router: a
/// stateful filter with a static set, a timeout set and a set rules add to, a verdict map, a
/// named counter and quota, a meter, and a source NAT.
let nodeA = #"""
{"nftables": [
 {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
 {"table": {"family": "inet", "name": "filter", "handle": 1}},
 {"counter": {"family": "inet", "name": "c1", "table": "filter", "handle": 2, "packets": 5, "bytes": 10}},
 {"quota": {"family": "inet", "name": "q1", "table": "filter", "handle": 3, "bytes": 104857600, "used": 5242880, "inv": true}},
 {"set": {"family": "inet", "name": "allowed", "table": "filter", "type": "ipv4_addr", "handle": 4, "elem": ["10.0.0.1", "10.0.0.2"]}},
 {"set": {"family": "inet", "name": "dyn", "table": "filter", "type": "ipv4_addr", "handle": 5, "size": 65535, "flags": ["timeout"], "timeout": 60}},
 {"set": {"family": "inet", "name": "ds", "table": "filter", "type": "ipv4_addr", "handle": 14, "size": 65535}},
 {"map": {"family": "inet", "name": "m", "table": "filter", "type": "ipv4_addr", "handle": 6, "map": "verdict", "elem": [["1.1.1.1", {"accept": null}], ["2.2.2.2", {"drop": null}]]}},
 {"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
 {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 7, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}},
 {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 8, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@allowed"}}, {"counter": {"packets": 3, "bytes": 100}}, {"accept": null}]}},
 {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 10, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}}, {"meter": {"key": {"payload": {"protocol": "ip", "field": "saddr"}}, "stmt": {"limit": {"rate": 10, "burst": 5, "per": "second"}}, "size": 65535, "name": "m1"}}, {"accept": null}]}},
 {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 11, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "192.168.0.0", "len": 16}}}}, {"set": {"op": "update", "elem": {"payload": {"protocol": "ip", "field": "saddr"}}, "set": "@dyn"}}, {"counter": {"packets": 0, "bytes": 0}}]}},
 {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 21, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "1.1.1.1"}}, {"set": {"op": "add", "elem": {"payload": {"protocol": "ip", "field": "saddr"}}, "set": "@ds"}}, {"last": null}]}},
 {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 12, "expr": [{"quota": {"val": 10, "val_unit": "mbytes", "inv": true, "used": 1, "used_unit": "mbytes"}}, {"drop": null}]}},
 {"table": {"family": "ip", "name": "nat", "handle": 2}},
 {"chain": {"family": "ip", "table": "nat", "name": "postrouting", "handle": 1, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
 {"rule": {"family": "ip", "table": "nat", "chain": "postrouting", "handle": 3, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["tcp", "udp"]}}}, {"snat": {"addr": "203.0.113.5", "port": {"range": [20000, 59999]}}}]}}
]}
"""#

/// The same configuration on the other node after a while: another nft release, the tables
/// created in another order (other handles), traffic counted, quota used, elements added to the
/// dynamic sets (with their expiry), static elements and anonymous set members listed in another
/// order, the `last` statement having seen a packet.
let nodeB = #"""
{"nftables": [
 {"metainfo": {"version": "1.0.9", "release_name": "Old Doc Yak #3", "json_schema_version": 1}},
 {"table": {"family": "ip", "name": "nat", "handle": 1}},
 {"chain": {"family": "ip", "table": "nat", "name": "postrouting", "handle": 7, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
 {"rule": {"family": "ip", "table": "nat", "chain": "postrouting", "handle": 9, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["udp", "tcp"]}}}, {"snat": {"addr": "203.0.113.5", "port": {"range": [20000, 59999]}}}]}},
 {"table": {"family": "inet", "name": "filter", "handle": 4}},
 {"map": {"family": "inet", "name": "m", "table": "filter", "type": "ipv4_addr", "handle": 16, "map": "verdict", "elem": [["2.2.2.2", {"drop": null}], ["1.1.1.1", {"accept": null}]]}},
 {"set": {"family": "inet", "name": "ds", "table": "filter", "type": "ipv4_addr", "handle": 24, "size": 65535, "elem": ["1.1.1.1"]}},
 {"set": {"family": "inet", "name": "dyn", "table": "filter", "type": "ipv4_addr", "handle": 15, "size": 65535, "flags": ["timeout"], "timeout": 60, "elem": [{"elem": {"val": "192.168.4.4", "expires": 31}}, {"elem": {"val": "192.168.1.9", "timeout": 30, "expires": 2}}]}},
 {"set": {"family": "inet", "name": "allowed", "table": "filter", "type": "ipv4_addr", "handle": 14, "elem": ["10.0.0.2", "10.0.0.1"]}},
 {"quota": {"family": "inet", "name": "q1", "table": "filter", "handle": 13, "bytes": 104857600, "used": 99, "inv": true}},
 {"counter": {"family": "inet", "name": "c1", "table": "filter", "handle": 12, "packets": 123456, "bytes": 987654321}},
 {"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 11, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
 {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 17, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"counter": {"packets": 9999, "bytes": 12345678}}, {"accept": null}]}},
 {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 18, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@allowed"}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}},
 {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 20, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}}, {"meter": {"key": {"payload": {"protocol": "ip", "field": "saddr"}}, "stmt": {"limit": {"rate": 10, "burst": 5, "per": "second"}}, "size": 65535, "name": "m1"}}, {"accept": null}]}},
 {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 25, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "192.168.0.0", "len": 16}}}}, {"set": {"op": "update", "elem": {"payload": {"protocol": "ip", "field": "saddr"}}, "set": "@dyn"}}, {"counter": {"packets": 2, "bytes": 168}}]}},
 {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 26, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "1.1.1.1"}}, {"set": {"op": "add", "elem": {"payload": {"protocol": "ip", "field": "saddr"}}, "set": "@ds"}}, {"last": {"used": 1500}}]}},
 {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 27, "expr": [{"quota": {"val": 10, "val_unit": "mbytes", "inv": true, "used": 7, "used_unit": "kbytes"}}, {"drop": null}]}}
]}
"""#

func fingerprint(_ json: String) throws -> RulesetDigest {
    try NFTRuleset.fingerprint(json: Array(json.utf8))
}

/// `nodeA` with `old` replaced by `new` (which must occur exactly once).
func variant(_ old: String, _ new: String) -> String {
    precondition(nodeA.components(separatedBy: old).count == 2, "not once in nodeA: \(old)")
    return nodeA.replacingOccurrences(of: old, with: new)
}

@Suite struct NormaliseTests {
    @Test func countersHandlesDynamicElementsAndOrderDoNotCount() throws {
        let a = try fingerprint(nodeA)
        let b = try fingerprint(nodeB)
        #expect(a.digest.count == 32)
        #expect(a == b, "\(a.differences(from: b))")
        #expect(a.differences(from: b) == [])
        #expect(a.parts.map(\.name) == [
            "table inet filter", "table inet filter chain input", "table inet filter counter c1", "table inet filter map m",
            "table inet filter quota q1", "table inet filter set allowed", "table inet filter set ds", "table inet filter set dyn",
            "table ip nat", "table ip nat chain postrouting",
        ])
    }

    @Test func theNormalFormOfAPart() throws {
        let parts = try NFTRuleset.parts(json: Array(nodeB.utf8))
        #expect(parts["table inet filter counter c1"] == #"{"family":"inet","name":"c1","table":"filter"}"#)
        #expect(parts["table inet filter quota q1"] == #"{"bytes":104857600,"family":"inet","inv":1,"name":"q1","table":"filter"}"#)
        #expect(parts["table inet filter set allowed"]
            == #"{"elem":["10.0.0.1","10.0.0.2"],"family":"inet","name":"allowed","table":"filter","type":"ipv4_addr"}"#)
        #expect(parts["table inet filter set dyn"]
            == #"{"family":"inet","flags":["timeout"],"name":"dyn","size":65535,"table":"filter","timeout":60,"type":"ipv4_addr"}"#)
        #expect(parts["table ip nat chain postrouting"] == #"""
            {"chain":{"family":"ip","hook":"postrouting","name":"postrouting","policy":"accept","prio":100,"table":"nat","type":"nat"},"rules":[{"expr":[{"match":{"left":{"meta":{"key":"l4proto"}},"op":"==","right":{"set":["tcp","udp"]}}},{"snat":{"addr":"203.0.113.5","port":{"range":[20000,59999]}}}]}]}
            """#)
    }

    @Test func anExtraRuleNamesItsChain() throws {
        let a = try fingerprint(nodeA)
        let extra = try fingerprint(variant(
            #"{"snat": {"addr": "203.0.113.5", "port": {"range": [20000, 59999]}}}]}}"#,
            #"{"snat": {"addr": "203.0.113.5", "port": {"range": [20000, 59999]}}}]}},"#
                + #" {"rule": {"family": "ip", "table": "nat", "chain": "postrouting", "handle": 30, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "icmp"}}, {"snat": {"addr": "203.0.113.5"}}]}}"#))
        #expect(a.digest != extra.digest)
        #expect(a.differences(from: extra) == ["table ip nat chain postrouting differs"])
        #expect(extra.differences(from: a) == ["table ip nat chain postrouting differs"])
    }

    @Test(arguments: [
        // Another NAT address.
        (#""addr": "203.0.113.5", "port""#, #""addr": "203.0.113.6", "port""#, ["table ip nat chain postrouting differs"]),
        // Another port range.
        ("[20000, 59999]", "[20000, 60000]", ["table ip nat chain postrouting differs"]),
        // An anonymous set member more.
        (#"["tcp", "udp"]"#, #"["tcp", "udp", "sctp"]"#, ["table ip nat chain postrouting differs"]),
        // A static set element less.
        (#""elem": ["10.0.0.1", "10.0.0.2"]"#, #""elem": ["10.0.0.1"]"#, ["table inet filter set allowed differs"]),
        // A map verdict changed.
        (#"["2.2.2.2", {"drop": null}]"#, #"["2.2.2.2", {"accept": null}]"#, ["table inet filter map m differs"]),
        // The chain's policy.
        (#""prio": 0, "policy": "accept""#, #""prio": 0, "policy": "drop""#, ["table inet filter chain input differs"]),
        // A quota's limit (its usage does not count, its size does).
        (#""bytes": 104857600, "used""#, #""bytes": 104857601, "used""#, ["table inet filter quota q1 differs"]),
        // A set's timeout.
        (#""flags": ["timeout"], "timeout": 60"#, #""flags": ["timeout"], "timeout": 61"#, ["table inet filter set dyn differs"]),
        // A set only on this node (nodeA is "this node").
        (#" {"set": {"family": "inet", "name": "ds", "table": "filter", "type": "ipv4_addr", "handle": 14, "size": 65535}},"#, "",
         ["table inet filter set ds only on this node"]),
    ] as [(String, String, [String])])
    func realChangesAreNamed(old: String, new: String, named: [String]) throws {
        let changed = try fingerprint(variant(old, new))
        let a = try fingerprint(nodeA)
        #expect(changed.digest != a.digest)
        let names = new.isEmpty ? a.differences(from: changed) : changed.differences(from: a)
        #expect(names == named)
    }

    @Test func ruleOrderCounts() throws {
        let first = #"{"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 7, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}},"#
        let second = #"{"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 8, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@allowed"}}, {"counter": {"packets": 3, "bytes": 100}}, {"accept": null}]}},"#
        let swapped = variant(first + "\n " + second, second + "\n " + first)
        #expect(try fingerprint(swapped).differences(from: fingerprint(nodeA)) == ["table inet filter chain input differs"])
    }

    @Test func aTableOnOneSideIsOneLine() throws {
        let withoutNAT = nodeA.components(separatedBy: "\n").filter { !$0.contains(#""family": "ip""#) }.joined(separator: "\n")
            .replacingOccurrences(of: "\"drop\": null}]}},\n]}", with: "\"drop\": null}]}}\n]}")
        let a = try fingerprint(nodeA)
        let b = try fingerprint(withoutNAT)
        #expect(a.differences(from: b) == ["table ip nat only on this node"])
        #expect(b.differences(from: a) == ["table ip nat only on the peer"])
    }

    @Test func emptyRulesetAndUnknownObjects() throws {
        let empty = try fingerprint(#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}]}"#)
        #expect(empty.parts == [])
        #expect(empty.digest.count == 32)
        // A future object kind without a table still counts, under "other".
        let future = try fingerprint(#"{"nftables": [{"gadget": {"x": 1}}]}"#)
        #expect(future.parts.map(\.name) == ["other"])
        #expect(future.digest != empty.digest)
    }

    @Test(arguments: [
        ("", "notJSON"), ("{", "notJSON"), ("[]", "unexpected"), (#"{"nft": []}"#, "unexpected"),
        (#"{"nftables": [1]}"#, "unexpected"), (#"{"nftables": [{"a": {}, "b": {}}]}"#, "unexpected"),
        (#"{"nftables": [{"table": {"family": "ip"}}]}"#, "unexpected"),
        (#"{"nftables": [{"rule": {"family": "ip", "table": "t"}}]}"#, "unexpected"),
        (#"{"nftables": [{"chain": 5}]}"#, "unexpected"),
    ])
    func badOutputIsATypedError(text: String, kind: String) {
        do {
            _ = try NFTRuleset.parts(json: Array(text.utf8))
            Issue.record("accepted \(text)")
        } catch {
            switch error {
            case .notJSON: #expect(kind == "notJSON", "\(text): \(error)")
            case .unexpected: #expect(kind == "unexpected", "\(text): \(error)")
            }
        }
    }

    @Test func longNamesFitTheWireAndStayApart() throws {
        let long = String(repeating: "c", count: 256)
        let json = #"{"nftables": [{"table": {"family": "inet", "name": "\#(long)"}}, "#
            + #"{"chain": {"family": "inet", "table": "\#(long)", "name": "\#(long)1"}}, "#
            + #"{"chain": {"family": "inet", "table": "\#(long)", "name": "\#(long)2"}}]}"#
        let d = try fingerprint(json)
        #expect(d.parts.count == 3)
        #expect(d.parts.allSatisfy { $0.name.utf8.count <= 255 })
        #expect(Set(d.parts.map(\.name)).count == 3)
    }

    @Test func readerTurnsBadOutputIntoUnknown() {
        guard case .unknown(let why) = NFTRulesetReader.fingerprint(output: Array("Error: oops".utf8)) else {
            Issue.record("garbage was fingerprinted")
            return
        }
        #expect(why.hasPrefix("nft's output is not JSON"))
        #expect(NFTRulesetReader.command(netns: nil) == ["nft", "-j", "list", "ruleset"])
        #expect(NFTRulesetReader.command(netns: "ns1") == ["ip", "netns", "exec", "ns1", "nft", "-j", "list", "ruleset"])
    }
}
