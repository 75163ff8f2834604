import Config
import Testing

/// `global_defs { metrics_listen ADDRESS:PORT }`: the optional Prometheus listener.
@Suite struct MetricsListenTests {
    @Test func absentMeansNoListener() throws {
        let c = try ConfigLoader.parse(text: "global_defs { router_id r1 }", file: "t.conf", baseDirectory: "/etc/keepstate")
        #expect(c.metricsListen == nil)
    }

    @Test(arguments: [
        ("127.0.0.1:9469", "127.0.0.1", 9469, "127.0.0.1:9469"),
        ("0.0.0.0:1", "0.0.0.0", 1, "0.0.0.0:1"),
        ("[::1]:9469", "::1", 9469, "[::1]:9469"),
        ("[2001:db8::7]:65535", "2001:db8::7", 65535, "[2001:db8::7]:65535"),
        ("\"[::]:09469\"", "::", 9469, "[::]:9469"),
    ])
    func accepted(text: String, address: String, port: Int, shown: String) throws {
        let c = try ConfigLoader.parse(text: "global_defs {\n    metrics_listen \(text)\n}\n", file: "t.conf", baseDirectory: "/etc/keepstate")
        let m = try #require(c.metricsListen)
        #expect(m.address == address && Int(m.port) == port && m.description == shown)
        #expect(m.location.line == 2 && m.location.column == 20 && m.location.file == "t.conf")
    }

    private static let expected = "expected ADDRESS:PORT with an IPv4 address or an IPv6 address in brackets and a port in 1...65535 (127.0.0.1:9469, [::1]:9469)"

    @Test(arguments: [
        ("127.0.0.1", "2:20: error: invalid value '127.0.0.1' for 'metrics_listen'; \(expected)"),
        ("127.0.0.1:", "2:20: error: invalid port '' in 'metrics_listen' '127.0.0.1:'; \(expected)"),
        ("127.0.0.1:0", "2:20: error: invalid port '0' in 'metrics_listen' '127.0.0.1:0'; \(expected)"),
        ("127.0.0.1:65536", "2:20: error: invalid port '65536' in 'metrics_listen' '127.0.0.1:65536'; \(expected)"),
        ("127.0.0.1:99999999999999999999", "2:20: error: invalid port '99999999999999999999' in 'metrics_listen' '127.0.0.1:99999999999999999999'; \(expected)"),
        ("127.0.0.1:+80", "2:20: error: invalid port '+80' in 'metrics_listen' '127.0.0.1:+80'; \(expected)"),
        ("localhost:9469", "2:20: error: invalid IPv4 address 'localhost' in 'metrics_listen' 'localhost:9469'; \(expected)"),
        ("300.1.1.1:9469", "2:20: error: invalid IPv4 address '300.1.1.1' in 'metrics_listen' '300.1.1.1:9469'; \(expected)"),
        ("::1:9469", "2:20: error: invalid value '::1:9469' for 'metrics_listen'; an IPv6 address is written in brackets: [ADDRESS]:PORT"),
        ("[::1]", "2:20: error: invalid value '[::1]' for 'metrics_listen'; \(expected)"),
        ("[::1:9469", "2:20: error: invalid value '[::1:9469' for 'metrics_listen'; \(expected)"),
        ("[127.0.0.1]:9469", "2:20: error: invalid IPv6 address '127.0.0.1' in 'metrics_listen' '[127.0.0.1]:9469'; \(expected)"),
        ("[fe80::1%eth0]:9469", "2:20: error: invalid IPv6 address 'fe80::1%eth0' in 'metrics_listen' '[fe80::1%eth0]:9469'; \(expected)"),
    ])
    func rejected(text: String, expected: String) {
        #expect(errorLines("global_defs {\n    metrics_listen \(text)\n}\n") == ["t.conf:" + expected])
    }

    @Test func arityAndDuplicates() {
        #expect(errorLines("global_defs {\n    metrics_listen\n}\n") == [
            "t.conf:2:5: error: 'metrics_listen' expects 1 argument, found end of line",
        ])
        #expect(errorLines("global_defs {\n    metrics_listen 127.0.0.1:1 127.0.0.1:2\n}\n") == [
            "t.conf:2:32: error: too many arguments for 'metrics_listen': expected 1 argument, found extra '127.0.0.1:2'",
        ])
        #expect(errorLines("global_defs {\n    metrics_listen 127.0.0.1:1\n    metrics_listen 127.0.0.1:2\n}\n") == [
            "t.conf:3:5: error: duplicate 'metrics_listen' in global_defs; first given at line 2",
        ])
        // Only in global_defs.
        let inVRF = errorLines("vrf v {\n    metrics_listen 127.0.0.1:1\n}\n")
        #expect(inVRF.count == 1 && inVRF.first?.hasPrefix("t.conf:2:5: error: unknown keyword 'metrics_listen' in vrf") == true, "\(inVRF)")
    }
}
