// YurtHub-style response filters: what node-local clients get from the hub is the API server's answer adjusted for
// the edge (the kubernetes Service points at the hub, endpoints stay on this node or pool, pod IPs that changed in
// an offline reboot are current). One entry point for gets, list items and watch events.

import EdgedCore
import EdgedKube

/// Which filters run, and the facts about this node they need.
public struct HubFilterConfig: Sendable {
    public var nodeName: String
    /// This node's pool (label apps.openyurt.io/nodepool); nil when the node is in none, and then pool topology
    /// falls back to node topology, as in YurtHub.
    public var nodePool: String?
    /// YurtHub's masterservice: default/kubernetes Service → clusterIP/port of the hub's HTTPS listener, for the
    /// components that build pod environments ("edged", "kubelet"). On by default (as in YurtHub).
    public var masterService: Bool = true
    public var masterServiceHost: String = "169.254.2.1"
    public var masterServicePort: Int = 10268
    /// YurtHub's servicetopology: endpoints/endpointslices of a Service annotated openyurt.io/topologyKeys
    /// (kubernetes.io/hostname | openyurt.io/nodepool | kubernetes.io/zone) keep only this node's / pool's
    /// endpoints, for kube-proxy and coredns (configurable list). On by default (as in YurtHub).
    public var serviceTopology: Bool = true
    public var serviceTopologyComponents: [String] = ["kube-proxy", "coredns", "nginx-ingress-controller"]

    public init(nodeName: String, nodePool: String? = nil, masterService: Bool = true,
                masterServiceHost: String = "169.254.2.1", masterServicePort: Int = 10268,
                serviceTopology: Bool = true,
                serviceTopologyComponents: [String] = ["kube-proxy", "coredns", "nginx-ingress-controller"]) {
        self.nodeName = nodeName
        self.nodePool = nodePool
        self.masterService = masterService
        self.masterServiceHost = masterServiceHost
        self.masterServicePort = masterServicePort
        self.serviceTopology = serviceTopology
        self.serviceTopologyComponents = serviceTopologyComponents
    }
}

/// What filters need to know that is not in the object: the Service of an EndpointSlice/Endpoints (from the cache),
/// the node pool of a node (nodes' label apps.openyurt.io/nodepool), and — only while offline — the current IP of
/// pods on this node by "namespace/name" (endpoints fix-up after an offline reboot, OpenYurt #2810).
public struct FilterContext: Sendable {
    /// The annotations of Service namespace/name; nil when the Service is unknown (the object is then left as is).
    public var serviceAnnotations: @Sendable (_ namespace: String, _ name: String) -> [String: String]?
    public var nodePool: @Sendable (_ nodeName: String) -> String?
    /// nil when online.
    public var localPodIPs: (@Sendable () -> [String: String])?

    public init(serviceAnnotations: @escaping @Sendable (_ namespace: String, _ name: String) -> [String: String]? = { _, _ in nil },
                nodePool: @escaping @Sendable (_ nodeName: String) -> String? = { _ in nil },
                localPodIPs: (@Sendable () -> [String: String])? = nil) {
        self.serviceAnnotations = serviceAnnotations
        self.nodePool = nodePool
        self.localPodIPs = localPodIPs
    }
}

/// Every response filter, chosen by client and resource.
///
/// Filters edit the JSON in place: unknown fields and key order are kept, and an object that lacks what a filter
/// looks for (or has it in an unexpected shape) passes unchanged.
public struct ResponseFilters: Sendable {
    public let config: HubFilterConfig
    public let context: FilterContext
    private let topologyComponents: Set<String>

    public init(config: HubFilterConfig, context: FilterContext) {
        self.config = config
        self.context = context
        topologyComponents = Set(config.serviceTopologyComponents.map { $0.lowercased() })
    }

    /// Applies every filter that matches (component, resourceKey) to one object (a get, a list item, a watch event
    /// object; a whole `...List` object has each item filtered). Returns nil when the object must be dropped
    /// entirely (never, today, but keep the shape).
    public func apply(component: String, resourceKey: String, object: JSONValue) -> JSONValue? {
        switch resourceKey {
        case "/v1/services":
            guard config.masterService, MasterServiceFilter.components.contains(component) else { return object }
            let filter = MasterServiceFilter(host: config.masterServiceHost, port: config.masterServicePort)
            return Self.eachItem(of: object) { filter.apply($0) }
        case ServiceTopologyFilter.endpointsResource, ServiceTopologyFilter.sliceResource:
            let isSlice = resourceKey == ServiceTopologyFilter.sliceResource
            var out = object
            if let podIPs = context.localPodIPs {
                let fixup = EndpointsFixup(nodeName: config.nodeName, podIPs: podIPs)
                out = Self.eachItem(of: out) { fixup.apply($0, isSlice: isSlice) }
            }
            if config.serviceTopology, topologyComponents.contains(component) {
                let filter = ServiceTopologyFilter(nodeName: config.nodeName, nodePool: config.nodePool, context: context)
                out = Self.eachItem(of: out) { filter.apply($0, isSlice: isSlice) }
            }
            return out
        default:
            return object
        }
    }

    /// `f` applied to the object, or to each item of a list object (kind "...List" with an items array).
    static func eachItem(of object: JSONValue, _ f: (JSONValue) -> JSONValue) -> JSONValue {
        guard object["kind"]?.stringValue?.hasSuffix("List") == true, case .array(let items)? = object["items"] else {
            return f(object)
        }
        return object.setting(["items"], to: .array(items.map(f)))
    }
}
