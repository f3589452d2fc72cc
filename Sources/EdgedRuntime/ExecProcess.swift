// Interactive exec (kubectl exec): a command in a running container with its standard streams handed to the
// caller as descriptors — three pipes, or a pseudo-terminal opened from the container's own devpts.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization

/// A command started in a container by `ContainerRuntime.startExec`.
///
/// The caller owns `stdin`, `stdout` and `stderr` (it closes them). The process is reaped by the runtime as soon
/// as it exits (on the process watcher's thread, never blocking a task); `wait()` returns its exit code.
public final class ExecProcess: Sendable {
    /// The edged-monitor process (host PID) that runs the command and exits with its status.
    public let pid: Int32
    /// Write end of the command's stdin; nil when not asked for (it reads /dev/null) or with a TTY.
    public let stdin: Int32?
    /// Read end of its stdout, or the pty master (both directions) with a TTY.
    public let stdout: Int32
    /// Read end of its stderr; nil with a TTY.
    public let stderr: Int32?
    public let tty: Bool

    private struct State {
        var exitCode: Int32?
        var waiters: [CheckedContinuation<Int32, Never>] = []
        /// A duplicate of the pty master kept for `resize` (the caller may close its own at any time).
        var control: Int32?
    }

    private let state: Mutex<State>

    init(pid: Int32, stdin: Int32?, stdout: Int32, stderr: Int32?, tty: Bool, control: Int32?) {
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.tty = tty
        state = Mutex(State(control: control))
        Task { [self] in
            await ProcessWatcher.shared.waitForExit(pid: pid)
            reaped()
        }
    }

    /// Reaps the (exited) monitor under the lock, so `terminate` never signals a recycled pid.
    private func reaped() {
        let (code, waiters) = state.withLock { s -> (Int32, [CheckedContinuation<Int32, Never>]) in
            let code = Sys.reap(pid)
            s.exitCode = code
            if let c = s.control { close(c) }
            s.control = nil
            defer { s.waiters = [] }
            return (code, s.waiters)
        }
        for w in waiters { w.resume(returning: code) }
    }

    /// Waits for the command to end: its exit code, 128 + signal when killed, 125 when the exec could not be set
    /// up (the reason went to its stderr), 126/127 when the command could not be run or found.
    public func wait() async -> Int32 {
        await withCheckedContinuation { (cont: CheckedContinuation<Int32, Never>) in
            let code = state.withLock { s -> Int32? in
                if let code = s.exitCode { return code }
                s.waiters.append(cont)
                return nil
            }
            if let code { cont.resume(returning: code) }
        }
    }

    /// The exit code once the command has ended, else nil.
    public var exitCode: Int32? { state.withLock { $0.exitCode } }

    /// Sets the terminal size (TIOCSWINSZ on the master; the command gets SIGWINCH). No-op without a TTY or
    /// after the command ended.
    public func resize(width: UInt16, height: UInt16) {
        state.withLock { s in
            guard let fd = s.control else { return }
            var ws = winsize(ws_row: height, ws_col: width, ws_xpixel: 0, ws_ypixel: 0)
            _ = ioctl(fd, UInt(TIOCSWINSZ), &ws)
        }
    }

    /// Kills the command: SIGKILL to the monitor's process group (the command and what it started without a
    /// TTY) and to the monitor (whose death kills the command through PDEATHSIG; with a TTY its session then
    /// gets SIGHUP). Does nothing once it has been reaped.
    public func terminate() {
        state.withLock { s in
            guard s.exitCode == nil else { return }
            Glibc.kill(-pid, SIGKILL)
            Glibc.kill(pid, SIGKILL)
        }
    }
}

extension ContainerRuntime {
    /// Starts `argv` in the running container `id` (its namespaces, cgroups, user, capabilities, seccomp) with
    /// separate stdin (when `stdin`), stdout and stderr pipes, or with a TTY: a pty from the container's devpts
    /// (so `tty` inside names /dev/pts/N) as the command's controlling terminal and all three streams.
    ///
    /// Throws `.notFound` for an unknown id, `.invalidState` when the container is not running ("container
    /// ns/pod/name is not running"), `.invalidSpec` for an empty command, `.io` when pipes, the pty or the monitor
    /// cannot be set up. A command that does not exist is not an error here: it exits 127 with the reason on stderr.
    public func startExec(id: String, argv: [String], stdin wantStdin: Bool, tty: Bool) throws -> ExecProcess {
        let (containerPid, name) = try runningProcess(id)
        guard !argv.isEmpty else { throw RuntimeError(.invalidSpec, "exec in \(name): no command") }
        let args = ["exec"] + (tty ? ["--tty"] : []) + [store(id).dir, String(containerPid), "--"] + argv
        var parentEnds: [Int32] = []
        var childEnds: [Int32] = []
        func closeAll() {
            for fd in parentEnds + childEnds { close(fd) }
        }
        do {
            if tty {
                let (master, slave) = try PTY.open(containerPid: containerPid, name: name)
                parentEnds = [master]
                childEnds = [slave]
                guard let control = Optional(fcntl(master, F_DUPFD_CLOEXEC, 3)), control >= 0 else {
                    throw RuntimeError(.io, "exec in \(name): dup pty master: \(errnoString(errno))")
                }
                parentEnds.append(control)
                let pid = try Sys.spawn(monitorPath, args, stdin: slave, stdout: slave, stderr: slave, newProcessGroup: true)
                close(slave)
                return ExecProcess(pid: pid, stdin: nil, stdout: master, stderr: nil, tty: true, control: control)
            }
            var input: (read: Int32, write: Int32)?
            if wantStdin {
                let p = try Sys.pipe()
                input = p
                childEnds.append(p.0)
                parentEnds.append(p.1)
            }
            let out = try Sys.pipe()
            childEnds.append(out.1)
            parentEnds.append(out.0)
            let err = try Sys.pipe()
            childEnds.append(err.1)
            parentEnds.append(err.0)
            let pid = try Sys.spawn(monitorPath, args, stdin: input?.read, stdout: out.1, stderr: err.1,
                                    newProcessGroup: true)
            for fd in childEnds { close(fd) }
            return ExecProcess(pid: pid, stdin: input?.write, stdout: out.0, stderr: err.0, tty: false, control: nil)
        } catch {
            closeAll()
            guard let e = error as? RuntimeError else { throw error }
            throw RuntimeError(e.code, e.message.hasPrefix("exec in") ? e.message : "exec in \(name): \(e.message)")
        }
    }
}

/// Pseudo-terminals for exec, through devpts ioctls (posix_openpt and friends are not imported into Swift here;
/// grantpt has nothing to do on devpts).
enum PTY {
    /// TIOCGPTPEER (Linux ≥ 4.13): opens the slave of a master in the master's own devpts instance.
    private static let tiocgptpeer: UInt = 0x5441
    /// TIOCSPTLCK (unlockpt) and TIOCGPTN (ptsname's number).
    private static let tiocsptlck: UInt = 0x4004_5431
    private static let tiocgptn: UInt = 0x8004_5430

    /// A (master, slave) pair, both close-on-exec. The master comes from the container's devpts
    /// (/proc/PID/root/dev/pts/ptmx: edged containers mount a new devpts instance), so the slave is a
    /// /dev/pts/N the container can see; the host's /dev/ptmx is the fallback for a container without one.
    static func open(containerPid: Int32, name: String) throws -> (Int32, Int32) {
        var root = "/proc/\(containerPid)/root"
        var master = Glibc.open("\(root)/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
        if master < 0 {
            root = ""
            master = Glibc.open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
            guard master >= 0 else { throw RuntimeError(.io, "exec in \(name): open a pty: \(errnoString(errno))") }
        }
        var unlock: Int32 = 0
        guard ioctl(master, tiocsptlck, &unlock) == 0 else {
            let e = errno
            close(master)
            throw RuntimeError(.io, "exec in \(name): unlock pty: \(errnoString(e))")
        }
        var slave = ioctl(master, tiocgptpeer, O_RDWR | O_NOCTTY | O_CLOEXEC)
        if slave < 0 {
            // Older kernels: by number, through the same root.
            var n: Int32 = 0
            if ioctl(master, tiocgptn, &n) == 0 {
                slave = Glibc.open("\(root)/dev/pts/\(n)", O_RDWR | O_NOCTTY | O_CLOEXEC)
            }
        }
        guard slave >= 0 else {
            let e = errno
            close(master)
            throw RuntimeError(.io, "exec in \(name): open the pty slave: \(errnoString(e))")
        }
        return (master, slave)
    }
}
