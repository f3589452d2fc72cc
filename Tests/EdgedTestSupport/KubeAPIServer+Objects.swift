// Object semantics of the test API server: create/update/delete with system metadata, defaults, status
// subresource rules, graceful pod deletion, finalizers, and the per-resource side effects.

import Crypto
import Foundation

/// The server's logic and state; the NIO layer only moves bytes to and from `serve`.
final class KubeAPIServerCore: @unchecked Sendable {
    let store = KubeStore()
    let pki: TestPKI
    let options: KubeAPIServer.Options
    /// "127.0.0.1:PORT", set once the listener is bound (before any request).
    var serverAddress = ""
    /// Signs ServiceAccount tokens (HS256).
    let tokenKey = SymmetricKey(size: .bits256)
    /// Static tokens, grants, review counters and kubelet proxy settings (KubeAPIServer+Reviews/+Kubelet).
    let kubeletSide = KubeletSideState()
    /// The node lifecycle controller's memory of each node (KubeAPIServer+NodeLifecycle.swift); under the store lock.
    let nodeHealth = NodeHealthState()
    /// Open watch streams and their users (KubeAPIServer+Traffic.swift).
    let traffic = KubeTraffic()
    private var clusterIPCounter = 10
    private var requestLog: [KubeAPIServer.RequestRecord] = []
    private let logLock = NSLock()

    static let namespaces = KubeResource.find(group: "", version: "v1", plural: "namespaces")!
    static let pods = KubeResource.find(group: "", version: "v1", plural: "pods")!
    static let secrets = KubeResource.find(group: "", version: "v1", plural: "secrets")!
    static let configMaps = KubeResource.find(group: "", version: "v1", plural: "configmaps")!
    static let services = KubeResource.find(group: "", version: "v1", plural: "services")!
    static let serviceAccounts = KubeResource.find(group: "", version: "v1", plural: "serviceaccounts")!
    static let csrs = KubeResource.find(group: "certificates.k8s.io", version: "v1", plural: "certificatesigningrequests")!

    init(pki: TestPKI, options: KubeAPIServer.Options) {
        self.pki = pki
        self.options = options
    }

    func log(_ record: KubeAPIServer.RequestRecord) {
        logLock.withLock { requestLog.append(record) }
        if options.requestLog { print("kube-apiserver(test): \(record.method) \(record.path) \(record.code) \(record.user)") }
    }

    var requests: [KubeAPIServer.RequestRecord] { logLock.withLock { requestLog } }

    static func timestamp(_ d: Date = Date()) -> String { d.formatted(.iso8601) }

    /// Creates the objects every cluster starts with (under the lock, before serving).
    func bootstrap() throws {
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            _ = try create(Self.namespaces, namespace: nil, body: .object(["metadata": .object(["name": .string(ns)])]),
                           user: .internalAdmin)
        }
        let svc: KJSON = .object([
            "metadata": .object(["name": .string("kubernetes"), "labels": .object([
                "component": .string("apiserver"), "provider": .string("kubernetes")])]),
            "spec": .object(["clusterIP": .string("10.96.0.1"), "type": .string("ClusterIP"), "ports": .array([.object([
                "name": .string("https"), "port": .int(443), "protocol": .string("TCP"), "targetPort": .int(6443)])])]),
        ])
        _ = try create(Self.services, namespace: "default", body: svc, user: .internalAdmin)
        try refreshClusterInfo()
    }

    // MARK: create

    func create(_ r: KubeResource, namespace: String?, body: KJSON, user: KubeUser) throws -> KJSON {
        var obj = body
        if let k = obj["kind"]?.string, k != r.kind {
            throw APIError.badRequest("the kind in the data (\(k)) does not match the expected kind (\(r.kind))")
        }
        obj["kind"] = .string(r.kind)
        obj["apiVersion"] = .string(r.apiVersion)
        var meta = obj["metadata"] ?? .object([:])
        if r.namespaced {
            if let ns = meta["namespace"]?.string, !ns.isEmpty, ns != namespace {
                throw APIError.badRequest("the namespace of the provided object does not match the namespace sent on the request")
            }
            meta["namespace"] = namespace.map(KJSON.string)
        } else {
            meta["namespace"] = nil
        }
        var name = meta["name"]?.string ?? ""
        if name.isEmpty, let prefix = meta["generateName"]?.string, !prefix.isEmpty {
            let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
            repeat {
                name = prefix + String((0..<5).map { _ in alphabet.randomElement()! })
            } while store.get(r, namespace: namespace, name: name) != nil
        }
        if name.isEmpty {
            throw APIError.invalid(kind: r.kind, name: "", group: r.group, [
                .init(reason: "FieldValueRequired", field: "metadata.name", message: "Required value: name or generateName is required")])
        }
        if r.group == Self.rbacGroup {   // ValidateRBACName: a path segment ("system:…" is fine)
            if let msg = Self.pathSegmentNameErrors(name).first {
                throw APIError.invalid(kind: r.kind, name: name, group: r.group, [
                    .init(reason: "FieldValueInvalid", field: "metadata.name", message: "Invalid value: \(Self.goQuote(name)): \(msg)")])
            }
        } else if !Self.isDNSSubdomain(name) {
            throw APIError.invalid(kind: r.kind, name: name, group: r.group, [
                .init(reason: "FieldValueInvalid", field: "metadata.name",
                      message: "Invalid value: \"\(name)\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")])
        }
        if store.get(r, namespace: namespace, name: name) != nil { throw APIError.alreadyExists(r, name) }
        meta["name"] = .string(name)
        meta["uid"] = .string(UUID().uuidString.lowercased())
        meta["creationTimestamp"] = .string(Self.timestamp())
        meta["resourceVersion"] = nil
        meta["deletionTimestamp"] = nil
        meta["deletionGracePeriodSeconds"] = nil
        meta["generation"] = .int(1)
        obj["metadata"] = meta
        try prepareForCreate(r, &obj, user: user)
        let stored = store.commit(.added, r, namespace: namespace, name: name, object: obj)
        try afterWrite(r, stored, old: nil)
        return stored
    }

    static func isDNSSubdomain(_ s: String) -> Bool {
        guard s.count <= 253, let f = s.first, let l = s.last, f.isLetter || f.isNumber, l.isLetter || l.isNumber else {
            return false
        }
        return s.allSatisfy { ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "-" || $0 == "." }
    }

    /// Per-resource defaults and validation on create (a subset of each registry strategy + defaulting).
    private func prepareForCreate(_ r: KubeResource, _ obj: inout KJSON, user: KubeUser) throws {
        let name = obj[path: ["metadata", "name"]]?.string ?? ""
        switch r.kind {
        case "Namespace":
            obj["spec"] = .object(["finalizers": .array([.string("kubernetes")])])
            obj["status"] = .object(["phase": .string("Active")])
        case "Pod":
            try validatePod(obj, name: name)
            if options.serviceAccounts {
                try admitServiceAccount(&obj, namespace: obj[path: ["metadata", "namespace"]]?.string ?? "")
            } else if obj[path: ["spec", "serviceAccountName"]] == nil {
                obj[path: ["spec", "serviceAccountName"]] = .string("default")
            }
            try nodeRestrictionCreate(r, obj, user: user)
            obj["spec"] = Self.defaultPodSpec(obj["spec"] ?? .object([:]), create: true,
                                                tolerationSeconds: options.defaultTolerationSeconds)
            obj["status"] = .object(["phase": .string("Pending"), "qosClass": .string(Self.qosClass(obj["spec"]!))])
        case "Node", "Lease":
            try nodeRestrictionCreate(r, obj, user: user)
        case "Secret":
            if obj["type"] == nil { obj["type"] = .string("Opaque") }
            if let sd = obj["stringData"]?.object {
                var data = obj["data"]?.object ?? [:]
                for (k, v) in sd { data[k] = .string(Data((v.string ?? "").utf8).base64EncodedString()) }
                obj["data"] = .object(data)
                obj["stringData"] = nil
            }
        case "Service":
            var spec = obj["spec"] ?? .object([:])
            if spec["type"] == nil { spec["type"] = .string("ClusterIP") }
            if spec["sessionAffinity"] == nil { spec["sessionAffinity"] = .string("None") }
            if spec["clusterIP"] == nil || spec["clusterIP"]?.string == "" {
                clusterIPCounter += 1
                spec["clusterIP"] = .string("10.96.\(clusterIPCounter / 256).\(clusterIPCounter % 256)")
            }
            spec["clusterIPs"] = .array([spec["clusterIP"]!])
            if let ports = spec["ports"]?.array {
                spec["ports"] = .array(ports.map { p in
                    var p = p
                    if p["protocol"] == nil { p["protocol"] = .string("TCP") }
                    if p["targetPort"] == nil { p["targetPort"] = p["port"] }
                    return p
                })
            }
            obj["spec"] = spec
            obj["status"] = .object(["loadBalancer": .object([:])])
        case "EndpointSlice":
            try Self.validateEndpointSlice(obj, old: nil, name: name)
        case "Deployment", "ReplicaSet", "DaemonSet":
            try Self.prepareWorkload(r, &obj, old: nil, name: name)
        case "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding":
            try Self.prepareRBACObject(r, &obj, old: nil, name: name)
        case "CertificateSigningRequest":
            try validateCSR(obj, name: name)
            obj[path: ["spec", "username"]] = .string(user.name)
            obj[path: ["spec", "groups"]] = .array(user.groups.map(KJSON.string))
            obj["status"] = .object([:])
        default: break
        }
    }

    private func validatePod(_ obj: KJSON, name: String) throws {
        var causes: [APIError.Cause] = []
        let containers = obj[path: ["spec", "containers"]]?.array ?? []
        if containers.isEmpty {
            causes.append(.init(reason: "FieldValueRequired", field: "spec.containers", message: "Required value"))
        }
        for (i, c) in containers.enumerated() {
            if (c["name"]?.string ?? "").isEmpty {
                causes.append(.init(reason: "FieldValueRequired", field: "spec.containers[\(i)].name", message: "Required value"))
            }
            if (c["image"]?.string ?? "").isEmpty {
                causes.append(.init(reason: "FieldValueRequired", field: "spec.containers[\(i)].image", message: "Required value"))
            }
        }
        // ValidatePodSpec's ValidateTolerations (KubeAPIServer+Tolerations.swift).
        causes += Self.validateTolerations(obj[path: ["spec", "tolerations"]]?.array ?? [], field: "spec.tolerations")
        if !causes.isEmpty { throw APIError.invalid(kind: "Pod", name: name, causes) }
    }

    /// addressType is required, one of IPv4/IPv6/FQDN, and immutable (the rest of an EndpointSlice is not checked).
    static func validateEndpointSlice(_ obj: KJSON, old: KJSON?, name: String) throws {
        let kind = "EndpointSlice", group = "discovery.k8s.io"
        guard let type = obj["addressType"]?.string, !type.isEmpty else {
            throw APIError.invalid(kind: kind, name: name, group: group, [
                .init(reason: "FieldValueRequired", field: "addressType", message: "Required value")])
        }
        guard ["IPv4", "IPv6", "FQDN"].contains(type) else {
            throw APIError.invalid(kind: kind, name: name, group: group, [
                .init(reason: "FieldValueNotSupported", field: "addressType",
                      message: "Unsupported value: \"\(type)\": supported values: \"FQDN\", \"IPv4\", \"IPv6\"")])
        }
        if let was = old?["addressType"]?.string, was != type {
            throw APIError.invalid(kind: kind, name: name, group: group, [
                .init(reason: "FieldValueInvalid", field: "addressType",
                      message: "Invalid value: \"\(type)\": field is immutable")])
        }
    }

    /// The DefaultTolerationSeconds admission plugin (plugin/pkg/admission/defaulttolerationseconds, on pod create
    /// and update, not on subresources): a not-ready or unreachable NoExecute toleration is appended with
    /// `seconds` unless one for that taint is there (same key or none, effect NoExecute or empty, any operator). So an
    /// update that removes one gets it back, as on the real server.
    static func withDefaultTolerations(_ spec: KJSON, seconds: Int) -> KJSON {
        var s = spec
        var tolerations = s["tolerations"]?.array ?? []
        for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]
        where !tolerations.contains(where: { t in   // an existing toleration of that NoExecute taint wins
            let k = t["key"]?.string ?? "", effect = t["effect"]?.string ?? ""
            return (k == key || k.isEmpty) && (effect.isEmpty || effect == "NoExecute")   // the operator is not looked at
        }) {
            tolerations.append(.object(["key": .string(key), "operator": .string("Exists"),
                                        "effect": .string("NoExecute"), "tolerationSeconds": .int(seconds)]))
        }
        s["tolerations"] = .array(tolerations)
        return s
    }

    /// The defaults kube-apiserver fills into a pod spec (SetDefaults_PodSpec/Container, requests defaulted from
    /// limits as SetDefaults_Pod does); `create` adds what admission plugins add at create only (priority and
    /// preemptionPolicy from the Priority plugin, the two tolerations of DefaultTolerationSeconds with
    /// `tolerationSeconds`, 300 unless Options.defaultTolerationSeconds says otherwise).
    /// serviceAccountName is the ServiceAccount plugin's (admitServiceAccount).
    /// The DefaultTolerationSeconds plugin also runs on updates of pods (not of their subresources): see
    /// withDefaultTolerations.
    static func defaultPodSpec(_ spec: KJSON, create: Bool, tolerationSeconds: Int = 300) -> KJSON {
        var s = spec
        var defaults: [(String, KJSON)] = [
            ("restartPolicy", .string("Always")), ("dnsPolicy", .string("ClusterFirst")),
            ("terminationGracePeriodSeconds", .int(30)), ("schedulerName", .string("default-scheduler")),
            ("securityContext", .object([:])), ("enableServiceLinks", .bool(true)),
        ]
        if create { defaults += [("priority", .int(0)), ("preemptionPolicy", .string("PreemptLowerPriority"))] }
        for (k, v) in defaults where s[k] == nil { s[k] = v }
        if s["serviceAccount"] == nil, let sa = s["serviceAccountName"] { s["serviceAccount"] = sa }
        if create { s = withDefaultTolerations(s, seconds: tolerationSeconds) }
        for field in ["containers", "initContainers"] {
            guard let list = s[field]?.array else { continue }
            s[field] = .array(list.map { c in
                var c = c
                if c["imagePullPolicy"] == nil {
                    let image = c["image"]?.string ?? ""
                    let last = image.split(separator: "/").last.map(String.init) ?? image
                    let tagged = last.contains(":") || image.contains("@")
                    c["imagePullPolicy"] = .string(!tagged || last.hasSuffix(":latest") ? "Always" : "IfNotPresent")
                }
                if c["terminationMessagePath"] == nil { c["terminationMessagePath"] = .string("/dev/termination-log") }
                if c["terminationMessagePolicy"] == nil { c["terminationMessagePolicy"] = .string("File") }
                if c["resources"] == nil { c["resources"] = .object([:]) }
                if let limits = c[path: ["resources", "limits"]]?.object, !limits.isEmpty {
                    var requests = c[path: ["resources", "requests"]]?.object ?? [:]
                    for (k, v) in limits where requests[k] == nil { requests[k] = v }
                    c[path: ["resources", "requests"]] = .object(requests)
                }
                if let ports = c["ports"]?.array {
                    c["ports"] = .array(ports.map { p in
                        var p = p
                        if p["protocol"] == nil { p["protocol"] = .string("TCP") }
                        return p
                    })
                }
                return c
            })
        }
        return s
    }

    // MARK: update (PUT, and PATCH after the patch is applied)

    func update(_ t: APITarget, body: KJSON) throws -> KJSON {
        let r = t.resource, name = t.name!
        guard let old = store.get(r, namespace: t.namespace, name: name) else { throw APIError.notFound(r, name) }
        if let n = body[path: ["metadata", "name"]]?.string, !n.isEmpty, n != name {
            throw APIError.badRequest("the name of the object (\(n)) does not match the name on the URL (\(name))")
        }
        if let k = body["kind"]?.string, k != r.kind, t.subresource == nil || t.subresource == "status" || t.subresource == "approval" {
            throw APIError.badRequest("the kind in the data (\(k)) does not match the expected kind (\(r.kind))")
        }
        if let rv = body[path: ["metadata", "resourceVersion"]]?.string, !rv.isEmpty,
           rv != old[path: ["metadata", "resourceVersion"]]?.string {
            throw APIError.staleResourceVersion(r, name)
        }
        var new: KJSON
        switch t.subresource {
        case "status":
            new = old
            new["status"] = body["status"]
            if r.kind == "Pod", options.podStatusValidation { try Self.validatePodStatusUpdate(new: new, old: old, name: name) }
        case "approval":
            new = old
            new[path: ["status", "conditions"]] = body[path: ["status", "conditions"]]
        default:
            new = body
            if r.hasStatusSubresource { new["status"] = old["status"] }
            var meta = new["metadata"] ?? .object([:])
            for k in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation",
                      "namespace", "name"] {
                meta[k] = old[path: ["metadata", k]]
            }
            new["metadata"] = meta
            if r.kind == "Pod" {
                new["spec"] = Self.withDefaultTolerations(Self.defaultPodSpec(new["spec"] ?? .object([:]), create: false),
                                                          seconds: options.defaultTolerationSeconds)
            }
            if r.kind == "EndpointSlice" { try Self.validateEndpointSlice(new, old: old, name: name) }
            try prepareForUpdate(r, &new, old: old, name: name)   // apps/v1 and RBAC objects (+Apps, +RBAC)
            if new["spec"] != old["spec"] {
                try validateSpecUpdate(r, old: old, new: new, name: name)
                new[path: ["metadata", "generation"]] = .int((old[path: ["metadata", "generation"]]?.int ?? 1) + 1)
            }
            if r.kind == "Secret", let sd = new["stringData"]?.object {
                var data = new["data"]?.object ?? [:]
                for (k, v) in sd { data[k] = .string(Data((v.string ?? "").utf8).base64EncodedString()) }
                new["data"] = .object(data)
                new["stringData"] = nil
            }
        }
        new["kind"] = .string(r.kind)
        new["apiVersion"] = .string(r.apiVersion)
        new[path: ["metadata", "resourceVersion"]] = old[path: ["metadata", "resourceVersion"]]
        if new == old { return old }   // a no-op update does not bump the resourceVersion
        let stored = store.commit(.modified, r, namespace: t.namespace, name: name, object: new)
        // The last finalizer gone from an object being deleted completes the deletion.
        if stored[path: ["metadata", "deletionTimestamp"]] != nil,
           (stored[path: ["metadata", "finalizers"]]?.array ?? []).isEmpty,
           r.kind != "Pod" || stored[path: ["metadata", "deletionGracePeriodSeconds"]]?.int == 0 {
            store.commit(.deleted, r, namespace: t.namespace, name: name, object: stored)
            return stored
        }
        try afterWrite(r, stored, old: old)
        return stored
    }

    /// Pods allow only image, activeDeadlineSeconds, tolerations and terminationGracePeriodSeconds changes to their
    /// spec, like the real ValidatePodUpdate: the new tolerations are validated (ValidatePodSpec), existing ones may
    /// only change their tolerationSeconds (validateOnlyAddedTolerations, which validates them once more; see
    /// KubeAPIServer+Tolerations.swift), and any other change is Forbidden.
    private func validateSpecUpdate(_ r: KubeResource, old: KJSON, new: KJSON, name: String) throws {
        guard r.kind == "Pod" else { return }
        let newTolerations = new[path: ["spec", "tolerations"]]?.array ?? []
        var causes = Self.validateTolerations(newTolerations, field: "spec.tolerations")
        causes += Self.validateOnlyAddedTolerations(new: newTolerations, old: old[path: ["spec", "tolerations"]]?.array ?? [],
                                                    field: "spec.tolerations")
        func masked(_ spec: KJSON?) -> KJSON {
            var s = spec ?? .object([:])
            for field in ["containers", "initContainers"] {
                s[field] = s[field]?.array.map { KJSON.array($0.map { c in var c = c; c["image"] = nil; return c }) }
            }
            for k in ["activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"] { s[k] = nil }
            return s
        }
        if masked(old["spec"]) != masked(new["spec"]) {
            causes.append(.init(reason: "FieldValueForbidden", field: "spec",
                message: "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"))
        }
        if !causes.isEmpty { throw APIError.invalid(kind: "Pod", name: name, causes) }
    }

    /// Defaults and validation of an update for the kinds that have their own (KubeAPIServer+Apps/+RBAC.swift).
    private func prepareForUpdate(_ r: KubeResource, _ new: inout KJSON, old: KJSON, name: String) throws {
        switch r.kind {
        case "Deployment", "ReplicaSet", "DaemonSet": try Self.prepareWorkload(r, &new, old: old, name: name)
        case "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding": try Self.prepareRBACObject(r, &new, old: old, name: name)
        default: break
        }
    }

    /// Side effects of a committed write: default ServiceAccounts, the cluster-info signatures, CSR approval/signing.
    private func afterWrite(_ r: KubeResource, _ obj: KJSON, old: KJSON?) throws {
        let name = obj[path: ["metadata", "name"]]?.string ?? ""
        let ns = obj[path: ["metadata", "namespace"]]?.string
        switch r.kind {
        case "Namespace" where old == nil:
            if store.get(Self.serviceAccounts, namespace: name, name: "default") == nil {
                _ = try create(Self.serviceAccounts, namespace: name,
                               body: .object(["metadata": .object(["name": .string("default")])]), user: .internalAdmin)
            }
            try publishRootCA(namespace: name)
        case "Secret" where ns == "kube-system" && name.hasPrefix("bootstrap-token-"):
            try refreshClusterInfo()
        case "CertificateSigningRequest":
            try processCSR(name: name)
        default: break
        }
    }

    // MARK: delete

    func delete(_ r: KubeResource, namespace: String?, name: String, options: KJSON, query: [String: String]) throws -> KJSON {
        guard let old = store.get(r, namespace: namespace, name: name) else { throw APIError.notFound(r, name) }
        if let uid = options[path: ["preconditions", "uid"]]?.string, let actual = old[path: ["metadata", "uid"]]?.string,
           uid != actual {
            throw APIError.conflict(r, name, "Precondition failed: UID in precondition: \(uid), UID in object meta: \(actual)")
        }
        if let rv = options[path: ["preconditions", "resourceVersion"]]?.string,
           let actual = old[path: ["metadata", "resourceVersion"]]?.string, rv != actual {
            throw APIError.conflict(r, name, "Precondition failed: ResourceVersion in precondition: \(rv), ResourceVersion in object meta: \(actual)")
        }
        if r.kind == "Namespace" {
            for other in KubeResource.all where other.namespaced {
                for (_, obj) in store.all(other, namespace: name) {
                    store.commit(.deleted, other, namespace: name, name: obj[path: ["metadata", "name"]]?.string ?? "", object: obj)
                }
            }
        }
        var obj = old
        if r.kind == "Pod" {
            let requested = options["gracePeriodSeconds"]?.int ?? query["gracePeriodSeconds"].flatMap { Int($0) }
            var grace = requested ?? obj[path: ["spec", "terminationGracePeriodSeconds"]]?.int ?? 30
            let phase = obj[path: ["status", "phase"]]?.string ?? ""
            let bound = !(obj[path: ["spec", "nodeName"]]?.string ?? "").isEmpty
            if !bound || phase == "Succeeded" || phase == "Failed" { grace = 0 }
            if grace > 0 || !(obj[path: ["metadata", "finalizers"]]?.array ?? []).isEmpty {
                if let current = obj[path: ["metadata", "deletionGracePeriodSeconds"]]?.int, current <= grace {
                    return obj   // already terminating with a shorter or equal grace period
                }
                obj[path: ["metadata", "deletionTimestamp"]] = .string(Self.timestamp(Date().addingTimeInterval(Double(grace))))
                obj[path: ["metadata", "deletionGracePeriodSeconds"]] = .int(grace)
                if grace > 0 || !(obj[path: ["metadata", "finalizers"]]?.array ?? []).isEmpty {
                    return store.commit(.modified, r, namespace: namespace, name: name, object: obj)
                }
            }
        } else if !(obj[path: ["metadata", "finalizers"]]?.array ?? []).isEmpty {
            if obj[path: ["metadata", "deletionTimestamp"]] != nil { return obj }
            obj[path: ["metadata", "deletionTimestamp"]] = .string(Self.timestamp())
            obj[path: ["metadata", "deletionGracePeriodSeconds"]] = .int(0)
            return store.commit(.modified, r, namespace: namespace, name: name, object: obj)
        }
        let deleted = store.commit(.deleted, r, namespace: namespace, name: name, object: obj)
        if r.kind == "Secret", namespace == "kube-system", name.hasPrefix("bootstrap-token-") { try refreshClusterInfo() }
        return deleted
    }

    /// POST pods/NAME/eviction: a graceful delete (no PodDisruptionBudgets here), answered with a Success Status.
    func evict(_ t: APITarget, _ req: APIRequest) throws -> KJSON {
        let body = req.body.isEmpty ? KJSON.object([:]) : try parseBody(req.body)
        _ = try delete(t.resource, namespace: t.namespace, name: t.name!, options: body["deleteOptions"] ?? .object([:]),
                       query: [:])
        return .object(["kind": .string("Status"), "apiVersion": .string("v1"), "metadata": .object([:]),
                        "status": .string("Success"), "code": .int(201)])
    }
}
