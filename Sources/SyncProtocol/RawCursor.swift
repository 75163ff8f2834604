/// A bounds-checked big-endian reader over raw bytes. Every read checks the remaining length
/// and throws `SyncProtocolError.truncated` instead of reading past the end.
@usableFromInline
struct RawReader {
    @usableFromInline let base: UnsafeRawBufferPointer
    @usableFromInline var index: Int

    @inlinable init(_ base: UnsafeRawBufferPointer) {
        self.base = base
        self.index = 0
    }

    @inlinable var remaining: Int { base.count - index }

    @inlinable @inline(__always)
    mutating func need(_ n: Int, _ what: StaticString) throws(SyncProtocolError) {
        if remaining < n { throw .truncated(what: "\(what)", needed: n - remaining) }
    }

    @inlinable @inline(__always)
    mutating func u8(_ what: StaticString) throws(SyncProtocolError) -> UInt8 {
        try need(1, what)
        let v = base[index]
        index += 1
        return v
    }

    @inlinable @inline(__always)
    mutating func u16(_ what: StaticString) throws(SyncProtocolError) -> UInt16 {
        try need(2, what)
        let v = UInt16(base[index]) << 8 | UInt16(base[index + 1])
        index += 2
        return v
    }

    @inlinable @inline(__always)
    mutating func u32(_ what: StaticString) throws(SyncProtocolError) -> UInt32 {
        try need(4, what)
        let v = UInt32(bigEndian: base.loadUnaligned(fromByteOffset: index, as: UInt32.self))
        index += 4
        return v
    }

    @inlinable @inline(__always)
    mutating func u64(_ what: StaticString) throws(SyncProtocolError) -> UInt64 {
        try need(8, what)
        let v = UInt64(bigEndian: base.loadUnaligned(fromByteOffset: index, as: UInt64.self))
        index += 8
        return v
    }

    /// LEB128, at most 5 bytes, value at most `UInt32.max`.
    @inlinable @inline(__always)
    mutating func varint32(_ what: StaticString) throws(SyncProtocolError) -> UInt32 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b = try u8(what)
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { break }
            shift += 7
            if shift >= 35 { throw .invalidField(field: "\(what)", reason: "varint longer than 5 bytes") }
        }
        guard result <= UInt64(UInt32.max) else {
            throw .invalidField(field: "\(what)", reason: "varint \(result) exceeds 32 bits")
        }
        return UInt32(result)
    }

    @inlinable
    mutating func bytes(_ n: Int, _ what: StaticString) throws(SyncProtocolError) -> [UInt8] {
        try need(n, what)
        let out = Array(UnsafeRawBufferPointer(rebasing: base[index..<index + n]))
        index += n
        return out
    }

    /// A UTF-8 string prefixed by a one-byte length.
    @inlinable
    mutating func string8(_ what: StaticString) throws(SyncProtocolError) -> String {
        let n = Int(try u8(what))
        return try utf8(n, what)
    }

    /// A UTF-8 string prefixed by a two-byte length.
    @inlinable
    mutating func string16(_ what: StaticString) throws(SyncProtocolError) -> String {
        let n = Int(try u16(what))
        // What an encoder sends at most (it cuts longer strings): a longer one would not
        // survive a re-encode, and no sender writes one.
        guard n <= SyncWire.maximumString16 else {
            throw .invalidField(field: "\(what)", reason: "\(n) bytes, more than \(SyncWire.maximumString16)")
        }
        return try utf8(n, what)
    }

    @inlinable
    mutating func utf8(_ n: Int, _ what: StaticString) throws(SyncProtocolError) -> String {
        let raw = try bytes(n, what)
        guard let s = String(validating: raw, as: UTF8.self) else {
            throw .invalidField(field: "\(what)", reason: "not valid UTF-8")
        }
        return s
    }
}

/// An unchecked big-endian writer into memory the caller has reserved (see
/// `ByteBuffer.writeWithUnsafeMutableBytes(minimumWritableBytes:)`).
@usableFromInline
struct RawWriter {
    @usableFromInline let base: UnsafeMutableRawBufferPointer
    @usableFromInline var index: Int = 0

    @inlinable init(_ base: UnsafeMutableRawBufferPointer) { self.base = base }

    @inlinable @inline(__always) mutating func u8(_ v: UInt8) {
        base[index] = v
        index += 1
    }

    @inlinable @inline(__always) mutating func u16(_ v: UInt16) {
        base.storeBytes(of: v.bigEndian, toByteOffset: index, as: UInt16.self)
        index += 2
    }

    @inlinable @inline(__always) mutating func u32(_ v: UInt32) {
        base.storeBytes(of: v.bigEndian, toByteOffset: index, as: UInt32.self)
        index += 4
    }

    @inlinable @inline(__always) mutating func u64(_ v: UInt64) {
        base.storeBytes(of: v.bigEndian, toByteOffset: index, as: UInt64.self)
        index += 8
    }

    @inlinable @inline(__always) mutating func varint32(_ v: UInt32) {
        var v = v
        while v >= 0x80 {
            u8(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        u8(UInt8(v))
    }
}
