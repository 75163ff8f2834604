import ConntrackModel
import Testing

@Suite struct AddressTests {
    @Test(arguments: [
        ("0.0.0.0", UInt32(0)),
        ("10.0.0.1", UInt32(0x0A00_0001)),
        ("100.64.0.1", UInt32(0x6440_0001)),
        ("255.255.255.255", UInt32.max),
        ("192.0.2.1", UInt32(0xC000_0201)),
    ])
    func ipv4RoundTrip(text: String, value: UInt32) throws {
        let a = try #require(IPAddressBits(parsing: text, family: .ipv4))
        #expect(a == IPAddressBits(ipv4: value))
        #expect(a.high == 0)
        #expect(a.ipv4 == value)
        #expect(a.formatted(.ipv4) == text)
        let guessed = try #require(IPAddressBits.parse(text))
        #expect(guessed.0 == .ipv4)
        #expect(guessed.1 == a)
    }

    @Test(arguments: [
        "1.2.3", "256.1.1.1", "1.2.3.4.5", "", "1..2.3", ".1.2.3", "1.2.3.", "a.b.c.d", "1.2.3.-4",
        "+1.2.3.4", "1.2.3.4 ", " 1.2.3.4", "0001.2.3.4", "1.2.3.٣", "4294967297.0.0.1",
    ])
    func ipv4Rejects(text: String) {
        #expect(IPAddressBits(parsing: text, family: .ipv4) == nil)
    }

    @Test(arguments: [
        // text, canonical form, high, low
        ("::", "::", UInt64(0), UInt64(0)),
        ("::1", "::1", 0, 1),
        ("1::", "1::", 0x0001_0000_0000_0000, 0),
        ("2001:db8::1", "2001:db8::1", 0x2001_0DB8_0000_0000, 1),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1", 0x2001_0DB8_0000_0000, 1),
        ("2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1", 0x2001_0DB8_0000_0001, 1),
        ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4", 0x0001_0000_0000_0002, 0x0000_0000_0003_0004),
        ("1:0:0:2:0:0:0:3", "1:0:0:2::3", 0x0001_0000_0000_0002, 3),
        ("1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7", 0x0001_0000_0002_0003, 0x0004_0005_0006_0007),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", UInt64.max, UInt64.max),
        ("fe80::1:2", "fe80::1:2", 0xFE80_0000_0000_0000, 0x0000_0000_0001_0002),
        ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0", 0x0001_0002_0003_0004, 0x0005_0006_0007_0000),
    ])
    func ipv6RoundTrip(text: String, canonical: String, high: UInt64, low: UInt64) throws {
        let a = try #require(IPAddressBits(parsing: text, family: .ipv6))
        #expect(a == IPAddressBits(high: high, low: low))
        #expect(a.formatted(.ipv6) == canonical)
        #expect(IPAddressBits(parsing: canonical, family: .ipv6) == a)
        let guessed = try #require(IPAddressBits.parse(text))
        #expect(guessed.0 == .ipv6)
        #expect(guessed.1 == a)
    }

    @Test(arguments: [
        ("::ffff:1.2.3.4", UInt64(0), UInt64(0x0000_FFFF_0102_0304)),
        ("::1.2.3.4", 0, 0x0000_0000_0102_0304),
        ("64:ff9b::192.0.2.33", 0x0064_FF9B_0000_0000, 0x0000_0000_C000_0221),
        ("1:2:3:4:5:6:1.2.3.4", 0x0001_0002_0003_0004, 0x0005_0006_0102_0304),
    ])
    func ipv6EmbeddedIPv4(text: String, high: UInt64, low: UInt64) throws {
        let a = try #require(IPAddressBits(parsing: text, family: .ipv6))
        #expect(a == IPAddressBits(high: high, low: low))
        // Whatever the text form, it parses back to the same bits.
        #expect(IPAddressBits(parsing: a.formatted(.ipv6), family: .ipv6) == a)
    }

    /// RFC 5952 section 5: IPv4-mapped addresses use the mixed notation.
    @Test(arguments: [
        ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
        ("::FFFF:0102:0304", "::ffff:1.2.3.4"),
        ("::ffff:0.0.0.0", "::ffff:0.0.0.0"),
        ("0:0:0:0:0:ffff:ffff:ffff", "::ffff:255.255.255.255"),
        ("::fffe:1.2.3.4", "::fffe:102:304"),
        ("1::ffff:1.2.3.4", "1::ffff:102:304"),
    ])
    func ipv4MappedFormatting(text: String, canonical: String) throws {
        let a = try #require(IPAddressBits(parsing: text, family: .ipv6))
        #expect(a.formatted(.ipv6) == canonical)
        #expect(IPAddressBits(parsing: canonical, family: .ipv6) == a)
    }

    @Test(arguments: [
        "", "1::2::3", "gggg::", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", ":::", ":::1", "1:::2", ":1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8:", "12345::", "::ffff:1.2.3", "::ffff:256.1.1.1", "1:2:3:4:5:6:7:1.2.3.4",
        "::1:2:3:4:5:6:1.2.3.4", "1.2.3.4", "::1.2.3.4:5", "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8",
        "fe80::1%eth0", " ::1", "::1 ", "0:0:0:0:0:0:0:0:0",
        "0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000",
    ])
    func ipv6Rejects(text: String) {
        #expect(IPAddressBits(parsing: text, family: .ipv6) == nil)
    }

    /// `UInt16(_:radix:)` accepts a leading sign; the group parser must not.
    @Test(arguments: ["+1::", "1:+2::", "-0::1", "::+ff", "+1:2:3:4:5:6:7:8", "::ffff:+1.2.3.4", "１::"])
    func ipv6RejectsSigns(text: String) {
        #expect(IPAddressBits(parsing: text, family: .ipv6) == nil)
    }

    @Test func parseGuessesFamily() {
        #expect(IPAddressBits.parse("") == nil)
        #expect(IPAddressBits.parse("1.2.3") == nil)
        #expect(IPAddressBits.parse("1::2::3") == nil)
        #expect(IPAddressBits.parse("::")?.0 == .ipv6)
        #expect(IPAddressBits.parse("9.9.9.9")?.0 == .ipv4)
    }

    @Test func randomIPv6FormatRoundTrip() {
        var rng = TestRNG(seed: 42)
        for _ in 0..<20_000 {
            // Sparse groups so that zero runs of every length and position occur.
            var high: UInt64 = 0, low: UInt64 = 0
            for g in 0..<8 {
                let value: UInt64 = rng.next() % 3 == 0 ? rng.next() & 0xFFFF : 0
                if g < 4 { high |= value << UInt64(48 - 16 * g) } else { low |= value << UInt64(48 - 16 * (g - 4)) }
            }
            let a = IPAddressBits(high: high, low: low)
            let text = a.formatted(.ipv6)
            #expect(IPAddressBits(parsing: text, family: .ipv6) == a, "\(text)")
            #expect(!text.contains(":::"))
            #expect(doubleColons(text) <= 1, "\(text)")
        }
        for _ in 0..<5_000 {
            let a = IPAddressBits(ipv4: UInt32(truncatingIfNeeded: rng.next()))
            #expect(IPAddressBits(parsing: a.formatted(.ipv4), family: .ipv4) == a)
        }
    }

    @Test func ordering() {
        #expect(IPAddressBits(high: 0, low: 5) < IPAddressBits(high: 1, low: 0))
        #expect(IPAddressBits(high: 1, low: 0) < IPAddressBits(high: 1, low: 1))
        #expect(!(IPAddressBits(high: 1, low: 1) < IPAddressBits(high: 1, low: 1)))
        #expect(v4("10.0.0.1") < v4("10.0.0.2"))
    }
}

/// How many times "::" occurs in `text` (non-overlapping).
private func doubleColons(_ text: String) -> Int {
    let bytes = Array(text.utf8)
    var n = 0
    var i = 0
    while i + 1 < bytes.count {
        if bytes[i] == UInt8(ascii: ":") && bytes[i + 1] == UInt8(ascii: ":") {
            n += 1
            i += 2
        } else {
            i += 1
        }
    }
    return n
}
