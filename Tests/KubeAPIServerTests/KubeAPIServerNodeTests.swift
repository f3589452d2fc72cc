// What a kubelet identity may do on the test API server (node authorizer + NodeRestriction), the ServiceAccount
// admission and root CA ConfigMap, the token expiry extension, pod status validation and QoS, and the node lifecycle
// controller — each through real HTTPS requests with a node's client certificate, allowed and refused.

import Foundation
import Testing
@testable import EdgedTestSupport

private func podBody(_ name: String, node: String?, extra: [String: Any] = [:]) -> [String: Any] {
    var spec: [String: Any] = ["containers": [["name": "c", "image": "busybox:1.36"]]]
    if let node { spec["nodeName"] = node }
    for (k, v) in extra { spec[k] = v }
    return ["metadata": ["name": name], "spec": spec]
}

private func names(_ list: [String: Any]) -> [String] {
    (value(list, "items") as? [[String: Any]] ?? []).compactMap { str($0, "metadata.name") }
}

/// The claims of a JWT (no signature check).
private func jwtClaims(_ token: String) throws -> [String: Any] {
    let parts = token.split(separator: ".")
    guard parts.count == 3 else { throw TestFailure("not a JWT: \(token)") }
    var b64 = parts[1].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    while b64.count % 4 != 0 { b64 += "=" }
    let data = try #require(Data(base64Encoded: b64))
    return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
}

extension APIFixture {
    func nodeCert(_ name: String) throws -> Credentials {
        .cert(try server.pki.issueClient(cn: "system:node:\(name)", orgs: ["system:nodes"]))
    }
}

@Suite(.serialized) struct KubeAPIServerNodeTests {
    // MARK: Node authorizer

    @Test func nodeReadsOnlySecretsAndConfigMapsOfItsPods() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        for s in ["s1", "pull", "other"] {
            try f.request("POST", "/api/v1/namespaces/default/secrets", ["metadata": ["name": s], "stringData": ["k": "v"]])
        }
        try f.request("POST", "/api/v1/namespaces/default/configmaps", ["metadata": ["name": "cm1"], "data": ["k": "v"]])
        let p1 = try f.request("POST", "/api/v1/namespaces/default/pods", podBody("p1", node: "n1", extra: [
            "volumes": [["name": "s", "secret": ["secretName": "s1"]]],
            "imagePullSecrets": [["name": "pull"]],
            "containers": [["name": "c", "image": "busybox:1.36", "envFrom": [["configMapRef": ["name": "cm1"]]]]],
        ]))
        #expect(p1.code == 201)
        let n1 = try f.nodeCert("n1"), n2 = try f.nodeCert("n2")

        #expect(try f.request("GET", "/api/v1/namespaces/default/secrets/s1", as: n1).code == 200)
        #expect(try f.request("GET", "/api/v1/namespaces/default/secrets/pull", as: n1).code == 200)
        #expect(try f.request("GET", "/api/v1/namespaces/default/configmaps/cm1", as: n1).code == 200)
        // The ServiceAccount plugin's projected volume references kube-root-ca.crt, so the node may read it.
        #expect(try f.request("GET", "/api/v1/namespaces/default/configmaps/kube-root-ca.crt", as: n1).code == 200)
        let other = try f.request("GET", "/api/v1/namespaces/default/secrets/other", as: n1)
        #expect(other.code == 403)
        #expect(str(other.json, "reason") == "Forbidden")
        #expect(str(other.json, "message") == "secrets \"other\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'n1' and this object")
        let wrongNode = try f.request("GET", "/api/v1/namespaces/default/secrets/s1", as: n2)
        #expect(str(wrongNode.json, "message")?.hasSuffix("no relationship found between node 'n2' and this object") == true)

        // list/watch of one named object (field selector metadata.name) is a read of that object.
        let one = try f.request("GET", "/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3Ds1", as: n1)
        #expect(one.code == 200)
        #expect(names(one.json) == ["s1"])
        let watchOne = try f.request("GET", "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dcm1", as: n1)
        #expect(watchOne.code == 200)
        let listOther = try f.request("GET", "/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3Dother", as: n1)
        #expect(listOther.code == 403)
        #expect(str(listOther.json, "message") == "secrets \"other\" is forbidden: User \"system:node:n1\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'n1' and this object")
        let listAll = try f.request("GET", "/api/v1/namespaces/default/secrets", as: n1)
        #expect(str(listAll.json, "message") == "secrets is forbidden: User \"system:node:n1\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\": No Object name found")
        let clusterWide = try f.request("GET", "/api/v1/configmaps", as: n1)
        #expect(str(clusterWide.json, "message") == "configmaps is forbidden: User \"system:node:n1\" cannot list resource \"configmaps\" in API group \"\" at the cluster scope: can only read namespaced object of this type")
        let write = try f.request("POST", "/api/v1/namespaces/default/secrets", ["metadata": ["name": "mine"]], as: n1)
        #expect(write.code == 403)
        #expect(str(write.json, "message")?.hasSuffix(": can only read resources of this type") == true)
        // Without system:nodes the CN alone is no node identity: refused like any user.
        let groupless = try f.server.pki.issueClient(cn: "system:node:n1", orgs: [])
        #expect(try f.request("GET", "/api/v1/namespaces/default/secrets/s1", as: .cert(groupless)).code == 403)
    }

    @Test func nodeAuthorizerOffLetsNodesReadEverything() async throws {
        let f = try await APIFixture(options: .init(nodeAuthorizer: false))
        defer { Task { await f.close() } }
        #expect(try f.request("GET", "/api/v1/secrets", as: try f.nodeCert("n1")).code == 200)
        #expect(try f.request("GET", "/api/v1/nodes", as: try f.nodeCert("n1")).code == 200)
    }

    @Test func nodeReadsItsPodsItsNodeAndWhatNodeRulesGrant() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        try f.request("POST", "/api/v1/namespaces/default/pods", podBody("p1", node: "n1"))
        try f.request("POST", "/api/v1/namespaces/default/pods", podBody("p2", node: "n2"))
        try f.request("POST", "/api/v1/nodes", ["metadata": ["name": "n2"]])
        let n1 = try f.nodeCert("n1")

        // Pods: only its own, listed with spec.nodeName=<self>.
        let mine = try f.request("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1", as: n1)
        #expect(mine.code == 200 && names(mine.json) == ["p1"])
        let all = try f.request("GET", "/api/v1/pods", as: n1)
        #expect(str(all.json, "message") == "pods is forbidden: User \"system:node:n1\" cannot list resource \"pods\" in API group \"\" at the cluster scope: can only list/watch pods with spec.nodeName field selector")
        #expect(try f.request("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn2", as: n1).code == 403)
        #expect(try f.request("GET", "/api/v1/namespaces/default/pods/p1", as: n1).code == 200)
        let foreign = try f.request("GET", "/api/v1/namespaces/default/pods/p2", as: n1)
        #expect(str(foreign.json, "message")?.hasSuffix("no relationship found between node 'n1' and this object") == true)
        let update = try f.request("PUT", "/api/v1/namespaces/default/pods/p1", mine.json, as: n1)
        #expect(update.code == 403)

        // Nodes: registers itself, reads only itself.
        #expect(try f.request("POST", "/api/v1/nodes", ["metadata": ["name": "n1"]], as: n1).code == 201)
        #expect(try f.request("GET", "/api/v1/nodes/n1", as: n1).code == 200)
        let self1 = try f.request("GET", "/api/v1/nodes?fieldSelector=metadata.name%3Dn1", as: n1)
        #expect(self1.code == 200 && names(self1.json) == ["n1"])
        let n2 = try f.request("GET", "/api/v1/nodes/n2", as: n1)
        #expect(str(n2.json, "message") == "nodes \"n2\" is forbidden: User \"system:node:n1\" cannot get resource \"nodes\" in API group \"\" at the cluster scope: node 'n1' cannot read 'n2', only its own Node object")
        let nodes = try f.request("GET", "/api/v1/nodes", as: n1)
        #expect(str(nodes.json, "message")?.hasSuffix(": node 'n1' cannot read all nodes, only its own Node object") == true)
        #expect(try f.request("DELETE", "/api/v1/nodes/n1", as: n1).code == 403)

        // Leases: only kube-node-lease/<self>.
        let lease: [String: Any] = ["metadata": ["name": "n1"], "spec": ["holderIdentity": "n1", "leaseDurationSeconds": 40]]
        #expect(try f.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease, as: n1).code == 201)
        #expect(try f.request("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1", as: n1).code == 200)
        let otherLease = try f.request("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2", as: n1)
        #expect(str(otherLease.json, "message") == "leases.coordination.k8s.io \"n2\" is forbidden: User \"system:node:n1\" cannot get resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"kube-node-lease\": can only access node lease with the same name as the requesting node")
        let leaseList = try f.request("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", as: n1)
        #expect(str(leaseList.json, "message")?.hasSuffix(": can only get, create, update, patch, or delete a node lease") == true)
        let wrongNS = try f.request("GET", "/apis/coordination.k8s.io/v1/namespaces/default/leases/n1", as: n1)
        #expect(str(wrongNS.json, "message")?.hasSuffix(": can only access leases in the \"kube-node-lease\" system namespace") == true)

        // The static NodeRules.
        #expect(try f.request("GET", "/api/v1/services", as: n1).code == 200)
        #expect(try f.request("GET", "/api/v1/namespaces/default/endpoints/kubernetes", as: n1).code != 403)
        #expect(try f.request("GET", "/api/v1/namespaces/default/endpoints", as: n1).code == 403)
        #expect(try f.request("POST", "/api/v1/namespaces/default/events", ["metadata": ["name": "e1"],
            "involvedObject": ["kind": "Node", "name": "n1"], "reason": "Starting"], as: n1).code == 201)
        #expect(try f.request("GET", "/api/v1/namespaces/default/events", as: n1).code == 403)
        #expect(try f.request("GET", "/apis/certificates.k8s.io/v1/certificatesigningrequests", as: n1).code == 200)
        #expect(try f.request("GET", "/api/v1/namespaces", as: n1).code == 403)
        #expect(try f.request("GET", "/apis/discovery.k8s.io/v1/endpointslices", as: n1).code == 403)
        #expect(try f.request("GET", "/api/v1/namespaces/default/serviceaccounts/default", as: n1).code == 403)
    }

    // MARK: NodeRestriction

    @Test func nodeRestrictionKeepsANodeToItself() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let n1 = try f.nodeCert("n1")
        try f.request("POST", "/api/v1/nodes", ["metadata": ["name": "n2"]])
        // Registration: labels outside the kubelet's set are refused.
        let labelled = try f.request("POST", "/api/v1/nodes", ["metadata": ["name": "n1", "labels": [
            "node-role.kubernetes.io/edge": "", "kubernetes.io/hostname": "n1"]]], as: n1)
        #expect(labelled.code == 403)
        #expect(str(labelled.json, "message") == "nodes \"n1\" is forbidden: node \"n1\" is not allowed to set the following labels: node-role.kubernetes.io/edge")
        let created = try f.request("POST", "/api/v1/nodes", ["metadata": ["name": "n1", "labels": [
            "kubernetes.io/hostname": "n1", "node.kubernetes.io/instance-type": "gw", "example.com/site": "a"]]], as: n1)
        #expect(created.code == 201)
        let nodeUID = try #require(str(created.json, "metadata.uid"))
        let otherNode = try f.request("POST", "/api/v1/nodes", ["metadata": ["name": "n3"]], as: n1)
        #expect(str(otherNode.json, "message") == "nodes \"n3\" is forbidden: node \"n1\" is not allowed to modify node \"n3\"")
        let patchN2 = try f.request("PATCH", "/api/v1/nodes/n2/status", ["status": ["phase": "Running"]],
                                    contentType: "application/merge-patch+json", as: n1)
        #expect(patchN2.code == 403)
        #expect(str(patchN2.json, "message") == "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\"")
        let merge = "application/merge-patch+json"
        let relabel = try f.request("PATCH", "/api/v1/nodes/n1", ["metadata": ["labels": ["foo.kubernetes.io/x": "1"]]],
                                    contentType: merge, as: n1)
        #expect(str(relabel.json, "message") == "nodes \"n1\" is forbidden: is not allowed to modify labels: foo.kubernetes.io/x")
        #expect(try f.request("PATCH", "/api/v1/nodes/n1", ["metadata": ["labels": ["kubelet.kubernetes.io/x": "1"]]],
                              contentType: merge, as: n1).code == 200)
        let untaint = try f.request("PATCH", "/api/v1/nodes/n1", ["spec": ["taints": [["key": "k", "effect": "NoSchedule"]]]],
                                    contentType: merge, as: n1)
        #expect(str(untaint.json, "message") == "nodes \"n1\" is forbidden: node \"n1\" is not allowed to modify taints")
        let otherLease = try f.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                                       ["metadata": ["name": "n2"], "spec": [:] as [String: Any]], as: n1)
        #expect(str(otherLease.json, "message") == "leases.coordination.k8s.io \"n2\" is forbidden: can only access node lease with the same name as the requesting node")

        // Pods: only mirror pods bound to itself, owned by its Node.
        let plain = try f.request("POST", "/api/v1/namespaces/default/pods", podBody("plain", node: "n1"), as: n1)
        #expect(str(plain.json, "message") == "pods \"plain\" is forbidden: pod does not have \"kubernetes.io/config.mirror\" annotation, node \"n1\" can only create mirror pods")
        func mirror(_ name: String, node: String = "n1", uid: String, extra: [String: Any] = [:]) -> [String: Any] {
            var p = podBody(name, node: node, extra: extra)
            p["metadata"] = ["name": name, "annotations": ["kubernetes.io/config.mirror": "hash"],
                             "ownerReferences": [["apiVersion": "v1", "kind": "Node", "name": "n1", "uid": uid, "controller": true]]]
            return p
        }
        let good = try f.request("POST", "/api/v1/namespaces/default/pods", mirror("static-n1", uid: nodeUID), as: n1)
        #expect(good.code == 201)
        #expect(value(good.json, "spec.serviceAccountName") == nil)   // no ServiceAccount defaults for mirror pods
        #expect(value(good.json, "spec.volumes") == nil)
        let elsewhere = try f.request("POST", "/api/v1/namespaces/default/pods", mirror("m2", node: "n2", uid: nodeUID), as: n1)
        #expect(str(elsewhere.json, "message") == "pods \"m2\" is forbidden: node \"n1\" can only create pods with spec.nodeName set to itself")
        let badUID = try f.request("POST", "/api/v1/namespaces/default/pods", mirror("m3", uid: "nope"), as: n1)
        #expect(str(badUID.json, "message") == "pods \"m3\" is forbidden: node n1 UID mismatch: expected nope got \(nodeUID)")
        let withSA = try f.request("POST", "/api/v1/namespaces/default/pods",
                                   mirror("m4", uid: nodeUID, extra: ["serviceAccountName": "default"]), as: n1)
        #expect(str(withSA.json, "message") == "pods \"m4\" is forbidden: a mirror pod may not reference service accounts")
        let withSecret = try f.request("POST", "/api/v1/namespaces/default/pods",
                                       mirror("m5", uid: nodeUID, extra: ["volumes": [["name": "s", "secret": ["secretName": "x"]]]]), as: n1)
        #expect(str(withSecret.json, "message") == "pods \"m5\" is forbidden: a mirror pod may not reference secrets")
        let withCM = try f.request("POST", "/api/v1/namespaces/default/pods",
                                   mirror("m6", uid: nodeUID, extra: ["volumes": [["name": "c", "configMap": ["name": "x"]]]]), as: n1)
        #expect(str(withCM.json, "message") == "pods \"m6\" is forbidden: node \"n1\" can not create pods that reference configmaps")

        // Status, delete and eviction only of its own pods.
        try f.request("POST", "/api/v1/namespaces/default/pods", podBody("p1", node: "n1"))
        try f.request("POST", "/api/v1/namespaces/default/pods", podBody("p2", node: "n2"))
        let strategic = "application/strategic-merge-patch+json"
        #expect(try f.request("PATCH", "/api/v1/namespaces/default/pods/p1/status", ["status": ["phase": "Running"]],
                              contentType: strategic, as: n1).code == 200)
        let foreignStatus = try f.request("PATCH", "/api/v1/namespaces/default/pods/p2/status", ["status": ["phase": "Running"]],
                                          contentType: strategic, as: n1)
        #expect(str(foreignStatus.json, "message") == "pods \"p2\" is forbidden: node \"n1\" can only update pod status for pods with spec.nodeName set to itself")
        let relabelPod = try f.request("PATCH", "/api/v1/namespaces/default/pods/p1/status", ["metadata": ["labels": ["a": "b"]]],
                                       contentType: strategic, as: n1)
        #expect(str(relabelPod.json, "message") == "pods \"p1\" is forbidden: node \"n1\" cannot update labels through pod status")
        let evict = try f.request("POST", "/api/v1/namespaces/default/pods/p2/eviction",
                                  ["apiVersion": "policy/v1", "kind": "Eviction", "metadata": ["name": "p2", "namespace": "default"]], as: n1)
        #expect(str(evict.json, "message") == "pods \"p2\" is forbidden: node n1 can only evict pods with spec.nodeName set to itself")
        let del = try f.request("DELETE", "/api/v1/namespaces/default/pods/p2", as: n1)
        #expect(str(del.json, "message") == "pods \"p2\" is forbidden: node \"n1\" can only delete pods with spec.nodeName set to itself")
        #expect(try f.request("DELETE", "/api/v1/namespaces/default/pods/p1", as: n1).code == 200)
        #expect(try f.request("DELETE", "/api/v1/namespaces/default/pods/nothere", as: n1).code == 404)
    }

    @Test func nodeRestrictionOffLetsANodeModifyOthers() async throws {
        let f = try await APIFixture(options: .init(nodeRestriction: false))
        defer { Task { await f.close() } }
        try f.request("POST", "/api/v1/nodes", ["metadata": ["name": "n2"]])
        #expect(try f.request("PATCH", "/api/v1/nodes/n2", ["metadata": ["labels": ["a": "b"]]],
                              contentType: "application/merge-patch+json", as: try f.nodeCert("n1")).code == 200)
    }

    @Test func nodeTokensMustBeBoundToItsPods() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        try f.request("POST", "/api/v1/namespaces/default/serviceaccounts", ["metadata": ["name": "app"]])
        try f.request("POST", "/api/v1/namespaces/default/serviceaccounts", ["metadata": ["name": "unused"]])
        let p1 = try f.request("POST", "/api/v1/namespaces/default/pods", podBody("p1", node: "n1", extra: ["serviceAccountName": "app"]))
        try f.request("POST", "/api/v1/namespaces/default/pods", podBody("p2", node: "n2", extra: ["serviceAccountName": "app"]))
        let p2 = try f.request("GET", "/api/v1/namespaces/default/pods/p2")
        let n1 = try f.nodeCert("n1")
        func req(_ pod: String?, uid: String?) -> [String: Any] {
            var spec: [String: Any] = ["expirationSeconds": 3607]
            if let pod {
                var ref: [String: Any] = ["apiVersion": "v1", "kind": "Pod", "name": pod]
                if let uid { ref["uid"] = uid }
                spec["boundObjectRef"] = ref
            }
            return ["apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec]
        }
        let path = "/api/v1/namespaces/default/serviceaccounts/app/token"
        let ok = try f.request("POST", path, req("p1", uid: str(p1.json, "metadata.uid")), as: n1)
        #expect(ok.code == 201)
        let unbound = try f.request("POST", path, req(nil, uid: nil), as: n1)
        #expect(str(unbound.json, "message") == "serviceaccounts \"app\" is forbidden: node requested token not bound to a pod")
        let noUID = try f.request("POST", path, req("p1", uid: nil), as: n1)
        #expect(str(noUID.json, "message") == "serviceaccounts \"app\" is forbidden: node requested token with a pod binding without a uid")
        let foreign = try f.request("POST", path, req("p2", uid: str(p2.json, "metadata.uid")), as: n1)
        #expect(str(foreign.json, "message") == "serviceaccounts \"app\" is forbidden: node requested token bound to a pod scheduled on a different node")
        let unused = try f.request("POST", "/api/v1/namespaces/default/serviceaccounts/unused/token",
                                   req("p1", uid: str(p1.json, "metadata.uid")), as: n1)
        #expect(str(unused.json, "message") == "serviceaccounts \"unused\" is forbidden: User \"system:node:n1\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"default\": no relationship found between node 'n1' and this object")
    }

    // MARK: ServiceAccount admission, root CA, token expiry

    @Test func serviceAccountAdmissionMountsAnAPIAccessVolume() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let p = try f.request("POST", "/api/v1/namespaces/default/pods", podBody("p", node: nil, extra: [
            "initContainers": [["name": "init", "image": "busybox:1.36"]],
            "containers": [["name": "c", "image": "busybox:1.36"],
                           ["name": "own", "image": "busybox:1.36", "volumeMounts": [
                               ["name": "mine", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"]]]],
            "volumes": [["name": "mine", "emptyDir": [:] as [String: Any]]],
        ]))
        #expect(p.code == 201)
        #expect(str(p.json, "spec.serviceAccountName") == "default")
        let volumes = value(p.json, "spec.volumes") as? [[String: Any]] ?? []
        let api = try #require(volumes.first { (str($0, "name") ?? "").hasPrefix("kube-api-access-") })
        let volName = try #require(str(api, "name"))
        #expect(volName.count == "kube-api-access-".count + 5)
        #expect(int(api, "projected.defaultMode") == 420)
        #expect(int(api, "projected.sources.0.serviceAccountToken.expirationSeconds") == 3607)
        #expect(str(api, "projected.sources.0.serviceAccountToken.path") == "token")
        #expect(str(api, "projected.sources.1.configMap.name") == "kube-root-ca.crt")
        #expect(str(api, "projected.sources.1.configMap.items.0.key") == "ca.crt")
        #expect(str(api, "projected.sources.1.configMap.items.0.path") == "ca.crt")
        #expect(str(api, "projected.sources.2.downwardAPI.items.0.path") == "namespace")
        #expect(str(api, "projected.sources.2.downwardAPI.items.0.fieldRef.fieldPath") == "metadata.namespace")
        #expect(str(api, "projected.sources.2.downwardAPI.items.0.fieldRef.apiVersion") == "v1")
        for path in ["spec.containers.0", "spec.initContainers.0"] {
            #expect(str(p.json, "\(path).volumeMounts.0.name") == volName)
            #expect(str(p.json, "\(path).volumeMounts.0.mountPath") == "/var/run/secrets/kubernetes.io/serviceaccount")
            #expect(value(p.json, "\(path).volumeMounts.0.readOnly") as? Bool == true)
        }
        // A container that mounts something there already keeps only its own mount.
        #expect((value(p.json, "spec.containers.1.volumeMounts") as? [Any])?.count == 1)
        #expect(str(p.json, "spec.containers.1.volumeMounts.0.name") == "mine")

        // automountServiceAccountToken: false on the pod, or on the ServiceAccount unless the pod says true.
        let off = try f.request("POST", "/api/v1/namespaces/default/pods", podBody("off", node: nil, extra: ["automountServiceAccountToken": false]))
        #expect(value(off.json, "spec.volumes") == nil)
        try f.request("POST", "/api/v1/namespaces/default/serviceaccounts", ["metadata": ["name": "quiet"], "automountServiceAccountToken": false])
        let quiet = try f.request("POST", "/api/v1/namespaces/default/pods", podBody("quiet", node: nil, extra: ["serviceAccountName": "quiet"]))
        #expect(value(quiet.json, "spec.volumes") == nil)
        let override = try f.request("POST", "/api/v1/namespaces/default/pods", podBody("loud", node: nil, extra: [
            "serviceAccountName": "quiet", "automountServiceAccountToken": true]))
        #expect((value(override.json, "spec.volumes") as? [Any])?.count == 1)

        let missing = try f.request("POST", "/api/v1/namespaces/default/pods", podBody("m", node: nil, extra: ["serviceAccountName": "ghost"]))
        #expect(missing.code == 403)
        #expect(str(missing.json, "message") == "pods \"m\" is forbidden: error looking up service account default/ghost: serviceaccount \"ghost\" not found")

        // root-ca-cert-publisher: every namespace, old and new, has the CA.
        for ns in ["default", "kube-system", "kube-node-lease"] {
            let cm = try f.request("GET", "/api/v1/namespaces/\(ns)/configmaps/kube-root-ca.crt")
            #expect((value(cm.json, "data") as? [String: Any])?["ca.crt"] as? String == f.server.caPEM)
        }
        try f.request("POST", "/api/v1/namespaces", ["metadata": ["name": "apps"]])
        let fresh = try f.request("GET", "/api/v1/namespaces/apps/configmaps/kube-root-ca.crt")
        #expect((value(fresh.json, "data") as? [String: Any])?["ca.crt"] as? String == f.server.caPEM)
    }

    @Test func serviceAccountAdmissionOff() async throws {
        let f = try await APIFixture(options: .init(serviceAccounts: false))
        defer { Task { await f.close() } }
        let p = try f.request("POST", "/api/v1/namespaces/default/pods", podBody("p", node: nil, extra: ["serviceAccountName": "ghost"]))
        #expect(p.code == 201)
        #expect(value(p.json, "spec.volumes") == nil)
        #expect(try f.request("GET", "/api/v1/namespaces/default/configmaps/kube-root-ca.crt").code == 404)
    }

    @Test func podBoundTokensOf3607SecondsLastAYear() async throws {
        for extend in [true, false] {
            let f = try await APIFixture(options: .init(extendServiceAccountTokenExpiration: extend))
            let p = try f.request("POST", "/api/v1/namespaces/default/pods", podBody("p", node: "n1"))
            let uid = try #require(str(p.json, "metadata.uid"))
            func token(_ seconds: Int) throws -> [String: Any] {
                try f.request("POST", "/api/v1/namespaces/default/serviceaccounts/default/token", [
                    "spec": ["expirationSeconds": seconds, "boundObjectRef": ["apiVersion": "v1", "kind": "Pod", "name": "p", "uid": uid]],
                ], as: try f.nodeCert("n1")).json
            }
            let now = Date().timeIntervalSince1970
            let long = try token(3607)
            let claims = try jwtClaims(try #require(str(long, "status.token")))
            let exp = Double(try #require(claims["exp"] as? Int))
            let stamp = try #require(str(long, "status.expirationTimestamp"))
            let statusExp = try Date(stamp, strategy: .iso8601).timeIntervalSince1970
            #expect(abs(statusExp - (now + 3607)) < 10)   // the answer says the requested time either way
            if extend {
                #expect(abs(exp - (now + 365 * 24 * 3600)) < 10)
                let warn = (claims["kubernetes.io"] as? [String: Any])?["warnafter"] as? Int
                #expect(abs(Double(try #require(warn)) - (now + 3607)) < 10)
            } else {
                #expect(abs(exp - (now + 3607)) < 10)
                #expect((claims["kubernetes.io"] as? [String: Any])?["warnafter"] == nil)
            }
            // Any other duration is not extended.
            let hour = try jwtClaims(try #require(str(try token(3600), "status.token")))
            #expect(abs(Double(try #require(hour["exp"] as? Int)) - (now + 3600)) < 10)
            await f.close()
        }
    }

    // MARK: DefaultTolerationSeconds

    @Test func defaultTolerationsAreAddedAtCreateOnly() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let own = try f.request("POST", "/api/v1/namespaces/default/pods", podBody("own", node: nil, extra: ["tolerations": [
            ["key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60]]]))
        let tolerations = value(own.json, "spec.tolerations") as? [[String: Any]] ?? []
        #expect(tolerations.count == 2)
        #expect(tolerations.first { $0["key"] as? String == "node.kubernetes.io/unreachable" }?["tolerationSeconds"] as? Int == 60)
        #expect(tolerations.first { $0["key"] as? String == "node.kubernetes.io/not-ready" }?["tolerationSeconds"] as? Int == 300)
        let all = try f.request("POST", "/api/v1/namespaces/default/pods", podBody("all", node: nil, extra: ["tolerations": [["operator": "Exists"]]]))
        #expect((value(all.json, "spec.tolerations") as? [Any])?.count == 1)
        // An update adds nothing (the real plugin runs on create only).
        var put = all.json
        put["metadata"] = (all.json["metadata"] as! [String: Any]).merging(["labels": ["x": "y"]]) { $1 }
        let updated = try f.request("PUT", "/api/v1/namespaces/default/pods/all", put)
        #expect(updated.code == 200)
        #expect((value(updated.json, "spec.tolerations") as? [Any])?.count == 1)
    }

    // MARK: Pod status validation and QoS

    @Test func podStatusUpdatesAreValidated() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        try f.request("POST", "/api/v1/nodes", ["metadata": ["name": "n1"]])
        let created = try f.request("POST", "/api/v1/namespaces/default/pods", podBody("p", node: "n1", extra: ["restartPolicy": "Never"]))
        #expect(str(created.json, "status.qosClass") == "BestEffort")
        let n1 = try f.nodeCert("n1")
        let strategic = "application/strategic-merge-patch+json"
        let qos = try f.request("PATCH", "/api/v1/namespaces/default/pods/p/status", ["status": ["qosClass": "Guaranteed"]],
                                contentType: strategic, as: n1)
        #expect(qos.code == 422)
        #expect(str(qos.json, "reason") == "Invalid")
        #expect(str(qos.json, "message") == "Pod \"p\" is invalid: status.qosClass: Invalid value: \"Guaranteed\": field is immutable")
        #expect(str(qos.json, "details.causes.0.field") == "status.qosClass")
        // A PUT that leaves qosClass out changes it too.
        var put = created.json
        put["status"] = ["phase": "Running"]
        let dropped = try f.request("PUT", "/api/v1/namespaces/default/pods/p/status", put)
        #expect(str(dropped.json, "message") == "Pod \"p\" is invalid: status.qosClass: Invalid value: \"\": field is immutable")

        let terminated: [String: Any] = ["status": ["phase": "Failed", "containerStatuses": [
            ["name": "c", "ready": false, "restartCount": 0, "image": "busybox:1.36", "imageID": "",
             "state": ["terminated": ["exitCode": 1, "reason": "Error"]]]]]]
        #expect(try f.request("PATCH", "/api/v1/namespaces/default/pods/p/status", terminated, contentType: strategic, as: n1).code == 200)
        let running: [String: Any] = ["status": ["phase": "Running", "containerStatuses": [
            ["name": "c", "ready": true, "restartCount": 1, "image": "busybox:1.36", "imageID": "",
             "state": ["running": ["startedAt": "2026-01-01T00:00:00Z"], "terminated": NSNull()]]]]]   // as a kubelet's two-way patch
        let back = try f.request("PATCH", "/api/v1/namespaces/default/pods/p/status", running, contentType: strategic, as: n1)
        #expect(back.code == 422)
        #expect(str(back.json, "message") == "Pod \"p\" is invalid: status.containerStatuses[0].state: Forbidden: may not be transitioned to non-terminated state")
        // restartPolicy Always: a terminated container restarts.
        try f.request("POST", "/api/v1/namespaces/default/pods", podBody("a", node: "n1"))
        #expect(try f.request("PATCH", "/api/v1/namespaces/default/pods/a/status", terminated, contentType: strategic, as: n1).code == 200)
        #expect(try f.request("PATCH", "/api/v1/namespaces/default/pods/a/status", running, contentType: strategic, as: n1).code == 200)
        let badIP = try f.request("PATCH", "/api/v1/namespaces/default/pods/a/status",
                                  ["status": ["podIP": "10.0.0.300", "podIPs": [["ip": "10.0.0.300"]]]], contentType: strategic, as: n1)
        #expect(str(badIP.json, "message") == "Pod \"a\" is invalid: status.podIPs[0]: Invalid value: \"10.0.0.300\": must be a valid IP address")
    }

    @Test func podStatusValidationOff() async throws {
        let f = try await APIFixture(options: .init(podStatusValidation: false))
        defer { Task { await f.close() } }
        try f.request("POST", "/api/v1/namespaces/default/pods", podBody("p", node: "n1"))
        #expect(try f.request("PATCH", "/api/v1/namespaces/default/pods/p/status", ["status": ["qosClass": "Guaranteed"]],
                              contentType: "application/merge-patch+json").code == 200)
    }

    @Test(arguments: [
        // (each container's resources as JSON, the init container's resources ("" for none), expected)
        (#"[{"limits":{"nvidia.com/gpu":"1"}}]"#, "", "BestEffort"),
        (#"[{"requests":{"cpu":"0","memory":"0"}}]"#, "", "BestEffort"),
        (#"[{"limits":{"cpu":"1","memory":"1Gi"}}]"#, "", "Guaranteed"),   // requests defaulted from limits
        (#"[{"limits":{"cpu":"1","memory":"1Gi"},"requests":{"cpu":"1000m","memory":"1073741824"}}]"#, "", "Guaranteed"),
        (#"[{"limits":{"cpu":"1","memory":"1Gi","nvidia.com/gpu":"1"}}]"#, "", "Guaranteed"),
        (#"[{"limits":{"cpu":"1"}}]"#, "", "Burstable"),
        (#"[{"limits":{"cpu":"1","memory":"1Gi"},"requests":{"cpu":"500m"}}]"#, "", "Burstable"),
        (#"[{"limits":{"cpu":"1","memory":"1Gi"}},{}]"#, "", "Burstable"),
        (#"[{"limits":{"cpu":"1","memory":"1Gi"}}]"#, #"{"requests":{"cpu":"100m"}}"#, "Burstable"),
        (#"[{"requests":{"memory":"64Mi"}}]"#, "", "Burstable"),
    ])
    func qosClassCountsOnlyCPUAndMemory(containers: String, initResources: String, expected: String) async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let resources = try #require(try JSONSerialization.jsonObject(with: Data(containers.utf8)) as? [[String: Any]])
        var extra: [String: Any] = ["containers": resources.enumerated().map { i, r in
            ["name": "c\(i)", "image": "busybox:1.36", "resources": r] as [String: Any]
        }]
        if !initResources.isEmpty {
            let r = try JSONSerialization.jsonObject(with: Data(initResources.utf8))
            extra["initContainers"] = [["name": "i", "image": "busybox:1.36", "resources": r]]
        }
        let p = try f.request("POST", "/api/v1/namespaces/default/pods", podBody("p", node: nil, extra: extra))
        #expect(p.code == 201)
        #expect(str(p.json, "status.qosClass") == expected)
    }

    // MARK: Node lifecycle controller

    /// A node and helpers to read it back (direct store access).
    private struct LifecycleNode {
        let f: APIFixture
        let creds: Credentials
        func post(_ status: String, memory: Bool = true) throws -> Int {
            // Fractional seconds: two posts within a second must still be two heartbeats.
            let time = Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
            var conditions: [[String: Any]] = [["type": "Ready", "status": status, "reason": "KubeletReady", "message": "ok",
                                                "lastHeartbeatTime": time, "lastTransitionTime": time]]
            if memory {
                conditions.append(["type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
                                   "lastHeartbeatTime": time, "lastTransitionTime": time])
            }
            return try f.request("PATCH", "/api/v1/nodes/n1/status", ["status": ["conditions": conditions]],
                                 contentType: "application/strategic-merge-patch+json", as: creds).code
        }
        func condition(_ type: String) -> [String: Any]? {
            (value(f.server.objectJSON("/api/v1/nodes/n1") ?? [:], "status.conditions") as? [[String: Any]])?
                .first { $0["type"] as? String == type }
        }
        func taints() -> [String] {
            (value(f.server.objectJSON("/api/v1/nodes/n1") ?? [:], "spec.taints") as? [[String: Any]] ?? [])
                .map { "\($0["key"] as? String ?? ""):\($0["effect"] as? String ?? "")" }.sorted()
        }
    }

    @Test func silentNodeBecomesUnknownAndTaintedUntilItPostsStatus() async throws {
        // Passes run by hand (the timer never fires here), so the test does not depend on scheduling.
        let lifecycle = KubeAPIServer.NodeLifecycleOptions(monitorPeriod: .seconds(3600), gracePeriod: .milliseconds(300),
                                                           startupGracePeriod: .milliseconds(300))
        let f = try await APIFixture(options: .init(nodeLifecycle: lifecycle))
        defer { Task { await f.close() } }
        let n = LifecycleNode(f: f, creds: try f.nodeCert("n1"))
        #expect(try f.request("POST", "/api/v1/nodes", ["metadata": ["name": "n1"]], as: n.creds).code == 201)
        #expect(try n.post("True") == 200)
        try f.request("POST", "/api/v1/namespaces/default/pods", podBody("web", node: "n1"))
        try f.request("POST", "/api/v1/namespaces/default/pods", podBody("far", node: "n2"))
        for pod in ["web", "far"] {
            #expect(try f.request("PATCH", "/api/v1/namespaces/default/pods/\(pod)/status", ["status": ["phase": "Running",
                "conditions": [["type": "Ready", "status": "True"], ["type": "ContainersReady", "status": "True"]]]],
                contentType: "application/strategic-merge-patch+json").code == 200)
        }
        func podCondition(_ pod: String, _ type: String) -> String? {
            (value(f.server.objectJSON("/api/v1/namespaces/default/pods/\(pod)") ?? [:], "status.conditions") as? [[String: Any]])?
                .first { $0["type"] as? String == type }?["status"] as? String
        }
        f.server.runNodeLifecyclePass()
        // Posting a new heartbeat within the grace period keeps it Ready, however late the next pass runs.
        try await Task.sleep(for: .milliseconds(400))
        #expect(try n.post("True") == 200)
        f.server.runNodeLifecyclePass()
        #expect(n.condition("Ready")?["status"] as? String == "True")
        #expect(n.taints().isEmpty)
        let heartbeat = n.condition("Ready")?["lastHeartbeatTime"] as? String
        // Silent past the grace period: Unknown, tainted unreachable.
        try await Task.sleep(for: .milliseconds(400))
        f.server.runNodeLifecyclePass()
        let ready = try #require(n.condition("Ready"))
        #expect(ready["status"] as? String == "Unknown")
        #expect(ready["reason"] as? String == "NodeStatusUnknown")
        #expect(ready["message"] as? String == "Kubelet stopped posting node status.")
        #expect(ready["lastHeartbeatTime"] as? String == heartbeat)
        #expect(ready["lastTransitionTime"] as? String != nil)
        #expect(n.condition("MemoryPressure")?["status"] as? String == "Unknown")
        #expect(n.condition("DiskPressure")?["status"] as? String == "Unknown")
        #expect(n.condition("DiskPressure")?["reason"] as? String == "NodeStatusNeverUpdated")
        #expect(n.condition("DiskPressure")?["message"] as? String == "Kubelet never posted node status.")
        #expect(n.condition("PIDPressure")?["status"] as? String == "Unknown")
        #expect(n.taints() == ["node.kubernetes.io/unreachable:NoExecute", "node.kubernetes.io/unreachable:NoSchedule"])
        // Its pods are marked not ready (only the Ready condition); other nodes' pods are left alone.
        #expect(podCondition("web", "Ready") == "False")
        #expect(podCondition("web", "ContainersReady") == "True")
        #expect(podCondition("far", "Ready") == "True")
        let node = try #require(f.server.objectJSON("/api/v1/nodes/n1"))
        #expect((value(node, "spec.taints") as? [[String: Any]] ?? []).allSatisfy { $0["timeAdded"] as? String != nil })
        // The node may not remove them itself.
        let untaint = try f.request("PATCH", "/api/v1/nodes/n1", ["spec": ["taints": NSNull()]],
                                    contentType: "application/merge-patch+json", as: n.creds)
        #expect(untaint.code == 403)

        // A renewed Lease alone does not make it Ready.
        let lease: [String: Any] = ["metadata": ["name": "n1"], "spec": ["holderIdentity": "n1", "renewTime": Date().formatted(.iso8601)]]
        #expect(try f.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease, as: n.creds).code == 201)
        f.server.runNodeLifecyclePass()
        #expect(n.condition("Ready")?["status"] as? String == "Unknown")
        #expect(n.taints().count == 2)

        // Ready=False from the node: not-ready taints instead; Ready=True: none.
        #expect(try n.post("False") == 200)
        f.server.runNodeLifecyclePass()
        #expect(n.taints() == ["node.kubernetes.io/not-ready:NoExecute", "node.kubernetes.io/not-ready:NoSchedule"])
        #expect(try n.post("True") == 200)
        f.server.runNodeLifecyclePass()
        #expect(n.taints().isEmpty)
        #expect(n.condition("Ready")?["status"] as? String == "True")
    }

    @Test func nodeLifecycleRunsOnItsTimerWhileTheServerIsStopped() async throws {
        let lifecycle = KubeAPIServer.NodeLifecycleOptions(monitorPeriod: .milliseconds(100), gracePeriod: .milliseconds(500),
                                                           startupGracePeriod: .milliseconds(500))
        let f = try await APIFixture(options: .init(nodeLifecycle: lifecycle))
        defer { Task { await f.close() } }
        let n = LifecycleNode(f: f, creds: try f.nodeCert("n1"))
        #expect(try f.request("POST", "/api/v1/nodes", ["metadata": ["name": "n1"]], as: n.creds).code == 201)
        #expect(try n.post("True") == 200)
        try await f.server.stop()
        let deadline = Date().addingTimeInterval(20)
        while n.condition("Ready")?["status"] as? String != "Unknown" || n.taints().count != 2 {
            if Date() > deadline { throw TestFailure("the node did not go Unknown while the server was stopped") }
            try await Task.sleep(for: .milliseconds(50))
        }
        try await f.server.resume()
        #expect(try n.post("True") == 200)
        let back = Date().addingTimeInterval(20)
        while !n.taints().isEmpty {
            if Date() > back { throw TestFailure("the taints stayed after the node posted Ready") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    @Test(arguments: [true, false]) func nodeLifecycleSwitch(on: Bool) async throws {
        // A timer that never fires in the test; passes run by hand.
        let lifecycle = KubeAPIServer.NodeLifecycleOptions(monitorPeriod: .seconds(3600), gracePeriod: .milliseconds(200),
                                                           startupGracePeriod: .milliseconds(200))
        let f = try await APIFixture(options: .init(nodeLifecycle: on ? lifecycle : nil))
        defer { Task { await f.close() } }
        try f.server.put("/api/v1/nodes/n1", ["metadata": ["name": "n1"], "status": ["conditions": [
            ["type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-01T00:00:00Z"]]]])
        f.server.runNodeLifecyclePass()
        try await Task.sleep(for: .milliseconds(300))
        f.server.runNodeLifecyclePass()
        let ready = value(f.server.objectJSON("/api/v1/nodes/n1") ?? [:], "status.conditions.0.status") as? String
        #expect(ready == (on ? "Unknown" : "True"))
    }
}
