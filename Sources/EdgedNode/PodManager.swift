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
    private let runtime: ContainerRuntime
    private let images: ImageStore
    private let config: NodeConfig
    private let errors: ErrorLog
    private let logger: Logger
    private var workers: [String: (worker: PodWorker, task: Task<Void, Never>)] = [:]  // by pod UID
    private var terminating: [String: Task<Void, Never>] = [:]
    private var adopted = false
    private var manifestErrors: [String: String] = [:]

    public init(runtime: ContainerRuntime, images: ImageStore, config: NodeConfig, errors: ErrorLog, logger: Logger) {
        self.runtime = runtime
        self.images = images
        self.config = config
        self.errors = errors
        self.logger = logger
    }

    /// Makes the running pods match `desired`: new UIDs start, missing UIDs terminate (an edited manifest
    /// has a new UID, so its old pod terminates and the new one starts, as with kubelet's static pods).
    public func apply(_ desired: [DesiredPod]) async {
        if !adopted { await adoptLeftovers(desired) }
        let wanted = Dictionary(desired.map { ($0.pod.metadata.uid ?? "", $0) }, uniquingKeysWith: { a, _ in a })
        for (uid, entry) in workers where wanted[uid] == nil {
            await entry.worker.requestTermination()
            workers[uid] = nil
            let task = entry.task
            terminating[uid] = Task { [weak self] in
                await task.value
                await self?.finishedTerminating(uid)
            }
        }
        for (uid, d) in wanted where workers[uid] == nil {
            start(d, adopting: [])
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
    }

    private func start(_ d: DesiredPod, adopting infos: [ContainerInfo]) {
        let uid = d.pod.metadata.uid ?? ""
        let worker = PodWorker(pod: d.pod, source: d.source, runtime: runtime, images: images, config: config, errors: errors, logger: logger)
        let task = Task {
            if !infos.isEmpty { await worker.adopt(infos) }
            await worker.run()
        }
        workers[uid] = (worker, task)
    }

    /// On the first apply after start: containers of desired pods are handed to their workers; containers of
    /// pods that are gone (manifest removed while edged was down) are stopped and removed with their sandbox.
    private func adoptLeftovers(_ desired: [DesiredPod]) async {
        adopted = true
        let byPod = Dictionary(grouping: await runtime.list(), by: { $0.spec.podUID })
        let wanted = Set(desired.compactMap { $0.pod.metadata.uid })
        for d in desired {
            let uid = d.pod.metadata.uid ?? ""
            if let infos = byPod[uid], !infos.isEmpty { start(d, adopting: infos) }
        }
        for (uid, infos) in byPod where !wanted.contains(uid) {
            logger.info("removing \(infos.count) container(s) of pod \(infos[0].spec.podNamespace)/\(infos[0].spec.podName), which is no longer wanted")
            await withTaskGroup(of: Void.self) { group in
                for info in infos where info.status.isRunning {
                    group.addTask { [runtime] in _ = try? await runtime.stop(id: info.spec.id, grace: .seconds(10)) }
                }
            }
            for info in infos { try? await runtime.remove(id: info.spec.id) }
            try? await runtime.removeSandbox(podUID: uid)
            Files.removeTree("\(config.podsDir)/\(uid)")
        }
    }

    /// Every pod's status, sorted by namespace/name.
    public func summaries() async -> [PodSummary] {
        var out: [PodSummary] = []
        for (_, entry) in workers {
            out.append(PodStatusBuilder.summary(await entry.worker.summary()))
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
            let p = entry.worker.pod
            if p.namespace == namespace && (p.name == pod || p.name == "\(pod)-\(config.nodeName)") {
                return try await entry.worker.logPath(container: container, previous: previous)
            }
        }
        throw EdgedError(.notFound, "pod \(namespace)/\(pod) not found on this node (see `edgectl pods`)")
    }

    /// Stops every pod (used by tests and `edged --stop-pods-on-exit`); normally edged exits and leaves pods running.
    public func terminateAll() async {
        await apply([])
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
