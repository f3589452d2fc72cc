// Small POSIX file helpers: whole-file reads, crash-safe writes, symlink-safe recursive removal, sizes.

#if canImport(Glibc)
import Glibc
#endif

/// An open file descriptor, closed when the owner goes away.
final class OwnedFD: Sendable {
    let fd: Int32
    init(_ fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}

enum FS {
    static func errorText(_ e: Int32 = errno) -> String { String(cString: strerror(e)) }

    static func ioError(_ what: String, _ path: String, _ e: Int32 = errno) -> ImageError {
        ImageError(.io, "\(what) \(path): \(errorText(e))")
    }

    static func lstatMode(_ path: String) -> mode_t? {
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_mode & S_IFMT : nil
    }

    static func exists(_ path: String) -> Bool { lstatMode(path) != nil }
    static func isDirectory(_ path: String) -> Bool { lstatMode(path) == S_IFDIR }

    static func fileSize(_ path: String) -> Int64? {
        var st = stat()
        return stat(path, &st) == 0 ? Int64(st.st_size) : nil
    }

    static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(ImageError) {
        var current = path.hasPrefix("/") ? "" : "."
        for comp in path.split(separator: "/") {
            current += "/\(comp)"
            if mkdir(current, mode) != 0 && errno != EEXIST { throw ioError("cannot create directory", current) }
        }
    }

    static func openRead(_ path: String) throws(ImageError) -> OwnedFD {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ioError("cannot open", path) }
        return OwnedFD(fd)
    }

    /// Reads a whole file, refusing files over `limit` bytes (manifests and configs are small; layers never
    /// come through here).
    static func readFile(_ path: String, limit: Int = 16 << 20) throws(ImageError) -> [UInt8] {
        let f = try openRead(path)
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(f.fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ioError("cannot read", path)
            }
            if n == 0 { break }
            out.append(contentsOf: buf[0..<n])
            if out.count > limit { throw ImageError(.corruptArchive, "\(path) is larger than \(limit) bytes") }
        }
        return out
    }

    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws(ImageError) {
        var off = 0
        while off < bytes.count {
            let n = write(fd, bytes.baseAddress! + off, bytes.count - off)
            if n < 0 {
                if errno == EINTR { continue }
                throw ioError("cannot write", path)
            }
            off += n
        }
    }

    /// Writes `bytes` to `path` so that after a crash the file holds either the old or the new content:
    /// write a temp file, fsync it, rename it over, fsync the directory.
    static func writeFileAtomically(_ path: String, _ bytes: [UInt8]) throws(ImageError) {
        let tmp = "\(path).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ioError("cannot create", tmp) }
        let written = bytes.withUnsafeBytes { b in (try? writeAll(fd, b, path: tmp)) != nil }
        guard written, fsync(fd) == 0 else {
            let e = errno
            close(fd)
            unlink(tmp)
            throw ioError("cannot write", tmp, e)
        }
        close(fd)
        guard rename(tmp, path) == 0 else {
            let e = errno
            unlink(tmp)
            throw ioError("cannot rename into place", path, e)
        }
        try syncDirectory(parent(of: path))
    }

    static func syncDirectory(_ dir: String) throws(ImageError) {
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw ioError("cannot open", dir) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw ioError("cannot fsync", dir) }
    }

    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    static func baseName(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    /// Names in a directory, without "." and "..". Empty when it cannot be read.
    static func list(_ dir: String) -> [String] {
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        return listAt(fd)
    }

    /// Names in the directory `fd`; takes ownership of `fd`.
    static func listAt(_ fd: Int32) -> [String] {
        guard let d = fdopendir(fd) else {
            close(fd)
            return []
        }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Removes `path` and everything below it without following symlinks. Missing is fine.
    static func removeTree(_ path: String) throws(ImageError) {
        let dir = open(parent(of: path), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dir >= 0 else {
            if errno == ENOENT { return }
            throw ioError("cannot open", parent(of: path))
        }
        defer { close(dir) }
        try removeTreeAt(dir, baseName(path), label: path)
    }

    /// Removes `name` in directory `dirFD`, recursing into directories through file descriptors only.
    static func removeTreeAt(_ dirFD: Int32, _ name: String, label: String) throws(ImageError) {
        if unlinkat(dirFD, name, 0) == 0 || errno == ENOENT { return }
        guard errno == EISDIR else { throw ioError("cannot remove", label) }
        let sub = openat(dirFD, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
        guard sub >= 0 else { throw ioError("cannot open", label) }
        for child in listAt(dup(sub)) {
            do { try removeTreeAt(sub, child, label: "\(label)/\(child)") } catch {
                close(sub)
                throw error
            }
        }
        close(sub)
        if unlinkat(dirFD, name, AT_REMOVEDIR) != 0 && errno != ENOENT { throw ioError("cannot remove", label) }
    }

    /// Bytes used by a tree's regular files (hardlinked files counted once per link; good enough for reports).
    static func treeSize(_ path: String) -> Int64 {
        var st = stat()
        guard lstat(path, &st) == 0 else { return 0 }
        if st.st_mode & S_IFMT != S_IFDIR { return st.st_mode & S_IFMT == S_IFREG ? Int64(st.st_size) : 0 }
        return list(path).reduce(0) { $0 + treeSize("\(path)/\($1)") }
    }

    /// A name for a temp file or dir that no other call will pick.
    static func uniqueName(_ prefix: String) -> String {
        "\(prefix)-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
    }
}
