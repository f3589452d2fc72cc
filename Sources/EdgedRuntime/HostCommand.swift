// Running a host tool (ip, for the hub's dummy interface) from the daemon, without Foundation's Process.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

public enum HostCommand {
    /// The first of `names` found in the usual sbin/bin directories, or nil.
    public static func find(_ names: String...) -> String? {
        for name in names {
            for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/local/bin"] {
                let path = "\(dir)/\(name)"
                if access(path, X_OK) == 0 { return path }
            }
        }
        return nil
    }

    /// Runs `path args` to completion on a plain thread; returns its exit code (128+signal when killed) and its
    /// combined output (up to 64 KiB).
    public static func run(_ path: String, _ args: [String]) async throws -> (status: Int32, output: String) {
        let (readFD, writeFD) = try Sys.pipe()
        let pid: pid_t
        do {
            pid = try Sys.spawn(path, args, output: writeFD)
        } catch {
            close(readFD)
            close(writeFD)
            throw error
        }
        close(writeFD)
        return await onThread {
            var output: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(readFD, $0.baseAddress, $0.count) }
                if n > 0 { if output.count < 64 << 10 { output += buffer[0..<n] } } else if n == 0 || errno != EINTR { break }
            }
            close(readFD)
            return (Sys.reap(pid), String(decoding: output, as: UTF8.self))
        }
    }
}
