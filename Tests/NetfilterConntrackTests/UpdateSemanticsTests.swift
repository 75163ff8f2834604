import ConntrackModel
import Glibc
import NetfilterConntrack
import Testing
import TestSupport

@Suite("ctnetlink update semantics", .enabled(if: isRoot, "needs root for network namespaces"))
struct UpdateSemanticsTests {
    /// A failover commit may write entries the kernel already has: an upsert of the same
    /// conntracks (NAT ones included) must update them, not fail; a plain create is refused.
    @Test("upserting existing conntracks updates their timeout and mark; create refuses them")
    func upsertUpdatesExisting() throws {
        let ns = try TestNamespace("update")
        let nl = try ConntrackNetlink(netnsPath: ns.path)
        var items = (0..<UInt64(300)).map { Conntrack.sample($0) }
        #expect(try nl.create(items).rejected == 0)
        for i in items.indices { items[i].timeout = 900; items[i].mark = 5 }
        let again = try nl.create(items).errors
        #expect(again.allSatisfy { $0 == EEXIST }, "\(Dictionary(grouping: again, by: { $0 }).mapValues(\.count))")
        let second = try nl.upsert(items)
        #expect(second.rejected == 0, "first errno \(second.firstError)")
        let back = try nl.dump()
        #expect(back.count == 300)
        let wrong = back.filter { !($0.timeout > 850 && $0.mark == 5) }
        #expect(wrong.isEmpty, "\(wrong.count) not updated, e.g. \(wrong.prefix(3).map(\.description))")
    }

    /// A router that comes back keeps its own conntracks, whose TCP windows the new master's
    /// traffic may not fit; the drill saw every flow stall at failback until those entries were
    /// made liberal. Upserting over them must set the be-liberal flags, not just state and timeout.
    @Test("upserting over this node's own TCP conntracks makes their window tracking liberal")
    func upsertMakesExistingLiberal() throws {
        let ns = try TestNamespace("liberal")
        let nl = try ConntrackNetlink(netnsPath: ns.path)
        let tcp = (0..<UInt64(60)).map { Conntrack.sample($0) }.filter { $0.proto == .tcp }
        #expect(!tcp.isEmpty)
        // Made as the kernel would for its own traffic: not liberal.
        #expect(try nl.create(tcp, beLiberal: false).rejected == 0)
        #expect(try nl.beLiberalKeys().isEmpty)
        #expect(try nl.upsert(tcp).rejected == 0)
        #expect(try nl.beLiberalKeys() == Set(tcp.map(\.key)))
    }
}
