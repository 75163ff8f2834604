import ConntrackModel
import Dataplane
import SyncEngine
import Testing

@Suite("Backup store ownership")
struct BackupStoreTests {
    /// A connection replaced by a newer one for the same share may still have frames buffered;
    /// none of them may write (its late RESYNC_END would sweep the new connection's entries).
    @Test("a replaced connection's epoch can neither write nor sweep")
    func replacedConnectionCannotWrite() {
        let store = BackupStore()
        let a = TrafficGenerator.conntrack(number: 1)
        let b = TrafficGenerator.conntrack(number: 2)
        let old = store.beginEpoch(share: 0)
        #expect(store.apply([.upsert(a)], epoch: old, share: 0))
        store.claim(share: 0)   // a new connection for share 0
        #expect(!store.apply([.upsert(b), .delete(a.key)], epoch: old, share: 0))
        #expect(store.sweep(share: 0, of: 1, keeping: old) == nil)
        #expect(store.count == 1 && store[a.key] != nil)
        let new = store.beginEpoch(share: 0)
        #expect(!store.apply([.upsert(b)], epoch: old, share: 0))
        #expect(store.apply([.upsert(b)], epoch: new, share: 0))
        #expect(store.sweep(share: 0, of: 1, keeping: new) == 1)
        #expect(store.count == 1 && store[b.key] != nil && store[a.key] == nil)
        // Another share's epoch never writes this share.
        let other = store.beginEpoch(share: 1)
        #expect(!store.apply([.upsert(a)], epoch: other, share: 0))
    }
}
