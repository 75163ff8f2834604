import Foundation
import Testing
import Config

@Suite struct IncludeTests {
    @Test func globIncludeSortedWithRelativePaths() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try dir.write("keepstate.conf", """
        global_defs { router_id r1 }
        include conf.d/*.conf
        vrf v { ha_fp_conntrack {
            peer p { source 10.0.0.1 address 10.0.0.2 }
            listen_ha_group b
            include tls/tls.inc
        } }
        """)
        try dir.write("conf.d/b.conf", "ha_group b { static_state BACKUP }\n")
        try dir.write("conf.d/a.conf", "ha_group a { static_state MASTER }")
        try dir.write("conf.d/ignored.txt", "garbage {")
        try dir.write("tls/tls.inc", "tls { ca ca.pem certificate ../c.pem key /k.key }")
        let c = try ConfigLoader.load(path: dir.path + "/keepstate.conf")
        #expect(c.haGroups.map(\.name) == ["a", "b"])
        #expect(c.sources == [dir.path + "/keepstate.conf", dir.path + "/conf.d/a.conf",
                              dir.path + "/conf.d/b.conf", dir.path + "/tls/tls.inc"])
        let tls = try #require(c.vrfs.first?.sync?.tls)
        #expect(tls.ca == dir.path + "/tls/ca.pem")
        #expect(tls.certificate == dir.path + "/c.pem")
        #expect(tls.key == "/k.key")
        #expect(tls.caLocation == SourceLocation(file: dir.path + "/tls/tls.inc", line: 1, column: 7))
    }

    @Test func includeFromTextUsesBaseDirectory() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try dir.write("groups.conf", "ha_group g { static_state master }")
        let c = try ConfigLoader.parse(text: "include groups.conf\n", file: "mem", baseDirectory: dir.path)
        #expect(c.haGroups.first?.staticState == .master)
        #expect(c.sources == ["mem", dir.path + "/groups.conf"])
    }

    @Test func includeMatchingNothing() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let errs = errorLines("vrf v { }\n  include missing/*.conf\n", base: dir.path)
        #expect(errs == ["t.conf:2:11: error: include pattern 'missing/*.conf' matched no files (looked for \(dir.path)/missing/*.conf)"])
        #expect(errorLines("include\n") == ["t.conf:1:1: error: 'include' expects 1 argument (a file name or glob pattern), found none"])
    }

    @Test func includeCycle() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try dir.write("main.conf", "include a.conf\n")
        try dir.write("a.conf", "ha_group g { static_state MASTER }\ninclude sub/b.conf\n")
        try dir.write("sub/b.conf", "\n  include ../a.conf\n")
        do {
            _ = try ConfigLoader.load(path: dir.path + "/main.conf")
            Issue.record("expected an include cycle error")
        } catch {
            let p = dir.path
            #expect(error.errors.map(\.description) == [
                "\(p)/sub/b.conf:2:11: error: include cycle: '\(p)/a.conf' is already being read (\(p)/main.conf -> \(p)/a.conf -> \(p)/sub/b.conf -> \(p)/a.conf)",
            ])
        }
    }

    @Test func errorsInIncludedFilesNameThatFile() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try dir.write("main.conf", "vrf x { netns a/b }\ninclude inc.conf\n")
        try dir.write("inc.conf", "\nha_group g { static_state maybe }\n")
        do {
            _ = try ConfigLoader.load(path: dir.path + "/main.conf")
            Issue.record("expected errors")
        } catch {
            #expect(error.errors.map(\.description) == [
                "\(dir.path)/main.conf:1:15: error: invalid network namespace name 'a/b'; expected a file name without '/'",
                "\(dir.path)/inc.conf:2:27: error: invalid static_state 'maybe'; expected MASTER or BACKUP",
            ])
        }
    }

    @Test func missingMainFile() {
        #expect(throws: ConfigErrors.self) { try ConfigLoader.load(path: "/nonexistent/keepstate.conf") }
    }
}
