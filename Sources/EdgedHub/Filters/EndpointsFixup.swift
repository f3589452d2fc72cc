// Endpoints fix-up while offline (OpenYurt #2810): after an offline reboot the node's pods come back with new IPs,
// but the Endpoints and EndpointSlices in the store still name the old ones, so Services on the node would send
// traffic nowhere until the cloud returns. The hub serves them with the pods' current IPs.

import EdgedCore
import EdgedKube

/// Rewrites the IP of every endpoint on this node whose pod (targetRef kind Pod, by "namespace/name") now has
/// another IP. Endpoints of other nodes, of pods the node does not know, and addresses of another IP family than
/// the pod's new one (an IPv6 slice, a dual-stack pod) are left alone.
struct EndpointsFixup {
    var nodeName: String
    /// Called at most once per object, and only when the object has an endpoint on this node.
    var podIPs: @Sendable () -> [String: String]

    func apply(_ object: JSONValue, isSlice: Bool) -> JSONValue {
        var ips: [String: String]?
        let newIP = { (endpoint: JSONValue, objectNamespace: String?) -> String? in
            guard endpoint["nodeName"]?.stringValue == nodeName,
                  let ref = endpoint["targetRef"], ref["kind"]?.stringValue == "Pod",
                  let name = ref["name"]?.stringValue,
                  let namespace = ref["namespace"]?.stringValue ?? objectNamespace else { return nil }
            if ips == nil { ips = podIPs() }
            return ips?["\(namespace)/\(name)"]
        }
        let namespace = object[path: ["metadata", "namespace"]]?.stringValue
        return isSlice ? fixSlice(object, namespace, newIP) : fixEndpoints(object, namespace, newIP)
    }

    static func isIPv6(_ ip: String) -> Bool { ip.contains(":") }

    private func fixSlice(_ slice: JSONValue, _ namespace: String?,
                          _ newIP: (JSONValue, String?) -> String?) -> JSONValue {
        guard case .array(var endpoints)? = slice["endpoints"] else { return slice }
        let type = slice["addressType"]?.stringValue
        guard type == "IPv4" || type == "IPv6" else { return slice }  // FQDN slices name no pod IPs
        var changed = false
        for i in endpoints.indices {
            guard let ip = newIP(endpoints[i], namespace), Self.isIPv6(ip) == (type == "IPv6") else { continue }
            if case .array(let current)? = endpoints[i]["addresses"], current.contains(.string(ip)) { continue }
            endpoints[i].set(["addresses"], to: .array([.string(ip)]))
            changed = true
        }
        return changed ? slice.setting(["endpoints"], to: .array(endpoints)) : slice
    }

    private func fixEndpoints(_ object: JSONValue, _ namespace: String?,
                              _ newIP: (JSONValue, String?) -> String?) -> JSONValue {
        guard case .array(var subsets)? = object["subsets"] else { return object }
        var changed = false
        for i in subsets.indices {
            for key in ["addresses", "notReadyAddresses"] {
                guard case .array(var addresses)? = subsets[i][key] else { continue }
                var subsetChanged = false
                for j in addresses.indices {
                    guard let ip = newIP(addresses[j], namespace),
                          let old = addresses[j]["ip"]?.stringValue, old != ip,
                          Self.isIPv6(old) == Self.isIPv6(ip) else { continue }
                    addresses[j].set(["ip"], to: .string(ip))
                    subsetChanged = true
                }
                if subsetChanged {
                    subsets[i].set([key], to: .array(addresses))
                    changed = true
                }
            }
        }
        return changed ? object.setting(["subsets"], to: .array(subsets)) : object
    }
}
