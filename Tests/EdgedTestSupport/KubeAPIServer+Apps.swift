// apps/v1 Deployments, ReplicaSets and DaemonSets as the test API server stores them: INERT objects. No controller
// runs for them (no ReplicaSets from Deployments, no pods from either, no status, no revisions, no garbage
// collection of what they own), so `kubectl apply -f` of a manifest with a Deployment works and the object can be
// read back, and a test that needs the pods creates them itself (with ownerReferences if it wants them to look owned).
//
// Copied from pkg/apis/apps/v1/defaults.go, pkg/apis/apps/validation/validation.go and the registry strategies:
// - Defaults: Deployment replicas 1, strategy RollingUpdate with maxUnavailable/maxSurge "25%", revisionHistoryLimit
//   10, progressDeadlineSeconds 600; ReplicaSet replicas 1; DaemonSet updateStrategy RollingUpdate with
//   maxUnavailable 1 and maxSurge 0, revisionHistoryLimit 10; the pod template's spec gets the pod spec defaults.
//   status is emptied on create (PrepareForCreate) and kept by updates of the main resource (status subresource).
// - Validation: Deployment and ReplicaSet need spec.selector (`spec.selector: Required value`); the selector
//   (matchLabels and matchExpressions In/NotIn/Exists/DoesNotExist) must select the template's labels
//   (`spec.template.metadata.labels: Invalid value: map[string]string{...}: `selector` does not match template
//   `labels``); the template needs containers with a name and an image; spec.selector is immutable in apps/v1
//   (`spec.selector: Invalid value: v1.LabelSelector{...}: field is immutable`).
// NOT copied: the scale subresource, empty-selector and rollout-strategy validation, the rest of pod template
// validation.

import Foundation

extension KubeAPIServerCore {
    /// Defaults and validation of an apps/v1 object on create (`old` nil) and update.
    static func prepareWorkload(_ r: KubeResource, _ obj: inout KJSON, old: KJSON?, name: String) throws {
        var spec = obj["spec"] ?? .object([:])
        switch r.kind {
        case "Deployment":
            if spec["replicas"] == nil { spec["replicas"] = .int(1) }
            var strategy = spec["strategy"] ?? .object([:])
            if (strategy["type"]?.string ?? "").isEmpty { strategy["type"] = .string("RollingUpdate") }
            if strategy["type"]?.string == "RollingUpdate" {
                var ru = strategy["rollingUpdate"] ?? .object([:])
                if ru["maxUnavailable"] == nil { ru["maxUnavailable"] = .string("25%") }
                if ru["maxSurge"] == nil { ru["maxSurge"] = .string("25%") }
                strategy["rollingUpdate"] = ru
            }
            spec["strategy"] = strategy
            if spec["revisionHistoryLimit"] == nil { spec["revisionHistoryLimit"] = .int(10) }
            if spec["progressDeadlineSeconds"] == nil { spec["progressDeadlineSeconds"] = .int(600) }
        case "ReplicaSet":
            if spec["replicas"] == nil { spec["replicas"] = .int(1) }
        default:   // DaemonSet
            var strategy = spec["updateStrategy"] ?? .object([:])
            if (strategy["type"]?.string ?? "").isEmpty { strategy["type"] = .string("RollingUpdate") }
            if strategy["type"]?.string == "RollingUpdate" {
                var ru = strategy["rollingUpdate"] ?? .object([:])
                if ru["maxUnavailable"] == nil { ru["maxUnavailable"] = .int(1) }
                if ru["maxSurge"] == nil { ru["maxSurge"] = .int(0) }
                strategy["rollingUpdate"] = ru
            }
            spec["updateStrategy"] = strategy
            if spec["revisionHistoryLimit"] == nil { spec["revisionHistoryLimit"] = .int(10) }
        }
        if spec[path: ["template", "spec"]] != nil {
            spec[path: ["template", "spec"]] = defaultPodSpec(spec[path: ["template", "spec"]]!, create: false)
        }
        obj["spec"] = spec
        if old == nil { obj["status"] = .object([:]) }

        var causes: [APIError.Cause] = []
        let selector = spec["selector"].flatMap { $0.isNull ? nil : $0 }
        if selector == nil, r.kind != "DaemonSet" {
            causes.append(.init(reason: "FieldValueRequired", field: "spec.selector", message: "Required value"))
        } else {
            let templateLabels = spec[path: ["template", "metadata", "labels"]]?.object
            let labels = (templateLabels ?? [:]).compactMapValues(\.string)
            if !selects(selector, labels) {
                causes.append(.init(reason: "FieldValueInvalid", field: "spec.template.metadata.labels",
                                    message: "Invalid value: \(goMap(templateLabels)): `selector` does not match template `labels`"))
            }
        }
        let containers = spec[path: ["template", "spec", "containers"]]?.array ?? []
        if containers.isEmpty {
            causes.append(.init(reason: "FieldValueRequired", field: "spec.template.spec.containers", message: "Required value"))
        }
        for (i, c) in containers.enumerated() {
            for field in ["name", "image"] where (c[field]?.string ?? "").isEmpty {
                causes.append(.init(reason: "FieldValueRequired", field: "spec.template.spec.containers[\(i)].\(field)", message: "Required value"))
            }
        }
        if let old, old[path: ["spec", "selector"]] != spec["selector"] {
            causes.append(.init(reason: "FieldValueInvalid", field: "spec.selector",
                                message: "Invalid value: \(goLabelSelector(selector)): field is immutable"))
        }
        if !causes.isEmpty { throw APIError.invalid(kind: r.kind, name: name, group: r.group, causes) }
    }

    /// metav1.LabelSelectorAsSelector(sel).Matches(labels): nil selects nothing, {} everything.
    static func selects(_ selector: KJSON?, _ labels: [String: String]) -> Bool {
        guard let selector else { return false }
        var reqs: [LabelSelector.Requirement] = []
        for (k, v) in selector["matchLabels"]?.object ?? [:] {
            reqs.append(.init(key: k, op: .equals, values: [v.string ?? ""]))
        }
        for e in selector["matchExpressions"]?.array ?? [] {
            let values = (e["values"]?.array ?? []).compactMap(\.string)
            let op: LabelSelector.Op
            switch e["operator"]?.string ?? "" {
            case "In": op = .inSet
            case "NotIn": op = .notIn
            case "Exists": op = .exists
            case "DoesNotExist": op = .doesNotExist
            default: return false
            }
            reqs.append(.init(key: e["key"]?.string ?? "", op: op, values: values))
        }
        return LabelSelector(requirements: reqs).matches(labels)
    }

    /// A map[string]string as Go's %#v prints it (keys sorted).
    static func goMap(_ m: [String: KJSON]?) -> String {
        guard let m else { return "map[string]string(nil)" }
        let items = m.keys.sorted().map { "\(goQuote($0)):\(goQuote(m[$0]?.string ?? ""))" }
        return "map[string]string{" + items.joined(separator: ", ") + "}"
    }

    /// A metav1.LabelSelector as Go's %#v prints it.
    static func goLabelSelector(_ s: KJSON?) -> String {
        guard let s else { return "null" }
        let exprs = s["matchExpressions"]?.array.map { list in
            "[]v1.LabelSelectorRequirement{" + list.map { e in
                let values = e["values"]?.array.map { "[]string{" + $0.map { goQuote($0.string ?? "") }.joined(separator: ", ") + "}" }
                    ?? "[]string(nil)"
                return "v1.LabelSelectorRequirement{Key:\(goQuote(e["key"]?.string ?? "")), Operator:\(goQuote(e["operator"]?.string ?? "")), Values:\(values)}"
            }.joined(separator: ", ") + "}"
        } ?? "[]v1.LabelSelectorRequirement(nil)"
        return "v1.LabelSelector{MatchLabels:\(goMap(s["matchLabels"]?.object)), MatchExpressions:\(exprs)}"
    }
}
