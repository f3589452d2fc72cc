// Runs CNI plugin binaries: posix_spawn with the CNI_* environment, the config on stdin, stdout and stderr
// captured, and a deadline after which the plugin is killed. The blocking part runs on a thread of its own,
// never on the cooperative pool (the same approach as EdgedRuntime's process helpers).

import CLinux
import Glibc

/// Finds and runs plugin executables in the plugin directories (CNI_PATH).
struct PluginExecutor: Sendable {
    let binDirs: [String]
    let timeout: Duration

    /// What a finished plugin left behind.
    struct Output: Sendable {
        var status: Int32
        var stdout: [UInt8]
        var stderr: [UInt8]
    }

    /// The first executable `type` in the plugin directories, or nil.
    func find(_ type: String) -> String? {
        for dir in binDirs {
            let path = "\(dir)/\(type)"
            var st = stat()
            if stat(path, &st) == 0, st.st_mode & S_IFMT == S_IFREG, access(path, X_OK) == 0 { return path }
        }
        return nil
    }

    /// Runs the plugin at `path` with `environment` (added to edged's own, CNI_* replaced) and `input` on stdin.
    /// Throws `.timeout` (after killing it) when it runs longer than `timeout`, `.io` when it cannot be started.
    func run(plugin: String, path: String, environment: [(String, String)], input: [UInt8]) async throws(NetworkError) -> Output {
        let deadlineMillis = Int(timeout.components.seconds * 1000) + Int(timeout.components.attoseconds / 1_000_000_000_000_000)
        let result: Result<Output, NetworkError> = await Blocking.run {
            PluginProcess.run(plugin: plugin, path: path, environment: environment, input: input, timeoutMillis: deadlineMillis)
        }
        return try result.get()
    }
}

/// The blocking half of a plugin run.
enum PluginProcess {
    static func errnoText(_ e: Int32) -> String { String(cString: strerror(e)) }

    static func monotonicMillis() -> Int {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
    }

    static func run(plugin: String, path: String, environment: [(String, String)], input: [UInt8],
                    timeoutMillis: Int) -> Result<PluginExecutor.Output, NetworkError> {
        // stdin is a socket pair so that a plugin that exits without reading costs EPIPE, not SIGPIPE.
        var sv: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &sv) == 0 else {
            return .failure(NetworkError(.io, "CNI plugin \(plugin): socketpair: \(errnoText(errno))", plugin: plugin))
        }
        var outFds: [Int32] = [-1, -1]
        var errFds: [Int32] = [-1, -1]
        guard pipe2(&outFds, O_CLOEXEC) == 0 else {
            close(sv[0]); close(sv[1])
            return .failure(NetworkError(.io, "CNI plugin \(plugin): pipe: \(errnoText(errno))", plugin: plugin))
        }
        guard pipe2(&errFds, O_CLOEXEC) == 0 else {
            for fd in sv + outFds { close(fd) }
            return .failure(NetworkError(.io, "CNI plugin \(plugin): pipe: \(errnoText(errno))", plugin: plugin))
        }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, sv[1], 0)
        posix_spawn_file_actions_adddup2(&actions, outFds[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errFds[1], 2)
        // Nothing but 0-2 (SwiftNIO's sockets are not close-on-exec); called directly, as a dlsym lookup finds
        // nothing in the static binaries.
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
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let names = Set(environment.map(\.0))
        var envStrings: [String] = []
        var e = environ
        while let p = e.pointee {
            let s = String(cString: p)
            let key = String(s.prefix { $0 != "=" })
            if !names.contains(key) { envStrings.append(s) }
            e += 1
        }
        envStrings += environment.map { "\($0.0)=\($0.1)" }
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup(path), nil]
        let envp: [UnsafeMutablePointer<CChar>?] = envStrings.map { strdup($0) } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attr, argv, envp)
        close(sv[1])
        close(outFds[1])
        close(errFds[1])
        guard rc == 0 else {
            close(sv[0]); close(outFds[0]); close(errFds[0])
            return .failure(NetworkError(.io, "CNI plugin \(plugin): cannot run \(path): \(errnoText(rc))", plugin: plugin))
        }

        let deadline = monotonicMillis() + timeoutMillis
        var stdinFd: Int32 = sv[0]
        var written = 0
        var out: [UInt8] = []
        var err: [UInt8] = []
        var open: [Int32] = [outFds[0], errFds[0]]
        var buf = [UInt8](repeating: 0, count: 65536)
        _ = fcntl(stdinFd, F_SETFL, fcntl(stdinFd, F_GETFL) | O_NONBLOCK)
        if input.isEmpty {
            shutdown(stdinFd, Int32(SHUT_WR))
            close(stdinFd)
            stdinFd = -1
        }
        var timedOut = false
        while !open.isEmpty || stdinFd >= 0 {
            let left = deadline - monotonicMillis()
            if left <= 0 {
                timedOut = true
                break
            }
            var fds = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            if stdinFd >= 0 { fds.append(pollfd(fd: stdinFd, events: Int16(POLLOUT), revents: 0)) }
            let n = poll(&fds, nfds_t(fds.count), Int32(min(left, 1000)))
            if n < 0 && errno != EINTR { break }
            if n <= 0 { continue }
            for p in fds where p.revents != 0 {
                if p.fd == stdinFd {
                    let sent = input.withUnsafeBytes { raw in
                        send(stdinFd, raw.baseAddress! + written, raw.count - written, Int32(MSG_NOSIGNAL))
                    }
                    if sent > 0 { written += sent }
                    if written >= input.count || (sent < 0 && errno != EAGAIN && errno != EINTR) {
                        shutdown(stdinFd, Int32(SHUT_WR))
                        close(stdinFd)
                        stdinFd = -1
                    }
                    continue
                }
                let r = read(p.fd, &buf, buf.count)
                if r > 0 {
                    if p.fd == outFds[0] {
                        if out.count < 4 << 20 { out.append(contentsOf: buf[0..<r]) }
                    } else if err.count < 64 << 10 {
                        err.append(contentsOf: buf[0..<r])
                    }
                } else if r == 0 || (errno != EINTR && errno != EAGAIN) {
                    open.removeAll { $0 == p.fd }
                }
            }
        }
        if stdinFd >= 0 { close(stdinFd) }
        close(outFds[0])
        close(errFds[0])

        var status: Int32 = 0
        while !timedOut {
            let w = waitpid(pid, &status, WNOHANG)
            if w == pid { break }
            if w < 0 && errno != EINTR { break }
            if monotonicMillis() >= deadline {
                timedOut = true
                break
            }
            usleep(2000)
        }
        if timedOut {
            Glibc.kill(pid, SIGKILL)
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            let secs = timeoutMillis / 1000
            return .failure(NetworkError(.timeout, "CNI plugin \(plugin) did not finish within \(secs)s and was killed: check the plugin (\(path)) and its logs", plugin: plugin))
        }
        let sig = status & 0x7f
        let code = sig == 0 ? (status >> 8) & 0xff : 128 + sig
        return .success(PluginExecutor.Output(status: code, stdout: out, stderr: err))
    }
}

/// Runs blocking work on a new detached thread.
enum Blocking {
    private final class Body {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }

    static func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { (cont: CheckedContinuation<T, Never>) in
            let box = Unmanaged.passRetained(Body { cont.resume(returning: body()) }).toOpaque()
            var attr = pthread_attr_t()
            pthread_attr_init(&attr)
            pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
            pthread_attr_setstacksize(&attr, 256 * 1024)
            var tid = pthread_t()
            let rc = pthread_create(&tid, &attr, { raw in
                Unmanaged<Body>.fromOpaque(raw!).takeRetainedValue().run()
                return nil
            }, box)
            pthread_attr_destroy(&attr)
            if rc != 0 { Unmanaged<Body>.fromOpaque(box).takeRetainedValue().run() }
        }
    }
}
