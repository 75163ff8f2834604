// libFuzzer entry point: every input goes through every wire decoder. A decoder may return or
// throw a SyncProtocolError; a trap, an address-sanitizer report or a round-trip mismatch is a
// finding. Built with -parse-as-library, so libFuzzer provides `main`.
import ConntrackModel
import NIOCore
import SyncProtocol

private let controlTypes: [SyncMessageType] = (0...8).map { SyncMessageType(rawValue: UInt8($0)) }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)

    // Frames, cut from the input as from a stream.
    var stream = ByteBuffer(bytes: bytes)
    while true {
        let before = stream.readableBytes
        do {
            guard let frame = try stream.readSyncFrame() else {
                precondition(stream.readableBytes == before, "an incomplete frame consumed bytes")
                break
            }
            _ = try? SyncControlMessage.decode(type: frame.type, payload: frame.payload)
            var payload = frame.payload
            var records: [ConntrackRecord] = []
            try? payload.readConntrackRecords(into: &records)
        } catch {
            precondition(stream.readableBytes == before, "a rejected frame consumed bytes")
            break
        }
    }

    // The input as the payload of every control message type; what decodes must re-encode
    // to the same message.
    let payload = ByteBuffer(bytes: bytes)
    for type in controlTypes {
        guard let message = try? SyncControlMessage.decode(type: type, payload: payload) else { continue }
        var wire = ByteBuffer()
        wire.writeSyncMessage(message, sequence: 0)
        guard let frame = try? wire.readSyncFrame(),
              let again = try? SyncControlMessage.decode(type: frame.type, payload: frame.payload)
        else { preconditionFailure("re-encoded \(type) does not decode") }
        precondition(again == message, "\(type) changed in a round trip")
    }

    // The input as an UPDATES payload: all or nothing, and stable under re-encoding (activity
    // ages included).
    var input = payload
    var records: [ConntrackRecord] = []
    do {
        try input.readConntrackRecords(into: &records)
        precondition(input.readableBytes == 0, "records left unread")
        var reencoded = ByteBuffer()
        for r in records { reencoded.writeConntrackRecord(r) }
        var again: [ConntrackRecord] = []
        try reencoded.readConntrackRecords(into: &again)
        precondition(again == records, "records changed in a round trip")
    } catch {
        precondition(records.isEmpty && input.readableBytes == size, "a rejected payload was half-read")
    }
    return 0
}

// SwiftPM links debug executables with `--defsym main=SyncFuzz_main` (so that tests can import
// them), which would hide libFuzzer's own `main`. This entry point hands over to libFuzzer's
// driver instead. In a release build nothing calls it and libFuzzer's `main` runs directly.
@_silgen_name("LLVMFuzzerRunDriver")
private func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

@_cdecl("SyncFuzz_main")
public func syncFuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    var argc = argc
    var argv = argv
    return runFuzzerDriver(&argc, &argv, fuzz)
}
