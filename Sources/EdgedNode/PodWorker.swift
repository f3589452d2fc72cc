// One worker per pod: it takes the pod from syncing to terminated, one step at a time.
//
//   created ──► syncing: pull images → sandbox → volumes → init containers (in order, each to success)
//                        → containers (start; restart per restartPolicy with CrashLoopBackOff; probes)
//           ──► terminating (pod removed or edited): SIGTERM, grace, SIGKILL → remove containers, sandbox, volumes
//           ──► terminated
//
// Every step is re-entrant: `sync()` looks at what the runtime reports and does the next thing, so a worker
// that adopts containers after an edged restart simply carries on where the previous edged stopped.

import EdgedCore
import EdgedImages
import EdgedNetwork
import EdgedRuntime
import Glibc
import Logging

actor PodWorker {
    private(set) var pod: Pod
    let source: String
    private let runtime: ContainerRuntime
    private let images: ImageStore
    private let config: NodeConfig
    private let errors: ErrorLog
    private var logger: Logger

    private var records: [String: ContainerRecord] = [:]
    private var sandbox: Sandbox?
    private var volumePaths: [String: String] = [:]
    private var volumesReady = false
    private var apiVolumesRefreshAt: ContinuousClock.Instant?
    /// The pod's IPs from CNI (set by the network step; empty for hostNetwork pods and without CNI).
    private var podIPs: [String] = []
    private var networkBackoff = Backoff()
    private var networkRetryAt: ContinuousClock.Instant?
    private var initDone = false
    private var podFailed = false
    private var podMessage: String?
    /// The pod's status.reason when it failed for a node-level cause (Evicted).
    private var podReason: String?
    private var terminationRequested = false
    private(set) var terminated = false
    private var startTime: Timestamp?
    private var wakeContinuation: AsyncStream<Void>.Continuation?
    private var probeTasks: [String: Task<Void, Never>] = [:]

    var uid: String { pod.metadata.uid ?? "" }
    var subject: String { "pod \(pod.fullName)" }

    init(pod: Pod, source: String, runtime: ContainerRuntime, images: ImageStore, config: NodeConfig, errors: ErrorLog, logger: Logger) {
        self.pod = pod
        self.source = source
        self.runtime = runtime
        self.images = images
        self.config = config
        self.errors = errors
        var l = logger
        l[metadataKey: "pod"] = "\(pod.fullName)"
        self.logger = l
        for (i, c) in (pod.spec.initContainers ?? []).enumerated() {
            records[c.name] = ContainerRecord(container: c, isInit: true, order: i)
        }
        for (i, c) in pod.spec.containers.enumerated() {
            records[c.name] = ContainerRecord(container: c, isInit: false, order: 1000 + i)
        }
    }

    // MARK: - Driving the worker

    /// Runs until the pod is terminated. Wakes on container exits, probe results, termination requests, and
    /// every resync interval.
    func run() async {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        wakeContinuation = continuation
        let ticker = Task { [interval = config.resyncInterval] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                continuation.yield()
            }
        }
        defer { ticker.cancel() }
        var deadlineWake: Task<Void, Never>?
        defer { deadlineWake?.cancel() }
        /// A wake-up when the earliest pending back-off or refresh falls due (before the next periodic sync).
        func wakeAtNextDeadline() {
            deadlineWake?.cancel()
            deadlineWake = nil
            let now = ContinuousClock.now
            guard let at = nextDeadline(after: now), at < now + config.resyncInterval else { return }
            deadlineWake = Task {
                try? await Task.sleep(until: at + .milliseconds(5), clock: .continuous)
                if !Task.isCancelled { continuation.yield() }
            }
        }
        if startTime == nil { startTime = .now() }
        logger.info("syncing pod from \(source)")
        await sync()
        reportIfChanged()
        wakeAtNextDeadline()
        for await _ in stream {
            if terminationRequested { break }
            await sync()
            reportIfChanged()
            wakeAtNextDeadline()
        }
        await terminate()
        config.podSynced?()
        continuation.finish()
    }

    func wake() { wakeContinuation?.yield() }

    /// The earliest time after `now` at which a sync has something to do that nothing else will wake it for: a
    /// container's restart back-off or image pull retry, the network set-up retry, the API volumes' refresh.
    private func nextDeadline(after now: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        var deadlines = [networkRetryAt, apiVolumesRefreshAt]
        for rec in records.values {
            deadlines.append(rec.imageRetryAt)
            deadlines.append(rec.crashBackoff.nextStartAt)
        }
        return deadlines.compactMap { $0 }.filter { $0 > now }.min()
    }

    /// What the pod's API status is made of, so that the status writer is woken when it changes, not after
    /// every periodic sync of every pod.
    private var reportedKey = ""

    private func reportIfChanged() {
        var key = "\(initDone)|\(podFailed)|\(sandbox != nil)|\(podIPs)|\(podMessage ?? "")"
        for (name, r) in records.sorted(by: { $0.key < $1.key }) {
            key += "|\(name):\(r.current?.spec.id ?? ""):\(r.current?.status.isRunning ?? false):\(r.restartCount)"
            key += ":\(r.waiting?.reason ?? ""):\(r.waiting?.message ?? ""):\(r.ready):\(r.started):\(r.lastStartFailure?.exitCode ?? -1)"
        }
        guard key != reportedKey else { return }
        reportedKey = key
        config.podSynced?()
    }

    func requestTermination() {
        terminationRequested = true
        wake()
    }

    /// A new version of the same pod (same UID) from the API server. Containers whose image changed are restarted
    /// with the new image, like kubelet's container-hash check (in-place upgrades); a deletionTimestamp starts a
    /// graceful termination with the pod's deletion grace period. Other spec fields are immutable in the API.
    func update(_ newPod: Pod) {
        let byName = Dictionary(((newPod.spec.initContainers ?? []) + newPod.spec.containers).map { ($0.name, $0) },
                                uniquingKeysWith: { a, _ in a })
        for (name, var rec) in records {
            guard let c = byName[name], c.image != rec.container.image else { continue }
            logger.info("container \(name): image changed from \(rec.container.image ?? "") to \(c.image ?? ""), restarting it")
            rec.container = c
            rec.image = nil
            rec.imagePulledOnce = false
            rec.imageBackoff = Backoff()
            rec.imageRetryAt = nil
            rec.specChanged = !rec.isInit
            records[name] = rec
        }
        pod = newPod
        if newPod.metadata.deletionTimestamp != nil { terminationRequested = true }
        wake()
    }

    /// Sends a kubelet-style Event when the node has joined a cluster.
    private func event(_ container: String?, _ kind: PodEvent.Kind, _ reason: String, _ message: String) {
        config.events?(PodEvent(pod: pod, container: container, kind: kind, reason: reason, message: message))
    }

    /// Takes over containers a previous edged started for this pod (found in the runtime's state dir).
    func adopt(_ infos: [ContainerInfo]) {
        for info in infos {
            guard var rec = records[info.spec.containerName] else { continue }
            let restart = Self.restartIndex(of: info.spec.id)
            if let current = rec.current, Self.restartIndex(of: current.spec.id) > restart {
                rec.previous = info
            } else {
                if let current = rec.current { rec.previous = current }
                rec.current = info
                rec.restartCount = restart
            }
            if case .exited = info.status { rec.exitHandled = rec.current?.spec.id == info.spec.id ? false : rec.exitHandled }
            records[info.spec.containerName] = rec
        }
        if startTime == nil, let first = infos.map(\.startedAtTimestamp).min() { startTime = first }
        for (name, rec) in records where rec.current != nil {
            if case .running = rec.current!.status { watchExit(name: name, id: rec.current!.spec.id) }
            if case .running = rec.current!.status, !rec.isInit { startProbes(name: name, id: rec.current!.spec.id) }
        }
        let initNames = (pod.spec.initContainers ?? []).map(\.name)
        initDone = initNames.allSatisfy { records[$0]?.succeeded == true }
            || pod.spec.containers.contains { records[$0.name]?.current != nil }
        logger.info("adopted \(infos.count) container(s) left by the previous edged")
    }

    // MARK: - Sync

    private func sync() async {
        await refreshFromRuntime()
        guard !podFailed else { return }
        guard await ensureImages() else { return }
        guard await ensureSandbox() else { return }
        guard await ensureVolumes() else { return }
        if !initDone {
            guard await syncInitContainers() else { return }
            initDone = true
        }
        for c in pod.spec.containers {
            await syncContainer(c.name)
        }
    }

    private func refreshFromRuntime() async {
        for (name, var rec) in records {
            guard let id = rec.current?.spec.id, let info = await runtime.inspect(id: id) else { continue }
            rec.current = info
            records[name] = rec
        }
    }

    private func ensureImages() async -> Bool {
        var ok = true
        for (name, var rec) in records.sorted(by: { $0.value.order < $1.value.order }) where rec.image == nil {
            let ref = rec.container.image ?? ""
            if let next = rec.imageRetryAt, ContinuousClock.now < next {
                ok = false
                continue
            }
            let policy = rec.container.imagePullPolicy ?? (ref.hasSuffix(":latest") || !ref.contains(":") ? .always : .ifNotPresent)
            var image = await images.resolve(ref)
            if image == nil || (policy == .always && rec.imagePulledOnce == false) {
                if policy == .never && image == nil {
                    rec.waiting = ("ErrImageNeverPull", "image \(ref) is not present and imagePullPolicy is Never: import it with `edgectl images import FILE`")
                    errors.record(subject, "container \(name): \(rec.waiting!.message)")
                    event(name, .warning, "ErrImageNeverPull", "Container image \"\(ref)\" is not present with pull policy of Never")
                    records[name] = rec
                    ok = false
                    continue
                }
                do {
                    logger.info("pulling image \(ref)")
                    event(name, .normal, "Pulling", "Pulling image \"\(ref)\"")
                    let began = ContinuousClock.now
                    var credentials: RegistryCredentials?
                    if let objects = config.apiObjects {
                        var problems: [String] = []
                        credentials = await PullSecrets.credentials(for: ref, pod: pod, objects: objects, problems: &problems)
                        for p in problems { event(name, .warning, "FailedToRetrieveImagePullSecret", "Unable to retrieve some image pull secrets (\(p)); attempting to pull the image may not succeed.") }
                    }
                    image = try await images.pull(ref, credentials: credentials)
                    rec.imagePulledOnce = true
                    event(name, .normal, "Pulled", "Successfully pulled image \"\(ref)\" in \(Self.seconds(ContinuousClock.now - began))")
                } catch {
                    if image == nil {
                        let delay = rec.imageBackoff.next()
                        rec.imageRetryAt = .now + delay
                        rec.waiting = (rec.imageBackoff.failures > 1 ? "ImagePullBackOff" : "ErrImagePull", "\(error)")
                        errors.record(subject, "container \(name): pulling image \(ref): \(error)")
                        event(name, .warning, "Failed", "Failed to pull image \"\(ref)\": \(error)")
                        if rec.imageBackoff.failures > 1 { event(name, .normal, "BackOff", "Back-off pulling image \"\(ref)\"") }
                        records[name] = rec
                        ok = false
                        continue
                    }
                    // A cached copy exists: use it, like kubelet does when the registry is away.
                    logger.warning("pull of \(ref) failed, using the cached image: \(error)")
                    rec.imagePulledOnce = true
                }
            } else {
                event(name, .normal, "Pulled", "Container image \"\(ref)\" already present on machine")
            }
            rec.image = image
            rec.imageBackoff = Backoff()
            if rec.waiting?.reason.contains("Image") == true { rec.waiting = nil }
            records[name] = rec
        }
        return ok
    }

    private func ensureSandbox() async -> Bool {
        if sandbox != nil { return true }
        do {
            let created = try await runtime.createSandbox(podUID: uid, hostname: hostname, hostNetwork: pod.spec.hostNetwork ?? false)
            guard await ensureNetwork(created) else { return false }
            sandbox = created
            return true
        } catch {
            setAllWaiting("CreatePodSandboxError", "\(error)")
            errors.record(subject, "creating the pod sandbox: \(error)")
            event(nil, .warning, "FailedCreatePodSandBox", "Failed to create pod sandbox: \(error)")
            return false
        }
    }

    /// Connects a non-hostNetwork pod's netns through CNI (kubelet: SetUpPod right after the sandbox). A failure
    /// fails the sandbox step (FailedCreatePodSandBox, naming the plugin) and is retried with back-off.
    private func ensureNetwork(_ created: Sandbox) async -> Bool {
        guard let network = config.network, !created.hostNetwork, let netns = created.netns else { return true }
        if let at = networkRetryAt, ContinuousClock.now < at { return false }
        let ports = pod.spec.containers.flatMap { $0.ports ?? [] }.compactMap { p -> PortMapping? in
            guard let host = p.hostPort, host > 0 else { return nil }
            return PortMapping(hostPort: Int(host), containerPort: Int(p.containerPort), protocol: p.protocol ?? "TCP")
        }
        do {
            let status = try await network.setUp(podUID: uid, namespace: pod.namespace, name: pod.name, netnsPath: netns,
                                                  portMappings: ports)
            podIPs = status?.ips ?? []
            networkBackoff = Backoff()
            networkRetryAt = nil
            return true
        } catch {
            networkRetryAt = .now + networkBackoff.next()
            let message = "failed to set up the network for sandbox of pod \(pod.fullName): \(error.message)"
            setAllWaiting("CreatePodSandboxError", message)
            errors.record(subject, message)
            event(nil, .warning, "FailedCreatePodSandBox", "Failed to create pod sandbox: \(message)")
            return false
        }
    }

    private var hostname: String {
        if pod.spec.hostNetwork == true {
            var buf = [CChar](repeating: 0, count: 256)
            gethostname(&buf, 255)
            return String(cString: buf)
        }
        return String((pod.spec.hostname ?? pod.name).prefix(63))
    }

    private func ensureVolumes() async -> Bool {
        if volumesReady {
            await refreshAPIVolumes()
            return true
        }
        do {
            volumePaths = try VolumeManager.prepare(pod: pod, podDir: podDir)
            if let objects = config.apiObjects {
                volumePaths.merge(try await APIVolumes.sync(pod: pod, podDir: podDir, podIPs: podIPs, objects: objects)) { _, b in b }
                apiVolumesRefreshAt = .now + config.volumeRefreshInterval
            }
            volumesReady = true
            return true
        } catch {
            setAllWaiting("CreateContainerConfigError", error.message)
            errors.record(subject, error.message)
            event(nil, .warning, "FailedMount", error.message)
            return false
        }
    }

    /// Rewrites configMap/secret/downwardAPI/projected volumes whose source changed (kubelet's periodic remount).
    /// A failure keeps the last good content and is reported; containers keep running.
    private func refreshAPIVolumes() async {
        guard let objects = config.apiObjects, let at = apiVolumesRefreshAt, ContinuousClock.now >= at else { return }
        apiVolumesRefreshAt = .now + config.volumeRefreshInterval
        do {
            _ = try await APIVolumes.sync(pod: pod, podDir: podDir, podIPs: podIPs, objects: objects)
        } catch {
            errors.record(subject, error.message)
            event(nil, .warning, "FailedMount", error.message)
        }
    }

    /// Asks the next sync to refresh API-backed volumes now (a watched configMap/secret changed).
    func refreshVolumesSoon() {
        if apiVolumesRefreshAt != nil { apiVolumesRefreshAt = .now }
        wake()
    }

    private var podDir: String { "\(config.podsDir)/\(uid)" }

    private func setAllWaiting(_ reason: String, _ message: String) {
        for (name, var rec) in records where rec.current == nil {
            rec.waiting = (reason, message)
            records[name] = rec
        }
    }

    /// Runs init containers in order; true once all have succeeded.
    private func syncInitContainers() async -> Bool {
        for c in pod.spec.initContainers ?? [] {
            guard let rec = records[c.name] else { continue }
            if rec.succeeded { continue }
            switch rec.current?.status {
            case .running:
                return false
            case .exited(let code, _, _, _, _, _):
                handleExit(c.name)
                if code == 0 {
                    records[c.name]?.succeeded = true
                    continue
                }
                if (pod.spec.restartPolicy ?? .always) == .never {
                    failPod("init container \(c.name) failed with exit code \(code)")
                    return false
                }
                await restartIfBackoffAllows(c.name)
                return false
            case nil:
                await start(c.name, restart: 0)
                return false
            }
        }
        return true
    }

    private func syncContainer(_ name: String) async {
        guard let rec = records[name] else { return }
        if rec.specChanged, rec.image != nil {
            await restartChanged(name)
            return
        }
        switch rec.current?.status {
        case .running:
            return
        case .exited(let code, _, _, _, _, _):
            handleExit(name)
            let policy = pod.spec.restartPolicy ?? .always
            let restart = policy == .always || (policy == .onFailure && code != 0)
            if restart { await restartIfBackoffAllows(name) }
        case nil:
            if rec.waiting?.reason == "StartError" || rec.lastStartFailure != nil {
                await restartIfBackoffAllows(name)
            } else {
                await start(name, restart: 0)
            }
        }
    }

    /// Stops a container whose spec changed and starts it again with the new spec (restart count + 1).
    private func restartChanged(_ name: String) async {
        guard var rec = records[name] else { return }
        if let cur = rec.current, case .running = cur.status {
            event(name, .normal, "Killing", "Container \(name) definition changed, will be restarted")
            probeTasks[name]?.cancel()
            probeTasks[name] = nil
            _ = try? await runtime.stop(id: cur.spec.id, grace: terminationGrace)
            if let info = await runtime.inspect(id: cur.spec.id) { rec.current = info }
        }
        rec.exitHandled = true
        rec.specChanged = false
        rec.crashBackoff = Backoff()
        records[name] = rec
        await start(name, restart: rec.current == nil ? rec.restartCount : rec.restartCount + 1)
    }

    /// The grace period for stopping this pod's containers: the API server's deletion grace period when the pod
    /// is being deleted, else spec.terminationGracePeriodSeconds (default 30 s).
    private var terminationGrace: Duration {
        .seconds(max(pod.metadata.deletionGracePeriodSeconds ?? pod.spec.terminationGracePeriodSeconds ?? 30, 0))
    }

    static func seconds(_ d: Duration) -> String {
        let ms = d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
        return ms < 1000 ? "\(ms)ms" : "\(ms / 1000).\(ms % 1000 / 100)s"
    }

    /// Book-keeping the first time an instance is seen exited: backoff, previous instance, probes.
    private func handleExit(_ name: String) {
        guard var rec = records[name], let current = rec.current, !rec.exitHandled,
              case .exited(let code, _, let oom, _, let finished, _) = current.status else { return }
        rec.exitHandled = true
        probeTasks[name]?.cancel()
        probeTasks[name] = nil
        rec.ready = false
        let ranFor = current.startedAtTimestamp.seconds(until: finished)
        rec.crashBackoff.exited(ranForSeconds: ranFor)
        records[name] = rec
        let reason = ContainerInfo.exitReason(code: code, oomKilled: oom)
        logger.info("container \(name) exited with code \(code) (\(reason))")
        if code != 0 {
            errors.record(subject, "container \(name) exited with code \(code) (\(reason))")
        }
    }

    private func restartIfBackoffAllows(_ name: String) async {
        guard let rec = records[name] else { return }
        if let at = rec.crashBackoff.nextStartAt, ContinuousClock.now < at {
            var r = rec
            r.waiting = ("CrashLoopBackOff", "back-off \(rec.crashBackoff.currentDelayText) restarting failed container=\(name) pod=\(pod.fullName)")
            if !r.backoffEventSent {
                r.backoffEventSent = true
                event(name, .warning, "BackOff", "Back-off restarting failed container \(name) in pod \(pod.name)")
            }
            records[name] = r
            return
        }
        await start(name, restart: rec.current == nil && rec.lastStartFailure == nil ? rec.restartCount : rec.restartCount + 1)
    }

    // MARK: - Eviction

    /// Whether the pod has failed (and so is not run any more).
    var hasFailed: Bool { podFailed }

    /// The IDs of its containers that run now (what an eviction would stop).
    var runningContainerIDs: [String] {
        records.values.compactMap { rec in
            guard let cur = rec.current, cur.status.isRunning else { return nil }
            return cur.spec.id
        }
    }

    /// Hard eviction, like kubelet's: the pod fails with reason Evicted and `message`, its containers are killed
    /// at once (no grace period) and never restarted. What is left is removed when the pod is deleted.
    func evict(message: String) async {
        guard !podFailed, !terminationRequested else { return }
        podFailed = true
        podReason = "Evicted"
        podMessage = message
        for t in probeTasks.values { t.cancel() }
        probeTasks = [:]
        event(nil, .warning, "Evicted", message)
        logger.warning("evicted: \(message)")
        await withTaskGroup(of: Void.self) { group in
            for id in runningContainerIDs {
                group.addTask { [runtime] in _ = try? await runtime.stop(id: id, grace: .zero) }
            }
        }
        await refreshFromRuntime()
        reportIfChanged()
    }

    private func failPod(_ message: String) {
        podFailed = true
        podMessage = message
        errors.record(subject, message)
    }

    // MARK: - Starting containers

    private func start(_ name: String, restart: Int) async {
        guard var rec = records[name], let image = rec.image, let sandbox else { return }
        let id = "\(uid.prefix(12))-\(name)-\(restart)"
        let spec: ContainerSpec
        do {
            let env = try await PodEnv.resolve(pod: pod, container: rec.container, podIPs: podIPs, objects: config.apiObjects)
            var s = try makeSpec(rec.container, image: image, id: id, restart: restart, apiEnv: env)
            try await GPUDevices.attach(config.gpus, to: &s, pod: pod, container: rec.container, isInit: rec.isInit)
            spec = s
        } catch {
            rec.waiting = ("CreateContainerConfigError", error.message)
            records[name] = rec
            errors.record(subject, "container \(name): \(error.message)")
            event(name, .warning, "Failed", "Error: \(error.message)")
            return
        }
        // Keep one previous instance (for `logs --previous`), remove older ones.
        if let old = rec.previous, old.spec.id != rec.current?.spec.id {
            try? await runtime.remove(id: old.spec.id)
        }
        if await runtime.inspect(id: id) != nil { try? await runtime.remove(id: id) }
        do {
            let info = try await runtime.start(spec, sandbox: sandbox)
            rec = records[name] ?? rec
            if rec.current != nil { rec.previous = rec.current }
            rec.current = info
            rec.restartCount = restart
            rec.exitHandled = false
            rec.waiting = nil
            rec.lastStartFailure = nil
            rec.started = rec.container.startupProbe == nil
            rec.ready = false
            rec.backoffEventSent = false
            records[name] = rec
            event(name, .normal, "Created", "Created container \(name)")
            event(name, .normal, "Started", "Started container \(name)")
            logger.info("started container \(name) (id \(id), pid \(info.pid ?? 0))")
            watchExit(name: name, id: id)
            if !rec.isInit { startProbes(name: name, id: id) }
        } catch {
            try? await runtime.remove(id: id)
            rec = records[name] ?? rec
            rec.lastStartFailure = ContainerState.Terminated(exitCode: 128, reason: "StartError", message: "\(error)",
                                                             startedAt: Timestamp.now().rfc3339, finishedAt: Timestamp.now().rfc3339)
            rec.restartCount = restart
            rec.crashBackoff.exited(ranForSeconds: 0)
            rec.waiting = ("RunContainerError", "\(error)")
            records[name] = rec
            errors.record(subject, "container \(name): \(error)")
            event(name, .warning, "Failed", "Error: \(error)")
            if (pod.spec.restartPolicy ?? .always) == .never {
                failPod("container \(name) could not start: \(error)")
            }
        }
    }

    private func makeSpec(_ c: Container, image: StoredImage, id: String, restart: Int,
                          apiEnv: (before: [(String, String)], valueFrom: [String: String])) throws(EdgedError) -> ContainerSpec {
        let extra: [(String, String)] = [("HOSTNAME", hostname)] + apiEnv.before
        let env = ContainerSpecBuilder.environment(container: c, image: image.config, extra: extra, valueFrom: apiEnv.valueFrom)
        let argv = ContainerSpecBuilder.argv(container: c, image: image.config, env: env)
        guard !argv.isEmpty else {
            throw EdgedError(.invalidManifest, "no command: the image \(c.image ?? "") has no Entrypoint or Cmd and the container sets no command")
        }
        let sc = c.securityContext
        let psc = pod.spec.securityContext
        let privileged = sc?.privileged ?? false
        var mounts: [MountSpec] = []
        for m in c.volumeMounts ?? [] {
            guard var source = volumePaths[m.name] else {
                throw EdgedError(.invalidManifest, "volume \(m.name) is not defined in spec.volumes")
            }
            if let sub = m.subPath, !sub.isEmpty {
                guard !sub.hasPrefix("/"), !sub.split(separator: "/").contains("..") else {
                    throw EdgedError(.invalidManifest, "volumeMount \(m.name) subPath \"\(sub)\" must be relative and must not contain '..'")
                }
                source += "/" + sub
                Files.makeDirectories(source)
            }
            mounts.append(MountSpec(source: source, destination: m.mountPath, readOnly: m.readOnly ?? false))
        }
        let seccompType = sc?.seccompProfile?.type ?? psc?.seccompProfile?.type ?? (config.seccompDefault ? "RuntimeDefault" : "Unconfined")
        let seccomp: SeccompMode
        switch seccompType {
        case "RuntimeDefault": seccomp = .runtimeDefault
        case "Unconfined": seccomp = .unconfined
        default: throw EdgedError(.invalidManifest, "seccompProfile type \(seccompType) is not supported (use RuntimeDefault or Unconfined)")
        }
        let limits = c.resources?.limits ?? [:]
        let requests = c.resources?.requests ?? [:]
        let logPath = "\(config.logDir)/\(pod.namespace)_\(pod.name)_\(uid)/\(c.name)/\(restart).log"
        return ContainerSpec(
            id: id, podUID: uid, podNamespace: pod.namespace, podName: pod.name, containerName: c.name,
            layers: image.layerPaths, argv: argv, env: env.map { "\($0.0)=\($0.1)" },
            workingDir: c.workingDir ?? (image.config.workingDir.flatMap { $0.isEmpty ? nil : $0 } ?? "/"),
            user: image.config.user.flatMap { $0.isEmpty ? nil : $0 },
            runAsUser: sc?.runAsUser ?? psc?.runAsUser, runAsGroup: sc?.runAsGroup ?? psc?.runAsGroup,
            supplementalGroups: psc?.supplementalGroups ?? [],
            mounts: mounts, hostname: hostname,
            privileged: privileged, readOnlyRootfs: sc?.readOnlyRootFilesystem ?? false,
            noNewPrivileges: sc?.allowPrivilegeEscalation == false,
            capAdd: sc?.capabilities?.add ?? [], capDrop: sc?.capabilities?.drop ?? [],
            seccomp: privileged ? .unconfined : seccomp,
            memoryLimitBytes: try limits["memory"]?.value(),
            cpuLimitMillis: try limits["cpu"]?.milliValue(),
            cpuRequestMillis: try (requests["cpu"] ?? limits["cpu"])?.milliValue(),
            pidsLimit: config.podPidsLimit,
            logPath: logPath, logMaxBytes: config.containerLogMaxBytes, logMaxFiles: config.containerLogMaxFiles)
    }

    private func watchExit(name: String, id: String) {
        let runtime = self.runtime
        Task { [weak self] in
            _ = await runtime.waitForExit(id: id)
            await self?.wake()
        }
    }

    // MARK: - Probes

    private func startProbes(name: String, id: String) {
        guard let rec = records[name] else { return }
        let c = rec.container
        guard c.livenessProbe != nil || c.readinessProbe != nil || c.startupProbe != nil else {
            records[name]?.ready = true
            return
        }
        let prober = Prober(runtime: runtime, containerID: id, hostNetwork: pod.spec.hostNetwork ?? false)
        probeTasks[name]?.cancel()
        probeTasks[name] = Task { [weak self] in
            guard let worker = self else { return }
            await prober.run(container: c) { [weak worker] event in
                await worker?.probeEvent(name: name, id: id, event: event)
            }
        }
    }

    private func probeEvent(name: String, id: String, event: Prober.Event) async {
        guard var rec = records[name], rec.current?.spec.id == id else { return }
        switch event {
        case .started:
            rec.started = true
        case .ready(let ready):
            rec.ready = ready
        case .livenessFailed(let message), .startupFailed(let message):
            logger.warning("container \(name) failed its probe, restarting it: \(message)")
            self.event(name, .warning, "Unhealthy", message)
            self.event(name, .normal, "Killing", "Container \(name) failed probe, will be restarted")
            errors.record(subject, "container \(name): \(message); restarting it")
            records[name] = rec
            let grace = Duration.seconds(rec.container.livenessProbe?.terminationGracePeriodSeconds ?? pod.spec.terminationGracePeriodSeconds ?? 30)
            _ = try? await runtime.stop(id: id, grace: grace)
            wake()
            return
        }
        records[name] = rec
        reportIfChanged()
    }

    // MARK: - Termination

    private func terminate() async {
        logger.info("terminating pod")
        for t in probeTasks.values { t.cancel() }
        probeTasks = [:]
        let grace = terminationGrace
        let ids = records.values.compactMap { rec -> String? in
            guard let cur = rec.current, case .running = cur.status else { return nil }
            event(rec.container.name, .normal, "Killing", "Stopping container \(rec.container.name)")
            return cur.spec.id
        }
        await withTaskGroup(of: Void.self) { group in
            for id in ids {
                group.addTask { [runtime] in _ = try? await runtime.stop(id: id, grace: grace) }
            }
        }
        for rec in records.values {
            for info in [rec.current, rec.previous].compactMap({ $0 }) {
                do { try await runtime.remove(id: info.spec.id) } catch {
                    errors.record(subject, "removing container \(info.spec.containerName): \(error)")
                }
            }
        }
        do { try await config.gpus?.release(podUID: uid) } catch {
            errors.record(subject, "releasing its GPUs: \(error.message)")
        }
        if let network = config.network, pod.spec.hostNetwork != true {
            do {
                try await network.tearDown(podUID: uid, namespace: pod.namespace, name: pod.name, netnsPath: sandbox?.netns ?? "")
            } catch {
                errors.record(subject, "tearing down the pod network: \(error.message)")
            }
            podIPs = []
        }
        do { try await runtime.removeSandbox(podUID: uid) } catch {
            errors.record(subject, "removing the pod sandbox: \(error)")
        }
        APIVolumes.unmountAll(under: "\(config.podsDir)/\(uid)")
        Files.removeTree("\(config.podsDir)/\(uid)")
        Files.removeTree("\(config.logDir)/\(pod.namespace)_\(pod.name)_\(uid)")
        terminated = true
        logger.info("pod terminated")
    }

    // MARK: - Status

    func summary() -> PodSummaryInput {
        var containers: [ContainerView] = []
        for rec in records.values.sorted(by: { $0.order < $1.order }) {
            containers.append(rec.view)
        }
        return PodSummaryInput(pod: pod, source: source, initDone: initDone, podFailed: podFailed, podMessage: podMessage,
                               podReason: podReason,
                               terminating: terminationRequested, containers: containers, startTime: startTime,
                               podIPs: podIPs, sandboxReady: sandbox != nil)
    }

    /// Log path of a container's current or previous instance.
    func logPath(container: String?, previous: Bool) throws(EdgedError) -> String {
        let name = container ?? pod.spec.containers[0].name
        guard let rec = records[name] else {
            let names = records.keys.sorted().joined(separator: ", ")
            throw EdgedError(.notFound, "container \(name) is not valid for pod \(pod.fullName) (containers: \(names))")
        }
        let info = previous ? rec.previous : rec.current
        guard let info else {
            throw EdgedError(.notFound, previous
                ? "previous terminated container \(name) in pod \(pod.fullName) not found"
                : "container \(name) in pod \(pod.fullName) has not started yet")
        }
        return info.spec.logPath
    }

    static func restartIndex(of id: String) -> Int {
        Int(id.split(separator: "-").last ?? "") ?? 0
    }
}
