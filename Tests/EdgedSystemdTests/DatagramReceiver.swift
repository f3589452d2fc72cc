// A real Unix datagram socket bound in a temp dir: what the notifier and the journald handler send arrives here.

import Foundation
import Testing

final class DatagramReceiver: @unchecked Sendable {
    let dir: String
    let path: String
    let fd: Int32

    init() throws {
        var template = Array("/tmp/edged-systemd-test-XXXXXX".utf8CString)
        guard let p = mkdtemp(&template) else { throw POSIXError(.EIO) }
        dir = String(cString: p)
        path = dir + "/notify.sock"
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    }

    /// The next datagram, or nil after `timeoutMs`.
    func receive(timeoutMs: Int32 = 2000) -> [UInt8]? {
        // Retry on EINTR: other tests' child processes send SIGCHLD to this process.
        let deadline = ContinuousClock.now + .milliseconds(Int(timeoutMs))
        var ready: Int32 = -1
        while ready < 0 {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let left = max(0, Int32((deadline - ContinuousClock.now).components.seconds * 1000
                                    + (deadline - ContinuousClock.now).components.attoseconds / 1_000_000_000_000_000))
            ready = poll(&pfd, 1, left)
            if ready < 0 && errno != EINTR { return nil }
        }
        guard ready == 1 else { return nil }
        var buf = [UInt8](repeating: 0, count: 256 * 1024)
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return n >= 0 ? Array(buf[0..<n]) : nil
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
