// A real Unix datagram socket bound in a temp dir: what libsystemd's sd_notify sends arrives here.
//
// Like systemd, the receiver asks for the sender's credentials (SO_PASSCRED) and keeps only datagrams from this
// test process: a child process that inherits NOTIFY_SOCKET while a test has it set cannot disturb the test.

import Foundation
import Testing

final class DatagramReceiver: @unchecked Sendable {
    let dir: String
    let path: String
    let fd: Int32

    /// Binds `<temp dir>/notify.sock`, or the abstract name `abstract` (without the leading NUL).
    init(abstract: String? = nil) throws {
        var template = Array("/tmp/edged-systemd-test-XXXXXX".utf8CString)
        guard let p = mkdtemp(&template) else { throw POSIXError(.EIO) }
        dir = String(cString: p)
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let name: [UInt8]
        if let abstract {
            path = "@" + abstract
            name = [0] + Array(abstract.utf8)
        } else {
            path = dir + "/notify.sock"
            name = Array(path.utf8) + [0]
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: name) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + name.count)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    }

    /// The next datagram this process sent, or nil after `timeoutMs`.
    func receive(timeoutMs: Int32 = 2000) -> [UInt8]? {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeoutMs))
        while true {
            let left = deadline - ContinuousClock.now
            let ms = max(0, Int32(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000))
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, ms)
            // Retry on EINTR: other tests' child processes send SIGCHLD to this process.
            if ready < 0 && errno == EINTR { continue }
            guard ready == 1 else { return nil }
            guard let (bytes, pid) = receiveWithSender() else { return nil }
            if pid == getpid() { return bytes }
        }
    }

    private func receiveWithSender() -> ([UInt8], pid_t)? {
        var buf = [UInt8](repeating: 0, count: 256 * 1024)
        var control = [UInt8](repeating: 0, count: 256)
        var controlLength = 0
        let n = buf.withUnsafeMutableBytes { data -> Int in
            control.withUnsafeMutableBytes { ctl -> Int in
                var iov = iovec(iov_base: data.baseAddress, iov_len: data.count)
                return withUnsafeMutablePointer(to: &iov) { iovp -> Int in
                    var msg = msghdr()
                    msg.msg_iov = iovp
                    msg.msg_iovlen = 1
                    msg.msg_control = ctl.baseAddress
                    msg.msg_controllen = ctl.count
                    let n = recvmsg(fd, &msg, 0)
                    controlLength = Int(msg.msg_controllen)
                    return n
                }
            }
        }
        guard n >= 0 else { return nil }
        // struct cmsghdr { size_t len; int level; int type; } (16 bytes on 64-bit), then struct ucred { pid; uid; gid }.
        var pid: pid_t = -1
        var offset = 0
        while offset + 16 <= controlLength {
            let len = control.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: Int.self) }
            let level = control.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + 8, as: Int32.self) }
            let type = control.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + 12, as: Int32.self) }
            if level == SOL_SOCKET && type == 2 /* SCM_CREDENTIALS, _GNU_SOURCE only */ && len >= 16 + 12 {
                pid = control.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + 16, as: pid_t.self) }
            }
            guard len > 0 else { break }
            offset += (len + 7) & ~7
        }
        return (Array(buf[0..<n]), pid)
    }

    func receiveText(timeoutMs: Int32 = 2000) -> String? {
        receive(timeoutMs: timeoutMs).map { String(decoding: $0, as: UTF8.self) }
    }

    /// `receiveText` on a Dispatch thread, so waiting does not block the cooperative pool the sender runs on.
    func receiveTextAsync(timeoutMs: Int32 = 2000) async -> String? {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: self.receiveText(timeoutMs: timeoutMs)) }
        }
    }

    deinit {
        close(fd)
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// Sets (or, for nil, removes) process environment variables for the duration of `body`, then restores them.
/// libsystemd reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from the process environment, so the suites that
/// use this are serialized.
func withEnvironment<T>(_ values: [String: String?], _ body: () throws -> T) rethrows -> T {
    var saved: [String: String?] = [:]
    for (key, value) in values {
        saved[key] = getenv(key).map { String(cString: $0) }
        if let value { setenv(key, value, 1) } else { unsetenv(key) }
    }
    defer {
        for (key, value) in saved {
            if let value { setenv(key, value, 1) } else { unsetenv(key) }
        }
    }
    return try body()
}
