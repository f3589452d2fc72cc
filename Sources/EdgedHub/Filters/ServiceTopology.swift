// YurtHub's servicetopology filter: a Service annotated openyurt.io/topologyKeys keeps its traffic on this node
// (kubernetes.io/hostname) or in this node's pool (openyurt.io/nodepool, and kubernetes.io/zone which YurtHub
// treats as the pool), so kube-proxy and coredns on the node only see endpoints there.

import EdgedCore
import EdgedKube

/// Drops the endpoints of an Endpoints / EndpointSlice that lie outside this node's topology.
///
/// As in YurtHub: the Service of a slice is its label kubernetes.io/service-name, of an Endpoints object its own name;
/// an unknown Service, a missing or unknown annotation value leave the object as is; an endpoint without nodeName is
/// dropped (it cannot be placed); pool topology without a pool of our own falls back to node topology; and when no
/// endpoint remains, the object is kept with an empty list (clients then see the Service without endpoints, rather
/// than a stale object). For Endpoints, addresses and notReadyAddresses are filtered and subsets left empty removed.
struct ServiceTopologyFilter {
    static let endpointsResource = "/v1/endpoints"
    static let sliceResource = "discovery.k8s.io/v1/endpointslices"
    static let annotation = "openyurt.io/topologyKeys"
    static let serviceNameLabel = "kubernetes.io/service-name"

    enum Scope: Equatable {
        case node
        case pool(String)
    }

    var nodeName: String
    var nodePool: String?
    var context: FilterContext

    /// The topology the object's Service asks for, nil when none applies.
    func scope(of object: JSONValue, isSlice: Bool) -> Scope? {
        let namespace = object[path: ["metadata", "namespace"]]?.stringValue ?? ""
        let service = isSlice
            ? object[path: ["metadata", "labels", Self.serviceNameLabel]]?.stringValue
            : object[path: ["metadata", "name"]]?.stringValue
        guard let service, !service.isEmpty,
              let keys = context.serviceAnnotations(namespace, service)?[Self.annotation] else { return nil }
        switch keys {
        case "kubernetes.io/hostname":
            return .node
        case "openyurt.io/nodepool", "kubernetes.io/zone":
            if let pool = nodePool, !pool.isEmpty { return .pool(pool) }
            return .node
        default:
            return nil
        }
    }

    func apply(_ object: JSONValue, isSlice: Bool) -> JSONValue {
        guard let scope = scope(of: object, isSlice: isSlice) else { return object }
        var pools: [String: String?] = [:]
        let keep = { (node: String?) -> Bool in
            guard let node else { return false }
            if node == nodeName { return true }
            guard case .pool(let pool) = scope else { return false }
            if let known = pools[node] { return known == pool }
            let p = context.nodePool(node)
            pools[node] = .some(p)
            return p == pool
        }
        return isSlice ? filterSlice(object, keep) : filterEndpoints(object, keep)
    }

    private func filterSlice(_ slice: JSONValue, _ keep: (String?) -> Bool) -> JSONValue {
        guard case .array(let endpoints)? = slice["endpoints"] else { return slice }
        let kept = endpoints.filter { keep($0["nodeName"]?.stringValue) }
        return kept.count == endpoints.count ? slice : slice.setting(["endpoints"], to: .array(kept))
    }

    private func filterEndpoints(_ object: JSONValue, _ keep: (String?) -> Bool) -> JSONValue {
        guard case .array(let subsets)? = object["subsets"] else { return object }
        var changed = false
        var kept: [JSONValue] = []
        for subset in subsets {
            guard case .object = subset else {
                kept.append(subset)
                continue
            }
            var s = subset
            var remaining = 0
            for key in ["addresses", "notReadyAddresses"] {
                guard case .array(let addresses)? = subset[key] else { continue }
                let left = addresses.filter { keep($0["nodeName"]?.stringValue) }
                remaining += left.count
                if left.count != addresses.count {
                    s.set([key], to: .array(left))
                    changed = true
                }
            }
            if remaining > 0 { kept.append(s) } else { changed = true }
        }
        return changed ? object.setting(["subsets"], to: .array(kept)) : object
    }
}
