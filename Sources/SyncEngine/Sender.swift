import ConntrackModel
import Dataplane
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SyncProtocol

/// One sync connection to the peer and the share of the table it carries.
///
/// Confined to one event loop: every method runs on `loop` (the dataplane's sink hops there with
/// `execute`), which is what keeps a share's updates, its resync snapshot and its frames in one
/// order. That confinement is why the class is `@unchecked Sendable`.
final class ShareConnection: @unchecked Sendable {
    let index: Int
    let loop: any EventLoop
    private let settings: SyncSettings
    private let tls: TLSMaterial
    private let dataplane: any Dataplane
    private var logger: Logger

    private var sender: ShareSender
    private var session = SenderSession()
    private var liveness: Liveness?
    private var backoff = ReconnectBackoff()
    private var rng: SplitMix64
    private var channel: (any Channel)?
    private var timer: RepeatedTask?
    private var stopped = false
    private var pumpScheduled = false
    private var stats: ConnectionStatistics
    private var peerPort: Int

    init(index: Int, loop: any EventLoop, settings: SyncSettings, tls: TLSMaterial, dataplane: any Dataplane, logger: Logger, seed: UInt64) {
        self.index = index
        self.loop = loop
        self.settings = settings
        self.tls = tls
        self.dataplane = dataplane
        var logger = logger
        logger[metadataKey: "connection"] = "\(index)"
        self.logger = logger
        self.rng = SplitMix64(seed: seed)
        self.sender = ShareSender(queueLimit: settings.queueLimit, firstGeneration: UInt32(truncatingIfNeeded: seed >> 32))
        self.stats = ConnectionStatistics(index: index)
        self.peerPort = settings.peerPort
    }

    // MARK: lifecycle (all on `loop`)

    func start(peerPort: Int?) {
        loop.preconditionInEventLoop()
        if let peerPort { self.peerPort = peerPort }
        stopped = false
        let half = TimeAmount.nanoseconds(max(settings.heartbeatInterval.nanoseconds / 2, 1_000_000))
        timer = loop.scheduleRepeatedTask(initialDelay: half, delay: half) { [self] _ in tick() }
        connect()
    }

    func stop() {
        loop.preconditionInEventLoop()
        stopped = true
        timer?.cancel()
        timer = nil
        sender.setConnected(false)
        stats.connectionStatus = .down
        channel?.close(promise: nil)
        channel = nil
    }

    func setActive(_ master: Bool) {
        loop.preconditionInEventLoop()
        sender.setActive(master)
        schedulePump()
    }

    func requestResync() {
        loop.preconditionInEventLoop()
        sender.requestResync()
        schedulePump()
    }

    /// Drops the connection as a network failure would (drills and tests).
    func kill() {
        loop.preconditionInEventLoop()
        channel?.close(promise: nil)
    }

    func statistics() -> ConnectionStatistics {
        loop.preconditionInEventLoop()
        var s = stats
        s.queueDepth = sender.queueDepth
        return s
    }

    var isIdle: Bool {
        sender.isSending && sender.queueDepth == 0 && sender.resync == nil && !sender.resyncNeeded
    }

    // MARK: connecting

    private func connect() {
        guard !stopped else { return }
        stats.connectionStatus = .connecting
        session = SenderSession()
        // Heartbeats start with this connection's hello (`tlsEstablished`). A liveness left from
        // the previous connection (its close may be handled after this) would make `tick` write a
        // heartbeat that NIOSSL buffers and flushes ahead of the hello: the peer refuses that.
        liveness = nil
        let context = tls.clientContext
        let handlerOwner = self
        let bootstrap = ClientBootstrap(group: loop)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.writeBufferWaterMark, value: .init(low: 256 * 1024, high: 1024 * 1024))
            .connectTimeout(.seconds(3))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers(
                        try NIOSSLClientHandler(context: context, serverHostname: nil),
                        ByteToMessageHandler(SyncFrameDecoder(), maximumBufferSize: 4 << 20),
                        SenderHandler(owner: handlerOwner))
                }
            }
        let connecting: EventLoopFuture<any Channel>
        do {
            let local = try SocketAddress(ipAddress: settings.source, port: 0)
            connecting = bootstrap.bind(to: local).connect(host: settings.peerAddress, port: peerPort)
        } catch {
            connecting = loop.makeFailedFuture(error)
        }
        connecting.whenComplete { [self] result in
            switch result {
            case .success(let ch):
                if stopped { ch.close(promise: nil); return }
                channel = ch
            case .failure(let error):
                stats.lastError = "connect to \(settings.peerAddress):\(peerPort): \(error)"
                logger.debug("sync connection attempt failed", metadata: ["error": "\(error)"])
                scheduleReconnect()
            }
        }
    }

    private func scheduleReconnect() {
        guard !stopped else { return }
        stats.connectionStatus = stats.connectionStatus == .refused ? .refused : .connecting
        let wait = backoff.next(using: &rng)
        loop.scheduleTask(in: wait) { [self] in
            if channel == nil { connect() }
        }
    }

    // MARK: events from the channel

    func tlsEstablished(channel: any Channel, certificate: NIOSSLCertificate?) {
        // A late handshake of a connection already replaced: it must not hello on our behalf.
        guard self.channel == nil || self.channel === channel else {
            channel.close(promise: nil)
            return
        }
        if let why = PeerIdentity.mismatch(certificate: certificate, identity: settings.peerIdentity, address: settings.peerAddress) {
            stats.lastError = why
            stats.connectionStatus = .refused
            logger.error("refusing the sync peer's certificate", metadata: ["reason": "\(why)"])
            channel.close(promise: nil)
            return
        }
        stats.connectionStatus = .handshaking
        let hello = Hello(
            nodeID: settings.nodeID, vrf: settings.vrf, connectionIndex: UInt16(index),
            connectionCount: UInt16(settings.connections), fingerprint: settings.fingerprint,
            settings: settings.syncSettings)
        var buffer = channel.allocator.buffer(capacity: 256)
        buffer.writeSyncMessage(.hello(hello), sequence: session.takeSequence())
        channel.writeAndFlush(buffer, promise: nil)
        liveness = Liveness(heartbeatInterval: settings.heartbeatInterval, deadInterval: settings.deadInterval, now: .now())
    }

    func received(_ frame: SyncFrame, channel: any Channel) {
        do {
            try session.receive(type: frame.type, sequence: frame.sequence)
            liveness?.received(at: .now())
            let message = try SyncControlMessage.decode(type: frame.type, payload: frame.payload)
            switch try session.handle(message) {
            case .ready(let ack):
                stats.connectionStatus = .established
                stats.connects += 1
                stats.lastError = nil
                backoff.reset()
                if ack.status == .acceptedWithDrift {
                    let drift = SettingsDrift.differences(local: settings.syncSettings, remote: ack.settings)
                    logger.warning("sync connection established, but the nodes' sync settings differ",
                                   metadata: ["differences": "\(drift.joined(separator: "; "))", "peer.node": "\(ack.nodeID)"])
                } else {
                    logger.info("sync connection established", metadata: ["peer.node": "\(ack.nodeID)"])
                }
                sender.setConnected(true)
                schedulePump()
            case .refused(let ack):
                stats.connectionStatus = .refused
                stats.lastError = "peer refused: \(ack.status): \(ack.message)"
                logger.error("the sync peer refused this connection", metadata: ["status": "\(ack.status)", "reason": "\(ack.message)"])
                channel.close(promise: nil)
            case .alive:
                break
            case .peerError(let code, let text):
                stats.lastError = "peer error \(code): \(text)"
                logger.warning("the sync peer closed the connection with an error", metadata: ["code": "\(code)", "reason": "\(text)"])
                channel.close(promise: nil)
            }
        } catch {
            stats.lastError = "\(error)"
            logger.error("bad frame from the sync peer; reconnecting", metadata: ["reason": "\(error)"])
            channel.close(promise: nil)
        }
    }

    /// An error on the channel (it closes next): TLS failures mean the peer refused us or we
    /// refused it, which the operator must see.
    func failed(_ error: any Error) {
        if error is NIOSSLError || error is BoringSSLError {
            stats.connectionStatus = .refused
            stats.lastError = "TLS handshake with \(settings.peerAddress):\(peerPort) failed: \(error)"
            logger.error("TLS handshake with the sync peer failed; check that both nodes use certificates from the same CA",
                         metadata: ["error": "\(error)"])
        } else if !(error is ChannelError) {
            stats.lastError = "\(error)"
            logger.warning("sync connection error", metadata: ["error": "\(error)"])
        }
    }

    func closed(channel: any Channel) {
        guard self.channel === channel || self.channel == nil else { return }
        self.channel = nil
        liveness = nil
        let wasUp = stats.connectionStatus == .established
        sender.setConnected(false)
        if stats.connectionStatus != .refused { stats.connectionStatus = stopped ? .down : .connecting }
        if wasUp && !stopped { logger.warning("sync connection lost; reconnecting, then resyncing this share") }
        scheduleReconnect()
    }

    // MARK: sending

    /// Updates from the dataplane for this share, in table order.
    func enqueue(_ updates: [ConntrackUpdate]) {
        switch sender.enqueue(updates) {
        case .queued:
            schedulePump()
        case .dropped:
            break
        case .overflowed:
            stats.queueOverflows += 1
            stats.buildError += UInt64(sender.lastOverflowDropped)
            logger.warning("send queue full; dropping it and resyncing this share", metadata: ["limit": "\(settings.queueLimit)"])
            schedulePump()
        }
    }

    private func schedulePump() {
        guard !pumpScheduled else { return }
        pumpScheduled = true
        loop.execute { [self] in
            pumpScheduled = false
            pump()
        }
    }

    func pump() {
        guard let channel, channel.isActive, case .ready = session.state else { return }
        var wrote = false
        var now = NIODeadline.now()
        loop: while channel.isWritable {
            now = NIODeadline.now()
            let step = sender.next(maxRecords: SyncWire.recordsPerFrame, now: now) {
                dataplane.snapshot(share: index, of: settings.connections)
            }
            switch step {
            case .idle:
                break loop
            case .beginResync(let generation):
                stats.resyncs += 1
                logger.info("resyncing this share", metadata: ["generation": "\(generation)"])
                write(.resyncBegin(generation: generation), channel: channel)
            case .resyncRecords(let records):
                writeUpdates(records.lazy.map { .upsert($0) }, count: records.count, channel: channel)
            case .endResync(let generation, let count, let duration):
                write(.resyncEnd(generation: generation, count: count), channel: channel)
                stats.lastResyncDuration = Double(duration.nanoseconds) / 1e9
                stats.lastResyncRecords = count
                logger.info("resync sent", metadata: ["generation": "\(generation)", "records": "\(count)",
                                                      "duration_ms": "\(duration.nanoseconds / 1_000_000)"])
            case .updates(let updates):
                writeUpdates(updates, count: updates.count, channel: channel)
            }
            wrote = true
        }
        if wrote {
            channel.flush()
            liveness?.sent(at: now)
        }
    }

    private func write(_ message: SyncControlMessage, channel: any Channel) {
        var buffer = channel.allocator.buffer(capacity: 32)
        buffer.writeSyncMessage(message, sequence: session.takeSequence())
        channel.write(buffer, promise: nil)
    }

    private func writeUpdates<C: Collection>(_ updates: C, count: Int, channel: any Channel) where C.Element == ConntrackUpdate {
        var buffer = channel.allocator.buffer(capacity: count * 40 + 16)
        let at = buffer.beginSyncFrame(.updates, sequence: session.takeSequence())
        for u in updates { buffer.writeConntrackUpdate(u) }
        buffer.endSyncFrame(lengthAt: at)
        stats.transmit += UInt64(count)
        let promise = loop.makePromise(of: Void.self)
        promise.futureResult.whenFailure { [self] _ in stats.transmitError += UInt64(count) }
        channel.write(buffer, promise: promise)
    }

    private func tick() {
        guard let channel, var live = liveness else { return }
        let now = NIODeadline.now()
        switch live.check(now: now) {
        case .fine:
            break
        case .sendHeartbeat:
            write(.heartbeat, channel: channel)
            channel.flush()
            live.sent(at: now)
            liveness = live
        case .dead:
            stats.lastError = "no frame from the peer within the dead interval"
            logger.warning("sync peer silent for longer than the dead interval; reconnecting")
            channel.close(promise: nil)
        }
    }
}

/// Pipes a client channel's events to its `ShareConnection`.
final class SenderHandler: ChannelInboundHandler {
    typealias InboundIn = SyncFrame

    private let owner: ShareConnection

    init(owner: ShareConnection) { self.owner = owner }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            let certificate = try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self).peerCertificate
            owner.tlsEstablished(channel: context.channel, certificate: certificate)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        owner.received(unwrapInboundIn(data), channel: context.channel)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { owner.pump() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        owner.closed(channel: context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        owner.failed(error)
        context.close(promise: nil)
    }
}
