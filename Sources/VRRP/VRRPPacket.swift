/// VRRP protocol version.
public enum VRRPVersion: UInt8, Sendable, Equatable, Hashable {
    /// RFC 3768, IPv4 only, advert interval in seconds, authentication data.
    case v2 = 2
    /// RFC 5798 / RFC 9568, IPv4 and IPv6, max advert interval in centiseconds.
    case v3 = 3
}

/// VRRPv2 authentication type (RFC 3768 §5.3.6).
public enum VRRPAuthType: UInt8, Sendable, Equatable, Hashable {
    case none = 0
    case simpleText = 1
    /// IP Authentication Header: deprecated, not supported, packets are rejected.
    case ipAH = 2
}

/// Locally configured VRRPv2 authentication.
public enum VRRPAuthentication: Sendable, Equatable, Hashable {
    case none
    /// keepalived `auth_type PASS`: up to 8 bytes, zero padded on the wire.
    case password([UInt8])

    public var authType: VRRPAuthType {
        switch self {
        case .none: return .none
        case .password: return .simpleText
        }
    }

    /// The 8 authentication data bytes sent on the wire.
    public var authData: [UInt8] {
        switch self {
        case .none:
            return [UInt8](repeating: 0, count: 8)
        case .password(let p):
            let cut = Array(p.prefix(8))
            return cut + [UInt8](repeating: 0, count: 8 - cut.count)
        }
    }
}

/// One VRRP message (the IP payload), version 2 or 3.
public struct VRRPPacket: Sendable, Equatable, Hashable {
    public var version: VRRPVersion
    /// 1 = ADVERTISEMENT; the only type defined.
    public var type: UInt8
    public var vrid: UInt8
    public var priority: UInt8
    /// Address family of the addresses (v2 is always `.ipv4`).
    public var family: VRRPAddressFamily
    /// The "Count IPvX Addrs" field as received / to be sent.
    public var addressCount: UInt8
    public var addresses: [VRRPAddress]
    /// v2: Auth Type field (raw). Always 0 for v3.
    public var authType: UInt8
    /// v2: Adver Int in seconds (8 bits). v3: Max Adver Int in centiseconds (12 bits).
    public var advertInterval: UInt16
    /// v3: the 4 reserved bits in front of Max Adver Int (sent as zero).
    public var reserved: UInt8
    /// Checksum field as received; filled in by `encode`.
    public var checksum: UInt16
    /// v2: 8 bytes of authentication data. Empty for v3.
    public var authData: [UInt8]

    /// Fixed header length (both versions).
    public static let headerLength = 8
    /// VRRPv2 authentication data length.
    public static let v2AuthDataLength = 8

    /// A VRRPv2 advertisement (IPv4).
    public static func v2(vrid: UInt8, priority: UInt8, advertIntervalSeconds: UInt8,
                          addresses: [VRRPAddress], authentication: VRRPAuthentication = .none) -> VRRPPacket {
        VRRPPacket(version: .v2, type: 1, vrid: vrid, priority: priority, family: .ipv4,
                   addressCount: UInt8(truncatingIfNeeded: addresses.count), addresses: addresses,
                   authType: authentication.authType.rawValue, advertInterval: UInt16(advertIntervalSeconds),
                   reserved: 0, checksum: 0, authData: authentication.authData)
    }

    /// A VRRPv3 advertisement. `maxAdvertIntervalCentiseconds` is masked to 12 bits.
    public static func v3(vrid: UInt8, priority: UInt8, maxAdvertIntervalCentiseconds: UInt16,
                          family: VRRPAddressFamily, addresses: [VRRPAddress]) -> VRRPPacket {
        VRRPPacket(version: .v3, type: 1, vrid: vrid, priority: priority, family: family,
                   addressCount: UInt8(truncatingIfNeeded: addresses.count), addresses: addresses,
                   authType: 0, advertInterval: maxAdvertIntervalCentiseconds & 0x0FFF,
                   reserved: 0, checksum: 0, authData: [])
    }

    public init(version: VRRPVersion, type: UInt8, vrid: UInt8, priority: UInt8, family: VRRPAddressFamily,
                addressCount: UInt8, addresses: [VRRPAddress], authType: UInt8, advertInterval: UInt16,
                reserved: UInt8, checksum: UInt16, authData: [UInt8]) {
        self.version = version
        self.type = type
        self.vrid = vrid
        self.priority = priority
        self.family = family
        self.addressCount = addressCount
        self.addresses = addresses
        self.authType = authType
        self.advertInterval = advertInterval
        self.reserved = reserved
        self.checksum = checksum
        self.authData = authData
    }

    /// Length in bytes of the encoded message.
    public var encodedLength: Int {
        Self.headerLength + addresses.count * family.addressLength + (version == .v2 ? Self.v2AuthDataLength : 0)
    }

    /// Message bytes with the checksum field set to zero.
    func bytesWithZeroChecksum() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(encodedLength)
        out.append((version.rawValue << 4) | (type & 0x0F))
        out.append(vrid)
        out.append(priority)
        out.append(UInt8(truncatingIfNeeded: addresses.count))
        switch version {
        case .v2:
            out.append(authType)
            out.append(UInt8(truncatingIfNeeded: advertInterval))
        case .v3:
            let field = advertInterval & 0x0FFF  // rsvd bits are sent as zero
            out.append(UInt8(field >> 8))
            out.append(UInt8(field & 0xFF))
        }
        out.append(0)
        out.append(0)
        for a in addresses { out += a.bytes }
        if version == .v2 {
            let data = Array(authData.prefix(8))
            out += data + [UInt8](repeating: 0, count: 8 - data.count)
        }
        return out
    }

    /// Encodes the message with its checksum.
    ///
    /// - `source`/`destination` are the IP header addresses, used by the pseudo-header
    ///   (v3/IPv6 always; v3/IPv4 with `.withPseudoHeader`). Ignored for v2.
    /// - `checksumMode` only matters for v3 over IPv4.
    public func encode(source: VRRPAddress, destination: VRRPAddress,
                       checksumMode: VRRPChecksumMode = .withPseudoHeader) -> [UInt8] {
        var out = bytesWithZeroChecksum()
        let pseudo = Self.usesPseudoHeader(version: version, family: family, mode: checksumMode)
            ? VRRPChecksum.pseudoHeader(source: source, destination: destination, length: out.count)
            : nil
        let sum = VRRPChecksum.compute(message: out, pseudoHeader: pseudo)
        out[6] = UInt8(sum >> 8)
        out[7] = UInt8(sum & 0xFF)
        return out
    }

    static func usesPseudoHeader(version: VRRPVersion, family: VRRPAddressFamily, mode: VRRPChecksumMode) -> Bool {
        switch (version, family) {
        case (.v2, _): return false
        case (.v3, .ipv6): return true
        case (.v3, .ipv4): return mode == .withPseudoHeader
        }
    }

    /// Structural decode of a VRRP message: never traps, checks only what is needed
    /// to read the fields (version known, complete fixed header, addresses and v2
    /// auth data present). Bytes after the message are ignored.
    /// Semantic checks (type, TTL, checksum, VRID, ...) are in `VRRPReceiver.validate`.
    public static func decode(_ bytes: [UInt8], family: VRRPAddressFamily) throws(VRRPDrop) -> VRRPPacket {
        guard let first = bytes.first else {
            throw .truncated(length: 0, required: headerLength)
        }
        let rawVersion = first >> 4
        guard let version = VRRPVersion(rawValue: rawVersion) else {
            throw .unknownVersion(rawVersion)
        }
        if version == .v2 && family == .ipv6 { throw .versionFamilyMismatch }
        guard bytes.count >= headerLength else {
            throw .truncated(length: bytes.count, required: headerLength)
        }
        let count = Int(bytes[3])
        let alen = family.addressLength
        let required = headerLength + count * alen + (version == .v2 ? v2AuthDataLength : 0)
        guard bytes.count >= required else {
            throw .truncated(length: bytes.count, required: required)
        }
        var addresses: [VRRPAddress] = []
        addresses.reserveCapacity(count)
        var offset = headerLength
        for _ in 0..<count {
            guard let a = VRRPAddress(bytes: bytes[offset..<(offset + alen)]) else {
                throw .truncated(length: bytes.count, required: required)
            }
            addresses.append(a)
            offset += alen
        }
        let checksum = UInt16(bytes[6]) << 8 | UInt16(bytes[7])
        switch version {
        case .v2:
            return VRRPPacket(version: .v2, type: first & 0x0F, vrid: bytes[1], priority: bytes[2], family: .ipv4,
                              addressCount: bytes[3], addresses: addresses, authType: bytes[4],
                              advertInterval: UInt16(bytes[5]), reserved: 0, checksum: checksum,
                              authData: Array(bytes[offset..<(offset + v2AuthDataLength)]))
        case .v3:
            return VRRPPacket(version: .v3, type: first & 0x0F, vrid: bytes[1], priority: bytes[2], family: family,
                              addressCount: bytes[3], addresses: addresses, authType: 0,
                              advertInterval: (UInt16(bytes[4] & 0x0F) << 8) | UInt16(bytes[5]),
                              reserved: bytes[4] >> 4, checksum: checksum, authData: [])
        }
    }
}
