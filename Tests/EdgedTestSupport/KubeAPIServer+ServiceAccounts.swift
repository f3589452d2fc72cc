// The ServiceAccount admission plugin and the root-ca-cert-publisher controller, as a pod's containers see them.
//
// Copied from:
// - plugin/pkg/admission/serviceaccount/admission.go (pod create): mirror pods (annotation
//   kubernetes.io/config.mirror) get no defaults and may not reference a service account, secrets or
//   ServiceAccountToken projections; other pods get serviceAccountName "default" when empty, a 403 when that
//   ServiceAccount does not exist, and unless automountServiceAccountToken is false on the pod (or, when the pod does
//   not say, on the ServiceAccount) a projected volume kube-api-access-<5 chars> (serviceAccountToken
//   expirationSeconds 3607 path token, configMap kube-root-ca.crt key ca.crt, downwardAPI namespace from
//   metadata.namespace, defaultMode 420) mounted read-only at /var/run/secrets/kubernetes.io/serviceaccount in every
//   init container and container that has nothing mounted there yet.
// - pkg/controller/certificates/rootcacertpublisher: every namespace gets ConfigMap kube-root-ca.crt with data
//   ca.crt = the cluster CA (at bootstrap and when a namespace is created).
// NOT copied: the publisher does not put the ConfigMap back when it is deleted or changed; no imagePullSecrets from
// the ServiceAccount; no enforce-mountable-secrets annotation.

import Foundation

extension KubeAPIServerCore {
    static let serviceAccountMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"
    static let rootCAConfigMap = "kube-root-ca.crt"

    /// ServiceAccount admission on pod create (mutates `obj`).
    func admitServiceAccount(_ obj: inout KJSON, namespace: String) throws {
        let name = obj[path: ["metadata", "name"]]?.string ?? ""
        func forbid(_ why: String) -> APIError { Self.admissionForbidden(Self.pods, name, why) }
        if obj[path: ["metadata", "annotations", "kubernetes.io/config.mirror"]] != nil {
            if !(obj[path: ["spec", "serviceAccountName"]]?.string ?? "").isEmpty {
                throw forbid("a mirror pod may not reference service accounts")
            }
            if !Self.secretNames(obj).isEmpty { throw forbid("a mirror pod may not reference secrets") }
            for v in obj[path: ["spec", "volumes"]]?.array ?? [] {
                if (v[path: ["projected", "sources"]]?.array ?? []).contains(where: { $0["serviceAccountToken"] != nil }) {
                    throw forbid("a mirror pod may not use ServiceAccountToken volume projections")
                }
            }
            return
        }
        var saName = obj[path: ["spec", "serviceAccountName"]]?.string ?? ""
        if saName.isEmpty {
            saName = "default"
            obj[path: ["spec", "serviceAccountName"]] = .string(saName)
        }
        guard let sa = store.get(Self.serviceAccounts, namespace: namespace, name: saName) else {
            throw forbid("error looking up service account \(namespace)/\(saName): serviceaccount \"\(saName)\" not found")
        }
        let automount: Bool
        if case .bool(let b)? = obj[path: ["spec", "automountServiceAccountToken"]] { automount = b }
        else if case .bool(let b)? = sa["automountServiceAccountToken"] { automount = b }
        else { automount = true }
        guard automount else { return }

        var volumes = obj[path: ["spec", "volumes"]]?.array ?? []
        let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
        var volumeName: String
        repeat {
            volumeName = "kube-api-access-" + String((0..<5).map { _ in alphabet.randomElement()! })
        } while volumes.contains { $0["name"]?.string == volumeName }
        volumes.append(.object([
            "name": .string(volumeName),
            "projected": .object([
                "defaultMode": .int(420),
                "sources": .array([
                    .object(["serviceAccountToken": .object(["expirationSeconds": .int(3607), "path": .string("token")])]),
                    .object(["configMap": .object(["name": .string(Self.rootCAConfigMap), "items": .array([
                        .object(["key": .string("ca.crt"), "path": .string("ca.crt")])])])]),
                    .object(["downwardAPI": .object(["items": .array([.object([
                        "path": .string("namespace"),
                        "fieldRef": .object(["apiVersion": .string("v1"), "fieldPath": .string("metadata.namespace")]),
                    ])])])]),
                ]),
            ]),
        ]))
        obj[path: ["spec", "volumes"]] = .array(volumes)
        for field in ["initContainers", "containers"] {
            guard let list = obj[path: ["spec", field]]?.array else { continue }
            obj[path: ["spec", field]] = .array(list.map { c in
                var c = c
                var mounts = c["volumeMounts"]?.array ?? []
                if !mounts.contains(where: { $0["mountPath"]?.string == Self.serviceAccountMountPath }) {
                    mounts.append(.object(["name": .string(volumeName), "readOnly": .bool(true),
                                           "mountPath": .string(Self.serviceAccountMountPath)]))
                    c["volumeMounts"] = .array(mounts)
                }
                return c
            })
        }
    }

    /// root-ca-cert-publisher: ConfigMap kube-root-ca.crt with the cluster CA in the namespace.
    func publishRootCA(namespace: String) throws {
        guard options.serviceAccounts,
              store.get(Self.configMaps, namespace: namespace, name: Self.rootCAConfigMap) == nil else { return }
        _ = try create(Self.configMaps, namespace: namespace, body: .object([
            "metadata": .object(["name": .string(Self.rootCAConfigMap), "annotations": .object([
                "kubernetes.io/description": .string("Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."),
            ])]),
            "data": .object(["ca.crt": .string(pki.caPEM)]),
        ]), user: .internalAdmin)
    }

    /// For `put` replacing a pod: what create-time admission added to `old`'s spec and `body` leaves out (service
    /// account fields, priority, preemptionPolicy, tolerations it lacks, kube-api-access-* volumes and their mounts).
    static func carryAdmissionDefaults(from old: KJSON, into body: KJSON) -> KJSON {
        guard let oldSpec = old["spec"], var spec = body["spec"] else { return body }
        for k in ["serviceAccountName", "serviceAccount", "automountServiceAccountToken", "priority", "preemptionPolicy"]
        where spec[k] == nil { spec[k] = oldSpec[k] }
        var tolerations = spec["tolerations"]?.array ?? []
        for t in oldSpec["tolerations"]?.array ?? [] where !tolerations.contains(t) { tolerations.append(t) }
        if !tolerations.isEmpty { spec["tolerations"] = .array(tolerations) }
        let apiVolumes = (oldSpec["volumes"]?.array ?? []).filter { ($0["name"]?.string ?? "").hasPrefix("kube-api-access-") }
        var volumes = spec["volumes"]?.array ?? []
        for v in apiVolumes where !volumes.contains(where: { $0["name"] == v["name"] }) { volumes.append(v) }
        if !volumes.isEmpty { spec["volumes"] = .array(volumes) }
        for field in ["initContainers", "containers"] {
            guard let list = spec[field]?.array else { continue }
            let oldList = oldSpec[field]?.array ?? []
            spec[field] = .array(list.map { c in
                var c = c
                let oldMount = oldList.first { $0["name"] == c["name"] }?["volumeMounts"]?.array?
                    .first { $0["mountPath"]?.string == serviceAccountMountPath }
                var mounts = c["volumeMounts"]?.array ?? []
                if let oldMount, !mounts.contains(where: { $0["mountPath"]?.string == serviceAccountMountPath }) {
                    mounts.append(oldMount)
                    c["volumeMounts"] = .array(mounts)
                }
                return c
            })
        }
        var out = body
        out["spec"] = spec
        return out
    }
}
