import Foundation

/// Layer 4, the keepalived part: `global_defs` VRRP settings, `vrrp_script`, `vrrp_instance`,
/// `vrrp_sync_group`. keepalived logs many contradictions and carries on with a changed value
/// (it truncates a long password, clears `nopreempt` with `state MASTER`, rounds `advert_int`,
/// ignores weights of sync group members...); keepstate rejects each of them with its location,
/// so that what runs is what the file says.
extension Builder {
    // MARK: small value parsers

    mutating func error(at location: SourceLocation, _ message: String) {
        errors.append(ConfigError(at: location, message))
    }

    func whereIs(_ first: SourceLocation, from other: SourceLocation) -> String {
        first.file == other.file ? "line \(first.line)" : "\(first.file):\(first.line)"
    }

    /// A (possibly negative) integer word in `range`; `what` names the keyword in messages.
    mutating func integer(_ t: Token, _ what: String, _ range: ClosedRange<Int>, unit: String = "") -> Int? {
        let expected = "an integer\(unit) in \(range.lowerBound)...\(range.upperBound)"
        var digits = Substring(t.text)
        let negative = digits.first == "-" && range.lowerBound < 0
        if negative { digits = digits.dropFirst() }
        guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            error(t, "invalid value \(t.display) for '\(what)'; expected \(expected)")
            return nil
        }
        guard let magnitude = Int(digits), case let v = negative ? -magnitude : magnitude, range.contains(v) else {
            error(t, "value \(t.text) for '\(what)' is out of range; expected \(expected)")
            return nil
        }
        return v
    }

    /// keepalived's <BOOL>: no argument means true.
    mutating func bool(_ st: Statement) -> Bool? {
        guard let t = st.arg else { return true }
        switch t.text.lowercased() {
        case "on", "true", "yes": return true
        case "off", "false", "no": return false
        default:
            error(t, "invalid value \(t.display) for '\(st.name)'; expected one of: on, off, true, false, yes, no")
            return nil
        }
    }

    /// Family and bytes of an IP literal (inet_pton), nil if it is none.
    func parseIP(_ text: String) -> (family: IPFamily, bytes: [UInt8])? {
        guard !text.unicodeScalars.contains("\0"), text.utf8.count < 64 else { return nil }
        var a4 = in_addr()
        if inet_pton(AF_INET, text, &a4) == 1 { return (.ipv4, withUnsafeBytes(of: &a4) { Array($0) }) }
        var a6 = in6_addr()
        if inet_pton(AF_INET6, text, &a6) == 1 { return (.ipv6, withUnsafeBytes(of: &a6) { Array($0) }) }
        return nil
    }

    /// `ADDRESS[/PREFIX]` as in virtual_ipaddress; reports errors.
    mutating func addressWithPrefix(_ t: Token, in what: String) -> (address: String, family: IPFamily, bytes: [UInt8], prefix: Int?)? {
        let parts = t.text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let ip = parseIP(String(parts[0])) else {
            error(t, "invalid address \(t.display) in '\(what)'; expected an IPv4 or IPv6 address with an optional /PREFIX")
            return nil
        }
        var prefix: Int?
        if parts.count == 2 {
            let max = ip.family == .ipv4 ? 32 : 128
            let p = parts[1]
            guard !p.isEmpty, p.count <= 3, p.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let v = Int(p), v <= max else {
                error(t, "invalid prefix length '/\(parts[1])' in \(t.display); expected 0...\(max) for an \(ip.family) address")
                return nil
            }
            prefix = v
        }
        return (String(parts[0]), ip.family, ip.bytes, prefix)
    }

    /// Whether a word of a virtual_ipaddress line starts the next address.
    func isAddressWord(_ t: Token) -> Bool {
        parseIP(String(t.text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)[0])) != nil
    }

    /// A Linux interface name (IFNAMSIZ 16 with the NUL; no '/', ':' or blanks; not '.' or '..').
    mutating func interfaceName(_ t: Token, for what: String) -> String? {
        let s = t.text
        let valid = (1...15).contains(s.utf8.count) && s != "." && s != ".."
            && !s.unicodeScalars.contains { $0 == "/" || $0 == ":" || $0 == "\0" || $0.properties.isWhitespace }
        if !valid {
            error(t, "invalid interface name \(t.display) for '\(what)'; expected 1 to 15 characters without '/', ':' or blanks")
            return nil
        }
        return s
    }

    /// Splits a command at blanks; single quotes group words (as keepalived). nil: unclosed quote.
    func splitCommand(_ text: String) -> [String]? {
        var out: [String] = []
        var current = ""
        var inWord = false, quoted = false
        for c in text {
            if quoted {
                if c == "'" { quoted = false } else { current.append(c) }
            } else if c == "'" {
                quoted = true
                inWord = true
            } else if c == " " || c == "\t" {
                if inWord { out.append(current) }
                current = ""
                inWord = false
            } else {
                current.append(c)
                inWord = true
            }
        }
        if quoted { return nil }
        if inWord { out.append(current) }
        return out
    }

    /// `USER [GROUP]`; the `:GROUP` forms (supplementary groups) are rejected.
    mutating func scriptUser(_ tokens: [Token], for what: String) -> ScriptUserSpec? {
        for t in tokens where t.text.hasPrefix(":") {
            error(t, "the ':GROUP' form of '\(what)' (supplementary groups) is not supported by keepstate; expected USER [GROUP]")
            return nil
        }
        guard let first = tokens.first, let user = nonEmpty(first, "user name for '\(what)'") else { return nil }
        var group: String?
        if tokens.count > 1 {
            guard let g = nonEmpty(tokens[1], "group name for '\(what)'") else { return nil }
            group = g
        }
        return ScriptUserSpec(user: user, group: group)
    }

    /// A command from the words of `script` (all words) or a notify (the first word only).
    mutating func command(_ words: [Token], keyword: Token, runAs: ScriptUserSpec?) -> ScriptCommandSpec? {
        var argv: [String] = []
        for w in words {
            guard let parts = splitCommand(w.text) else {
                error(w, "unclosed single quote in the command of '\(keyword.text)' \(w.display)")
                return nil
            }
            argv += parts
        }
        if argv.isEmpty || words.contains(where: { $0.text.unicodeScalars.contains("\0") }) {
            error(words.first ?? keyword, "empty command for '\(keyword.text)'; expected a program and its arguments")
            return nil
        }
        return ScriptCommandSpec(text: words.map(\.text).joined(separator: " "), arguments: argv, runAs: runAs,
                                 location: keyword.location)
    }

    /// `notify_* COMMAND [USER [GROUP]]` of an instance or a sync group.
    mutating func notify(_ f: [String: Statement], ok: inout Bool) -> NotifySpec {
        var n = NotifySpec()
        for key in ["notify_master", "notify_backup", "notify_fault", "notify_stop", "notify"] {
            guard let st = f[key], let first = st.args.first else { continue }
            var runAs: ScriptUserSpec?
            if st.args.count > 1 {
                runAs = scriptUser(Array(st.args.dropFirst()), for: key)
                if runAs == nil { ok = false; continue }
            }
            guard let c = command([first], keyword: st.keyword, runAs: runAs) else { ok = false; continue }
            switch key {
            case "notify_master": n.master = c
            case "notify_backup": n.backup = c
            case "notify_fault": n.fault = c
            case "notify_stop": n.stop = c
            default: n.generic = c
            }
        }
        return n
    }

    /// `garp_master_*` (instance, `prefix` "") or `vrrp_garp_master_*` (global, `prefix` "vrrp_").
    mutating func garp(_ f: [String: Statement], prefix: String, defaults: GARPSpec, ok: inout Bool) -> GARPSpec {
        let keys: [(String, ClosedRange<Int>, String, WritableKeyPath<GARPSpec, Int>)] = [
            ("garp_master_delay", 0...86400, " of seconds", \.masterDelay),
            ("garp_master_repeat", 1...1000, "", \.masterRepeat),
            ("garp_master_refresh", 0...86400, " of seconds", \.masterRefresh),
            ("garp_master_refresh_repeat", 1...1000, "", \.masterRefreshRepeat),
        ]
        var g = defaults
        for (key, range, unit, field) in keys {
            guard let st = f[prefix + key] else { continue }
            if let v = integer(st, range, unit: unit) { g[keyPath: field] = v } else { ok = false }
        }
        return g
    }

    // MARK: global_defs

    mutating func buildGlobals(_ f: [String: Statement]) -> VRRPGlobals {
        var g = VRRPGlobals()
        var ok = true
        if let st = f["vrrp_version"], let v = integer(st, 2...3) { g.version = VRRPProtocolVersion(rawValue: v) ?? .v2 }
        g.garp = garp(f, prefix: "vrrp_", defaults: GARPSpec(), ok: &ok)
        if let st = f["vrrp_garp_interval"], let v = decimal(st, 0...60) { g.garpInterval = v }
        if let st = f["vrrp_gna_interval"], let v = decimal(st, 0...60) { g.gnaInterval = v }
        g.checkUnicastSource = f["vrrp_check_unicast_src"] != nil
        if let st = f["v3_checksum_as_v2"], let v = bool(st) { g.v3ChecksumAsV2 = v }
        if let st = f["script_user"] { g.scriptUser = scriptUser(st.args, for: "script_user") }
        g.enableScriptSecurity = f["enable_script_security"] != nil
        return g
    }

    // MARK: vrrp_script

    mutating func buildScript(_ st: Statement) -> VRRPScriptSpec? {
        let f = fields(st)
        var ok = require(f, ["script"], in: st)
        var runAs: ScriptUserSpec?
        if let u = f["user"] {
            runAs = scriptUser(u.args, for: "user")
            if runAs == nil { ok = false }
        }
        var cmd: ScriptCommandSpec?
        if let s = f["script"] {
            cmd = command(s.args, keyword: s.keyword, runAs: runAs)
            if cmd == nil { ok = false }
        }
        var interval = VRRPScriptSpec.defaultInterval
        if let t = f["interval"] {
            if let v = decimal(t, 0.001...86400) { interval = v } else { ok = false }
        }
        var timeout: Double?
        if let t = f["timeout"] {
            if let v = decimal(t, 0.001...86400) { timeout = v } else { ok = false }
        }
        var weight = 0, reverse = false
        if let t = f["weight"], let w = t.arg {
            if let v = integer(w, "weight", -253...253) { weight = v } else { ok = false }
            if t.args.count > 1 {
                if t.args[1].text == "reverse" {
                    reverse = true
                } else {
                    error(t.args[1], "invalid option \(t.args[1].display) for 'weight'; expected 'reverse' or nothing")
                    ok = false
                }
            }
        }
        var rise = VRRPScriptSpec.defaultRise, fall = VRRPScriptSpec.defaultFall
        if let t = f["rise"] {
            if let v = integer(t, 1...1_000_000) { rise = v } else { ok = false }
        }
        if let t = f["fall"] {
            if let v = integer(t, 1...1_000_000) { fall = v } else { ok = false }
        }
        guard ok, let cmd, let nameTok = st.arg, let name = nonEmpty(nameTok, "vrrp_script name") else { return nil }
        return VRRPScriptSpec(name: name, command: cmd, interval: interval, timeout: timeout, weight: weight,
                              weightReverse: reverse, rise: rise, fall: fall, initFail: f["init_fail"] != nil,
                              location: st.keyword.location)
    }

    // MARK: list blocks of vrrp_instance

    /// Options of a virtual_ipaddress line that keepalived knows and keepstate rejects, with
    /// whether they take a value.
    static let unsupportedAddressOptions: [String: Bool] = [
        "brd": true, "broadcast": true, "scope": true, "peer": true, "preferred_lft": true, "track_group": true,
        "use_vmac": false, "home": false, "-nodad": false, "nodad": false, "mngtmpaddr": false,
        "noprefixroute": false, "autojoin": false, "no_track": false,
    ]

    mutating func virtualAddresses(_ st: Statement, excluded: Bool, ok: inout Bool) -> [(VirtualAddressSpec, bytes: [UInt8])] {
        var out: [(VirtualAddressSpec, bytes: [UInt8])] = []
        for line in st.lines {
            var i = 0
            while i < line.count {
                let t = line[i]
                i += 1
                guard let a = addressWithPrefix(t, in: st.name) else {
                    ok = false
                    while i < line.count && !isAddressWord(line[i]) { i += 1 }
                    continue
                }
                var dev: Token?, label: Token?
                while i < line.count && !isAddressWord(line[i]) {
                    let o = line[i]
                    switch o.text {
                    case "dev", "label":
                        guard i + 1 < line.count else {
                            error(o, "'\(o.text)' in '\(st.name)' expects a value, found end of line")
                            ok = false
                            i += 1
                            continue
                        }
                        let v = line[i + 1]
                        i += 2
                        if (o.text == "dev" ? dev : label) != nil {
                            error(o, "duplicate '\(o.text)' for address \(t.display)")
                            ok = false
                        } else if o.text == "dev" {
                            dev = v
                        } else {
                            label = v
                        }
                    default:
                        if let takesValue = Builder.unsupportedAddressOptions[o.text] {
                            error(o, "option '\(o.text)' of '\(st.name)' is not supported by keepstate; supported options: dev, label")
                            i += takesValue ? 2 : 1
                        } else {
                            error(o, "unexpected \(o.display) in '\(st.name)'; expected 'dev', 'label' or the next address")
                            i += 1
                        }
                        ok = false
                    }
                }
                var devName: String?
                if let dev {
                    devName = interfaceName(dev, for: "dev")
                    if devName == nil { ok = false }
                }
                var labelText: String?
                if let label {
                    if a.family == .ipv6 {
                        error(label, "'label' applies to IPv4 addresses only; \(a.address) is IPv6")
                        ok = false
                    } else if !(1...15).contains(label.text.utf8.count)
                        || label.text.unicodeScalars.contains(where: { $0 == "\0" || $0.properties.isWhitespace }) {
                        error(label, "invalid label \(label.display); expected 1 to 15 characters without blanks")
                        ok = false
                    } else {
                        labelText = label.text
                    }
                }
                out.append((VirtualAddressSpec(address: a.address, family: a.family, prefixLength: a.prefix, dev: devName,
                                               label: labelText, excluded: excluded, location: t.location), a.bytes))
            }
        }
        return out
    }

    /// `NAME [weight N [reverse|noreverse]]` entries of track_interface / track_script; a word
    /// that is not an option starts the next entry, so `{ eth1 eth2 }` is two entries.
    mutating func trackEntries(_ st: Statement, ok: inout Bool) -> [(name: Token, weight: Int?, reverse: Bool?)] {
        var out: [(name: Token, weight: Int?, reverse: Bool?)] = []
        for line in st.lines {
            var i = 0
            while i < line.count {
                let nameTok = line[i]
                i += 1
                var weight: Int?, reverse: Bool?
                while i < line.count {
                    let o = line[i]
                    if o.text == "weight" {
                        guard i + 1 < line.count else {
                            error(o, "'weight' in '\(st.name)' expects a value in -253...253, found end of line")
                            ok = false
                            i += 1
                            continue
                        }
                        if let v = integer(line[i + 1], "weight", -253...253) { weight = v } else { ok = false }
                        i += 2
                    } else if o.text == "reverse" || o.text == "noreverse" {
                        if weight == nil {
                            error(o, "'\(o.text)' in '\(st.name)' must follow 'weight N'")
                            ok = false
                        }
                        reverse = o.text == "reverse"
                        i += 1
                    } else {
                        break
                    }
                }
                out.append((nameTok, weight, reverse))
            }
        }
        return out
    }

    // MARK: vrrp_instance

    /// What the cross-instance checks need besides the model.
    struct InstanceExtras {
        var vridToken: Token?
        var addressBytes: [(VirtualAddressSpec, bytes: [UInt8])] = []
        var peerBytes: Set<[UInt8]> = []
    }

    /// Of two statements of the block `st`, the one given first and the one given after it.
    func ordered(_ a: Statement, _ b: Statement, in st: Statement) -> (first: Statement, second: Statement) {
        let ia = st.children.firstIndex { $0.keyword.location == a.keyword.location } ?? 0
        let ib = st.children.firstIndex { $0.keyword.location == b.keyword.location } ?? 0
        return ia < ib ? (a, b) : (b, a)
    }

    /// Parses `advert_int` to centiseconds; nil when not a multiple of 0.01 s (still a valid number).
    func centiseconds(_ text: String) -> (valid: Bool, cs: Int?) {
        let parts = text.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
        let digitsOnly = { (s: Substring) in !s.isEmpty && s.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } }
        guard text.utf8.count <= 32, parts.count == 1 || parts.count == 2, parts.allSatisfy(digitsOnly) else {
            return (false, nil)
        }
        let whole = parts[0].drop { $0 == "0" }
        guard whole.count <= 6 else { return (true, Int.max) }
        var cs = (Int(whole) ?? 0) * 100
        if parts.count == 2 {
            var frac = parts[1]
            while frac.last == "0" { frac = frac.dropLast() }
            if frac.count > 2 { return (true, nil) }
            cs += Int(frac.padding(toLength: 2, withPad: "0", startingAt: 0)) ?? 0
        }
        return (true, cs)
    }

    mutating func buildInstance(_ st: Statement, globals: VRRPGlobals, scripts: [String: VRRPScriptSpec],
                                scriptNames: [String]) -> (VRRPInstanceSpec, InstanceExtras)? {
        let f = fields(st)
        var ok = require(f, ["interface", "virtual_router_id", "virtual_ipaddress"], in: st)
        var extras = InstanceExtras()
        let instanceName = st.arg?.text ?? ""

        var state: HAState?
        if let t = f["state"]?.arg {
            if t.text == "MASTER" || t.text == "BACKUP" {
                state = HAState(rawValue: t.text)
            } else {
                error(t, "invalid state \(t.display); expected MASTER or BACKUP (upper case, as keepalived requires)")
                ok = false
            }
        }
        var interface: String?
        if let t = f["interface"]?.arg {
            interface = interfaceName(t, for: "interface")
            if interface == nil { ok = false }
        }
        var vrid: Int?
        if let t = f["virtual_router_id"] {
            vrid = integer(t, 1...255)
            extras.vridToken = t.arg
            if vrid == nil { ok = false }
        }
        var priority: Int?
        if let t = f["priority"] {
            priority = integer(t, 1...255)
            if priority == nil { ok = false }
        }
        var advertCS: (token: Token, cs: Int?)?
        if let t = f["advert_int"]?.arg {
            let r = centiseconds(t.text)
            if !r.valid || r.cs == 0 {
                error(t, "invalid value \(t.display) for 'advert_int'; expected a number of seconds above 0 (VRRPv2: 1...255 whole seconds, VRRPv3: 0.01...40.95)")
                ok = false
            } else {
                advertCS = (t, r.cs)
            }
        }
        if let a = f["nopreempt"], let b = f["preempt"] {
            let (earlier, later) = ordered(a, b, in: st)
            error(later.keyword, "'\(later.name)' contradicts '\(earlier.name)' at \(whereIs(earlier.keyword, from: later.keyword))")
            ok = false
        }
        let nopreempt = f["nopreempt"]
        var preemptDelay = 0.0
        if let t = f["preempt_delay"] {
            if let v = decimal(t, 0...1000) { preemptDelay = v } else { ok = false }
        }
        var explicitVersion: VRRPProtocolVersion?
        if let t = f["version"] {
            if let v = integer(t, 2...3) { explicitVersion = VRRPProtocolVersion(rawValue: v) } else { ok = false }
        }
        var accept = true
        if let a = f["accept"], let b = f["no_accept"] {
            let (earlier, later) = ordered(a, b, in: st)
            error(later.keyword, "'\(later.name)' contradicts '\(earlier.name)' at \(whereIs(earlier.keyword, from: later.keyword))")
            ok = false
        } else if f["no_accept"] != nil {
            accept = false
        }

        // Addresses.
        var vips: [VirtualAddressSpec] = []
        if let v = f["virtual_ipaddress"] {
            if v.lines.isEmpty {
                error(v.keyword, "'virtual_ipaddress' is empty; expected at least one address")
                ok = false
            }
            let parsed = virtualAddresses(v, excluded: false, ok: &ok)
            vips = parsed.map(\.0)
            extras.addressBytes += parsed
        }
        var evips: [VirtualAddressSpec] = []
        if let v = f["virtual_ipaddress_excluded"] {
            let parsed = virtualAddresses(v, excluded: true, ok: &ok)
            evips = parsed.map(\.0)
            extras.addressBytes += parsed
        }
        var family = vips.first?.family
        if let native = f["native_ipv6"] {
            if family == .ipv4, let first = vips.first {
                error(native.keyword, "'native_ipv6' contradicts the IPv4 virtual address \(first.address) at \(whereIs(first.location, from: native.keyword.location))")
                ok = false
            } else {
                family = .ipv6
            }
        }
        if let family, let first = vips.first {
            for a in vips where a.family != family {
                error(at: a.location, "virtual address \(a.address) is \(a.family) but \(first.address) is \(first.family); the addresses of 'virtual_ipaddress' must be of one family (put the others in virtual_ipaddress_excluded)")
                ok = false
            }
        }
        var seen: [[UInt8]: VirtualAddressSpec] = [:]
        for (a, bytes) in extras.addressBytes {
            if let first = seen[bytes] {
                error(at: a.location, "duplicate virtual address \(a.address); already given at \(whereIs(first.location, from: a.location))")
                ok = false
            } else {
                seen[bytes] = a
            }
        }

        // Source and unicast peers.
        let srcStatements = ["unicast_src_ip", "mcast_src_ip"].compactMap { f[$0] }
        if srcStatements.count == 2 {
            let (earlier, later) = ordered(srcStatements[0], srcStatements[1], in: st)
            error(later.keyword, "'\(later.name)' repeats '\(earlier.name)' at \(whereIs(earlier.keyword, from: later.keyword)); keepalived treats them as one setting, give one")
            ok = false
        }
        var source: (text: String, family: IPFamily, bytes: [UInt8])?
        if let s = srcStatements.first, let t = s.arg {
            if let ip = parseIP(t.text) {
                source = (t.text, ip.family, ip.bytes)
                if let family, ip.family != family {
                    error(t, "'\(s.name)' \(t.text) is \(ip.family) but the virtual addresses are \(family)")
                    ok = false
                }
            } else {
                error(t, "invalid IP address \(t.display) for '\(s.name)'; expected an IPv4 or IPv6 address")
                ok = false
            }
        }
        var peers: [UnicastPeerSpec] = []
        if let p = f["unicast_peer"] {
            if p.lines.isEmpty {
                error(p.keyword, "'unicast_peer' is empty; expected at least one address (omit the block for multicast)")
                ok = false
            }
            var peerSeen: [[UInt8]: Token] = [:]
            for line in p.lines {
                var i = 0
                while i < line.count {
                    let t = line[i]
                    i += 1
                    if t.text == "min_ttl" || t.text == "max_ttl" {
                        error(t, "option '\(t.text)' of 'unicast_peer' is not supported by keepstate")
                        ok = false
                        i += 1
                        continue
                    }
                    guard let ip = parseIP(t.text) else {
                        error(t, "invalid address \(t.display) in 'unicast_peer'; expected an IPv4 or IPv6 address")
                        ok = false
                        continue
                    }
                    if let family, ip.family != family {
                        error(t, "unicast peer \(t.text) is \(ip.family) but the virtual addresses are \(family)")
                        ok = false
                    } else if let first = peerSeen[ip.bytes] {
                        error(t, "duplicate unicast peer \(t.text); already given at \(whereIs(first, from: t))")
                        ok = false
                    } else if let source, source.bytes == ip.bytes {
                        error(t, "unicast peer \(t.text) is this router's own source address")
                        ok = false
                    } else {
                        peerSeen[ip.bytes] = t
                        peers.append(UnicastPeerSpec(address: t.text, location: t.location))
                        extras.peerBytes.insert(ip.bytes)
                    }
                }
            }
        }

        // Authentication.
        var auth = VRRPAuthenticationSpec.none
        if let a = f["authentication"] {
            let af = fields(a)
            ok = require(af, ["auth_type", "auth_pass"], in: a) && ok
            if let t = af["auth_type"]?.arg {
                if t.text == "AH" {
                    error(t, "'auth_type AH' (IPsec AH) is not supported by keepstate; use PASS or no authentication")
                    ok = false
                } else if t.text != "PASS" {
                    error(t, "invalid auth_type \(t.display); expected PASS (AH is not supported)")
                    ok = false
                }
            }
            if let t = af["auth_pass"]?.arg {
                let n = t.text.utf8.count
                if n == 0 || n > 8 || t.text.unicodeScalars.contains("\0") {
                    error(t, "invalid auth_pass \(t.display); expected 1 to 8 bytes (keepalived sends only the first 8 and truncates longer ones)")
                    ok = false
                } else if af["auth_type"]?.arg?.text == "PASS" {
                    auth = .password(t.text)
                }
            }
        }

        // Tracking.
        var trackInterfaces: [TrackInterfaceSpec] = []
        if let t = f["track_interface"] {
            for e in trackEntries(t, ok: &ok) {
                guard let name = interfaceName(e.name, for: "track_interface") else { ok = false; continue }
                trackInterfaces.append(TrackInterfaceSpec(interface: name, weight: e.weight ?? 0, reverse: e.reverse ?? false,
                                                          location: e.name.location))
            }
        }
        var trackScripts: [TrackScriptSpec] = []
        if let t = f["track_script"] {
            for e in trackEntries(t, ok: &ok) {
                guard let script = scripts[e.name.text] else {
                    if scriptNames.contains(e.name.text) { ok = false; continue } // declared but invalid
                    let known = scriptNames.isEmpty ? "none is declared" : "declared: " + scriptNames.joined(separator: ", ")
                    error(e.name, "unknown vrrp_script '\(e.name.text)' in track_script (\(known))")
                    ok = false
                    continue
                }
                trackScripts.append(TrackScriptSpec(script: script.name, weight: e.weight ?? script.weight,
                                                    reverse: e.reverse ?? script.weightReverse, location: e.name.location))
            }
        }

        // VMAC.
        var vmac: VMACSpec?
        if let u = f["use_vmac"] {
            var name: Token?
            switch u.args.count {
            case 0: break
            case 1: name = u.args[0]
            default:
                if u.args[0].text == "name" {
                    name = u.args[1]
                } else {
                    error(u.args[1], "unsupported 'use_vmac' option \(u.args[1].display); keepstate supports 'use_vmac [NAME]' (no MAC address, group or netlink_notify_msg)")
                    ok = false
                }
            }
            var vmacName: String?
            if let name {
                vmacName = interfaceName(name, for: "use_vmac")
                if vmacName == nil { ok = false }
            }
            vmac = VMACSpec(name: vmacName, xmitBase: f["vmac_xmit_base"] != nil)
        } else if let x = f["vmac_xmit_base"] {
            error(x.keyword, "'vmac_xmit_base' needs 'use_vmac' (keepalived ignores it without)")
            ok = false
        }

        let garpSpec = garp(f, prefix: "", defaults: globals.garp, ok: &ok)
        let notifySpec = notify(f, ok: &ok)
        if let s = f["smtp_alert"], bool(s) == nil { ok = false }
        if let d = f["debug"], integer(d, 0...4) == nil { ok = false }
        var checksumAsV2 = globals.v3ChecksumAsV2
        if let s = f["v3_checksum_as_v2"] {
            if let v = bool(s) { checksumAsV2 = v } else { ok = false }
        }

        // Version, interval, priority and state (keepalived's vrrp_complete_instance order).
        var version = explicitVersion ?? (family == .ipv6 ? .v3 : globals.version)
        if family == .ipv6, explicitVersion == .v2, let t = f["version"]?.arg {
            error(t, "VRRP version 2 carries IPv4 addresses only; this instance's addresses are IPv6 (use version 3)")
            ok = false
            version = .v3
        }
        if let a = f["authentication"], version == .v3 {
            error(a.keyword, "'authentication' is VRRPv2 only; this instance runs version 3 (keepalived ignores it)")
            ok = false
        }
        var advert = Int(VRRPInstanceSpec.defaultAdvertIntervalCentiseconds)
        if let (t, cs) = advertCS {
            switch version {
            case .v2:
                if let cs, cs % 100 == 0, (1...255).contains(cs / 100) {
                    advert = cs
                } else {
                    error(t, "advert_int \(t.text) is not valid for VRRP version 2; expected whole seconds in 1...255 (use version 3 for sub-second adverts)")
                    ok = false
                }
            case .v3:
                if let cs, (1...4095).contains(cs) {
                    advert = cs
                } else {
                    error(t, "advert_int \(t.text) is not valid for VRRP version 3; expected 0.01...40.95 seconds in steps of 0.01")
                    ok = false
                }
            }
        }
        let prio = priority ?? (state == .master ? Int(VRRPInstanceSpec.ownerPriority) : Int(VRRPInstanceSpec.defaultPriority))
        let owner = prio == Int(VRRPInstanceSpec.ownerPriority)
        let initial = state ?? (owner ? .master : .backup)
        if owner, state == .backup, let t = f["state"]?.arg {
            error(t, "state BACKUP contradicts priority 255: the address owner starts as MASTER (keepalived changes it silently)")
            ok = false
        }
        if let n = nopreempt {
            if owner {
                error(n.keyword, "'nopreempt' contradicts priority 255: the address owner always preempts (keepalived ignores it)")
                ok = false
            } else if initial == .master {
                error(n.keyword, "'nopreempt' needs state BACKUP: with state MASTER keepalived clears it")
                ok = false
            }
        }
        if preemptDelay > 0, let t = f["preempt_delay"]?.arg {
            if nopreempt != nil {
                error(t, "'preempt_delay' contradicts 'nopreempt' (keepalived ignores it)")
                ok = false
            } else if initial == .master {
                error(t, "'preempt_delay' needs state BACKUP: with state MASTER keepalived clears it")
                ok = false
            }
        }
        if owner {
            let weighted = trackInterfaces.filter { $0.weight != 0 }.map { ($0.location, "track_interface '\($0.interface)'", $0.weight) }
                + trackScripts.filter { $0.weight != 0 }.map { ($0.location, "track_script '\($0.script)'", $0.weight) }
            for (loc, what, w) in weighted {
                error(at: loc, "\(what) has weight \(w) but the instance has priority 255: the address owner's priority never changes; use weight 0 (FAULT on failure) or a lower priority")
                ok = false
            }
        }
        if family == .ipv6, peers.isEmpty, let first = vips.first, let bytes = extras.addressBytes.first?.bytes,
           !(bytes[0] == 0xfe && bytes[1] & 0xc0 == 0x80) {
            error(at: first.location, "the first IPv6 virtual address must be link-local (fe80::/10) for multicast VRRPv3 (RFC 5798 5.2.9); \(first.address) is not")
            ok = false
        }
        if let vmac, !peers.isEmpty, !vmac.xmitBase, let u = f["use_vmac"] {
            error(u.keyword, "'use_vmac' with 'unicast_peer' needs 'vmac_xmit_base' (keepalived sets it silently)")
            ok = false
        }
        if let interface {
            for a in vips + evips {
                guard let label = a.label else { continue }
                let dev = a.dev ?? (vmac == nil ? interface : nil)
                if let dev, label != dev && !label.hasPrefix(dev + ":") {
                    error(at: a.location, "label '\(label)' of \(a.address) must be '\(dev)' or start with '\(dev):'")
                    ok = false
                }
            }
        }

        guard ok, !instanceName.isEmpty, let interface, let vrid, let family else { return nil }
        let spec = VRRPInstanceSpec(
            name: instanceName, initialState: initial, interface: interface, virtualRouterID: UInt8(vrid),
            priority: UInt8(prio), advertIntervalCentiseconds: UInt16(advert), version: version, family: family,
            preempt: nopreempt == nil, preemptDelay: preemptDelay, acceptMode: accept, virtualAddresses: vips,
            excludedAddresses: evips, sourceAddress: source?.text, unicastPeers: peers,
            checkUnicastSource: globals.checkUnicastSource || f["check_unicast_src"] != nil, authentication: auth,
            trackInterfaces: trackInterfaces, trackScripts: trackScripts, vmac: vmac, garp: garpSpec, notify: notifySpec,
            v3ChecksumAsV2: checksumAsV2, location: st.keyword.location)
        return (spec, extras)
    }

    // MARK: everything together

    mutating func buildVRRP(globals: VRRPGlobals, scripts scriptStatements: [Statement],
                            instances instanceStatements: [(Statement, declared: Bool)],
                            syncGroups groupStatements: [(Statement, declared: Bool)])
        -> (scripts: [VRRPScriptSpec], instances: [VRRPInstanceSpec], syncGroups: [VRRPSyncGroupSpec]) {
        // Scripts (their own namespace).
        var scripts: [VRRPScriptSpec] = []
        var scriptByName: [String: VRRPScriptSpec] = [:]
        var scriptTokens: [String: Token] = [:]
        var scriptNames: [String] = []
        for st in scriptStatements {
            guard let nameTok = st.arg else { continue }
            let spec = buildScript(st)
            if let first = scriptTokens[nameTok.text] {
                error(nameTok, "duplicate vrrp_script name '\(nameTok.text)'; first declared at \(whereIs(first, from: nameTok))")
                continue
            }
            scriptTokens[nameTok.text] = nameTok
            scriptNames.append(nameTok.text)
            if let spec {
                scripts.append(spec)
                scriptByName[spec.name] = spec
            }
        }

        // Instances.
        var instances: [VRRPInstanceSpec] = []
        var extras: [InstanceExtras] = []
        var declaredInstances: [String] = []
        for (st, declared) in instanceStatements {
            let built = buildInstance(st, globals: globals, scripts: scriptByName, scriptNames: scriptNames)
            guard declared, let name = st.arg?.text else { continue }
            declaredInstances.append(name)
            if let built {
                instances.append(built.0)
                extras.append(built.1)
            }
        }

        // Across instances: one address in one place; VRID unique per interface and family
        // unless both use unicast with disjoint peers (keepalived's rule).
        var addressOwner: [[UInt8]: (VirtualAddressSpec, String)] = [:]
        for (n, inst) in instances.enumerated() {
            for (a, bytes) in extras[n].addressBytes {
                if let (first, other) = addressOwner[bytes] {
                    error(at: a.location, "virtual address \(a.address) is also used by vrrp_instance '\(other)' at \(whereIs(first.location, from: a.location))")
                } else {
                    addressOwner[bytes] = (a, inst.name)
                }
            }
            for m in 0..<n {
                let other = instances[m]
                guard other.interface == inst.interface, other.family == inst.family,
                      other.virtualRouterID == inst.virtualRouterID else { continue }
                let disjointUnicast = !inst.unicastPeers.isEmpty && !other.unicastPeers.isEmpty
                    && extras[n].peerBytes.isDisjoint(with: extras[m].peerBytes)
                if !disjointUnicast {
                    error(at: extras[n].vridToken?.location ?? inst.location,
                          "virtual_router_id \(inst.virtualRouterID) is already used on \(inst.interface) (\(inst.family)) by vrrp_instance '\(other.name)' at \(whereIs(other.location, from: inst.location))")
                }
            }
        }

        // Sync groups.
        var groups: [VRRPSyncGroupSpec] = []
        var memberOf: [String: (group: String, token: Token)] = [:]
        var instanceIndex: [String: Int] = [:]
        for (n, inst) in instances.enumerated() { instanceIndex[inst.name] = n }
        for (st, declared) in groupStatements {
            let f = fields(st)
            var ok = require(f, ["group"], in: st)
            let groupName = st.arg?.text ?? ""
            var members: [String] = []
            var memberTokens: [Token] = []
            if let g = f["group"] {
                let words = g.lines.flatMap { $0 }
                if words.isEmpty {
                    error(g.keyword, "'group' is empty; expected the names of vrrp_instance blocks")
                    ok = false
                }
                for t in words {
                    if let first = memberTokens.first(where: { $0.text == t.text }) {
                        error(t, "vrrp_instance '\(t.text)' is listed twice; first at \(whereIs(first, from: t))")
                        ok = false
                        continue
                    }
                    if !declaredInstances.contains(t.text) {
                        let known = declaredInstances.isEmpty ? "none is declared" : "declared: " + declaredInstances.joined(separator: ", ")
                        error(t, "unknown vrrp_instance '\(t.text)' in the group of vrrp_sync_group '\(groupName)' (\(known))")
                        ok = false
                        continue
                    }
                    if declared, let prior = memberOf[t.text] {
                        error(t, "vrrp_instance '\(t.text)' is already in vrrp_sync_group '\(prior.group)' at \(whereIs(prior.token, from: t)); an instance belongs to at most one sync group")
                        ok = false
                        continue
                    }
                    members.append(t.text)
                    memberTokens.append(t)
                }
            }
            let notifySpec = notify(f, ok: &ok)
            if let s = f["smtp_alert"], bool(s) == nil { ok = false }
            guard declared else { continue }
            for t in memberTokens { memberOf[t.text] = (groupName, t) }
            // keepalived ignores the weights of trackers of sync group members.
            for name in members {
                guard let n = instanceIndex[name] else { continue }
                instances[n].syncGroup = groupName
                let inst = instances[n]
                let weighted = inst.trackInterfaces.filter { $0.weight != 0 }.map { ($0.location, "track_interface '\($0.interface)'", $0.weight) }
                    + inst.trackScripts.filter { $0.weight != 0 }.map { ($0.location, "track_script '\($0.script)'", $0.weight) }
                for (loc, what, w) in weighted {
                    error(at: loc, "\(what) of vrrp_instance '\(name)' has weight \(w) but the instance is in vrrp_sync_group '\(groupName)': keepalived ignores tracking weights of sync group members; use weight 0 (FAULT on failure)")
                }
            }
            if ok {
                groups.append(VRRPSyncGroupSpec(name: groupName, members: members, notify: notifySpec,
                                                location: st.keyword.location))
            }
        }
        return (scripts, instances, groups)
    }
}
