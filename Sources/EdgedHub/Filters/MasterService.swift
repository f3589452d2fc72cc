// YurtHub's masterservice filter: pods on an edge node reach the API server through the hub, so the kubernetes
// Service they see (KUBERNETES_SERVICE_HOST/PORT, in-cluster config) points at the hub's HTTPS listener.

import EdgedCore
import EdgedKube

/// Rewrites the Service default/kubernetes: spec.clusterIP and spec.clusterIPs become the hub's address and the port
/// named "https" its port (targetPort untouched). Every other Service passes unchanged.
struct MasterServiceFilter: Sendable {
    /// The clients that build pod environments from Services.
    static let components: Set<String> = ["edged", "kubelet"]

    var host: String
    var port: Int

    func apply(_ service: JSONValue) -> JSONValue {
        guard service[path: ["metadata", "namespace"]]?.stringValue == "default",
              service[path: ["metadata", "name"]]?.stringValue == "kubernetes",
              case .object? = service["spec"] else { return service }
        if let kind = service["kind"]?.stringValue, kind != "Service" { return service }
        var out = service
        out.set(["spec", "clusterIP"], to: .string(host))
        out.set(["spec", "clusterIPs"], to: .array([.string(host)]))
        if case .array(var ports)? = out[path: ["spec", "ports"]],
           let i = ports.firstIndex(where: { $0["name"]?.stringValue == "https" }) {
            ports[i].set(["port"], to: .number(String(port)))
            out.set(["spec", "ports"], to: .array(ports))
        }
        return out
    }
}
