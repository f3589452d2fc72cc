// A container's environment from the API: env[].valueFrom (fieldRef, resourceFieldRef, configMapKeyRef,
// secretKeyRef), envFrom, and the service variables kubelet adds (KUBERNETES_SERVICE_HOST, ...).

import EdgedCore
import Glibc

enum PodEnv {
    /// Variables that go before the container's own env (services, then envFrom), and the values of env entries
    /// that use valueFrom (by name). Errors use kubelet's wording and name the object.
    static func resolve(pod: Pod, container c: Container, podIPs: [String], objects: (any PodAPIObjects)?)
        async throws(EdgedError) -> (before: [(String, String)], valueFrom: [String: String]) {
        var before: [(String, String)] = []
        if let objects {
            before += await objects.serviceEnvironment(namespace: pod.namespace, enableServiceLinks: pod.spec.enableServiceLinks ?? true)
        }
        for src in c.envFrom ?? [] {
            let prefix = src.prefix ?? ""
            var data: [String: [UInt8]]?
            if let ref = src.configMapRef {
                data = try await objects?.configMap(namespace: pod.namespace, name: ref.name)
                if data == nil && ref.optional != true { throw EdgedError(.notFound, "configmap \"\(ref.name)\" not found") }
            } else if let ref = src.secretRef {
                data = try await objects?.secret(namespace: pod.namespace, name: ref.name)
                if data == nil && ref.optional != true { throw EdgedError(.notFound, "secret \"\(ref.name)\" not found") }
            }
            for key in (data ?? [:]).keys.sorted() where isEnvName(prefix + key) {
                before.append((prefix + key, String(decoding: data![key]!, as: UTF8.self)))
            }
        }
        var values: [String: String] = [:]
        for e in c.env ?? [] {
            guard let from = e.valueFrom else { continue }
            if let f = from.fieldRef {
                values[e.name] = try fieldValue(f.fieldPath, pod: pod, podIPs: podIPs, hostIPs: objects?.hostIPs ?? [])
            } else if let r = from.resourceFieldRef {
                values[e.name] = try resourceValue(r, pod: pod, container: c)
            } else if let k = from.configMapKeyRef {
                let data = try await objects?.configMap(namespace: pod.namespace, name: k.name)
                if let v = data?[k.key] { values[e.name] = String(decoding: v, as: UTF8.self) }
                else if k.optional != true {
                    throw EdgedError(.notFound, data == nil ? "configmap \"\(k.name)\" not found" : "couldn't find key \(k.key) in ConfigMap \(pod.namespace)/\(k.name)")
                }
            } else if let k = from.secretKeyRef {
                let data = try await objects?.secret(namespace: pod.namespace, name: k.name)
                if let v = data?[k.key] { values[e.name] = String(decoding: v, as: UTF8.self) }
                else if k.optional != true {
                    throw EdgedError(.notFound, data == nil ? "secret \"\(k.name)\" not found" : "couldn't find key \(k.key) in Secret \(pod.namespace)/\(k.name)")
                }
            }
        }
        return (before, values)
    }

    static func isEnvName(_ s: String) -> Bool {
        guard let first = s.first, !first.isNumber else { return false }
        return s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || $0 == ".") }
    }

    /// The downward API fields kubelet supports.
    static func fieldValue(_ path: String, pod: Pod, podIPs: [String], hostIPs: [String]) throws(EdgedError) -> String {
        switch path {
        case "metadata.name": return pod.name
        case "metadata.namespace": return pod.namespace
        case "metadata.uid": return pod.metadata.uid ?? ""
        case "metadata.labels": return format(pod.metadata.labels)
        case "metadata.annotations": return format(pod.metadata.annotations)
        case "spec.nodeName": return pod.spec.nodeName ?? ""
        case "spec.serviceAccountName": return pod.spec.serviceAccountName ?? "default"
        case "status.hostIP": return hostIPs.first ?? ""
        case "status.hostIPs": return hostIPs.joined(separator: ",")
        case "status.podIP": return pod.spec.hostNetwork == true ? (hostIPs.first ?? "") : (podIPs.first ?? "")
        case "status.podIPs": return pod.spec.hostNetwork == true ? hostIPs.joined(separator: ",") : podIPs.joined(separator: ",")
        default:
            for (prefix, map) in [("metadata.labels", pod.metadata.labels), ("metadata.annotations", pod.metadata.annotations)] {
                if path.hasPrefix(prefix + "['"), path.hasSuffix("']") {
                    let key = String(path.dropFirst(prefix.count + 2).dropLast(2))
                    return map?[key] ?? ""
                }
            }
            throw EdgedError(.invalidManifest, "unsupported fieldRef \"\(path)\"")
        }
    }

    /// `key="value"` lines sorted by key, like kubelet's downward API files.
    static func format(_ map: [String: String]?) -> String {
        (map ?? [:]).keys.sorted().map { k in
            var v = ""
            for ch in map![k]! {
                switch ch {
                case "\\": v += "\\\\"
                case "\"": v += "\\\""
                case "\n": v += "\\n"
                default: v.append(ch)
                }
            }
            return "\(k)=\"\(v)\""
        }.joined(separator: "\n")
    }

    /// limits/requests of a container (the named one, or the one asking), divided by the divisor and rounded up like
    /// kubelet; an unset limit is the node's capacity.
    static func resourceValue(_ r: ResourceFieldSelector, pod: Pod, container: Container?) throws(EdgedError) -> String {
        let c = r.containerName.flatMap { name in ((pod.spec.initContainers ?? []) + pod.spec.containers).first { $0.name == name } } ?? container
        guard let c else { throw EdgedError(.invalidManifest, "resourceFieldRef \(r.resource) needs containerName in a volume") }
        let parts = r.resource.split(separator: ".", maxSplits: 1).map(String.init)
        guard parts.count == 2, parts[0] == "limits" || parts[0] == "requests" else {
            throw EdgedError(.invalidManifest, "unsupported resourceFieldRef \"\(r.resource)\"")
        }
        let map = parts[0] == "limits" ? c.resources?.limits : c.resources?.requests
        let divisor = r.divisor ?? Quantity("1")
        if parts[1] == "cpu" {
            let milli = try map?["cpu"]?.milliValue() ?? (parts[0] == "limits" ? Int64(sysconf(Int32(_SC_NPROCESSORS_ONLN))) * 1000 : 0)
            let div = max(try divisor.milliValue(), 1)
            return String((milli + div - 1) / div)
        }
        let pages = Int64(sysconf(Int32(_SC_PHYS_PAGES))) * Int64(sysconf(Int32(_SC_PAGESIZE)))
        let value = try map?[parts[1]]?.value() ?? (parts[0] == "limits" ? pages : 0)
        let div = max(try divisor.value(), 1)
        return String((value + div - 1) / div)
    }
}
