// Socket activation: the listening sockets systemd passes in (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES).

import CSystemd
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The sockets a `.socket` unit handed to this process, through sd_listen_fds_with_names(3).
///
/// systemd passes them as fds 3, 4, … and names each after the socket unit's `FileDescriptorName=` (default: the
/// socket unit's name, e.g. "edged.socket"). libsystemd only returns them when `LISTEN_PID` is this process, so a
/// child that inherits the variables does not take them. edged asks once, at startup: the variables are then
/// removed from the environment so containers and hooks never see them.
public enum SystemdSockets {
    /// One passed socket.
    public struct Passed: Sendable, Equatable {
        public var fd: Int32
        public var name: String
    }

    /// The passed sockets (empty when not socket-activated), after removing `LISTEN_*` from the environment.
    public static func take() -> [Passed] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        let count = sd_listen_fds_with_names(1, &names)
        guard count > 0 else { return [] }
        defer {
            if let names {
                for i in 0..<Int(count) { free(names[i]) }
                free(names)
            }
        }
        return (0..<count).map { i in
            Passed(fd: SD_LISTEN_FDS_START + i, name: names?[Int(i)].map { String(cString: $0) } ?? "unknown")
        }
    }

    /// The Unix stream socket among `passed` that listens on `path` (or, failing that, the only Unix stream
    /// listening socket named `name`), as the control socket; nil when there is none.
    public static func unixListener(_ passed: [Passed], path: String, name: String) -> Passed? {
        let listening = passed.filter { sd_is_socket_unix($0.fd, Int32(SOCK_STREAM.rawValue), 1, nil, 0) > 0 }
        if let byPath = listening.first(where: { sd_is_socket_unix($0.fd, Int32(SOCK_STREAM.rawValue), 1, path, 0) > 0 }) {
            return byPath
        }
        return listening.first { $0.name == name }
    }

    /// The file-system path a Unix socket is bound to, nil for an unnamed or abstract one.
    public static func boundPath(_ fd: Int32) -> String? {
        var addr = sockaddr_un()
        var length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let rc = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0, addr.sun_family == sa_family_t(AF_UNIX) else { return nil }
        let path = withUnsafeBytes(of: &addr.sun_path) { raw -> String in
            let bytes = raw.prefix(max(0, Int(length) - MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!))
            return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
        return path.hasPrefix("/") ? path : nil
    }
}
