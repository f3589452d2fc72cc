// Unpacks a tar stream into a directory without ever leaving it: every path is walked component by component with
// openat(O_NOFOLLOW), so a symlink made by the layer itself (a -> /etc) can never redirect a later entry (a/passwd).

#if canImport(Glibc)
import Glibc
#endif
import CZlib

/// Writes the entries of one tar stream under a root directory.
///
/// Layers get ownership, devices, xattrs and OCI whiteouts converted to overlayfs form (`.wh.name` → char device
/// 0:0, `.wh..wh..opq` → `trusted.overlay.opaque=y`). Outer archives (OCI archive, docker save) are unpacked plain.
/// Any entry with an absolute path, a `..` component, a path through a symlink, or a hardlink to outside the root
/// is an `unsafeEntry` error naming `label` and the entry.
final class LayerUnpacker {
    struct Options {
        var layer: Bool
        static let layer = Options(layer: true)
        static let archive = Options(layer: false)
    }

    private let root: OwnedFD
    private let label: String
    private let options: Options
    private let asRoot = getuid() == 0
    private var directoryTimes: [([String], Int64)] = []

    init(root path: String, label: String, options: Options) throws(ImageError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw FS.ioError("cannot open", path) }
        root = OwnedFD(fd)
        self.label = label
        self.options = options
    }

    func unpack(_ reader: TarReader) throws(ImageError) {
        while let entry = try reader.next() {
            try apply(entry, reader)
        }
        for (components, mtime) in directoryTimes {
            guard let dir = try? openDirectory(components, create: false, entry: "") else { continue }
            var ts = [timespec(tv_sec: Int(mtime), tv_nsec: 0), timespec(tv_sec: Int(mtime), tv_nsec: 0)]
            futimens(dir.fd, &ts)
        }
    }

    private func unsafe(_ entry: String, _ why: String) -> ImageError {
        ImageError(.unsafeEntry, "\(label): tar entry \"\(entry)\" \(why); refusing the whole image (a layer must stay inside its root)")
    }

    private func failure(_ what: String, _ entry: String, _ e: Int32 = errno) -> ImageError {
        ImageError(.io, "\(label): cannot \(what) \"\(entry)\": \(FS.errorText(e))")
    }

    /// The cleaned components of an entry path: no leading "/", no "..", "." and empty parts dropped.
    private func components(_ path: String, entry: String) throws(ImageError) -> [String] {
        if path.hasPrefix("/") { throw unsafe(entry, "has an absolute path") }
        let parts = path.split(separator: "/").map(String.init).filter { $0 != "." }
        if parts.contains("..") { throw unsafe(entry, "has a '..' component") }
        return parts
    }

    /// Opens the directory at `components` under the root, creating missing ones (0755) when `create` is set,
    /// and never following a symlink.
    private func openDirectory(_ components: [String], create: Bool, entry: String) throws(ImageError) -> OwnedFD {
        var current = OwnedFD(dup(root.fd))
        for (i, comp) in components.enumerated() {
            var fd = openat(current.fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
            if fd < 0 && errno == ENOENT && create {
                if mkdirat(current.fd, comp, 0o755) != 0 && errno != EEXIST { throw failure("create a directory for", entry) }
                fd = openat(current.fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
            }
            if fd < 0 {
                let e = errno
                var st = stat()
                let prefix = components[0...i].joined(separator: "/")
                if fstatat(current.fd, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_mode & S_IFMT == S_IFLNK {
                    throw unsafe(entry, "goes through the symlink \"\(prefix)\"")
                }
                if e == ENOTDIR { throw unsafe(entry, "goes through \"\(prefix)\", which is not a directory") }
                throw failure("open the directory \(prefix) for", entry, e)
            }
            current = OwnedFD(fd)
        }
        return current
    }

    private func apply(_ e: TarEntry, _ reader: TarReader) throws(ImageError) {
        var parts = try components(e.path, entry: e.path)
        if e.kind == .hardlink { _ = try components(e.linkTarget, entry: e.path) }
        guard let name = parts.popLast() else { return }  // the root itself: keep ours
        let parent = try openDirectory(parts, create: true, entry: e.path)

        if options.layer && name.hasPrefix(".wh.") {
            try whiteout(name, parent: parent.fd, entry: e.path)
            return
        }

        var st = stat()
        if fstatat(parent.fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 {
            // A later entry replaces an earlier one, except that a directory over a directory keeps its content.
            if !(e.kind == .directory && st.st_mode & S_IFMT == S_IFDIR) {
                try FS.removeTreeAt(parent.fd, name, label: "\(label): \(e.path)")
            }
        }

        switch e.kind {
        case .file:
            let fd = openat(parent.fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw failure("create", e.path) }
            let file = OwnedFD(fd)
            try copyData(reader, to: file.fd, entry: e.path)
            try finish(fd: file.fd, e)
        case .directory:
            if mkdirat(parent.fd, name, 0o700) != 0 && errno != EEXIST { throw failure("create", e.path) }
            let dir = try openDirectory([name], parent: parent.fd, entry: e.path)
            try finish(fd: dir.fd, e)
            directoryTimes.append((parts + [name], e.mtime))
        case .symlink:
            guard symlinkat(e.linkTarget, parent.fd, name) == 0 else { throw failure("create the symlink", e.path) }
            if options.layer && asRoot { fchownat(parent.fd, name, uid_t(e.uid), gid_t(e.gid), AT_SYMLINK_NOFOLLOW) }
            var ts = [timespec(tv_sec: Int(e.mtime), tv_nsec: 0), timespec(tv_sec: Int(e.mtime), tv_nsec: 0)]
            utimensat(parent.fd, name, &ts, AT_SYMLINK_NOFOLLOW)
        case .hardlink:
            var target = try components(e.linkTarget, entry: e.path)
            guard let targetName = target.popLast() else { throw unsafe(e.path, "is a hardlink to the root directory") }
            let targetDir = try openDirectory(target, create: false, entry: e.path)
            guard linkat(targetDir.fd, targetName, parent.fd, name, 0) == 0 else {
                throw failure("hardlink to \"\(e.linkTarget)\"", e.path)
            }
        case .charDevice, .blockDevice, .fifo:
            guard options.layer else { return }
            let type: mode_t = e.kind == .fifo ? S_IFIFO : (e.kind == .charDevice ? S_IFCHR : S_IFBLK)
            guard mknodat(parent.fd, name, type | mode_t(e.mode & 0o7777), makeDevice(e.devMajor, e.devMinor)) == 0 else {
                throw failure("create the device node", e.path)
            }
            if asRoot { fchownat(parent.fd, name, uid_t(e.uid), gid_t(e.gid), AT_SYMLINK_NOFOLLOW) }
            fchmodat(parent.fd, name, mode_t(e.mode & 0o7777), 0)
            var ts = [timespec(tv_sec: Int(e.mtime), tv_nsec: 0), timespec(tv_sec: Int(e.mtime), tv_nsec: 0)]
            utimensat(parent.fd, name, &ts, AT_SYMLINK_NOFOLLOW)
        }
    }

    private func openDirectory(_ names: [String], parent: Int32, entry: String) throws(ImageError) -> OwnedFD {
        let fd = openat(parent, names[0], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
        guard fd >= 0 else { throw unsafe(entry, "is not a directory on disk (replaced by a symlink?)") }
        return OwnedFD(fd)
    }

    /// Ownership (layers, as root), mode, xattrs (layers) and mtime of a created file or directory.
    private func finish(fd: Int32, _ e: TarEntry) throws(ImageError) {
        if options.layer && asRoot && fchown(fd, uid_t(e.uid), gid_t(e.gid)) != 0 { throw failure("chown", e.path) }
        let mode = options.layer ? mode_t(e.mode & 0o7777) : mode_t(e.mode & 0o777) | (e.kind == .directory ? 0o700 : 0o600)
        if fchmod(fd, mode) != 0 { throw failure("chmod", e.path) }
        if options.layer && asRoot {
            for (key, value) in e.xattrs {
                // Best effort, like containerd: some file systems refuse some namespaces.
                _ = value.withUnsafeBytes { fsetxattr(fd, key, $0.baseAddress, $0.count, 0) }
            }
        }
        var ts = [timespec(tv_sec: Int(e.mtime), tv_nsec: 0), timespec(tv_sec: Int(e.mtime), tv_nsec: 0)]
        futimens(fd, &ts)
    }

    private func copyData(_ reader: TarReader, to fd: Int32, entry: String) throws(ImageError) {
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 128 << 10, alignment: 1)
        defer { buf.deallocate() }
        while true {
            let n = try reader.readData(into: buf)
            if n == 0 { return }
            try FS.writeAll(fd, UnsafeRawBufferPointer(rebasing: buf[0..<n]), path: "\(label): \(entry)")
        }
    }

    /// OCI whiteouts to overlayfs: `.wh..wh..opq` marks the directory opaque, `.wh.name` becomes a 0:0 char device.
    private func whiteout(_ name: String, parent: Int32, entry: String) throws(ImageError) {
        if name == ".wh..wh..opq" {
            guard fsetxattr(parent, "trusted.overlay.opaque", "y", 1, 0) == 0 else {
                throw failure("mark opaque (needs root) the directory of", entry)
            }
            return
        }
        let hidden = String(name.dropFirst(4))
        guard !hidden.isEmpty, hidden != ".", hidden != ".." else { throw unsafe(entry, "is a whiteout for nothing") }
        try FS.removeTreeAt(parent, hidden, label: "\(label): \(entry)")
        guard mknodat(parent, hidden, S_IFCHR, 0) == 0 else { throw failure("create the whiteout (needs root) for", entry) }
    }

    private func makeDevice(_ major: UInt32, _ minor: UInt32) -> dev_t {
        // glibc's makedev; split into typed parts because Swift 6.2.3's type checker gives up on the one-liner.
        let ma = UInt64(major), mi = UInt64(minor)
        let high: UInt64 = ((ma & 0xffff_f000) << 32) | ((ma & 0xfff) << 8)
        let low: UInt64 = ((mi & 0xffff_ff00) << 12) | (mi & 0xff)
        return dev_t(high | low)
    }
}
