public import SyncEngine
import Foundation

/// Renders sync statistics as the indented tree operators know from `show` commands.
public enum ShowPeer {
    public static func render(_ s: SyncStatistics) -> String {
        var out = "show-ha-fp-conntrack-peer vrf \(s.vrf)\n"
        out += "    role \(s.role)\n"
        out += "    peer \(s.peerName)\n"
        out += "        source \(s.source)\n"
        out += "        address \(s.address)\n"
        for c in s.connections {
            out += "        client \(c.index)\n"
            out += "            statistics\n"
            out += "                transmit \(c.transmit)\n"
            out += "                transmit-error \(c.transmitError)\n"
            out += "                build-error \(c.buildError)\n"
            out += "                queue-depth \(c.queueDepth)\n"
            out += "                queue-overflows \(c.queueOverflows)\n"
            out += "                resyncs \(c.resyncs)\n"
            out += "                connects \(c.connects)\n"
            if let w = c.resyncWaiting { out += "                resync-waiting-for \(w)\n" }
            if let d = c.lastResyncDuration {
                out += "                last-resync \(c.lastResyncRecords ?? 0) records in \(String(format: "%.3f", d)) s\n"
            }
            out += "            connection-status \(c.connectionStatus.rawValue)\n"
            if let e = c.lastError { out += "            last-error \(e)\n" }
        }
        let l = s.localNode
        out += "    local-node \(s.source)\n"
        out += "        statistics\n"
        out += "            receive \(l.receive)\n"
        out += "            receive-error \(l.receiveError)\n"
        out += "            refused-connections \(l.refusedConnections)\n"
        out += "            accepted-connections \(l.acceptedConnections)\n"
        out += "            resyncs-completed \(l.resyncsCompleted)\n"
        out += "            stale-removed \(l.staleRemoved)\n"
        out += "        held-conntracks \(l.storeEntries)\n"
        if let r = l.lastRefusal { out += "        last-refusal \(r)\n" }
        return out
    }
}
