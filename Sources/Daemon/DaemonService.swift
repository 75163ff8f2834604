import Foundation
import MetricsHTTP
public import Logging
public import ServiceLifecycle
import UnixSignals

/// The daemon as a swift-service-lifecycle `Service`: starts it, tells systemd it is ready,
/// reloads on SIGHUP, and stops cleanly on graceful shutdown (SIGTERM, SIGINT).
public struct DaemonService: Service {
    let options: KeepstateDaemon.Options
    let logger: Logger
    /// With `metrics_listen` in the configuration, served there; nil: no listener.
    let metrics: DaemonMetrics?

    public init(options: KeepstateDaemon.Options, logger: Logger, metrics: DaemonMetrics? = nil) {
        self.options = options
        self.logger = logger
        self.metrics = metrics
    }

    public func run() async throws {
        // SIGHUP is trapped before readiness is reported: a reload sent right after start must
        // not meet the default action (terminate).
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        let daemon = try KeepstateDaemon(options: options, logger: logger)
        try await daemon.start()
        var metricsServer: MetricsHTTPServer?
        if let metrics, let endpoint = await daemon.metricsListen {
            do {
                metricsServer = try await metrics.serve(daemon, at: endpoint)
                logger.notice("metrics listener started", metadata: ["listen": "\(endpoint)", "path": "/metrics"])
            } catch {
                // Metrics are optional: HA and sync keep running without them.
                logger.error("metrics listener could not start", metadata: ["listen": "\(endpoint)", "error": "\(error)"])
            }
        }
        SystemdNotify.send("READY=1\nSTATUS=keepstate running")
        for await _ in hangups.cancelOnGracefulShutdown() {
            logger.notice("SIGHUP: reloading the configuration")
            let reply = await daemon.reload()
            SystemdNotify.send("STATUS=\(reply.ok ? "reloaded" : "reload refused")")
        }
        SystemdNotify.send("STOPPING=1")
        await metricsServer?.stop()
        await daemon.shutdown()
    }
}

/// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, when it is set.
enum SystemdNotify {
    static func send(_ message: String) {
        guard let path = ProcessInfo.processInfo.environment["NOTIFY_SOCKET"], !path.isEmpty else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        // An abstract socket is written with a leading '@'.
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        _ = message.withCString { msg in
            withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, msg, strlen(msg), 0, $0, length) }
            }
        }
    }
}
