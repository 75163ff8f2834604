import Foundation
import Testing
import Config

@Suite struct FuzzTests {
    /// Every outcome must be a model or a non-empty list of located, sorted errors.
    private func check(_ text: String, base: String) {
        do {
            _ = try ConfigLoader.parse(text: text, file: "f.conf", baseDirectory: base)
        } catch {
            #expect(!error.errors.isEmpty)
            var previous = (0, 0)
            for e in error.errors {
                #expect(e.file == "f.conf")
                #expect(e.line >= 1 && e.column >= 1 && !e.message.isEmpty)
                #expect(previous <= (e.line, e.column), "errors not sorted")
                previous = (e.line, e.column)
            }
        }
    }

    @Test func randomBytesNeverCrash() throws {
        let dir = try TempDir() // empty: any include matches nothing
        defer { dir.cleanup() }
        var rng = SplitMix64(seed: 0x6B65_6570)
        let alphabet = Array("{}\"\\#! \t\n\rabc019.:/_-".utf8) + Array("vrf ha_group peer tls include ".utf8)
        for round in 0..<2000 {
            let length = Int(rng.next() % 200)
            var bytes: [UInt8] = []
            for _ in 0..<length {
                let r = rng.next()
                bytes.append(round % 2 == 0 ? UInt8(truncatingIfNeeded: r) : alphabet[Int(r % UInt64(alphabet.count))])
            }
            check(String(decoding: bytes, as: UTF8.self), base: dir.path)
        }
    }

    @Test func mutatedValidFileNeverCrashes() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        var parsed = 0
        for text in tokenMutations(of: golden, seed: 42, count: 2000) {
            if (try? ConfigLoader.parse(text: text, file: "f.conf", baseDirectory: dir.path)) != nil { parsed += 1 }
            check(text, base: dir.path)
        }
        #expect(parsed > 0 && parsed < 2000)
    }
}

/// `count` variants of `text`, each with one to four tokens removed, duplicated or swapped (line
/// breaks are tokens of their own), from a seeded generator.
func tokenMutations(of text: String, seed: UInt64, count: Int) -> [String] {
    let tokens = text.split(separator: "\n", omittingEmptySubsequences: false)
        .flatMap { $0.split(separator: " ").map(String.init) + ["\n"] }
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { _ in
        var t = tokens
        for _ in 0...(rng.next() % 3) {
            let i = Int(rng.next() % UInt64(t.count))
            let j = Int(rng.next() % UInt64(t.count))
            switch rng.next() % 3 {
            case 0: t.remove(at: i)
            case 1: t.insert(t[i], at: j)
            default: t.swapAt(i, j)
            }
        }
        return t.joined(separator: " ")
    }
}
