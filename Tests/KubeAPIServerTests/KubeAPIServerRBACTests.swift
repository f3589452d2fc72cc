// RBAC of the test API server (KubeAPIServer+RBAC.swift) over real HTTPS: a ServiceAccount token (from
// serviceAccountToken, as a TokenRequest) may do exactly what its Roles and ClusterRoles grant, namespaced or cluster
// wide, by verb, resource name and subresource, and gets the real 403 otherwise; RBAC objects are validated and
// defaulted; SubjectAccessReviews see RBAC too.

import Foundation
import Testing
@testable import EdgedTestSupport

private let rbac = "/apis/rbac.authorization.k8s.io/v1"

/// A server with namespace "edge", ServiceAccount edge/ctl, pod edge/web and ConfigMaps edge/settings, edge/other and
/// default/settings; `token` is edge/ctl's.
private struct RBACFixture {
    let f: APIFixture
    let token: String
    static let user = "system:serviceaccount:edge:ctl"

    static func start() async throws -> RBACFixture {
        let f = try await APIFixture()
        try f.server.put("/api/v1/namespaces/edge", ["metadata": ["name": "edge"]])
        try f.server.put("/api/v1/namespaces/edge/serviceaccounts/ctl", ["metadata": ["name": "ctl"]])
        try f.server.put("/api/v1/namespaces/edge/pods/web", [
            "metadata": ["name": "web"], "spec": ["nodeName": "n1", "containers": [["name": "c", "image": "busybox:1.36"]]]])
        for (ns, name) in [("edge", "settings"), ("edge", "other"), ("default", "settings")] {
            try f.server.put("/api/v1/namespaces/\(ns)/configmaps/\(name)", ["metadata": ["name": name], "data": ["k": "v"]])
        }
        return RBACFixture(f: f, token: try f.server.serviceAccountToken(namespace: "edge", name: "ctl", expirationSeconds: 3600))
    }

    func close() async { await f.close() }

    /// The status code of a request as the ServiceAccount.
    func code(_ method: String, _ path: String, _ body: Any? = nil, contentType: String = "application/json") throws -> Int {
        try f.request(method, path, body, contentType: contentType, as: .token(token)).code
    }

    /// Creates (as the admin) an RBAC object; returns the stored JSON.
    @discardableResult
    func admin(_ plural: String, namespace: String? = nil, _ body: [String: Any]) throws -> [String: Any] {
        let path = rbac + (namespace.map { "/namespaces/\($0)" } ?? "") + "/\(plural)"
        let r = try f.request("POST", path, body)
        #expect(r.code == 201, "\(plural): \(r.json)")
        return r.json
    }
}

private func rule(_ groups: [String], _ resources: [String], _ verbs: [String], names: [String]? = nil) -> [String: Any] {
    var r: [String: Any] = ["apiGroups": groups, "resources": resources, "verbs": verbs]
    if let names { r["resourceNames"] = names }
    return r
}

private func binding(_ name: String, kind: String, role: String, subjects: [[String: Any]]) -> [String: Any] {
    ["metadata": ["name": name], "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role], "subjects": subjects]
}

/// The subject edge/ctl.
private var sa: [String: Any] { ["kind": "ServiceAccount", "name": "ctl", "namespace": "edge"] }

@Suite struct KubeAPIServerRBACTests {
    @Test func aRoleGrantsItsVerbsInItsNamespaceOnly() async throws {
        let c = try await RBACFixture.start()
        defer { Task { await c.close() } }
        // Nothing bound yet: the real 403.
        let denied = try c.f.request("GET", "/api/v1/namespaces/edge/pods", as: .token(c.token))
        #expect(denied.code == 403)
        #expect(str(denied.json, "message") == "pods is forbidden: User \"\(RBACFixture.user)\" cannot list resource \"pods\" in API group \"\" in the namespace \"edge\"")

        try c.admin("roles", namespace: "edge", ["metadata": ["name": "pod-reader"], "rules": [
            rule([""], ["pods"], ["get", "list", "watch"]), rule([""], ["pods/status"], ["patch"])]])
        // The ServiceAccount subject without a namespace is the RoleBinding's namespace's.
        try c.admin("rolebindings", namespace: "edge", binding("pod-reader", kind: "Role", role: "pod-reader",
                                                               subjects: [["kind": "ServiceAccount", "name": "ctl"]]))
        #expect(try c.code("GET", "/api/v1/namespaces/edge/pods") == 200)
        #expect(try c.code("GET", "/api/v1/namespaces/edge/pods/web") == 200)
        let watch = try c.f.watch("/api/v1/namespaces/edge/pods?watch=1", as: .token(c.token))
        defer { watch.stop() }
        #expect(try await watch.next()["type"] as? String == "ADDED")
        #expect(try c.code("PATCH", "/api/v1/namespaces/edge/pods/web/status", ["status": ["message": "hi"]],
                           contentType: "application/merge-patch+json") == 200)
        // Not the main resource's patch, not delete, not another namespace, not all namespaces.
        #expect(try c.code("PATCH", "/api/v1/namespaces/edge/pods/web", ["metadata": ["labels": ["a": "b"]]],
                           contentType: "application/merge-patch+json") == 403)
        #expect(try c.code("DELETE", "/api/v1/namespaces/edge/pods/web") == 403)
        #expect(try c.code("GET", "/api/v1/namespaces/default/pods") == 403)
        let all = try c.f.request("GET", "/api/v1/pods", as: .token(c.token))
        #expect(all.code == 403)
        #expect(str(all.json, "message") == "pods is forbidden: User \"\(RBACFixture.user)\" cannot list resource \"pods\" in API group \"\" at the cluster scope")
        // Other resources of the namespace: no.
        #expect(try c.code("GET", "/api/v1/namespaces/edge/configmaps/settings") == 403)

        // The binding gone: refused again.
        #expect(try c.f.request("DELETE", rbac + "/namespaces/edge/rolebindings/pod-reader").code == 200)
        #expect(try c.code("GET", "/api/v1/namespaces/edge/pods") == 403)
    }

    @Test func clusterRolesByClusterRoleBindingOrRoleBinding() async throws {
        let c = try await RBACFixture.start()
        defer { Task { await c.close() } }
        try c.admin("clusterroles", ["metadata": ["name": "edged:node-reader"], "rules": [rule([""], ["nodes"], ["get", "list"])]])
        try c.admin("clusterroles", ["metadata": ["name": "configmap-reader"], "rules": [rule([""], ["configmaps"], ["get"])]])
        try c.f.server.put("/api/v1/nodes/n1", ["metadata": ["name": "n1"]])
        #expect(try c.code("GET", "/api/v1/nodes/n1") == 403)
        // ClusterRoleBinding: everywhere (nodes are cluster-scoped).
        try c.admin("clusterrolebindings", binding("edged:node-reader", kind: "ClusterRole", role: "edged:node-reader", subjects: [sa]))
        #expect(try c.code("GET", "/api/v1/nodes/n1") == 200)
        #expect(try c.code("GET", "/api/v1/nodes") == 200)
        #expect(try c.code("PATCH", "/api/v1/nodes/n1", ["metadata": ["labels": ["a": "b"]]], contentType: "application/merge-patch+json") == 403)
        // A RoleBinding to a ClusterRole: that namespace only.
        try c.admin("rolebindings", namespace: "edge", binding("cm", kind: "ClusterRole", role: "configmap-reader", subjects: [sa]))
        #expect(try c.code("GET", "/api/v1/namespaces/edge/configmaps/settings") == 200)
        #expect(try c.code("GET", "/api/v1/namespaces/default/configmaps/settings") == 403)
        // A group subject (every ServiceAccount of the namespace), through a ClusterRoleBinding: everywhere.
        try c.admin("clusterrolebindings", binding("edge-sas", kind: "ClusterRole", role: "configmap-reader",
                                                   subjects: [["kind": "Group", "name": "system:serviceaccounts:edge"]]))
        #expect(try c.code("GET", "/api/v1/namespaces/default/configmaps/settings") == 200)
        // A rule of another API group, a ServiceAccount subject of another namespace, a role that does not exist:
        // nothing.
        try c.admin("clusterroles", ["metadata": ["name": "apps-pods"], "rules": [rule(["apps"], ["pods"], ["*"])]])
        try c.admin("clusterrolebindings", binding("others", kind: "ClusterRole", role: "apps-pods", subjects: [sa]))
        try c.admin("clusterroles", ["metadata": ["name": "pod-lister"], "rules": [rule([""], ["pods"], ["list"])]])
        try c.admin("clusterrolebindings", binding("elsewhere", kind: "ClusterRole", role: "pod-lister",
                                                   subjects: [["kind": "ServiceAccount", "name": "ctl", "namespace": "default"]]))
        try c.admin("rolebindings", namespace: "edge", binding("missing", kind: "Role", role: "no-such-role", subjects: [sa]))
        #expect(try c.code("GET", "/api/v1/namespaces/edge/pods") == 403)
        try c.admin("clusterrolebindings", binding("right-namespace", kind: "ClusterRole", role: "pod-lister", subjects: [sa]))
        #expect(try c.code("GET", "/api/v1/namespaces/edge/pods") == 200)
        #expect(try c.code("GET", "/api/v1/pods") == 200)
        #expect(try c.code("GET", "/api/v1/namespaces/edge/pods/web") == 403)
        // A User subject, for a static token.
        c.f.server.addToken("alice-token", user: "alice")
        #expect(try c.f.request("GET", "/api/v1/nodes", as: .token("alice-token")).code == 403)
        try c.admin("clusterrolebindings", binding("alice", kind: "ClusterRole", role: "edged:node-reader",
                                                   subjects: [["kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"]]))
        #expect(try c.f.request("GET", "/api/v1/nodes", as: .token("alice-token")).code == 200)
        // Wildcards: any verb on any subresource of pods; "*/status".
        try c.admin("clusterroles", ["metadata": ["name": "statuses"], "rules": [rule(["*"], ["*/status"], ["get"])]])
        try c.admin("rolebindings", namespace: "edge", binding("statuses", kind: "ClusterRole", role: "statuses", subjects: [sa]))
        #expect(try c.code("GET", "/api/v1/namespaces/edge/pods/web/status") == 200)
        #expect(try c.code("GET", "/api/v1/namespaces/edge/pods/web") == 403)
        try c.admin("roles", namespace: "edge", ["metadata": ["name": "all"], "rules": [rule(["*"], ["*"], ["*"])]])
        try c.admin("rolebindings", namespace: "edge", binding("all", kind: "Role", role: "all", subjects: [sa]))
        #expect(try c.code("DELETE", "/api/v1/namespaces/edge/configmaps/other") == 200)
        #expect(try c.code("DELETE", "/api/v1/namespaces/default/configmaps/settings") == 403)
    }

    @Test func resourceNamesLimitARule() async throws {
        let c = try await RBACFixture.start()
        defer { Task { await c.close() } }
        try c.admin("roles", namespace: "edge", ["metadata": ["name": "settings"], "rules": [
            rule([""], ["configmaps"], ["get", "list", "watch", "update", "create"], names: ["settings"])]])
        try c.admin("rolebindings", namespace: "edge", binding("settings", kind: "Role", role: "settings", subjects: [sa]))
        #expect(try c.code("GET", "/api/v1/namespaces/edge/configmaps/settings") == 200)
        let other = try c.f.request("GET", "/api/v1/namespaces/edge/configmaps/other", as: .token(c.token))
        #expect(other.code == 403)
        #expect(str(other.json, "message") == "configmaps \"other\" is forbidden: User \"\(RBACFixture.user)\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"edge\"")
        // A list is about a name only when a metadata.name field selector pins it.
        #expect(try c.code("GET", "/api/v1/namespaces/edge/configmaps") == 403)
        #expect(try c.code("GET", "/api/v1/namespaces/edge/configmaps?fieldSelector=metadata.name%3Dsettings") == 200)
        #expect(try c.code("GET", "/api/v1/namespaces/edge/configmaps?fieldSelector=metadata.name%3Dother") == 403)
        // A create has no name yet: resourceNames never allow it.
        #expect(try c.code("POST", "/api/v1/namespaces/edge/configmaps", ["metadata": ["name": "settings2"]]) == 403)
        var cm = try #require(c.f.server.objectJSON("/api/v1/namespaces/edge/configmaps/settings"))
        cm["data"] = ["k": "w"]
        #expect(try c.code("PUT", "/api/v1/namespaces/edge/configmaps/settings", cm) == 200)
    }

    @Test func rbacObjectsAreDefaultedAndValidated() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        // Defaults: roleRef.apiGroup and the apiGroup of User/Group subjects.
        let created = try f.request("POST", rbac + "/clusterrolebindings", [
            "metadata": ["name": "system:edged:x"], "roleRef": ["kind": "ClusterRole", "name": "view"],
            "subjects": [["kind": "User", "name": "bob"], ["kind": "ServiceAccount", "name": "a", "namespace": "default"]]])
        #expect(created.code == 201)
        #expect(str(created.json, "roleRef.apiGroup") == "rbac.authorization.k8s.io")
        let subjects = value(created.json, "subjects") as? [[String: Any]] ?? []
        #expect(subjects.map { $0["apiGroup"] as? String } == ["rbac.authorization.k8s.io", nil])
        #expect(try f.request("GET", rbac + "/clusterrolebindings/system:edged:x").code == 200)

        func causes(_ r: (code: Int, json: [String: Any])) -> [String] {
            #expect(r.code == 422)
            return (value(r.json, "details.causes") as? [[String: Any]] ?? []).map { "\($0["field"] ?? ""): \($0["message"] ?? "")" }
        }
        #expect(causes(try f.request("POST", rbac + "/clusterrolebindings", binding("b1", kind: "Role", role: "r",
                                                                                     subjects: [["kind": "ServiceAccount", "name": "a"]])))
                == ["roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"", "subjects[0].namespace: Required value"])
        #expect(causes(try f.request("POST", rbac + "/namespaces/default/rolebindings", binding("b2", kind: "ClusterRole", role: "",
                                                                                              subjects: [["kind": "Robot", "name": "x"]])))
                == ["roleRef.name: Required value", "subjects[0].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\""])
        #expect(causes(try f.request("POST", rbac + "/namespaces/default/roles", ["metadata": ["name": "r"], "rules": [
            ["apiGroups": [""], "resources": ["pods"]], ["verbs": ["get"]]]]))
                == ["rules[0].verbs: Required value: verbs must contain at least one value",
                    "rules[1].apiGroups: Required value: resource rules must supply at least one api group",
                    "rules[1].resources: Required value: resource rules must supply at least one resource"])
        #expect(causes(try f.request("POST", rbac + "/clusterroles", ["metadata": ["name": "a/b"], "rules": []]))
                == ["metadata.name: Invalid value: \"a/b\": may not contain '/'"])
        // roleRef is immutable.
        let changed = try f.request("PATCH", rbac + "/clusterrolebindings/system:edged:x", ["roleRef": ["name": "edit"]],
                                    contentType: "application/merge-patch+json")
        #expect(causes(changed) == ["roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"ClusterRole\", Name:\"edit\"}: cannot change roleRef"])
        // Discovery lists the group, so kubectl finds the kinds.
        let resources = try f.request("GET", rbac).json
        #expect(Set((value(resources, "resources") as? [[String: Any]] ?? []).compactMap { $0["name"] as? String })
                == ["clusterroles", "clusterrolebindings", "roles", "rolebindings"])
    }

    @Test func subjectAccessReviewsAskRBAC() async throws {
        let c = try await RBACFixture.start()
        defer { Task { await c.close() } }
        func review() throws -> Bool? {
            let r = try c.f.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", [
                "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": ["user": RBACFixture.user, "groups": ["system:serviceaccounts", "system:serviceaccounts:edge"],
                         "resourceAttributes": ["namespace": "edge", "verb": "get", "resource": "pods", "name": "web"]]])
            #expect(r.code == 201)
            return value(r.json, "status.allowed") as? Bool
        }
        #expect(try review() == false)
        try c.admin("roles", namespace: "edge", ["metadata": ["name": "pods"], "rules": [rule([""], ["pods"], ["get"])]])
        try c.admin("rolebindings", namespace: "edge", binding("pods", kind: "Role", role: "pods", subjects: [sa]))
        #expect(try review() == true)
    }

    @Test func serviceAccountTokenHelper() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        // The ServiceAccount must exist; the error says so.
        let missing = #expect(throws: KubeAPIServer.Failure.self) {
            try f.server.serviceAccountToken(namespace: "kube-system", name: "edged-autonomy-controller")
        }
        #expect(missing?.code == 404)
        #expect(missing?.message.contains("create the ServiceAccount") == true)
        // The TokenRequest minimum.
        #expect(throws: KubeAPIServer.Failure.self) { try f.server.serviceAccountToken(namespace: "default", name: "default", expirationSeconds: 60) }
        let token = try f.server.serviceAccountToken(namespace: "default", name: "default", expirationSeconds: 600)
        let parts = token.split(separator: ".")
        #expect(parts.count == 3)
        let claims = try #require(KubeAPIServerCore.fromBase64URL(parts[1]).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] })
        #expect(claims["sub"] as? String == "system:serviceaccount:default:default")
        #expect((claims["exp"] as? Int ?? 0) - (claims["iat"] as? Int ?? 0) == 600)
        // It authenticates (discovery is open to any authenticated user) until the ServiceAccount is gone.
        #expect(try f.request("GET", "/api", as: .token(token)).code == 200)
        try f.server.delete("/api/v1/namespaces/default/serviceaccounts/default")
        #expect(try f.request("GET", "/api", as: .token(token)).code == 401)
    }
}
