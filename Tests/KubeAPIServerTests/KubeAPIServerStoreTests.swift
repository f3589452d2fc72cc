// Lists (selectors, paging, snapshots, 410 on expired continue), watches (replay, synthetic ADDED, bookmarks,
// 410 ERROR after compaction, timeouts, selector transitions) and deletion semantics.

import Foundation
import Testing
@testable import EdgedTestSupport

private func cm(_ name: String, labels: [String: String] = [:]) -> [String: Any] {
    ["metadata": ["name": name, "labels": labels], "data": ["k": "v"]]
}

private func names(_ list: [String: Any]) -> [String] {
    (value(list, "items") as? [[String: Any]] ?? []).compactMap { str($0, "metadata.name") }
}

@Suite struct KubeAPIServerStoreTests {
    @Test func listSelectors() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        try f.request("POST", "/api/v1/namespaces/default/configmaps", cm("a", labels: ["app": "web", "tier": "fe"]))
        try f.request("POST", "/api/v1/namespaces/default/configmaps", cm("b", labels: ["app": "db"]))
        try f.request("POST", "/api/v1/namespaces/default/configmaps", cm("c"))
        try f.request("POST", "/api/v1/namespaces/kube-system/configmaps", cm("d", labels: ["app": "web"]))
        func q(_ sel: String, ns: String = "namespaces/default/") throws -> [String] {
            let enc = sel.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
            return names(try f.request("GET", "/api/v1/\(ns)configmaps?labelSelector=\(enc)").json)
        }
        #expect(try q("app=web") == ["a"])
        #expect(try q("app==web", ns: "") == ["a", "d"])
        // kube-root-ca.crt: the root-ca-cert-publisher's ConfigMap, in every namespace.
        #expect(try q("app!=web") == ["b", "c", "kube-root-ca.crt"])
        #expect(try q("app in (web,db)") == ["a", "b"])
        #expect(try q("app notin (web)") == ["b", "c", "kube-root-ca.crt"])
        #expect(try q("app") == ["a", "b"])
        #expect(try q("!app") == ["c", "kube-root-ca.crt"])
        #expect(try q("app=web,tier=fe") == ["a"])
        let bad = try f.request("GET", "/api/v1/configmaps?labelSelector=app%20foo%20(x)")
        #expect(bad.code == 400)
        let list = try f.request("GET", "/api/v1/configmaps?fieldSelector=metadata.name%3Dd")
        #expect(names(list.json) == ["d"])
        #expect(str(list.json, "kind") == "ConfigMapList")
        #expect(int(list.json, "metadata.resourceVersion") == f.server.resourceVersion)
        #expect(value(list.json, "items.0.kind") == nil)
        let unsupported = try f.request("GET", "/api/v1/configmaps?fieldSelector=spec.nodeName%3Dn1")
        #expect(unsupported.code == 400)
        #expect(str(unsupported.json, "message") == "field label not supported: spec.nodeName")
    }

    @Test func podFieldSelectors() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        for (name, node) in [("p1", "n1"), ("p2", "n2"), ("p3", "n1")] {
            try f.request("POST", "/api/v1/namespaces/default/pods",
                          ["metadata": ["name": name], "spec": ["nodeName": node, "containers": [["name": "c", "image": "i:1"]]]])
        }
        #expect(names(try f.request("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1").json) == ["p1", "p3"])
        #expect(names(try f.request("GET", "/api/v1/pods?fieldSelector=spec.nodeName!%3Dn1").json) == ["p2"])
        #expect(names(try f.request("GET", "/api/v1/pods?fieldSelector=status.phase%3DPending,spec.nodeName%3Dn2").json) == ["p2"])
        // Events by involvedObject, CSRs by signer.
        try f.request("POST", "/api/v1/namespaces/default/events", ["metadata": ["name": "e1"],
            "involvedObject": ["kind": "Pod", "name": "p1", "namespace": "default"], "reason": "Started"])
        try f.request("POST", "/api/v1/namespaces/default/events", ["metadata": ["name": "e2"],
            "involvedObject": ["kind": "Node", "name": "n1"], "reason": "Ready"])
        #expect(names(try f.request("GET", "/api/v1/events?fieldSelector=involvedObject.kind%3DPod,involvedObject.name%3Dp1").json) == ["e1"])
    }

    @Test func pagingWithContinueReadsASnapshot() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        for i in 0..<5 { try f.request("POST", "/api/v1/namespaces/default/configmaps", cm("cm\(i)")) }
        let page1 = try f.request("GET", "/api/v1/namespaces/default/configmaps?limit=2")
        #expect(names(page1.json) == ["cm0", "cm1"])
        #expect(int(page1.json, "metadata.remainingItemCount") == 4)   // cm2-cm4 and kube-root-ca.crt
        let token = try #require(str(page1.json, "metadata.continue"))
        let rv = try #require(str(page1.json, "metadata.resourceVersion"))
        // Changes after the first page do not show in the later pages (a consistent snapshot).
        try f.request("DELETE", "/api/v1/namespaces/default/configmaps/cm3")
        try f.request("POST", "/api/v1/namespaces/default/configmaps", cm("cm9"))
        let enc = token.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        let page2 = try f.request("GET", "/api/v1/namespaces/default/configmaps?limit=2&continue=\(enc)")
        #expect(names(page2.json) == ["cm2", "cm3"])
        #expect(str(page2.json, "metadata.resourceVersion") == rv)
        let tok2 = try #require(str(page2.json, "metadata.continue")).addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        let page3 = try f.request("GET", "/api/v1/namespaces/default/configmaps?limit=2&continue=\(tok2)")
        #expect(names(page3.json) == ["cm4", "kube-root-ca.crt"])
        #expect(str(page3.json, "metadata.continue") == nil)
        // After compaction the token is too old: 410 Expired.
        f.server.compact()
        let gone = try f.request("GET", "/api/v1/namespaces/default/configmaps?limit=2&continue=\(tok2)")
        #expect(gone.code == 410)
        #expect(str(gone.json, "reason") == "Expired")
        #expect(try f.request("GET", "/api/v1/namespaces/default/configmaps?continue=garbage").code == 400)
    }

    @Test func watchReplaysFromResourceVersionAndSendsSyntheticAdds() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let a = try f.request("POST", "/api/v1/namespaces/default/configmaps", cm("a"))
        let rvA = try #require(str(a.json, "metadata.resourceVersion"))
        try f.request("POST", "/api/v1/namespaces/default/configmaps", cm("b"))
        try f.request("DELETE", "/api/v1/namespaces/default/configmaps/a")

        let replay = try f.watch("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=\(rvA)")
        defer { replay.stop() }
        let e1 = try await replay.next()
        #expect(e1["type"] as? String == "ADDED")
        #expect(str(e1, "object.metadata.name") == "b")
        #expect(str(e1, "object.kind") == "ConfigMap")
        let e2 = try await replay.next()
        #expect(e2["type"] as? String == "DELETED")
        #expect(str(e2, "object.metadata.name") == "a")

        let fresh = try f.watch("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0")
        defer { fresh.stop() }
        let s1 = try await fresh.next()
        #expect(s1["type"] as? String == "ADDED" && str(s1, "object.metadata.name") == "b")
        let s2 = try await fresh.next()   // the root-ca-cert-publisher's ConfigMap
        #expect(s2["type"] as? String == "ADDED" && str(s2, "object.metadata.name") == "kube-root-ca.crt")
        // Live changes follow, with increasing resourceVersions.
        let c = try f.request("POST", "/api/v1/namespaces/default/configmaps", cm("c"))
        let live = try await fresh.next()
        #expect(live["type"] as? String == "ADDED")
        #expect(str(live, "object.metadata.resourceVersion") == str(c.json, "metadata.resourceVersion"))
        var upd = c.json
        upd["data"] = ["k": "v2"]
        try f.request("PUT", "/api/v1/namespaces/default/configmaps/c", upd)
        let mod = try await fresh.next()
        #expect(mod["type"] as? String == "MODIFIED" && str(mod, "object.data.k") == "v2")
        // The legacy /watch/ path for one object.
        let one = try f.watch("/api/v1/watch/namespaces/default/configmaps/c")
        defer { one.stop() }
        #expect(str(try await one.next(), "object.metadata.name") == "c")
    }

    @Test func watchBookmarksTimeoutAndExpiry() async throws {
        let f = try await APIFixture(options: .init(watchBookmarkInterval: .milliseconds(200)))
        defer { Task { await f.close() } }
        try f.request("POST", "/api/v1/namespaces/default/configmaps", cm("a"))
        let rv = f.server.resourceVersion
        let w = try f.watch("/api/v1/namespaces/default/configmaps?watch=1&allowWatchBookmarks=true&resourceVersion=\(rv)")
        defer { w.stop() }
        let b = try await w.next(timeout: 15)   // (curl may start slowly while the other suites run)
        #expect(b["type"] as? String == "BOOKMARK")
        #expect(int(b, "object.metadata.resourceVersion") == rv)
        #expect(str(b, "object.kind") == "ConfigMap")
        #expect(value(b, "object.metadata.name") == nil)

        let t = try f.watch("/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1&resourceVersion=\(rv)")
        defer { t.stop() }
        #expect(await t.ended(timeout: 5))

        f.server.compact()
        try f.request("POST", "/api/v1/namespaces/default/configmaps", cm("b"))
        let old = try f.watch("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=\(rv - 1)")
        defer { old.stop() }
        let err = try await old.next()
        #expect(err["type"] as? String == "ERROR")
        #expect(int(err, "object.code") == 410)
        #expect(str(err, "object.reason") == "Expired")
        #expect(str(err, "object.message")?.hasPrefix("too old resource version") == true)
        #expect(await old.ended(timeout: 5))
    }

    @Test func watchSelectorTransitionsAreAddedAndDeleted() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        // From the list's resourceVersion, so nothing is missed if curl connects late.
        let rv0 = try #require(str(try f.request("GET", "/api/v1/namespaces/default/configmaps").json, "metadata.resourceVersion"))
        let w = try f.watch("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=\(rv0)&labelSelector=app%3Dweb")
        defer { w.stop() }
        let created = try f.request("POST", "/api/v1/namespaces/default/configmaps", cm("a", labels: ["app": "db"]))
        var body = created.json
        body["metadata"] = ["name": "a", "labels": ["app": "web"]]
        try f.request("PUT", "/api/v1/namespaces/default/configmaps/a", body)
        let add = try await w.next()
        #expect(add["type"] as? String == "ADDED")
        body["metadata"] = ["name": "a", "labels": ["app": "db"]]
        let moved = try f.request("PUT", "/api/v1/namespaces/default/configmaps/a", body)
        let del = try await w.next()
        #expect(del["type"] as? String == "DELETED")
        #expect(str(del, "object.metadata.labels.app") == "web")   // previous content ...
        #expect(str(del, "object.metadata.resourceVersion") == str(moved.json, "metadata.resourceVersion"))  // ... new RV
    }

    @Test func gracefulPodDeletion() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        func mk(_ name: String, node: String?, grace: Int? = nil) throws -> [String: Any] {
            var spec: [String: Any] = ["containers": [["name": "c", "image": "i:1"]]]
            if let node { spec["nodeName"] = node }
            if let grace { spec["terminationGracePeriodSeconds"] = grace }
            return try f.request("POST", "/api/v1/namespaces/default/pods", ["metadata": ["name": name], "spec": spec]).json
        }
        _ = try mk("bound", node: "n1", grace: 45)
        let d = try f.request("DELETE", "/api/v1/namespaces/default/pods/bound")
        #expect(d.code == 200)
        #expect(str(d.json, "metadata.deletionTimestamp") != nil)
        #expect(int(d.json, "metadata.deletionGracePeriodSeconds") == 45)
        #expect(try f.request("GET", "/api/v1/namespaces/default/pods/bound").code == 200)
        // A shorter grace period from the body wins; then the kubelet's grace 0 removes it.
        let shorter = try f.request("DELETE", "/api/v1/namespaces/default/pods/bound", ["gracePeriodSeconds": 10])
        #expect(int(shorter.json, "metadata.deletionGracePeriodSeconds") == 10)
        let longer = try f.request("DELETE", "/api/v1/namespaces/default/pods/bound?gracePeriodSeconds=20")
        #expect(int(longer.json, "metadata.deletionGracePeriodSeconds") == 10)
        let uid = try #require(str(longer.json, "metadata.uid"))
        let wrongUID = try f.request("DELETE", "/api/v1/namespaces/default/pods/bound",
                                     ["gracePeriodSeconds": 0, "preconditions": ["uid": "not-\(uid)"]])
        #expect(wrongUID.code == 409)
        #expect(str(wrongUID.json, "message")?.contains("Precondition failed: UID in precondition") == true)
        let gone = try f.request("DELETE", "/api/v1/namespaces/default/pods/bound",
                                 ["gracePeriodSeconds": 0, "preconditions": ["uid": uid]])
        #expect(gone.code == 200)
        #expect(try f.request("GET", "/api/v1/namespaces/default/pods/bound").code == 404)
        // Unbound pods go at once; so do terminal ones.
        _ = try mk("unbound", node: nil)
        try f.request("DELETE", "/api/v1/namespaces/default/pods/unbound")
        #expect(try f.request("GET", "/api/v1/namespaces/default/pods/unbound").code == 404)
        _ = try mk("done", node: "n1")
        try f.server.put("/api/v1/namespaces/default/pods/done", ["metadata": ["name": "done"],
            "spec": ["nodeName": "n1", "containers": [["name": "c", "image": "i:1"]]], "status": ["phase": "Succeeded"]])
        try f.request("DELETE", "/api/v1/namespaces/default/pods/done")
        #expect(try f.request("GET", "/api/v1/namespaces/default/pods/done").code == 404)
        #expect(try f.request("DELETE", "/api/v1/namespaces/default/pods/done").code == 404)
    }

    @Test func finalizersHoldDeletion() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let c = try f.request("POST", "/api/v1/namespaces/default/configmaps",
                              ["metadata": ["name": "held", "finalizers": ["example.com/x"]]])
        #expect(c.code == 201)
        let d = try f.request("DELETE", "/api/v1/namespaces/default/configmaps/held")
        #expect(str(d.json, "metadata.deletionTimestamp") != nil)
        #expect(try f.request("GET", "/api/v1/namespaces/default/configmaps/held").code == 200)
        let p = try f.request("PATCH", "/api/v1/namespaces/default/configmaps/held", ["metadata": ["finalizers": NSNull()]],
                              contentType: "application/merge-patch+json")
        #expect(p.code == 200)
        #expect(try f.request("GET", "/api/v1/namespaces/default/configmaps/held").code == 404)
    }

    @Test func directStoreAccess() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        try f.server.put("/api/v1/nodes/n1", ["metadata": ["name": "n1", "labels": ["x": "y"]],
                                              "status": ["conditions": [["type": "Ready", "status": "True"]]]])
        let node = try #require(f.server.objectJSON("/api/v1/nodes/n1"))
        #expect(str(node, "status.conditions.0.type") == "Ready")
        #expect(str(node, "metadata.uid") != nil)
        #expect(try f.request("GET", "/api/v1/nodes/n1").code == 200)
        try f.server.delete("/api/v1/nodes/n1")
        #expect(f.server.object("/api/v1/nodes/n1") == nil)
        #expect(throws: KubeAPIServer.Failure.self) { try f.server.delete("/api/v1/nodes/n1") }
        let r = f.server.call("GET", "/api/v1/namespaces/default/services/kubernetes")
        #expect(r.code == 200)
    }
}
