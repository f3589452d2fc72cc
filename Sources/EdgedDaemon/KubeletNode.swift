// The node side of the kubelet API: pods, logs, exec, port-forward and stats over the pod manager and the runtime.

import EdgedCore
import EdgedKube
import EdgedKubeletAPI
import EdgedNode
import EdgedRuntime
import Synchronization

/// A failure of the node side that is not "not found": the kubelet API answers 500 with the message.
struct KubeletNodeError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// `KubeletBackend` over EdgedNode's `PodManager` and EdgedRuntime's `ContainerRuntime`.
///
/// Pods are found by namespace and name (a static pod also by its manifest name, without the node suffix, as
/// `edgectl logs` accepts); a UID in the request that is not the pod's is "not found", like kubelet. CPU rates
/// (`usageNanoCores`) come from the previous `/stats/summary` sample of the same node, pod or container.
public final class KubeletNode: KubeletBackend {
    private let nodeName: String
    private let pods: PodManager
    private let runtime: ContainerRuntime
    private let hostIPs: @Sendable () -> [String]
    /// Cumulative CPU and time of the last stats sample, by "node", "pod/UID" or container id.
    private let lastCPU = Mutex<[String: (time: Timestamp, nanos: UInt64)]>([:])

    /// `hostIPs`: the node's addresses (status.hostIP and hostNetwork pods' IPs in `/pods`).
    public init(nodeName: String, pods: PodManager, runtime: ContainerRuntime,
                hostIPs: @escaping @Sendable () -> [String] = { [] }) {
        self.nodeName = nodeName
        self.pods = pods
        self.runtime = runtime
        self.hostIPs = hostIPs
    }

    // MARK: Pods and logs

    public func podList() async -> JSONValue {
        var items: [JSONValue] = []
        for view in await pods.kubeletPods(hostIPs: hostIPs()) {
            var pod = view.pod
            if pod.spec.nodeName == nil { pod.spec.nodeName = nodeName }
            if let value = try? KubeJSON.value(of: pod) { items.append(value) }
        }
        return .object([("kind", .string("PodList")), ("apiVersion", .string("v1")), ("metadata", .object([])),
                        ("items", .array(items))])
    }

    /// The same lookup as `edgectl logs` (PodManager.logPath), plus the UID check.
    public func logPath(_ ref: ContainerRef, previous: Bool) async throws -> String {
        if ref.uid != nil { _ = try await pod(namespace: ref.namespace, name: ref.pod, uid: ref.uid) }
        return try await pods.logPath(namespace: ref.namespace, pod: ref.pod, container: ref.container, previous: previous)
    }

    private func pod(namespace: String, name: String, uid: String?) async throws -> KubeletPodView {
        let all = await pods.kubeletPods(hostIPs: [])
        let match = all.first { $0.pod.namespace == namespace && $0.pod.name == name }
            ?? all.first { $0.pod.namespace == namespace && $0.pod.name == "\(name)-\(nodeName)" }
        guard let match, uid == nil || uid == match.uid else {
            let which = uid.map { " with UID \($0)" } ?? ""
            throw EdgedError(.notFound, "pod \(namespace)/\(name)\(which) not found on node \(nodeName)")
        }
        return match
    }

    // MARK: Exec and port-forward

    public func exec(_ ref: ContainerRef, command: [String], stdin: Bool, tty: Bool) async throws -> ContainerProcess {
        let view = try await pod(namespace: ref.namespace, name: ref.pod, uid: ref.uid)
        guard let c = view.containers.first(where: { $0.name == ref.container }) else {
            let names = view.containers.map(\.name).joined(separator: ", ")
            throw EdgedError(.notFound, "container \(ref.container) is not valid for pod \(view.pod.fullName) (containers: \(names))")
        }
        guard !command.isEmpty else { throw KubeletNodeError(message: "exec in \(ref): no command given") }
        guard let info = c.current, info.status.isRunning else {
            throw KubeletNodeError(message: "cannot exec in \(ref): the container is not running (\(Self.state(of: c.current))); exec needs a running container")
        }
        let p: ExecProcess
        do {
            p = try await runtime.startExec(id: info.spec.id, argv: command, stdin: stdin, tty: tty)
        } catch {
            if (error as? RuntimeError)?.code == .notFound { throw EdgedError(.notFound, "\(ref) not found on node \(nodeName)") }
            throw KubeletNodeError(message: "\(error)")
        }
        return ContainerProcess(stdin: p.stdin, stdout: p.stdout, stderr: p.stderr, tty: p.tty,
                                resize: { w, h in p.resize(width: w, height: h) },
                                wait: { await p.wait() }, terminate: { p.terminate() })
    }

    private static func state(of info: ContainerInfo?) -> String {
        guard let info else { return "it has not started yet" }
        switch info.status {
        case .running: return "running"
        case let .exited(code, _, _, _, _, _): return "it exited with code \(code)"
        }
    }

    public func portForward(namespace: String, pod name: String, uid: String?, port: UInt16) async throws -> Int32 {
        let view = try await pod(namespace: namespace, name: name, uid: uid)
        guard let sandbox = await runtime.sandbox(podUID: view.uid) else {
            throw KubeletNodeError(message: "port-forward to pod \(view.pod.fullName): its sandbox is not ready (the pod is starting or ending)")
        }
        do {
            return try await NetworkNamespace.connectTCP(netnsPath: sandbox.hostNetwork ? nil : sandbox.netns,
                                                         host: "127.0.0.1", port: port)
        } catch {
            throw KubeletNodeError(message: "port-forward to port \(port) of pod \(view.pod.fullName): \(error)")
        }
    }

    // MARK: Stats

    /// One CPU/memory sample of a container, a pod or the node.
    private struct Usage {
        var stats: ResourceStats
        var time: Timestamp
    }

    private struct ContainerUsage {
        var name: String
        var startedAt: Timestamp
        var usage: Usage
    }

    private struct PodUsage {
        var view: KubeletPodView
        var containers: [ContainerUsage]
    }

    /// Running containers' cgroup figures, grouped by pod (pods without a running container are left out).
    private func sample() async -> (node: Usage, pods: [PodUsage]) {
        var out: [PodUsage] = []
        for view in await pods.kubeletPods(hostIPs: []) {
            var containers: [ContainerUsage] = []
            for c in view.containers {
                guard let info = c.current, case .running(_, let startedAt) = info.status,
                      let stats = await runtime.stats(id: info.spec.id) else { continue }
                containers.append(ContainerUsage(name: c.name, startedAt: startedAt, usage: Usage(stats: stats, time: .now())))
            }
            if !containers.isEmpty { out.append(PodUsage(view: view, containers: containers)) }
        }
        return (Usage(stats: ResourceStats.node(), time: .now()), out)
    }

    public func statsSummary() async throws -> JSONValue {
        let (node, podUsages) = await sample()
        var nodeObject: [(String, JSONValue)] = [("nodeName", .string(nodeName))]
        nodeObject.append(("cpu", cpu(node, key: "node")))
        nodeObject.append(("memory", memory(node)))
        var podItems: [JSONValue] = []
        for p in podUsages {
            var containers: [JSONValue] = []
            var podStats = ResourceStats(cpuUsageNanos: 0, memoryUsageBytes: 0, memoryWorkingSetBytes: 0)
            for c in p.containers {
                containers.append(.object([("name", .string(c.name)), ("startTime", .string(c.startedAt.rfc3339)),
                                           ("cpu", cpu(c.usage, key: "\(p.view.uid)/\(c.name)")),
                                           ("memory", memory(c.usage))]))
                podStats.cpuUsageNanos = Self.sum(podStats.cpuUsageNanos, c.usage.stats.cpuUsageNanos)
                podStats.memoryUsageBytes = Self.sum(podStats.memoryUsageBytes, c.usage.stats.memoryUsageBytes)
                podStats.memoryWorkingSetBytes = Self.sum(podStats.memoryWorkingSetBytes, c.usage.stats.memoryWorkingSetBytes)
            }
            let podUsage = Usage(stats: podStats, time: p.containers.map(\.usage.time).max() ?? .now())
            var item: [(String, JSONValue)] = [("podRef", .object([("name", .string(p.view.pod.name)),
                                                                    ("namespace", .string(p.view.pod.namespace)),
                                                                    ("uid", .string(p.view.uid))]))]
            if let start = p.view.pod.status?.startTime { item.append(("startTime", .string(start))) }
            item += [("containers", .array(containers)), ("cpu", cpu(podUsage, key: "pod/\(p.view.uid)")),
                     ("memory", memory(podUsage))]
            podItems.append(.object(item))
        }
        forgetSamples(keeping: Set(["node"] + podUsages.flatMap { p in
            ["pod/\(p.view.uid)"] + p.containers.map { "\(p.view.uid)/\($0.name)" }
        }))
        return .object([("node", .object(nodeObject)), ("pods", .array(podItems))])
    }

    private static func sum(_ a: UInt64?, _ b: UInt64?) -> UInt64? {
        guard let a, let b else { return nil }
        return a + b
    }

    /// {time, usageNanoCores, usageCoreNanoSeconds}; the rate needs an earlier sample of the same key.
    private func cpu(_ u: Usage, key: String) -> JSONValue {
        var members: [(String, JSONValue)] = [("time", .string(u.time.rfc3339))]
        guard let nanos = u.stats.cpuUsageNanos else { return .object(members) }
        let previous = lastCPU.withLock { samples in
            defer { samples[key] = (u.time, nanos) }
            return samples[key]
        }
        if let previous, u.time.nanoseconds > previous.time.nanoseconds, nanos >= previous.nanos {
            let elapsed = Double(u.time.nanoseconds - previous.time.nanoseconds)
            let rate = Double(nanos - previous.nanos) / elapsed * 1_000_000_000
            members.append(("usageNanoCores", .number(String(UInt64(rate)))))
        }
        members.append(("usageCoreNanoSeconds", .number(String(nanos))))
        return .object(members)
    }

    private func memory(_ u: Usage) -> JSONValue {
        var members: [(String, JSONValue)] = [("time", .string(u.time.rfc3339))]
        if let a = u.stats.memoryAvailableBytes { members.append(("availableBytes", .number(String(a)))) }
        if let b = u.stats.memoryUsageBytes { members.append(("usageBytes", .number(String(b)))) }
        if let w = u.stats.memoryWorkingSetBytes { members.append(("workingSetBytes", .number(String(w)))) }
        return .object(members)
    }

    private func forgetSamples(keeping keys: Set<String>) {
        lastCPU.withLock { samples in
            for key in samples.keys where !keys.contains(key) { samples[key] = nil }
        }
    }

    public func resourceUsage() async throws -> NodeResourceUsage {
        let (node, podUsages) = await sample()
        func figures(_ s: ResourceStats) -> NodeResourceUsage.Sample {
            NodeResourceUsage.Sample(cpuSeconds: Double(s.cpuUsageNanos ?? 0) / 1_000_000_000,
                                     memoryWorkingSetBytes: s.memoryWorkingSetBytes ?? 0)
        }
        var containers: [NodeResourceUsage.Container] = []
        for p in podUsages {
            for c in p.containers {
                containers.append(NodeResourceUsage.Container(namespace: p.view.pod.namespace, pod: p.view.pod.name,
                                                              name: c.name, usage: figures(c.usage.stats)))
            }
        }
        return NodeResourceUsage(timestampMillis: node.time.nanoseconds / 1_000_000, node: figures(node.stats),
                                 containers: containers)
    }
}
