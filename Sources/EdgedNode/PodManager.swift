// Owns the set of pod workers: starts one per desired pod, stops those no longer wanted, and re-adopts
// containers a previous edged left running.

import EdgedControl
import EdgedCore
import EdgedImages
import EdgedRuntime
import Logging
import ServiceLifecycle

/// The pod runner. Feed it the desired pods (`apply`), ask it for status (`summaries`).
public actor PodManager {
    /// Where desired pods come from: static manifests, and the API server once the node has joined a cluster.
    public enum Origin: String, Sendable { case file, api }

    private struct Entry {
        var worker: PodWorker
        var task: Task<Void, Never>
        var origin: Origin
        var pod: Pod
    }

    private let runtime: ContainerRuntime
    private let images: ImageStore
    private var config: NodeConfig
    private let errors: ErrorLog
    private let logger: Logger
    private var workers: [String: Entry] = [:]  // by pod UID
    private var terminating: [String: Task<Void, Never>] = [:]
    /// The workers of `terminating` pods, so that status still lists them (as Terminating) until they are gone.
    private var terminatingWorkers: [String: PodWorker] = [:]
    private var expectedOrigins: Set<Origin>
    private var adoptedOrigins: Set<Origin> = []
    private var leftovers: [String: [ContainerInfo]]?
    private var manifestErrors: [String: String] = [:]
    private var gpusPruned = false

    /// `origins`: the sources that will call `apply`; containers of pods no source wants are removed only once
    /// every one of them has reported (so API pods survive a restart while the API server is still away).
    public init(runtime: ContainerRuntime, images: ImageStore, config: NodeConfig, errors: ErrorLog, logger: Logger,
                origins: Set<Origin> = [.file]) {
        self.runtime = runtime
        self.images = images
        self.config = config
        self.errors = errors
        self.logger = logger
        self.expectedOrigins = origins
    }

    /// Adds a source after start (`edgectl join` on a running edged).
    public func expect(_ origin: Origin) { expectedOrigins.insert(origin) }

    /// Connects pods started from now on to the cluster: Events and API-backed volumes/env.
    public func connect(events: PodEventSink?, objects: (any PodAPIObjects)?, volumeRefreshInterval: Duration,
                        podSynced: (@Sendable () -> Void)? = nil) {
        config.podSynced = podSynced
        config.events = events
        config.apiObjects = objects
        config.volumeRefreshInterval = volumeRefreshInterval
    }

    /// Makes the running pods of `origin` match `desired`: new UIDs start, missing UIDs terminate (an edited
    /// manifest has a new UID, so its old pod terminates and the new one starts, as with kubelet's static pods).
    /// A known UID with a changed pod is updated in place (image change, deletionTimestamp).
    public func apply(_ desired: [DesiredPod], origin: Origin = .file) async {
        if leftovers == nil { leftovers = Dictionary(grouping: await runtime.list(), by: { $0.spec.podUID }) }
        let wanted = Dictionary(desired.map { ($0.pod.metadata.uid ?? "", $0) }, uniquingKeysWith: { a, _ in a })
        for (uid, entry) in workers where entry.origin == origin {
            if let d = wanted[uid] {
                if d.pod != entry.pod {
                    workers[uid]?.pod = d.pod
                    await entry.worker.update(d.pod)
                }
                if d.pod.metadata.deletionTimestamp == nil { continue }
            }
            await entry.worker.requestTermination()
            workers[uid] = nil
            terminatingWorkers[uid] = entry.worker
            let task = entry.task
            terminating[uid] = Task { [weak self] in
                await task.value
                await self?.finishedTerminating(uid)
            }
        }
        for (uid, d) in wanted where workers[uid] == nil && terminating[uid] == nil {
            let infos = leftovers?.removeValue(forKey: uid) ?? []
            if d.pod.metadata.deletionTimestamp != nil && infos.isEmpty { continue }
            start(d, origin: origin, adopting: infos)
            if d.pod.metadata.deletionTimestamp != nil, let entry = workers.removeValue(forKey: uid) {
                // Being deleted while edged was down: adopt its containers only to stop them gracefully.
                await entry.worker.requestTermination()
                terminatingWorkers[uid] = entry.worker
                terminating[uid] = Task { [weak self] in
                    await entry.task.value
                    await self?.finishedTerminating(uid)
                }
            }
        }
        adoptedOrigins.insert(origin)
        if adoptedOrigins.isSuperset(of: expectedOrigins), !gpusPruned {
            gpusPruned = true  // pods removed while edged was down hold no GPU any more
            do { try await config.gpus?.prune(keeping: Set(workers.keys).union(terminating.keys)) } catch { errors.record("GPU allocations", error.message) }
        }
        if adoptedOrigins.isSuperset(of: expectedOrigins), let rest = leftovers, !rest.isEmpty {
            leftovers = [:]
            await removeLeftovers(rest)
        }
    }

    public func recordManifestErrors(_ errs: [String: String]) {
        for (file, message) in errs where manifestErrors[file] != message {
            errors.record("manifest \(file)", message)
        }
        manifestErrors = errs
    }

    public var currentManifestErrors: [String: String] { manifestErrors }

    private func finishedTerminating(_ uid: String) {
        terminating[uid] = nil
        terminatingWorkers[uid] = nil
        // Now isActive says no: the status writer can delete a gracefully deleted pod's object. (The worker's own
        // wake-up at its end came just before this, and the deletion then waited for the writer's 2 s tick.)
        config.podSynced?()
    }

    /// Whether a pod still has a worker or is still being terminated.
    public func isActive(uid: String) -> Bool { workers[uid] != nil || terminating[uid] != nil }

    private func start(_ d: DesiredPod, origin: Origin, adopting infos: [ContainerInfo]) {
        let uid = d.pod.metadata.uid ?? ""
        let worker = PodWorker(pod: d.pod, source: d.source, runtime: runtime, images: images, config: config, errors: errors, logger: logger)
        let task = Task {
            if !infos.isEmpty { await worker.adopt(infos) }
            await worker.run()
        }
        workers[uid] = Entry(worker: worker, task: task, origin: origin, pod: d.pod)
    }

    /// Containers of pods that no source wants any more (removed while edged was down) are stopped and removed
    /// with their sandbox.
    private func removeLeftovers(_ byPod: [String: [ContainerInfo]]) async {
        for (uid, infos) in byPod where workers[uid] == nil && terminating[uid] == nil {
            logger.info("removing \(infos.count) container(s) of pod \(infos[0].spec.podNamespace)/\(infos[0].spec.podName), which is no longer wanted")
            await withTaskGroup(of: Void.self) { group in
                for info in infos where info.status.isRunning {
                    group.addTask { [runtime] in _ = try? await runtime.stop(id: info.spec.id, grace: .seconds(10)) }
                }
            }
            for info in infos { try? await runtime.remove(id: info.spec.id) }
            try? await config.network?.tearDown(podUID: uid)
            try? await runtime.removeSandbox(podUID: uid)
            APIVolumes.unmountAll(under: "\(config.podsDir)/\(uid)")
            Files.removeTree("\(config.podsDir)/\(uid)")
        }
    }

    /// Full status input of every pod of `origin` (for the status writer), by UID.
    func podInputs(_ origin: Origin) async -> [String: PodSummaryInput] {
        var out: [String: PodSummaryInput] = [:]
        for (uid, entry) in workers where entry.origin == origin { out[uid] = await entry.worker.summary() }
        return out
    }

    /// The static pods (from manifests) being run, by UID: the cluster agent gives them mirror pods.
    public func staticPods() -> [String: Pod] {
        var out: [String: Pod] = [:]
        for (uid, entry) in workers where entry.origin == .file { out[uid] = entry.pod }
        return out
    }

    /// Wakes the pods that mount or read `kind` ("configmap"/"secret") `namespace/name`, to refresh their volumes.
    public func objectChanged(kind: String, namespace: String, name: String) async {
        for entry in workers.values where entry.pod.namespace == namespace && entry.pod.refers(to: kind, name: name) {
            await entry.worker.refreshVolumesSoon()
        }
    }

    /// Every pod's status, sorted by namespace/name; pods still stopping are listed as Terminating until gone.
    public func summaries() async -> [PodSummary] {
        var out: [PodSummary] = []
        for worker in workers.values.map(\.worker) + terminatingWorkers.values {
            out.append(PodStatusBuilder.summary(await worker.summary()))
        }
        return out.sorted { ($0.namespace, $0.name) < ($1.namespace, $1.name) }
    }

    /// Manifest digests of the images pods use (for image GC and `edgectl images`).
    public func imagesInUse() async -> Set<String> {
        var set: Set<String> = []
        for (_, entry) in workers {
            for c in await entry.worker.summary().containers where !c.imageID.isEmpty { set.insert(c.imageID) }
        }
        return set
    }

    /// The log file of a pod's container (`name` without the node suffix is accepted too).
    public func logPath(namespace: String, pod: String, container: String?, previous: Bool) async throws(EdgedError) -> String {
        for (_, entry) in workers {
            let p = entry.pod
            if p.namespace == namespace && (p.name == pod || p.name == "\(pod)-\(config.nodeName)") {
                return try await entry.worker.logPath(container: container, previous: previous)
            }
        }
        throw EdgedError(.notFound, "pod \(namespace)/\(pod) not found on this node (see `edgectl pods`)")
    }

    /// Pods from the API server that run and have not failed: what memory eviction may pick from (static pods are
    /// critical to kubelet and never evicted).
    func evictionCandidates() async -> [(uid: String, pod: Pod, containerIDs: [String])] {
        var out: [(uid: String, pod: Pod, containerIDs: [String])] = []
        for (uid, entry) in workers where entry.origin == .api {
            let worker = entry.worker
            guard !(await worker.hasFailed) else { continue }
            let ids = await worker.runningContainerIDs
            if !ids.isEmpty { out.append((uid, entry.pod, ids)) }
        }
        return out
    }

    /// Evicts one pod (see PodWorker.evict).
    func evict(uid: String, message: String) async {
        await workers[uid]?.worker.evict(message: message)
    }

    /// Stops every pod (used by tests and `edged --stop-pods-on-exit`); normally edged exits and leaves pods running.
    public func terminateAll() async {
        for origin in Set(workers.values.map(\.origin)) { await apply([], origin: origin) }
        for t in terminating.values { await t.value }
    }

    /// Waits for pods being terminated to finish (graceful shutdown of edged does not stop pods).
    public func waitForTerminations() async {
        for t in terminating.values { await t.value }
    }
}

/// Drives a PodManager from a manifest source, as a service.
public struct StaticPodService: Service {
    let source: ManifestSource
    let manager: PodManager

    public init(source: ManifestSource, manager: PodManager) {
        self.source = source
        self.manager = manager
    }

    /// Applies every scan until graceful shutdown; then waits for pods already being terminated (running pods
    /// are left alone: they outlive edged).
    public func run() async throws {
        try? await cancelWhenGracefulShutdown {
            for await scan in source.scans() {
                await manager.recordManifestErrors(scan.errors)
                await manager.apply(scan.pods)
            }
        }
        await manager.waitForTerminations()
    }
}

extension Pod {
    /// Whether the pod's volumes or env refer to configMap/secret `name`.
    func refers(to kind: String, name: String) -> Bool {
        for v in spec.volumes ?? [] {
            if kind == "configmap" && (v.configMap?.name == name || v.projected?.sources?.contains { $0.configMap?.name == name } == true) { return true }
            if kind == "secret" && (v.secret?.secretName == name || v.projected?.sources?.contains { $0.secret?.name == name } == true) { return true }
        }
        return false
    }
}
