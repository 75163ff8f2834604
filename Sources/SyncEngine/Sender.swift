import ConntrackModel
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
    /// The share's conntracks for a resync, as the peer must hold them (the policy's view).
    private let resyncSnapshot: @Sendable (_ share: Int, _ count: Int) -> [Conntrack]
    /// Whether the dataplane's mirror covers the whole table (`Dataplane.followsWholeTable`):
    /// a resync waits until it does.
    private let tableComplete: @Sendable () -> Bool
    private var tableRetryScheduled = false
    private let monitor: DriftMonitor
    private var logger: Logger
    /// The version of this connection's hello: this build's, or 2 for one attempt after the
    /// peer refused ours with `unsupported-version` (an older node, in a rolling upgrade).
    private var helloVersion = SyncWire.version
    private var retryWithVersion2 = false
    /// Whether this connection's peer takes RULESET messages (both hellos said version 3).
    private var rulesetCapable = false
    /// The ruleset fingerprint this connection's hello carried.
    private var helloRuleset: RulesetFingerprint?

    private var sender: ShareSender
    private var session = SenderSession()
    private var liveness: Liveness?
    private var backoff = ReconnectBackoff()
    private var rng: SplitMix64
    private var channel: (any Channel)?
    /// A connection attempt is under way (at most one at a time).
    private var connectInFlight = false
    /// The channel whose hello went out: heartbeats go only there (a heartbeat before the hello
    /// would be refused).
    private var helloChannel: ObjectIdentifier?
    private var timer: RepeatedTask?
    private var stopped = false
    private var pumpScheduled = false
    private var stats: ConnectionStatistics
    private var peerPort: Int
    /// Callers waiting for queued updates to be written (a forced synchronization): done once
    /// `sender.sentTotal` reaches `through`, lost if `sender.queueLosses` moves from `losses`.
    private var deliveryWaiters: [(through: UInt64, losses: UInt64, promise: EventLoopPromise<Bool>)] = []

    init(index: Int, loop: any EventLoop, settings: SyncSettings, tls: TLSMaterial,
         resyncSnapshot: @escaping @Sendable (_ share: Int, _ count: Int) -> [Conntrack],
         tableComplete: @escaping @Sendable () -> Bool = { true }, monitor: DriftMonitor,
         logger: Logger, seed: UInt64) {
        self.index = index
        self.loop = loop
        self.settings = settings
        self.tls = tls
        self.resyncSnapshot = resyncSnapshot
        self.tableComplete = tableComplete
        self.monitor = monitor
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
        settleWaiters()
        for w in deliveryWaiters { w.promise.succeed(false) }
        deliveryWaiters = []
    }

    func setActive(_ master: Bool) {
        loop.preconditionInEventLoop()
        sender.setActive(master)
        settleWaiters()
        schedulePump()
    }

    func requestResync() {
        loop.preconditionInEventLoop()
        sender.requestResync()
        schedulePump()
    }

    /// Sends this node's ruleset fingerprint to the peer, if the connection is up and the peer
    /// takes RULESET messages; otherwise the next hello carries it.
    func sendRuleset(_ ruleset: RulesetFingerprint) {
        loop.preconditionInEventLoop()
        guard rulesetCapable, let channel, channel.isActive, case .ready = session.state else { return }
        write(.ruleset(ruleset), channel: channel)
        channel.flush()
        liveness?.sent(at: .now())
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
        s.resyncWaiting = resyncWait()?.rawValue
        return s
    }

    enum ResyncWait: String {
        /// A frame from the peer since this node became master (`ShareSender.awaitingPeer`).
        case peer
        /// The dataplane following the whole table again (`Dataplane.followsWholeTable`).
        case table
    }

    /// What a resync this master owes and has not begun waits for; nil when none is owed or it
    /// may begin.
    private func resyncWait() -> ResyncWait? {
        guard sender.isSending, sender.resyncNeeded, sender.resync == nil else { return nil }
        if sender.awaitingPeer { return .peer }
        return tableComplete() ? nil : .table
    }

    var isIdle: Bool {
        sender.isSending && sender.queueDepth == 0 && sender.resync == nil && !sender.resyncNeeded
    }

    // MARK: connecting

    private func connect() {
        guard !stopped, !connectInFlight, channel == nil else { return }
        connectInFlight = true
        stats.connectionStatus = .connecting
        session = SenderSession()
        // Heartbeats start with this connection's hello (`tlsEstablished`), on the channel that
        // sent it: a liveness left from the previous connection would make `tick` write a
        // heartbeat that NIOSSL flushes ahead of the hello, and the peer refuses that.
        liveness = nil
        helloChannel = nil
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
            connectInFlight = false
            switch result {
            case .success(let ch):
                if stopped { ch.close(promise: nil); return }
                if let current = channel, current !== ch {
                    ch.close(promise: nil)
                    return
                }
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
        // Only the attempt under way may speak (its connect future may complete after this).
        if let current = self.channel, current !== channel {
            channel.close(promise: nil)
            return
        }
        self.channel = channel
        if let why = PeerIdentity.mismatch(certificate: certificate, identity: settings.peerIdentity, address: settings.peerAddress) {
            stats.lastError = why
            stats.connectionStatus = .refused
            logger.error("refusing the sync peer's certificate", metadata: ["reason": "\(why)"])
            channel.close(promise: nil)
            return
        }
        stats.connectionStatus = .handshaking
        helloVersion = retryWithVersion2 ? 2 : SyncWire.version
        retryWithVersion2 = false
        rulesetCapable = false
        let hello = Hello(
            version: helloVersion, nodeID: settings.nodeID, vrf: settings.vrf, connectionIndex: UInt16(index),
            connectionCount: UInt16(settings.connections), fingerprint: settings.fingerprint(forVersion: helloVersion),
            settings: settings.syncSettings(forVersion: helloVersion),
            ruleset: helloVersion >= SyncWire.rulesetVersion ? monitor.localRulesetForWire : nil)
        helloRuleset = hello.ruleset
        var buffer = channel.allocator.buffer(capacity: 256)
        buffer.writeSyncMessage(.hello(hello), sequence: session.takeSequence())
        channel.writeAndFlush(buffer, promise: nil)
        helloChannel = ObjectIdentifier(channel)
        liveness = Liveness(heartbeatInterval: settings.heartbeatInterval, deadInterval: settings.deadInterval, now: .now())
    }

    func received(_ frame: SyncFrame, channel: any Channel) {
        do {
            try session.receive(type: frame.type, sequence: frame.sequence)
            liveness?.received(at: .now())
            if sender.awaitingPeer {
                // The resync owed since this node became master waited for a sign of life.
                sender.heardFromPeer()
                schedulePump()
            }
            let message = try SyncControlMessage.decode(type: frame.type, payload: frame.payload)
            switch try session.handle(message) {
            case .ready(let ack):
                stats.connectionStatus = .established
                stats.connects += 1
                stats.lastError = nil
                backoff.reset()
                if ack.status == .acceptedWithDrift {
                    // The drift monitor logs the drift once for the VRF; this line is per connection.
                    let drift = SettingsDrift.differences(local: settings.syncSettings, remote: ack.settings, peerVersion: ack.version)
                    logger.info("sync connection established, but the nodes' sync settings differ",
                                metadata: ["differences": "\(drift.joined(separator: "; "))", "peer.node": "\(ack.nodeID)"])
                } else {
                    logger.info("sync connection established", metadata: ["peer.node": "\(ack.nodeID)"])
                }
                // The ack's version is the receiver's; the settings and ruleset are as of now.
                monitor.heard(PeerConfiguration(
                    nodeID: ack.nodeID, version: ack.version, settings: ack.settings, ruleset: ack.ruleset))
                rulesetCapable = ack.version >= SyncWire.rulesetVersion && helloVersion >= SyncWire.rulesetVersion
                // A check that ended while the hello was on its way: its RULESET was not sent
                // (the connection was not ready), so it goes now.
                let current = monitor.localRulesetForWire
                if rulesetCapable, current != helloRuleset { sendRuleset(current) }
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
                if code == .unsupportedVersion && helloVersion > 2 {
                    // An older peer: the next attempt says version 2 (no ruleset fingerprint).
                    retryWithVersion2 = true
                    logger.notice("the sync peer does not speak protocol version \(SyncWire.version); reconnecting with version 2 (no ruleset comparison)",
                                  metadata: ["reason": "\(text)"])
                } else {
                    logger.warning("the sync peer closed the connection with an error", metadata: ["code": "\(code)", "reason": "\(text)"])
                }
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
        helloChannel = nil
        let wasUp = stats.connectionStatus == .established
        sender.setConnected(false)
        settleWaiters()
        if stats.connectionStatus != .refused { stats.connectionStatus = stopped ? .down : .connecting }
        if wasUp && !stopped { logger.warning("sync connection lost; reconnecting, then resyncing this share") }
        scheduleReconnect()
    }

    // MARK: sending

    /// Updates for this share, in the order the policy produced them.
    @discardableResult
    func enqueue(_ updates: [OutgoingUpdate]) -> ShareSender.EnqueueResult {
        let result = sender.enqueue(updates)
        switch result {
        case .queued:
            schedulePump()
        case .dropped:
            break
        case .overflowed:
            stats.queueOverflows += 1
            stats.buildError += UInt64(sender.lastOverflowDropped)
            logger.warning("send queue full; dropping it and resyncing this share", metadata: ["limit": "\(settings.queueLimit)"])
            settleWaiters()
            schedulePump()
        }
        return result
    }

    /// As `enqueue`; the future tells whether these updates were written to the connection
    /// (true), or dropped before (false: not master, not connected, queue overflow, or a resync
    /// that replaced the queue).
    func enqueueTracked(_ updates: [OutgoingUpdate]) -> EventLoopFuture<Bool> {
        loop.preconditionInEventLoop()
        guard !updates.isEmpty else { return loop.makeSucceededFuture(true) }
        let losses = sender.queueLosses
        guard enqueue(updates) == .queued else { return loop.makeSucceededFuture(false) }
        let promise = loop.makePromise(of: Bool.self)
        deliveryWaiters.append((sender.queuedTotal, losses, promise))
        settleWaiters()
        return promise.futureResult
    }

    private func settleWaiters() {
        guard !deliveryWaiters.isEmpty else { return }
        deliveryWaiters.removeAll { w in
            if sender.queueLosses != w.losses {
                w.promise.succeed(false)
                return true
            }
            if sender.sentTotal >= w.through {
                w.promise.succeed(true)
                return true
            }
            return false
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
        if resyncWait() == .table {
            // A new master whose re-arm still runs follows deletions only: conntracks made since
            // the takeover are not in its mirror, and a resync now would end without them (the
            // peer would then count itself in sync and could take mastership back without
            // them). Looked at again every 100 ms.
            if !tableRetryScheduled {
                tableRetryScheduled = true
                loop.scheduleTask(in: .milliseconds(100)) { [self] in
                    tableRetryScheduled = false
                    schedulePump()
                }
            }
            settleWaiters()
            return
        }
        var wrote = false
        var now = NIODeadline.now()
        loop: while channel.isWritable {
            now = NIODeadline.now()
            let step = sender.next(maxRecords: SyncWire.recordsPerFrame, now: now) {
                resyncSnapshot(index, settings.connections)
            }
            switch step {
            case .idle:
                break loop
            case .beginResync(let generation):
                stats.resyncs += 1
                logger.debug("resyncing this share", metadata: ["generation": "\(generation)"])
                write(.resyncBegin(generation: generation), channel: channel)
            case .resyncRecords(let records):
                writeUpdates(records.lazy.map { OutgoingUpdate(.upsert($0)) }, count: records.count, now: now, channel: channel)
            case .endResync(let generation, let count, let duration):
                write(.resyncEnd(generation: generation, count: count), channel: channel)
                stats.lastResyncDuration = Double(duration.nanoseconds) / 1e9
                stats.lastResyncRecords = count
                logger.info("resync sent", metadata: ["generation": "\(generation)", "records": "\(count)",
                                                      "duration_ms": "\(duration.nanoseconds / 1_000_000)"])
            case .updates(let updates):
                writeUpdates(updates, count: updates.count, now: now, channel: channel)
            }
            wrote = true
        }
        if wrote {
            channel.flush()
            liveness?.sent(at: now)
        }
        settleWaiters()
    }

    private func write(_ message: SyncControlMessage, channel: any Channel) {
        var buffer = channel.allocator.buffer(capacity: 32)
        buffer.writeSyncMessage(message, sequence: session.takeSequence())
        channel.write(buffer, promise: nil)
    }

    private func writeUpdates<C: Collection>(_ updates: C, count: Int, now: NIODeadline, channel: any Channel)
    where C.Element == OutgoingUpdate {
        var buffer = channel.allocator.buffer(capacity: count * 40 + 16)
        let at = buffer.beginSyncFrame(.updates, sequence: session.takeSequence())
        for u in updates { buffer.writeConntrackRecord(u.record(at: now)) }
        buffer.endSyncFrame(lengthAt: at)
        stats.transmit += UInt64(count)
        let promise = loop.makePromise(of: Void.self)
        promise.futureResult.whenFailure { [self] _ in stats.transmitError += UInt64(count) }
        channel.write(buffer, promise: promise)
    }

    private func tick() {
        guard let channel, helloChannel == ObjectIdentifier(channel), var live = liveness else { return }
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
