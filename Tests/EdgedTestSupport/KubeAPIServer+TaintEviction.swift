// The taint-eviction controller of kube-controller-manager ("taint-eviction-controller"), as far as a node sees it.
//
// Copied from pkg/controller/tainteviction/taint_eviction.go (handleNodeUpdate, handlePodUpdate, processPodOnNode,
// getMinTolerationTime, addConditionAndDeletePod) and timed_workers.go, with the toleration matching of
// k8s.io/api/core/v1 (Toleration.ToleratesTaint) and pkg/apis/core/v1/helper (GetMatchingTolerations):
// - Only NoExecute taints count. A toleration matches a taint when its effect is empty or equal, its key is empty or
//   equal, and operator Exists, or operator Equal/empty with an equal value. Each taint takes the FIRST toleration
//   that matches it.
// - A pod bound to a node (spec.nodeName) is looked at when the node's NoExecute taints change (node update, first)
//   or when the pod is new, moved or its tolerations change (pod update). Not every taint tolerated: deleted at once.
//   Otherwise the smallest tolerationSeconds of the matching tolerations decides (none set: forever, the pod stays
//   and a scheduled deletion is cancelled; <= 0: at once); the time counts from when the controller noticed the
//   taints (the node update), not from the taints' timeAdded (for the lifecycle controller's own taints it is the
//   same instant). An already scheduled deletion is kept as it is: raising (or lowering) tolerationSeconds afterwards
//   does not move it (the real test case "lengthening toleration shouldn't work"); a toleration without
//   tolerationSeconds, the taints going away or the pod being deleted cancels it, a taint no longer tolerated
//   deletes at once.
// - The deletion: the pod's status gets condition DisruptionTarget=True, reason DeletionByTaintManager, message
//   "Taint manager: deleting due to NoExecute taint" (lastTransitionTime now, only written when it changes), then a
//   DELETE without options (graceful: spec.terminationGracePeriodSeconds). Events on the pod, as its recorder writes
//   them: TaintManagerEviction "Marking for deletion Pod <ns>/<name>" when deleting, "Cancelling deletion of Pod
//   <ns>/<name>" when a scheduled deletion is cancelled.
// NOT copied: the workers and their timers. The controller runs at the end of every node lifecycle pass (every
// monitorPeriod, also while the server is stop()ped; KubeAPIServer+NodeLifecycle.swift), so it notices changes up to
// a monitorPeriod late and a deletion fires at the first pass at or after its time; with Options.nodeLifecycle nil it
// does not run at all. No observedGeneration on the condition, no metrics, no retries (the writes cannot fail here).

import Foundation

/// What the taint-eviction controller remembers between passes (taintedNodes and the TimedWorkerQueue of the real
/// one, plus the last seen pods, to tell their updates). Under the store lock.
final class TaintEvictionState: @unchecked Sendable {
    struct Work {
        var createdAt: Date
        var fireAt: Date
    }
    struct SeenPod: Equatable {
        var uid: String
        var node: String
        var tolerations: KJSON?
    }
    /// NoExecute taints of every node seen ([] when it has none).
    var nodeTaints: [String: [KJSON]] = [:]
    /// The pods seen in the last pass, by "namespace/name".
    var pods: [String: SeenPod] = [:]
    /// Scheduled deletions by "namespace/name".
    var work: [String: Work] = [:]
}

extension KubeAPIServerCore {
    static let events = KubeResource.find(kind: "Event")!
    static let taintEvictionControllerName = "taint-eviction-controller"

    /// One pass of the taint-eviction controller: node updates, then pod updates, then the deletions that are due.
    /// The store lock must be held.
    func taintEvictionPass(now: Date) {
        let state = nodeHealth.taintEviction
        let pods = store.all(Self.pods, namespace: nil).map(\.1)
        func key(_ pod: KJSON) -> String {
            "\(pod[path: ["metadata", "namespace"]]?.string ?? "")/\(pod[path: ["metadata", "name"]]?.string ?? "")"
        }
        var byNode: [String: [KJSON]] = [:]
        var seen: [String: TaintEvictionState.SeenPod] = [:]
        for pod in pods {
            let node = pod[path: ["spec", "nodeName"]]?.string ?? ""
            if !node.isEmpty { byNode[node, default: []].append(pod) }
            seen[key(pod)] = .init(uid: pod[path: ["metadata", "uid"]]?.string ?? "", node: node,
                                   tolerations: pod[path: ["spec", "tolerations"]])
        }
        // Deleted pods (and pods deleted and created again under the same name) cancel their deletion.
        for (k, before) in state.pods where seen[k]?.uid != before.uid { cancelEviction(k, now: now) }

        // Node updates (handleNodeUpdate), first: a node whose NoExecute taints changed, or one not seen before.
        var nodes = Set<String>(), processed = Set<String>()
        for (_, node) in store.all(Self.nodes, namespace: nil) {
            guard let name = node[path: ["metadata", "name"]]?.string else { continue }
            nodes.insert(name)
            let taints = (node[path: ["spec", "taints"]]?.array ?? []).filter { $0["effect"]?.string == "NoExecute" }
            if let known = state.nodeTaints[name], known == taints { continue }
            state.nodeTaints[name] = taints
            for pod in byNode[name] ?? [] {
                processed.insert(key(pod))
                if taints.isEmpty {
                    cancelEviction(key(pod), now: now)
                } else {
                    processPodOnNode(key(pod), tolerations: pod[path: ["spec", "tolerations"]]?.array ?? [], taints: taints, now: now)
                }
            }
        }
        for gone in Set(state.nodeTaints.keys).subtracting(nodes) { state.nodeTaints[gone] = nil }

        // Pod updates (handlePodUpdate): new pods, and pods whose node or tolerations changed. One the node update
        // just looked at has nothing new to say (the real controller sees the two at different instants; here they
        // would share `now` and look like a rescheduling).
        for (k, pod) in seen where state.pods[k] != pod && !processed.contains(k) {
            guard !pod.node.isEmpty, let taints = state.nodeTaints[pod.node], !taints.isEmpty else { continue }
            processPodOnNode(k, tolerations: pod.tolerations?.array ?? [], taints: taints, now: now)
        }
        state.pods = seen

        // The deletions that are due (the timed workers firing).
        for (k, w) in state.work.sorted(by: { $0.value.fireAt < $1.value.fireAt }) where w.fireAt <= now {
            state.work[k] = nil
            addConditionAndDeletePod(k, now: now)
        }
    }

    /// processPodOnNode: deletes at once, schedules, keeps or cancels the pod's deletion.
    private func processPodOnNode(_ key: String, tolerations: [KJSON], taints: [KJSON], now: Date) {
        let state = nodeHealth.taintEviction
        guard let used = Self.matchingTolerations(taints: taints, tolerations: tolerations) else {
            cancelEviction(key, now: now)
            state.work[key] = .init(createdAt: now, fireAt: now)
            return
        }
        guard let seconds = Self.minTolerationSeconds(used) else {   // tolerated forever
            cancelEviction(key, now: now)
            return
        }
        let trigger = now.addingTimeInterval(Double(seconds))
        if let scheduled = state.work[key] {
            // As the real one: the scheduled deletion stays unless it was created this very instant.
            if scheduled.createdAt.addingTimeInterval(Double(seconds)) < trigger { return }
            cancelEviction(key, now: now)
            state.work[key] = .init(createdAt: scheduled.createdAt, fireAt: trigger)
            return
        }
        state.work[key] = .init(createdAt: now, fireAt: trigger)
    }

    /// cancelWorkWithEvent: drops a scheduled deletion; a pending one (not due at once) gets the cancel Event.
    private func cancelEviction(_ key: String, now: Date) {
        guard let w = nodeHealth.taintEviction.work.removeValue(forKey: key) else { return }
        if w.fireAt > w.createdAt { recordTaintEvictionEvent(key, message: "Cancelling deletion of Pod \(key)", now: now) }
    }

    /// GetMatchingTolerations: the first toleration matching each taint, or nil when some taint is not tolerated.
    static func matchingTolerations(taints: [KJSON], tolerations: [KJSON]) -> [KJSON]? {
        var used: [KJSON] = []
        for taint in taints {
            guard let t = tolerations.first(where: { toleratesTaint($0, taint) }) else { return nil }
            used.append(t)
        }
        return used
    }

    /// Toleration.ToleratesTaint.
    static func toleratesTaint(_ toleration: KJSON, _ taint: KJSON) -> Bool {
        let effect = toleration["effect"]?.string ?? "", key = toleration["key"]?.string ?? ""
        if !effect.isEmpty, effect != (taint["effect"]?.string ?? "") { return false }
        if !key.isEmpty, key != (taint["key"]?.string ?? "") { return false }
        switch toleration["operator"]?.string ?? "" {
        case "", "Equal": return (toleration["value"]?.string ?? "") == (taint["value"]?.string ?? "")
        case "Exists": return true
        default: return false
        }
    }

    /// getMinTolerationTime in seconds: nil for forever (no tolerationSeconds set), 0 when some is <= 0 or there
    /// are no tolerations, else the smallest.
    static func minTolerationSeconds(_ tolerations: [KJSON]) -> Int? {
        if tolerations.isEmpty { return 0 }
        var smallest: Int?
        for t in tolerations {
            guard let s = t["tolerationSeconds"], !s.isNull, let seconds = s.int else { continue }
            if seconds <= 0 { return 0 }
            smallest = min(smallest ?? seconds, seconds)
        }
        return smallest
    }

    /// addConditionAndDeletePod (with the deletion Event the handler records first).
    private func addConditionAndDeletePod(_ key: String, now: Date) {
        let parts = key.split(separator: "/", maxSplits: 1).map(String.init)
        guard parts.count == 2, var pod = store.get(Self.pods, namespace: parts[0], name: parts[1]) else { return }
        recordTaintEvictionEvent(key, message: "Marking for deletion Pod \(key)", now: now)
        var conditions = pod[path: ["status", "conditions"]]?.array ?? []
        var condition: KJSON = .object([
            "type": .string("DisruptionTarget"), "status": .string("True"), "lastProbeTime": .null,
            "lastTransitionTime": .string(Self.timestamp(now)), "reason": .string("DeletionByTaintManager"),
            "message": .string("Taint manager: deleting due to NoExecute taint"),
        ])
        if let i = conditions.firstIndex(where: { $0["type"]?.string == "DisruptionTarget" }) {
            if conditions[i]["status"]?.string == "True" { condition["lastTransitionTime"] = conditions[i]["lastTransitionTime"] }
            if conditions[i] != condition { conditions[i] = condition }
        } else {
            conditions.append(condition)
        }
        if conditions != pod[path: ["status", "conditions"]]?.array ?? [] {
            pod[path: ["status", "conditions"]] = .array(conditions)
            let target = APITarget(resource: Self.pods, namespace: parts[0], name: parts[1], subresource: "status", legacyWatch: false)
            guard (try? update(target, body: pod)) != nil else { return }
        }
        _ = try? delete(Self.pods, namespace: parts[0], name: parts[1], options: .object([:]), query: [:])
    }

    /// An Event about the pod as the controller's EventRecorder writes it (type Normal, reason TaintManagerEviction).
    private func recordTaintEvictionEvent(_ key: String, message: String, now: Date) {
        let parts = key.split(separator: "/", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return }
        let stamp = KJSON.string(Self.timestamp(now))
        let nanos = UInt64(max(0, now.timeIntervalSince1970) * 1e9)
        let event: KJSON = .object([
            "metadata": .object(["name": .string("\(parts[1]).\(String(nanos, radix: 16))"), "namespace": .string(parts[0])]),
            "involvedObject": .object(["kind": .string("Pod"), "namespace": .string(parts[0]), "name": .string(parts[1]),
                                       "apiVersion": .string("v1")]),
            "reason": .string("TaintManagerEviction"), "message": .string(message),
            "source": .object(["component": .string(Self.taintEvictionControllerName)]),
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": .int(1), "type": .string("Normal"),
            "eventTime": .null, "reportingComponent": .string(Self.taintEvictionControllerName), "reportingInstance": .string(""),
        ])
        _ = try? create(Self.events, namespace: parts[0], body: event, user: .internalAdmin)
    }
}
