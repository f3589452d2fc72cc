// The taint-eviction controller of the test API server (KubeAPIServer+TaintEviction.swift): pods on a node with
// NoExecute taints are deleted (DisruptionTarget condition first, then a graceful delete) when their tolerations run
// out, kept when they tolerate forever or the taints go in time; the option switches it off; the DefaultTolerationSeconds
// admission's 300 s can be scaled down. Pods and node status go through real HTTPS; passes mostly run by hand.

import Foundation
import Testing
@testable import EdgedTestSupport

private let unreachable = "node.kubernetes.io/unreachable"

/// A server whose node lifecycle passes run by hand (or on a short timer), with node n1 posting Ready.
private struct TaintedCluster {
    let f: APIFixture

    static func start(taintEviction: Bool = true, defaultTolerationSeconds: Int = 300,
                      monitorPeriod: Duration = .seconds(3600)) async throws -> TaintedCluster {
        let lifecycle = KubeAPIServer.NodeLifecycleOptions(monitorPeriod: monitorPeriod, gracePeriod: .milliseconds(200),
                                                           startupGracePeriod: .milliseconds(200))
        let f = try await APIFixture(options: .init(nodeLifecycle: lifecycle, taintEviction: taintEviction,
                                                    defaultTolerationSeconds: defaultTolerationSeconds))
        let c = TaintedCluster(f: f)
        try f.server.put("/api/v1/nodes/n1", ["metadata": ["name": "n1"]])
        try c.postReady()
        f.server.runNodeLifecyclePass()
        return c
    }

    func close() async { await f.close() }

    /// The node's status with a fresh Ready=True heartbeat, as its kubelet posts it (over HTTPS, or `direct`ly:
    /// cheap enough for every pass).
    func postReady(direct: Bool = false) throws {
        let now = Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        let body: [String: Any] = ["status": ["conditions": [[
            "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok",
            "lastHeartbeatTime": now, "lastTransitionTime": now]]]]
        let type = "application/strategic-merge-patch+json"
        let code = direct ? f.server.call("PATCH", "/api/v1/nodes/n1/status", body: try JSONSerialization.data(withJSONObject: body),
                                          contentType: type).code
            : try f.request("PATCH", "/api/v1/nodes/n1/status", body, contentType: type).code
        #expect(code == 200)
    }

    /// Stays silent past the grace period: the next pass taints it unreachable (NoExecute). Returns that moment.
    func goUnreachable() async throws -> Date {
        f.server.runNodeLifecyclePass()   // sees the last heartbeat, if any
        try await Task.sleep(for: .milliseconds(300))
        let at = Date()
        f.server.runNodeLifecyclePass()
        #expect(taints().contains("\(unreachable):NoExecute"))
        return at
    }

    func taints() -> [String] {
        (value(f.server.objectJSON("/api/v1/nodes/n1") ?? [:], "spec.taints") as? [[String: Any]] ?? [])
            .map { "\($0["key"] as? String ?? ""):\($0["effect"] as? String ?? "")" }
    }

    /// Creates a pod bound to n1 over HTTPS; returns the stored tolerations.
    @discardableResult
    func createPod(_ name: String, tolerations: [[String: Any]] = [], grace: Int? = nil) throws -> [[String: Any]] {
        var spec: [String: Any] = ["nodeName": "n1", "containers": [["name": "c", "image": "busybox:1.36"]]]
        if !tolerations.isEmpty { spec["tolerations"] = tolerations }
        if let grace { spec["terminationGracePeriodSeconds"] = grace }
        let r = try f.request("POST", "/api/v1/namespaces/default/pods", ["metadata": ["name": name], "spec": spec])
        #expect(r.code == 201)
        return value(r.json, "spec.tolerations") as? [[String: Any]] ?? []
    }

    func pod(_ name: String) -> [String: Any]? { f.server.objectJSON("/api/v1/namespaces/default/pods/\(name)") }

    func deleting(_ name: String) -> Bool { pod(name).map { str($0, "metadata.deletionTimestamp") != nil } ?? true }

    func condition(_ name: String, _ type: String) -> [String: Any]? {
        (value(pod(name) ?? [:], "status.conditions") as? [[String: Any]])?.first { $0["type"] as? String == type }
    }

    /// Runs a pass every 50 ms until `done` (or `timeout` s); returns whether it happened.
    func passUntil(timeout: Double, _ done: () -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            f.server.runNodeLifecyclePass()
            if done() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    /// Runs passes for `seconds` s (nothing is expected to happen); with `heartbeats` the node posts Ready before
    /// each, so it stays untainted.
    func passFor(_ seconds: Double, heartbeats: Bool = false) async throws {
        _ = try await passUntil(timeout: seconds) {
            if heartbeats { try? postReady(direct: true) }
            return false
        }
    }

    /// The messages of the TaintManagerEviction Events about a pod.
    func evictionEvents(_ name: String) throws -> [String] {
        let list = try f.request("GET", "/api/v1/namespaces/default/events").json
        return (value(list, "items") as? [[String: Any]] ?? []).filter {
            str($0, "reason") == "TaintManagerEviction" && str($0, "involvedObject.name") == name
        }.compactMap { str($0, "message") }
    }
}

private func toleration(_ key: String, seconds: Int?) -> [String: Any] {
    var t: [String: Any] = ["key": key, "operator": "Exists", "effect": "NoExecute"]
    if let seconds { t["tolerationSeconds"] = seconds }
    return t
}

@Suite(.serialized) struct KubeAPIServerTaintEvictionTests {
    @Test func podIsDeletedWhenItsTolerationRunsOut() async throws {
        let c = try await TaintedCluster.start()
        defer { Task { await c.close() } }
        try c.createPod("short", tolerations: [toleration(unreachable, seconds: 2)], grace: 7)
        try c.createPod("forever", tolerations: [toleration(unreachable, seconds: nil)])
        let rv = c.f.server.resourceVersion
        let watch = try c.f.watch("/api/v1/namespaces/default/pods?watch=1&resourceVersion=\(rv)&fieldSelector=metadata.name%3Dshort")
        defer { watch.stop() }

        let tainted = try await c.goUnreachable()
        try await c.passFor(1.5)
        #expect(!c.deleting("short"))
        #expect(try await c.passUntil(timeout: 3) { c.deleting("short") })
        let after = Date().timeIntervalSince(tainted)
        #expect(after >= 2 && after < 3, "deleted \(after) s after the taint")

        // First the DisruptionTarget condition through the status, then the graceful delete.
        let first = try await watch.nextChange()
        #expect(first["type"] as? String == "MODIFIED")
        let marked = try #require(first["object"] as? [String: Any])
        #expect(str(marked, "metadata.deletionTimestamp") == nil)
        let condition = try #require((value(marked, "status.conditions") as? [[String: Any]])?
            .first { $0["type"] as? String == "DisruptionTarget" })
        #expect(condition["status"] as? String == "True")
        #expect(condition["reason"] as? String == "DeletionByTaintManager")
        #expect(condition["message"] as? String == "Taint manager: deleting due to NoExecute taint")
        #expect(condition["lastTransitionTime"] as? String != nil)
        let second = try await watch.nextChange()
        #expect(second["type"] as? String == "MODIFIED")
        let deleted = try #require(second["object"] as? [String: Any])
        #expect(str(deleted, "metadata.deletionTimestamp") != nil)
        #expect(int(deleted, "metadata.deletionGracePeriodSeconds") == 7)
        #expect(try c.evictionEvents("short") == ["Marking for deletion Pod default/short"])

        // Tolerating without tolerationSeconds: kept for good.
        try await c.passFor(1)
        #expect(!c.deleting("forever"))
        #expect(c.condition("forever", "DisruptionTarget") == nil)
        #expect(try c.evictionEvents("forever").isEmpty)
    }

    @Test func podNotToleratingATaintIsDeletedAtOnce() async throws {
        let c = try await TaintedCluster.start()
        defer { Task { await c.close() } }
        let drain = "example.com/drain"
        try c.createPod("plain", grace: 0)   // only the default not-ready/unreachable tolerations
        try c.createPod("tolerant", tolerations: [["key": drain, "operator": "Equal", "value": "now", "effect": "NoExecute"]])
        try c.createPod("other-value", tolerations: [["key": drain, "operator": "Equal", "value": "later"]], grace: 5)
        try c.createPod("everything", tolerations: [["operator": "Exists"]], grace: 5)
        let r = try c.f.request("PATCH", "/api/v1/nodes/n1", ["spec": ["taints": [["key": drain, "value": "now", "effect": "NoExecute"]]]],
                                contentType: "application/merge-patch+json")
        #expect(r.code == 200)
        c.f.server.runNodeLifecyclePass()
        #expect(c.pod("plain") == nil)   // grace 0: gone at once
        #expect(c.deleting("other-value"))   // the value does not match
        #expect(c.condition("other-value", "DisruptionTarget")?["reason"] as? String == "DeletionByTaintManager")
        #expect(!c.deleting("tolerant"))
        #expect(!c.deleting("everything"))   // empty key with Exists tolerates every taint, forever
        try await c.passFor(0.5)
        #expect(!c.deleting("tolerant"))
        #expect(!c.deleting("everything"))
    }

    @Test func nodeBackBeforeTheTimeKeepsThePod() async throws {
        let c = try await TaintedCluster.start()
        defer { Task { await c.close() } }
        try c.createPod("web", tolerations: [toleration(unreachable, seconds: 1)])
        _ = try await c.goUnreachable()
        try await Task.sleep(for: .milliseconds(500))
        try c.postReady()
        c.f.server.runNodeLifecyclePass()
        #expect(c.taints().isEmpty)
        try await c.passFor(1.5, heartbeats: true)
        #expect(c.taints().isEmpty)
        #expect(!c.deleting("web"))
        #expect(c.condition("web", "DisruptionTarget") == nil)
        #expect(try c.evictionEvents("web") == ["Cancelling deletion of Pod default/web"])

        // Tainted again later: the time starts over.
        let again = try await c.goUnreachable()
        #expect(try await c.passUntil(timeout: 3) { c.deleting("web") })
        #expect(Date().timeIntervalSince(again) >= 1)
    }

    @Test func changedTolerationsAreLookedAtAgain() async throws {
        let c = try await TaintedCluster.start()
        defer { Task { await c.close() } }
        func setSeconds(_ pod: String, _ seconds: Int?) throws {
            let tolerations = try #require(value(c.pod(pod) ?? [:], "spec.tolerations") as? [[String: Any]])
            let i = try #require(tolerations.firstIndex { $0["key"] as? String == unreachable })
            let op: [String: Any] = seconds.map { ["op": "replace", "path": "/spec/tolerations/\(i)/tolerationSeconds", "value": $0] }
                ?? ["op": "remove", "path": "/spec/tolerations/\(i)/tolerationSeconds"]
            let r = try c.f.request("PATCH", "/api/v1/namespaces/default/pods/\(pod)", [op],
                                    contentType: "application/json-patch+json")
            #expect(r.code == 200)
        }
        try c.createPod("raised-before", tolerations: [toleration(unreachable, seconds: 1)])
        try c.createPod("raised-after", tolerations: [toleration(unreachable, seconds: 1)])
        try c.createPod("made-forever", tolerations: [toleration(unreachable, seconds: 1)])
        try c.createPod("lowered-to-zero", tolerations: [toleration(unreachable, seconds: 3600)])
        try setSeconds("raised-before", 3600)   // before the taint: the new value counts
        let tainted = try await c.goUnreachable()
        // After the taint: a scheduled deletion is not moved by a longer tolerationSeconds (as in the real
        // controller: "lengthening toleration shouldn't work"), nor by a shorter one; without tolerationSeconds the
        // pod tolerates forever and the deletion is cancelled.
        try setSeconds("raised-after", 3600)
        try setSeconds("made-forever", nil)
        try setSeconds("lowered-to-zero", 0)
        c.f.server.runNodeLifecyclePass()
        #expect(!c.deleting("lowered-to-zero"))
        #expect(try await c.passUntil(timeout: 3) { c.deleting("raised-after") })
        #expect(Date().timeIntervalSince(tainted) >= 1)
        try await c.passFor(1)
        #expect(!c.deleting("raised-before"))
        #expect(!c.deleting("made-forever"))
        #expect(try c.evictionEvents("made-forever") == ["Cancelling deletion of Pod default/made-forever"])
        #expect(!c.deleting("lowered-to-zero"))
    }

    /// What a cloud-side autonomy controller does to pods already on a tainted node: only the NoExecute
    /// toleration's tolerationSeconds changes (the API allows nothing else), through PUT or a patch of the list.
    @Test func tolerationUpdatesOfAnAutonomyControllerAfterTheTaint() async throws {
        let c = try await TaintedCluster.start()
        defer { Task { await c.close() } }
        for name in ["forever", "longer", "appended"] { try c.createPod(name, tolerations: [toleration(unreachable, seconds: 1)]) }
        func tolerations(_ pod: String, _ change: (inout [String: Any]) -> Void) -> [[String: Any]] {
            (value(c.pod(pod) ?? [:], "spec.tolerations") as? [[String: Any]] ?? []).map { t in
                var t = t
                if t["key"] as? String == unreachable { change(&t) }
                return t
            }
        }
        let tainted = try await c.goUnreachable()
        // PUT of the whole pod without tolerationSeconds: it tolerates the taint forever, the deletion is cancelled.
        var pod = try #require(c.pod("forever"))
        pod["spec"] = (pod["spec"] as? [String: Any] ?? [:]).merging(["tolerations": tolerations("forever") { $0["tolerationSeconds"] = nil }]) { $1 }
        #expect(try c.f.request("PUT", "/api/v1/namespaces/default/pods/forever", pod).code == 200)
        // A longer finite time (strategic merge patch of the list): the deletion keeps its original time
        // (processPodOnNode keeps a scheduled eviction that was created before the change).
        #expect(try c.f.request("PATCH", "/api/v1/namespaces/default/pods/longer",
                                ["spec": ["tolerations": tolerations("longer") { $0["tolerationSeconds"] = 3600 }]],
                                contentType: "application/strategic-merge-patch+json").code == 200)
        // A second, forever toleration of the same taint after the 1 s one: the first matching toleration is the one
        // that counts (GetMatchingTolerations), so nothing changes.
        #expect(try c.f.request("PATCH", "/api/v1/namespaces/default/pods/appended",
                                [["op": "add", "path": "/spec/tolerations/-", "value": toleration(unreachable, seconds: nil)]],
                                contentType: "application/json-patch+json").code == 200)
        c.f.server.runNodeLifecyclePass()
        #expect(try await c.passUntil(timeout: 3) { c.deleting("longer") && c.deleting("appended") })
        let after = Date().timeIntervalSince(tainted)
        #expect(after >= 1 && after < 2.5, "deleted \(after) s after the taint")
        #expect(c.condition("longer", "DisruptionTarget")?["reason"] as? String == "DeletionByTaintManager")
        try await c.passFor(1.5)
        #expect(!c.deleting("forever"))
        #expect(c.condition("forever", "DisruptionTarget") == nil)
        #expect(try c.evictionEvents("forever") == ["Cancelling deletion of Pod default/forever"])
        #expect(try c.evictionEvents("longer") == ["Marking for deletion Pod default/longer"])
    }

    @Test func optionOffDeletesNothing() async throws {
        let c = try await TaintedCluster.start(taintEviction: false)
        defer { Task { await c.close() } }
        try c.createPod("short", tolerations: [toleration(unreachable, seconds: 1)])
        try c.createPod("plain")
        let r = try c.f.request("PATCH", "/api/v1/nodes/n1", ["spec": ["taints": [["key": "example.com/drain", "effect": "NoExecute"]]]],
                                contentType: "application/merge-patch+json")
        #expect(r.code == 200)
        _ = try await c.goUnreachable()
        try await c.passFor(1.5)
        #expect(!c.deleting("short"))
        #expect(!c.deleting("plain"))
        #expect(c.condition("plain", "DisruptionTarget") == nil)
    }

    @Test func defaultTolerationSecondsOption() async throws {
        let standard = try await TaintedCluster.start()
        let tolerations = try standard.createPod("web")
        await standard.close()
        #expect(tolerations.count == 2)
        #expect(tolerations.allSatisfy { $0["tolerationSeconds"] as? Int == 300 })

        let c = try await TaintedCluster.start(defaultTolerationSeconds: 1)
        defer { Task { await c.close() } }
        let short = try c.createPod("web")
        #expect(Set(short.compactMap { $0["key"] as? String }) == ["node.kubernetes.io/not-ready", unreachable])
        #expect(short.allSatisfy { $0["tolerationSeconds"] as? Int == 1 && $0["effect"] as? String == "NoExecute" })
        // A pod's own toleration of the taint is kept as it is.
        let own = try c.createPod("own", tolerations: [toleration(unreachable, seconds: 60)])
        #expect(own.first { $0["key"] as? String == unreachable }?["tolerationSeconds"] as? Int == 60)
        let tainted = try await c.goUnreachable()
        #expect(try await c.passUntil(timeout: 3) { c.deleting("web") })
        #expect(Date().timeIntervalSince(tainted) >= 1)
        #expect(!c.deleting("own"))
    }

    @Test func evictsOnTheTimerWhileTheServerIsStopped() async throws {
        let c = try await TaintedCluster.start(monitorPeriod: .milliseconds(100))
        defer { Task { await c.close() } }
        try c.createPod("web", tolerations: [toleration(unreachable, seconds: 1)])
        try await c.f.server.stop()
        let deadline = Date().addingTimeInterval(20)
        while !c.deleting("web") {
            if Date() > deadline { throw TestFailure("the pod was not deleted while the server was stopped") }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(c.taints().contains("\(unreachable):NoExecute"))
        #expect(c.condition("web", "DisruptionTarget")?["status"] as? String == "True")
        try await c.f.server.resume()
    }
}
