// Sockets inside a pod's network namespace (kubectl port-forward): setns on a thread of its own.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Network namespace helpers.
///
/// setns(CLONE_NEWNET) changes only the calling thread, and a socket stays in the namespace it was created in,
/// so a connection made on a dedicated thread that entered the pod's namespace belongs to the pod: its
/// 127.0.0.1 is the pod's loopback. The thread goes back to its original namespace before it ends.
public enum NetworkNamespace {
    /// Connects to `host:port` (IPv4 or IPv6 literal) from inside the network namespace at `netnsPath` (a
    /// pinned /run/…/net file or /proc/PID/ns/net), or from edged's own namespace when it is nil (hostNetwork
    /// pods). Returns the connected, blocking, close-on-exec socket; the caller owns it.
    ///
    /// Throws `.io` naming the namespace and address when the namespace cannot be entered, the connection is
    /// refused, or it does not complete within `timeout`.
    public static func connectTCP(netnsPath: String?, host: String, port: UInt16,
                                  timeout: Duration = .seconds(5)) async throws -> Int32 {
        let result = await onThread { () -> Result<Int32, RuntimeError> in
            Result { try connectOnThisThread(netnsPath: netnsPath, host: host, port: port, timeout: timeout) }
                .mapError { $0 as? RuntimeError ?? RuntimeError(.io, "\($0)") }
        }
        return try result.get()
    }

    /// The network namespace of a process (`/proc/PID/ns/net`).
    public static func path(ofPid pid: Int32) -> String { "/proc/\(pid)/ns/net" }

    private static func connectOnThisThread(netnsPath: String?, host: String, port: UInt16,
                                            timeout: Duration) throws -> Int32 {
        let place = netnsPath.map { "network namespace \($0)" } ?? "the host network namespace"
        guard let netnsPath else { return try connect(host: host, port: port, timeout: timeout, place: place) }
        let original = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        guard original >= 0 else { throw RuntimeError(.io, "open this thread's network namespace: \(errnoString(errno))") }
        defer { close(original) }
        let target = open(netnsPath, O_RDONLY | O_CLOEXEC)
        guard target >= 0 else { throw RuntimeError(.io, "open \(place): \(errnoString(errno))") }
        let entered = Sys.setns(target, Sys.cloneNewNet)
        let enterErrno = errno
        close(target)
        guard entered == 0 else { throw RuntimeError(.io, "enter \(place): \(errnoString(enterErrno))") }
        let result = Result { try connect(host: host, port: port, timeout: timeout, place: place) }
        if Sys.setns(original, Sys.cloneNewNet) != 0 {
            // This thread ends right after; nothing else runs in the wrong namespace.
            if case .success(let fd) = result { close(fd) }
            throw RuntimeError(.io, "return from \(place): \(errnoString(errno))")
        }
        return try result.get()
    }

    /// Non-blocking connect + poll, so a silent peer costs `timeout`, not the kernel's minutes.
    private static func connect(host: String, port: UInt16, timeout: Duration, place: String) throws -> Int32 {
        let target = "\(host):\(port) in \(place)"
        var storage = sockaddr_storage()
        let length: socklen_t
        let family: Int32
        if host.contains(":") {
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = port.bigEndian
            guard inet_pton(AF_INET6, host, &a.sin6_addr) == 1 else {
                throw RuntimeError(.io, "connect to \(target): not an IP address")
            }
            withUnsafeMutableBytes(of: &storage) { dst in withUnsafeBytes(of: a) { dst.copyMemory(from: $0) } }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            family = AF_INET6
        } else {
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_port = port.bigEndian
            guard inet_pton(AF_INET, host, &a.sin_addr) == 1 else {
                throw RuntimeError(.io, "connect to \(target): not an IP address")
            }
            withUnsafeMutableBytes(of: &storage) { dst in withUnsafeBytes(of: a) { dst.copyMemory(from: $0) } }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
            family = AF_INET
        }
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw RuntimeError(.io, "socket for \(target): \(errnoString(errno))") }
        let rc = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, length) }
        }
        if rc != 0 && errno != EINPROGRESS {
            let e = errno
            close(fd)
            throw RuntimeError(.io, "connect to \(target): \(errnoString(e))")
        }
        if rc != 0 {
            let ms = Int32(min(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000, 600_000))
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            var n: Int32
            repeat { n = poll(&p, 1, ms) } while n < 0 && errno == EINTR
            if n == 0 {
                close(fd)
                throw RuntimeError(.io, "connect to \(target): timed out after \(timeout)")
            }
            var soError: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &len)
            if n < 0 || soError != 0 {
                let e = n < 0 ? errno : soError
                close(fd)
                throw RuntimeError(.io, "connect to \(target): \(errnoString(e))")
            }
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        return fd
    }
}
