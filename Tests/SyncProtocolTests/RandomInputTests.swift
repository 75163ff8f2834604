import ConntrackModel
import NIOCore
import SyncProtocol
import Testing

/// Random and mutated bytes through every decoder: each must return or throw a typed error,
/// never trap, and what decodes must survive a re-encode unchanged.
@Suite struct RandomInputTests {
    static let controlTypes: [SyncMessageType] = (0...8).map { SyncMessageType(rawValue: UInt8($0)) } + [SyncMessageType(rawValue: 0xFF)]

    /// Feeds `bytes` to every decoder. Returns how many decoders accepted them.
    @discardableResult
    static func exercise(_ bytes: [UInt8]) -> Int {
        var accepted = 0
        // Frames: cut until the stream is incomplete or broken.
        var stream = ByteBuffer(bytes: bytes)
        var frames = 0
        while true {
            let before = stream.readableBytes
            do {
                guard let frame = try stream.readSyncFrame() else {
                    #expect(stream.readableBytes == before)
                    break
                }
                frames += 1
                #expect(frame.payload.readableBytes + SyncWire.headerLength == before - stream.readableBytes)
                _ = try? SyncControlMessage.decode(type: frame.type, payload: frame.payload)
                var payload = frame.payload
                var updates: [ConntrackUpdate] = []
                try? payload.readConntrackUpdates(into: &updates)
            } catch {
                #expect(stream.readableBytes == before)
                break
            }
        }
        if frames > 0 { accepted += 1 }
        // Control decoders, on the raw bytes as a payload.
        let payload = ByteBuffer(bytes: bytes)
        for type in controlTypes {
            if let m = try? SyncControlMessage.decode(type: type, payload: payload) {
                accepted += 1
                #expect(m.type == type)
                var wire = ByteBuffer()
                wire.writeSyncMessage(m, sequence: 1)
                if let frame = try? wire.readSyncFrame() {
                    #expect((try? SyncControlMessage.decode(type: frame.type, payload: frame.payload)) == m)
                } else {
                    Issue.record("re-encoded \(type) does not frame")
                }
            }
        }
        // Records.
        var records = payload
        let sentinel = ConntrackRecord(.delete(goldenSNAT.key))
        var decodedRecords = [sentinel]
        do throws(SyncProtocolError) {
            try records.readConntrackRecords(into: &decodedRecords)
            accepted += 1
            #expect(records.readableBytes == 0)
            let decoded = Array(decodedRecords.dropFirst())
            var again = encodeRecords(decoded)
            var reread: [ConntrackRecord] = []
            #expect((try? again.readConntrackRecords(into: &reread)) != nil)
            #expect(reread == decoded)
        } catch {
            #expect(decodedRecords == [sentinel])
            #expect(records.readableBytes == bytes.count)
        }
        return accepted
    }

    @Test func randomByteStrings() {
        var rng = TestRNG(seed: 0x5EED)
        for i in 0..<20_000 {
            let length = i < 10_000 ? Int(rng.next() % 48) : Int(rng.next() % 400)
            var bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            // Sometimes a plausible frame header, so that frame cutting goes further.
            if i % 3 == 0 && length >= 9 {
                let n = UInt32(length - 4 - Int(rng.next() % 3))
                bytes[0] = UInt8(n >> 24); bytes[1] = UInt8(n >> 16 & 0xFF); bytes[2] = UInt8(n >> 8 & 0xFF); bytes[3] = UInt8(n & 0xFF)
            }
            Self.exercise(bytes)
        }
    }

    @Test func mutatedValidInputs() {
        var rng = TestRNG(seed: 0xC0FFEE)
        var seeds: [[UInt8]] = []
        for m in MessageTests.allMessages.prefix(12) {
            var wire = ByteBuffer()
            wire.writeSyncMessage(m, sequence: 0)
            seeds.append(Array(wire.readableBytesView))
            seeds.append(Array(wire.readableBytesView.dropFirst(SyncWire.headerLength)))
        }
        for _ in 0..<40 {
            seeds.append(Array(encode((0..<Int(rng.next() % 6 + 1)).map { _ in randomUpdate(&rng) }).readableBytesView))
        }
        var acceptedMutants = 0
        for i in 0..<20_000 {
            var bytes = seeds[i % seeds.count]
            let flips = Int(rng.next() % 4) + 1
            for _ in 0..<flips where !bytes.isEmpty {
                let at = Int(rng.next() % UInt64(bytes.count))
                switch rng.next() % 4 {
                case 0: bytes[at] ^= UInt8(1) << (rng.next() % 8)
                case 1: bytes[at] = UInt8(truncatingIfNeeded: rng.next())
                case 2: bytes.remove(at: at)
                default: bytes.insert(UInt8(truncatingIfNeeded: rng.next()), at: at)
                }
            }
            if Self.exercise(bytes) > 0 { acceptedMutants += 1 }
        }
        // The mutations are small enough that many mutants still decode somewhere.
        #expect(acceptedMutants > 1_000)
    }
}
