// The daemon's side of the control API: answers edgectl from the pod manager and the image store.

import EdgedCluster
import EdgedControl
import EdgedCore
import EdgedImages
import EdgedNode
import EdgedRuntime
import Glibc

struct DaemonBackend: ControlBackend {
    let config: EdgedConfig
    let nodeName: String
    let pods: PodManager
    let images: ImageStore
    let runtime: ContainerRuntime
    let errors: ErrorLog
    let startedAt: Timestamp
    let startedClock: ContinuousClock.Instant
    let membership: ClusterMembership
    /// The kubelet API and the tunnel, for the status screen.
    var remote = RemoteAccessState()

    func status() async -> StatusReport {
        let podList = await pods.summaries()
        let imageList = await images()
        let node = HostStats.node(stateDir: config.stateDir)
        let daemon = DaemonStats(rssBytes: Files.rssBytes(pid: getpid()), monitorsRSSBytes: await runtime.monitorsRSSBytes(),
                                 threads: HostStats.threads(), openFiles: HostStats.openFiles())
        var reasons = HealthCheck.reasons(pods: podList, manifestErrors: await pods.currentManifestErrors, node: node)
        if let why = HealthCheck.stateDirProblem(config.stateDir) { reasons.append(why) }
        let up = ContinuousClock.now - startedClock
        var cluster: ClusterReport?
        if let why = await membership.agentError {
            reasons.append("the node agent stopped: \(why)")
        }
        if membership.agent.isJoined {
            var s = await membership.agent.snapshot
            let hub = await membership.hub?.snapshot
            if let hub { s.lastLeaseRenewal = hub.lastLeaseRenewal }
            let age = s.lastLeaseRenewal.map { Timestamp.now().seconds - $0.seconds }
            cluster = ClusterReport(server: s.server, registered: s.registered, lastLeaseRenewal: s.lastLeaseRenewal?.rfc3339,
                                    lastNodeStatus: s.lastNodeStatus?.rfc3339, leaseAgeSeconds: age, lastError: s.lastError,
                                    apiPods: s.apiPods, certificateNotAfter: s.certificateNotAfter, eventsSent: s.eventsSent)
            if let hub {
                cluster?.hub = HubWiring.report(hub)
                if hub.cloud.state == .offline {
                    let age = Timestamp.now().seconds - hub.cloud.since.seconds
                    reasons.append("the cloud (API server \(s.server)) has been unreachable for \(age) s (since \(hub.cloud.since.rfc3339))\(hub.cloud.lastError.map { ": \($0)" } ?? ""); pods keep running from the hub's cache and \(hub.queuedWrites) write(s) wait to be sent — check the uplink")
                }
            }
            cluster?.kubeletAPI = await remote.kubeletAPIReport(servingCSR: s.servingCSR)
            if let (tunnel, downFor) = await remote.tunnelReport() {
                cluster?.tunnel = tunnel
                // A short gap is a reconnect; a minute without any server means kubectl logs/exec cannot reach us.
                if let downFor, downFor > .seconds(60) {
                    reasons.append("the tunnel to \(tunnel.server) has been down for \(downFor.components.seconds) s\(tunnel.lastError.map { ": \($0)" } ?? ""); kubectl logs/exec/port-forward cannot reach this node — check that outbound TCP to \(tunnel.server) is allowed and the tunnel server runs")
                }
            }
            if let autonomy = s.autonomy {
                cluster?.autonomy = autonomy
                reasons += autonomy.problems(nodeName: nodeName)
            }
            for refused in s.refusedStatusWrites {
                reasons.append("the API server refused the status of \(refused) — the pod runs here, but kubectl shows what the API accepted; pass this line to the cluster admin (an admission policy refuses it, or it is an edged bug)")
            }
            if hub?.cloud.state != .offline { reasons += HealthCheck.clusterReasons(s, leaseAge: age, uptimeSeconds: up.components.seconds,
                                                  leaseDuration: Int64(config.cluster.leaseDurationSeconds)) }
        }
        var report = StatusReport(healthy: reasons.isEmpty, reasons: reasons, mode: cluster == nil ? "standalone" : "joined", version: EdgedVersion.string,
                            nodeName: nodeName, pid: getpid(), startedAt: startedAt.rfc3339, uptimeSeconds: up.components.seconds,
                            stateDir: config.stateDir, manifestDir: config.manifestDir, pods: podList, images: imageList,
                            node: node, daemon: daemon,
                            lastErrors: errors.recent(10).map { ErrorEntry(time: $0.time.rfc3339, subject: $0.subject, message: $0.message) })
        report.cluster = cluster
        return report
    }

    func join(_ request: JoinRequest) async throws -> JoinResponse {
        try await membership.join(request)
    }

    func pods() async -> [PodSummary] { await pods.summaries() }

    func images() async -> [ImageInfo] {
        let inUse = await pods.imagesInUse()
        return await images.list().map { Self.info($0, inUse: inUse) }
    }

    static func info(_ i: StoredImage, inUse: Set<String>) -> ImageInfo {
        ImageInfo(references: i.references, digest: i.manifestDigest, size: i.size, architecture: i.architecture, os: i.os,
                  inUse: inUse.contains(i.manifestDigest))
    }

    func importImage(path: String) async throws -> [ImageInfo] {
        do {
            let imported = try await images.importArchive(at: path)
            let inUse = await pods.imagesInUse()
            return imported.map { Self.info($0, inUse: inUse) }
        } catch {
            errors.record("image archive \(path)", "\(error)")
            throw ControlError(status: 400, message: "\(error)")
        }
    }

    func pullImage(reference: String) async throws -> ImageInfo {
        do {
            let image = try await images.pull(reference)
            return Self.info(image, inUse: await pods.imagesInUse())
        } catch {
            errors.record("image \(reference)", "\(error)")
            throw ControlError(status: 502, message: "\(error)")
        }
    }

    func removeImage(reference: String) async throws {
        guard let image = await images.resolve(reference) else {
            throw ControlError(status: 404, message: "image \(reference) not found (see `edgectl images`)")
        }
        if await pods.imagesInUse().contains(image.manifestDigest) {
            throw ControlError(status: 409, message: "image \(reference) is used by a running pod; remove the pod's manifest first")
        }
        do { try await images.remove(reference) } catch {
            throw ControlError(status: 500, message: "\(error)")
        }
    }

    func pruneImages() async throws -> [String] {
        do {
            return try await images.garbageCollect(inUse: await pods.imagesInUse()).removed
        } catch {
            throw ControlError(status: 500, message: "\(error)")
        }
    }

    func logPath(namespace: String, pod: String, container: String?, previous: Bool) async throws -> String {
        do {
            return try await pods.logPath(namespace: namespace, pod: pod, container: container, previous: previous)
        } catch {
            throw ControlError(status: 404, message: error.message)
        }
    }
}

/// Decides whether the node needs a person, and says what to do about it.
enum HealthCheck {
    /// A lease older than its duration means the control plane will mark the node NotReady.
    static func clusterReasons(_ s: ClusterState, leaseAge: Int64?, uptimeSeconds: Int64, leaseDuration: Int64) -> [String] {
        let stale = leaseAge.map { $0 > leaseDuration } ?? (uptimeSeconds > leaseDuration)
        guard stale else { return [] }
        let since = leaseAge.map { "for \($0) s" } ?? "since edged started"
        return ["the API server at \(s.server) has not been reached \(since)\(s.lastError.map { " (\($0))" } ?? ""): check the uplink and `edgectl status --json`; pods keep running"]
    }

    static func reasons(pods: [PodSummary], manifestErrors: [String: String], node: NodeStats) -> [String] {
        var out: [String] = []
        for (file, message) in manifestErrors.sorted(by: { $0.key < $1.key }) {
            out.append("manifest \(file) is invalid: \(message) — fix the file; the other pods keep running")
        }
        for p in pods where p.reason != "Terminating" {   // going away as asked: nothing to fix
            let subject = "pod \(p.namespace)/\(p.name)"
            switch p.reason {
            case "CrashLoopBackOff", "Error", "OOMKilled", "RunContainerError", "StartError":
                out.append("\(subject) is \(p.reason!) (restarts: \(p.restarts)) — see `edgectl logs \(p.namespace)/\(p.name)`")
            case "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull":
                out.append("\(subject) cannot get its image (\(p.reason!)) — check the uplink or import it with `edgectl images import FILE`")
            case "CreateContainerConfigError", "CreatePodSandboxError":
                out.append("\(subject): \(p.reason!): \(p.containers.compactMap(\.message).first ?? p.message ?? "") — fix the manifest")
            default:
                if p.phase == "Failed" {
                    out.append("\(subject) failed: \(p.message ?? "a container exited with an error") — see `edgectl logs \(p.namespace)/\(p.name)`")
                } else if let r = p.reason, r.hasPrefix("Init:"), r.contains("Error") || r.contains("BackOff") {
                    out.append("\(subject) is stuck initialising (\(r)) — see `edgectl logs \(p.namespace)/\(p.name) -c INIT-CONTAINER`")
                }
            }
        }
        if node.diskTotalBytes > 0 && node.diskFreeBytes * 10 < node.diskTotalBytes {
            out.append("disk almost full: \(node.diskFreeBytes >> 20) MiB free of \(node.diskTotalBytes >> 20) MiB where the state dir is — run `edgectl images prune` or free space")
        }
        if node.memoryTotalBytes > 0 && node.memoryAvailableBytes * 20 < node.memoryTotalBytes {
            out.append("memory almost exhausted: \(node.memoryAvailableBytes >> 20) MiB available — check the pods' memory limits")
        }
        return out
    }

    /// Why edged cannot write its state dir (read-only file system, no permission), nil when it can. Running pods
    /// are not affected, but new pods, restarts and records of changes fail until it is fixed.
    static func stateDirProblem(_ stateDir: String) -> String? {
        guard access(stateDir, W_OK) != 0 else { return nil }
        let err = errno
        if err == EROFS {
            return "the state dir \(stateDir) is on a read-only file system: running pods carry on, but edged cannot start or restart pods or record changes — remount it read-write (a file system turns read-only after disk errors: check `dmesg`)"
        }
        return "cannot write the state dir \(stateDir): \(String(cString: strerror(err))) — check that it exists and belongs to root"
    }
}
