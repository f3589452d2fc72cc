// apps/v1 workloads as inert objects (KubeAPIServer+Apps.swift) and the real kubectl applying a controller's
// manifest (ServiceAccount, ClusterRole, ClusterRoleBinding, Role, RoleBinding, Deployment) against the test API
// server, then acting as that ServiceAccount with a kubeconfig from writeKubeconfig(to:token:).

import Foundation
import Testing
@testable import EdgedTestSupport

private let kubectlPath = ["/usr/bin/kubectl", "/usr/local/bin/kubectl"].first { FileManager.default.isExecutableFile(atPath: $0) }
private let deployments = "/apis/apps/v1/namespaces/default/deployments"

private func deployment(_ name: String, selector: [String: Any]?, labels: [String: String]) -> [String: Any] {
    var spec: [String: Any] = ["template": ["metadata": ["labels": labels],
                                            "spec": ["containers": [["name": "main", "image": "busybox:1.36"]]]]]
    if let selector { spec["selector"] = selector }
    return ["metadata": ["name": name], "spec": spec]
}

@Suite struct KubeAPIServerAppsTests {
    @Test func workloadsAreDefaultedValidatedAndInert() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let created = try f.request("POST", deployments, deployment("web", selector: ["matchLabels": ["app": "web"]], labels: ["app": "web", "tier": "edge"]))
        #expect(created.code == 201)
        #expect(int(created.json, "spec.replicas") == 1)
        #expect(str(created.json, "spec.strategy.type") == "RollingUpdate")
        #expect(str(created.json, "spec.strategy.rollingUpdate.maxSurge") == "25%")
        #expect(int(created.json, "spec.revisionHistoryLimit") == 10)
        #expect(int(created.json, "spec.progressDeadlineSeconds") == 600)
        #expect(str(created.json, "spec.template.spec.restartPolicy") == "Always")
        #expect((value(created.json, "status") as? [String: Any])?.isEmpty == true)
        #expect(int(created.json, "metadata.generation") == 1)
        // Nothing acts on it: no ReplicaSet, no pods.
        try await Task.sleep(for: .milliseconds(300))
        #expect((value(try f.request("GET", "/apis/apps/v1/replicasets").json, "items") as? [Any])?.isEmpty == true)
        #expect((value(try f.request("GET", "/api/v1/pods").json, "items") as? [Any])?.isEmpty == true)

        // Scaling is a spec change (generation 2); the selector is immutable.
        let scaled = try f.request("PATCH", deployments + "/web", ["spec": ["replicas": 3]], contentType: "application/strategic-merge-patch+json")
        #expect(scaled.code == 200)
        #expect(int(scaled.json, "metadata.generation") == 2)
        let moved = try f.request("PATCH", deployments + "/web", ["spec": ["selector": ["matchLabels": ["app": "web", "tier": "edge"]]]],
                                  contentType: "application/merge-patch+json")
        #expect(moved.code == 422)
        #expect(str(moved.json, "message") == "Deployment.apps \"web\" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"tier\":\"edge\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable")

        // A selector is required and must select the template's labels (matchExpressions too).
        let noSelector = try f.request("POST", deployments, deployment("a", selector: nil, labels: ["app": "a"]))
        #expect(noSelector.code == 422)
        #expect((value(noSelector.json, "details.causes") as? [[String: Any]])?.map { $0["field"] as? String } == ["spec.selector"])
        let mismatch = try f.request("POST", deployments, deployment("b", selector: ["matchExpressions": [["key": "app", "operator": "In", "values": ["x", "y"]]]],
                                                                     labels: ["app": "b"]))
        #expect(mismatch.code == 422)
        let cause = (value(mismatch.json, "details.causes") as? [[String: Any]])?.first
        #expect(cause?["field"] as? String == "spec.template.metadata.labels")
        #expect(cause?["message"] as? String == "Invalid value: map[string]string{\"app\":\"b\"}: `selector` does not match template `labels`")
        #expect(try f.request("POST", deployments, deployment("c", selector: ["matchExpressions": [["key": "app", "operator": "In", "values": ["c"]]]],
                                                              labels: ["app": "c"])).code == 201)

        // DaemonSet and ReplicaSet defaults.
        let ds = try f.request("POST", "/apis/apps/v1/namespaces/default/daemonsets", deployment("agent", selector: ["matchLabels": ["app": "agent"]], labels: ["app": "agent"]))
        #expect(ds.code == 201)
        #expect(str(ds.json, "spec.updateStrategy.type") == "RollingUpdate")
        #expect(int(ds.json, "spec.updateStrategy.rollingUpdate.maxUnavailable") == 1)
        let rs = try f.request("POST", "/apis/apps/v1/namespaces/default/replicasets", deployment("web-1", selector: ["matchLabels": ["app": "web"]], labels: ["app": "web"]))
        #expect(rs.code == 201)
        #expect(int(rs.json, "spec.replicas") == 1)
        #expect((value(try f.request("GET", "/api/v1/pods").json, "items") as? [Any])?.isEmpty == true)
    }

    @Test(.enabled(if: kubectlPath != nil, "kubectl is not installed"))
    func kubectlAppliesAControllerManifest() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let admin = f.dir.sub("admin.conf")
        try f.server.writeAdminKubeconfig(to: admin)
        @discardableResult
        func kubectl(_ args: [String], as kubeconfig: String? = nil, check: Bool = true) throws -> CommandResult {
            try runCommand([kubectlPath!, "--kubeconfig", kubeconfig ?? admin, "--request-timeout=20s"] + args, check: check)
        }
        func manifest(replicas: Int) -> String {
            """
            apiVersion: v1
            kind: ServiceAccount
            metadata:
              name: edged-autonomy-controller
              namespace: kube-system
            ---
            apiVersion: rbac.authorization.k8s.io/v1
            kind: ClusterRole
            metadata:
              name: edged:autonomy-controller
            rules:
            - apiGroups: [""]
              resources: ["nodes"]
              verbs: ["get", "list", "watch"]
            - apiGroups: [""]
              resources: ["pods"]
              verbs: ["get", "list", "watch", "patch"]
            - apiGroups: ["", "events.k8s.io"]
              resources: ["events"]
              verbs: ["create", "patch"]
            ---
            apiVersion: rbac.authorization.k8s.io/v1
            kind: ClusterRoleBinding
            metadata:
              name: edged:autonomy-controller
            roleRef:
              apiGroup: rbac.authorization.k8s.io
              kind: ClusterRole
              name: edged:autonomy-controller
            subjects:
            - kind: ServiceAccount
              name: edged-autonomy-controller
              namespace: kube-system
            ---
            apiVersion: rbac.authorization.k8s.io/v1
            kind: Role
            metadata:
              name: edged-autonomy-controller-leader
              namespace: kube-system
            rules:
            - apiGroups: ["coordination.k8s.io"]
              resources: ["leases"]
              verbs: ["create"]
            - apiGroups: ["coordination.k8s.io"]
              resources: ["leases"]
              resourceNames: ["edged-autonomy-controller"]
              verbs: ["get", "update"]
            ---
            apiVersion: rbac.authorization.k8s.io/v1
            kind: RoleBinding
            metadata:
              name: edged-autonomy-controller-leader
              namespace: kube-system
            roleRef:
              apiGroup: rbac.authorization.k8s.io
              kind: Role
              name: edged-autonomy-controller-leader
            subjects:
            - kind: ServiceAccount
              name: edged-autonomy-controller
              namespace: kube-system
            ---
            apiVersion: apps/v1
            kind: Deployment
            metadata:
              name: edged-autonomy-controller
              namespace: kube-system
            spec:
              replicas: \(replicas)
              selector:
                matchLabels: {app: edged-autonomy-controller}
              template:
                metadata:
                  labels: {app: edged-autonomy-controller}
                spec:
                  serviceAccountName: edged-autonomy-controller
                  containers:
                  - name: controller
                    image: registry.example/edged:0.1.0
                    args: ["autonomy-controller"]

            """
        }
        let file = f.dir.sub("autonomy.yaml")
        try manifest(replicas: 2).write(toFile: file, atomically: true, encoding: .utf8)
        let applied = try kubectl(["apply", "-f", file, "--validate=false"]).stdout
        for object in ["serviceaccount/edged-autonomy-controller", "clusterrole.rbac.authorization.k8s.io/edged:autonomy-controller",
                       "clusterrolebinding.rbac.authorization.k8s.io/edged:autonomy-controller",
                       "role.rbac.authorization.k8s.io/edged-autonomy-controller-leader",
                       "rolebinding.rbac.authorization.k8s.io/edged-autonomy-controller-leader",
                       "deployment.apps/edged-autonomy-controller"] {
            #expect(applied.contains("\(object) created"), "\(applied)")
        }
        #expect(try kubectl(["get", "deploy", "-n", "kube-system", "edged-autonomy-controller", "-o", "jsonpath={.spec.replicas}"]).stdout == "2")
        #expect(try kubectl(["get", "clusterrole", "edged:autonomy-controller", "-o", "jsonpath={.rules[0].resources[0]}"]).stdout == "nodes")
        #expect(try kubectl(["get", "pods", "-n", "kube-system", "-o", "name"]).stdout.isEmpty)   // inert: no replicas run

        // Applying again changes nothing; a changed manifest is patched in.
        let again = try kubectl(["apply", "-f", file, "--validate=false"]).stdout
        #expect(again.contains("deployment.apps/edged-autonomy-controller unchanged"), "\(again)")
        try manifest(replicas: 1).write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try kubectl(["apply", "-f", file, "--validate=false"]).stdout.contains("deployment.apps/edged-autonomy-controller configured"))
        #expect(try kubectl(["get", "deploy", "-n", "kube-system", "edged-autonomy-controller", "-o", "jsonpath={.spec.replicas}/{.metadata.generation}"]).stdout == "1/2")

        // kubectl as the ServiceAccount: what the manifest grants, and no more.
        let token = try f.server.serviceAccountToken(namespace: "kube-system", name: "edged-autonomy-controller", expirationSeconds: 24 * 3600)
        let controller = f.dir.sub("controller.conf")
        try f.server.writeKubeconfig(to: controller, token: token)
        try f.server.put("/api/v1/nodes/n1", ["metadata": ["name": "n1"]])
        #expect(try kubectl(["get", "nodes", "-o", "name"], as: controller).stdout.contains("node/n1"))
        #expect(try kubectl(["get", "pods", "-A", "-o", "name"], as: controller).status == 0)
        let secrets = try kubectl(["get", "secrets", "-n", "kube-system"], as: controller, check: false)
        #expect(secrets.status != 0)
        #expect(secrets.stderr.contains("secrets is forbidden: User \"system:serviceaccount:kube-system:edged-autonomy-controller\" cannot list resource \"secrets\" in API group \"\" in the namespace \"kube-system\""), "\(secrets.stderr)")
        let ownLease = try kubectl(["get", "lease", "-n", "kube-system", "edged-autonomy-controller"], as: controller, check: false)
        #expect(ownLease.stderr.contains("NotFound"), "\(ownLease.stderr)")   // allowed to look: it does not exist yet
        let otherLease = try kubectl(["get", "lease", "-n", "kube-system", "kube-scheduler"], as: controller, check: false)
        #expect(otherLease.stderr.contains("Forbidden"), "\(otherLease.stderr)")

        // Deleting the manifest removes everything, and the token with its ServiceAccount.
        try kubectl(["delete", "-f", file])
        #expect(f.server.objectJSON("/apis/apps/v1/namespaces/kube-system/deployments/edged-autonomy-controller") == nil)
        #expect(f.server.objectJSON("/apis/rbac.authorization.k8s.io/v1/clusterroles/edged:autonomy-controller") == nil)
        let gone = try kubectl(["get", "nodes"], as: controller, check: false)
        #expect(gone.status != 0 && gone.stderr.contains("Unauthorized"), "\(gone.stderr)")
    }
}
