@testable import Daemon
import Foundation
import Glibc
import Logging
import NIOPosix
import Testing
import TestSupport

@Suite("The control socket's file", .enabled(if: isRoot, "needs root: the socket is given to another group"))
struct ControlSocketTests {
    func mode(_ path: String) -> (mode: mode_t, gid: gid_t)? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return (st.st_mode & 0o777, st.st_gid)
    }

    @Test("root only (0600) by default; 0660 and the group's with a socket group; an unknown group refused, nothing left listening")
    func modes() async throws {
        let dir = try TempDir()
        let loops = MultiThreadedEventLoopGroup.singleton
        let handler: ControlServer.Handler = { _ in ControlReply(ok: true) }
        let plain = try await ControlServer.start(path: "\(dir.path)/a.sock", group: nil, eventLoops: loops, logger: Logger(label: "t"),
                                                  handler: handler)
        #expect(mode("\(dir.path)/a.sock")?.mode == 0o600)
        await plain.close()
        // Debian's `nogroup` (65534).
        let grouped = try await ControlServer.start(path: "\(dir.path)/b.sock", group: "nogroup", eventLoops: loops,
                                                    logger: Logger(label: "t"), handler: handler)
        let m = try #require(mode("\(dir.path)/b.sock"))
        #expect(m.mode == 0o660)
        #expect(m.gid == getgrnam("nogroup")?.pointee.gr_gid)
        await grouped.close()
        await #expect(throws: (any Error).self) {
            _ = try await ControlServer.start(path: "\(dir.path)/c.sock", group: "no-such-group-ks", eventLoops: loops,
                                              logger: Logger(label: "t"), handler: handler)
        }
    }
}

@Suite("The control client")
struct ControlClientVersionTests {
    @Test("a reply of another protocol version is refused with what to do, not rendered")
    func otherVersionRefused() async throws {
        let dir = try TempDir()
        let server = try await ControlServer.start(path: "\(dir.path)/v.sock", group: nil, eventLoops: MultiThreadedEventLoopGroup.singleton,
                                                   logger: Logger(label: "t")) { _ in
            var reply = ControlReply(ok: true)
            reply.version = ControlProtocol.version + 1
            return reply
        }
        let path = "\(dir.path)/v.sock"
        // Off the cooperative pool (a blocking call there can starve the daemon's handler).
        let outcome: Result<ControlReply, any Error>
        do {
            outcome = .success(try await offPool { try ControlClient.send(ControlRequest(command: .showState), socketPath: path) })
        } catch {
            outcome = .failure(error)
        }
        await server.close()
        guard case .failure(let error) = outcome else {
            Issue.record("a reply of version \(ControlProtocol.version + 1) was accepted")
            return
        }
        #expect("\(error)".contains("control protocol version \(ControlProtocol.version + 1)"), "\(error)")
    }
}
