// The node side of cluster membership, as kubelet does it:
//   - registers the Node (labels, taints, addresses, nodeInfo, capacity/allocatable) and keeps its status current
//     (on change, and at least every nodeStatusReportInterval, like kubelet's nodeStatusReportFrequency);
//   - renews the node Lease in kube-node-lease every leaseRenewInterval (unless the edge hub does, as its probe);
//   - runs the pods bound to the node (watch with fieldSelector spec.nodeName), writes their pods/status, sends
//     Events, finishes graceful deletions by deleting the pod object, and gives static pods mirror pods;
//   - rotates the client certificate at 70–90 % of its lifetime and asks for a serving certificate.
// Every loop survives the API server going away: it retries with back-off and pods keep running.

import EdgedControl
import EdgedCore
import EdgedCredentials
import EdgedImages
import EdgedKube
import EdgedNode
import Logging
import Synchronization
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

public struct ClusterAgentConfig: Sendable {
    public var nodeName: String
    /// Where `edgectl join` stored the credentials (CredentialStore layout).
    public var credentialsDir: String
    /// The filesystem whose free space is the node's ephemeral-storage.
    public var stateDir: String
    /// The node's InternalIP (default: the first IPv4 address of an interface that is up).
    public var nodeIP: String?
    public var leaseDurationSeconds: Int32 = 40
    public var leaseRenewInterval: Duration = .seconds(10)
    /// False when the edge hub renews the Lease as its cloud health probe.
    public var renewsLease: Bool = true
    /// More IP SANs for the serving certificate (the hub's HTTPS address, which pods reach as the `kubernetes` Service).
    public var extraServingIPs: [String] = []
    public var nodeStatusReportInterval: Duration = .seconds(300)
    public var nodeStatusUpdateFrequency: Duration = .seconds(10)
    /// Fallback tick of the pod status writer (pod syncs wake it at once).
    public var podStatusInterval: Duration = .seconds(2)
    public var maxPods: Int = 110
    public var systemReserved: [String: Quantity] = [:]
    public var kubeletPort: Int32 = 10250
    /// edged's own version; kubeletVersion is "<kubernetesVersion>+edged-<version>".
    public var version: String
    public var kubernetesVersion: String = "v1.31.0"
    public var volumeRefreshInterval: Duration = .seconds(60)
    /// evictionHard's memory.available in bytes (nil: none). As in kubelet, MemoryPressure is True while the node's
    /// available memory is below it, and it is taken off allocatable memory.
    public var memoryEvictionThreshold: Int64? = 100 << 20
    /// Seconds a pod bound to an autonomous node may lack the autonomy tolerations before `edgectl status` says no
    /// autonomy controller reconciles them (time for the controller to do its work).
    public var autonomyGraceSeconds: Int64 = 60
    /// Extended resources found on the host (nvidia.com/gpu), added to capacity and allocatable.
    public var extendedResources: @Sendable () -> [String: Quantity] = { [:] }

    public init(nodeName: String, credentialsDir: String, stateDir: String, version: String) {
        self.nodeName = nodeName
        self.credentialsDir = credentialsDir
        self.stateDir = stateDir
        self.version = version
    }

    public var kubeletVersion: String { "\(kubernetesVersion)+edged-\(version)" }
}

/// What `edgectl status` shows about the cluster connection.
public struct ClusterState: Sendable, Equatable {
    public var server: String = ""
    public var registered = false
    public var lastLeaseRenewal: Timestamp?
    public var lastNodeStatus: Timestamp?
    public var lastError: String?
    public var apiPods = 0
    public var certificateNotAfter: String?
    public var eventsSent = 0
    /// Pod status writes the API server refused ("pod ns/name: <the API's message>"), newest view.
    public var refusedStatusWrites: [String] = []
    /// Node autonomy from the Node's annotations and the bound pods as last seen; nil until the Node is seen.
    public var autonomy: AutonomyReport?
    /// The kubelet-serving CSR that waits for approval (nil when none does: issued, or between tries).
    public var servingCSR: String?
}

public actor ClusterAgent {
    let config: ClusterAgentConfig
    let pods: PodManager
    let images: ImageStore
    /// nil when pod networking is ready, else why not (kubelet's NetworkReady=false message).
    let networkProblem: @Sendable () async -> String?
    let logger: Logger
    let store: CredentialStore

    private var client: KubeClient?
    private var objects: APIObjectSource?
    private var events: EventRecorder?
    private var nodeUID: String?
    private var lastNodeStatus: NodeStatus?
    private var lastNodeReport: ContinuousClock.Instant?
    private var known: [String: Pod] = [:]          // API pods bound to this node, by UID
    private var rejected: [String: String] = [:]     // UID → why the pod cannot run (admission)
    private var written: [String: PodStatus] = [:]   // last status written, by UID
    private var deleting: Set<String> = []
    private var state = ClusterState()
    private var podsSynced = false
    private let wakeStatus: AsyncStream<Void>.Continuation
    private let statusWakes: AsyncStream<Void>

    public init(config: ClusterAgentConfig, pods: PodManager, images: ImageStore,
                networkProblem: @escaping @Sendable () async -> String?, logger: Logger) {
        self.config = config
        self.pods = pods
        self.images = images
        self.networkProblem = networkProblem
        self.logger = logger
        self.store = CredentialStore(dir: config.credentialsDir)
        (statusWakes, wakeStatus) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    public var snapshot: ClusterState {
        var s = state
        s.apiPods = known.count
        s.refusedStatusWrites = refusedStatus.values.map { "pod \($0.pod): \($0.message)" }.sorted()
        if let apiNode {
            let now = ContinuousClock.now
            s.autonomy = AutonomyReport(annotations: apiNode.metadata.annotations, pods: Array(known.values),
                                        ages: autonomyMismatchSince.mapValues { (now - $0).components.seconds },
                                        graceSeconds: config.autonomyGraceSeconds)
        }
        return s
    }

    /// When edged first saw each pod (by UID) that autonomy concerns without the autonomy tolerations, while the
    /// node is autonomous; a pod leaves it as soon as it carries them (or goes away).
    private var autonomyMismatchSince: [String: ContinuousClock.Instant] = [:]

    /// Brings `autonomyMismatchSince` up to date with the Node's setting and the pods (after any change of either).
    private func trackAutonomy() {
        let autonomy = (try? NodeAutonomy(annotations: apiNode?.metadata.annotations)) ?? .off
        let mismatched = Set(AutonomyReport.unreconciled(autonomy, pods: Array(known.values)).compactMap(\.metadata.uid))
        autonomyMismatchSince = autonomyMismatchSince.filter { mismatched.contains($0.key) }
        let now = ContinuousClock.now
        for uid in mismatched where autonomyMismatchSince[uid] == nil { autonomyMismatchSince[uid] = now }
    }

    /// Whether credentials from `edgectl join` exist.
    public nonisolated var isJoined: Bool { Self.hasCredentials(dir: config.credentialsDir) }

    /// Why the stored credentials cannot be used (a corrupt or half-written file), or nil.
    public nonisolated func credentialsProblem() -> String? {
        do { _ = try store.load() } catch { return "\(error.message)" }
        return nil
    }

    public static func hasCredentials(dir: String) -> Bool {
        guard let contents = try? CredentialStore(dir: dir).load() else { return false }
        return contents.client != nil && contents.cluster != nil
    }

    /// How to reach the API server with the stored credentials. Throws when the node has not joined or the stored
    /// credentials are unusable.
    public nonisolated func clientConfig() throws -> KubeClientConfig {
        guard let contents = try store.load(), let cluster = contents.cluster, let pair = contents.client, let ca = contents.caPEM else {
            throw EdgedError(.invalidConfig, "this node has not joined a cluster: run `edgectl join --server URL --token TOKEN`")
        }
        return KubeClientConfig(
            server: cluster.server, caPEM: ca,
            credentials: .clientCertificate(certificatePEM: pair.certificatePEM, privateKeyPEM: pair.key.pem),
            userAgent: "edged/\(config.version) (linux/\(NodeFacts.architecture)) kubelet/\(config.kubernetesVersion)")
    }

    /// Runs every loop until cancelled. Throws only when the stored credentials are unusable. `transport` carries
    /// the API requests (the edge hub's in-process transport); nil sends them straight to the API server.
    public func run(transport: (any KubeTransport)? = nil) async throws {
        guard let contents = try store.load(), let cluster = contents.cluster, let pair = contents.client, let ca = contents.caPEM else {
            throw EdgedError(.invalidConfig, "this node has not joined a cluster: run `edgectl join --server URL --token TOKEN`")
        }
        state.server = cluster.server
        state.certificateNotAfter = Bootstrapper.rfc3339(pair.info.notAfter)
        let clientConfig = try clientConfig()
        let client = try transport.map { KubeClient(transport: $0, requestTimeout: clientConfig.requestTimeout,
                                                    watchIdleTimeout: clientConfig.watchIdleTimeout, logger: logger) }
            ?? KubeClient(config: clientConfig, logger: logger)
        self.client = client
        let objects = APIObjectSource(client: client, logger: logger)
        objects.setHostIPs(NodeFacts.internalIPs(configured: config.nodeIP))
        objects.tokens.open(dir: "\(config.stateDir)/tokens", logger: logger)
        self.objects = objects
        let recorder = EventRecorder(client: client, nodeName: config.nodeName, logger: logger)
        self.events = recorder
        await pods.expect(.api)
        await pods.connect(events: recorder.sink(), objects: objects, volumeRefreshInterval: config.volumeRefreshInterval,
                           podSynced: { [wake = wakeStatus] in wake.yield() })
        logger.info("node agent for \(config.nodeName) at \(cluster.server)")

        await withTaskGroup(of: Void.self) { group in
            group.addTask { await recorder.run() }
            group.addTask { await self.nodeLoop() }
            group.addTask { await self.nodeWatchLoop() }
            group.addTask { await self.leaseLoop() }
            group.addTask { await self.podSourceLoop() }
            group.addTask { await self.podStatusLoop() }
            group.addTask { await self.objectWatchLoop() }
            group.addTask { await self.rotationLoop(caPEM: ca) }
            group.addTask { await self.servingCertificateLoop() }
            await group.waitForAll()
        }
    }

    func noteError(_ what: String, _ error: any Error) {
        let text = "\(what): \(error)"
        if state.lastError != text { logger.warning("\(text)") }
        state.lastError = text
    }

    // MARK: - Node

    /// Keeps the node's status current: every nodeStatusUpdateFrequency (10 s), and at once when the Node object in
    /// the API shows conditions other than the ones this node last reported (the node controller marks a node it
    /// has not heard from Unknown, and only the node's own status write makes it Ready again), like kubelet, which
    /// compares its status with the API's Node at every update.
    private func nodeLoop() async {
        var delay = Duration.milliseconds(500)
        while !Task.isCancelled {
            do {
                if nodeUID == nil { try await registerNode() }
                try await updateNodeStatus()
                // The node's own status went through: an error noted before (often the outage's 503s) is history;
                // a write that still fails notes its error again when it next fails.
                state.lastError = nil
                delay = .milliseconds(500)
                await sleepOrNodeWake(config.nodeStatusUpdateFrequency)
            } catch {
                noteError("updating node \(config.nodeName)", error)
                cloudReturned = false
                await sleepOrNodeWake(delay)
                // The back-off starts over once the cloud is back (cloudIsReachableAgain also cut the sleep short).
                delay = cloudReturned ? .milliseconds(500) : min(delay * 2, .seconds(30))
            }
        }
    }

    /// Set by cloudIsReachableAgain while the node loop backs off after a failure.
    private var cloudReturned = false

    /// The edge hub saw the API server answer again after an outage: a registration or node status write that
    /// failed meanwhile is retried now rather than after the rest of its back-off.
    public func cloudIsReachableAgain() {
        cloudReturned = true
        wakeNodeLoop()
    }

    /// The Node object as the API server last showed it (a watch on this one object).
    private var apiNode: Node?
    private var nodeWaiter: CheckedContinuation<Void, Never>?
    private var nodeWakePending = false

    private func wakeNodeLoop() {
        if let waiter = nodeWaiter {
            nodeWaiter = nil
            waiter.resume()
        } else {
            nodeWakePending = true
        }
    }

    /// Sleeps for `duration`, or less when `wakeNodeLoop` is called (or the task is cancelled).
    private func sleepOrNodeWake(_ duration: Duration) async {
        if nodeWakePending {
            nodeWakePending = false
            return
        }
        let timer = Task { [weak self] in
            try? await Task.sleep(for: duration)
            await self?.wakeNodeLoop()
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                if Task.isCancelled { c.resume() } else { nodeWaiter = c }
            }
        } onCancel: {
            Task { await self.wakeNodeLoop() }
        }
        timer.cancel()
        nodeWakePending = false
    }

    /// Watches this node's own Node object (`metadata.name=<node>`: one object, which the Node authorizer allows),
    /// so that a status the API holds and this node did not write (Unknown from the node controller, or a status
    /// lost while the cloud was away) is put right at once instead of at the next 5-minute report.
    private func nodeWatchLoop() async {
        guard let client else { return }
        let informer = Informer(client: client, resource: .nodes,
                                options: .init(fieldSelector: "metadata.name=\(config.nodeName)", pageSize: nil), logger: logger)
        await informer.run { @Sendable [weak self] event in
            switch event {
            case .replaced(let list): await self?.apiNodeChanged(list.first)
            case .added(let n), .modified(let n): await self?.apiNodeChanged(n)
            case .deleted: await self?.apiNodeChanged(nil)
            }
        }
    }

    private func apiNodeChanged(_ node: Node?) {
        apiNode = node
        trackAutonomy()
        guard let node, lastNodeStatus != nil, Self.conditionsDiffer(api: node.status, ours: lastNodeStatus) else { return }
        // At once, but not more than once a second: a write the API keeps answering differently (another writer of
        // the same condition) must not become a loop; the 10 s tick still catches it.
        if let last = lastNodeReport, ContinuousClock.now - last < .seconds(1) { return }
        wakeNodeLoop()
    }

    /// True when the API's node conditions are not the ones this node reported (status, reason or message of a
    /// condition type we report), ignoring heartbeat and transition times.
    static func conditionsDiffer(api: NodeStatus?, ours: NodeStatus?) -> Bool {
        let theirs = api?.conditions ?? []
        for c in ours?.conditions ?? [] {
            guard let t = theirs.first(where: { $0.type == c.type }) else { return true }
            if t.status != c.status || t.reason != c.reason || t.message != c.message { return true }
        }
        return false
    }

    func nodeLabels(_ reg: NodeRegistration) -> [String: String] {
        var labels = reg.labels
        labels["kubernetes.io/hostname"] = config.nodeName
        labels["kubernetes.io/os"] = "linux"
        labels["kubernetes.io/arch"] = NodeFacts.architecture
        labels["beta.kubernetes.io/os"] = "linux"
        labels["beta.kubernetes.io/arch"] = NodeFacts.architecture
        labels["node.kubernetes.io/edged"] = "true"
        if let pool = reg.nodePool, !pool.isEmpty { labels["apps.openyurt.io/nodepool"] = pool }
        return labels
    }

    private func registerNode() async throws {
        guard let client else { return }
        let reg = try NodeRegistration.load(dir: config.credentialsDir) ?? NodeRegistration()
        var annotations = ["node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"]
        // Autonomy as joined, only on the Node edged creates: once the Node exists the annotation is the operator's
        // (NodeRestriction restricts a node's own labels and taints, not its annotations).
        if let autonomy = reg.autonomy { annotations[NodeAutonomy.durationAnnotation] = autonomy }
        var meta = ObjectMeta(name: config.nodeName, labels: nodeLabels(reg), annotations: annotations)
        meta.name = config.nodeName
        let taints = try reg.taints.map { t throws(EdgedError) -> Taint in
            let p = try NodeRegistration.parseTaint(t)
            return Taint(key: p.key, value: p.value, effect: p.effect)
        }
        let node = Node(metadata: meta, spec: NodeSpec(taints: taints.isEmpty ? nil : taints))
        do {
            let created = try await client.create(.nodes, node)
            nodeUID = created.metadata.uid
            logger.info("registered node \(config.nodeName) (\(reg.autonomy.map { "\(NodeAutonomy.durationAnnotation)=\($0)" } ?? "not autonomous"))")
            await events?.nodeEvent(reason: "Starting", message: "Starting edged \(config.version).")
        } catch {
            guard let e = error as? KubeError, e.isAlreadyExists else { throw error }
            // Already there (re-join, restart): make its labels ours, keep everything else (the autonomy annotation too).
            var labels: [(String, JSONValue)] = []
            for (k, v) in nodeLabels(reg).sorted(by: { $0.key < $1.key }) { labels.append((k, .string(v))) }
            let patched = try await client.patch(.nodes, name: config.nodeName,
                                                 .merge(.object([("metadata", .object([("labels", .object(labels))]))])))
            nodeUID = patched.metadata.uid
            lastNodeStatus = patched.status
            logger.info("node \(config.nodeName) already registered; labels reconciled")
        }
        state.registered = true
    }

    func currentNodeStatus(previous: NodeStatus?) async -> NodeStatus {
        let now = Timestamp.now().rfc3339
        let mem = Files.meminfo()
        let disk = Files.diskSpace(config.stateDir)
        var capacity: [String: Quantity] = [
            "cpu": Quantity(String(NodeFacts.cpuCount)),
            "memory": Quantity("\((mem["MemTotal"] ?? 0) / 1024)Ki"),
            "pods": Quantity(String(config.maxPods)),
            "ephemeral-storage": Quantity("\(disk.total / 1024)Ki"),
        ]
        for (k, v) in config.extendedResources() { capacity[k] = v }
        var allocatable = capacity
        for (k, reserved) in config.systemReserved {
            guard let cap = capacity[k] else { continue }
            if k == "cpu", let c = try? cap.milliValue(), let r = try? reserved.milliValue() {
                allocatable[k] = Quantity("\(max(c - r, 0))m")
            } else if let c = try? cap.value(), let r = try? reserved.value() {
                allocatable[k] = Quantity(String(max(c - r, 0)))
            }
        }
        if let threshold = config.memoryEvictionThreshold, let memory = allocatable["memory"], let m = try? memory.value() {
            allocatable["memory"] = Quantity(String(max(m - threshold, 0)))
        }
        func condition(_ type: String, _ status: Bool, _ reason: String, _ message: String) -> NodeCondition {
            let before = previous?.conditions?.first { $0.type == type }
            let s = status ? "True" : "False"
            return NodeCondition(type: type, status: s, lastHeartbeatTime: now,
                                 lastTransitionTime: before?.status == s ? (before?.lastTransitionTime ?? now) : now,
                                 reason: reason, message: message)
        }
        let memPressure = config.memoryEvictionThreshold.map { (mem["MemAvailable"] ?? Int64.max) < $0 } ?? false
        let diskPressure = disk.total > 0 && Double(disk.free) / Double(disk.total) < 0.10
        let pids = NodeFacts.pids()
        let pidPressure = Double(pids.used) > Double(pids.max) * 0.9
        let net = await networkProblem()
        var conditions = [
            condition("MemoryPressure", memPressure, memPressure ? "KubeletHasInsufficientMemory" : "KubeletHasSufficientMemory",
                      memPressure ? "kubelet has insufficient memory available" : "kubelet has sufficient memory available"),
            condition("DiskPressure", diskPressure, diskPressure ? "KubeletHasDiskPressure" : "KubeletHasNoDiskPressure",
                      diskPressure ? "kubelet has disk pressure" : "kubelet has no disk pressure"),
            condition("PIDPressure", pidPressure, pidPressure ? "KubeletHasInsufficientPID" : "KubeletHasSufficientPID",
                      pidPressure ? "kubelet has insufficient PID available" : "kubelet has sufficient PID available"),
        ]
        if let net {
            conditions.append(condition("Ready", false, "KubeletNotReady",
                                        "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:\(net)"))
        } else {
            conditions.append(condition("Ready", true, "KubeletReady", "kubelet is posting ready status"))
        }
        let ips = NodeFacts.internalIPs(configured: config.nodeIP)
        objects?.setHostIPs(ips)
        var addresses = ips.map { NodeAddress(type: "InternalIP", address: $0) }
        addresses.append(NodeAddress(type: "Hostname", address: config.nodeName))
        let imageList = await images.list().map { img in
            ContainerImage(names: img.nodeImageNames, sizeBytes: img.size)
        }
        return NodeStatus(capacity: capacity, allocatable: allocatable, conditions: conditions, addresses: addresses,
                          daemonEndpoints: NodeDaemonEndpoints(kubeletEndpoint: DaemonEndpoint(port: config.kubeletPort)),
                          nodeInfo: NodeFacts.systemInfo(kubeletVersion: config.kubeletVersion,
                                                         runtimeVersion: "edged://\(config.version)"),
                          images: imageList)
    }

    /// Patches node status when something other than heartbeat times changed, when the report interval passed, or
    /// when the API's Node shows other conditions than we reported (then transition times are taken against the
    /// API's conditions, as kubelet sets them on the Node it read).
    private func updateNodeStatus() async throws {
        guard let client else { return }
        let apiDiffers = lastNodeStatus != nil && apiNode.map { Self.conditionsDiffer(api: $0.status, ours: lastNodeStatus) } == true
        let status = await currentNodeStatus(previous: apiDiffers ? apiNode?.status : lastNodeStatus)
        let due = lastNodeReport.map { ContinuousClock.now - $0 >= config.nodeStatusReportInterval } ?? true
        guard due || apiDiffers || !Self.sameIgnoringHeartbeat(status, lastNodeStatus) else { return }
        if apiDiffers {
            let ready = apiNode?.status?.conditions?.first { $0.type == "Ready" }
            logger.info("the API server shows node \(config.nodeName) Ready=\(ready?.status ?? "none")\(ready?.reason.map { " (\($0))" } ?? ""); reporting the node's status now")
        }
        let wasReady = (apiDiffers ? apiNode?.status : lastNodeStatus)?.conditions?.first { $0.type == "Ready" }?.status
        _ = try await client.patch(.nodeStatus, name: config.nodeName,
                                   try Patch.status(status, replacing: [lastNodeStatus]))
        let ready = status.conditions?.first { $0.type == "Ready" }?.status
        if ready == "True" && wasReady != "True" {
            await events?.nodeEvent(reason: "NodeReady", message: "Node \(config.nodeName) status is now: NodeReady")
        }
        lastNodeStatus = status
        lastNodeReport = .now
        state.lastNodeStatus = .now()
    }

    static func sameIgnoringHeartbeat(_ a: NodeStatus, _ b: NodeStatus?) -> Bool {
        guard var b else { return false }
        var a = a
        a.conditions = a.conditions?.map { var c = $0; c.lastHeartbeatTime = nil; return c }
        b.conditions = b.conditions?.map { var c = $0; c.lastHeartbeatTime = nil; return c }
        return a == b
    }

    // MARK: - Lease

    private func leaseLoop() async {
        guard let client, config.renewsLease else { return }
        var renewer = NodeLeaseRenewer(nodeName: config.nodeName, leaseDurationSeconds: config.leaseDurationSeconds)
        while !Task.isCancelled {
            do {
                try await renewer.renew(client, nodeUID: nodeUID)
                state.lastLeaseRenewal = .now()
                try? await Task.sleep(for: config.leaseRenewInterval)
            } catch {
                noteError("renewing lease kube-node-lease/\(config.nodeName)", error)
                try? await Task.sleep(for: .milliseconds(Int64.random(in: 200...1000)))
            }
        }
    }

    // MARK: - Pods from the API

    private func podSourceLoop() async {
        guard let client else { return }
        await Self.runPodInformer(self, client, nodeName: config.nodeName, logger: logger)
    }

    private static func runPodInformer(_ agent: ClusterAgent, _ client: KubeClient, nodeName: String, logger: Logger) async {
        let informer = Informer(client: client, resource: .pods,
                                options: .init(fieldSelector: FieldSelector.podsOnNode(nodeName)), logger: logger)
        await informer.run { @Sendable event in
            await agent.handle(event)
        }
    }

    private func handle(_ event: InformerEvent<Pod>) async {
        switch event {
        case .replaced(let list):
            known = [:]
            for p in list { if let uid = p.metadata.uid { known[uid] = p } }
            podsSynced = true
            objects?.tokens.retain(podUIDs: Set(known.keys))
        case .added(let p), .modified(let p):
            if let uid = p.metadata.uid { known[uid] = p }
        case .deleted(let p):
            if let uid = p.metadata.uid {
                known[uid] = nil
                written[uid] = nil
                objects?.tokens.forget(podUID: uid)
                refusedStatus[uid] = nil
                rewrittenAt[uid] = nil
                rejected[uid] = nil
            }
        }
        syncObjectWatches()
        trackAutonomy()
        await applyPods()
        wakeStatus.yield()
    }

    /// Feeds the pod manager: mirror pods are not run (their static pod is), terminal pods are not re-run, and
    /// pods that fail validation or admission are rejected with a status and an Event that name the problem.
    private func applyPods() async {
        var running: [DesiredPod] = []
        var new: [DesiredPod] = []
        for (uid, pod) in known.sorted(by: { ($0.value.metadata.creationTimestamp ?? "", $0.key) < ($1.value.metadata.creationTimestamp ?? "", $1.key) }) {
            if pod.metadata.annotations?["kubernetes.io/config.mirror"] != nil { continue }
            let active = await pods.isActive(uid: uid)
            if let phase = pod.status?.phase, phase == .succeeded || phase == .failed, !active { continue }
            if rejected[uid] != nil { continue }
            if active || pod.metadata.deletionTimestamp != nil {
                running.append(DesiredPod(pod: pod, source: "api"))
            } else {
                new.append(DesiredPod(pod: pod, source: "api"))
            }
        }
        // New pods are admitted in creation order against what already runs, like kubelet's admission handlers.
        var desired = running
        for d in new {
            if let why = await admit(d.pod, others: desired) {
                rejected[d.pod.metadata.uid ?? ""] = why.message
                await reject(d.pod, reason: why.reason, message: why.message)
                continue
            }
            desired.append(d)
        }
        await pods.apply(desired, origin: .api)
    }

    /// Validation (what kubelet would refuse to run) and resource admission against allocatable.
    func admit(_ pod: Pod, others: [DesiredPod]) async -> (reason: String, message: String)? {
        do {
            try Manifest.validate(pod, source: "pod \(pod.fullName)", apiObjects: true)
        } catch {
            return ("CreateContainerConfigError", error.message)
        }
        var allocatable = lastNodeStatus?.allocatable
        if allocatable == nil { allocatable = await currentNodeStatus(previous: nil).allocatable }
        guard let alloc = allocatable else { return nil }
        for resource in ["cpu", "memory", "nvidia.com/gpu"] {
            func amount(_ c: Container) -> Int64 {
                guard let q = c.resources?.requests?[resource] ?? c.resources?.limits?[resource] else { return 0 }
                return (resource == "cpu" ? try? q.milliValue() : try? q.value()) ?? 0
            }
            func requests(_ p: Pod) -> Int64 {
                let all = p.spec.containers.map(amount).reduce(0, +)
                let initMax = (p.spec.initContainers ?? []).map(amount).max() ?? 0
                return max(all, initMax)
            }
            let want = requests(pod)
            guard want > 0 else { continue }
            guard let capQ = alloc[resource] else {
                return ("UnexpectedAdmissionError", "Pod requests \(resource), which node \(config.nodeName) does not have")
            }
            let cap = (resource == "cpu" ? (try? capQ.milliValue()) : (try? capQ.value())) ?? 0
            let used = others.map { requests($0.pod) }.reduce(0, +)
            if used + want > cap {
                let name = resource == "nvidia.com/gpu" ? "nvidia.com/gpu" : resource
                return ("OutOf\(resource == "nvidia.com/gpu" ? "nvidia.com/gpu" : resource)",
                        "Node didn't have enough resource: \(name), requested: \(want), used: \(used), capacity: \(cap)")
            }
        }
        return nil
    }

    /// Writes a Failed status (admission) or a waiting status (invalid spec) and a Warning Event.
    private func reject(_ pod: Pod, reason: String, message: String) async {
        logger.warning("pod \(pod.fullName) cannot run: \(message)")
        var st = PodStatus(phase: reason.hasPrefix("OutOf") || reason == "UnexpectedAdmissionError" ? .failed : .pending)
        st.reason = reason
        st.message = message
        if st.phase == .pending {
            st.containerStatuses = pod.spec.containers.map { c in
                EdgedCore.ContainerStatus(name: c.name, state: ContainerState(waiting: .init(reason: reason, message: message)),
                                          image: c.image ?? "")
            }
        }
        st.hostIP = objects?.hostIPs.first
        st = Self.keepingAPIOwnedFields(st, of: pod)
        if let uid = pod.metadata.uid {
            let previous = written[uid]
            written[uid] = st
            events?.sink()(PodEvent(pod: pod, kind: .warning, reason: st.phase == .failed ? reason : "Failed", message: message))
            do {
                _ = try await client?.patch(.podStatus, namespace: pod.namespace, name: pod.name,
                                            try Patch.status(st, replacing: [pod.status, previous]))
            } catch {
                noteError("writing the status of pod \(pod.fullName)", error)
            }
        }
    }

    // MARK: - Pod status

    private func podStatusLoop() async {
        let ticker = Task { [interval = config.podStatusInterval, wake = wakeStatus] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                wake.yield()
            }
        }
        defer { ticker.cancel() }
        for await _ in statusWakes {
            if Task.isCancelled { break }
            await syncPodStatuses()
        }
    }

    private func syncPodStatuses() async {
        guard let client, podsSynced else { return }
        let hostIPs = objects?.hostIPs ?? []
        let statuses = await pods.apiStatuses(hostIPs: hostIPs, previous: written)
        refusedStatus = refusedStatus.filter { known[$0.key] != nil }
        for (uid, built) in statuses.sorted(by: { $0.key < $1.key }) {
            guard let pod = known[uid] else { continue }
            let status = Self.keepingAPIOwnedFields(built, of: pod)
            guard needsWrite(status, written: written[uid], uid: uid, pod: pod) else { continue }
            do {
                written[uid] = try await writePodStatus(client, pod: pod, uid: uid, status: status, previous: written[uid])
            } catch {
                if let e = error as? KubeError, e.isNotFound { known[uid] = nil; continue }
                noteError("writing the status of pod \(pod.fullName)", error)
            }
        }
        await syncMirrorPods(client, hostIPs: hostIPs)
        // Graceful deletions whose containers are gone: delete the object (kubelet's status manager does this).
        for (uid, pod) in known where pod.metadata.deletionTimestamp != nil && !deleting.contains(uid) {
            if await pods.isActive(uid: uid) { continue }
            deleting.insert(uid)
            do {
                _ = try await client.delete(.pods, namespace: pod.namespace, name: pod.name,
                                            options: DeleteOptions(gracePeriodSeconds: 0, preconditionUID: uid))
                logger.info("pod \(pod.fullName) terminated; deleted it from the API server")
            } catch {
                deleting.remove(uid)
                if let e = error as? KubeError, e.isNotFound || e.isConflict { known[uid] = nil; continue }
                noteError("deleting pod \(pod.fullName)", error)
            }
        }
        state.eventsSent = await events?.sent ?? 0
    }

    /// Status writes the API server refused (422 Invalid, 403 Forbidden), by pod UID: what was sent and the API's
    /// answer. A refused status is not sent again until it changes; `edgectl status` lists them.
    private var refusedStatus: [String: (pod: String, sent: PodStatus, message: String)] = [:]

    /// resourceVersion of the API pod whose diverging status was last written again, by pod UID.
    private var rewrittenAt: [String: String] = [:]

    /// Whether a pod's status must be written: it changed since the last write (and is not the one the API refused),
    /// or the API's copy no longer shows what we wrote: the node controller marks the pods of a node it lost touch
    /// with not Ready, and only the node's status undoes that, so, like kubelet's status manager, a status the API
    /// holds differently is written again (once per API version of the pod, so two writers cannot make a loop).
    private func needsWrite(_ status: PodStatus, written: PodStatus?, uid: String, pod: Pod) -> Bool {
        if refusedStatus[uid]?.sent == status { return false }
        if written != status { return true }
        guard Self.statusDiverged(api: pod.status, ours: status), let rv = pod.metadata.resourceVersion,
              rewrittenAt[uid] != rv else { return false }
        rewrittenAt[uid] = rv
        let ready = pod.status?.conditions?.first { $0.type == "Ready" }?.status ?? "none"
        logger.info("the API server shows pod \(pod.fullName) other than this node reported (Ready=\(ready)); writing its status again")
        return true
    }

    /// True when the API's phase or a condition this node reports (type → status) differs from ours.
    static func statusDiverged(api: PodStatus?, ours: PodStatus) -> Bool {
        guard let api else { return true }
        if api.phase != ours.phase { return true }
        for c in ours.conditions ?? [] where api.conditions?.first(where: { $0.type == c.type })?.status != c.status {
            return true
        }
        return false
    }

    /// What the API server owns in a pod's status is sent as the API has it: qosClass is set once at creation and
    /// is immutable (kubelet never recomputes it), so a node that classes a pod differently must not block the rest
    /// of the status with it.
    static func keepingAPIOwnedFields(_ status: PodStatus, of pod: Pod) -> PodStatus {
        var out = status
        if let qos = pod.status?.qosClass { out.qosClass = qos }
        return out
    }

    /// Patches one pod's status and returns what the API now holds from us. When the API refuses it as invalid
    /// (422), the fields it names are sent as the API holds them and the write is tried once more, so the rest of the
    /// status still reaches the cloud; a refusal (422 or 403) is logged once with the API's message, kept for
    /// `edgectl status` and not retried until the status changes. Other errors are thrown (retried next tick).
    private func writePodStatus(_ client: KubeClient, pod: Pod, uid: String, status: PodStatus,
                                previous: PodStatus?) async throws -> PodStatus? {
        func patch(_ st: PodStatus) async throws {
            _ = try await client.patch(.podStatus, namespace: pod.namespace, name: pod.name,
                                       try Patch.status(st, replacing: [pod.status, previous]))
        }
        do {
            try await patch(status)
            if refusedStatus.removeValue(forKey: uid) != nil {
                logger.info("the API server accepts the status of pod \(pod.fullName) again")
            }
            return status
        } catch let e as KubeError where e.isInvalid || e.isForbidden {
            let fields = e.status?.details?.causes?.compactMap(\.field) ?? []
            let reduced = APIPodStatus.keepingAPIValues(status, api: pod.status, fields: fields)
            var written = previous
            var message = e.message
            if e.isInvalid, reduced != status {
                do {
                    try await patch(reduced)
                    written = reduced
                    message += " (the rest of the status was written without \(fields.joined(separator: ", ")))"
                } catch let again as KubeError where again.isInvalid || again.isForbidden {
                    message = again.message
                }
            }
            if refusedStatus[uid]?.message != message {
                logger.warning("the API server refused the status of pod \(pod.fullName): \(message)")
            }
            refusedStatus[uid] = (pod.fullName, status, message)
            return written
        }
    }

    // MARK: - Mirror pods

    static let mirrorAnnotation = "kubernetes.io/config.mirror"
    private var mirrorWritten: [String: PodStatus] = [:]   // static UID → last status written to its mirror
    private var mirrorCreateFailedAt: [String: ContinuousClock.Instant] = [:]

    /// Gives every static pod a mirror pod in the API server (kubelet's mirror client): same name, spec and
    /// labels, annotation kubernetes.io/config.mirror = the static pod's UID, owned by the Node; writes the static
    /// pod's status to it; deletes mirror pods whose static pod is gone or changed.
    private func syncMirrorPods(_ client: KubeClient, hostIPs: [String]) async {
        let statics = await pods.staticPods()
        var mirrors: [String: Pod] = [:]    // static UID → mirror pod
        for pod in known.values {
            guard let hash = pod.metadata.annotations?[Self.mirrorAnnotation] else { continue }
            if statics[hash] != nil && pod.metadata.deletionTimestamp == nil {
                mirrors[hash] = pod
            } else if pod.metadata.deletionTimestamp == nil, let uid = pod.metadata.uid, !deleting.contains(uid) {
                deleting.insert(uid)
                _ = try? await client.delete(.pods, namespace: pod.namespace, name: pod.name,
                                             options: DeleteOptions(gracePeriodSeconds: 0, preconditionUID: uid))
            }
        }
        // Not before the Node is registered: NodeRestriction admits a mirror pod only with the Node as its owner
        // (kubelet's mirror client also waits for the node's UID).
        for (uid, pod) in statics where mirrors[uid] == nil && nodeUID != nil {
            if let failed = mirrorCreateFailedAt[uid], ContinuousClock.now - failed < .seconds(10) { continue }
            var mirror = pod
            mirror.status = nil
            mirror.metadata.uid = nil
            mirror.metadata.resourceVersion = nil
            mirror.spec.nodeName = config.nodeName
            var annotations = pod.metadata.annotations ?? [:]
            annotations[Self.mirrorAnnotation] = uid
            annotations["kubernetes.io/config.hash"] = uid
            annotations["kubernetes.io/config.source"] = "file"
            mirror.metadata.annotations = annotations
            if let nodeUID {
                mirror.metadata.ownerReferences = [OwnerReference(apiVersion: "v1", kind: "Node", name: config.nodeName,
                                                                  uid: nodeUID, controller: true)]
            }
            do {
                _ = try await client.create(.pods, namespace: pod.namespace, mirror)
                mirrorWritten[uid] = nil
                logger.info("created mirror pod \(pod.fullName)")
            } catch {
                mirrorCreateFailedAt[uid] = .now
                if let e = error as? KubeError, e.isAlreadyExists {
                    // A namesake that is not our mirror (or an old one): the informer will show it; try later.
                    continue
                }
                noteError("creating mirror pod \(pod.fullName)", error)
            }
        }
        let statuses = await pods.apiStatuses(hostIPs: hostIPs, previous: mirrorWritten, origin: .file)
        for (uid, built) in statuses {
            guard let mirror = mirrors[uid], let mirrorUID = mirror.metadata.uid else { continue }
            let status = Self.keepingAPIOwnedFields(built, of: mirror)
            guard needsWrite(status, written: mirrorWritten[uid], uid: mirrorUID, pod: mirror) else { continue }
            do {
                mirrorWritten[uid] = try await writePodStatus(client, pod: mirror, uid: mirrorUID, status: status,
                                                              previous: mirrorWritten[uid])
            } catch {
                noteError("writing the status of mirror pod \(mirror.fullName)", error)
            }
        }
    }

    // MARK: - ConfigMaps and secrets mounted by pods

    /// One watch per configMap/secret that a pod on this node refers to (ReferencedObjects.swift), so that an update
    /// reaches mounted volumes within seconds; never a cluster-wide list, which the Node authorizer refuses.
    private var objectWatches: ReferencedObjectWatches?

    /// Holds the per-object watches for as long as the agent runs; stops them all when it stops.
    private func objectWatchLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(3600))
        }
        objectWatches?.stopAll()
    }

    /// Starts and stops per-object watches to match what the known pods refer to (called on every pod change).
    private func syncObjectWatches() {
        guard let client, let objects else { return }
        let watches = objectWatches ?? ReferencedObjectWatches(client: client, objects: objects, logger: logger) {
            [weak self] ref in
            await self?.objectChanged(kind: ref.kind.rawValue, namespace: ref.namespace, name: ref.name)
        }
        objectWatches = watches
        var wanted: Set<PodObjectRef> = []
        for pod in known.values { wanted.formUnion(pod.referencedObjects) }
        watches.update(wanted)
    }

    /// The cache already holds the new content (the watch put it there): rewrite the volumes of the pods using it.
    private func objectChanged(kind: String, namespace: String, name: String) async {
        await pods.objectChanged(kind: kind, namespace: namespace, name: name)
    }

    // MARK: - Certificates

    /// Rotates the client certificate at its deadline (70–90 % of its lifetime, jittered); on failure keeps the
    /// current one and retries.
    private func rotationLoop(caPEM: String) async {
        var retry = Duration.seconds(30)
        while !Task.isCancelled {
            guard let contents = try? store.load(), let pair = contents.client else { return }
            let deadline = pair.info.rotationDeadline()
            let wait = deadline.timeIntervalSinceNow
            if wait > 0 {
                try? await Task.sleep(for: .seconds(min(wait, 3600)))
                continue
            }
            do {
                try await rotateClient(caPEM: caPEM)
                retry = .seconds(30)
                // A signer that backdates notBefore (kube-controller-manager backdates 5 min) and issues very short
                // certificates can put the next deadline in the past too: never rotate more than every 5 s.
                try? await Task.sleep(for: .seconds(5))
            } catch {
                noteError("rotating the client certificate (the current one stays in use)", error)
                try? await Task.sleep(for: retry)
                retry = min(retry * 2, .seconds(900))
            }
        }
    }

    func rotateClient(caPEM: String) async throws {
        guard let client else { return }
        let key = NodeKey.generate()
        let csr = try NodeCSR.client(nodeName: config.nodeName, key: key)
        let (name, pem) = try await CSRFlow.request(client, csr: csr, timeoutSeconds: 900, what: "client certificate",
                                                    nextStep: "edged keeps the current certificate and asks again with a new CSR",
                                                    logger: logger)
        let info = try CertificateInfo(pem: pem, source: "CSR \(name)")
        guard info.matches(key) else { throw EdgedError(.invalidConfig, "CSR \(name) answered with a certificate for another key") }
        try info.verify(issuedBy: caPEM)
        _ = try store.save(.client, certificatePEM: pem, key: key)
        try client.updateCredentials(.clientCertificate(certificatePEM: pem, privateKeyPEM: key.pem))
        state.certificateNotAfter = Bootstrapper.rfc3339(info.notAfter)
        logger.info("rotated the client certificate (valid until \(Bootstrapper.rfc3339(info.notAfter)))")
    }

    /// The kubelet serving certificate (signer kubernetes.io/kubelet-serving), asked for until one is issued (see
    /// `CSRFlow.obtainServingCertificate`). Meanwhile the kubelet API serves its self-signed certificate and
    /// `state.servingCSR` names the CSR to approve.
    private func servingCertificateLoop() async {
        guard let client else { return }
        var ips = NodeFacts.internalIPs(configured: config.nodeIP)
        for ip in config.extraServingIPs where !ips.contains(ip) { ips.append(ip) }
        await CSRFlow.obtainServingCertificate(
            client, store: store, nodeName: config.nodeName, ipAddresses: ips, logger: logger,
            pending: { [weak self] name in await self?.setServingCSR(name) },
            failed: { [weak self] error in await self?.noteError("getting a serving certificate", error) })
    }

    private func setServingCSR(_ name: String?) { state.servingCSR = name }
}

extension StoredImage {
    /// Names as kubelet lists them in node.status.images: repo@digest and every tag.
    var nodeImageNames: [String] {
        var names = references
        if let first = references.first {
            names.append("\(APIPodStatus.repository(of: first))@\(manifestDigest)")
        }
        return names
    }
}
