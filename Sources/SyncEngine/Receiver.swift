import ConntrackModel
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization
import SyncProtocol

/// Cuts the TLS plaintext stream into frames.
struct SyncFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = SyncFrame

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try buffer.readSyncFrame() else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

/// What the receiving side of one VRF shares between its connections.
final class ReceiverEndpoint: Sendable {
    let settings: SyncSettings
    let store: BackupStore
    let counters = ReceiverCounters()
    let monitor: DriftMonitor
    let logger: Logger
    /// The channel currently feeding each share; a newer connection for a share replaces it.
    private let owners = Mutex<[Int: any Channel]>([:])

    init(settings: SyncSettings, store: BackupStore, monitor: DriftMonitor, logger: Logger) {
        self.settings = settings
        self.store = store
        self.monitor = monitor
        self.logger = logger
    }

    /// Makes `channel` the one feeding `share`, closing the previous one (a half-dead
    /// connection the peer has already replaced).
    func claim(share: Int, channel: any Channel) {
        store.claim(share: share)
        let old = owners.withLock { o -> (any Channel)? in
            defer { o[share] = channel }
            return o[share]
        }
        if let old, old !== channel { old.close(promise: nil) }
    }

    /// Every accepted channel, so that shutdown closes also those still in their handshake.
    private let accepted = Mutex<(closed: Bool, channels: [ObjectIdentifier: any Channel])>((false, [:]))

    /// Registers a new channel; false (and the caller closes it) once the listener is closed.
    func admit(_ channel: any Channel) -> Bool {
        accepted.withLock { a in
            if a.closed { return false }
            a.channels[ObjectIdentifier(channel)] = channel
            return true
        }
    }

    func forget(_ channel: any Channel) {
        _ = accepted.withLock { $0.channels.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    func release(share: Int, channel: any Channel) {
        owners.withLock { o in
            if let c = o[share], c === channel { o[share] = nil }
        }
    }

    func closeAll() {
        owners.withLock { $0.removeAll() }
        let all = accepted.withLock { a -> [any Channel] in
            a.closed = true
            defer { a.channels.removeAll() }
            return Array(a.channels.values)
        }
        for c in all { c.close(promise: nil) }
    }
}

/// The receiving side of one sync connection: checks the peer, applies its updates to the
/// backup store, completes resyncs with a sweep, and sends heartbeats back.
final class ReceiverHandler: ChannelInboundHandler {
    typealias InboundIn = SyncFrame
    typealias OutboundOut = ByteBuffer

    private let endpoint: ReceiverEndpoint
    private var logger: Logger
    private var session = ReceiverSession()
    private var outbound: UInt32 = 0
    private var liveness: Liveness?
    private var timer: RepeatedTask?
    private var peerCertificate: NIOSSLCertificate?
    private var remoteAddress = "?"
    private var share: Int?
    private var shareCount = 0
    private var epoch: UInt32?
    private var resyncStarted: NIODeadline?
    private var scratch: [ConntrackRecord] = []

    init(endpoint: ReceiverEndpoint) {
        self.endpoint = endpoint
        self.logger = endpoint.logger
    }

    func channelActive(context: ChannelHandlerContext) {
        remoteAddress = context.remoteAddress?.ipAddress ?? "?"
        logger[metadataKey: "peer.address"] = "\(remoteAddress)"
        guard endpoint.admit(context.channel) else {
            context.close(promise: nil)
            return
        }
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            peerCertificate = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self).peerCertificate
            let settings = endpoint.settings
            var live = Liveness(heartbeatInterval: settings.heartbeatInterval, deadInterval: settings.deadInterval, now: .now())
            live.received(at: .now())
            liveness = live
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            timer = context.eventLoop.scheduleRepeatedTask(
                initialDelay: .nanoseconds(settings.heartbeatInterval.nanoseconds / 2),
                delay: .nanoseconds(settings.heartbeatInterval.nanoseconds / 2)
            ) { _ in
                handler.value.tick(context: loopBound.value)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func tick(context: ChannelHandlerContext) {
        guard var live = liveness, context.channel.isActive else { return }
        let now = NIODeadline.now()
        switch live.check(now: now) {
        case .fine:
            break
        case .sendHeartbeat:
            send(.heartbeat, context: context)
            context.flush()
            live.sent(at: now)
            liveness = live
        case .dead:
            logger.warning("sync peer silent for longer than the dead interval; closing the connection")
            fail(context: context, code: .peerDead, "no frame for \(endpoint.settings.deadInterval.nanoseconds / 1_000_000) ms")
        }
    }

    private func send(_ message: SyncControlMessage, context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: 64)
        buffer.writeSyncMessage(message, sequence: outbound)
        outbound &+= 1
        context.write(wrapOutboundOut(buffer), promise: nil)
    }

    /// Sends a last message, then closes once it is on the wire.
    private func sendAndClose(_ message: SyncControlMessage, context: ChannelHandlerContext) {
        session.close()
        var buffer = context.channel.allocator.buffer(capacity: 64)
        buffer.writeSyncMessage(message, sequence: outbound)
        outbound &+= 1
        let channel = context.channel
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: written)
        written.futureResult.whenComplete { _ in channel.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        // After a refusal, an error or the peer's ERROR, frames still buffered are dropped
        // quietly: the one message that explains the close has been logged already.
        if case .closed = session.state { return }
        do {
            try session.receive(type: frame.type, sequence: frame.sequence)
            liveness?.received(at: .now())
            if frame.type == .updates {
                scratch.removeAll(keepingCapacity: true)
                var payload = frame.payload
                try payload.readConntrackRecords(into: &scratch)
                try session.updates(count: scratch.count)
                if let epoch, let share, !endpoint.store.apply(scratch, epoch: epoch, share: share, receivedAt: .now()) {
                    // A newer connection owns this share now; this one is closing.
                    session.close()
                    context.close(promise: nil)
                    return
                }
                endpoint.counters.receive.add(UInt64(scratch.count), ordering: .relaxed)
                if scratch.count > 65536 { scratch = [] }
                return
            }
            let message = try SyncControlMessage.decode(type: frame.type, payload: frame.payload)
            switch try session.handle(message) {
            case .answerHello(let hello):
                answer(hello, context: context)
            case .beginResync(let generation):
                epoch = endpoint.store.beginEpoch(share: share ?? 0)
                resyncStarted = .now()
                logger.debug("resync began", metadata: ["generation": "\(generation)"])
            case .applyUpdates, .alive:
                break
            case .completeResync(let generation, let count):
                guard let removed = endpoint.store.sweep(share: share ?? 0, of: shareCount, keeping: epoch ?? 0) else {
                    session.close()
                    context.close(promise: nil)
                    return
                }
                endpoint.counters.resyncsCompleted.add(1, ordering: .relaxed)
                endpoint.counters.staleRemoved.add(UInt64(removed), ordering: .relaxed)
                let ms = resyncStarted.map { Double((NIODeadline.now() - $0).nanoseconds) / 1e6 } ?? 0
                logger.info(
                    "resync complete",
                    metadata: [
                        "generation": "\(generation)", "records": "\(count)", "stale_removed": "\(removed)",
                        "duration_ms": "\(Int(ms))",
                    ])
            case .peerError(let code, let text):
                logger.warning("sync peer reported an error and closes", metadata: ["code": "\(code)", "reason": "\(text)"])
                context.close(promise: nil)
            case .peerRuleset(let ruleset):
                if case .open(let hello) = session.state { endpoint.monitor.heardRuleset(ruleset, from: hello) }
            }
        } catch {
            endpoint.counters.receiveError.add(1, ordering: .relaxed)
            logger.error("rejected a frame from the sync peer; the connection is closed and its share will resync",
                         metadata: ["reason": "\(error)"])
            fail(context: context, code: error.errorCode, error.description)
        }
    }

    private func answer(_ hello: Hello, context: ChannelHandlerContext) {
        let settings = endpoint.settings
        logger[metadataKey: "peer.node"] = "\(hello.nodeID)"
        logger[metadataKey: "connection"] = "\(hello.connectionIndex)"
        func refuse(_ status: HelloAck.Status, _ why: String) {
            endpoint.counters.refuse("\(remoteAddress): \(why)")
            logger.error("refused sync connection", metadata: ["reason": "\(why)"])
            let ack = HelloAck(status: status, nodeID: settings.nodeID, fingerprint: settings.fingerprint,
                               settings: settings.syncSettings, message: why)
            sendAndClose(.helloAck(ack), context: context)
        }
        guard hello.vrf == settings.vrf else {
            return refuse(.unknownVRF, "the peer syncs VRF '\(hello.vrf)', this listener serves '\(settings.vrf)'")
        }
        if let why = PeerIdentity.mismatch(certificate: peerCertificate, identity: settings.peerIdentity, address: settings.peerAddress) {
            return refuse(.peerNotAllowed, why)
        }
        guard PeerIdentity.sameAddress(remoteAddress, settings.peerAddress) else {
            return refuse(.peerNotAllowed, "connection from \(remoteAddress), but the configured peer is \(settings.peerAddress)")
        }
        share = Int(hello.connectionIndex)
        shareCount = Int(hello.connectionCount)
        endpoint.claim(share: Int(hello.connectionIndex), channel: context.channel)
        endpoint.counters.accepted.add(1, ordering: .relaxed)
        let drift = SettingsDrift.differences(local: settings.syncSettings, remote: hello.settings, peerVersion: hello.version)
        let status: HelloAck.Status = drift.isEmpty ? .accepted : .acceptedWithDrift
        if drift.isEmpty {
            logger.info("sync connection accepted", metadata: ["connections": "\(hello.connectionCount)"])
        } else {
            // The drift monitor logs the drift once for the VRF; this line is per connection.
            logger.info("sync connection accepted, but the nodes' sync settings differ",
                        metadata: ["differences": "\(drift.joined(separator: "; "))"])
        }
        endpoint.monitor.heard(PeerConfiguration(
            nodeID: hello.nodeID, version: hello.version, settings: hello.settings, ruleset: hello.ruleset))
        // The ruleset travels back only to a version 3 sender (older ones refuse trailing bytes).
        let ruleset = hello.version >= SyncWire.rulesetVersion ? endpoint.monitor.localRulesetForWire : nil
        // A version 1 or 2 sender gets the settings it knows (and compares them itself).
        send(.helloAck(HelloAck(status: status, nodeID: settings.nodeID, fingerprint: settings.fingerprint(forVersion: hello.version),
                                settings: settings.syncSettings(forVersion: hello.version), message: drift.joined(separator: "; "), ruleset: ruleset)),
             context: context)
        context.flush()
    }

    private func fail(context: ChannelHandlerContext, code: SyncErrorCode, _ why: String) {
        sendAndClose(.error(code: code, message: why), context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        if let share { endpoint.release(share: share, channel: context.channel) }
        endpoint.forget(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if "\(error)".contains("EOF during handshake") {
            // The client went away mid-handshake (it stopped, or gave up): not a refusal.
            logger.debug("sync connection closed during the TLS handshake", metadata: ["reason": "\(error)"])
        } else if error is NIOSSLError || error is BoringSSLError {
            endpoint.counters.refuse("\(remoteAddress): TLS handshake failed: \(error)")
            logger.error("refused sync connection: TLS handshake failed", metadata: ["reason": "\(error)"])
        } else if let e = error as? SyncProtocolError {
            endpoint.counters.receiveError.add(1, ordering: .relaxed)
            logger.error("undecodable stream from the sync peer; closing", metadata: ["reason": "\(e)"])
            fail(context: context, code: e.errorCode, e.description)
            return
        } else if !(error is ChannelError) {
            logger.debug("sync connection error", metadata: ["error": "\(error)"])
        }
        context.close(promise: nil)
    }
}

/// The TLS listener of one VRF.
final class SyncListener: Sendable {
    let endpoint: ReceiverEndpoint
    private let channel: any Channel

    private init(endpoint: ReceiverEndpoint, channel: any Channel) {
        self.endpoint = endpoint
        self.channel = channel
    }

    var port: Int { channel.localAddress?.port ?? 0 }

    static func start(endpoint: ReceiverEndpoint, tls: TLSMaterial, group: any EventLoopGroup) async throws -> SyncListener {
        let context = tls.serverContext
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 65536, maximum: 1 << 20))
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandlers(
                        NIOSSLServerHandler(context: context),
                        ByteToMessageHandler(SyncFrameDecoder(), maximumBufferSize: 4 << 20),
                        ReceiverHandler(endpoint: endpoint))
                }
            }
            .bind(host: endpoint.settings.source, port: endpoint.settings.listenPort)
            .get()
        return SyncListener(endpoint: endpoint, channel: channel)
    }

    func close() async {
        try? await channel.close()
        endpoint.closeAll()
    }
}
