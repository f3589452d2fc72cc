// core/v1 Events from the autonomy controller, shaped like kubelet's and kube-controller-manager's (involvedObject,
// reason, message, type, source.component, reportingComponent/Instance, first/lastTimestamp, count), with client-go's
// aggregation: the same event about the same object within 10 minutes bumps count and lastTimestamp of the first
// one (a merge patch) instead of creating another object. Sent synchronously by the worker that decided it, so an
// event is only ever written by the leader.

import EdgedCore
import EdgedKube

actor ControllerEvents {
    private let client: KubeClient
    let component: String
    let instance: String
    /// (involved uid, reason, message) → the Event created for it.
    private var seen: [String: (name: String, namespace: String, count: Int32, first: Timestamp)] = [:]
    private(set) var sent = 0

    init(client: KubeClient, component: String, instance: String) {
        self.client = client
        self.component = component
        self.instance = instance
    }

    /// An Event about a pod.
    func pod(namespace: String, name: String, uid: String, resourceVersion: String?, type: String, reason: String,
             message: String) async throws {
        let ref = ObjectReference(kind: "Pod", namespace: namespace, name: name, uid: uid, apiVersion: "v1",
                                  resourceVersion: resourceVersion)
        try await send(ref, namespace: namespace, type: type, reason: reason, message: message)
    }

    /// An Event about a node, in namespace "default" with the node's name as uid, like kubelet's node events (which
    /// is where `kubectl describe node` looks for them).
    func node(name: String, type: String, reason: String, message: String) async throws {
        let ref = ObjectReference(kind: "Node", name: name, uid: name, apiVersion: "v1")
        try await send(ref, namespace: "default", type: type, reason: reason, message: message)
    }

    private func send(_ ref: ObjectReference, namespace: String, type: String, reason: String, message: String) async throws {
        let now = Timestamp.now()
        let key = "\(ref.kind ?? "")|\(ref.uid ?? "")|\(reason)|\(message)"
        if let prior = seen[key], prior.first.seconds(until: now) < 600 {
            let count = prior.count + 1
            let patch = Patch.merge(.object([("count", .number(String(count))), ("lastTimestamp", .string(now.rfc3339))]))
            do {
                _ = try await client.patch(.events, namespace: prior.namespace, name: prior.name, patch)
                seen[key] = (prior.name, prior.namespace, count, prior.first)
                sent += 1
                return
            } catch let e as KubeError where e.isNotFound {
                seen[key] = nil
            }
        }
        let meta = ObjectMeta(name: "\(ref.name ?? component).\(String(UInt64(now.nanoseconds), radix: 16))", namespace: namespace)
        var event = Event(metadata: meta, involvedObject: ref, reason: reason, message: message, type: type)
        event.source = EventSource(component: component)
        event.firstTimestamp = now.rfc3339
        event.lastTimestamp = now.rfc3339
        event.count = 1
        event.reportingComponent = component
        event.reportingInstance = instance
        let created = try await client.create(.events, namespace: namespace, event)
        if seen.count >= 4096 { seen.removeAll() }
        seen[key] = (created.metadata.name ?? meta.name ?? "", namespace, 1, now)
        sent += 1
    }
}
