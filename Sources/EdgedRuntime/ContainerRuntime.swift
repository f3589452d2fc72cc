// The container executor: pod sandboxes and containers run through edged-monitor, watched via pidfds,
// re-adopted from the state directory after an edged restart.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import EdgedCore
import Logging

/// Runs containers without containerd or runc. Each container has one `edged-monitor` process (its parent,
/// log pump and reaper) that outlives edged; everything the actor knows is also in `<stateDir>/<id>/`, so a
/// new instance on the same directories picks up running and exited containers alike.
public actor ContainerRuntime {
    private struct Record {
        var spec: ContainerSpec
        var status: ContainerStatus
        var monitorPid: Int32
        var monitorStartTicks: UInt64?
        var containerPid: Int32
        var containerStartTicks: UInt64?
        var waiters: [CheckedContinuation<ContainerInfo, Never>] = []

        var info: ContainerInfo { ContainerInfo(spec: spec, status: status, monitorPid: monitorPid) }
    }

    let config: RuntimeConfig
    private let logger: Logger
    private let cgroups: any CgroupManager
    var cgroupManager: any CgroupManager { cgroups }
    let monitorPath: String
    private var records: [String: Record] = [:]
    private var starting: Set<String> = []

    /// Opens the state directory and re-adopts every container found there (running or exited).
    /// Throws `.io` when the state or run directory cannot be created.
    public init(config: RuntimeConfig, logger: Logger) throws {
        self.config = config
        self.logger = logger
        try FileIO.mkdirP(config.stateDir, mode: 0o700)
        try FileIO.mkdirP(config.runDir, mode: 0o700)
        cgroups = try makeHostCgroupManager(root: config.cgroupFSRoot)
        monitorPath = config.monitorPath ?? ContainerRuntime.defaultMonitorPath()
        var found: [String: Record] = [:]
        for id in FileIO.listDir(config.stateDir).sorted() {
            let store = ContainerStore(dir: "\(config.stateDir)/\(id)")
            guard let spec = store.readSpec() else { continue }
            found[id] = ContainerRuntime.adopt(spec: spec, store: store, cgroups: cgroups,
                                               cgroupPath: ContainerRuntime.cgroupPath(config, spec), logger: logger)
        }
        records = found
        let running = found.values.filter { $0.status.isRunning }.map(\.spec.id)
        if !found.isEmpty {
            logger.info("re-adopted containers", metadata: ["total": "\(found.count)", "running": "\(running.count)"])
        }
        for id in running {
            Task { await self.watch(id) }
        }
    }

    /// edged-monitor next to the running executable.
    static func defaultMonitorPath() -> String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        guard n > 0 else { return "edged-monitor" }
        let exe = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return FileIO.dirname(exe) + "/edged-monitor"
    }

    static func cgroupPath(_ config: RuntimeConfig, _ spec: ContainerSpec) -> String {
        "\(podCgroupPath(config, podUID: spec.podUID))/\(spec.id)"
    }

    func store(_ id: String) -> ContainerStore { ContainerStore(dir: "\(config.stateDir)/\(id)") }

    /// Rebuilds a record from disk: exit file → exited; live monitor (same start time) → running; else the
    /// monitor died without recording an exit: kill any leftover container process and report Unknown (255).
    private static func adopt(spec: ContainerSpec, store: ContainerStore, cgroups: any CgroupManager,
                              cgroupPath: String, logger: Logger) -> Record {
        let state = store.readState()
        if let state, state.monitorStartTicks != nil,
           FileIO.startTicks(pid: state.monitorPid) == state.monitorStartTicks {
            return Record(spec: spec, status: .running(pid: state.containerPid, startedAt: state.startedAt),
                          monitorPid: state.monitorPid, monitorStartTicks: state.monitorStartTicks,
                          containerPid: state.containerPid, containerStartTicks: state.containerStartTicks)
        }
        let status = finalStatus(spec: spec, store: store, state: state, cgroups: cgroups, cgroupPath: cgroupPath,
                                 logger: logger)
        return Record(spec: spec, status: status, monitorPid: state?.monitorPid ?? 0,
                      monitorStartTicks: state?.monitorStartTicks, containerPid: state?.containerPid ?? 0,
                      containerStartTicks: state?.containerStartTicks)
    }

    /// The exited status once the monitor is gone, from its exit file or, without one, Unknown.
    private static func finalStatus(spec: ContainerSpec, store: ContainerStore, state: MonitorState?,
                                    cgroups: any CgroupManager, cgroupPath: String, logger: Logger) -> ContainerStatus {
        var exit = store.readExit()
        if exit == nil {
            if let state, state.containerStartTicks != nil,
               FileIO.startTicks(pid: state.containerPid) == state.containerStartTicks {
                Glibc.kill(state.containerPid, SIGKILL)
            }
            let record = ExitRecord(exitCode: ContainerStatus.unknownExitCode, signal: nil,
                                    finishedAt: Timestamp.now(),
                                    message: "the monitor of \(spec.displayName) exited without recording the container's exit status")
            do { try store.writeExit(record) } catch {
                logger.warning("cannot record exit", metadata: ["container": "\(spec.displayName)", "error": "\(error)"])
            }
            logger.warning("container monitor vanished", metadata: ["container": "\(spec.displayName)"])
            exit = record
        }
        let e = exit!
        // The monitor's verdict at reap time; the cgroup itself may be gone since (an older monitor wrote none).
        let oom = e.oomKilled || (e.signal == SIGKILL && cgroups.oomKilled(path: cgroupPath))
        return .exited(exitCode: e.exitCode, signal: e.signal, oomKilled: oom,
                       startedAt: state?.startedAt ?? e.finishedAt, finishedAt: e.finishedAt, message: e.message)
    }

    /// Waits for the monitor of `id` to exit, then records the final status and wakes waiters.
    private func watch(_ id: String) async {
        guard let r = records[id], r.status.isRunning else { return }
        await ProcessWatcher.shared.waitForExit(pid: r.monitorPid, startTicks: r.monitorStartTicks)
        guard var rec = records[id], rec.status.isRunning else { return }
        let st = store(id)
        rec.status = ContainerRuntime.finalStatus(
            spec: rec.spec, store: st, state: st.readState(), cgroups: cgroups,
            cgroupPath: ContainerRuntime.cgroupPath(config, rec.spec), logger: logger)
        let waiters = rec.waiters
        rec.waiters = []
        records[id] = rec
        logger.debug("container exited", metadata: ["container": "\(rec.spec.displayName)", "status": "\(rec.status)"])
        for w in waiters { w.resume(returning: rec.info) }
    }

    // MARK: Sandboxes

    private func sandboxDir(_ podUID: String) -> String { "\(config.runDir)/sandboxes/\(podUID)" }

    /// The pod's cgroup: its containers' cgroups are below it.
    static func podCgroupPath(_ config: RuntimeConfig, podUID: String) -> String {
        "\(config.cgroupPrefix)/pod\(podUID)"
    }

    /// Creates (or returns the existing) pinned net+ipc+uts namespaces of a pod; net is the host's with
    /// `hostNetwork`. Throws `.sandbox` with the monitor's message when the namespaces cannot be made.
    ///
    /// The monitor makes them from inside a transient `sandbox` cgroup below the pod's, removed once it exits: the
    /// kernel charges a namespace's memory (~250 KB for a network namespace) to the creator's cgroup, and a removed
    /// cgroup's charges pass to its parent, so they land in the pod's cgroup, as Kubernetes' pod overhead would,
    /// instead of in edged's own (20 pods: ~5 MB of edged's share on a gateway).
    public func createSandbox(podUID: String, hostname: String, hostNetwork: Bool) async throws -> Sandbox {
        let dir = sandboxDir(podUID)
        if let existing = existingSandbox(podUID) { return existing }
        let podCgroup = ContainerRuntime.podCgroupPath(config, podUID: podUID)
        let sandboxCgroup = "\(podCgroup)/sandbox"
        var cgroupDirs: [String] = []
        do {
            cgroupDirs = try cgroups.create(path: sandboxCgroup, limits: CgroupLimits())
        } catch {
            // The namespaces then stay charged to edged's cgroup; nothing else depends on it.
            logger.warning("pod \(podUID): no sandbox cgroup, its namespaces are charged to edged's: \(error)")
        }
        let keep = podCgroup.split(separator: "/").count
        let (r, w) = try Sys.pipe()
        let pid: pid_t
        do {
            pid = try Sys.spawn(monitorPath, ["sandbox", dir, hostname, hostNetwork ? "1" : "0"] + cgroupDirs, output: w)
        } catch {
            close(r)
            close(w)
            if !cgroupDirs.isEmpty { try? cgroups.remove(path: sandboxCgroup, keepingAncestors: keep) }
            throw RuntimeError(.sandbox, "create sandbox of pod \(podUID): \(error)")
        }
        close(w)
        let (code, output) = await onThread { () -> (Int32, String) in
            let out = readAll(r, limit: 65536)
            close(r)
            return (Sys.reap(pid), out)
        }
        if !cgroupDirs.isEmpty {
            do { try cgroups.remove(path: sandboxCgroup, keepingAncestors: keep) } catch {
                logger.warning("pod \(podUID): \(error)")
            }
        }
        guard code == 0, let sandbox = existingSandbox(podUID) else {
            try? await removeSandbox(podUID: podUID)
            throw RuntimeError(.sandbox, "create sandbox of pod \(podUID): \(output.trimmingSpaces)")
        }
        logger.debug("sandbox created", metadata: ["pod": "\(podUID)", "hostNetwork": "\(hostNetwork)"])
        return sandbox
    }

    private func existingSandbox(_ podUID: String) -> Sandbox? {
        let dir = sandboxDir(podUID)
        guard isMountPoint("\(dir)/ipc"), isMountPoint("\(dir)/uts") else { return nil }
        let net = isMountPoint("\(dir)/net") ? "\(dir)/net" : nil
        return Sandbox(podUID: podUID, hostNetwork: net == nil, netns: net, ipcns: "\(dir)/ipc", utsns: "\(dir)/uts")
    }

    /// Unpins and deletes a pod's namespaces (no-op when there are none). Throws `.sandbox` when a pin stays.
    public func removeSandbox(podUID: String) async throws {
        let dir = sandboxDir(podUID)
        for ns in ["net", "ipc", "uts"] {
            let path = "\(dir)/\(ns)"
            if isMountPoint(path), umount2(path, Int32(MNT_DETACH)) != 0 {
                throw RuntimeError(.sandbox, "unmount \(path): \(errnoString(errno))")
            }
            unlink(path)
        }
        rmdir(dir)
        // The sandbox cgroup (left only by a crash while the monitor ran), then the pod's cgroup once its
        // containers' are gone (a pod that never got a container has nothing else to remove it).
        let podCgroup = ContainerRuntime.podCgroupPath(config, podUID: podUID)
        for d in cgroups.directories(path: "\(podCgroup)/sandbox") + cgroups.directories(path: podCgroup) { rmdir(d) }
    }

    // MARK: Containers

    /// Starts a container in `sandbox` and returns once its process runs. Throws `.startFailed` with the
    /// child's message ("exec /bin/x: No such file or directory"); the container then stays listed as exited
    /// (reason StartError) until `remove`. Throws `.invalidSpec` for a bad spec (missing layer dir, unknown
    /// user or capability), `.cgroup` when limits cannot be applied, `.alreadyExists` for a known id.
    public func start(_ spec: ContainerSpec, sandbox: Sandbox) async throws -> ContainerInfo {
        let name = spec.displayName
        guard records[spec.id] == nil, !starting.contains(spec.id) else {
            throw RuntimeError(.alreadyExists, "container \(name) (\(spec.id)) already exists")
        }
        guard !spec.id.isEmpty, !spec.id.contains("/"), spec.id != ".", spec.id != ".." else {
            throw RuntimeError(.invalidSpec, "\(name): invalid container id \"\(spec.id)\"")
        }
        guard !spec.argv.isEmpty else { throw RuntimeError(.invalidSpec, "\(name): no command given") }
        guard !spec.layers.isEmpty else { throw RuntimeError(.invalidSpec, "\(name): no image layers") }
        for layer in spec.layers where !FileIO.isDirectory(layer) {
            throw RuntimeError(.invalidSpec, "\(name): image layer \(layer) is not a directory")
        }
        guard access(monitorPath, X_OK) == 0 else {
            throw RuntimeError(.io, "\(name): edged-monitor not found at \(monitorPath)")
        }
        let user = try UserResolver.resolve(spec: spec)
        let caps = try Capabilities.resolve(add: spec.capAdd, drop: spec.capDrop, privileged: spec.privileged)

        starting.insert(spec.id)
        defer { starting.remove(spec.id) }
        let st = store(spec.id)
        let cgPath = ContainerRuntime.cgroupPath(config, spec)
        do {
            try FileIO.mkdirP(st.dir, mode: 0o700)
            for sub in ["rootfs", "upper", "work"] { try FileIO.mkdirP("\(st.dir)/\(sub)") }
            let limits = CgroupLimits(memoryBytes: spec.memoryLimitBytes, cpuLimitMillis: spec.cpuLimitMillis,
                                      cpuRequestMillis: spec.cpuRequestMillis, pids: spec.pidsLimit)
            let dirs: [String]
            do { dirs = try cgroups.create(path: cgPath, limits: limits) } catch let e as RuntimeError {
                throw RuntimeError(e.code, "\(name): \(e.message)")
            }
            let cfg = MonitorConfig.make(spec: spec, user: user, caps: caps, dir: st.dir, sandbox: sandbox,
                                         cgroupDirs: dirs)
            try FileIO.writeAtomic(st.configPath, cfg.bytes)
            // spec.json last: a directory with it is a container to re-adopt.
            try st.writeSpec(spec)
        } catch {
            try? cgroups.remove(path: cgPath, keepingAncestors: 1)
            FileIO.removeTree(st.dir)
            throw error
        }

        let pid = try Sys.spawn(monitorPath, ["run", st.dir])
        await ProcessWatcher.shared.waitForExit(pid: pid)
        let verdict = Sys.reap(pid)
        if verdict == 0, let state = st.readState() {
            records[spec.id] = Record(spec: spec, status: .running(pid: state.containerPid, startedAt: state.startedAt),
                                      monitorPid: state.monitorPid, monitorStartTicks: state.monitorStartTicks,
                                      containerPid: state.containerPid, containerStartTicks: state.containerStartTicks)
            Task { await self.watch(spec.id) }
            logger.debug("container started", metadata: ["container": "\(name)", "pid": "\(state.containerPid)"])
            return records[spec.id]!.info
        }
        let exit = st.readExit()
        let message = exit?.message ?? "edged-monitor exited with \(verdict) without recording why"
        if exit == nil {
            try? st.writeExit(ExitRecord(exitCode: ContainerStatus.startErrorExitCode, signal: nil,
                                         finishedAt: .now(), message: message))
        }
        let now = Timestamp.now()
        records[spec.id] = Record(spec: spec, status: .exited(exitCode: exit?.exitCode ?? ContainerStatus.startErrorExitCode,
                                                             signal: nil, oomKilled: false, startedAt: now,
                                                             finishedAt: exit?.finishedAt ?? now, message: message),
                                  monitorPid: 0, containerPid: 0)
        throw RuntimeError(.startFailed, "start container \(name): \(message)")
    }

    public func inspect(id: String) -> ContainerInfo? { records[id]?.info }

    public func list() -> [ContainerInfo] { records.values.map(\.info).sorted { $0.spec.id < $1.spec.id } }

    /// Sends `signal` to the container's PID 1. Throws `.notFound` or `.invalidState` (not running).
    public func kill(id: String, signal: Int32) throws {
        let r = try running(id)
        guard FileIO.startTicks(pid: r.containerPid) == r.containerStartTicks else {
            throw RuntimeError(.invalidState, "container \(r.spec.displayName) is not running")
        }
        if Glibc.kill(r.containerPid, signal) != 0 && errno != ESRCH {
            throw RuntimeError(.io, "signal \(signal) to \(r.spec.displayName): \(errnoString(errno))")
        }
    }

    /// The record of a running container; throws `.notFound` or `.invalidState`.
    private func running(_ id: String) throws -> Record {
        guard let r = records[id] else { throw RuntimeError(.notFound, "no container \(id)") }
        guard r.status.isRunning else {
            throw RuntimeError(.invalidState, "container \(r.spec.displayName) is not running")
        }
        return r
    }

    /// PID (host view) and display name of a running container, for exec; throws `.notFound` or
    /// `.invalidState` ("container ns/pod/name is not running").
    func runningProcess(_ id: String) throws -> (pid: Int32, name: String) {
        let r = try running(id)
        guard FileIO.startTicks(pid: r.containerPid) == r.containerStartTicks else {
            throw RuntimeError(.invalidState, "container \(r.spec.displayName) is not running")
        }
        return (r.containerPid, r.spec.displayName)
    }

    /// The pinned namespaces of a pod, when its sandbox exists.
    public func sandbox(podUID: String) -> Sandbox? { existingSandbox(podUID) }

    /// SIGTERM, then SIGKILL after `grace`; returns the exited info. Throws `.notFound` for an unknown id.
    public func stop(id: String, grace: Duration) async throws -> ContainerInfo {
        guard let r = records[id] else { throw RuntimeError(.notFound, "no container \(id)") }
        guard r.status.isRunning else { return r.info }
        try? kill(id: id, signal: SIGTERM)
        let info = await withTaskGroup(of: ContainerInfo?.self) { group -> ContainerInfo? in
            group.addTask { await self.waitForExit(id: id) }
            group.addTask {
                try? await Task.sleep(for: grace)
                return nil
            }
            for await result in group {
                if let result {
                    group.cancelAll()
                    return result
                }
                try? await self.kill(id: id, signal: SIGKILL)
            }
            return nil
        }
        guard let info else { throw RuntimeError(.notFound, "container \(id) vanished while stopping") }
        return info
    }

    /// Returns once the container has exited (at once if it has); nil for an unknown id.
    public func waitForExit(id: String) async -> ContainerInfo? {
        guard let r = records[id] else { return nil }
        guard r.status.isRunning else { return r.info }
        return await withCheckedContinuation { cont in
            records[id]?.waiters.append(cont)
        }
    }

    /// Deletes an exited container: cgroups, state dir, upper/work dirs. Throws `.invalidState` while it runs,
    /// `.cgroup` when its cgroup stays busy.
    public func remove(id: String) async throws {
        guard let r = records[id] else { throw RuntimeError(.notFound, "no container \(id)") }
        guard !r.status.isRunning else {
            throw RuntimeError(.invalidState, "cannot remove running container \(r.spec.displayName)")
        }
        let path = ContainerRuntime.cgroupPath(config, r.spec)
        do { try cgroups.remove(path: path, keepingAncestors: 1) } catch let e as RuntimeError {
            throw RuntimeError(e.code, "remove \(r.spec.displayName): \(e.message)")
        }
        FileIO.removeTree(store(id).dir)
        records[id] = nil
    }

    /// Runs `argv` inside the running container (its namespaces, cgroup, user, capabilities, seccomp) and
    /// returns the exit code and combined output (first 64 KiB). Throws `.timeout` after `timeout` (the
    /// command is killed), `.invalidState` when not running, `.io` when the command cannot be set up.
    public func exec(id: String, argv: [String], timeout: Duration) async throws -> (exitCode: Int32, output: String) {
        let r = try running(id)
        guard !argv.isEmpty else { throw RuntimeError(.invalidSpec, "exec in \(r.spec.displayName): no command") }
        let (rd, wr) = try Sys.pipe()
        let pid: pid_t
        do {
            pid = try Sys.spawn(monitorPath, ["exec", store(id).dir, String(r.containerPid), "--"] + argv, output: wr)
        } catch {
            close(rd)
            close(wr)
            throw error
        }
        close(wr)
        let deadline = ContinuousClock.now.advanced(by: timeout)
        let (code, output, timedOut) = await onThread { () -> (Int32, String, Bool) in
            collect(pid: pid, fd: rd, deadline: deadline)
        }
        if timedOut {
            throw RuntimeError(.timeout, "exec \(argv[0]) in \(r.spec.displayName) timed out after \(timeout)")
        }
        if code == 125 {
            throw RuntimeError(.io, "exec \(argv[0]) in \(r.spec.displayName): \(output.trimmingSpaces)")
        }
        return (code, output)
    }

    /// The sum of VmRSS of the live monitors (what edged leaves per container).
    public func monitorsRSSBytes() -> Int64 {
        records.values.filter { $0.status.isRunning }.reduce(0) { $0 + Files.rssBytes(pid: $1.monitorPid) }
    }
}

/// Reads `fd` until EOF, keeping the first `limit` bytes.
private func readAll(_ fd: Int32, limit: Int) -> String {
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fd, &buf, buf.count)
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        if out.count < limit { out += buf[0..<min(n, limit - out.count)] }
    }
    return String(decoding: out, as: UTF8.self)
}

/// Collects the exec output until the process exits (then drains what is buffered; background processes
/// holding the pipe do not keep us waiting) or the deadline passes (then kills it).
private func collect(pid: pid_t, fd: Int32, deadline: ContinuousClock.Instant) -> (Int32, String, Bool) {
    var out: [UInt8] = []
    let limit = 65536
    var buf = [UInt8](repeating: 0, count: 4096)
    var timedOut = false
    var code: Int32 = -1
    var open = true
    _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    func drain() {
        while open {
            let n = read(fd, &buf, buf.count)
            if n < 0 && errno == EINTR { continue }
            if n == 0 { open = false }
            if n <= 0 { return }
            if out.count < limit { out += buf[0..<min(n, limit - out.count)] }
        }
    }
    while true {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        if open { _ = poll(&p, 1, 50) } else { usleep(20_000) }
        drain()
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid {
            drain()
            let sig = status & 0x7f
            code = sig == 0 ? (status >> 8) & 0xff : 128 + sig
            break
        }
        if ContinuousClock.now >= deadline {
            timedOut = true
            Glibc.kill(pid, SIGKILL)  // the command dies with it (PDEATHSIG)
            code = Sys.reap(pid)
            break
        }
    }
    close(fd)
    return (code, String(decoding: out, as: UTF8.self), timedOut)
}

private func isMountPoint(_ path: String) -> Bool {
    var a = stat()
    var b = stat()
    guard stat(path, &a) == 0, stat(FileIO.dirname(path), &b) == 0 else { return false }
    return a.st_dev != b.st_dev
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return String(s)
    }
}
