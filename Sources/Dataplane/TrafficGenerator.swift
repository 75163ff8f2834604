public import ConntrackModel

/// Produces the changes a CG-NAT's conntrack table goes through: new connections (source NAT
/// of 100.64.0.0/10 subscribers to a public address and port range, a share of them IPv6 without
/// NAT), state and timeout updates of live ones, and deletions, in a given mix.
public struct TrafficGenerator: Sendable {
    public struct Mix: Sendable {
        public var create: Int
        public var update: Int
        public var delete: Int
        public init(create: Int, update: Int, delete: Int) {
            self.create = create
            self.update = update
            self.delete = delete
        }
        /// A table that holds its size: as many creations as deletions.
        public static let steady = Mix(create: 30, update: 40, delete: 30)
        public static let fill = Mix(create: 100, update: 0, delete: 0)
    }

    public var mix: Mix
    /// Creations stop while the live count is at this size (updates take their place).
    public var maximumLive: Int
    private var rng: SplitMix64
    private var live: [ConntrackKey] = []
    private var liveState: [ConntrackKey: Conntrack] = [:]
    private var serial: UInt64 = 0

    public init(seed: UInt64, mix: Mix = .steady, maximumLive: Int = .max) {
        self.rng = SplitMix64(seed: seed)
        self.mix = mix
        self.maximumLive = maximumLive
    }

    public var liveCount: Int { live.count }

    /// The conntrack number `n` of a deterministic population (used by benchmarks to fill a
    /// table without keeping generator state).
    public static func conntrack(number n: UInt64, family: AddressFamily = .ipv4) -> Conntrack {
        let protoPick = n % 10
        let proto: IPProtocolNumber = protoPick < 7 ? .tcp : (protoPick < 9 ? .udp : .icmp)
        let subscriber = UInt32(0x6440_0000) | UInt32(truncatingIfNeeded: (n / 7) & 0x3F_FFFF)
        let server = UInt32(0xC633_6400) | UInt32(truncatingIfNeeded: n % 251)   // 198.51.100.0/24
        let publicIP = UInt32(0xCB00_7100) | UInt32(truncatingIfNeeded: (n >> 16) & 0xFF) // 203.0.113.0/24
        let sport = UInt16(truncatingIfNeeded: 1024 + n % 60000)
        let natPort = UInt16(truncatingIfNeeded: 20000 + (n >> 3) % 40000)
        if family == .ipv6 {
            let src = IPAddressBits(high: 0x2001_0DB8_0000_0001, low: n)
            let dst = IPAddressBits(high: 0x2001_0DB8_FFFF_0000, low: n % 251)
            let t = ConntrackTuple(source: src, destination: dst, sourcePort: sport, destinationPort: proto == .icmp ? 0 : 443)
            return Conntrack(
                family: .ipv6, proto: proto == .icmp ? .icmpv6 : proto, original: t,
                tcpState: proto == .tcp ? .established : .none, timeout: proto == .tcp ? 432_000 : 120)
        }
        switch proto {
        case .icmp:
            let o = ConntrackTuple(source: .init(ipv4: subscriber), destination: .init(ipv4: server), sourcePort: sport, destinationPort: 8 << 8)
            let r = ConntrackTuple(source: .init(ipv4: server), destination: .init(ipv4: publicIP), sourcePort: natPort, destinationPort: 0)
            return Conntrack(
                family: .ipv4, proto: .icmp, original: o, reply: r,
                status: [.seenReply, .confirmed, .sourceNAT, .sourceNATDone, .destinationNATDone], timeout: 30)
        default:
            let dport: UInt16 = proto == .tcp ? 443 : 53
            let o = ConntrackTuple(source: .init(ipv4: subscriber), destination: .init(ipv4: server), sourcePort: sport, destinationPort: dport)
            let r = ConntrackTuple(source: .init(ipv4: server), destination: .init(ipv4: publicIP), sourcePort: dport, destinationPort: natPort)
            return Conntrack(
                family: .ipv4, proto: proto, original: o, reply: r,
                tcpState: proto == .tcp ? .established : .none,
                status: [.seenReply, .assured, .confirmed, .sourceNAT, .sourceNATDone, .destinationNATDone],
                timeout: proto == .tcp ? 432_000 : 180, mark: n % 16 == 0 ? 0x100 : 0)
        }
    }

    /// The next `n` changes.
    public mutating func next(_ n: Int) -> [ConntrackUpdate] {
        var out: [ConntrackUpdate] = []
        out.reserveCapacity(n)
        let total = max(1, mix.create + mix.update + mix.delete)
        for _ in 0..<n {
            let pick = Int(rng.next() % UInt64(total))
            let wantCreate = pick < mix.create
            if live.isEmpty || (wantCreate && live.count < maximumLive) {
                serial += 1
                let family: AddressFamily = serial % 20 == 0 ? .ipv6 : .ipv4
                var c = Self.conntrack(number: rng.next() >> 8 ^ serial, family: family)
                if c.proto == .tcp { c.tcpState = .synSent; c.timeout = 120; c.status = [.confirmed] }
                guard liveState[c.key] == nil else { continue }
                live.append(c.key)
                liveState[c.key] = c
                out.append(.upsert(c))
            } else if wantCreate || pick < mix.create + mix.update {
                let i = Int(rng.next() % UInt64(live.count))
                guard var c = liveState[live[i]] else { continue }
                if c.proto == .tcp {
                    let next: [TCPState: TCPState] = [
                        .synSent: .established, .established: .finWait, .finWait: .timeWait, .timeWait: .timeWait,
                    ]
                    c.tcpState = next[c.tcpState] ?? .established
                    c.status.insert([.seenReply, .assured])
                    c.timeout = c.tcpState == .established ? 432_000 : 120
                } else {
                    c.status.insert(.seenReply)
                    c.timeout = UInt32(30 + rng.next() % 150)
                }
                liveState[c.key] = c
                out.append(.upsert(c))
            } else {
                let i = Int(rng.next() % UInt64(live.count))
                let key = live[i]
                live.swapAt(i, live.count - 1)
                live.removeLast()
                liveState[key] = nil
                out.append(.delete(key))
            }
        }
        return out
    }
}
