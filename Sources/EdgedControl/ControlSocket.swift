// The control socket file: refusing to start twice, clearing a stale file, root-only permissions.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Why the control server could not start or serve.
public struct ControlServerError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case alreadyRunning(pid: Int32)
        case notASocket
        case io
    }
    public var kind: Kind
    public var socketPath: String
    public var message: String
    public var description: String { message }
}

enum ControlSocket {
    /// Makes `path` free to bind: creates its directory, removes a stale socket file, and refuses when another
    /// process answers on it (naming its pid, from `SO_PEERCRED`).
    static func prepare(path: String) throws(ControlServerError) {
        makeParentDirectory(of: path)
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        guard (st.st_mode & S_IFMT) == S_IFSOCK else {
            throw ControlServerError(kind: .notASocket, socketPath: path,
                                     message: "\(path) exists and is not a socket; move it away or choose another --socket")
        }
        switch probe(path: path) {
        case .answered(let pid):
            throw ControlServerError(kind: .alreadyRunning(pid: pid), socketPath: path,
                                     message: "edged is already running (pid \(pid)) on \(path)")
        case .refused:
            guard unlink(path) == 0 || errno == ENOENT else {
                throw ControlServerError(kind: .io, socketPath: path, message: "cannot remove stale socket \(path): \(errnoText())")
            }
        }
    }

    enum ProbeResult { case answered(pid: Int32), refused }

    /// Connects to the socket to see whether anything listens there.
    static func probe(path: String) -> ProbeResult {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .refused }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return .refused }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes + [0]) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { return .refused }
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; } (Glibc hides it behind _GNU_SOURCE).
        var cred: [Int32] = [0, 0, 0]
        var len = socklen_t(12)
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 else { return .answered(pid: 0) }
        return .answered(pid: cred[0])
    }

    /// Root-only (0600) by default; with a group, root and that group (0660).
    static func restrict(path: String, groupID: UInt32?) throws(ControlServerError) {
        // chown/chmod of a socket file by path; ownership stays root (we run as root), the group is optional.
        if let groupID {
            guard chown(path, 0, groupID) == 0 else {
                throw ControlServerError(kind: .io, socketPath: path, message: "cannot give \(path) to group \(groupID): \(errnoText())")
            }
        }
        guard chmod(path, groupID == nil ? 0o600 : 0o660) == 0 else {
            throw ControlServerError(kind: .io, socketPath: path, message: "cannot chmod \(path): \(errnoText())")
        }
    }

    static func inode(of path: String) -> UInt64? {
        var st = stat()
        return lstat(path, &st) == 0 ? UInt64(st.st_ino) : nil
    }

    static func makeParentDirectory(of path: String) {
        var dir = ""
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).dropLast()
        for part in parts {
            dir += "/" + part
            _ = mkdir(dir, 0o755)
        }
    }

    static func errnoText() -> String { String(cString: strerror(errno)) }
}
