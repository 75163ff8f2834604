import ConntrackModel
import SyncPolicy

/// Seconds since the test's origin.
func at(_ seconds: Double) -> PolicyInstant {
    PolicyInstant(nanoseconds: Int64((seconds * 1_000_000_000).rounded()))
}

func tcp(_ n: UInt32, state: TCPState = .established, timeout: UInt32 = 432_000,
         status: ConntrackStatus = [.seenReply, .assured, .confirmed]) -> Conntrack {
    Conntrack(
        family: .ipv4, proto: .tcp,
        original: ConntrackTuple(source: IPAddressBits(ipv4: 0x0A00_0000 | n), destination: IPAddressBits(ipv4: 0xC000_0201),
                                 sourcePort: UInt16(truncatingIfNeeded: 1024 + n), destinationPort: 443),
        tcpState: state, status: status, timeout: timeout)
}

func udp(_ n: UInt32, timeout: UInt32 = 30, status: ConntrackStatus = [.seenReply, .confirmed],
         proto: IPProtocolNumber = .udp) -> Conntrack {
    Conntrack(
        family: .ipv4, proto: proto,
        original: ConntrackTuple(source: IPAddressBits(ipv4: 0x0A01_0000 | n), destination: IPAddressBits(ipv4: 0x0808_0808),
                                 sourcePort: UInt16(truncatingIfNeeded: 2048 + n), destinationPort: 53),
        status: status, timeout: timeout)
}

func icmp(_ n: UInt32, timeout: UInt32 = 30, status: ConntrackStatus = [.seenReply, .confirmed]) -> Conntrack {
    Conntrack(
        family: .ipv4, proto: .icmp,
        original: ConntrackTuple(source: IPAddressBits(ipv4: 0x0A02_0000 | n), destination: IPAddressBits(ipv4: 0x0101_0101),
                                 sourcePort: UInt16(truncatingIfNeeded: n), destinationPort: 0x0800),
        status: status, timeout: timeout)
}

extension Conntrack {
    func with(timeout: UInt32) -> Conntrack {
        var c = self
        c.timeout = timeout
        return c
    }

    func with(state: TCPState) -> Conntrack {
        var c = self
        c.tcpState = state
        return c
    }
}

/// A backup's view of records: the latest record per key, in the order they arrive (the order
/// the policy produced them: one connection per key keeps it).
struct BackupModel {
    var held: [ConntrackKey: SyncRecord] = [:]

    mutating func apply(_ r: SyncRecord) {
        switch r.update {
        case .upsert: held[r.key] = r
        case .delete: held[r.key] = nil
        }
    }
}
