public import NIOCore
import NIOHTTP1
import NIOPosix

/// The Prometheus endpoint: an HTTP/1.1 listener that answers `GET /metrics` (and `HEAD`) with
/// the text `render` returns, any other path 404 and any other method 405.
public final class MetricsHTTPServer: Sendable {
    private let channel: any Channel
    private let group: MultiThreadedEventLoopGroup?

    /// The port bound (the configured one, or the kernel's choice for port 0).
    public let port: Int

    private init(channel: any Channel, group: MultiThreadedEventLoopGroup?) {
        self.channel = channel
        self.group = group
        self.port = channel.localAddress?.port ?? 0
    }

    /// Binds `host:port` (port 0: an ephemeral port, see `port`). `render` runs for each scrape
    /// (in a task; the answer is written on the connection's event loop).
    public static func start(host: String, port: Int, group: (any EventLoopGroup)? = nil,
                             render: @escaping @Sendable () async -> String) async throws -> MetricsHTTPServer {
        let own = group == nil ? MultiThreadedEventLoopGroup(numberOfThreads: 1) : nil
        let elg: any EventLoopGroup = group ?? own!
        do {
            let channel = try await ServerBootstrap(group: elg)
                .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                        try channel.pipeline.syncOperations.addHandler(MetricsHandler(render: render))
                    }
                }
                .bind(host: host, port: port).get()
            return MetricsHTTPServer(channel: channel, group: own)
        } catch {
            try? await own?.shutdownGracefully()
            throw error
        }
    }

    /// Closes the listener (and the event loop it made, if any).
    public func stop() async {
        try? await channel.close()
        try? await group?.shutdownGracefully()
    }
}

private final class MetricsHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let render: @Sendable () async -> String
    private var head: HTTPRequestHead?

    init(render: @escaping @Sendable () async -> String) { self.render = render }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let h = head else { return }
            head = nil
            respond(context: context, to: h)
        }
    }

    private func respond(context: ChannelHandlerContext, to request: HTTPRequestHead) {
        let path = request.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        let status: HTTPResponseStatus
        let body: String
        let contentType = "text/plain; charset=utf-8"
        if path != "/metrics" {
            status = .notFound
            body = "not found; the metrics are at /metrics\n"
        } else if request.method != .GET && request.method != .HEAD {
            status = .methodNotAllowed
            body = "method not allowed\n"
        } else {
            let promise = context.eventLoop.makePromise(of: String.self)
            promise.completeWithTask(render)
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            promise.futureResult.whenSuccess { text in
                let (handler, context) = bound.value
                handler.write(context: context, request: request, status: .ok, body: text,
                              contentType: "text/plain; version=0.0.4; charset=utf-8")
            }
            return
        }
        write(context: context, request: request, status: status, body: body, contentType: contentType)
    }

    private func write(context: ChannelHandlerContext, request: HTTPRequestHead, status: HTTPResponseStatus,
                       body: String, contentType: String) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        if status == .methodNotAllowed { headers.add(name: "Allow", value: "GET, HEAD") }
        let keepAlive = request.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        var head = HTTPResponseHead(version: request.version, status: status, headers: headers)
        head.headers.replaceOrAdd(name: "Server", value: "keepstate")
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if request.method != .HEAD {
            var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
            buffer.writeString(body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
            done.whenComplete { _ in ctx.value.close(promise: nil) }
        }
    }
}
