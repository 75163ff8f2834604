import ConntrackModel
import NIOCore
import SyncProtocol
import Testing

typealias TestRNG = SplitMix64

func hex(_ buffer: ByteBuffer) -> String {
    hex(buffer.readableBytesView)
}

func hex<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
    var s = ""
    for b in bytes {
        let digits = String(b, radix: 16)
        s += digits.count == 1 ? "0" + digits : digits
    }
    return s
}

func buffer(hex text: String) -> ByteBuffer {
    var bytes: [UInt8] = []
    let chars = Array(text.utf8).filter { $0 != UInt8(ascii: " ") }
    precondition(chars.count % 2 == 0, "odd hex")
    var i = 0
    while i < chars.count {
        bytes.append(UInt8(String(decoding: chars[i..<i + 2], as: UTF8.self), radix: 16)!)
        i += 2
    }
    return ByteBuffer(bytes: bytes)
}

func ip4(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) -> IPAddressBits {
    IPAddressBits(ipv4: UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d))
}

func ip6(_ text: String) -> IPAddressBits {
    guard let a = IPAddressBits(parsing: text, family: .ipv6) else { fatalError("bad test address \(text)") }
    return a
}

/// The conntrack of the golden-bytes test: a CG-NAT source NAT.
let goldenSNAT = Conntrack(
    family: .ipv4, proto: .tcp,
    original: ConntrackTuple(source: ip4(100, 64, 0, 1), destination: ip4(198, 51, 100, 7), sourcePort: 40000, destinationPort: 443),
    reply: ConntrackTuple(source: ip4(198, 51, 100, 7), destination: ip4(203, 0, 113, 5), sourcePort: 443, destinationPort: 20001),
    tcpState: .established,
    status: [.seenReply, .assured, .confirmed, .sourceNAT, .sourceNATDone, .destinationNATDone],
    timeout: 432_000)

/// A conntrack with random content, of a random family and protocol.
func randomConntrack(_ rng: inout TestRNG) -> Conntrack {
    let family: AddressFamily = rng.next() % 2 == 0 ? .ipv4 : .ipv6
    let protos: [IPProtocolNumber] = [.tcp, .udp, .icmp, .icmpv6, .gre, .sctp, .udplite, IPProtocolNumber(rawValue: 0), IPProtocolNumber(rawValue: 255)]
    let proto = protos[Int(rng.next() % UInt64(protos.count))]
    func address() -> IPAddressBits {
        family == .ipv4 ? IPAddressBits(ipv4: UInt32(truncatingIfNeeded: rng.next())) : IPAddressBits(high: rng.next(), low: rng.next())
    }
    let original = ConntrackTuple(
        source: address(), destination: address(),
        sourcePort: UInt16(truncatingIfNeeded: rng.next()), destinationPort: UInt16(truncatingIfNeeded: rng.next()))
    var reply = original.inverted
    if rng.next() % 2 == 0 { reply.destination = address(); reply.destinationPort = UInt16(truncatingIfNeeded: rng.next()) }
    func varintValue() -> UInt32 {
        // Values of every encoded length (1 to 5 bytes).
        let bits = rng.next() % 33
        return bits == 0 ? 0 : UInt32(truncatingIfNeeded: rng.next() >> (64 - bits))
    }
    return Conntrack(
        family: family, proto: proto, original: original, reply: reply,
        tcpState: proto == .tcp ? TCPState.allCases[Int(rng.next() % 10)] : .none,
        status: ConntrackStatus(rawValue: varintValue()), timeout: varintValue(),
        mark: rng.next() % 3 == 0 ? UInt32(truncatingIfNeeded: rng.next()) : 0,
        zone: rng.next() % 3 == 0 ? UInt16(truncatingIfNeeded: rng.next()) : 0)
}

func randomUpdate(_ rng: inout TestRNG) -> ConntrackUpdate {
    let c = randomConntrack(&rng)
    return rng.next() % 4 == 0 ? .delete(c.key) : .upsert(c)
}

/// Encodes records into a bare payload.
func encode(_ updates: [ConntrackUpdate]) -> ByteBuffer {
    var b = ByteBuffer()
    for u in updates { b.writeConntrackUpdate(u) }
    return b
}

/// Encodes records (with their activity ages) into a bare payload.
func encodeRecords(_ records: [ConntrackRecord]) -> ByteBuffer {
    var b = ByteBuffer()
    for r in records { b.writeConntrackRecord(r) }
    return b
}

/// Decodes a bare payload; the reader must end empty.
func decodeAll(_ payload: ByteBuffer) throws(SyncProtocolError) -> [ConntrackUpdate] {
    var b = payload
    var out: [ConntrackUpdate] = []
    try b.readConntrackUpdates(into: &out)
    return out
}

/// The error a throwing call threw; anything but a `SyncProtocolError` is an issue.
func caught<T>(sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> T) -> SyncProtocolError? {
    do {
        _ = try body()
        return nil
    } catch let e as SyncProtocolError {
        return e
    } catch {
        Issue.record("untyped error \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

func isTruncated(_ e: SyncProtocolError?) -> Bool {
    if case .truncated = e { return true }
    return false
}

let sampleSettings = [
    SyncSettingPair(key: "ha_delays.tcp.synchronization", value: "1"),
    SyncSettingPair(key: "sync.connections", value: "4"),
    SyncSettingPair(key: "vrf", value: "réd ✓"),
]

let sampleDigest = RulesetDigest(
    digest: Array(100..<132),
    parts: [
        RulesetPart(name: "table inet filter", digest: [1, 2, 3, 4, 5, 6, 7, 8]),
        RulesetPart(name: "table inet filter chain input", digest: [8, 7, 6, 5, 4, 3, 2, 1]),
        RulesetPart(name: "table ip nat chain postrouting ✓", digest: [0, 0, 0, 0, 0, 0, 0, 0]),
    ])

let sampleHello = Hello(
    nodeID: "ha1", vrf: "red", connectionIndex: 3, connectionCount: 4,
    fingerprint: Array(0..<32), settings: sampleSettings, ruleset: .known(sampleDigest))
