// The autonomy controller (the cloud side of node autonomy, like OpenYurt's yurt-manager): for every pod bound to an
// autonomous node (NodeAutonomy, from the Node's annotations) it sets the NoExecute tolerations of
// node.kubernetes.io/unreachable and node.kubernetes.io/not-ready to the node's autonomy duration, so the
// taint-eviction controller does not delete the pods while the node is away. Nothing else is ever written: pods of
// non-autonomous nodes, DaemonSet/mirror/terminating/finished pods and every other field are left alone.
//
//   Node informer ─┐                       (leader only)
//   Pod informer  ─┴─▶ ControllerState ──▶ WorkQueue ──▶ workers ──▶ PATCH pods/NAME (merge, with resourceVersion)
//                       (facts per pod)     ▲                        └─▶ Events on the pod / the node
//                                           └── start of a leadership term and every resync: every key
//
// The write is a JSON merge patch {"metadata":{"resourceVersion":RV},"spec":{"tolerations":[...]}}: the RV makes it
// a compare-and-swap, and the merge patch replaces the list whole, each toleration as read except tolerationSeconds.
// Answers: 409 → retried from the newer object the informer brings; 404 → the pod is gone; 422 → the API refused
// it (a Warning Event with its message; not retried for that resourceVersion); 403 → an error naming the missing
// permission and the manifest, retried with backoff; anything else → retried with backoff.

import EdgedCore
import EdgedKube
import Logging
import Synchronization

/// Settings of the controller.
public struct AutonomyControllerOptions: Sendable {
    public static let component = "edged-autonomy-controller"

    /// This replica's name (Events' reportingInstance; the Lease holder).
    public var identity: String
    /// Every pod is reconciled again this often (and at the start of each leadership term).
    public var resyncInterval: Duration
    /// Pods reconciled at once.
    public var workers: Int
    /// nil: no election, this process always leads (a single replica).
    public var leaderElection: LeaderElectionConfig?
    /// Backoff of a pod whose write failed (doubling up to `maxRetryBackoff`).
    public var retryBackoff: Duration
    public var maxRetryBackoff: Duration
    /// The informers' server-side watch timeout range, in seconds.
    public var watchTimeoutSeconds: ClosedRange<Int>

    public init(identity: String, resyncInterval: Duration = .seconds(300), workers: Int = 4,
                leaderElection: LeaderElectionConfig? = nil, retryBackoff: Duration = .milliseconds(200),
                maxRetryBackoff: Duration = .seconds(60), watchTimeoutSeconds: ClosedRange<Int> = 300...600) {
        self.identity = identity
        self.resyncInterval = resyncInterval
        self.workers = workers
        self.leaderElection = leaderElection
        self.retryBackoff = retryBackoff
        self.maxRetryBackoff = maxRetryBackoff
        self.watchTimeoutSeconds = watchTimeoutSeconds
    }
}

/// Counters, for logs and tests.
public struct AutonomyControllerStats: Sendable, Equatable {
    /// Pods whose tolerations were written.
    public var patched = 0
    /// Writes answered 409 (the pod changed meanwhile) and retried.
    public var conflicts = 0
    /// Writes the API refused (422).
    public var refused = 0
    /// Requests answered 403.
    public var forbidden = 0
    /// Other failed writes (retried).
    public var failed = 0
    /// Events written (created or aggregated).
    public var events = 0
    /// Invalid node annotations reported.
    public var invalidAnnotations = 0
}

public final class AutonomyController: Sendable {
    public let options: AutonomyControllerOptions
    private let client: KubeClient
    private let logger: Logger
    private let state = ControllerState()
    private let events: ControllerEvents
    private let nodeInformer: Informer<AutonomyNode>
    private let podInformer: Informer<AutonomyPod>
    public let elector: LeaderElector?
    private let counters = Mutex(AutonomyControllerStats())
    private let leading = Mutex(false)
    /// Last time each kind of 403 was logged (they are logged at most every 30 s).
    private let forbiddenLogged = Mutex([String: ContinuousClock.Instant]())

    public init(client: KubeClient, options: AutonomyControllerOptions, logger: Logger) {
        self.client = client
        self.options = options
        self.logger = logger
        events = ControllerEvents(client: client, component: AutonomyControllerOptions.component, instance: options.identity)
        let informerOptions = Informer<AutonomyNode>.Options(watchTimeoutSeconds: options.watchTimeoutSeconds)
        nodeInformer = Informer(client: client, resource: .autonomyNodes, options: informerOptions, logger: logger)
        podInformer = Informer(client: client, resource: .autonomyPods,
                               options: Informer<AutonomyPod>.Options(watchTimeoutSeconds: options.watchTimeoutSeconds),
                               logger: logger)
        elector = options.leaderElection.map { LeaderElector(client: client, config: $0, logger: logger) }
    }

    public var stats: AutonomyControllerStats { counters.withLock { $0 } }

    /// Whether this replica is reconciling right now (it leads and its caches are synced).
    public var isLeading: Bool { leading.withLock { $0 } }

    /// True when this replica leads, has queued every pod since it started leading, and has nothing left to do.
    public func isIdle() async -> Bool { isLeading ? await state.isIdle() : false }

    /// Runs until the calling task is cancelled (then the Lease is released, when so configured).
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.nodeInformer.run { await self.state.handle($0) } }
            group.addTask { await self.podInformer.run { await self.state.handle($0) } }
            group.addTask {
                if let elector = self.elector {
                    await elector.run { await self.lead() }
                } else {
                    await self.lead()
                }
            }
            await group.next()
            group.cancelAll()
        }
    }

    // MARK: A leadership term

    /// Reconciles until cancelled (leadership lost or shutdown).
    func lead() async {
        let queue = WorkQueue(initialBackoff: options.retryBackoff, maxBackoff: options.maxRetryBackoff)
        await state.setQueue(queue)
        if await waitForCaches() {
            leading.withLock { $0 = true }
            await state.enqueueAll()
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<max(1, options.workers) {
                    group.addTask {
                        while let key = await queue.get() {
                            await self.process(key, queue)
                            await queue.done(key)
                        }
                    }
                }
                group.addTask {
                    while true {
                        do { try await Task.sleep(for: self.options.resyncInterval) } catch { return }
                        await self.state.enqueueAll()
                    }
                }
                await group.waitForAll()
            }
        }
        leading.withLock { $0 = false }
        await state.setQueue(nil)
        await queue.shutDown()
    }

    /// Waits for both informers' first list; false when cancelled. A 403 is logged with the missing permission.
    private func waitForCaches() async -> Bool {
        while !(nodeInformer.hasSynced && podInformer.hasSynced) {
            for (informer, resource) in [(nodeInformer.lastError, "nodes"), (podInformer.lastError, "pods")] {
                if let e = informer as? KubeError, e.isForbidden {
                    logForbidden("list and watch \(resource)", e, permission: "get, list and watch on \(resource) (all namespaces)")
                }
            }
            do { try await Task.sleep(for: .milliseconds(50)) } catch { return false }
        }
        return !Task.isCancelled
    }

    // MARK: Work

    private func process(_ key: String, _ queue: WorkQueue) async {
        if key.hasPrefix("node:") {
            await processNode(String(key.dropFirst(5)), key, queue)
        } else if key.hasPrefix("pod:") {
            await processPod(String(key.dropFirst(4)), key, queue)
        }
    }

    private func processNode(_ name: String, _ key: String, _ queue: WorkQueue) async {
        guard let bad = await state.unreportedInvalid(node: name) else {
            await queue.forget(key)
            return
        }
        logger.warning("node \(name): \(bad.description); its pods are left alone")
        do {
            try await events.node(name: name, type: "Warning", reason: "InvalidAutonomyAnnotation", message: bad.description)
            await state.reported(node: name, value: bad.value)
            counters.withLock {
                $0.invalidAnnotations += 1
                $0.events += 1
            }
            await queue.forget(key)
        } catch {
            if Task.isCancelled || error is CancellationError { return }
            noteFailure(error, doing: "create an Event about node \(name)", permission: "create and patch on events")
            let delay = await queue.retryLater(key)
            logger.debug("node \(name): the Event is retried in \(durationText(delay))")
        }
    }

    private func processPod(_ podKey: String, _ key: String, _ queue: WorkQueue) async {
        guard case let .patch(facts, change, autonomy, source) = await state.plan(pod: podKey) else {
            await queue.forget(key)
            return
        }
        let body = JSONValue.object([
            ("metadata", .object([("resourceVersion", .string(facts.resourceVersion))])),
            ("spec", .object([("tolerations", .array(change.tolerations))])),
        ])
        let target = Self.describe(autonomy)
        do {
            let updated = try await client.patch(.autonomyPods, namespace: facts.namespace, name: facts.name, .merge(body))
            await state.patched(podKey, from: facts.resourceVersion, updated)
            await queue.forget(key)
            counters.withLock { $0.patched += 1 }
            logger.info("pod \(podKey) on node \(facts.nodeName): NoExecute tolerations of unreachable/not-ready set to \(target) (were \(change.before)); node is autonomous (\(source))")
            let message = "Set the NoExecute tolerations of node.kubernetes.io/unreachable and node.kubernetes.io/not-ready to \(target) (before: \(change.before)) because node \(facts.nodeName) is autonomous (\(source)): the pod stays bound while the node is unreachable or not ready"
            await podEvent(facts, podKey, resourceVersion: updated.metadata.resourceVersion, type: "Normal",
                           reason: "AutonomyTolerationsSet", message: message)
        } catch let e as KubeError where e.isConflict {
            counters.withLock { $0.conflicts += 1 }
            let delay = await queue.retryLater(key)
            logger.debug("pod \(podKey) changed while its tolerations were written (409); trying again from the newer copy in \(durationText(delay))")
        } catch let e as KubeError where e.isNotFound {
            await queue.forget(key)
            logger.debug("pod \(podKey) is gone: \(e.message)")
        } catch let e as KubeError where e.isInvalid {
            await state.refuse(podKey, resourceVersion: facts.resourceVersion)
            await queue.forget(key)
            counters.withLock { $0.refused += 1 }
            let apiMessage = e.status?.message ?? e.message
            logger.warning("pod \(podKey) on node \(facts.nodeName): the API server refused setting its NoExecute tolerations to \(target) (422): \(apiMessage); not retried until the pod changes")
            let message = "The API server refused setting the NoExecute tolerations of node.kubernetes.io/unreachable and node.kubernetes.io/not-ready to \(target) for autonomous node \(facts.nodeName) (\(source)): \(apiMessage). The pod keeps \(change.before) and may be evicted when the node is away for longer; fix what the message names (e.g. an admission webhook) and the next resync tries again"
            await podEvent(facts, podKey, resourceVersion: facts.resourceVersion, type: "Warning",
                           reason: "AutonomyTolerationsRefused", message: String(message.prefix(1024)))
        } catch {
            if Task.isCancelled || error is CancellationError { return }
            noteFailure(error, doing: "patch pod \(podKey)", permission: "patch on pods (all namespaces)")
            let delay = await queue.retryLater(key)
            logger.debug("pod \(podKey): retrying in \(durationText(delay))")
        }
    }

    /// An Event about the pod; a failure is counted and logged (the pod's write already happened or was refused).
    private func podEvent(_ facts: PodFacts, _ podKey: String, resourceVersion: String?, type: String, reason: String,
                          message: String) async {
        do {
            try await events.pod(namespace: facts.namespace, name: facts.name, uid: facts.uid,
                                 resourceVersion: resourceVersion, type: type, reason: reason, message: message)
            counters.withLock { $0.events += 1 }
        } catch {
            if Task.isCancelled || error is CancellationError { return }
            noteFailure(error, doing: "create an Event about pod \(podKey)", permission: "create and patch on events")
        }
    }

    /// Counts and logs a failed request: a 403 as an error naming the permission (at most every 30 s per kind).
    private func noteFailure(_ error: Error, doing what: String, permission: String) {
        if let e = error as? KubeError, e.isForbidden {
            counters.withLock { $0.forbidden += 1 }
            logForbidden(what, e, permission: permission)
        } else {
            counters.withLock { $0.failed += 1 }
            logger.warning("cannot \(what): \(error); retrying with backoff")
        }
    }

    private func logForbidden(_ what: String, _ e: KubeError, permission: String) {
        let now = ContinuousClock.now
        let log = forbiddenLogged.withLock { m -> Bool in
            if let last = m[permission], now - last < .seconds(30) { return false }
            m[permission] = now
            return true
        }
        guard log else { return }
        logger.error("cannot \(what): forbidden (403): \(e.status?.message ?? e.message). The controller's account needs \(permission): apply deploy/autonomy-controller.yaml (ClusterRole edged-autonomy-controller and its ClusterRoleBinding to ServiceAccount kube-system/edged-autonomy-controller); retrying with backoff")
    }

    /// "72h", "forever (no tolerationSeconds)".
    static func describe(_ autonomy: NodeAutonomy) -> String {
        switch autonomy {
        case .forever, .off: return "forever (no tolerationSeconds)"
        case .seconds(let s): return "\(NodeAutonomy.format(seconds: s)) (tolerationSeconds \(s))"
        }
    }
}
