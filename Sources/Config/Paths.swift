import Foundation

/// Small, deterministic path helpers (no symlink resolution, no file-system access).
enum Paths {
    /// Joins `path` to `directory` unless it is absolute, then removes `.`/`..`/empty components.
    static func resolve(_ path: String, relativeTo directory: String) -> String {
        let joined = path.hasPrefix("/") ? path : directory + "/" + path
        return normalize(joined)
    }

    static func normalize(_ path: String) -> String {
        var parts: [Substring] = []
        for comp in path.split(separator: "/", omittingEmptySubsequences: true) {
            if comp == "." { continue }
            if comp == ".." { if !parts.isEmpty { parts.removeLast() }; continue }
            parts.append(comp)
        }
        return "/" + parts.joined(separator: "/")
    }

    static func directory(of path: String) -> String {
        let abs = resolve(path, relativeTo: FileManager.default.currentDirectoryPath)
        guard let slash = abs.lastIndex(of: "/"), slash != abs.startIndex else { return "/" }
        return String(abs[..<slash])
    }

    static var currentDirectory: String { normalize(FileManager.default.currentDirectoryPath) }

    /// Escapes glob metacharacters so a directory name is matched literally.
    static func globEscape(_ s: String) -> String {
        var out = ""
        for ch in s {
            if ch == "*" || ch == "?" || ch == "[" || ch == "]" || ch == "\\" { out.append("\\") }
            out.append(ch)
        }
        return out
    }

    /// Sorted matches of a glob(3) pattern; empty when nothing matches or on error.
    static func glob(_ pattern: String) -> [String] {
        var g = glob_t()
        defer { globfree(&g) }
        guard Foundation.glob(pattern, 0, nil, &g) == 0 else { return [] }
        var result: [String] = []
        for i in 0..<Int(g.gl_pathc) {
            if let p = g.gl_pathv[i] { result.append(String(cString: p)) }
        }
        return result.sorted()
    }

    static func isReadableFile(_ path: String) -> Bool {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue else { return false }
        return FileManager.default.isReadableFile(atPath: path)
    }

    static func read(_ path: String) -> String? {
        guard isReadableFile(path), let data = FileManager.default.contents(atPath: path) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }
}
