public import Foundation
import Logging
import NIOCore
import NIOPosix

/// The control socket: a Unix stream socket, one request line in, one reply line out, then
/// close. Readable by root only, or by a configured group too. A request that is not valid, too
/// long, or never ends gets an error reply; nothing it sends reaches the daemon otherwise.
final class ControlServer: Sendable {
    typealias Handler = @Sendable (ControlRequest) async -> ControlReply

    private let channel: any Channel
    let path: String

    private init(channel: any Channel, path: String) {
        self.channel = channel
        self.path = path
    }

    static func start(path: String, group: String?, eventLoops: any EventLoopGroup, logger: Logger,
                      handler: @escaping Handler) async throws -> ControlServer {
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        // Bound under a umask that leaves the socket owner-only from its first instant (the mode
        // is then set below); the umask is the process's, and goes back right after.
        let previousMask = umask(0o077)
        defer { umask(previousMask) }
        let channel = try await ServerBootstrap(group: eventLoops)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // A client that sends nothing for 10 s is closed.
                    try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: .seconds(10)))
                    try channel.pipeline.syncOperations.addHandler(ControlConnectionHandler(handler: handler, logger: logger))
                }
            }
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true)
            .get()
        // Root only, unless a group is configured: then that group may read and write too.
        var mode: mode_t = 0o600
        if let group {
            guard let gr = getgrnam(group) else {
                try? await channel.close()
                throw ControlSocketError(description: "control socket group \(group) does not exist")
            }
            if chown(path, 0, gr.pointee.gr_gid) != 0 {
                let reason = String(cString: strerror(errno))
                try? await channel.close()
                throw ControlSocketError(description: "cannot give the control socket \(path) to group \(group): \(reason)")
            }
            mode = 0o660
        }
        if chmod(path, mode) != 0 {
            let reason = String(cString: strerror(errno))
            try? await channel.close()
            throw ControlSocketError(description: "cannot set the mode of the control socket \(path): \(reason)")
        }
        return ControlServer(channel: channel, path: path)
    }

    func close() async {
        try? await channel.close()
        unlink(path)
    }
}

struct ControlSocketError: Error, CustomStringConvertible {
    var description: String
}

/// Reads one line (bounded), answers it, closes.
private final class ControlConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let handler: ControlServer.Handler
    private let logger: Logger
    private var buffer: [UInt8] = []
    private var answered = false
    private var replied = false
    private var inputClosed = false

    init(handler: @escaping ControlServer.Handler, logger: Logger) {
        self.handler = handler
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // After the answer, input is read and dropped until the client closes: closing with
        // unread input would reset the connection and destroy the reply in flight.
        guard !answered else { return }
        var bytes = unwrapInboundIn(data)
        buffer += bytes.readBytes(length: bytes.readableBytes) ?? []
        if let nl = buffer.firstIndex(of: 0x0A) {
            answered = true
            let line = buffer[..<nl]
            let request: ControlRequest
            do {
                request = try ControlRequest.decode(line)
            } catch {
                reply(.failure("\(error)"), context: context)
                return
            }
            let handler = self.handler
            let promise = context.eventLoop.makePromise(of: ControlReply.self)
            promise.completeWithTask { await handler(request) }
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            promise.futureResult.whenSuccess { r in
                let (me, ctx) = loopBound.value
                me.reply(r, context: ctx)
            }
        } else if buffer.count > ControlProtocol.maximumRequestBytes {
            answered = true
            reply(.failure("\(ControlRequestError.tooLong(buffer.count))"), context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            // While the daemon is still working on the request (a takeover may wait for queued
            // writes), the client waits for its answer: only an idle client is closed.
            if answered {
                if replied { context.close(promise: nil) }
                return
            }
            answered = true
            reply(.failure("no complete request within 10 s"), context: context)
        } else if case ChannelEvent.inputClosed = event {
            if answered {
                if replied { context.close(promise: nil) }
                inputClosed = true
                return
            }
            answered = true
            inputClosed = true
            reply(.failure("request ended without a newline"), context: context)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        buffer = []
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func reply(_ r: ControlReply, context: ChannelHandlerContext) {
        if !r.ok { logger.info("control request refused", metadata: ["error": "\(r.error ?? "")"]) }
        let data = r.encodedLine()
        var out = context.channel.allocator.buffer(capacity: data.count)
        out.writeBytes(data)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(out)).whenComplete { _ in
            let (me, ctx) = bound.value
            me.replied = true
            if me.inputClosed {
                ctx.close(promise: nil)
            } else {
                ctx.close(mode: .output, promise: nil)
            }
        }
    }
}

/// The client side, for the `keepstate` subcommands: one request, one reply.
public enum ControlClient {
    /// Why the exchange failed; `description` says what failed and what to do.
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// The message for a failed connect(2) to the control socket, with what to check.
    public static func connectFailure(socketPath: String, errno code: Int32) -> String {
        let why = String(cString: strerror(code))
        let hint: String
        switch code {
        case ENOENT:
            hint = "is `keepstate run` running? (see --socket)"
        case ECONNREFUSED:
            hint = "the socket file exists but no daemon listens on it: is `keepstate run` running? (see --socket)"
        case EACCES, EPERM:
            hint = "the control socket is for root, and for the group of `keepstate run --socket-group` if set: run as root or as a member of that group"
        case ENOTSOCK:
            hint = "that path is not a socket: --socket names another file"
        default:
            hint = "is `keepstate run` running? (see --socket)"
        }
        return "cannot connect to \(socketPath): \(why) — \(hint)"
    }

    public static func send(_ request: ControlRequest, socketPath: String, timeout: Duration = .seconds(30)) throws -> ControlReply {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var line = try encoder.encode(request)
        line.append(0x0A)
        let data = try exchange(line, socketPath: socketPath, timeout: timeout)
        let reply: ControlReply
        do {
            reply = try JSONDecoder().decode(ControlReply.self, from: data)
        } catch {
            if data.isEmpty {
                throw Failure(description: "the daemon at \(socketPath) closed the connection without a reply: see its log (journalctl -u keepstate)")
            }
            throw Failure(description: "the daemon's reply was not understood (\(data.count) bytes): is this keepstate the same version as the daemon?")
        }
        // A reply of another protocol version may mean other things by the same fields.
        guard reply.version == ControlProtocol.version else {
            throw Failure(description: "the daemon answered in control protocol version \(reply.version), this command speaks "
                + "\(ControlProtocol.version): run the keepstate that matches the daemon, or restart the daemon (systemctl restart keepstate)")
        }
        return reply
    }

    /// Writes raw bytes and reads until the daemon closes (tests use it for malformed input).
    public static func exchange(_ bytes: Data, socketPath: String, timeout: Duration = .seconds(30)) throws -> Data {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        defer { Glibc.close(fd) }
        var tv = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(socketPath.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            throw Failure(description: "control socket path longer than 107 bytes: \(socketPath) — choose a shorter --socket")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in pathBytes.enumerated() { raw[i] = b }
        }
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            throw Failure(description: connectFailure(socketPath: socketPath, errno: errno))
        }
        var sent = 0
        try bytes.withUnsafeBytes { raw in
            while sent < raw.count {
                let n = write(fd, raw.baseAddress! + sent, raw.count - sent)
                if n <= 0 { throw Failure(description: "writing the request to \(socketPath): \(String(cString: strerror(errno)))") }
                sent += n
            }
        }
        shutdown(fd, Int32(SHUT_WR))
        var reply = Data()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK {
                    throw Failure(description: "no reply from the daemon at \(socketPath) within \(timeout.components.seconds) s: it may be stuck; see its log (journalctl -u keepstate)")
                }
                throw Failure(description: "reading the reply from \(socketPath): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            reply.append(contentsOf: chunk[0..<n])
        }
        return reply
    }
}
