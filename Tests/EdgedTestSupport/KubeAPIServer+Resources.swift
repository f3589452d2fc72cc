// The resources the test API server serves, and the discovery documents kubectl reads to find them.

/// One served resource type (a REST collection), as discovery describes it.
struct KubeResource: Sendable {
    let group: String          // "" for core
    let version: String
    let plural: String
    let singular: String
    let kind: String
    let namespaced: Bool
    let shortNames: [String]
    /// Subresources served ("status", "approval", "token", "eviction").
    let subresources: [String]
    /// Field selector labels accepted besides metadata.name / metadata.namespace (like each registry's field set).
    let fieldLabels: [String]

    var apiVersion: String { group.isEmpty ? version : "\(group)/\(version)" }
    /// The key objects of this type are stored under, like etcd's /registry/<group>/<resource> prefix.
    var key: String { group.isEmpty ? plural : "\(plural).\(group)" }
    /// True when the main resource ignores status writes (status is written through /status only).
    var hasStatusSubresource: Bool { subresources.contains("status") }

    /// Where its objects live: /api/v1 or /apis/<group>/<version>.
    var groupVersionPath: String { group.isEmpty ? "/api/\(version)" : "/apis/\(group)/\(version)" }

    func path(namespace: String?, name: String?) -> String {
        var p = groupVersionPath
        if namespaced, let namespace { p += "/namespaces/\(namespace)" }
        p += "/\(plural)"
        if let name { p += "/\(name)" }
        return p
    }

    static let all: [KubeResource] = [
        KubeResource(group: "", version: "v1", plural: "namespaces", singular: "namespace", kind: "Namespace",
                     namespaced: false, shortNames: ["ns"], subresources: ["status"], fieldLabels: ["status.phase"]),
        KubeResource(group: "", version: "v1", plural: "nodes", singular: "node", kind: "Node", namespaced: false,
                     shortNames: ["no"], subresources: ["status"], fieldLabels: ["spec.unschedulable"]),
        KubeResource(group: "", version: "v1", plural: "pods", singular: "pod", kind: "Pod", namespaced: true,
                     shortNames: ["po"], subresources: ["status", "eviction"],
                     fieldLabels: ["spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                                   "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"]),
        KubeResource(group: "", version: "v1", plural: "configmaps", singular: "configmap", kind: "ConfigMap",
                     namespaced: true, shortNames: ["cm"], subresources: [], fieldLabels: []),
        KubeResource(group: "", version: "v1", plural: "secrets", singular: "secret", kind: "Secret", namespaced: true,
                     shortNames: [], subresources: [], fieldLabels: ["type"]),
        KubeResource(group: "", version: "v1", plural: "services", singular: "service", kind: "Service",
                     namespaced: true, shortNames: ["svc"], subresources: ["status"], fieldLabels: []),
        KubeResource(group: "", version: "v1", plural: "serviceaccounts", singular: "serviceaccount",
                     kind: "ServiceAccount", namespaced: true, shortNames: ["sa"], subresources: ["token"],
                     fieldLabels: []),
        KubeResource(group: "", version: "v1", plural: "events", singular: "event", kind: "Event", namespaced: true,
                     shortNames: ["ev"], subresources: [],
                     fieldLabels: ["involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                                   "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                                   "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"]),
        KubeResource(group: "", version: "v1", plural: "endpoints", singular: "endpoints", kind: "Endpoints",
                     namespaced: true, shortNames: ["ep"], subresources: [], fieldLabels: []),
        KubeResource(group: "discovery.k8s.io", version: "v1", plural: "endpointslices", singular: "endpointslice",
                     kind: "EndpointSlice", namespaced: true, shortNames: [], subresources: [], fieldLabels: []),
        KubeResource(group: "coordination.k8s.io", version: "v1", plural: "leases", singular: "lease", kind: "Lease",
                     namespaced: true, shortNames: [], subresources: [], fieldLabels: []),
        KubeResource(group: "certificates.k8s.io", version: "v1", plural: "certificatesigningrequests",
                     singular: "certificatesigningrequest", kind: "CertificateSigningRequest", namespaced: false,
                     shortNames: ["csr"], subresources: ["status", "approval"], fieldLabels: ["spec.signerName"]),
        // Inert apps/v1 workloads (KubeAPIServer+Apps.swift) and RBAC (KubeAPIServer+RBAC.swift).
        KubeResource(group: "apps", version: "v1", plural: "deployments", singular: "deployment", kind: "Deployment",
                     namespaced: true, shortNames: ["deploy"], subresources: ["status"], fieldLabels: []),
        KubeResource(group: "apps", version: "v1", plural: "replicasets", singular: "replicaset", kind: "ReplicaSet",
                     namespaced: true, shortNames: ["rs"], subresources: ["status"], fieldLabels: ["status.replicas"]),
        KubeResource(group: "apps", version: "v1", plural: "daemonsets", singular: "daemonset", kind: "DaemonSet",
                     namespaced: true, shortNames: ["ds"], subresources: ["status"], fieldLabels: []),
        KubeResource(group: "rbac.authorization.k8s.io", version: "v1", plural: "clusterroles", singular: "clusterrole",
                     kind: "ClusterRole", namespaced: false, shortNames: [], subresources: [], fieldLabels: []),
        KubeResource(group: "rbac.authorization.k8s.io", version: "v1", plural: "clusterrolebindings",
                     singular: "clusterrolebinding", kind: "ClusterRoleBinding", namespaced: false, shortNames: [],
                     subresources: [], fieldLabels: []),
        KubeResource(group: "rbac.authorization.k8s.io", version: "v1", plural: "roles", singular: "role", kind: "Role",
                     namespaced: true, shortNames: [], subresources: [], fieldLabels: []),
        KubeResource(group: "rbac.authorization.k8s.io", version: "v1", plural: "rolebindings", singular: "rolebinding",
                     kind: "RoleBinding", namespaced: true, shortNames: [], subresources: [], fieldLabels: []),
    ]

    static func find(group: String, version: String, plural: String) -> KubeResource? {
        all.first { $0.group == group && $0.version == version && $0.plural == plural }
    }

    static func find(kind: String) -> KubeResource? { all.first { $0.kind == kind } }
}

/// Discovery documents (the legacy, non-aggregated form: kubectl falls back to it when the aggregated one is absent).
enum KubeDiscovery {
    static let gitVersion = "v1.32.0-edged-test"

    static var version: KJSON {
        .object([
            "major": .string("1"), "minor": .string("32"), "gitVersion": .string(gitVersion),
            "gitCommit": .string("0000000000000000000000000000000000000000"), "gitTreeState": .string("clean"),
            "buildDate": .string("2025-01-01T00:00:00Z"), "goVersion": .string("go1.23.0"),
            "compiler": .string("gc"), "platform": .string("linux/amd64"),
        ])
    }

    static func apiVersions(serverAddress: String) -> KJSON {
        .object([
            "kind": .string("APIVersions"), "versions": .array([.string("v1")]),
            "serverAddressByClientCIDRs": .array([.object([
                "clientCIDR": .string("0.0.0.0/0"), "serverAddress": .string(serverAddress),
            ])]),
        ])
    }

    static var groups: [String] {
        var seen: [String] = []
        for r in KubeResource.all where !r.group.isEmpty && !seen.contains(r.group) { seen.append(r.group) }
        return seen
    }

    static func group(_ name: String) -> KJSON {
        let gv = KJSON.object(["groupVersion": .string("\(name)/v1"), "version": .string("v1")])
        return .object(["name": .string(name), "versions": .array([gv]), "preferredVersion": gv])
    }

    static var groupList: KJSON {
        .object(["kind": .string("APIGroupList"), "apiVersion": .string("v1"), "groups": .array(groups.map(group))])
    }

    static func resourceList(group: String, version: String) -> KJSON? {
        let rs = KubeResource.all.filter { $0.group == group && $0.version == version }
        guard !rs.isEmpty else { return nil }
        var items: [KJSON] = []
        for r in rs {
            let verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            items.append(.object([
                "name": .string(r.plural), "singularName": .string(r.singular), "namespaced": .bool(r.namespaced),
                "kind": .string(r.kind), "verbs": .array(verbs.map(KJSON.string)),
                "shortNames": .array(r.shortNames.map(KJSON.string)),
            ]))
            for sub in r.subresources {
                let (kind, subVerbs): (String, [String]) = switch sub {
                case "token": ("TokenRequest", ["create"])
                case "eviction": ("Eviction", ["create"])
                default: (r.kind, ["get", "patch", "update"])
                }
                items.append(.object([
                    "name": .string("\(r.plural)/\(sub)"), "singularName": .string(""),
                    "namespaced": .bool(r.namespaced), "kind": .string(kind),
                    "verbs": .array(subVerbs.map(KJSON.string)),
                ]))
            }
        }
        return .object([
            "kind": .string("APIResourceList"), "apiVersion": .string("v1"),
            "groupVersion": .string(group.isEmpty ? version : "\(group)/\(version)"), "resources": .array(items),
        ])
    }
}
