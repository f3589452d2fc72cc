// Pod QoS class and the checks on a pod status update.
//
// Copied from:
// - pkg/apis/core/helper/qos (GetPodQOS): only cpu and memory count, zero quantities are ignored; BestEffort when no
//   container (init containers included) has a positive cpu/memory request or limit; Guaranteed when every container
//   has cpu and memory limits and every request equals its limit (requests are defaulted from limits first);
//   Burstable otherwise.
// - pkg/apis/core/validation ValidatePodStatusUpdate (through pods/status PUT and PATCH, for every user):
//   status.qosClass is immutable ("field is immutable"); a terminated container may not go back to waiting/running
//   unless the restart policy would restart it ("may not be transitioned to non-terminated state"; restartPolicy
//   Never: never, OnFailure: only after a non-zero exit code, init containers that are sidecars
//   (restartPolicy Always) always may); status.podIPs / status.hostIPs must be IP addresses, at most one per family,
//   hostIPs[0] equal to hostIP. 422 Invalid with details.causes, like the real one.
// NOT copied: the real status validation does not check that containerStatuses names match the containers nor
// that a state has only one of waiting/running/terminated, so neither does this; no pod condition type checks.

import Foundation

extension KubeAPIServerCore {
    /// A resource quantity ("100m", "1Gi", "2", "1e3") as a number; nil when it is not one.
    static func quantity(_ v: KJSON?) -> Double? {
        guard let v else { return nil }
        let text: String
        switch v {
        case .string(let s): text = s
        case .number(let n): text = n
        default: return nil
        }
        let suffixes: [(String, Double)] = [
            ("Ki", 1024), ("Mi", pow(1024, 2)), ("Gi", pow(1024, 3)), ("Ti", pow(1024, 4)), ("Pi", pow(1024, 5)),
            ("Ei", pow(1024, 6)), ("n", 1e-9), ("u", 1e-6), ("m", 1e-3), ("k", 1e3), ("M", 1e6), ("G", 1e9),
            ("T", 1e12), ("P", 1e15), ("E", 1e18),
        ]
        for (suffix, factor) in suffixes where text.hasSuffix(suffix) {
            return Double(text.dropLast(suffix.count)).map { $0 * factor }
        }
        return Double(text)
    }

    /// GetPodQOS over a pod spec (requests already defaulted from limits).
    static func qosClass(_ spec: KJSON) -> String {
        let all = (spec["containers"]?.array ?? []) + (spec["initContainers"]?.array ?? [])
        var requests: [String: Double] = [:], limits: [String: Double] = [:]
        var guaranteed = true
        for c in all {
            for (k, v) in c[path: ["resources", "requests"]]?.object ?? [:] where k == "cpu" || k == "memory" {
                if let q = quantity(v), q > 0 { requests[k, default: 0] += q }
            }
            var found = Set<String>()
            for (k, v) in c[path: ["resources", "limits"]]?.object ?? [:] where k == "cpu" || k == "memory" {
                if let q = quantity(v), q > 0 { found.insert(k); limits[k, default: 0] += q }
            }
            if found.count < 2 { guaranteed = false }
        }
        if requests.isEmpty && limits.isEmpty { return "BestEffort" }
        if guaranteed {
            for (k, l) in limits {
                if let r = requests[k], abs(r - l) <= max(abs(l), 1) * 1e-12 { continue }
                guaranteed = false
            }
        }
        return guaranteed && requests.count == limits.count ? "Guaranteed" : "Burstable"
    }

    /// ValidatePodStatusUpdate (the part that matters to a node agent); throws 422 Invalid.
    static func validatePodStatusUpdate(new: KJSON, old: KJSON, name: String) throws {
        var causes: [APIError.Cause] = []
        let newQOS = new[path: ["status", "qosClass"]]?.string ?? "", oldQOS = old[path: ["status", "qosClass"]]?.string ?? ""
        if newQOS != oldQOS {
            causes.append(.init(reason: "FieldValueInvalid", field: "status.qosClass",
                                message: "Invalid value: \"\(newQOS)\": field is immutable"))
        }
        let spec = old["spec"] ?? .object([:])
        let podPolicy = spec["restartPolicy"]?.string ?? "Always"
        func shouldRestart(_ container: KJSON?, exitCode: Int, isInit: Bool) -> Bool {
            if let p = container?["restartPolicy"]?.string {   // a sidecar (or a container-level policy)
                switch p {
                case "Always": return true
                case "OnFailure": return exitCode != 0
                case "Never": return false
                default: break
                }
            }
            if isInit { return podPolicy != "Never" && exitCode != 0 }   // init containers rerun only after a failure
            switch podPolicy {
            case "Never": return false
            case "OnFailure": return exitCode != 0
            default: return true
            }
        }
        for (field, isInit) in [("containerStatuses", false), ("initContainerStatuses", true)] {
            let olds = old[path: ["status", field]]?.array ?? [], news = new[path: ["status", field]]?.array ?? []
            let containers = spec[isInit ? "initContainers" : "containers"]?.array ?? []
            for (i, o) in olds.enumerated() {
                guard let exit = o[path: ["state", "terminated"]].map({ $0["exitCode"]?.int ?? 0 }) else { continue }
                let cname = o["name"]?.string
                guard news.contains(where: { $0["name"]?.string == cname && $0[path: ["state", "terminated"]] == nil }) else { continue }
                let c = containers.first { $0["name"]?.string == cname }
                if !shouldRestart(c, exitCode: exit, isInit: isInit) {
                    causes.append(.init(reason: "FieldValueForbidden", field: "status.\(field)[\(i)].state",
                                        message: "Forbidden: may not be transitioned to non-terminated state"))
                }
            }
        }
        func ipFamily(_ s: String) -> Int? {
            var a4 = in_addr(), a6 = in6_addr()
            if inet_pton(AF_INET, s, &a4) == 1 { return 4 }
            if inet_pton(AF_INET6, s, &a6) == 1 { return 6 }
            return nil
        }
        for (list, single) in [("podIPs", "podIP"), ("hostIPs", "hostIP")] {
            let ips = (new[path: ["status", list]]?.array ?? []).map { $0["ip"]?.string ?? "" }
            for (i, ip) in ips.enumerated() where ipFamily(ip) == nil {
                causes.append(.init(reason: "FieldValueInvalid", field: "status.\(list)[\(i)]",
                                    message: "Invalid value: \"\(ip)\": must be a valid IP address"))
            }
            if ips.count > 1, ips.count > 2 || Set(ips.compactMap(ipFamily)).count != 2 {
                causes.append(.init(reason: "FieldValueInvalid", field: "status.\(list)",
                                    message: "Invalid value: \(ips): may specify no more than one IP for each IP family"))
            }
            if list == "hostIPs", let first = ips.first, first != (new[path: ["status", single]]?.string ?? "") {
                causes.append(.init(reason: "FieldValueInvalid", field: "status.hostIPs[0].ip",
                                    message: "Invalid value: \"\(first)\": must be equal to `hostIP`"))
            }
        }
        if !causes.isEmpty { throw APIError.invalid(kind: "Pod", name: name, causes) }
    }
}
