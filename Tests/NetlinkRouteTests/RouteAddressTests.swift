import NetlinkRoute
import Testing

@Suite("RouteAddress text and bytes")
struct RouteAddressTests {
    @Test("parses and prints IPv4 and IPv6, refuses the rest")
    func parsing() throws {
        let v4 = try #require(RouteAddress("192.0.2.1"))
        #expect(v4.family == .ipv4 && v4.bytes == [192, 0, 2, 1] && v4.description == "192.0.2.1")
        let v6 = try #require(RouteAddress("2001:DB8:0:0::1"))
        #expect(v6.family == .ipv6 && v6.bytes.count == 16 && v6.description == "2001:db8::1")
        #expect(RouteAddress(bytes: v6.bytes) == v6)
        for bad in ["", "192.0.2", "192.0.2.256", "2001:db8::1/64", "fe80::1%eth0", "host"] {
            #expect(RouteAddress(bad) == nil, "\(bad)")
        }
        #expect(RouteAddress(bytes: [1, 2, 3]) == nil)
        #expect(NetlinkRoute.vrrpVirtualMAC(vrid: 51, family: .ipv4) == [0, 0, 0x5E, 0, 1, 51])
        #expect(NetlinkRoute.vrrpVirtualMAC(vrid: 255, family: .ipv6) == [0, 0, 0x5E, 0, 2, 255])
    }
}
