import Foundation

/// Layer 4: semantics. Turns schema statements into the model, validating values,
/// duplicates, required keys and cross references. Collects all errors.
struct Builder {
    var errors: [ConfigError] = []
    let files: [SourceFile]
    let defaultRouterID: () -> String

    mutating func error(_ at: Token, _ message: String) {
        errors.append(ConfigError(at: at.location, message))
    }

    func whereIs(_ first: Token, from other: Token) -> String {
        first.location.file == other.location.file
            ? "line \(first.location.line)"
            : "\(first.location.file):\(first.location.line)"
    }

    /// Non-repeatable children by name; reports duplicates (naming the first one's line).
    mutating func fields(_ st: Statement) -> [String: Statement] {
        var seen: [String: Statement] = [:]
        for child in st.children {
            if let first = seen[child.name] {
                if child.name == "peer" {
                    error(child.keyword, "only one peer per VRF is supported; found peer '\(child.arg?.text ?? "")' here and peer '\(first.arg?.text ?? "")' at \(whereIs(first.keyword, from: child.keyword))")
                } else {
                    error(child.keyword, "duplicate '\(child.name)' in \(st.name); first given at \(whereIs(first.keyword, from: child.keyword))")
                }
            } else {
                seen[child.name] = child
            }
        }
        return seen
    }

    mutating func require(_ f: [String: Statement], _ names: [String], in st: Statement) -> Bool {
        var ok = true
        for n in names where f[n] == nil {
            error(st.keyword, "missing required '\(n)' in \(st.name)")
            ok = false
        }
        return ok
    }

    // MARK: value parsers

    mutating func nonEmpty(_ t: Token, _ what: String) -> String? {
        if t.text.isEmpty || t.text.unicodeScalars.contains("\0") {
            error(t, "invalid \(what) \(t.display); expected a non-empty value")
            return nil
        }
        return t.text
    }

    mutating func integer(_ st: Statement, _ range: ClosedRange<Int>, unit: String = "") -> Int? {
        guard let t = st.arg else { return nil }
        let expected = "an integer\(unit) in \(range.lowerBound)...\(range.upperBound)"
        guard !t.text.isEmpty, t.text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            error(t, "invalid value \(t.display) for '\(st.name)'; expected \(expected)")
            return nil
        }
        guard let v = Int(t.text), range.contains(v) else {
            error(t, "value \(t.text) for '\(st.name)' is out of range; expected \(expected)")
            return nil
        }
        return v
    }

    mutating func decimal(_ st: Statement, _ range: ClosedRange<Double>?) -> Double? {
        guard let t = st.arg else { return nil }
        let rangeText = range.map { " in \(fmt($0.lowerBound))...\(fmt($0.upperBound))" } ?? ""
        let expected = "a decimal number of seconds\(rangeText)"
        let parts = t.text.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
        let digitsOnly = { (s: Substring) in !s.isEmpty && s.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } }
        guard t.text.utf8.count <= 32, (parts.count == 1 || parts.count == 2), parts.allSatisfy(digitsOnly),
              let v = Double(t.text), v.isFinite else {
            error(t, "invalid value \(t.display) for '\(st.name)'; expected \(expected)")
            return nil
        }
        if let range, !range.contains(v) {
            error(t, "value \(t.text) for '\(st.name)' is out of range; expected \(expected)")
            return nil
        }
        return v
    }

    /// Address family (4 or 6) of a valid IP literal, via inet_pton.
    mutating func ip(_ st: Statement) -> (String, Int)? {
        guard let t = st.arg else { return nil }
        if !t.text.unicodeScalars.contains("\0") && t.text.utf8.count < 64 {
            var a4 = in_addr()
            if inet_pton(AF_INET, t.text, &a4) == 1 { return (t.text, 4) }
            var a6 = in6_addr()
            if inet_pton(AF_INET6, t.text, &a6) == 1 { return (t.text, 6) }
        }
        error(t, "invalid IP address \(t.display) for '\(st.name)'; expected an IPv4 or IPv6 address")
        return nil
    }

    /// `ADDRESS:PORT`: an IPv4 address, or an IPv6 address in brackets, and a port in 1...65535.
    mutating func listenEndpoint(_ st: Statement) -> ListenEndpoint? {
        guard let t = st.arg else { return nil }
        let expected = "expected ADDRESS:PORT with an IPv4 address or an IPv6 address in brackets and a port in 1...65535 (127.0.0.1:9469, [::1]:9469)"
        let text = t.text
        var host = "", portText = ""
        var bracketed = false
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                error(t, "invalid value \(t.display) for '\(st.name)'; \(expected)")
                return nil
            }
            bracketed = true
            host = String(text[text.index(after: text.startIndex)..<close])
            portText = String(text[text.index(close, offsetBy: 2)...])
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                error(t, "invalid value \(t.display) for '\(st.name)'; \(expected)")
                return nil
            }
            host = String(text[..<colon])
            portText = String(text[text.index(after: colon)...])
            if host.contains(":") {
                error(t, "invalid value \(t.display) for '\(st.name)'; an IPv6 address is written in brackets: [ADDRESS]:PORT")
                return nil
            }
        }
        var ok = !host.unicodeScalars.contains("\0") && host.utf8.count < 64
        if ok {
            if bracketed {
                var a6 = in6_addr()
                ok = inet_pton(AF_INET6, host, &a6) == 1
            } else {
                var a4 = in_addr()
                ok = inet_pton(AF_INET, host, &a4) == 1
            }
        }
        guard ok else {
            let family = bracketed ? "IPv6" : "IPv4"
            error(t, "invalid \(family) address '\(host)' in '\(st.name)' \(t.display); \(expected)")
            return nil
        }
        guard !portText.isEmpty, portText.utf8.count <= 5, portText.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
              let v = Int(portText), (1...65535).contains(v) else {
            error(t, "invalid port '\(portText)' in '\(st.name)' \(t.display); \(expected)")
            return nil
        }
        return ListenEndpoint(address: host, port: UInt16(v), location: t.location)
    }

    mutating func path(_ st: Statement) -> String? {
        guard let t = st.arg, let p = nonEmpty(t, "path for '\(st.name)'") else { return nil }
        let dir = t.fileIndex < files.count ? files[t.fileIndex].directory : Paths.currentDirectory
        return Paths.resolve(p, relativeTo: dir)
    }

    // MARK: blocks

    mutating func build(_ top: [Statement], sources: [String]) -> KeepstateConfig {
        var routerID: String?
        var globalDefs: Statement?
        var globals = VRRPGlobals()
        var metricsListen: ListenEndpoint?
        var groups: [HAGroupConfig] = []
        var vrfs: [VRFConfig] = []
        var vrfTokens: [String: Token] = [:]
        var listenRefs: [Token] = []
        // ha_group, vrrp_instance and vrrp_sync_group names share one namespace (listen_ha_group).
        var names = NameTable()
        var scriptStatements: [Statement] = []
        var instanceStatements: [(Statement, declared: Bool)] = []
        var syncGroupStatements: [(Statement, declared: Bool)] = []

        for st in top {
            switch st.name {
            case "global_defs":
                if let first = globalDefs {
                    error(st.keyword, "duplicate 'global_defs'; first given at \(whereIs(first.keyword, from: st.keyword))")
                    continue
                }
                globalDefs = st
                let f = fields(st)
                if let t = f["router_id"]?.arg { routerID = nonEmpty(t, "router_id") }
                if let st = f["metrics_listen"] { metricsListen = listenEndpoint(st) }
                globals = buildGlobals(f)
            case "ha_group":
                guard let nameTok = st.arg else { continue }
                let f = fields(st)
                var state: HAState?
                if let t = f["static_state"]?.arg {
                    state = HAState(rawValue: t.text.uppercased())
                    if state == nil { error(t, "invalid static_state \(t.display); expected MASTER or BACKUP") }
                }
                _ = require(f, ["static_state"], in: st)
                guard let name = nonEmpty(nameTok, "ha_group name") else { continue }
                guard declare(name, .staticGroup, nameTok, in: &names) else { continue }
                if let state { groups.append(HAGroupConfig(name: name, staticState: state, location: st.keyword.location)) }
            case "vrf":
                guard let nameTok = st.arg else { continue }
                let vrf = buildVRF(st, listenRefs: &listenRefs)
                if !isValidVRFName(nameTok.text) {
                    error(nameTok, "invalid vrf name \(nameTok.display); expected 1 to 32 characters from [A-Za-z0-9_.-]")
                    continue
                }
                if let first = vrfTokens[nameTok.text] {
                    error(nameTok, "duplicate vrf name '\(nameTok.text)'; first declared at \(whereIs(first, from: nameTok))")
                    continue
                }
                vrfTokens[nameTok.text] = nameTok
                if let vrf { vrfs.append(vrf) }
            case "vrrp_script":
                scriptStatements.append(st)
            case "vrrp_instance", "vrrp_sync_group":
                guard let nameTok = st.arg else { continue }
                let kind: HAGroupKind = st.name == "vrrp_instance" ? .vrrpInstance : .vrrpSyncGroup
                let declared = nonEmpty(nameTok, "\(st.name) name").map { declare($0, kind, nameTok, in: &names) } ?? false
                if kind == .vrrpInstance { instanceStatements.append((st, declared)) } else { syncGroupStatements.append((st, declared)) }
            default:
                break // the splitter only yields known keywords
            }
        }
        let vrrp = buildVRRP(globals: globals, scripts: scriptStatements, instances: instanceStatements,
                             syncGroups: syncGroupStatements)
        for ref in listenRefs where names.first[ref.text] == nil {
            let known = names.order.map { "\($0.kind) '\($0.name)'" }
            let list = known.isEmpty ? "none is declared" : "declared: " + known.joined(separator: ", ")
            error(ref, "unknown HA group '\(ref.text)'; expected the name of an ha_group, vrrp_instance or vrrp_sync_group (\(list))")
        }
        return KeepstateConfig(routerID: routerID ?? defaultRouterID(), haGroups: groups, vrfs: vrfs, sources: sources,
                               vrrpGlobals: globals, vrrpScripts: vrrp.scripts, vrrpInstances: vrrp.instances,
                               vrrpSyncGroups: vrrp.syncGroups, metricsListen: metricsListen)
    }

    /// Names of ha_group, vrrp_instance and vrrp_sync_group in declaration order.
    struct NameTable {
        var first: [String: (kind: HAGroupKind, token: Token)] = [:]
        var order: [(kind: HAGroupKind, name: String)] = []
    }

    /// Registers a name; reports a duplicate (same kind or another kind) and returns false.
    mutating func declare(_ name: String, _ kind: HAGroupKind, _ token: Token, in names: inout NameTable) -> Bool {
        if let first = names.first[name] {
            if first.kind == kind {
                error(token, "duplicate \(kind) name '\(name)'; first declared at \(whereIs(first.token, from: token))")
            } else {
                error(token, "\(kind) name '\(name)' is already used by the \(first.kind) declared at \(whereIs(first.token, from: token)); ha_group, vrrp_instance and vrrp_sync_group names must be unique (listen_ha_group refers to them by name)")
            }
            return false
        }
        names.first[name] = (kind, token)
        names.order.append((kind, name))
        return true
    }

    func isValidVRFName(_ s: String) -> Bool {
        let u = s.utf8
        return (1...32).contains(u.count) && u.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F || c == 0x2E || c == 0x2D
        }
    }

    mutating func buildVRF(_ st: Statement, listenRefs: inout [Token]) -> VRFConfig? {
        let f = fields(st)
        var ok = true
        var netns: String?
        if let t = f["netns"]?.arg {
            if t.text.isEmpty || t.text == "." || t.text == ".." || t.text.contains("/")
                || t.text.unicodeScalars.contains("\0") || t.text.utf8.count > 255 {
                error(t, "invalid network namespace name \(t.display); expected a file name without '/'")
                ok = false
            } else {
                netns = t.text
            }
        }
        var sync: SyncConfig?
        if let s = f["ha_fp_conntrack"] {
            sync = buildSync(s, listenRefs: &listenRefs)
            if sync == nil { ok = false }
        }
        var timeouts = ConntrackTimeouts()
        if let c = f["conntrack_timeouts"] {
            let cf = fields(c)
            if let t = cf["tcp_undefined"] {
                if let v = integer(t, 1...86400, unit: " of seconds") { timeouts.tcpUndefined = v } else { ok = false }
            }
        }
        var delays = HADelays()
        if let d = f["ha_delays"] {
            let df = fields(d)
            for proto in ["tcp", "udp", "icmp"] {
                guard let p = df[proto] else { continue }
                let pf = fields(p)
                var pd = ProtocolDelays()
                if let t = pf["synchronization"] {
                    if let v = integer(t, 0...86400, unit: " of seconds") { pd.synchronization = v } else { ok = false }
                }
                if let t = pf["undefined_grace_period"] {
                    if let v = integer(t, 0...86400, unit: " of seconds") { pd.undefinedGracePeriod = v } else { ok = false }
                }
                switch proto {
                case "tcp": delays.tcp = pd
                case "udp": delays.udp = pd
                default: delays.icmp = pd
                }
            }
        }
        guard ok, let name = st.arg?.text else { return nil }
        return VRFConfig(name: name, netns: netns, sync: sync, timeouts: timeouts, delays: delays, location: st.keyword.location)
    }

    mutating func buildSync(_ st: Statement, listenRefs: inout [Token]) -> SyncConfig? {
        let f = fields(st)
        var ok = require(f, ["peer", "listen_ha_group", "tls"], in: st)

        var peer: PeerConfig?
        if let p = f["peer"] {
            peer = buildPeer(p)
            if peer == nil { ok = false }
        }
        var group: String?
        if let t = f["listen_ha_group"]?.arg {
            group = nonEmpty(t, "listen_ha_group")
            if group != nil { listenRefs.append(t) } else { ok = false }
        }
        var threads = SyncConfig.defaultEventThreads
        if let t = f["event_threads"] {
            if let v = integer(t, 1...64) { threads = v } else { ok = false }
        }
        var tls: TLSFiles?
        if let t = f["tls"] {
            let tf = fields(t)
            ok = require(tf, ["ca", "certificate", "key"], in: t) && ok
            let ca = tf["ca"].flatMap { path($0) }
            let cert = tf["certificate"].flatMap { path($0) }
            let key = tf["key"].flatMap { path($0) }
            if let ca, let cert, let key, let a = tf["ca"], let b = tf["certificate"], let c = tf["key"] {
                tls = TLSFiles(ca: ca, certificate: cert, key: key, caLocation: a.keyword.location,
                               certificateLocation: b.keyword.location, keyLocation: c.keyword.location)
            } else {
                ok = false
            }
        }
        var heartbeat = SyncConfig.defaultHeartbeatInterval
        var heartbeatOK = true
        if let t = f["heartbeat_interval"] {
            if let v = decimal(t, 0.05...60) { heartbeat = v } else { ok = false; heartbeatOK = false }
        }
        var dead: Double?
        if let t = f["dead_interval"], let tok = t.arg {
            if let v = decimal(t, nil) {
                if heartbeatOK && v <= heartbeat {
                    error(tok, "dead_interval \(tok.text) must be greater than heartbeat_interval (\(fmt(heartbeat)))")
                    ok = false
                } else {
                    dead = v
                }
            } else {
                ok = false
            }
        }
        var queue = SyncConfig.defaultSendQueueLimit
        if let t = f["send_queue_limit"] {
            if let v = integer(t, 1024...67_108_864) { queue = v } else { ok = false }
        }
        var hold = SyncConfig.defaultFailbackHoldMax
        if let t = f["failback_hold_max"] {
            if let v = decimal(t, 0...3600) { hold = v } else { ok = false }
        }
        var rulesetInterval = SyncConfig.defaultRulesetCheckInterval
        if let t = f["ruleset_check_interval"], let tok = t.arg {
            if let v = decimal(t, 0...3600) {
                if v > 0 && v < SyncConfig.minimumRulesetCheckInterval {
                    error(tok, "ruleset_check_interval \(tok.text) is too short; expected 0 (no check) or \(fmt(SyncConfig.minimumRulesetCheckInterval)) to 3600 seconds")
                    ok = false
                } else {
                    rulesetInterval = v
                }
            } else {
                ok = false
            }
        }
        guard ok, let peer, let group, let tls else { return nil }
        return SyncConfig(peer: peer, listenHAGroup: group, eventThreads: threads, tls: tls,
                          heartbeatInterval: heartbeat, deadInterval: dead, sendQueueLimit: queue, failbackHoldMax: hold,
                          rulesetCheckInterval: rulesetInterval)
    }

    mutating func buildPeer(_ st: Statement) -> PeerConfig? {
        let f = fields(st)
        var ok = require(f, ["source", "address"], in: st)
        let source = f["source"].flatMap { ip($0) }
        let address = f["address"].flatMap { ip($0) }
        if f["source"] != nil && source == nil { ok = false }
        if f["address"] != nil && address == nil { ok = false }
        if let source, let address, source.1 != address.1, let tok = f["address"]?.arg {
            error(tok, "address '\(address.0)' is IPv\(address.1) but source '\(source.0)' is IPv\(source.1); expected both of the same address family")
            ok = false
        }
        var port = PeerConfig.defaultPort
        if let t = f["port"] {
            if let v = integer(t, 1...65535), let p = UInt16(exactly: v) { port = p } else { ok = false }
        }
        var identity: String?
        if let t = f["identity"]?.arg {
            identity = nonEmpty(t, "identity")
            if identity == nil { ok = false }
        }
        guard ok, let nameTok = st.arg, let name = nonEmpty(nameTok, "peer name"),
              let source, let address else { return nil }
        return PeerConfig(name: name, source: source.0, address: address.0, port: port, identity: identity)
    }
}

/// Shortest decimal text of a number (1.0 -> "1", 0.05 -> "0.05").
func fmt(_ d: Double) -> String {
    if d == d.rounded(), abs(d) < 1e15 { return String(Int(d)) }
    return String(d)
}
