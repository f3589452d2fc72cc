// The node lifecycle controller of kube-controller-manager, as far as a node sees it.
//
// Copied from pkg/controller/nodelifecycle/node_lifecycle_controller.go (tryUpdateNodeHealth, the NoExecute and
// NoSchedule tainting passes): every monitorPeriod each Node is checked; it counts as heard from when the
// lastHeartbeatTime of its Ready condition changes or its Lease kube-node-lease/<name> gets a newer renewTime (the
// time is when the controller saw the change, not the node's clock). When it was not heard from for gracePeriod
// (startupGracePeriod while it has never posted a Ready condition), its Ready, MemoryPressure, DiskPressure and
// PIDPressure conditions become status Unknown, reason NodeStatusUnknown, message "Kubelet stopped posting node
// status." (a missing one is added with NodeStatusNeverUpdated / "Kubelet never posted node status."),
// lastTransitionTime now, lastHeartbeatTime kept. Taints follow the Ready condition: Unknown → 
// node.kubernetes.io/unreachable NoSchedule + NoExecute, False → node.kubernetes.io/not-ready NoSchedule + NoExecute
// (each with timeAdded), True → neither. A renewed Lease alone does not make the node Ready: only the node posting
// its status does. It runs while the server is stop()ped (the real controller does not stop when a node loses its
// connection), and ends with shutdown().
// When a pass takes Ready from True to Unknown, the Ready condition of every pod bound to the node is set to False
// (MarkPodsNotReady).
// Each pass ends with a pass of the taint-eviction controller (Options.taintEviction; KubeAPIServer+TaintEviction.swift),
// which deletes the pods whose NoExecute tolerations ran out.
// NOT copied: no zone-disruption rate limiting, no node deletion.

import Foundation

extension KubeAPIServer {
    /// Settings of the node lifecycle controller (kube-controller-manager's --node-monitor-period,
    /// --node-monitor-grace-period and --node-startup-grace-period).
    public struct NodeLifecycleOptions: Sendable {
        public var monitorPeriod: Duration
        public var gracePeriod: Duration
        public var startupGracePeriod: Duration

        public init(monitorPeriod: Duration = .seconds(5), gracePeriod: Duration = .seconds(50),
                    startupGracePeriod: Duration = .seconds(60)) {
            self.monitorPeriod = monitorPeriod
            self.gracePeriod = gracePeriod
            self.startupGracePeriod = startupGracePeriod
        }
    }

    /// Runs one pass of the node lifecycle controller now (tests that do not want to wait for the timer).
    public func runNodeLifecyclePass() {
        guard let o = core.options.nodeLifecycle else { return }
        core.store.lock.withLock { core.nodeLifecyclePass(o, now: Date()) }
    }
}

/// What the controller remembers of each node (nodeHealthMap in the real one).
final class NodeHealthState: @unchecked Sendable {
    struct Entry {
        var probe: Date
        var heartbeat: KJSON?
        var leaseRenew: String?
    }
    var entries: [String: Entry] = [:]
    /// The taint-eviction controller's memory (KubeAPIServer+TaintEviction.swift).
    let taintEviction = TaintEvictionState()
}

extension KubeAPIServerCore {
    static let nodes = KubeResource.find(kind: "Node")!
    static let leases = KubeResource.find(kind: "Lease")!
    static let watchedConditions = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"]

    /// Starts the controller's timer (nil when it is off).
    func startNodeLifecycle() -> Task<Void, Never>? {
        guard let o = options.nodeLifecycle else { return nil }
        return Task { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: o.monitorPeriod)
                if Task.isCancelled { return }
                store.lock.withLock { nodeLifecyclePass(o, now: Date()) }
            }
        }
    }

    /// One monitor pass over every Node. The store lock must be held.
    func nodeLifecyclePass(_ o: KubeAPIServer.NodeLifecycleOptions, now: Date) {
        var seen = Set<String>()
        for (_, node) in store.all(Self.nodes, namespace: nil) {
            guard let name = node[path: ["metadata", "name"]]?.string else { continue }
            seen.insert(name)
            let conditions = node[path: ["status", "conditions"]]?.array ?? []
            let ready = conditions.first { $0["type"]?.string == "Ready" }
            let heartbeat = ready?["lastHeartbeatTime"]
            let renew = store.get(Self.leases, namespace: "kube-node-lease", name: name)?[path: ["spec", "renewTime"]]?.string
            var entry = nodeHealth.entries[name] ?? .init(probe: now, heartbeat: heartbeat, leaseRenew: renew)
            if entry.heartbeat != heartbeat { entry.heartbeat = heartbeat; entry.probe = now }
            if let renew, renew != entry.leaseRenew { entry.leaseRenew = renew; entry.probe = now }
            nodeHealth.entries[name] = entry

            var updated = node
            let grace = ready == nil ? o.startupGracePeriod : o.gracePeriod
            let graceSeconds = Double(grace.components.seconds) + Double(grace.components.attoseconds) / 1e18
            if now.timeIntervalSince(entry.probe) > graceSeconds {
                updated[path: ["status", "conditions"]] = .array(Self.markUnknown(conditions, node: node, now: now))
            }
            updated = Self.taintForReadiness(updated, now: now)
            if updated != node {
                store.commit(.modified, Self.nodes, namespace: nil, name: name, object: updated)
            }
            // MarkPodsNotReady: this pass took Ready from True to Unknown (a node that reports False itself looks
            // after its pods).
            let current = (updated[path: ["status", "conditions"]]?.array ?? []).first { $0["type"]?.string == "Ready" }
            if ready?["status"]?.string == "True", current?["status"]?.string != "True" { markPodsNotReady(node: name, now: now) }
        }
        for gone in Set(nodeHealth.entries.keys).subtracting(seen) { nodeHealth.entries[gone] = nil }
        evictPodsPastTolerations(now: now)
    }

    private static func markUnknown(_ conditions: [KJSON], node: KJSON, now: Date) -> [KJSON] {
        var out = conditions
        let stamp = KJSON.string(timestamp(now))
        for type in watchedConditions {
            if let i = out.firstIndex(where: { $0["type"]?.string == type }) {
                guard out[i]["status"]?.string != "Unknown" else { continue }
                out[i]["status"] = .string("Unknown")
                out[i]["reason"] = .string("NodeStatusUnknown")
                out[i]["message"] = .string("Kubelet stopped posting node status.")
                out[i]["lastTransitionTime"] = stamp
            } else {
                out.append(.object([
                    "type": .string(type), "status": .string("Unknown"), "reason": .string("NodeStatusNeverUpdated"),
                    "message": .string("Kubelet never posted node status."),
                    "lastHeartbeatTime": node[path: ["metadata", "creationTimestamp"]] ?? stamp,
                    "lastTransitionTime": stamp,
                ]))
            }
        }
        return out
    }

    /// The unreachable / not-ready taints (NoSchedule and NoExecute) that match the Ready condition.
    private static func taintForReadiness(_ node: KJSON, now: Date) -> KJSON {
        let ready = (node[path: ["status", "conditions"]]?.array ?? []).first { $0["type"]?.string == "Ready" }
        let wanted: String? = switch ready?["status"]?.string {
        case "Unknown": "node.kubernetes.io/unreachable"
        case "False": "node.kubernetes.io/not-ready"
        default: nil
        }
        let managed = ["node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"]
        let taints = node[path: ["spec", "taints"]]?.array ?? []
        var out = taints.filter { t in
            guard let key = t["key"]?.string, managed.contains(key) else { return true }
            return key == wanted
        }
        if let wanted {
            for effect in ["NoSchedule", "NoExecute"]
            where !out.contains(where: { $0["key"]?.string == wanted && $0["effect"]?.string == effect }) {
                out.append(.object(["key": .string(wanted), "effect": .string(effect), "timeAdded": .string(timestamp(now))]))
            }
        }
        guard out != taints else { return node }
        var n = node
        n[path: ["spec", "taints"]] = out.isEmpty ? nil : .array(out)
        return n
    }

    /// Sets the Ready condition of every pod bound to the node to False (lastTransitionTime now), as the real
    /// controller's MarkPodsNotReady does; the node has to post its pods' status again once it is back.
    func markPodsNotReady(node: String, now: Date) {
        for pod in podsOnNode(node) {
            var conditions = pod[path: ["status", "conditions"]]?.array ?? []
            guard let i = conditions.firstIndex(where: { $0["type"]?.string == "Ready" }),
                  conditions[i]["status"]?.string != "False" else { continue }
            conditions[i]["status"] = .string("False")
            conditions[i]["lastTransitionTime"] = .string(Self.timestamp(now))
            var updated = pod
            updated[path: ["status", "conditions"]] = .array(conditions)
            store.commit(.modified, Self.pods, namespace: pod[path: ["metadata", "namespace"]]?.string,
                         name: pod[path: ["metadata", "name"]]?.string ?? "", object: updated)
        }
    }

    /// The taint-eviction controller (kube-controller-manager runs it next to this one): deletes the pods on a
    /// NoExecute-tainted node whose tolerations ran out (KubeAPIServer+TaintEviction.swift). Off with
    /// Options.taintEviction false.
    func evictPodsPastTolerations(now: Date) {
        guard options.taintEviction else { return }
        taintEvictionPass(now: now)
    }
}
