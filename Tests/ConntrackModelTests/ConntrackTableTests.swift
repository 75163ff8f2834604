import ConntrackModel
import Testing

@Suite struct ConntrackTableTests {
    /// Checks every key of the universe against the model, and the dense arrays against it.
    static func verify(
        _ table: ConntrackTable<UInt64>, _ model: [ConntrackKey: (Conntrack, UInt64)], universe: [Conntrack],
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(table.count == model.count, sourceLocation: sourceLocation)
        #expect(table.isEmpty == model.isEmpty, sourceLocation: sourceLocation)
        #expect(table.entries.count == table.tags.count, sourceLocation: sourceLocation)
        var mismatches = 0
        for c in universe {
            let k = c.key
            let expected = model[k]
            if table[k] != expected?.0 || table.tag(of: k) != expected?.1 { mismatches += 1 }
            if let i = table.index(of: k) {
                if table.entries[i].key != k || table.tags[i] != expected?.1 { mismatches += 1 }
            } else if expected != nil {
                mismatches += 1
            }
        }
        for (i, c) in table.entries.enumerated() where model[c.key]?.0 != c || model[c.key]?.1 != table.tags[i] {
            mismatches += 1
        }
        #expect(mismatches == 0, sourceLocation: sourceLocation)
    }

    @Test(arguments: [(UInt64(1), 3_000), (UInt64(2), 300), (UInt64(3), 40_000)])
    func matchesDictionaryModel(seed: UInt64, universeSize: Int) {
        var rng = TestRNG(seed: seed)
        let universe = (0..<universeSize).map {
            sampleConntrack($0, family: $0 % 5 == 0 ? .ipv6 : .ipv4, proto: $0 % 4 == 0 ? .udp : .tcp, zone: UInt16($0 % 3))
        }
        var table = ConntrackTable<UInt64>()
        var model: [ConntrackKey: (Conntrack, UInt64)] = [:]
        let operations = 200_000
        var mismatches = 0
        for op in 1...operations {
            let c = universe[Int(rng.next() % UInt64(universe.count))]
            let roll = rng.next() % 100
            // Phases that grow and shrink the table so that probe runs wrap and shift back.
            let upsertShare: UInt64 = (op / 20_000) % 2 == 0 ? 70 : 30
            if roll < upsertShare {
                var changed = c
                changed.timeout = UInt32(truncatingIfNeeded: rng.next())
                let tag = rng.next()
                let wasNew = table.upsert(changed, tag: tag)
                if wasNew != (model[c.key] == nil) { mismatches += 1 }
                model[c.key] = (changed, tag)
            } else if roll < upsertShare + 5 {
                let tag = rng.next()
                let tagged = table.setTag(tag, for: c.key)
                if tagged != (model[c.key] != nil) { mismatches += 1 }
                if let existing = model[c.key] { model[c.key] = (existing.0, tag) }
            } else {
                let removed = table.remove(c.key)
                if removed != model.removeValue(forKey: c.key)?.0 { mismatches += 1 }
            }
            if op % 25_000 == 0 {
                Self.verify(table, model, universe: universe)
            }
            if op % 50_000 == 0 {
                // Remove the entries with an odd tag.
                let expected = model.values.filter { $0.1 & 1 == 1 }.count
                let removedCount = table.removeAll { _, tag in tag & 1 == 1 }
                #expect(removedCount == expected)
                model = model.filter { $0.value.1 & 1 == 0 }
                Self.verify(table, model, universe: universe)
            }
        }
        Self.verify(table, model, universe: universe)
        #expect(mismatches == 0)
        #expect(table.allocatedBytes >= table.count * 96)
    }

    @Test func removeAllWhereVisitsMovedEntries() {
        var table = ConntrackTable<UInt64>()
        let items = (0..<1_000).map { sampleConntrack($0) }
        for (i, c) in items.enumerated() { table.upsert(c, tag: UInt64(i)) }
        // Removing the last entries first exercises the swap-remove re-check.
        var visited = 0
        let removed = table.removeAll { _, tag in
            visited += 1
            return tag >= 500 || tag % 2 == 0
        }
        #expect(removed == 750)
        #expect(table.count == 250)
        #expect(visited == 1_000)
        for (i, c) in items.enumerated() {
            let keep = i < 500 && i % 2 == 1
            #expect(table[c.key] == (keep ? c : nil))
            #expect(table.tag(of: c.key) == (keep ? UInt64(i) : nil))
        }
        let rest = table.removeAll { _, _ in true }
        #expect(rest == 250)
        #expect(table.isEmpty)
        for c in items { #expect(table[c.key] == nil) }
    }

    @Test(arguments: [false, true])
    func removeAllThenReuse(keepingCapacity: Bool) {
        var table = ConntrackTable<UInt8>(minimumCapacity: 1_000)
        let items = (0..<2_000).map { sampleConntrack($0, zone: 1) }
        for c in items {
            let isNew = table.upsert(c, tag: 1)
            #expect(isNew)
        }
        #expect(table.count == 2_000)
        table.removeAll(keepingCapacity: keepingCapacity)
        #expect(table.count == 0)
        for c in items { #expect(table[c.key] == nil) }
        for c in items.prefix(1_500) {
            let isNew = table.upsert(c, tag: 2)
            #expect(isNew)
        }
        #expect(table.count == 1_500)
        for (i, c) in items.enumerated() { #expect(table.tag(of: c.key) == (i < 1_500 ? 2 : nil)) }
    }

    @Test func upsertReplacesAndKeyIgnoresNonKeyFields() {
        var table = ConntrackTable<UInt16>()
        var c = sampleConntrack(1)
        var isNew = table.upsert(c, tag: 1)
        #expect(isNew)
        c.timeout = 99
        c.status = [.dying]
        c.reply.destinationPort = 1
        c.mark = 4
        c.tcpState = .close
        isNew = table.upsert(c, tag: 2)
        #expect(!isNew)
        #expect(table.count == 1)
        #expect(table[c.key] == c)
        #expect(table.tag(of: c.key) == 2)
        // Zone, family and protocol are part of the key.
        var other = c
        other.zone = 1
        isNew = table.upsert(other, tag: 3)
        #expect(isNew)
        other = c
        other.proto = .udp
        isNew = table.upsert(other, tag: 4)
        #expect(isNew)
        other = c
        other.family = .ipv6
        isNew = table.upsert(other, tag: 5)
        #expect(isNew)
        #expect(table.count == 4)
        let first = table.remove(c.key)
        let second = table.remove(c.key)
        let tagged = table.setTag(9, for: c.key)
        #expect(first == c)
        #expect(second == nil)
        #expect(tagged == false)
        #expect(table.count == 3)
    }
}
