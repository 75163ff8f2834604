import ArgumentParser
import Foundation

// The drill's traffic generator: `keepstate drill-traffic server|client` (hidden), run by
// `keepstate drill` inside the server's and the clients' network namespaces.
//
// Both sides are one thread over non-blocking sockets: every `tick` they poll every socket once
// (poll(2) with a zero timeout) and drain each readable one until EAGAIN, so a burst of replies
// never waits for a later turn (ARCHITECTURE.md: a generator that reads one datagram per loop
// turn loses UDP replies). Reply times are therefore exact to one tick (default 2 ms).
//
// Messages are 16 bytes: flow number (UInt32), sequence (UInt32), send time (UInt64), in host
// order; the server echoes them unchanged (TCP: the byte stream; UDP: each datagram).
//
// Times are CLOCK_MONOTONIC nanoseconds: one clock for every namespace of the machine, so the
// drill compares the generators' times with its own.

/// CLOCK_MONOTONIC in nanoseconds.
func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

enum DrillWire {
    static let messageSize = 16

    static func message(flow: UInt32, seq: UInt32, now: UInt64) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: messageSize)
        withUnsafeBytes(of: flow) { out.replaceSubrange(0..<4, with: $0) }
        withUnsafeBytes(of: seq) { out.replaceSubrange(4..<8, with: $0) }
        withUnsafeBytes(of: now) { out.replaceSubrange(8..<16, with: $0) }
        return out
    }

    static func flow(of bytes: UnsafeRawBufferPointer) -> UInt32 { bytes.loadUnaligned(fromByteOffset: 0, as: UInt32.self) }
    static func seq(of bytes: UnsafeRawBufferPointer) -> UInt32 { bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self) }
    static func sentTime(of bytes: UnsafeRawBufferPointer) -> UInt64 { bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self) }

    static func address(_ ip: String, port: UInt16) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        _ = inet_pton(AF_INET, ip, &a.sin_addr)
        return a
    }

    static func describe(_ a: sockaddr_in) -> String {
        var addr = a.sin_addr
        var buf = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        inet_ntop(AF_INET, &addr, &buf, socklen_t(buf.count))
        return "\(String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)):\(UInt16(bigEndian: a.sin_port))"
    }

    static func setNonBlocking(_ fd: Int32) {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }

    static func setInt(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) {
        var v = value
        setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Raises the open-file limit to what `needed` sockets take (the soft limit is often 1,024).
    static func raiseFileLimit(_ needed: Int) {
        var r = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &r)
        let want = rlim_t(needed + 64)
        if r.rlim_cur < want {
            r.rlim_cur = min(want, r.rlim_max)
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &r)
        }
    }

    static func errorName(_ e: Int32) -> String { String(cString: strerror(e)) }

    /// SO_TIMESTAMPNS (asm-generic/socket.h: SO_TIMESTAMPNS_OLD, the 64-bit timespec on 64-bit
    /// hosts); Glibc's macro chooses it by an expression Swift does not import. Its control
    /// message type (SCM_TIMESTAMPNS) is the same number.
    static let soTimestampNS: Int32 = 35

    /// recv(2) through recvmsg(2), returning in `kernelTime` the kernel's receive time of the
    /// data (CLOCK_REALTIME ns, from SO_TIMESTAMPNS; 0 when the kernel gave none).
    static func receive(_ fd: Int32, _ buf: inout [UInt8], kernelTime: inout UInt64) -> Int {
        // cmsghdr (len: size_t, level: int, type: int) then the timespec, 8-aligned: 16 + 16 bytes.
        // On the stack: this runs for every read of every flow.
        buf.withUnsafeMutableBytes { data in
            withUnsafeTemporaryAllocation(byteCount: 64, alignment: 8) { ctl in
                var iov = iovec(iov_base: data.baseAddress, iov_len: data.count)
                return withUnsafeMutablePointer(to: &iov) { iovp in
                    var msg = msghdr()
                    msg.msg_iov = iovp
                    msg.msg_iovlen = 1
                    msg.msg_control = ctl.baseAddress
                    msg.msg_controllen = ctl.count
                    let n = recvmsg(fd, &msg, 0)
                    guard n > 0, msg.msg_controllen >= 32 else { return n }
                    let len = ctl.load(fromByteOffset: 0, as: Int.self)
                    let level = ctl.load(fromByteOffset: 8, as: Int32.self)
                    let type = ctl.load(fromByteOffset: 12, as: Int32.self)
                    if len >= 32, level == SOL_SOCKET, type == soTimestampNS {
                        let sec = ctl.load(fromByteOffset: 16, as: Int64.self)
                        let nsec = ctl.load(fromByteOffset: 24, as: Int64.self)
                        if sec > 0 { kernelTime = UInt64(sec) * 1_000_000_000 + UInt64(nsec) }
                    }
                    return n
                }
            }
        }
    }

    /// Writes one line to standard output at once.
    static func say(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        var off = 0
        bytes.withUnsafeBytes { raw in
            while off < raw.count {
                let n = write(1, raw.baseAddress! + off, raw.count - off)
                if n <= 0 { if errno == EINTR { continue }; return }
                off += n
            }
        }
    }

    static func jsonLine(_ value: some Encodable) -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return String(decoding: (try? e.encode(value)) ?? Data("{}".utf8), as: UTF8.self)
    }

    static func sleep(until deadline: UInt64) {
        let now = monotonicNanoseconds()
        guard deadline > now else { return }
        var ts = timespec(tv_sec: Int((deadline - now) / 1_000_000_000), tv_nsec: Int((deadline - now) % 1_000_000_000))
        var left = timespec()
        while nanosleep(&ts, &left) != 0 && errno == EINTR { ts = left }
    }
}

/// Lines on standard input (the drill's commands), read without blocking.
struct StdinLines {
    private var pending: [UInt8] = []
    private(set) var closed = false

    init() { DrillWire.setNonBlocking(0) }

    mutating func read() -> [String] {
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = Glibc.read(0, &buf, buf.count)
            if n > 0 { pending.append(contentsOf: buf[0..<n]); continue }
            if n == 0 { closed = true }
            break
        }
        var lines: [String] = []
        while let nl = pending.firstIndex(of: 0x0A) {
            lines.append(String(decoding: pending[..<nl], as: UTF8.self))
            pending.removeSubrange(...nl)
        }
        return lines
    }
}

// MARK: - reports

/// What the server saw of one UDP flow: every source address (the NAT's outside address and
/// port) with the time it first appeared. More than one source means the flow was re-NATed.
public struct DrillUDPFlowSeen: Codable, Sendable, Equatable {
    public var flow: UInt32
    public var sources: [String]
    public var firstSeen: [UInt64]
}

public struct DrillServerReport: Codable, Sendable, Equatable {
    public var tcpAccepted: Int
    public var tcpResets: Int
    public var tcpClosed: Int
    public var tcpEchoed: Int
    public var udpEchoed: Int
    public var udpFlows: [DrillUDPFlowSeen]
}

/// One flow as the client saw it.
public struct DrillFlowRecord: Codable, Sendable, Equatable {
    public var flow: UInt32
    public var proto: String
    /// The client's own address and port (before NAT).
    public var local: String
    public var sent: Int
    public var received: Int
    /// Messages that could not be sent (socket buffer full or an error).
    public var sendFailed: Int
    public var firstReply: UInt64?
    public var lastReply: UInt64?
    /// Reply gaps longer than the client's gap threshold: [last reply before, first reply after].
    public var gaps: [[UInt64]]
    /// `open`, `reset` (ECONNRESET/EPIPE), `closed` (the server's FIN), `error` or `connect-failed`.
    public var status: String
    public var error: String?
    public var endedAt: UInt64?
    /// Per mark (in the order the drill set them): the last reply received at or before the
    /// mark's time, and the first reply to a message sent after it (nil: none yet).
    public var markBefore: [UInt64?]
    public var markAfter: [UInt64?]
    /// The same two per mark, by the kernel's receive time of the reply (SO_TIMESTAMPNS) instead
    /// of the moment the generator read it: what the network did, without the generator's own
    /// scheduling delay on a busy machine. Empty from a generator that had none.
    public var kernelMarkBefore: [UInt64?] = []
    public var kernelMarkAfter: [UInt64?] = []
    /// TCP: the connection's retransmissions so far (TCP_INFO `tcpi_total_retrans`, timer and
    /// loss-probe retransmissions alike) at each mark, and at the end of the run (nil: closed).
    public var retransmitsAtMark: [UInt32?] = []
    public var retransmitsAtEnd: UInt32?
    /// TCP: when the clients' host sent the flow's data segments (new data and retransmissions
    /// alike), by the kernel's transmit tap, from the drill's `tap` (just before the failure)
    /// until a second after every flow answered again; at most `tapLimit`. Nil: no tap.
    public var transmits: [UInt64]?
    /// TCP: when segments of the flow (data or bare ACKs) arrived at the clients' host, by the
    /// receive side of the same tap, over the same time; at most `tapLimit`.
    public var arrivals: [UInt64]?

    /// The most times of each kind the taps keep per flow; a flow that reached it is left out
    /// of the stall's split (its transmission that crossed may be past the end).
    public static let tapLimit = 128
}

public struct DrillClientReport: Codable, Sendable, Equatable {
    public var started: UInt64
    public var stopped: UInt64
    public var marks: [UInt64]
    public var gapThreshold: UInt64
    public var flows: [DrillFlowRecord]
    /// The client loop's longest wake-up delay between the first mark and the second (ns): how long
    /// the generator waited for a CPU between the failure and the return.
    public var lateAfterMark: UInt64 = 0
    /// Why the transmit tap could not be opened (nil: it was, or none was asked for), and the
    /// segments the taps lost: dropped by the kernel for want of buffer, or without a time.
    public var tapError: String?
    public var tapDrops: UInt32?
}

/// The client's answer to `since T`.
public struct DrillClientProgress: Codable, Sendable, Equatable {
    public var since: UInt64
    /// Flows with a reply after `since`.
    public var replied: Int
    /// Flows that ended (reset, closed, error).
    public var ended: Int
    public var flows: Int
}

// MARK: - commands

struct DrillTraffic: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drill-traffic",
        abstract: "The failover drill's traffic generator (run by `keepstate drill`).",
        discussion: """
            Runs until `stop` or the end of standard input, then prints its report as one line \
            of JSON.

            Example (what the drill runs, each inside its namespace):
              keepstate drill-traffic server --address 198.51.100.10 --port 7000
              keepstate drill-traffic client --server 198.51.100.10 --port 7000 --tcp 100 --udp 20
            """,
        shouldDisplay: false,
        subcommands: [Server.self, Client.self])

    struct Server: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "TCP and UDP echo. Prints `ready`, then the report after `stop`.",
            discussion: """
                Example:
                  keepstate drill-traffic server --address 198.51.100.10 --port 7000
                """)
        @Option(help: "Address to listen on.") var address = "0.0.0.0"
        @Option(help: "TCP and UDP port.") var port: UInt16 = 7000
        @Option(help: "Milliseconds per loop turn.") var tickMs = 2

        func run() throws {
            var server = try EchoServer(address: address, port: port)
            DrillWire.say("ready")
            server.run(tick: UInt64(max(1, tickMs)) * 1_000_000)
            DrillWire.say(DrillWire.jsonLine(server.report()))
        }
    }

    struct Client: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "TCP and UDP flows to the echo server, one message each per interval.",
            discussion: """
                Prints `ready` once every flow has had a reply. Commands on standard input: \
                `mark T` (a time of interest, CLOCK_MONOTONIC ns), `since T` (answers one line of \
                JSON: flows replied after T), `stop` (then the report).

                Example:
                  keepstate drill-traffic client --server 198.51.100.10 --tcp 100 --udp 20
                """)
        @Option(help: "The echo server's address.") var server: String
        @Option(help: "TCP and UDP port of the server.") var port: UInt16 = 7000
        @Option(help: "TCP connections.") var tcp = 100
        @Option(help: "UDP flows.") var udp = 20
        @Option(help: "Milliseconds between two messages of one flow.") var intervalMs = 50
        @Option(help: "Milliseconds per loop turn.") var tickMs = 2
        @Option(help: "Reply gaps longer than this many milliseconds are recorded.") var gapMs = 120

        func run() throws {
            var client = try FlowClient(
                server: server, port: port, tcp: tcp, udp: udp,
                interval: UInt64(intervalMs) * 1_000_000, gapThreshold: UInt64(gapMs) * 1_000_000)
            client.run(tick: UInt64(max(1, tickMs)) * 1_000_000)
            DrillWire.say(DrillWire.jsonLine(client.report()))
        }
    }
}

// MARK: - server

struct EchoServer {
    struct Connection {
        var fd: Int32
        var pending: [UInt8] = []
    }

    let listener: Int32
    let udp: Int32
    var connections: [Int32: Connection] = [:]
    var udpSeen: [UInt32: DrillUDPFlowSeen] = [:]
    var accepted = 0, resets = 0, closed = 0, tcpEchoed = 0, udpEchoed = 0
    var stdin = StdinLines()

    init(address: String, port: UInt16) throws {
        DrillWire.raiseFileLimit(16384)
        var addr = DrillWire.address(address, port: port)
        listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        udp = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard listener >= 0, udp >= 0 else { throw ValidationError("socket: \(DrillWire.errorName(errno))") }
        DrillWire.setInt(listener, SOL_SOCKET, SO_REUSEADDR, 1)
        DrillWire.setInt(udp, SOL_SOCKET, SO_RCVBUF, 8 << 20)
        DrillWire.setInt(udp, SOL_SOCKET, SO_SNDBUF, 8 << 20)
        for fd in [listener, udp] {
            let r = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard r == 0 else { throw ValidationError("bind \(address):\(port): \(DrillWire.errorName(errno))") }
            DrillWire.setNonBlocking(fd)
        }
        guard listen(listener, 4096) == 0 else { throw ValidationError("listen: \(DrillWire.errorName(errno))") }
    }

    mutating func run(tick: UInt64) {
        var buf = [UInt8](repeating: 0, count: 65536)
        var next = monotonicNanoseconds()
        var fds: [pollfd] = []
        var dirty = true
        while true {
            for line in stdin.read() where line == "stop" { return }
            if stdin.closed { return }
            if dirty {
                fds = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0), pollfd(fd: udp, events: Int16(POLLIN), revents: 0)]
                fds += connections.keys.sorted().map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
                dirty = false
            }
            for i in fds.indices {
                fds[i].revents = 0
                if i >= 2, let c = connections[fds[i].fd] { fds[i].events = Int16(POLLIN) | (c.pending.isEmpty ? 0 : Int16(POLLOUT)) }
            }
            let ready = poll(&fds, nfds_t(fds.count), 0)
            let now = monotonicNanoseconds()
            if ready > 0 {
                for i in fds.indices where fds[i].revents != 0 {
                    let fd = fds[i].fd
                    if fd == listener {
                        while true {
                            let c = accept(listener, nil, nil)
                            if c < 0 { break }
                            DrillWire.setNonBlocking(c)
                            DrillWire.setInt(c, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
                            connections[c] = Connection(fd: c)
                            accepted += 1
                            dirty = true
                        }
                    } else if fd == udp {
                        drainUDP(&buf, now: now)
                    } else if serve(fd, &buf) == false {
                        close(fd)
                        connections[fd] = nil
                        dirty = true
                    }
                }
            }
            next += tick
            if next < monotonicNanoseconds() { next = monotonicNanoseconds() }
            DrillWire.sleep(until: next)
        }
    }

    /// Reads everything the connection has and echoes it. False when the connection ended.
    mutating func serve(_ fd: Int32, _ buf: inout [UInt8]) -> Bool {
        var c = connections[fd]!
        defer { connections[fd] = c }
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n > 0 {
                c.pending.append(contentsOf: buf[0..<n])
                tcpEchoed += n / DrillWire.messageSize
                continue
            }
            if n == 0 { closed += 1; return false }
            if errno == EAGAIN || errno == EWOULDBLOCK { break }
            if errno == EINTR { continue }
            resets += 1
            return false
        }
        while !c.pending.isEmpty {
            let n = c.pending.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 { c.pending.removeFirst(n); continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
            if n < 0 && errno == EINTR { continue }
            resets += 1
            return false
        }
        return true
    }

    mutating func drainUDP(_ buf: inout [UInt8], now: UInt64) {
        while true {
            var from = sockaddr_in()
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let n = withUnsafeMutablePointer(to: &from) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(udp, &buf, buf.count, 0, $0, &len) }
            }
            if n < 0 { if errno == EINTR { continue }; return }
            if n >= DrillWire.messageSize {
                let flow = buf.withUnsafeBytes { DrillWire.flow(of: $0) }
                let source = DrillWire.describe(from)
                var seen = udpSeen[flow] ?? DrillUDPFlowSeen(flow: flow, sources: [], firstSeen: [])
                if seen.sources.last != source && seen.sources.count < 16 && !seen.sources.contains(source) {
                    seen.sources.append(source)
                    seen.firstSeen.append(now)
                }
                udpSeen[flow] = seen
            }
            _ = withUnsafePointer(to: &from) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(udp, buf, n, Int32(MSG_NOSIGNAL), $0, len)
                }
            }
            udpEchoed += 1
        }
    }

    func report() -> DrillServerReport {
        DrillServerReport(
            tcpAccepted: accepted, tcpResets: resets, tcpClosed: closed, tcpEchoed: tcpEchoed, udpEchoed: udpEchoed,
            udpFlows: udpSeen.values.sorted { $0.flow < $1.flow })
    }
}

// MARK: - client

struct FlowClient {
    struct Flow {
        var record: DrillFlowRecord
        var fd: Int32
        var isTCP: Bool
        /// The local port (host order): the tap's key.
        var port: UInt16 = 0
        var nextDue: UInt64
        var seq: UInt32 = 0
        var partial: [UInt8] = []
        /// The last few replies (reply time, the message's send time), for marks that arrive a
        /// little after their time.
        var recent: [(reply: UInt64, kernel: UInt64, sent: UInt64)] = []
        /// The send time of the newest message answered.
        var lastAnsweredSent: UInt64 = 0
    }

    var flows: [Flow] = []
    let interval: UInt64
    let gapThreshold: UInt64
    let started: UInt64
    var marks: [UInt64] = []
    var stdin = StdinLines()
    var announcedReady = false
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC (ns): turns the kernel's receive timestamps
    /// (realtime) into the drill's clock.
    let realtimeOffset: Int64
    /// The loop's longest lateness between the first mark and the second (ns): how long the generator
    /// itself waited for a CPU between the failure and the return.
    var lateAfterMark: UInt64 = 0
    /// The transmit tap (`tap` command) and when it closes; flows by local port.
    var tap: TransmitTap?
    var arrivalTap: TransmitTap?
    var tapOpened: UInt64 = 0
    var tapError: String?
    var tapDrops: UInt32?
    var byPort: [UInt16: Int] = [:]

    init(server: String, port: UInt16, tcp: Int, udp: Int, interval: UInt64, gapThreshold: UInt64) throws {
        DrillWire.raiseFileLimit(tcp + udp + 64)
        self.interval = interval
        self.gapThreshold = gapThreshold
        var addr = DrillWire.address(server, port: port)
        let total = tcp + udp
        let now = monotonicNanoseconds()
        var real = timespec()
        clock_gettime(CLOCK_REALTIME, &real)
        realtimeOffset = Int64(real.tv_sec) * 1_000_000_000 + Int64(real.tv_nsec) - Int64(monotonicNanoseconds())
        started = now
        for i in 0..<total {
            let isTCP = i < tcp
            let fd = socket(AF_INET, Int32((isTCP ? SOCK_STREAM : SOCK_DGRAM).rawValue), 0)
            guard fd >= 0 else { throw ValidationError("socket: \(DrillWire.errorName(errno))") }
            if isTCP { DrillWire.setInt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1) }
            DrillWire.setInt(fd, SOL_SOCKET, DrillWire.soTimestampNS, 1)
            let r = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            var local = sockaddr_in()
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
            }
            DrillWire.setNonBlocking(fd)
            var record = DrillFlowRecord(
                flow: UInt32(i), proto: isTCP ? "tcp" : "udp", local: DrillWire.describe(local), sent: 0, received: 0,
                sendFailed: 0, firstReply: nil, lastReply: nil, gaps: [], status: "open", error: nil, endedAt: nil,
                markBefore: [], markAfter: [], kernelMarkBefore: [], kernelMarkAfter: [])
            if r != 0 {
                record.status = "connect-failed"
                record.error = DrillWire.errorName(errno)
                record.endedAt = now
            }
            // Spread the flows over one interval.
            let port = UInt16(bigEndian: local.sin_port)
            flows.append(Flow(record: record, fd: fd, isTCP: isTCP, port: port, nextDue: now + interval * UInt64(i) / UInt64(max(1, total))))
            if isTCP { byPort[port] = i }
        }
    }

    mutating func run(tick: UInt64) {
        var buf = [UInt8](repeating: 0, count: 65536)
        var fds = flows.map { pollfd(fd: $0.record.status == "open" ? $0.fd : -1, events: Int16(POLLIN), revents: 0) }
        var next = monotonicNanoseconds()
        var stopAt: UInt64?
        while true {
            for line in stdin.read() { handle(line, stopAt: &stopAt) }
            if stdin.closed && stopAt == nil { stopAt = monotonicNanoseconds() + 300_000_000 }
            // The taps (one read each while nothing is queued).
            readTap(closing: stopAt != nil)
            for i in fds.indices { fds[i].revents = 0 }
            let ready = poll(&fds, nfds_t(fds.count), 0)
            let now = monotonicNanoseconds()
            if ready > 0 {
                for i in fds.indices where fds[i].revents != 0 && flows[i].record.status == "open" {
                    receive(i, &buf, now: now)
                    if flows[i].record.status != "open" { fds[i].fd = -1 }
                }
            }
            if let stopAt {
                if now >= stopAt { return }
            } else {
                for i in flows.indices where flows[i].nextDue <= now && flows[i].record.status == "open" {
                    sendOne(i, now: now)
                    if flows[i].record.status != "open" { fds[i].fd = -1 }
                    flows[i].nextDue += interval
                    if flows[i].nextDue <= now {
                        // The loop was late (the machine was busy): the missed turns are skipped,
                        // the flow keeps its place in the interval. Moving every late flow to
                        // `now + interval` put them all on one tick after the first stall, so a
                        // run's stalls all carried the same 0-50 ms offset from where the failure
                        // fell in that one cycle.
                        flows[i].nextDue += (now - flows[i].nextDue) / interval * interval + interval
                    }
                }
            }
            if !announcedReady && flows.allSatisfy({ $0.record.firstReply != nil || $0.record.status != "open" }) {
                announcedReady = true
                let failed = flows.filter { $0.record.status != "open" }
                DrillWire.say(failed.isEmpty ? "ready" : "not-ready \(failed.count) flows failed: \(failed.first!.record.error ?? failed.first!.record.status)")
            }
            next += tick
            let done = monotonicNanoseconds()
            if next < done { next = done }  // the turn's work overran its tick: the next at once
            DrillWire.sleep(until: next)
            // How late it woke (not how long its own work took).
            let woke = monotonicNanoseconds()
            if marks.count == 1, woke > next { lateAfterMark = max(lateAfterMark, woke - next) }
        }
    }

    mutating func handle(_ line: String, stopAt: inout UInt64?) {
        let words = line.split(separator: " ")
        switch words.first {
        case "stop":
            // Stop sending; replies still in flight have 300 ms to arrive.
            if stopAt == nil { stopAt = monotonicNanoseconds() + 300_000_000 }
        case "mark":
            guard words.count == 2, let t = UInt64(words[1]) else { return }
            marks.append(t)
            for i in flows.indices { flows[i].record.retransmitsAtMark.append(retransmits(i)) }
            for i in flows.indices {
                let r = flows[i].recent
                flows[i].record.markBefore.append(r.last { $0.reply <= t }?.reply)
                flows[i].record.markAfter.append(r.first { $0.sent > t }?.reply)
                flows[i].record.kernelMarkBefore.append(r.last { $0.kernel <= t }?.kernel)
                flows[i].record.kernelMarkAfter.append(r.first { $0.sent > t }?.kernel)
            }
        case "tap":
            openTap()
            DrillWire.say(tapError.map { "tap failed: \($0)" } ?? "tap open")
        case "since":
            guard words.count == 2, let t = UInt64(words[1]) else { return }
            let replied = flows.filter { $0.lastAnsweredSent > t }.count
            let ended = flows.filter { $0.record.status != "open" }.count
            DrillWire.say(DrillWire.jsonLine(DrillClientProgress(since: t, replied: replied, ended: ended, flows: flows.count)))
        default:
            break
        }
    }

    /// Opens the transmit tap (the drill says `tap` just before the failure).
    mutating func openTap() {
        guard tap == nil, tapOpened == 0 else { return }
        tapOpened = monotonicNanoseconds()
        switch (TransmitTap.open(.outgoing), TransmitTap.open(.arriving)) {
        case (.success(let out), .success(let arriving)):
            tap = out
            arrivalTap = arriving
            for i in flows.indices where flows[i].isTCP {
                flows[i].record.transmits = []
                flows[i].record.arrivals = []
            }
        case (.failure(let e), let other), (let other, .failure(let e)):
            tapError = e.description
            if case .success(let t) = other { t.close() }
        }
    }

    /// Records what the taps saw; closes them a second after every TCP flow answered again
    /// after the first mark, 15 s after they opened, or when the client stops. A flow keeps at
    /// most `DrillFlowRecord.tapLimit` times of each kind.
    mutating func readTap(closing: Bool) {
        guard let t = tap, let a = arrivalTap else { return }
        let offset = realtimeOffset
        let limit = DrillFlowRecord.tapLimit
        a.drain { port, realtime in
            guard let i = byPort[port], (flows[i].record.arrivals?.count ?? limit) < limit else { return }
            flows[i].record.arrivals!.append(UInt64(clamping: Int64(realtime) - offset))
        }
        t.drain { port, realtime in
            guard let i = byPort[port], (flows[i].record.transmits?.count ?? limit) < limit else { return }
            flows[i].record.transmits!.append(UInt64(clamping: Int64(realtime) - offset))
        }
        let now = monotonicNanoseconds()
        var done = closing || now - tapOpened > 15_000_000_000
        if !done, !marks.isEmpty {
            // TCP flows only (the taps record nothing of UDP ones).
            var latest: UInt64 = 0
            done = flows.allSatisfy { f in
                guard f.isTCP, f.record.status == "open" else { return true }
                guard let a = f.record.markAfter.first ?? nil else { return false }
                latest = max(latest, a)
                return true
            } && now > latest + 1_000_000_000
        }
        if done {
            // Lost to the record: dropped by the kernel for want of buffer, or without a time.
            tapDrops = (t.takeDrops() ?? 0) &+ (a.takeDrops() ?? 0) &+ t.unstamped &+ a.unstamped
            t.close()
            a.close()
            tap = nil
            arrivalTap = nil
        }
    }

    mutating func sendOne(_ i: Int, now: UInt64) {
        let msg = DrillWire.message(flow: flows[i].record.flow, seq: flows[i].seq, now: now)
        let n = msg.withUnsafeBytes { send(flows[i].fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n == DrillWire.messageSize {
            flows[i].seq &+= 1
            flows[i].record.sent += 1
            return
        }
        let e = errno
        flows[i].record.sendFailed += 1
        guard n < 0, flows[i].isTCP else { return }
        switch e {
        case EAGAIN, EWOULDBLOCK, EINTR: break
        case ECONNRESET, EPIPE: end(i, status: "reset", error: DrillWire.errorName(e), now: now)
        default: end(i, status: "error", error: DrillWire.errorName(e), now: now)
        }
    }

    mutating func receive(_ i: Int, _ buf: inout [UInt8], now: UInt64) {
        while true {
            var kernel: UInt64 = 0
            let n = DrillWire.receive(flows[i].fd, &buf, kernelTime: &kernel)
            // The kernel's receive time in the drill's clock; the read's when it gave none.
            let at = kernel > 0 ? UInt64(clamping: Int64(kernel) - realtimeOffset) : now
            if n > 0 {
                if flows[i].isTCP {
                    flows[i].partial.append(contentsOf: buf[0..<n])
                    let whole = flows[i].partial.count / DrillWire.messageSize
                    if whole > 0 {
                        let sent = flows[i].partial.withUnsafeBytes { raw in
                            (0..<whole).map { DrillWire.sentTime(of: UnsafeRawBufferPointer(rebasing: raw[($0 * DrillWire.messageSize)...])) }
                        }
                        flows[i].partial.removeFirst(whole * DrillWire.messageSize)
                        replied(i, sent: sent, now: now, kernel: min(at, now))
                    }
                } else if n >= DrillWire.messageSize {
                    replied(i, sent: [buf.withUnsafeBytes { DrillWire.sentTime(of: $0) }], now: now, kernel: min(at, now))
                }
                continue
            }
            if n == 0 {
                if flows[i].isTCP { end(i, status: "closed", error: nil, now: now) }
                return
            }
            let e = errno
            switch e {
            case EAGAIN, EWOULDBLOCK: return
            case EINTR: continue
            case ECONNREFUSED where !flows[i].isTCP:
                // ICMP port unreachable on a UDP flow: counted as a loss, the flow goes on.
                flows[i].record.sendFailed += 1
                continue
            case ECONNRESET, EPIPE: end(i, status: "reset", error: DrillWire.errorName(e), now: now); return
            default: end(i, status: "error", error: DrillWire.errorName(e), now: now); return
            }
        }
    }

    /// Replies to messages sent at `sent`, received `now`. A mark counts as answered only by a
    /// reply to a message sent after it: replies already in flight when the links went down
    /// say nothing about the new path.
    mutating func replied(_ i: Int, sent: [UInt64], now: UInt64, kernel: UInt64) {
        if let last = flows[i].record.lastReply, now - last > gapThreshold, flows[i].record.gaps.count < 64 {
            flows[i].record.gaps.append([last, now])
        }
        if flows[i].record.firstReply == nil { flows[i].record.firstReply = now }
        flows[i].record.lastReply = now
        flows[i].record.received += sent.count
        let newest = sent.max() ?? 0
        flows[i].lastAnsweredSent = max(flows[i].lastAnsweredSent, newest)
        flows[i].recent.append((now, kernel, newest))
        if flows[i].recent.count > 8 { flows[i].recent.removeFirst() }
        for m in marks.indices where flows[i].record.markAfter[m] == nil && newest > marks[m] {
            flows[i].record.markAfter[m] = now
            flows[i].record.kernelMarkAfter[m] = kernel
        }
    }

    mutating func end(_ i: Int, status: String, error: String?, now: UInt64) {
        flows[i].record.status = status
        flows[i].record.error = error
        flows[i].record.endedAt = now
        close(flows[i].fd)
    }

    /// A TCP flow's retransmissions so far (nil: UDP, or the connection is closed).
    func retransmits(_ i: Int) -> UInt32? {
        guard flows[i].isTCP, flows[i].record.status == "open" else { return nil }
        var info = tcp_info()
        var len = socklen_t(MemoryLayout<tcp_info>.size)
        guard getsockopt(flows[i].fd, Int32(IPPROTO_TCP), TCP_INFO, &info, &len) == 0 else { return nil }
        return info.tcpi_total_retrans
    }

    mutating func report() -> DrillClientReport {
        for i in flows.indices { flows[i].record.retransmitsAtEnd = retransmits(i) }
        if tap != nil { readTap(closing: true) }
        return DrillClientReport(started: started, stopped: monotonicNanoseconds(), marks: marks, gapThreshold: gapThreshold,
                          flows: flows.map(\.record), lateAfterMark: lateAfterMark, tapError: tapError, tapDrops: tapDrops)
    }
}
