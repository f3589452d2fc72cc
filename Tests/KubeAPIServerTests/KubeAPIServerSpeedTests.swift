// Seeding and listing many pods is fast enough that the test API server is never the bottleneck of a benchmark,
// and the cached serializations behind a LIST follow every change.

import Foundation
import Testing
@testable import EdgedTestSupport

private func names(_ list: [String: Any]) -> [String] {
    (value(list, "items") as? [[String: Any]] ?? []).compactMap { str($0, "metadata.name") }
}

@Suite struct KubeAPIServerSpeedTests {
    @Test func seedAndList1000Pods() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let t0 = ContinuousClock.now
        let created = try f.server.createPods(namespace: "bench", count: 1000, nodeName: "edge-1")
        let seed = ContinuousClock.now - t0
        print("seed 1000 pods: \(seed)")
        #expect(created.count == 1000 && created.first == "pod-0" && created.last == "pod-999")
        #expect(seed < .seconds(2))

        var inProcess: [Duration] = []
        var body = Data()
        for _ in 0..<5 {
            let t = ContinuousClock.now
            let r = f.server.call("GET", "/api/v1/namespaces/bench/pods")
            inProcess.append(ContinuousClock.now - t)
            #expect(r.code == 200)
            body = r.body
        }
        let perPod = body.count / 1000
        print("list 1000 pods in-process: \(inProcess), \(body.count) bytes (\(perPod) per pod)")
        #expect(perPod > 2500 && perPod < 4000, "pods are about 3 KB each")
        #expect(inProcess.sorted()[2] < .milliseconds(50))
        let list = try #require(try JSONSerialization.jsonObject(with: body) as? [String: Any])
        #expect(str(list, "kind") == "PodList" && str(list, "apiVersion") == "v1")
        #expect(int(list, "metadata.resourceVersion") == f.server.resourceVersion)
        let items = try #require(value(list, "items") as? [[String: Any]])
        #expect(items.count == 1000 && items.allSatisfy { $0["kind"] == nil && $0["apiVersion"] == nil })
        #expect(str(items[0], "status.phase") == "Running" && str(items[0], "spec.nodeName") == "edge-1")
        #expect(str(items[0], "status.podIP") == "10.244.0.2")
        // The served bytes are exactly what the generic serializer gives for the same list.
        let pods = KubeAPIServerCore.pods
        let expected: KJSON = f.server.core.store.lock.withLock {
            .object(["kind": .string("PodList"), "apiVersion": .string("v1"),
                     "metadata": .object(["resourceVersion": .string(String(f.server.core.store.resourceVersion))]),
                     "items": .array(f.server.core.store.all(pods, namespace: "bench").map { f.server.core.stripTypeMeta($0.1) })])
        }
        #expect(Array(body) == expected.bytes)

        // Over HTTPS, five lists on one connection.
        var args = ["/usr/bin/curl", "-sS", "--cacert", f.caFile] + (try f.authArgs(.admin))
        for _ in 0..<5 {
            args += ["-o", "/dev/null", "-w", "%{http_code} %{time_starttransfer} %{time_total} %{size_download}\\n",
                     f.server.url + "/api/v1/namespaces/bench/pods"]
        }
        let out = try runCommand(args).stdout
        print("list 1000 pods over HTTPS (code, first byte s, total s, bytes):\n\(out)")
        let rows = out.split(separator: "\n").map { $0.split(separator: " ") }
        #expect(rows.count == 5 && rows.allSatisfy { $0[0] == "200" && Int($0[3]) == body.count })
        let totals = rows.compactMap { Double($0[2]) }.sorted()
        #expect(totals.count == 5 && totals[2] < 0.2)
    }

    @Test func cachedListBytesFollowEveryChange() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        try f.server.createPods(namespace: "c", count: 5, nodeName: nil, namePrefix: "p", labels: ["tier": "edge"])
        let pending = try f.request("GET", "/api/v1/namespaces/c/pods")
        #expect(names(pending.json) == ["p0", "p1", "p2", "p3", "p4"])
        #expect(str(pending.json, "items.0.status.phase") == "Pending" && str(pending.json, "items.0.metadata.labels.tier") == "edge")
        // A second list (served from the cached serializations) is byte for byte the first one.
        #expect(f.server.call("GET", "/api/v1/namespaces/c/pods").body == f.server.call("GET", "/api/v1/namespaces/c/pods").body)
        // Change one, delete one, add one: the next list shows exactly that.
        try f.request("PATCH", "/api/v1/namespaces/c/pods/p1", ["metadata": ["labels": ["changed": "yes"]]],
                      contentType: "application/merge-patch+json")
        try f.server.delete("/api/v1/namespaces/c/pods/p3")
        try f.server.createPods(namespace: "c", count: 1, namePrefix: "p25")
        let after = try f.request("GET", "/api/v1/namespaces/c/pods")
        #expect(names(after.json) == ["p0", "p1", "p2", "p250", "p4"])
        #expect(str(after.json, "items.1.metadata.labels.changed") == "yes")
        #expect(str(after.json, "items.0.metadata.labels.changed") == nil)
        #expect(int(after.json, "metadata.resourceVersion") == f.server.resourceVersion)
        // Selectors and pages still work on top of the cache.
        #expect(names(try f.request("GET", "/api/v1/namespaces/c/pods?labelSelector=changed%3Dyes").json) == ["p1"])
        let page = try f.request("GET", "/api/v1/namespaces/c/pods?limit=2")
        #expect(names(page.json) == ["p0", "p1"] && str(page.json, "metadata.continue") != nil)
        // A name that is taken fails like a create.
        #expect(throws: KubeAPIServer.Failure.self) { try f.server.createPods(namespace: "c", count: 1, namePrefix: "p") }
    }
}
