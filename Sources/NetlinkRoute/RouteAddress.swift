import Glibc

/// An IPv4 or IPv6 address as the kernel stores it: 4 or 16 bytes in network order.
///
/// Parses and prints the usual text forms (`"192.0.2.1"`, `"2001:db8::1"`) with `inet_pton` and
/// `inet_ntop`; no zone (`%eth0`) and no prefix (`/24`), which travel separately.
public struct RouteAddress: Hashable, Sendable, LosslessStringConvertible {
    public enum Family: Sendable, Hashable {
        case ipv4, ipv6
    }

    public let family: Family
    /// 4 bytes for IPv4, 16 for IPv6, network order.
    public let bytes: [UInt8]

    /// An address from its bytes: 4 for IPv4, 16 for IPv6; nil for any other count.
    public init?(bytes: [UInt8]) {
        switch bytes.count {
        case 4: family = .ipv4
        case 16: family = .ipv6
        default: return nil
        }
        self.bytes = bytes
    }

    /// Parses `"192.0.2.1"` or `"2001:db8::1"`; nil for anything else.
    public init?(_ text: String) {
        var buffer = [UInt8](repeating: 0, count: 16)
        if inet_pton(AF_INET, text, &buffer) == 1 {
            self.init(bytes: Array(buffer[0..<4]))
        } else if inet_pton(AF_INET6, text, &buffer) == 1 {
            self.init(bytes: buffer)
        } else {
            return nil
        }
    }

    /// The longest prefix of the family: 32 or 128.
    public var maxPrefixLength: Int { family == .ipv4 ? 32 : 128 }

    public var description: String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        _ = inet_ntop(family == .ipv4 ? AF_INET : AF_INET6, bytes, &text, socklen_t(text.count))
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
