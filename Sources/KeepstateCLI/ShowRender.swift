public import Daemon
import Foundation
import SyncEngine

/// What each `show` command prints, as pure functions of the daemon's reply: the commands only
/// send the request and write the result. The golden tests (Tests/KeepstateCLITests/Golden)
/// hold these outputs for fixed replies. (`state` and `conntracks` are in Operate.swift.)
extension ShowRender {
    /// What an `ok` reply lacks for `command`, if anything: a daemon of another version that
    /// answers without the part this client renders (the output would otherwise claim "no VRRP
    /// configured" or print nothing).
    public static func missing(_ reply: ControlReply, for command: ControlCommand) -> String? {
        switch command {
        case .showState where reply.state == nil: "state"
        case .showVRRP where reply.vrrp == nil: "vrrp"
        case .showPeer where reply.peers == nil: "peers"
        case .showConntracks where reply.conntracks == nil: "conntracks"
        default: nil
        }
    }

    /// Standard output of a `show` command for an `ok` reply: the indented tree, ending with a
    /// newline.
    public static func human(_ reply: ControlReply, for command: ControlCommand) -> String {
        let text: String
        switch command {
        case .showState:
            text = reply.state.map(state) ?? "show-state: the reply holds no state"
        case .showPeer:
            let peers = reply.peers ?? []
            text = peers.isEmpty ? "show-ha-fp-conntrack-peer: no VRF here syncs with a peer"
                : peers.map { ShowPeer.render($0).trimmingSuffix("\n") }.joined(separator: "\n\n")
        case .showConntracks:
            let counts = reply.conntracks ?? []
            text = counts.isEmpty ? "show-conntracks: no VRF" : counts.map(conntracks).joined(separator: "\n\n")
        case .showVRRP:
            text = vrrp(reply.vrrp ?? VRRPReport())
        case .setState, .sync, .reload:
            text = reply.message ?? ""
        }
        return text.isEmpty ? "" : text + "\n"
    }

    /// Standard output with `--json`: the reply as one line of JSON, keys sorted.
    public static func json(_ reply: ControlReply) -> String {
        String(decoding: reply.encodedLine(), as: UTF8.self)
    }

    public static func vrrp(_ r: VRRPReport) -> String {
        guard !r.instances.isEmpty || !r.syncGroups.isEmpty else {
            return "show-vrrp: no VRRP configured (the configuration has no vrrp_instance)"
        }
        var out = "show-vrrp"
        for i in r.instances { out += "\n" + instance(i) }
        for g in r.syncGroups {
            out += "\n    vrrp_sync_group \(g.name)"
            out += "\n        state \(g.state)"
            for m in g.members { out += "\n        member \(m.name) \(m.state)" }
        }
        return out
    }

    static func instance(_ i: VRRPInstanceReport) -> String {
        var lines: [String] = []
        func add(_ depth: Int, _ text: String) { lines.append(String(repeating: " ", count: 4 * depth) + text) }
        add(1, "vrrp_instance \(i.name)")
        add(2, "interface \(i.interface)")
        add(2, "vrid \(i.vrid) version \(i.version) \(i.family)")
        add(2, "state \(i.state)")
        if let since = i.since {
            add(2, "since \(tenths(since)) s, \(i.transitions) transition(s)")
        } else {
            add(2, "since start, \(i.transitions) transition(s)")
        }
        if let why = i.lastReason { add(2, "last-reason \(why)") }
        add(2, "priority \(i.configuredPriority) configured, \(i.trackedPriority) after tracking, \(i.effectivePriority) advertised"
            + (i.addressOwner ? " (address owner)" : ""))
        add(2, "primary-address \(i.primaryAddress)")
        if let m = i.masterAddress {
            add(2, "master \(m)" + (i.state == "master" && m == i.primaryAddress ? " (this node)" : ""))
        } else {
            add(2, "master unknown (no advert heard)")
        }
        if let a = i.lastAdvert {
            add(2, "last-advert from \(a.source) priority \(a.priority) interval \(seconds(a.advertInterval)) s, \(tenths(a.secondsAgo)) s ago")
        }
        add(2, "advert-interval \(seconds(i.advertInterval)) s (master's \(seconds(i.masterAdvertInterval)) s)")
        add(2, i.preempt ? "preempt on, delay \(seconds(i.preemptDelay)) s" : "preempt off (nopreempt)")
        if !i.unicastPeers.isEmpty { add(2, "unicast-peers \(i.unicastPeers.joined(separator: " "))") }
        add(2, "virtual-addresses")
        for a in i.virtualAddresses {
            var line = "\(a.address)/\(a.prefixLength) dev \(a.dev)"
            if let l = a.label { line += " label \(l)" }
            if a.excluded { line += " excluded" }
            line += " " + (a.held.map { $0 ? "held" : "not-held" } ?? "unknown")
            add(3, line)
        }
        if !i.trackInterfaces.isEmpty {
            add(2, "track-interfaces")
            for t in i.trackInterfaces { add(3, track(t, failed: "down")) }
        }
        if !i.trackScripts.isEmpty {
            add(2, "track-scripts")
            for t in i.trackScripts { add(3, track(t, failed: "failed")) }
        }
        if let f = i.fault { add(2, "fault \(f)") }
        let h = i.failbackHold
        if h.held {
            add(2, "failback-hold held \(tenths(h.heldFor ?? 0)) s, at most \(seconds(h.bound)) s" + (h.settling ? " (settling as master)" : ""))
        } else {
            add(2, "failback-hold " + (h.expired ? "expired" : "not held"))
        }
        if !h.vrfsBehind.isEmpty { add(3, "vrfs-behind \(h.vrfsBehind.joined(separator: " "))") }
        if let why = h.reason { add(3, "reason \(why)") }
        if let g = i.syncGroup { add(2, "sync-group \(g)") }
        let s = i.statistics
        add(2, "statistics")
        add(3, "adverts-sent \(s.advertsSent)")
        add(3, "advert-send-errors \(s.advertSendErrors)")
        add(3, "adverts-received \(s.advertsReceived)")
        add(3, "dropped \(s.drops.values.reduce(0, +))")
        for reason in s.drops.keys.sorted() { add(4, "\(reason) \(s.drops[reason]!)") }
        add(3, "became-master \(s.becameMaster)")
        add(3, "announcements-sent \(s.announcementsSent)")
        add(3, "address-errors \(s.addressErrors)")
        return lines.joined(separator: "\n")
    }

    static func track(_ t: VRRPTrackReport, failed: String) -> String {
        var line = "\(t.name) \(t.status) weight \(t.weight)"
        if t.reverse { line += " reverse" }
        if t.weight == 0 {
            line += t.status == failed ? ": FAULT" : ": fault when \(failed)"
        } else {
            line += ": priority \(t.delta >= 0 ? "+" : "")\(t.delta)"
        }
        return line
    }

    /// 120, 0.1, 1.25: seconds as configured.
    static func seconds(_ x: Double) -> String {
        if x == x.rounded() && abs(x) < 1e15 { return String(Int(x)) }
        var s = String(format: "%.3f", x)
        while s.hasSuffix("0") { s.removeLast() }
        return s
    }

    /// Elapsed seconds to a tenth.
    static func tenths(_ x: Double) -> String { String(format: "%.1f", x) }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String {
        var s = self
        while s.hasSuffix(suffix) { s.removeLast(suffix.count) }
        return s
    }
}
