// One edged per state dir: two daemons adopting the same containers would fight over them.

import EdgedCore
import Glibc

/// An exclusive flock(2) on `<stateDir>/edged.lock` holding the owner's pid. The kernel drops it when the
/// process dies, so a crashed edged never leaves a stale lock behind.
struct StateLock: ~Copyable {
    private let fd: Int32

    init(path: String) throws(EdgedError) {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw EdgedError(.io, "cannot open \(path): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            var buf = [UInt8](repeating: 0, count: 32)
            let n = pread(fd, &buf, 31, 0)
            let owner = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self).trimmingSpaces() : "unknown"
            close(fd)
            throw EdgedError(.io, "another edged (pid \(owner)) is already using this state dir (\(path)); stop it first (systemctl stop edged)")
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pwrite(fd, pid, pid.count, 0)
    }

    func release() {
        close(fd)
    }
}
