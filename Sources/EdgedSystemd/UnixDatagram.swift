// Sending one datagram to a Unix socket by path, as sd_notify and the journald native protocol do.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Why a datagram could not be sent: names the socket and the errno text.
public struct SystemdSocketError: Error, Sendable, CustomStringConvertible {
    public var socketPath: String
    public var errno: Int32
    public var description: String { "\(socketPath): \(String(cString: strerror(errno)))" }
}

/// A connectionless `AF_UNIX`/`SOCK_DGRAM` socket that sends to one address. Names starting with "@" are in the
/// abstract namespace (the "@" becomes a NUL byte and the name is not NUL-terminated), as systemd documents.
final class UnixDatagramSender: Sendable {
    let path: String
    private let fd: Int32

    init(path: String) throws(SystemdSocketError) {
        self.path = path
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemdSocketError(socketPath: path, errno: errno) }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Sends `bytes` as one datagram; throws on any error (the receiver gone, message too long).
    func send(_ bytes: [UInt8]) throws(SystemdSocketError) {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var name = Array(path.utf8)
        let abstract = name.first == UInt8(ascii: "@")
        if abstract { name[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard !name.isEmpty, name.count < capacity else { throw SystemdSocketError(socketPath: path, errno: ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: name)
        }
        let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
        let length = socklen_t(pathOffset + name.count + (abstract ? 0 : 1))
        var sent: Int
        repeat {
            sent = bytes.withUnsafeBytes { buf in
                withUnsafePointer(to: &addr) { ap in
                    ap.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                        sendto(fd, buf.baseAddress, buf.count, Int32(MSG_NOSIGNAL), sa, length)
                    }
                }
            }
        } while sent < 0 && errno == EINTR
        guard sent == bytes.count else { throw SystemdSocketError(socketPath: path, errno: sent < 0 ? errno : EMSGSIZE) }
    }
}

/// Reads one variable of the process environment.
func environmentValue(_ name: String) -> String? {
    getenv(name).map { String(cString: $0) }
}
