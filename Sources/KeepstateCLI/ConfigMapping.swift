public import Config
public import SyncEngine
import NIOCore
import SyncProtocol

extension SyncSettings {
    /// The engine settings of one VRF of a validated configuration, or nil when the VRF does
    /// not sync (it has no `ha_fp_conntrack` block).
    public init?(vrf: VRFConfig, routerID: String) {
        guard let sync = vrf.sync else { return nil }
        self.init(
            vrf: vrf.name,
            nodeID: routerID,
            peerName: sync.peer.name,
            source: sync.peer.source,
            peerAddress: sync.peer.address,
            peerPort: Int(sync.peer.port),
            listenPort: Int(sync.peer.port),
            peerIdentity: sync.peer.identity,
            connections: sync.eventThreads,
            heartbeatInterval: .nanoseconds(Int64(sync.heartbeatInterval * 1e9)),
            deadInterval: .nanoseconds(Int64(sync.deadInterval * 1e9)),
            queueLimit: sync.sendQueueLimit,
            syncSettings: vrf.syncSettings().map { SyncSettingPair(key: $0.key, value: $0.value) })
    }
}
