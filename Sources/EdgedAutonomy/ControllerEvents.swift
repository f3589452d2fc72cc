// core/v1 Events from the autonomy controller, shaped like kubelet's and kube-controller-manager's (involvedObject,
// reason, message, type, source.component, reportingComponent/Instance, first/lastTimestamp, count), with client-go's
// aggregation (EdgedKube's EventWriter). Sent synchronously by the worker that decided it, so an event is only ever
// written by the leader.

import EdgedCore
import EdgedKube

struct ControllerEvents: Sendable {
    let component: String
    private let writer: EventWriter

    init(client: KubeClient, component: String, instance: String) {
        self.component = component
        writer = EventWriter(client: client, source: EventSource(component: component),
                             reportingComponent: component, reportingInstance: instance)
    }

    /// An Event about a pod.
    func pod(namespace: String, name: String, uid: String, resourceVersion: String?, type: String, reason: String,
             message: String) async throws {
        let ref = ObjectReference(kind: "Pod", namespace: namespace, name: name, uid: uid, apiVersion: "v1",
                                  resourceVersion: resourceVersion)
        try await writer.send(involved: ref, namespace: namespace, type: type, reason: reason, message: message,
                              fallbackName: component)
    }

    /// An Event about a node, in namespace "default" with the node's name as uid, like kubelet's node events (which
    /// is where `kubectl describe node` looks for them).
    func node(name: String, type: String, reason: String, message: String) async throws {
        let ref = ObjectReference(kind: "Node", name: name, uid: name, apiVersion: "v1")
        try await writer.send(involved: ref, namespace: "default", type: type, reason: reason, message: message,
                              fallbackName: component)
    }
}
