// The test API server over real HTTPS: TLS and authentication, discovery, object semantics, lists and deletion.

import Foundation
import Testing
@testable import EdgedTestSupport

private func pod(_ name: String, node: String? = nil, labels: [String: String] = [:]) -> [String: Any] {
    var spec: [String: Any] = ["containers": [["name": "c", "image": "busybox:1.36"]]]
    if let node { spec["nodeName"] = node }
    return ["apiVersion": "v1", "kind": "Pod", "metadata": ["name": name, "labels": labels], "spec": spec]
}

@Suite struct KubeAPIServerTests {
    @Test func discoveryAndVersion() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let v = try f.request("GET", "/version", as: .anonymous)
        #expect(v.code == 200)
        #expect(str(v.json, "gitVersion")?.hasPrefix("v1.") == true)
        let api = try f.request("GET", "/api")
        #expect(api.code == 200)
        #expect((value(api.json, "versions") as? [String]) == ["v1"])
        let apis = try f.request("GET", "/apis")
        let groups = (value(apis.json, "groups") as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        #expect(groups.contains("coordination.k8s.io") && groups.contains("certificates.k8s.io"))
        let core = try f.request("GET", "/api/v1")
        let names = (value(core.json, "resources") as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        for n in ["pods", "pods/status", "nodes", "nodes/status", "configmaps", "secrets", "services", "serviceaccounts",
                  "serviceaccounts/token", "events", "namespaces"] {
            #expect(names.contains(n), "missing \(n)")
        }
        let csr = try f.request("GET", "/apis/certificates.k8s.io/v1")
        #expect(str(csr.json, "groupVersion") == "certificates.k8s.io/v1")
        #expect(try f.request("GET", "/apis/nope.example.com/v1").code == 404)
    }

    @Test func authenticationAndAuthorization() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        // Anonymous: only cluster-info and /version.
        #expect(try f.request("GET", "/api/v1/namespaces/kube-public/configmaps/cluster-info", as: .anonymous).code == 200)
        let anon = try f.request("GET", "/api/v1/namespaces/default/pods", as: .anonymous)
        #expect(anon.code == 403)
        #expect(str(anon.json, "reason") == "Forbidden")
        #expect(str(anon.json, "message") == "pods is forbidden: User \"system:anonymous\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"")
        #expect(try f.request("GET", "/api", as: .anonymous).code == 403)
        // A token nobody issued: 401 Unauthorized.
        let bad = try f.request("GET", "/api/v1/namespaces", as: .token("abcdef.0000000000000000"))
        #expect(bad.code == 401)
        #expect(str(bad.json, "reason") == "Unauthorized")
        #expect(str(bad.json, "kind") == "Status")
        // A client certificate from another CA: 401.
        let other = try TestPKI.makeCA().issueClient(cn: "kubernetes-admin", orgs: ["system:masters"])
        #expect(try f.request("GET", "/api/v1/namespaces", as: .cert(other)).code == 401)
        // A node may do what the node authorizer allows (KubeAPIServerNodeTests has the rules); a plain user nothing.
        let node = try f.server.pki.issueClient(cn: "system:node:n1", orgs: ["system:nodes"])
        let nodeSecrets = try f.request("GET", "/api/v1/secrets", as: .cert(node))
        #expect(nodeSecrets.code == 403)
        #expect(str(nodeSecrets.json, "message") == "secrets is forbidden: User \"system:node:n1\" cannot list resource \"secrets\" in API group \"\" at the cluster scope: can only read namespaced object of this type")
        #expect(try f.request("GET", "/api/v1/namespaces/default/services", as: .cert(node)).code == 200)
        let alice = try f.server.pki.issueClient(cn: "alice", orgs: ["devs"])
        let denied = try f.request("GET", "/api/v1/namespaces/default/secrets/x", as: .cert(alice))
        #expect(denied.code == 403)
        #expect(str(denied.json, "message")?.contains("User \"alice\" cannot get resource \"secrets\"") == true)
        #expect(try f.request("GET", "/api", as: .cert(alice)).code == 200)
        let log = f.server.requests()
        #expect(log.contains { $0.user == "system:node:n1" && $0.code == 403 && $0.path == "/api/v1/secrets" })
        #expect(log.contains { $0.user == "system:node:n1" && $0.code == 200 && $0.path == "/api/v1/namespaces/default/services" })
        #expect(log.contains { $0.user == "" && $0.code == 401 })
    }

    @Test func bootstrapTokens() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        try f.server.addBootstrapToken(id: "abcdef", secret: "0123456789abcdef")
        try f.server.addBootstrapToken(id: "old123", secret: "0123456789abcdef", expires: Date().addingTimeInterval(-60))
        let tok = Credentials.token("abcdef.0123456789abcdef")
        #expect(try f.request("GET", "/apis/certificates.k8s.io/v1/certificatesigningrequests", as: tok).code == 200)
        #expect(try f.request("GET", "/api/v1/namespaces/kube-public/configmaps/cluster-info", as: tok).code == 200)
        let pods = try f.request("GET", "/api/v1/pods", as: tok)
        #expect(pods.code == 403)
        #expect(str(pods.json, "message")?.contains("system:bootstrap:abcdef") == true)
        #expect(try f.request("GET", "/api/v1/pods", as: .token("abcdef.ffffffffffffffff")).code == 401)
        #expect(try f.request("GET", "/apis/certificates.k8s.io/v1/certificatesigningrequests", as: .token("old123.0123456789abcdef")).code == 401)
    }

    @Test func clusterInfoIsSignedPerBootstrapToken() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        try f.server.addBootstrapToken(id: "abcdef", secret: "0123456789abcdef")
        let ci = try f.request("GET", "/api/v1/namespaces/kube-public/configmaps/cluster-info", as: .anonymous)
        let kubeconfig = try #require(str(ci.json, "data.kubeconfig"))
        #expect(kubeconfig.contains("server: \(f.server.url)"))
        #expect(kubeconfig.contains("certificate-authority-data: \(Data(f.server.caPEM.utf8).base64EncodedString())"))
        let jws = try #require(str(ci.json, "data.jws-kubeconfig-abcdef"))
        let parts = jws.components(separatedBy: ".")
        #expect(parts.count == 3 && parts[1].isEmpty)
        let header = try #require(KubeAPIServerCore.fromBase64URL(Substring(parts[0])))
        #expect(String(decoding: header, as: UTF8.self) == "{\"alg\":\"HS256\",\"kid\":\"abcdef\"}")
        // Recompute the HS256 signature over header.payload with the token secret, as a joining node does.
        let expected = KubeAPIServerCore.detachedJWS(payload: kubeconfig, tokenID: "abcdef", secret: "0123456789abcdef")
        #expect(jws == expected)
        // Removing the token removes its signature.
        try f.server.delete("/api/v1/namespaces/kube-system/secrets/bootstrap-token-abcdef")
        try f.server.addBootstrapToken(id: "zzzzzz", secret: "0123456789abcdef")
        let after = try f.request("GET", "/api/v1/namespaces/kube-public/configmaps/cluster-info", as: .anonymous)
        #expect(str(after.json, "data.jws-kubeconfig-zzzzzz") != nil)
    }

    @Test func createGetConflictAndValidation() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let created = try f.request("POST", "/api/v1/namespaces/default/pods", pod("p1"))
        #expect(created.code == 201)
        #expect(str(created.json, "metadata.uid")?.count == 36)
        #expect(str(created.json, "metadata.creationTimestamp") != nil)
        #expect(int(created.json, "metadata.generation") == 1)
        #expect(str(created.json, "status.phase") == "Pending")
        #expect(str(created.json, "status.qosClass") == "BestEffort")
        #expect(str(created.json, "spec.restartPolicy") == "Always")
        #expect(int(created.json, "spec.terminationGracePeriodSeconds") == 30)
        #expect(str(created.json, "spec.containers.0.imagePullPolicy") == "IfNotPresent")
        let rv1 = try #require(int(created.json, "metadata.resourceVersion"))

        let dup = try f.request("POST", "/api/v1/namespaces/default/pods", pod("p1"))
        #expect(dup.code == 409)
        #expect(str(dup.json, "reason") == "AlreadyExists")
        #expect(str(dup.json, "message") == "pods \"p1\" already exists")

        let missing = try f.request("GET", "/api/v1/namespaces/default/pods/nope")
        #expect(missing.code == 404)
        #expect(str(missing.json, "reason") == "NotFound")
        #expect(str(missing.json, "details.kind") == "pods")

        var gen = pod("")
        gen["metadata"] = ["generateName": "web-"]
        let g = try f.request("POST", "/api/v1/namespaces/default/pods", gen)
        #expect(g.code == 201)
        #expect(str(g.json, "metadata.name")?.hasPrefix("web-") == true && str(g.json, "metadata.name")?.count == 9)

        let noName = try f.request("POST", "/api/v1/namespaces/default/configmaps", ["metadata": [:] as [String: Any]])
        #expect(noName.code == 422)
        #expect(str(noName.json, "reason") == "Invalid")
        #expect(str(noName.json, "details.causes.0.field") == "metadata.name")

        let noImage = try f.request("POST", "/api/v1/namespaces/default/pods",
                                    ["metadata": ["name": "x"], "spec": ["containers": [["name": "c"]]]])
        #expect(noImage.code == 422)
        #expect(str(noImage.json, "details.causes.0.field") == "spec.containers[0].image")

        let badJSON = try f.request("POST", "/api/v1/namespaces/default/configmaps", "{not json")
        #expect(badJSON.code == 400)
        #expect(str(badJSON.json, "reason") == "BadRequest")

        let noNS = try f.request("POST", "/api/v1/namespaces/nope/configmaps", ["metadata": ["name": "c"]])
        #expect(noNS.code == 404)
        #expect(str(noNS.json, "message") == "namespaces \"nope\" not found")

        // PUT with a stale resourceVersion: 409 Conflict; with the current one: a new RV.
        var body = created.json
        body["metadata"] = (created.json["metadata"] as! [String: Any]).merging(["labels": ["a": "b"]]) { $1 }
        let ok = try f.request("PUT", "/api/v1/namespaces/default/pods/p1", body)
        #expect(ok.code == 200)
        #expect(try #require(int(ok.json, "metadata.resourceVersion")) > rv1)
        #expect(int(ok.json, "metadata.generation") == 1)
        let stale = try f.request("PUT", "/api/v1/namespaces/default/pods/p1", body)
        #expect(stale.code == 409)
        #expect(str(stale.json, "reason") == "Conflict")
        #expect(str(stale.json, "message")?.contains("the object has been modified") == true)
        // Changing anything but the image in a pod spec is refused; the image is allowed and bumps generation.
        // (Edit the stored spec, as a client does: it carries what admission added at create.)
        var spec = ok.json
        var podSpec = spec["spec"] as! [String: Any]
        var containers = podSpec["containers"] as! [[String: Any]]
        containers[0]["image"] = "busybox:1.37"
        podSpec["containers"] = containers
        podSpec["nodeName"] = "n1"
        spec["spec"] = podSpec
        #expect(try f.request("PUT", "/api/v1/namespaces/default/pods/p1", spec).code == 422)
        podSpec["nodeName"] = nil
        spec["spec"] = podSpec
        let img = try f.request("PUT", "/api/v1/namespaces/default/pods/p1", spec)
        #expect(img.code == 200)
        #expect(int(img.json, "metadata.generation") == 2)
        #expect(str(img.json, "spec.containers.0.image") == "busybox:1.37")
    }

    @Test func statusSubresource() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let created = try f.request("POST", "/api/v1/namespaces/default/pods", pod("p1", node: "n1"))
        var withStatus = created.json
        withStatus["status"] = ["phase": "Running", "podIP": "10.0.0.5"]
        // The main resource ignores status.
        let main = try f.request("PUT", "/api/v1/namespaces/default/pods/p1", withStatus)
        #expect(main.code == 200)
        #expect(str(main.json, "status.phase") == "Pending")
        // /status changes only status.
        var s = main.json
        s["status"] = ["phase": "Running", "podIP": "10.0.0.5", "qosClass": "BestEffort"]
        s["metadata"] = (main.json["metadata"] as! [String: Any]).merging(["labels": ["changed": "yes"]]) { $1 }
        s["spec"] = ["containers": [["name": "c", "image": "other:1"]]]
        let st = try f.request("PUT", "/api/v1/namespaces/default/pods/p1/status", s)
        #expect(st.code == 200)
        #expect(str(st.json, "status.phase") == "Running")
        #expect(str(st.json, "spec.containers.0.image") == "busybox:1.36")
        #expect(value(st.json, "metadata.labels.changed") == nil)
        let get = try f.request("GET", "/api/v1/namespaces/default/pods/p1/status")
        #expect(str(get.json, "status.podIP") == "10.0.0.5")
    }

    @Test func defaultObjects() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let ns = try f.request("GET", "/api/v1/namespaces")
        let names = (value(ns.json, "items") as? [[String: Any]] ?? []).compactMap { str($0, "metadata.name") }
        #expect(names == ["default", "kube-node-lease", "kube-public", "kube-system"])
        let svc = try f.request("GET", "/api/v1/namespaces/default/services/kubernetes")
        #expect(str(svc.json, "spec.clusterIP") == "10.96.0.1")
        #expect(int(svc.json, "spec.ports.0.port") == 443)
        for n in names { #expect(try f.request("GET", "/api/v1/namespaces/\(n)/serviceaccounts/default").code == 200) }
        #expect(try f.request("POST", "/api/v1/namespaces", ["metadata": ["name": "team-a"]]).code == 201)
        #expect(try f.request("GET", "/api/v1/namespaces/team-a/serviceaccounts/default").code == 200)
    }

    @Test func leasesEvictionAndNamespaceDeletion() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        let l = try f.request("POST", leases, ["metadata": ["name": "n1"],
                                               "spec": ["holderIdentity": "n1", "leaseDurationSeconds": 40]])
        #expect(l.code == 201)
        #expect(str(l.json, "apiVersion") == "coordination.k8s.io/v1")
        var renew = l.json
        renew["spec"] = ["holderIdentity": "n1", "leaseDurationSeconds": 40, "renewTime": "2025-01-01T00:00:10.000000Z"]
        let r = try f.request("PUT", "\(leases)/n1", renew)
        #expect(r.code == 200 && str(r.json, "spec.renewTime") == "2025-01-01T00:00:10.000000Z")
        #expect(try f.request("PUT", "\(leases)/n1", renew).code == 409)   // the old resourceVersion again

        try f.request("POST", "/api/v1/namespaces", ["metadata": ["name": "scratch"]])
        try f.request("POST", "/api/v1/namespaces/scratch/pods", pod("p", node: "n1"))
        let ev = try f.request("POST", "/api/v1/namespaces/scratch/pods/p/eviction",
                               ["apiVersion": "policy/v1", "kind": "Eviction", "metadata": ["name": "p"]])
        #expect(ev.code == 201 && str(ev.json, "status") == "Success")
        #expect(int(try f.request("GET", "/api/v1/namespaces/scratch/pods/p").json, "metadata.deletionGracePeriodSeconds") == 30)
        #expect(try f.request("DELETE", "/api/v1/namespaces/scratch").code == 200)
        #expect(try f.request("GET", "/api/v1/namespaces/scratch/pods/p").code == 404)
        #expect(try f.request("GET", "/api/v1/namespaces/scratch/serviceaccounts/default").code == 404)
        #expect(try f.request("POST", "/api/v1/namespaces/scratch/configmaps", ["metadata": ["name": "c"]]).code == 404)
    }
}
