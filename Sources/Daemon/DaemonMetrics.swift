import Config
import CoreMetrics
import Logging
import MetricsHTTP
public import Prometheus
import SyncEngine
import Synchronization

/// The daemon's metrics (swift-metrics), exported in the Prometheus text format on the optional
/// `metrics_listen` endpoint. They are sampled on each scrape from the replies `show state`,
/// `show peer` and `show conntracks` give, so the two never disagree. Names and labels:
/// docs/operations.md, "Metrics".
public final class DaemonMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let factory: any MetricsFactory
    /// Last absolute value seen per counter (label and dimensions): counters advance by the
    /// difference; a value lower than the last one (an engine restarted by a reload) counts anew.
    private let lastCounts = Mutex<[String: UInt64]>([:])

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        self.factory = PrometheusMetricsFactory(registry: registry)
    }

    /// Bootstraps `MetricsSystem` with a factory on a new registry. Once per process
    /// (`keepstate run`); swift-metrics traps on a second bootstrap.
    public static func bootstrapSystem() -> DaemonMetrics {
        let metrics = DaemonMetrics()
        MetricsSystem.bootstrap(metrics.factory)
        return metrics
    }

    /// The registry in the Prometheus text format.
    public func render() -> String { registry.emitToString() }

    // MARK: recording

    private func gauge(_ label: String, _ dimensions: [(String, String)], _ value: Double) {
        Gauge(label: label, dimensions: dimensions, factory: factory).record(value)
    }

    private func gauge(_ label: String, _ dimensions: [(String, String)], _ value: Int) {
        Gauge(label: label, dimensions: dimensions, factory: factory).record(value)
    }

    private func counter(_ label: String, _ dimensions: [(String, String)], _ total: UInt64) {
        let key = label + "\u{0}" + dimensions.map { "\($0.0)=\($0.1)" }.joined(separator: "\u{0}")
        let step: UInt64 = lastCounts.withLock { last in
            let previous = last[key] ?? 0
            last[key] = total
            return total >= previous ? total - previous : total
        }
        Counter(label: label, dimensions: dimensions, factory: factory).increment(by: Int64(clamping: step))
    }

    /// Records one sample: the three `show` replies.
    func record(state: StateReport, peers: [SyncStatistics], conntracks: [ConntrackCounts], vrrp: VRRPReport = VRRPReport()) {
        for i in vrrp.instances {
            let d = [("instance", i.name)]
            counter("keepstate_vrrp_transitions_total", d, UInt64(max(0, i.transitions)))
            gauge("keepstate_vrrp_effective_priority", d, i.effectivePriority)
            counter("keepstate_vrrp_adverts_sent_total", d, UInt64(max(0, i.statistics.advertsSent)))
            counter("keepstate_vrrp_adverts_received_total", d, UInt64(max(0, i.statistics.advertsReceived)))
            counter("keepstate_vrrp_became_master_total", d, UInt64(max(0, i.statistics.becameMaster)))
            for (reason, n) in i.statistics.drops {
                counter("keepstate_vrrp_dropped_total", d + [("reason", reason)], UInt64(max(0, n)))
            }
        }
        for g in state.groups {
            let d = [("group", g.name)]
            gauge("keepstate_group_master", d, g.state == HAState.master.rawValue ? 1 : 0)
            counter("keepstate_group_transitions_total", d, UInt64(max(0, g.transitions)))
            gauge("keepstate_group_state_seconds", d, g.since)
            if let vrrpState = g.vrrpState {
                for s in ["initialize", "backup", "master", "fault"] {
                    gauge("keepstate_vrrp_state", d + [("state", s)], vrrpState == s ? 1 : 0)
                }
            }
            if let p = g.vrrpPriority { gauge("keepstate_vrrp_priority", d, p) }
        }
        for v in state.vrfs {
            let d = [("vrf", v.name)]
            gauge("keepstate_vrf_up", d, v.role == "down" ? 0 : 1)
            gauge("keepstate_vrf_master", d, v.role == "master" ? 1 : 0)
            gauge("keepstate_conntracks", d, v.conntracks)
            gauge("keepstate_conntracks_held", d, v.held)
            gauge("keepstate_hold_queue", d, v.holdQueue)
            counter("keepstate_hold_refused_total", d, UInt64(max(0, v.holdRefused)))
            if let t = v.lastTakeoverSeconds { gauge("keepstate_last_takeover_seconds", d, t) }
            gauge("keepstate_connections_established", d, v.connectionsEstablished)
            gauge("keepstate_connections", d, v.connections)
            gauge("keepstate_dataplane_error", d, v.dataplaneError == nil ? 0 : 1)
            // Configuration drift against the peer (docs/operations.md): 1 for the current kind.
            if let drift = v.drift {
                for kind in ["none", "ruleset", "settings", "both", "unknown"] {
                    gauge("keepstate_config_drift", d + [("kind", kind)], drift == kind ? 1 : 0)
                }
            }
        }
        for c in conntracks {
            let d = [("vrf", c.vrf)]
            for (proto, states) in c.synced {
                for (tcpState, n) in states {
                    gauge("keepstate_conntracks_synced", d + [("proto", proto), ("state", tcpState)], n)
                }
            }
            if let p = c.pending { gauge("keepstate_conntracks_unsynced", d, p) }
        }
        for p in peers {
            let d = [("vrf", p.vrf), ("peer", p.peerName)]
            for c in p.connections {
                let cd = d + [("connection", String(c.index))]
                counter("keepstate_sync_transmit_total", cd, c.transmit)
                counter("keepstate_sync_transmit_errors_total", cd, c.transmitError)
                counter("keepstate_sync_build_errors_total", cd, c.buildError)
                gauge("keepstate_sync_connection_established", cd, c.connectionStatus == .established ? 1 : 0)
                gauge("keepstate_sync_queue_depth", cd, c.queueDepth)
                counter("keepstate_sync_queue_overflows_total", cd, c.queueOverflows)
                counter("keepstate_sync_resyncs_total", cd, c.resyncs)
                if let s = c.lastResyncDuration { gauge("keepstate_sync_last_resync_seconds", cd, s) }
                if let r = c.lastResyncRecords { gauge("keepstate_sync_last_resync_records", cd, Int(clamping: r)) }
                counter("keepstate_sync_connects_total", cd, c.connects)
            }
            let l = p.localNode
            counter("keepstate_sync_received_total", d, l.receive)
            counter("keepstate_sync_receive_errors_total", d, l.receiveError)
            counter("keepstate_sync_refused_connections_total", d, l.refusedConnections)
            counter("keepstate_sync_accepted_connections_total", d, l.acceptedConnections)
            counter("keepstate_sync_resyncs_completed_total", d, l.resyncsCompleted)
            counter("keepstate_sync_stale_removed_total", d, l.staleRemoved)
            gauge("keepstate_sync_store_entries", d, l.storeEntries)
        }
    }

    /// Starts the HTTP listener; each scrape samples `daemon` first.
    func serve(_ daemon: KeepstateDaemon, at endpoint: ListenEndpoint) async throws -> MetricsHTTPServer {
        try await MetricsHTTPServer.start(host: endpoint.address, port: Int(endpoint.port)) { [self] in
            await daemon.sampleMetrics(into: self)
            return self.render()
        }
    }
}

extension KeepstateDaemon {
    /// One sample from the same replies the control socket gives.
    func sampleMetrics(into metrics: DaemonMetrics) async {
        let state = await handle(ControlRequest(command: .showState)).state
        let peers = await handle(ControlRequest(command: .showPeer)).peers ?? []
        let counts = await handle(ControlRequest(command: .showConntracks)).conntracks ?? []
        let vrrp = await handle(ControlRequest(command: .showVRRP)).vrrp ?? VRRPReport()
        if let state { metrics.record(state: state, peers: peers, conntracks: counts, vrrp: vrrp) }
    }
}
