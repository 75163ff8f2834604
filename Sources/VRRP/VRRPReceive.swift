/// Why a received VRRP packet was discarded (RFC 3768 §7.1, RFC 9568 §7.1).
public enum VRRPDrop: Error, Sendable, Equatable, Hashable, CustomStringConvertible {
    /// IPv4 TTL / IPv6 Hop Limit is not 255.
    case ttlNot255(received: UInt8)
    /// The version nibble is neither 2 nor 3.
    case unknownVersion(UInt8)
    /// The version is valid but not the one this instance runs.
    case versionMismatch(received: UInt8, expected: UInt8)
    /// VRRPv2 received over IPv6.
    case versionFamilyMismatch
    /// IP source and destination are not of one family, or not the family the instance is configured for.
    case addressFamilyMismatch
    /// Type is not 1 (ADVERTISEMENT).
    case invalidType(UInt8)
    /// The message is shorter than the fixed header + Count addresses (+ v2 auth data).
    case truncated(length: Int, required: Int)
    /// The checksum matches none of the accepted forms.
    case badChecksum(received: UInt16)
    /// The packet is for another virtual router on this link: not an error, count it separately.
    case vridMismatch(received: UInt8, local: UInt8)
    /// VRRPv3 Count IPvX Addr is 0 (RFC 9568 §5.2.5: the minimum value is 1).
    case addressCountZero
    /// VRRPv3 Max Advertise Interval is 0 (RFC 9568 §7.1, erratum 8301).
    case maxAdvertIntervalZero
    /// VRRPv2 Adver Int differs from the local one (RFC 3768 §7.1).
    case advertIntervalMismatch(received: UInt16, local: UInt16)
    /// VRRPv2 Auth Type 2 (IP Authentication Header): not supported (removed by RFC 3768).
    case authHeaderUnsupported
    /// VRRPv2 Auth Type differs from the local one.
    case authTypeMismatch(received: UInt8, local: UInt8)
    /// VRRPv2 simple text password does not match.
    case passwordMismatch
    /// VRRPv2: the address list differs from the configured one and the sender is not the owner (priority 255).
    case addressListMismatch(received: [VRRPAddress], configured: [VRRPAddress])

    public var description: String {
        switch self {
        case .ttlNot255(let ttl):
            return "TTL/hop limit \(ttl), must be 255: the packet crossed a router or was not sent by a VRRP router"
        case .unknownVersion(let v):
            return "VRRP version \(v) is unknown (only 2 and 3 exist)"
        case .versionMismatch(let r, let e):
            return "VRRP version \(r) received, this instance runs version \(e): configure the same version on all routers of the VRID"
        case .versionFamilyMismatch:
            return "VRRPv2 received over IPv6: VRRPv2 is IPv4 only"
        case .addressFamilyMismatch:
            return "IP source/destination family does not match the instance's address family"
        case .invalidType(let t):
            return "VRRP type \(t), only 1 (ADVERTISEMENT) is defined"
        case .truncated(let len, let req):
            return "packet is \(len) bytes, at least \(req) needed for its header and address count: truncated or malformed"
        case .badChecksum(let c):
            return "checksum " + hex16(c) + " is wrong: corrupted packet, or the sender uses a checksum form not accepted here (VRRPv3 over IPv4: with or without pseudo-header)"
        case .vridMismatch(let r, let l):
            return "advert for VRID \(r), this instance is VRID \(l): another virtual router on the link"
        case .addressCountZero:
            return "VRRPv3 advert with 0 addresses: invalid (minimum is 1)"
        case .maxAdvertIntervalZero:
            return "VRRPv3 advert with max advert interval 0: invalid"
        case .advertIntervalMismatch(let r, let l):
            return "advert interval \(r)s received, local is \(l)s: configure the same advert_int on all routers of the VRID"
        case .authHeaderUnsupported:
            return "VRRPv2 auth type 2 (IP AH) is not supported"
        case .authTypeMismatch(let r, let l):
            return "auth type \(r) received, local is \(l): configure the same authentication on all routers of the VRID"
        case .passwordMismatch:
            return "authentication password does not match"
        case .addressListMismatch(let r, let c):
            return "advert lists addresses [\(r.map(\.description).joined(separator: ", "))], configured [\(c.map(\.description).joined(separator: ", "))]: virtual_ipaddress differs between routers"
        }
    }
}

private func hex16(_ value: UInt16) -> String {
    let hex = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
}

/// A non-fatal finding on an accepted advert (the advert is still processed).
public enum VRRPWarning: Sendable, Equatable, Hashable, CustomStringConvertible {
    /// The address list differs from the configured one (RFC 9568 §7.1 MAY log; RFC 3768 §7.1 when sent by the owner).
    case addressListMismatch(received: [VRRPAddress], configured: [VRRPAddress])
    /// An advert was received while this router is the address owner (RFC 9568 §7.1 erratum 8298: log, do not discard).
    case receivedByOwner

    public var description: String {
        switch self {
        case .addressListMismatch(let r, let c):
            return "advert lists addresses [\(r.map(\.description).joined(separator: ", "))], configured [\(c.map(\.description).joined(separator: ", "))]"
        case .receivedByOwner:
            return "advert received although this router is the address owner (priority 255): two owners?"
        }
    }
}

/// What the receive path knows from the IP header.
public struct VRRPIPHeaderInfo: Sendable, Equatable, Hashable {
    public var source: VRRPAddress
    public var destination: VRRPAddress
    /// IPv4 TTL or IPv6 Hop Limit.
    public var ttlOrHopLimit: UInt8

    public init(source: VRRPAddress, destination: VRRPAddress, ttlOrHopLimit: UInt8) {
        self.source = source
        self.destination = destination
        self.ttlOrHopLimit = ttlOrHopLimit
    }
}

/// What the local instance is configured with, for receive validation.
public struct VRRPExpectations: Sendable, Equatable, Hashable {
    public var version: VRRPVersion
    public var vrid: UInt8
    /// Configured virtual addresses (non-empty, one family).
    public var addresses: [VRRPAddress]
    /// v2 only: local Adver Int in seconds.
    public var advertIntervalSeconds: UInt8
    /// v2 only.
    public var authentication: VRRPAuthentication
    /// v3 over IPv4 only: checksum forms accepted (default: both).
    public var acceptedChecksumModes: Set<VRRPChecksumMode>
    /// Local priority is 255.
    public var localIsOwner: Bool

    public init(version: VRRPVersion, vrid: UInt8, addresses: [VRRPAddress], advertIntervalSeconds: UInt8 = 1,
                authentication: VRRPAuthentication = .none,
                acceptedChecksumModes: Set<VRRPChecksumMode> = [.withPseudoHeader, .messageOnly],
                localIsOwner: Bool = false) {
        self.version = version
        self.vrid = vrid
        self.addresses = addresses
        self.advertIntervalSeconds = advertIntervalSeconds
        self.authentication = authentication
        self.acceptedChecksumModes = acceptedChecksumModes
        self.localIsOwner = localIsOwner
    }
}

/// An advert that passed every receive check.
public struct VRRPValidatedAdvert: Sendable, Equatable, Hashable {
    public var packet: VRRPPacket
    /// Non-fatal findings to log.
    public var warnings: [VRRPWarning]
    /// The checksum form that matched (v2: always `.messageOnly`; v3/IPv6: `.withPseudoHeader`).
    public var checksumMode: VRRPChecksumMode
}

/// Pure receive-side validation.
public enum VRRPReceiver {
    /// RFC 3768 §7.1 / RFC 9568 §7.1 receive checks, in RFC order:
    /// TTL, version, type, completeness, checksum, VRID, then version-specific checks.
    public static func validate(ipHeader: VRRPIPHeaderInfo, message: [UInt8],
                                expectations: VRRPExpectations) -> Result<VRRPValidatedAdvert, VRRPDrop> {
        guard ipHeader.ttlOrHopLimit == 255 else { return .failure(.ttlNot255(received: ipHeader.ttlOrHopLimit)) }
        let family = ipHeader.source.family
        guard let first = message.first else {
            return .failure(.truncated(length: 0, required: VRRPPacket.headerLength))
        }
        let rawVersion = first >> 4
        guard rawVersion == expectations.version.rawValue else {
            if VRRPVersion(rawValue: rawVersion) == nil { return .failure(.unknownVersion(rawVersion)) }
            return .failure(.versionMismatch(received: rawVersion, expected: expectations.version.rawValue))
        }
        if expectations.version == .v2 && family == .ipv6 { return .failure(.versionFamilyMismatch) }
        guard ipHeader.destination.family == family,
              expectations.addresses.allSatisfy({ $0.family == family }) else {
            return .failure(.addressFamilyMismatch)
        }
        let type = first & 0x0F
        guard type == 1 else { return .failure(.invalidType(type)) }

        let packet: VRRPPacket
        do {
            packet = try VRRPPacket.decode(message, family: family)
        } catch {
            return .failure(error)
        }

        // Checksum over the whole received message.
        let modes: [VRRPChecksumMode]
        switch (packet.version, family) {
        case (.v2, _): modes = [.messageOnly]
        case (.v3, .ipv6): modes = [.withPseudoHeader]
        case (.v3, .ipv4): modes = VRRPChecksumMode.allCases.filter { expectations.acceptedChecksumModes.contains($0) }
        }
        var matched: VRRPChecksumMode? = nil
        for mode in modes {
            let pseudo = VRRPPacket.usesPseudoHeader(version: packet.version, family: family, mode: mode)
                ? VRRPChecksum.pseudoHeader(source: ipHeader.source, destination: ipHeader.destination,
                                            length: message.count)
                : nil
            if VRRPChecksum.compute(message: message, pseudoHeader: pseudo) == 0 {
                matched = mode
                break
            }
        }
        guard let checksumMode = matched else { return .failure(.badChecksum(received: packet.checksum)) }

        guard packet.vrid == expectations.vrid else {
            return .failure(.vridMismatch(received: packet.vrid, local: expectations.vrid))
        }

        var warnings: [VRRPWarning] = []
        if expectations.localIsOwner { warnings.append(.receivedByOwner) }
        let listMatches = packet.addresses.count == expectations.addresses.count
            && Set(packet.addresses) == Set(expectations.addresses)

        switch packet.version {
        case .v3:
            guard packet.addressCount != 0 else { return .failure(.addressCountZero) }
            guard packet.advertInterval != 0 else { return .failure(.maxAdvertIntervalZero) }
            if !listMatches {
                warnings.append(.addressListMismatch(received: packet.addresses, configured: expectations.addresses))
            }
        case .v2:
            if packet.authType == VRRPAuthType.ipAH.rawValue { return .failure(.authHeaderUnsupported) }
            let localType = expectations.authentication.authType.rawValue
            guard packet.authType == localType else {
                return .failure(.authTypeMismatch(received: packet.authType, local: localType))
            }
            if case .password = expectations.authentication, packet.authData != expectations.authentication.authData {
                return .failure(.passwordMismatch)
            }
            if !listMatches {
                if packet.priority == 255 || expectations.localIsOwner {
                    warnings.append(.addressListMismatch(received: packet.addresses, configured: expectations.addresses))
                } else {
                    return .failure(.addressListMismatch(received: packet.addresses, configured: expectations.addresses))
                }
            }
            guard packet.advertInterval == UInt16(expectations.advertIntervalSeconds) else {
                return .failure(.advertIntervalMismatch(received: packet.advertInterval,
                                                        local: UInt16(expectations.advertIntervalSeconds)))
            }
        }
        return .success(VRRPValidatedAdvert(packet: packet, warnings: warnings, checksumMode: checksumMode))
    }
}
