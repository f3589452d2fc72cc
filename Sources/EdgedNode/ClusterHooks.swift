// What the pod runner needs from the cluster when edged has joined one: the API objects pods refer to (configMaps,
// secrets, service-account tokens, services) and a sink for kubelet-style Events. Standalone edged has neither.

import EdgedCore

/// An Event about a pod, with kubelet's reasons (Pulling, Pulled, Created, Started, Killing, BackOff, Unhealthy,
/// FailedMount, Failed, ...).
public struct PodEvent: Sendable, Equatable {
    public enum Kind: String, Sendable { case normal = "Normal", warning = "Warning" }
    public var namespace: String
    public var podName: String
    public var podUID: String
    /// e.g. "spec.containers{web}", as kubelet sets involvedObject.fieldPath.
    public var fieldPath: String?
    public var kind: Kind
    public var reason: String
    public var message: String

    public init(pod: Pod, container: String? = nil, kind: Kind, reason: String, message: String) {
        self.namespace = pod.namespace
        self.podName = pod.name
        self.podUID = pod.metadata.uid ?? ""
        if let container {
            let isInit = pod.spec.initContainers?.contains { $0.name == container } ?? false
            self.fieldPath = "spec.\(isInit ? "initContainers" : "containers"){\(container)}"
        }
        self.kind = kind
        self.reason = reason
        self.message = message
    }
}

/// Receives pod events (fire and forget; implementations queue and aggregate).
public typealias PodEventSink = @Sendable (PodEvent) -> Void

/// Reads the API objects a pod's volumes and environment refer to. Implemented by the cluster agent over the
/// API server (and, offline, its cache). `nil` means the object does not exist.
public protocol PodAPIObjects: Sendable {
    func configMap(namespace: String, name: String) async throws(EdgedError) -> [String: [UInt8]]?
    func secret(namespace: String, name: String) async throws(EdgedError) -> [String: [UInt8]]?
    /// A bound service-account token for the pod (TokenRequest API).
    func serviceAccountToken(pod: Pod, audience: String?, expirationSeconds: Int64) async throws(EdgedError) -> String
    /// Docker-link style service variables (KUBERNETES_SERVICE_HOST, ...) for pods in `namespace`.
    func serviceEnvironment(namespace: String, enableServiceLinks: Bool) async -> [(String, String)]
    /// The node's IP addresses as reported in Node.status.addresses (for status.hostIP and fieldRef status.hostIP).
    var hostIPs: [String] { get }
}
