// Processes without Foundation: posix_spawn with a clean fd set and signal state, pidfd-based exit waiting on
// one dedicated thread for all processes, and blocking work on plain threads (never the cooperative pool).

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux
import Synchronization

/// Linux calls the Glibc module does not import (GNU extensions), through the CLinux shim: called directly, so
/// that the static binaries have them too (a dlsym lookup finds nothing in a static executable).
enum Sys {
    /// CLONE_NEWNET, for `setns` (the Glibc module does not import the clone flags).
    static let cloneNewNet: Int32 = 0x4000_0000

    /// setns(2) for the calling thread.
    static func setns(_ fd: Int32, _ type: Int32) -> Int32 {
        CLinux.setns(fd, type)
    }

    /// A pidfd for `pid` (Linux ≥ 5.3; the kernel makes it close-on-exec), or nil (process gone, or no pidfd
    /// support).
    static func pidfdOpen(_ pid: pid_t) -> Int32? {
        let fd = edged_pidfd_open(pid, 0)
        return fd >= 0 ? fd : nil
    }

    /// A close-on-exec pipe: (read end, write end).
    static func pipe() throws -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        let rc = fds.withUnsafeMutableBufferPointer { pipe2($0.baseAddress!, O_CLOEXEC) }
        guard rc == 0 else { throw RuntimeError(.io, "pipe: \(errnoString(errno))") }
        return (fds[0], fds[1])
    }

    /// posix_spawn `path` with stdin from /dev/null, stdout+stderr onto `output` (or /dev/null), no other fds,
    /// an empty signal mask and default signal dispositions (edged's threads may block signals).
    static func spawn(_ path: String, _ args: [String], output: Int32? = nil) throws -> pid_t {
        try spawn(path, args, stdin: nil, stdout: output, stderr: output)
    }

    /// posix_spawn `path` with the given descriptors as 0, 1, 2 (nil: /dev/null), no other fds, clean signal
    /// state; with `newProcessGroup` the child leads a process group of its own (its pid), so it and what it
    /// starts can be killed together.
    static func spawn(_ path: String, _ args: [String], stdin: Int32?, stdout: Int32?, stderr: Int32?,
                      newProcessGroup: Bool = false) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (target, fd) in [(Int32(0), stdin), (1, stdout), (2, stderr)] {
            if let fd {
                posix_spawn_file_actions_adddup2(&actions, fd, target)
            } else {
                posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0)
            }
        }
        // Nothing but 0-2: SwiftNIO's sockets are not close-on-exec.
        posix_spawn_file_actions_addclosefrom_np(&actions, 3)

        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setsigdefault(&attr, &all)
        var flags = Int32(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
        if newProcessGroup {
            flags |= Int32(POSIX_SPAWN_SETPGROUP)
            posix_spawnattr_setpgroup(&attr, 0)
        }
        posix_spawnattr_setflags(&attr, Int16(flags))

        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + args).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attr, argv, environ)
        guard rc == 0 else { throw RuntimeError(.io, "spawn \(path): \(errnoString(rc))") }
        return pid
    }

    /// Reaps an exited child; returns its exit code (128+signal when killed).
    static func reap(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return -1 }
        }
        let sig = status & 0x7f
        return sig == 0 ? (status >> 8) & 0xff : 128 + sig
    }
}

/// Runs `body` on a new detached thread and returns its result; for blocking system calls.
func onThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { (cont: CheckedContinuation<T, Never>) in
        startThread { cont.resume(returning: body()) }
    }
}

private final class ThreadBody {
    let run: @Sendable () -> Void
    init(_ run: @escaping @Sendable () -> Void) { self.run = run }
}

func startThread(_ body: @escaping @Sendable () -> Void) {
    let box = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var attr = pthread_attr_t()
    pthread_attr_init(&attr)
    pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
    pthread_attr_setstacksize(&attr, 256 * 1024)
    var tid = pthread_t()
    let rc = pthread_create(&tid, &attr, { raw in
        let body = Unmanaged<ThreadBody>.fromOpaque(raw!).takeRetainedValue()
        body.run()
        return nil
    }, box)
    pthread_attr_destroy(&attr)
    if rc != 0 {
        // No thread: run inline rather than lose the work.
        Unmanaged<ThreadBody>.fromOpaque(box).takeRetainedValue().run()
    }
}

/// Waits for processes to exit without being their parent: one thread polls the pidfds of every watched
/// process (plus a wake-up pipe) and resumes the waiting tasks. Without pidfd support it falls back to
/// checking /proc every 100 ms.
final class ProcessWatcher: Sendable {
    static let shared = ProcessWatcher()

    private struct State {
        var waiters: [Int32: [CheckedContinuation<Void, Never>]] = [:]
        var started = false
    }

    private let state = Mutex(State())
    private let wake: (Int32, Int32)?

    private init() {
        wake = try? Sys.pipe()
    }

    /// Returns once `pid` has exited (at once when it is gone or, with `startTicks`, when the pid was reused).
    func waitForExit(pid: Int32, startTicks: UInt64? = nil) async {
        guard let wake, let fd = Sys.pidfdOpen(pid) else {
            while let t = FileIO.startTicks(pid: pid), startTicks == nil || t == startTicks {
                try? await Task.sleep(for: .milliseconds(100))
            }
            return
        }
        // The pidfd pins the process: checking identity after opening it is race-free.
        if let startTicks, FileIO.startTicks(pid: pid) != startTicks {
            close(fd)
            return
        }
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            let startNow = state.withLock { s -> Bool in
                s.waiters[fd, default: []].append(cont)
                defer { s.started = true }
                return !s.started
            }
            if startNow { startThread { self.loop() } }
            var b: UInt8 = 1
            _ = write(wake.1, &b, 1)
        }
    }

    private func loop() {
        guard let wake else { return }
        var buf = [UInt8](repeating: 0, count: 64)
        while true {
            var fds = [pollfd(fd: wake.0, events: Int16(POLLIN), revents: 0)]
            fds += state.withLock { s in s.waiters.keys.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) } }
            let n = poll(&fds, nfds_t(fds.count), -1)
            if n < 0 { continue }
            if fds[0].revents != 0 { _ = read(wake.0, &buf, buf.count) }
            for p in fds.dropFirst() where p.revents != 0 {
                let conts = state.withLock { s in s.waiters.removeValue(forKey: p.fd) ?? [] }
                close(p.fd)
                for c in conts { c.resume() }
            }
        }
    }
}
