// Whole-file reads, mkdir -p and rm -rf over Glibc, for modules that must not pull in Foundation.

import Glibc

public enum Files {
    /// Reads a whole file (up to `limit` bytes); nil with errno set when it cannot be opened or read.
    public static func read(_ path: String, limit: Int = 64 << 20) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while bytes.count < limit {
            let n = Glibc.read(fd, &buf, buf.count)
            if n < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if n == 0 { break }
            bytes.append(contentsOf: buf[0..<n])
        }
        return bytes
    }

    /// Reads a whole text file; nil with errno set on error.
    public static func readText(_ path: String, limit: Int = 64 << 20) -> String? {
        read(path, limit: limit).map { String(decoding: $0, as: UTF8.self) }
    }

    /// mkdir -p; true on success or when the directory exists.
    @discardableResult
    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) -> Bool {
        var current = ""
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, mode) != 0 && errno != EEXIST { return false }
        }
        return true
    }

    /// The names in a directory, without "." and ".."; nil with errno set when it cannot be opened.
    public static func list(_ path: String) -> [String]? {
        guard let dir = opendir(path) else { return nil }
        defer { closedir(dir) }
        var names: [String] = []
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// rm -rf that never follows symlinks.
    public static func removeTree(_ path: String) {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        guard st.st_mode & S_IFMT == S_IFDIR else {
            unlink(path)
            return
        }
        for name in list(path) ?? [] { removeTree("\(path)/\(name)") }
        rmdir(path)
    }

    /// VmRSS of a process in bytes (0 when it is gone).
    public static func rssBytes(pid: Int32) -> Int64 {
        for line in (readText("/proc/\(pid)/status") ?? "").split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kb = Int64(parts[1]) { return kb * 1024 }
        }
        return 0
    }

    /// /proc/meminfo in bytes, by field name ("MemTotal", "MemAvailable", ...).
    public static func meminfo() -> [String: Int64] {
        var out: [String: Int64] = [:]
        for line in (readText("/proc/meminfo") ?? "").split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count >= 2, let v = Int64(parts[1]) else { continue }
            out[String(parts[0].dropLast())] = v * 1024
        }
        return out
    }

    /// Size and space available to unprivileged users of the filesystem holding `path`, in bytes ((0, 0) on error).
    public static func diskSpace(_ path: String) -> (total: Int64, free: Int64) {
        var vfs = statvfs()
        guard statvfs(path, &vfs) == 0 else { return (0, 0) }
        return (Int64(vfs.f_blocks) * Int64(vfs.f_frsize), Int64(vfs.f_bavail) * Int64(vfs.f_frsize))
    }

    /// Replaces `path` so that after a power loss it holds either the old or the new content: writes
    /// `<path>.tmp` with exactly `mode`, fsyncs it, renames it over `path`, fsyncs the directory.
    public static func writeAtomically(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws(EdgedError) {
        let tmp = "\(path).tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw EdgedError(.io, "cannot write \(tmp): \(String(cString: strerror(errno)))") }
        var failure: Int32?
        if fchmod(fd, mode) != 0 { failure = errno }
        var off = 0
        while failure == nil && off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { failure = errno } else { off += n }
        }
        if failure == nil && fsync(fd) != 0 { failure = errno }
        close(fd)
        if let failure {
            unlink(tmp)
            throw EdgedError(.io, "cannot write \(tmp): \(String(cString: strerror(failure)))")
        }
        guard rename(tmp, path) == 0 else {
            let e = errno
            unlink(tmp)
            throw EdgedError(.io, "cannot rename \(tmp) to \(path): \(String(cString: strerror(e)))")
        }
        syncDirectory(parentDirectory(of: path))
    }

    /// The directory part of `path` ("." for a bare name, "/" for a top-level entry).
    public static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// fsyncs a directory, so that entries created, renamed or removed in it survive a power loss (best effort).
    public static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        fsync(fd)
        close(fd)
    }
}
