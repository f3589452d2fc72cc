// What a kubelet's own identity (user system:node:<name> in group system:nodes) may do, as a kube-apiserver run with
// --authorization-mode=Node,RBAC and the NodeRestriction admission plugin allows it.
//
// Copied from:
// - plugin/pkg/auth/authorizer/node/node_authorizer.go (AuthorizeNodeWithSelectors on, as in 1.32): secrets and
//   configmaps get/list/watch only of one named object (a list/watch names it with the field selector
//   metadata.name=<name>, which the real RequestInfo turns into the request's name) referenced by a pod bound to the
//   node; serviceaccounts only create of the token subresource for a pod's service account; leases only in
//   kube-node-lease with the node's own name (any name on create); nodes get/list/watch only of its own Node
//   (list/watch with metadata.name=<self>), create/update/patch and status update/patch; pods get of a related pod,
//   list/watch with spec.nodeName=<self> (or one related pod by name), create/delete, status update/patch, eviction
//   create; the reasons ("no relationship found between node 'n1' and this object", ...) are the real ones.
// - plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go NodeRules() for everything else this server serves:
//   create tokenreviews/subjectaccessreviews, get/list/watch services, create/update/patch events, get endpoints,
//   create/get/list/watch certificatesigningrequests. Nothing else (no namespaces, no endpointslices).
// - plugin/pkg/admission/noderestriction/admission.go: a node may create only mirror pods bound to itself (controller
//   owner reference to its Node with the right uid, no service account, secret, configmap or claim references),
//   delete and evict only pods bound to it, update the status only of pods bound to it (labels unchanged), create
//   and modify only its own Node and Lease, never change its taints, and set/modify no kubernetes.io / k8s.io labels
//   but the kubelet ones (kubernetes.io/hostname, .../arch, .../os, instance-type, zone/region, and the
//   kubelet.kubernetes.io and node.kubernetes.io namespaces), and nothing under node-restriction.kubernetes.io;
//   its TokenRequests must be bound to a pod (with uid) scheduled on it.
// NOT copied: persistent volumes/claims, volume attachments, CSI and DRA objects (not served here); the graph is
// not a cache but read from the store on every request (so it is never stale, the real one can lag a moment).

import Foundation

extension KubeAPIServerCore {
    /// The node name of a kubelet identity: user "system:node:<name>" in group system:nodes (both needed, like
    /// pkg/auth/nodeidentifier).
    static func nodeName(of user: KubeUser) -> String? {
        guard user.name.hasPrefix("system:node:"), user.groups.contains("system:nodes") else { return nil }
        return String(user.name.dropFirst("system:node:".count))
    }

    /// The name a request is about: the path's, or for list/watch the one the field selector pins with
    /// metadata.name=<name> (the real RequestInfo does the same).
    static func requestName(_ t: APITarget, verb: String, query: [String: String]) -> String? {
        if let n = t.name { return n }
        guard verb == "list" || verb == "watch", let text = query["fieldSelector"], !text.isEmpty else { return nil }
        for part in text.split(separator: ",") {
            let p = String(part)
            for op in ["==", "="] {
                if let r = p.range(of: op), p[..<r.lowerBound] == "metadata.name", !p.contains("!=") {
                    let v = String(p[r.upperBound...])
                    return v.isEmpty ? nil : v
                }
            }
        }
        return nil
    }

    /// True when the field selector requires `field` = `value`.
    private static func selectorRequires(_ query: [String: String], field: String, value: String) -> Bool {
        guard let text = query["fieldSelector"] else { return false }
        return text.split(separator: ",").contains { part in
            let p = String(part)
            return p == "\(field)=\(value)" || p == "\(field)==\(value)"
        }
    }

    /// The node authorizer's decision for a node: (allowed, reason for a refusal).
    func nodeAuthorize(node: String, verb: String, target t: APITarget, name: String?, query: [String: String]) -> (Bool, String) {
        let r = t.resource, sub = t.subresource ?? ""
        let noRelation = "no relationship found between node '\(node)' and this object"
        switch (r.group, r.plural) {
        case ("", "secrets"), ("", "configmaps"):
            guard ["get", "list", "watch"].contains(verb) else { return (false, "can only read resources of this type") }
            guard sub.isEmpty else { return (false, "cannot read subresource") }
            guard let ns = t.namespace, !ns.isEmpty else { return (false, "can only read namespaced object of this type") }
            guard let name, !name.isEmpty else { return (false, "No Object name found") }
            let refs = podsOnNode(node).contains { pod in
                pod[path: ["metadata", "namespace"]]?.string == ns
                    && (r.plural == "secrets" ? Self.secretNames(pod) : Self.configMapNames(pod)).contains(name)
            }
            return refs ? (true, "") : (false, noRelation)
        case ("", "serviceaccounts"):
            guard verb == "create", let name, !name.isEmpty else {
                return (false, "can only create tokens for individual service accounts")
            }
            guard sub == "token" else { return (false, "can only create token subresource of serviceaccount") }
            let related = podsOnNode(node).contains {
                $0[path: ["metadata", "namespace"]]?.string == t.namespace
                    && ($0[path: ["spec", "serviceAccountName"]]?.string ?? "") == name
            }
            return related ? (true, "") : (false, noRelation)
        case ("coordination.k8s.io", "leases"):
            guard ["get", "create", "update", "patch", "delete"].contains(verb) else {
                return (false, "can only get, create, update, patch, or delete a node lease")
            }
            guard t.namespace == "kube-node-lease" else {
                return (false, "can only access leases in the \"kube-node-lease\" system namespace")
            }
            if verb != "create" && name != node {
                return (false, "can only access node lease with the same name as the requesting node")
            }
            return (true, "")
        case ("", "nodes"):
            switch (sub, verb) {
            case ("", "create"), ("", "update"), ("", "patch"), ("status", "update"), ("status", "patch"):
                return (true, "")
            case ("", "get"), ("", "list"), ("", "watch"):
                switch name {
                case node?: return (true, "")
                case nil, "": return (false, "node '\(node)' cannot read all nodes, only its own Node object")
                case let other?: return (false, "node '\(node)' cannot read '\(other)', only its own Node object")
                }
            default: return (false, "")
            }
        case ("", "pods"):
            switch (sub, verb) {
            case ("", "get"):
                guard let name, !name.isEmpty else { return (false, "No Object name found") }
                return podBound(node: node, namespace: t.namespace, name: name) ? (true, "") : (false, noRelation)
            case ("", "list"), ("", "watch"):
                if Self.selectorRequires(query, field: "spec.nodeName", value: node) { return (true, "") }
                if let name, !name.isEmpty {
                    return podBound(node: node, namespace: t.namespace, name: name) ? (true, "") : (false, noRelation)
                }
                return (false, "can only list/watch pods with spec.nodeName field selector")
            case ("", "create"), ("", "delete"), ("status", "update"), ("status", "patch"), ("eviction", "create"):
                return (true, "")
            default: return (false, "")
            }
        default:
            return (Self.nodeRulesAllow(verb: verb, group: r.group, resource: r.plural, subresource: sub), "")
        }
    }

    /// The static rules of bootstrappolicy NodeRules() for the resources this server serves.
    static func nodeRulesAllow(verb: String, group: String, resource: String, subresource: String) -> Bool {
        let res = subresource.isEmpty ? resource : "\(resource)/\(subresource)"
        let rules: [(String, [String], [String])] = [
            ("", ["services"], ["get", "list", "watch"]),
            ("", ["events"], ["create", "update", "patch"]),
            ("", ["endpoints"], ["get"]),
            ("certificates.k8s.io", ["certificatesigningrequests"], ["create", "get", "list", "watch"]),
            ("authentication.k8s.io", ["tokenreviews"], ["create"]),
            ("authorization.k8s.io", ["subjectaccessreviews", "localsubjectaccessreviews"], ["create"]),
        ]
        return rules.contains { $0.0 == group && $0.1.contains(res) && $0.2.contains(verb) }
    }

    /// Pods bound to the node (spec.nodeName), in every namespace.
    func podsOnNode(_ node: String) -> [KJSON] {
        store.all(Self.pods, namespace: nil).map(\.1).filter { $0[path: ["spec", "nodeName"]]?.string == node }
    }

    private func podBound(node: String, namespace: String?, name: String) -> Bool {
        store.get(Self.pods, namespace: namespace, name: name)?[path: ["spec", "nodeName"]]?.string == node
    }

    private static func allContainers(_ pod: KJSON) -> [KJSON] {
        ["initContainers", "containers", "ephemeralContainers"].flatMap { pod[path: ["spec", $0]]?.array ?? [] }
    }

    /// Secrets a pod references (podutil.VisitPodSecretNames: image pull secrets, secret and projected volumes,
    /// the secret refs of volume plugins, env and envFrom).
    static func secretNames(_ pod: KJSON) -> Set<String> {
        var out = Set<String>()
        func add(_ v: KJSON?) { if let s = v?.string, !s.isEmpty { out.insert(s) } }
        for s in pod[path: ["spec", "imagePullSecrets"]]?.array ?? [] { add(s["name"]) }
        for v in pod[path: ["spec", "volumes"]]?.array ?? [] {
            add(v[path: ["secret", "secretName"]])
            for src in v[path: ["projected", "sources"]]?.array ?? [] { add(src[path: ["secret", "name"]]) }
            for plugin in v.object ?? [:] {
                add(plugin.value[path: ["secretRef", "name"]])
                add(plugin.value[path: ["nodePublishSecretRef", "name"]])
            }
        }
        for c in allContainers(pod) {
            for e in c["envFrom"]?.array ?? [] { add(e[path: ["secretRef", "name"]]) }
            for e in c["env"]?.array ?? [] { add(e[path: ["valueFrom", "secretKeyRef", "name"]]) }
        }
        return out
    }

    /// ConfigMaps a pod references (podutil.VisitPodConfigmapNames: configMap and projected volumes, env, envFrom).
    static func configMapNames(_ pod: KJSON) -> Set<String> {
        var out = Set<String>()
        func add(_ v: KJSON?) { if let s = v?.string, !s.isEmpty { out.insert(s) } }
        for v in pod[path: ["spec", "volumes"]]?.array ?? [] {
            add(v[path: ["configMap", "name"]])
            for src in v[path: ["projected", "sources"]]?.array ?? [] { add(src[path: ["configMap", "name"]]) }
        }
        for c in allContainers(pod) {
            for e in c["envFrom"]?.array ?? [] { add(e[path: ["configMapRef", "name"]]) }
            for e in c["env"]?.array ?? [] { add(e[path: ["valueFrom", "configMapKeyRef", "name"]]) }
        }
        return out
    }

    // MARK: NodeRestriction admission

    /// admission.NewForbidden: `<resource> "<name>" is forbidden: <why>` (no name: `<resource> is forbidden: …`).
    static func admissionForbidden(_ r: KubeResource, _ name: String, _ why: String) -> APIError {
        let qualified = r.group.isEmpty ? r.plural : "\(r.plural).\(r.group)"
        var details: KJSON = .object(["kind": .string(r.plural)])
        if !name.isEmpty { details["name"] = .string(name) }
        if !r.group.isEmpty { details["group"] = .string(r.group) }
        let subject = name.isEmpty ? qualified : "\(qualified) \"\(name)\""
        return APIError(code: 403, reason: "Forbidden", message: "\(subject) is forbidden: \(why)", details: details)
    }

    /// NodeRestriction on create (the object as it will be stored, after the other admission plugins).
    func nodeRestrictionCreate(_ r: KubeResource, _ obj: KJSON, user: KubeUser) throws {
        guard options.nodeRestriction, let node = Self.nodeName(of: user) else { return }
        let name = obj[path: ["metadata", "name"]]?.string ?? ""
        func forbid(_ why: String) -> APIError { Self.admissionForbidden(r, name, why) }
        switch r.kind {
        case "Pod":
            guard obj[path: ["metadata", "annotations", "kubernetes.io/config.mirror"]] != nil else {
                throw forbid("pod does not have \"kubernetes.io/config.mirror\" annotation, node \"\(node)\" can only create mirror pods")
            }
            guard obj[path: ["spec", "nodeName"]]?.string == node else {
                throw forbid("node \"\(node)\" can only create pods with spec.nodeName set to itself")
            }
            let owners = obj[path: ["metadata", "ownerReferences"]]?.array ?? []
            if owners.count > 1 { throw forbid("node \"\(node)\" can only create pods with a single owner reference set to itself") }
            guard let owner = owners.first else {
                throw forbid("node \"\(node)\" can only create pods with an owner reference set to itself")
            }
            guard owner["apiVersion"]?.string == "v1", owner["kind"]?.string == "Node", owner["name"]?.string == node else {
                throw forbid("node \"\(node)\" can only create pods with an owner reference set to itself")
            }
            guard owner["controller"] == .bool(true) else {
                throw forbid("node \"\(node)\" can only create pods with a controller owner reference set to itself")
            }
            if owner["blockOwnerDeletion"] == .bool(true) {
                throw forbid("node \"\(node)\" must not set blockOwnerDeletion on an owner reference")
            }
            guard let nodeObj = store.get(KubeResource.find(kind: "Node")!, namespace: nil, name: node) else {
                throw APIError.notFound(KubeResource.find(kind: "Node")!, node)
            }
            let uid = nodeObj[path: ["metadata", "uid"]]?.string ?? ""
            if owner["uid"]?.string != uid {
                throw forbid("node \(node) UID mismatch: expected \(owner["uid"]?.string ?? "") got \(uid)")
            }
            if !(obj[path: ["spec", "serviceAccountName"]]?.string ?? "").isEmpty {
                throw forbid("node \"\(node)\" can not create pods that reference a service account")
            }
            if !Self.secretNames(obj).isEmpty { throw forbid("node \"\(node)\" can not create pods that reference secrets") }
            if !Self.configMapNames(obj).isEmpty { throw forbid("node \"\(node)\" can not create pods that reference configmaps") }
            let volumes = obj[path: ["spec", "volumes"]]?.array ?? []
            if volumes.contains(where: { v in (v[path: ["projected", "sources"]]?.array ?? []).contains { $0["clusterTrustBundle"] != nil } }) {
                throw forbid("node \"\(node)\" can not create pods that reference clustertrustbundles")
            }
            if volumes.contains(where: { $0["persistentVolumeClaim"] != nil }) {
                throw forbid("node \"\(node)\" can not create pods that reference persistentvolumeclaims")
            }
        case "Node":
            guard name == node else { throw forbid("node \"\(node)\" is not allowed to modify node \"\(name)\"") }
            if obj[path: ["spec", "configSource"]] != nil {
                throw forbid("node \"\(node)\" is not allowed to create pods with a non-nil configSource")
            }
            let bad = Self.forbiddenNodeLabels(Self.modifiedLabels(labelsOf(obj), [:]))
            if !bad.isEmpty {
                throw forbid("node \"\(node)\" is not allowed to set the following labels: \(bad.joined(separator: ", "))")
            }
        case "Lease":
            if obj[path: ["metadata", "namespace"]]?.string != "kube-node-lease" {
                throw forbid("can only access leases in the \"kube-node-lease\" system namespace")
            }
            if name != node { throw forbid("can only access node lease with the same name as the requesting node") }
        default: break
        }
    }

    /// NodeRestriction on update/patch (old and new object) and on the create-like subresources (token, eviction).
    func nodeRestrictionWrite(_ t: APITarget, verb: String, old: KJSON?, new: KJSON?, user: KubeUser) throws {
        guard options.nodeRestriction, let node = Self.nodeName(of: user) else { return }
        let r = t.resource, name = t.name ?? ""
        func forbid(_ why: String) -> APIError { Self.admissionForbidden(r, name, why) }
        switch (r.kind, t.subresource) {
        case ("Pod", "status"):
            guard old?[path: ["spec", "nodeName"]]?.string == node else {
                throw forbid("node \"\(node)\" can only update pod status for pods with spec.nodeName set to itself")
            }
            if let old, let new, labelsOf(old) != labelsOf(new) {
                throw forbid("node \"\(node)\" cannot update labels through pod status")
            }
        case ("Pod", "eviction"):
            guard let pod = store.get(r, namespace: t.namespace, name: name) else { throw APIError.notFound(r, name) }
            if pod[path: ["spec", "nodeName"]]?.string != node {
                throw forbid("node \(node) can only evict pods with spec.nodeName set to itself")
            }
        case ("Pod", nil):
            if verb == "delete" {
                guard let pod = store.get(r, namespace: t.namespace, name: name) else { throw APIError.notFound(r, name) }
                if pod[path: ["spec", "nodeName"]]?.string != node {
                    throw forbid("node \"\(node)\" can only delete pods with spec.nodeName set to itself")
                }
            } else {
                throw forbid("unexpected operation \"\(verb.uppercased())\", node \"\(node)\" can only create and delete mirror pods")
            }
        case ("Node", _):
            guard name == node else { throw forbid("node \"\(node)\" is not allowed to modify node \"\(name)\"") }
            guard let old, let new else { return }
            if let cs = new[path: ["spec", "configSource"]], !cs.isNull, cs != old[path: ["spec", "configSource"]] {
                throw forbid("node \"\(node)\" is not allowed to update configSource to a new non-nil configSource")
            }
            let oldTaints = old[path: ["spec", "taints"]]?.array ?? [], newTaints = new[path: ["spec", "taints"]]?.array ?? []
            if oldTaints != newTaints { throw forbid("node \"\(node)\" is not allowed to modify taints") }
            let bad = Self.forbiddenNodeLabels(Self.modifiedLabels(labelsOf(new), labelsOf(old)))
            if !bad.isEmpty { throw forbid("is not allowed to modify labels: \(bad.joined(separator: ", "))") }
        case ("Lease", _):
            if t.namespace != "kube-node-lease" {
                throw forbid("can only access leases in the \"kube-node-lease\" system namespace")
            }
            if name != node { throw forbid("can only access node lease with the same name as the requesting node") }
        case ("ServiceAccount", "token"):
            guard let ref = new?[path: ["spec", "boundObjectRef"]], ref["apiVersion"]?.string == "v1",
                  ref["kind"]?.string == "Pod", let podName = ref["name"]?.string, !podName.isEmpty else {
                throw forbid("node requested token not bound to a pod")
            }
            guard let uid = ref["uid"]?.string, !uid.isEmpty else {
                throw forbid("node requested token with a pod binding without a uid")
            }
            guard let pod = store.get(Self.pods, namespace: t.namespace, name: podName) else {
                throw APIError.notFound(Self.pods, podName)
            }
            if pod[path: ["metadata", "uid"]]?.string != uid {
                throw forbid("the UID in the bound object reference (\(uid)) does not match the UID in record. The object might have been deleted and then recreated")
            }
            if pod[path: ["spec", "nodeName"]]?.string != node {
                throw forbid("node requested token bound to a pod scheduled on a different node")
            }
        default: break
        }
    }

    static func modifiedLabels(_ a: [String: String], _ b: [String: String]) -> Set<String> {
        var out = Set<String>()
        for (k, v) in a where b[k] != v { out.insert(k) }
        for (k, v) in b where a[k] != v { out.insert(k) }
        return out
    }

    /// getForbiddenLabels: node-restriction.kubernetes.io labels, and kubernetes.io / k8s.io labels that are not
    /// kubelet labels (k8s.io/kubelet/pkg/apis IsKubeletLabel). Sorted, like sets.String.List().
    static func forbiddenNodeLabels(_ modified: Set<String>) -> [String] {
        func ns(_ key: String) -> String {
            let parts = key.split(separator: "/", maxSplits: 1)
            return parts.count == 2 ? String(parts[0]) : ""
        }
        func isKubernetes(_ key: String) -> Bool {
            let n = ns(key)
            return n == "kubernetes.io" || n.hasSuffix(".kubernetes.io") || n == "k8s.io" || n.hasSuffix(".k8s.io")
        }
        let kubeletLabels: Set<String> = [
            "kubernetes.io/hostname", "topology.kubernetes.io/zone", "topology.kubernetes.io/region",
            "failure-domain.beta.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region",
            "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type", "beta.kubernetes.io/os",
            "beta.kubernetes.io/arch", "kubernetes.io/os", "kubernetes.io/arch",
        ]
        func isKubelet(_ key: String) -> Bool {
            if kubeletLabels.contains(key) { return true }
            let n = ns(key)
            return ["kubelet.kubernetes.io", "node.kubernetes.io"].contains { n == $0 || n.hasSuffix("." + $0) }
        }
        var out = Set<String>()
        for key in modified {
            let n = ns(key)
            if n == "node-restriction.kubernetes.io" || n.hasSuffix(".node-restriction.kubernetes.io") { out.insert(key) }
            if isKubernetes(key) && !isKubelet(key) { out.insert(key) }
        }
        return out.sorted()
    }
}
