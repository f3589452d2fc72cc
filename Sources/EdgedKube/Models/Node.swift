// core/v1 Node: what edged registers and reports (spec taints, status conditions/addresses/capacity/nodeInfo/images).

import EdgedCore

public struct Node: KubeObject, Equatable {
    public var apiVersion: String?
    public var kind: String?
    public var metadata: ObjectMeta
    public var spec: NodeSpec?
    public var status: NodeStatus?

    public init(metadata: ObjectMeta, spec: NodeSpec? = nil, status: NodeStatus? = nil) {
        self.apiVersion = "v1"
        self.kind = "Node"
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }
}

public struct NodeSpec: Codable, Sendable, Equatable {
    public var podCIDR: String?
    public var podCIDRs: [String]?
    public var providerID: String?
    public var unschedulable: Bool?
    public var taints: [Taint]?

    public init(podCIDR: String? = nil, podCIDRs: [String]? = nil, providerID: String? = nil,
                unschedulable: Bool? = nil, taints: [Taint]? = nil) {
        self.podCIDR = podCIDR
        self.podCIDRs = podCIDRs
        self.providerID = providerID
        self.unschedulable = unschedulable
        self.taints = taints
    }
}

public struct Taint: Codable, Sendable, Equatable {
    public var key: String
    public var value: String?
    /// NoSchedule, PreferNoSchedule or NoExecute.
    public var effect: String
    public var timeAdded: String?

    public init(key: String, value: String? = nil, effect: String, timeAdded: String? = nil) {
        self.key = key
        self.value = value
        self.effect = effect
        self.timeAdded = timeAdded
    }
}

public struct NodeStatus: Codable, Sendable, Equatable {
    /// cpu, memory, pods, ephemeral-storage, nvidia.com/gpu, ...
    public var capacity: [String: Quantity]?
    public var allocatable: [String: Quantity]?
    public var conditions: [NodeCondition]?
    public var addresses: [NodeAddress]?
    public var daemonEndpoints: NodeDaemonEndpoints?
    public var nodeInfo: NodeSystemInfo?
    public var images: [ContainerImage]?

    public init(capacity: [String: Quantity]? = nil, allocatable: [String: Quantity]? = nil,
                conditions: [NodeCondition]? = nil, addresses: [NodeAddress]? = nil,
                daemonEndpoints: NodeDaemonEndpoints? = nil, nodeInfo: NodeSystemInfo? = nil,
                images: [ContainerImage]? = nil) {
        self.capacity = capacity
        self.allocatable = allocatable
        self.conditions = conditions
        self.addresses = addresses
        self.daemonEndpoints = daemonEndpoints
        self.nodeInfo = nodeInfo
        self.images = images
    }
}

public struct NodeCondition: Codable, Sendable, Equatable {
    /// Ready, MemoryPressure, DiskPressure, PIDPressure, NetworkUnavailable.
    public var type: String
    /// "True", "False" or "Unknown".
    public var status: String
    public var lastHeartbeatTime: String?
    public var lastTransitionTime: String?
    public var reason: String?
    public var message: String?

    public init(type: String, status: String, lastHeartbeatTime: String? = nil, lastTransitionTime: String? = nil,
                reason: String? = nil, message: String? = nil) {
        self.type = type
        self.status = status
        self.lastHeartbeatTime = lastHeartbeatTime
        self.lastTransitionTime = lastTransitionTime
        self.reason = reason
        self.message = message
    }
}

public struct NodeAddress: Codable, Sendable, Equatable {
    /// InternalIP, ExternalIP, Hostname, InternalDNS, ExternalDNS.
    public var type: String
    public var address: String

    public init(type: String, address: String) {
        self.type = type
        self.address = address
    }
}

public struct NodeDaemonEndpoints: Codable, Sendable, Equatable {
    public var kubeletEndpoint: DaemonEndpoint?
    public init(kubeletEndpoint: DaemonEndpoint? = nil) { self.kubeletEndpoint = kubeletEndpoint }
}

public struct DaemonEndpoint: Codable, Sendable, Equatable {
    public var port: Int32

    public init(port: Int32) { self.port = port }

    enum CodingKeys: String, CodingKey { case port = "Port" }
}

public struct NodeSystemInfo: Codable, Sendable, Equatable {
    public var machineID: String
    public var systemUUID: String
    public var bootID: String
    public var kernelVersion: String
    public var osImage: String
    public var containerRuntimeVersion: String
    public var kubeletVersion: String
    public var kubeProxyVersion: String
    public var operatingSystem: String
    public var architecture: String

    public init(machineID: String = "", systemUUID: String = "", bootID: String = "", kernelVersion: String = "",
                osImage: String = "", containerRuntimeVersion: String = "", kubeletVersion: String = "",
                kubeProxyVersion: String = "", operatingSystem: String = "linux", architecture: String = "") {
        self.machineID = machineID
        self.systemUUID = systemUUID
        self.bootID = bootID
        self.kernelVersion = kernelVersion
        self.osImage = osImage
        self.containerRuntimeVersion = containerRuntimeVersion
        self.kubeletVersion = kubeletVersion
        self.kubeProxyVersion = kubeProxyVersion
        self.operatingSystem = operatingSystem
        self.architecture = architecture
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func s(_ k: CodingKeys) throws -> String { try c.decodeIfPresent(String.self, forKey: k) ?? "" }
        machineID = try s(.machineID)
        systemUUID = try s(.systemUUID)
        bootID = try s(.bootID)
        kernelVersion = try s(.kernelVersion)
        osImage = try s(.osImage)
        containerRuntimeVersion = try s(.containerRuntimeVersion)
        kubeletVersion = try s(.kubeletVersion)
        kubeProxyVersion = try s(.kubeProxyVersion)
        operatingSystem = try s(.operatingSystem)
        architecture = try s(.architecture)
    }
}

public struct ContainerImage: Codable, Sendable, Equatable {
    public var names: [String]?
    public var sizeBytes: Int64?

    public init(names: [String]?, sizeBytes: Int64?) {
        self.names = names
        self.sizeBytes = sizeBytes
    }
}
