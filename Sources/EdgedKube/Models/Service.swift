// core/v1 Service: the subset needed for the KUBERNETES_SERVICE_* / <NAME>_SERVICE_* environment of pods.

import EdgedCore

public struct Service: KubeObject, Equatable {
    public var apiVersion: String?
    public var kind: String?
    public var metadata: ObjectMeta
    public var spec: ServiceSpec?

    public init(metadata: ObjectMeta, spec: ServiceSpec? = nil) {
        self.apiVersion = "v1"
        self.kind = "Service"
        self.metadata = metadata
        self.spec = spec
    }
}

public struct ServiceSpec: Codable, Sendable, Equatable {
    /// "None" for headless services.
    public var clusterIP: String?
    public var clusterIPs: [String]?
    /// ClusterIP, NodePort, LoadBalancer, ExternalName.
    public var type: String?
    public var ports: [ServicePort]?
    public var selector: [String: String]?

    public init(clusterIP: String? = nil, type: String? = nil, ports: [ServicePort]? = nil) {
        self.clusterIP = clusterIP
        self.type = type
        self.ports = ports
    }
}

public struct ServicePort: Codable, Sendable, Equatable {
    public var name: String?
    public var `protocol`: String?
    public var port: Int32
    public var targetPort: IntOrString?
    public var nodePort: Int32?

    public init(name: String? = nil, protocol: String? = "TCP", port: Int32, targetPort: IntOrString? = nil) {
        self.name = name
        self.protocol = `protocol`
        self.port = port
        self.targetPort = targetPort
    }
}
