import CNetfilterConntrack
public import ConntrackModel
import Glibc

/// Why a ctnetlink operation failed.
public struct NetfilterError: Error, Sendable, Equatable, CustomStringConvertible {
    public var operation: String
    public var errno: Int32

    public var description: String {
        "\(operation): \(String(cString: strerror(errno))) (errno \(errno))"
    }

    /// The kernel dropped events because the socket's receive buffer overflowed.
    public var isOverrun: Bool { errno == ENOBUFS }
}

/// What happened to a conntrack, as an event reports it.
public enum ConntrackEventKind: UInt8, Sendable, Equatable {
    case new = 0
    case update = 1
    case destroy = 2
}

public struct ConntrackEvent: Sendable, Equatable {
    public var kind: ConntrackEventKind
    public var conntrack: Conntrack
}

/// One ctnetlink socket, in one network namespace: dumps, batched writes, events.
///
/// Not thread-safe: one owner uses it at a time (the kernel dataplane gives each socket to one
/// thread). The socket belongs to the namespace it was opened in for its whole life.
public final class ConntrackNetlink: @unchecked Sendable {
    /// Dumps and events.
    private let handle: OpaquePointer
    /// Writes, on a socket of their own (see `ks_ct_open_writer`), opened at the first write.
    private var writer: OpaquePointer?
    public let netnsPath: String?

    /// Opens a socket in the namespace at `netnsPath` (e.g. `/run/netns/NAME`; nil for the
    /// process's own), subscribed to new, update and destroy events when `events` is set.
    public init(netnsPath: String? = nil, events: Bool = false) throws(NetfilterError) {
        let groups: UInt32 = events ? 0x7 : 0   // NF_NETLINK_CONNTRACK_NEW | UPDATE | DESTROY
        let h: OpaquePointer? = netnsPath.map { path in path.withCString { ks_ct_open($0, groups) } } ?? ks_ct_open(nil, groups)
        guard let h else { throw NetfilterError(operation: "open ctnetlink\(netnsPath.map { " in \($0)" } ?? "")", errno: Glibc.errno) }
        handle = h
        self.netnsPath = netnsPath
    }

    deinit {
        ks_ct_close(handle)
        if let writer { ks_ct_close(writer) }
    }

    private func writeHandle() throws(NetfilterError) -> OpaquePointer {
        if let writer { return writer }
        let w: OpaquePointer? = netnsPath.map { p in p.withCString { ks_ct_open_writer($0) } } ?? ks_ct_open_writer(nil)
        guard let w else { throw NetfilterError(operation: "open ctnetlink writer", errno: Glibc.errno) }
        writer = w
        return w
    }

    /// Sets `net.netfilter.nf_conntrack_events` to 1 in a namespace (nil: this process's) so that
    /// every new conntrack reports its updates and deletion, and returns the previous value.
    /// With the kernel's default 2, conntracks created while nobody listens report nothing later.
    @discardableResult
    public static func enableEvents(netnsPath: String?) throws(NetfilterError) -> Int {
        let r = netnsPath.map { p in p.withCString { ks_ct_enable_events($0) } } ?? ks_ct_enable_events(nil)
        guard r >= 0 else { throw NetfilterError(operation: "set nf_conntrack_events", errno: Glibc.errno) }
        return Int(r)
    }

    public var fileDescriptor: Int32 { ks_ct_fd(handle) }

    /// An event socket: with `false`, only destroy events arrive; with `true`, all three again.
    /// (The kernel still builds creation and update events while any socket of the host, in any
    /// namespace, listens to them; this socket no longer reads them.)
    public func setCreationAndUpdateEvents(_ on: Bool) throws(NetfilterError) {
        guard ks_ct_set_event_groups(handle, on ? 1 : 0) == 0 else {
            throw NetfilterError(operation: on ? "join conntrack event groups" : "leave conntrack event groups", errno: Glibc.errno)
        }
    }

    /// Raises the receive buffer (events are lost under load with the default size).
    public func setReceiveBuffer(bytes: Int) throws(NetfilterError) {
        guard ks_ct_set_receive_buffer(handle, Int32(clamping: bytes)) == 0 else {
            throw NetfilterError(operation: "set receive buffer", errno: Glibc.errno)
        }
    }

    public func setNonBlocking() throws(NetfilterError) {
        guard ks_ct_set_nonblocking(handle) == 0 else { throw NetfilterError(operation: "set non-blocking", errno: Glibc.errno) }
    }

    private final class Collector {
        enum Keep { case conntracks, events, liberal }
        var conntracks: [Conntrack] = []
        var events: [ConntrackEvent] = []
        var liberal: Set<ConntrackKey> = []
        let keep: Keep
        init(_ keep: Keep) { self.keep = keep }
    }

    private static let sink: ks_ct_sink = { cts, count, context in
        guard let cts, let context else { return }
        let collector = Unmanaged<Collector>.fromOpaque(context).takeUnretainedValue()
        for i in 0..<Int(count) {
            let c = ConntrackNetlink.conntrack(cts[i])
            switch collector.keep {
            case .events:
                collector.events.append(ConntrackEvent(kind: ConntrackEventKind(rawValue: cts[i].event) ?? .update, conntrack: c))
            case .conntracks:
                collector.conntracks.append(c)
            case .liberal:
                let flag = UInt8(KS_TCP_FLAG_BE_LIBERAL)
                if cts[i].tcp_flags_orig & flag != 0 && cts[i].tcp_flags_repl & flag != 0 { collector.liberal.insert(c.key) }
            }
        }
    }

    /// The TCP conntracks whose window tracking is liberal in both directions (a diagnostic:
    /// every held or committed TCP entry must be).
    /// `throughLibrary`: read with libnetfilter_conntrack's own reader instead of the direct
    /// one (a reference for tests).
    public func beLiberalKeys(throughLibrary: Bool = false) throws(NetfilterError) -> Set<ConntrackKey> {
        let collector = Collector(.liberal)
        let r = withExtendedLifetime(collector) {
            (throughLibrary ? ks_ct_dump_library : ks_ct_dump)(handle, 0, Self.sink, Unmanaged.passUnretained(collector).toOpaque())
        }
        guard r == 0 else { throw NetfilterError(operation: "dump", errno: Glibc.errno) }
        return collector.liberal
    }

    /// Every conntrack of the table (of one family, or both). The messages are parsed directly
    /// (`ks_parse.c`); `throughLibrary` reads them with libnetfilter_conntrack's reader instead
    /// (the reference the tests compare with).
    public func dump(family: AddressFamily? = nil, throughLibrary: Bool = false) throws(NetfilterError) -> [Conntrack] {
        let collector = Collector(.conntracks)
        let r = withExtendedLifetime(collector) {
            (throughLibrary ? ks_ct_dump_library : ks_ct_dump)(handle, family?.rawValue ?? 0, Self.sink,
                                                                Unmanaged.passUnretained(collector).toOpaque())
        }
        guard r == 0 else { throw NetfilterError(operation: "dump", errno: Glibc.errno) }
        return collector.conntracks
    }

    private var nextSequence: UInt32 = 1

    /// Reads the conntracks `keys` name, with batched get requests (no dump): those found (in
    /// no particular order), and the keys the kernel reported gone (ENOENT). A key in neither
    /// was not answered (one second for the whole call) or refused. Use a socket of its own for this (one
    /// opened without events, used for nothing else).
    public func get(_ keys: [ConntrackKey]) throws(NetfilterError) -> (found: [Conntrack], gone: [ConntrackKey]) {
        guard !keys.isEmpty else { return ([], []) }
        let flats = keys.map { Self.flat(Conntrack(family: $0.family, proto: $0.proto, original: $0.original, timeout: 0, zone: $0.zone)) }
        let collector = Collector(.conntracks)
        var errors = [Int32](repeating: 0, count: flats.count)
        let base = nextSequence
        nextSequence &+= UInt32(truncatingIfNeeded: flats.count)
        let r = withExtendedLifetime(collector) {
            flats.withUnsafeBufferPointer { cts in
                errors.withUnsafeMutableBufferPointer {
                    ks_ct_get(handle, cts.baseAddress, Int32(cts.count), base, Self.sink,
                              Unmanaged.passUnretained(collector).toOpaque(), $0.baseAddress)
                }
            }
        }
        guard r >= 0 else { throw NetfilterError(operation: "get", errno: Glibc.errno) }
        return (collector.conntracks, keys.indices.filter { errors[$0] == ENOENT }.map { keys[$0] })
    }

    /// Reads the events waiting on a non-blocking event socket (up to 1,024 datagrams a call,
    /// with recvmmsg, parsed directly); `throughLibrary`: with libnetfilter_conntrack's reader,
    /// one datagram a system call (the tests' reference).
    public func readEvents(throughLibrary: Bool = false) throws(NetfilterError) -> [ConntrackEvent] {
        let collector = Collector(.events)
        let r = withExtendedLifetime(collector) {
            (throughLibrary ? ks_ct_read_events_library : ks_ct_read_events)(handle, Self.sink,
                                                                              Unmanaged.passUnretained(collector).toOpaque())
        }
        guard r >= 0 else { throw NetfilterError(operation: "read events", errno: Glibc.errno) }
        return collector.events
    }

    public struct WriteResult: Sendable, Equatable {
        /// Each message's errno, in the order given (0: accepted).
        public var errors: [Int32]
        /// Messages the kernel refused.
        public var rejected: Int { errors.reduce(0) { $0 + ($1 == 0 ? 0 : 1) } }
        /// errno of the first refusal, 0 if none.
        public var firstError: Int32 { errors.first { $0 != 0 } ?? 0 }
    }

    /// Creates conntracks in batched netlink messages; an entry that exists is refused with
    /// EEXIST (see `upsert`). TCP entries get the be-liberal window flags when `beLiberal` is
    /// set, so mid-stream packets pass.
    public func create(_ conntracks: [Conntrack], beLiberal: Bool = true) throws(NetfilterError) -> WriteResult {
        try write(conntracks.map(Self.flat), op: Int32(KS_OP_CREATE), beLiberal: beLiberal, what: "create")
    }

    /// Creates a conntrack related to the existing conntrack `master` names, as an ALG helper's
    /// expectation makes one when it matches (an FTP data connection, say): the kernel links the
    /// two and sets `EXPECTED` on the new one. Keepstate never syncs such conntracks; this is for
    /// testing that without a helper module and its protocol.
    public func createRelated(_ c: Conntrack, master: ConntrackKey, beLiberal: Bool = false) throws(NetfilterError) -> WriteResult {
        let w = try writeHandle()
        var flat = Self.flat(c)
        var m = Self.flat(Conntrack(family: master.family, proto: master.proto, original: master.original, timeout: 0, zone: master.zone))
        var error: Int32 = 0
        let r = ks_ct_create_related(w, &flat, &m, beLiberal ? 1 : 0, &error)
        guard r >= 0 else { throw NetfilterError(operation: "create related", errno: Glibc.errno) }
        return WriteResult(errors: [error])
    }

    /// Changes existing conntracks' TCP state, timeout and mark (the kernel refuses to change NAT
    /// and status bits of an existing entry); with `beLiberal`, TCP entries also get the
    /// be-liberal window flags.
    public func update(_ conntracks: [Conntrack], beLiberal: Bool = false) throws(NetfilterError) -> WriteResult {
        try write(conntracks.map(Self.flat), op: Int32(KS_OP_UPDATE), beLiberal: beLiberal, what: "update")
    }

    /// Sets existing conntracks' timeouts (each entry's `timeout`) and changes nothing else, so
    /// that a TCP state the kernel reached since is kept.
    public func setTimeouts(_ conntracks: [Conntrack]) throws(NetfilterError) -> WriteResult {
        try write(conntracks.map(Self.flat), op: Int32(KS_OP_TIMEOUT), beLiberal: false, what: "set timeout")
    }

    /// Creates what is missing and updates what exists: a create, then an update of the entries
    /// the create found already there.
    public func upsert(_ conntracks: [Conntrack], beLiberal: Bool = true) throws(NetfilterError) -> WriteResult {
        var result = try create(conntracks, beLiberal: beLiberal)
        let existing = result.errors.indices.filter { result.errors[$0] == EEXIST }
        guard !existing.isEmpty else { return result }
        // An entry that exists may be this node's own, with a window the peer's packets do not
        // fit: it gets the be-liberal flags too, or mid-stream segments are dropped as invalid.
        let second = try update(existing.map { conntracks[$0] }, beLiberal: beLiberal)
        for (i, e) in zip(existing, second.errors) { result.errors[i] = e }
        return result
    }

    /// Deletes conntracks by key, in batched netlink messages.
    public func delete(_ keys: [ConntrackKey]) throws(NetfilterError) -> WriteResult {
        try write(keys.map { Self.flat(Conntrack(family: $0.family, proto: $0.proto, original: $0.original, timeout: 0, zone: $0.zone)) },
                  op: Int32(KS_OP_DELETE), beLiberal: false, what: "delete")
    }

    private func write(_ flats: [ks_ct], op: Int32, beLiberal: Bool, what: String) throws(NetfilterError) -> WriteResult {
        let w = try writeHandle()
        var errors = [Int32](repeating: 0, count: flats.count)
        let r = flats.withUnsafeBufferPointer { cts in
            errors.withUnsafeMutableBufferPointer { ks_ct_write(w, cts.baseAddress, Int32(cts.count), op, beLiberal ? 1 : 0, $0.baseAddress) }
        }
        guard r >= 0 else { throw NetfilterError(operation: what, errno: Glibc.errno) }
        return WriteResult(errors: errors)
    }

    // MARK: conversion

    private static func address(_ bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                                          UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8), v6: Bool) -> IPAddressBits {
        withUnsafeBytes(of: bytes) { raw in
            if !v6 {
                return IPAddressBits(ipv4: UInt32(raw[0]) << 24 | UInt32(raw[1]) << 16 | UInt32(raw[2]) << 8 | UInt32(raw[3]))
            }
            var hi: UInt64 = 0, lo: UInt64 = 0
            for i in 0..<8 { hi = hi << 8 | UInt64(raw[i]) }
            for i in 8..<16 { lo = lo << 8 | UInt64(raw[i]) }
            return IPAddressBits(high: hi, low: lo)
        }
    }

    private static func store(_ a: IPAddressBits, v6: Bool, into bytes: inout (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                                                                               UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)) {
        withUnsafeMutableBytes(of: &bytes) { raw in
            if !v6 {
                let v = a.ipv4
                raw[0] = UInt8(v >> 24); raw[1] = UInt8(v >> 16 & 0xFF); raw[2] = UInt8(v >> 8 & 0xFF); raw[3] = UInt8(v & 0xFF)
                return
            }
            for i in 0..<8 { raw[i] = UInt8(truncatingIfNeeded: a.high >> UInt64(56 - 8 * i)) }
            for i in 0..<8 { raw[8 + i] = UInt8(truncatingIfNeeded: a.low >> UInt64(56 - 8 * i)) }
        }
    }

    static func conntrack(_ f: ks_ct) -> Conntrack {
        let v6 = f.family == 6
        let original = ConntrackTuple(
            source: address(f.orig_src, v6: v6), destination: address(f.orig_dst, v6: v6),
            sourcePort: f.orig_sport, destinationPort: f.orig_dport)
        let reply = ConntrackTuple(
            source: address(f.repl_src, v6: v6), destination: address(f.repl_dst, v6: v6),
            sourcePort: f.repl_sport, destinationPort: f.repl_dport)
        let proto = IPProtocolNumber(rawValue: f.proto)
        return Conntrack(
            family: v6 ? .ipv6 : .ipv4, proto: proto, original: original, reply: reply,
            tcpState: proto == .tcp ? TCPState(rawValue: f.tcp_state) ?? .none : .none,
            status: ConntrackStatus(rawValue: f.status), timeout: f.timeout, mark: f.mark, zone: f.zone)
    }

    static func flat(_ c: Conntrack) -> ks_ct {
        var f = ks_ct()
        let v6 = c.family == .ipv6
        f.family = v6 ? 6 : 4
        f.proto = c.proto.rawValue
        f.tcp_state = c.tcpState.rawValue
        f.zone = c.zone
        f.orig_sport = c.original.sourcePort
        f.orig_dport = c.original.destinationPort
        f.repl_sport = c.reply.sourcePort
        f.repl_dport = c.reply.destinationPort
        f.status = c.status.rawValue
        f.timeout = c.timeout
        f.mark = c.mark
        store(c.original.source, v6: v6, into: &f.orig_src)
        store(c.original.destination, v6: v6, into: &f.orig_dst)
        store(c.reply.source, v6: v6, into: &f.repl_src)
        store(c.reply.destination, v6: v6, into: &f.repl_dst)
        return f
    }
}
