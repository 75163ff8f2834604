public import ConntrackModel
public import NIOCore

/// One record of an UPDATES frame: a change of one conntrack, and for a forced
/// synchronization how old the carried timeout is.
public struct ConntrackRecord: Sendable, Hashable {
    public var update: ConntrackUpdate
    /// Upserts of a forced synchronization only: milliseconds between the sender's read of the
    /// carried timeout and the encoding of the record (at most `UInt32.max`). nil otherwise.
    public var activityAgeMilliseconds: UInt32?

    public init(_ update: ConntrackUpdate, activityAgeMilliseconds: UInt32? = nil) {
        self.update = update
        self.activityAgeMilliseconds = activityAgeMilliseconds
    }

    public var key: ConntrackKey { update.key }
}

/// A change waiting in a sync connection's send queue. Its activity stamp (forced
/// synchronization) is an instant of this node's clock; it becomes an age when encoded.
public struct OutgoingUpdate: Sendable, Hashable {
    public var update: ConntrackUpdate
    /// When the carried timeout was read (forced synchronization only).
    public var activity: NIODeadline?

    public init(_ update: ConntrackUpdate, activity: NIODeadline? = nil) {
        self.update = update
        self.activity = activity
    }

    /// The record to encode at `now`: the activity as an age (never negative; saturated at
    /// `UInt32.max` milliseconds). A delete never carries one.
    public func record(at now: NIODeadline) -> ConntrackRecord {
        guard let activity, case .upsert = update else { return ConntrackRecord(update) }
        let ms = max(0, (now - activity).nanoseconds / 1_000_000)
        return ConntrackRecord(update, activityAgeMilliseconds: UInt32(clamping: ms))
    }
}

/// The record codec of UPDATES frames (see docs/protocol.md, "Records").
///
///     u8 flags   bit 0 family (0 IPv4, 1 IPv6)   bit 1 delete   bit 2 reply tuple present
///                bit 3 mark present               bit 4 zone present
///                bit 5 activity age present (version 2)          bits 6-7 zero
///     u8 proto
///     original tuple: src addr, dst addr (4 or 16 bytes each), sport u16, dport u16
///     zone u16                     (bit 4)
///     -- a delete ends here --
///     reply tuple                  (bit 2; absent means the inverse of the original: no NAT)
///     tcp state u8                 (proto 6 only)
///     status varint, timeout varint (LEB128, at most 5 bytes, 32-bit values)
///     mark u32                     (bit 3)
///     activity age varint          (bit 5; milliseconds, LEB128, at most 5 bytes)
public enum RecordCodec {
    /// The most bytes one record can take (IPv6, NAT, mark, zone, 5-byte varints, age).
    public static let maximumRecordLength = 2 + 36 + 2 + 36 + 1 + 5 + 5 + 4 + 5

    static let familyBit: UInt8 = 1 << 0
    static let deleteBit: UInt8 = 1 << 1
    static let replyBit: UInt8 = 1 << 2
    static let markBit: UInt8 = 1 << 3
    static let zoneBit: UInt8 = 1 << 4
    static let activityBit: UInt8 = 1 << 5
    static let knownBits: UInt8 = 0b11_1111

    @inline(__always)
    static func writeTuple(_ t: ConntrackTuple, _ v6: Bool, _ w: inout RawWriter) {
        if v6 {
            w.u64(t.source.high); w.u64(t.source.low)
            w.u64(t.destination.high); w.u64(t.destination.low)
        } else {
            w.u32(t.source.ipv4); w.u32(t.destination.ipv4)
        }
        w.u16(t.sourcePort)
        w.u16(t.destinationPort)
    }

    @inline(__always)
    static func readTuple(_ v6: Bool, _ r: inout RawReader) throws(SyncProtocolError) -> ConntrackTuple {
        if v6 {
            try r.need(36, "tuple")
            let sh = try r.u64("tuple"), sl = try r.u64("tuple")
            let dh = try r.u64("tuple"), dl = try r.u64("tuple")
            return ConntrackTuple(
                source: IPAddressBits(high: sh, low: sl), destination: IPAddressBits(high: dh, low: dl),
                sourcePort: try r.u16("tuple"), destinationPort: try r.u16("tuple"))
        }
        try r.need(12, "tuple")
        let s = try r.u32("tuple"), d = try r.u32("tuple")
        return ConntrackTuple(
            source: IPAddressBits(ipv4: s), destination: IPAddressBits(ipv4: d),
            sourcePort: try r.u16("tuple"), destinationPort: try r.u16("tuple"))
    }

    /// Writes one record at the writer's position. The writer must have
    /// `maximumRecordLength` bytes of room.
    @inline(__always)
    static func write(_ record: ConntrackRecord, _ w: inout RawWriter) {
        switch record.update {
        case .upsert(let c):
            let v6 = c.family == .ipv6
            let nat = c.reply != c.original.inverted
            var flags: UInt8 = v6 ? familyBit : 0
            if nat { flags |= replyBit }
            if c.mark != 0 { flags |= markBit }
            if c.zone != 0 { flags |= zoneBit }
            if record.activityAgeMilliseconds != nil { flags |= activityBit }
            w.u8(flags)
            w.u8(c.proto.rawValue)
            writeTuple(c.original, v6, &w)
            if c.zone != 0 { w.u16(c.zone) }
            if nat { writeTuple(c.reply, v6, &w) }
            if c.proto == .tcp { w.u8(c.tcpState.rawValue) }
            w.varint32(c.status.rawValue)
            w.varint32(c.timeout)
            if c.mark != 0 { w.u32(c.mark) }
            if let age = record.activityAgeMilliseconds { w.varint32(age) }
        case .delete(let k):
            let v6 = k.family == .ipv6
            var flags: UInt8 = deleteBit | (v6 ? familyBit : 0)
            if k.zone != 0 { flags |= zoneBit }
            w.u8(flags)
            w.u8(k.proto.rawValue)
            writeTuple(k.original, v6, &w)
            if k.zone != 0 { w.u16(k.zone) }
        }
    }

    @inline(__always)
    static func read(_ r: inout RawReader) throws(SyncProtocolError) -> ConntrackRecord {
        let flags = try r.u8("record flags")
        guard flags & ~knownBits == 0 else {
            throw .invalidField(field: "record flags", reason: "unknown bits 0x\(String(flags & ~knownBits, radix: 16))")
        }
        let proto = IPProtocolNumber(rawValue: try r.u8("record protocol"))
        let v6 = flags & familyBit != 0
        let family: AddressFamily = v6 ? .ipv6 : .ipv4
        let original = try readTuple(v6, &r)
        let zone: UInt16 = flags & zoneBit != 0 ? try r.u16("zone") : 0
        if flags & deleteBit != 0 {
            guard flags & (replyBit | markBit | activityBit) == 0 else {
                throw .invalidField(field: "record flags", reason: "a delete carries no reply tuple, mark or activity age")
            }
            return ConntrackRecord(.delete(ConntrackKey(family: family, proto: proto, original: original, zone: zone)))
        }
        let reply = flags & replyBit != 0 ? try readTuple(v6, &r) : original.inverted
        var state = TCPState.none
        if proto == .tcp {
            let raw = try r.u8("tcp state")
            guard let s = TCPState(rawValue: raw) else {
                throw .invalidField(field: "tcp state", reason: "\(raw) is not a TCP conntrack state")
            }
            state = s
        }
        let status = try r.varint32("status")
        let timeout = try r.varint32("timeout")
        let mark: UInt32 = flags & markBit != 0 ? try r.u32("mark") : 0
        let age: UInt32? = flags & activityBit != 0 ? try r.varint32("activity age") : nil
        return ConntrackRecord(
            .upsert(Conntrack(
                family: family, proto: proto, original: original, reply: reply, tcpState: state,
                status: ConntrackStatus(rawValue: status), timeout: timeout, mark: mark, zone: zone)),
            activityAgeMilliseconds: age)
    }
}

extension ByteBuffer {
    /// Appends one record (no frame header). Returns the bytes written.
    @discardableResult
    public mutating func writeConntrackRecord(_ record: ConntrackRecord) -> Int {
        writeWithUnsafeMutableBytes(minimumWritableBytes: RecordCodec.maximumRecordLength) { ptr in
            var w = RawWriter(ptr)
            RecordCodec.write(record, &w)
            return w.index
        }
    }

    /// Appends one record without an activity age.
    @discardableResult
    public mutating func writeConntrackUpdate(_ update: ConntrackUpdate) -> Int {
        writeConntrackRecord(ConntrackRecord(update))
    }

    /// Decodes every record in the readable bytes and appends them to `records`. Consumes the
    /// bytes only when all of them decode: on error nothing is appended and nothing is consumed,
    /// so a bad frame is never half-applied.
    public mutating func readConntrackRecords(into records: inout [ConntrackRecord]) throws(SyncProtocolError) {
        let start = records.count
        let result: Result<Int, SyncProtocolError> = withUnsafeReadableBytes { ptr in
            var r = RawReader(ptr)
            do throws(SyncProtocolError) {
                while r.remaining > 0 {
                    records.append(try RecordCodec.read(&r))
                }
                return .success(r.index)
            } catch {
                return .failure(error)
            }
        }
        switch result {
        case .success(let n):
            moveReaderIndex(forwardBy: n)
        case .failure(let e):
            records.removeSubrange(start...)
            throw e
        }
    }

    /// As `readConntrackRecords`, keeping only the changes (activity ages are dropped).
    public mutating func readConntrackUpdates(into updates: inout [ConntrackUpdate]) throws(SyncProtocolError) {
        var records: [ConntrackRecord] = []
        try readConntrackRecords(into: &records)
        updates.append(contentsOf: records.lazy.map(\.update))
    }
}
