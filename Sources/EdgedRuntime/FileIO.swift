// Small file helpers over Glibc: durable atomic writes, whole-file reads, mkdir -p, /proc lookups.

import EdgedCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

enum FileIO {
    /// Reads a whole file; nil when it cannot be opened.
    static func read(_ path: String) -> [UInt8]? { Files.read(path) }

    static func readString(_ path: String) -> String? {
        read(path).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Writes `bytes` to `path` so that after power loss the file is either the old or the new content.
    static func writeAtomic(_ path: String, _ bytes: [UInt8]) throws {
        do { try Files.writeAtomically(path, bytes) } catch { throw RuntimeError(.io, error.message) }
    }

    static func writeAtomic(_ path: String, _ text: String) throws {
        try writeAtomic(path, Array(text.utf8))
    }

    /// Writes into an existing file (cgroup control files): open without truncation semantics that matter.
    static func writeExisting(_ path: String, _ text: String, create: Bool = false) throws {
        let fd = open(path, O_WRONLY | O_CLOEXEC | (create ? O_CREAT | O_TRUNC : 0), 0o644)
        guard fd >= 0 else { throw RuntimeError(.io, "open \(path): \(errnoString(errno))") }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, bytes.count) }
        guard n == bytes.count else { throw RuntimeError(.io, "write \(text) to \(path): \(errnoString(errno))") }
    }

    static func dirname(_ path: String) -> String {
        guard let i = path.lastIndex(of: "/") else { return "." }
        return i == path.startIndex ? "/" : String(path[..<i])
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    static func mkdirP(_ path: String, mode: mode_t = 0o755) throws {
        var current = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, mode) != 0 && errno != EEXIST {
                throw RuntimeError(.io, "mkdir \(current): \(errnoString(errno))")
            }
        }
    }

    static func listDir(_ path: String) -> [String] { Files.list(path) ?? [] }

    /// Removes a tree (rm -rf), not following symlinks.
    static func removeTree(_ path: String) { Files.removeTree(path) }

    /// Parses "key=value" lines.
    static func keyValues(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            out[String(line[..<eq])] = String(line[line.index(after: eq)...])
        }
        return out
    }

    /// Field 22 of /proc/PID/stat (start time in clock ticks since boot); nil when the process is gone.
    /// Comparing it with a recorded value tells a live process from a recycled pid.
    static func startTicks(pid: Int32) -> UInt64? {
        guard pid > 0, let stat = readString("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else {
            return nil
        }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // fields[0] is field 3 (state); starttime is field 22.
        guard fields.count > 19 else { return nil }
        if fields[0] == "Z" { return nil }
        return UInt64(fields[19])
    }
}
