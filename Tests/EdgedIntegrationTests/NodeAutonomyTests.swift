// Node autonomy end to end (issue [2]): an edge node's uplink is cut for longer than its pods' NoExecute tolerations.
// The test API server runs the node lifecycle and taint-eviction controllers of kube-controller-manager with scaled
// timers (grace 4 s instead of 40 s, tolerations 8–12 s instead of 300 s); the real `edged autonomy-controller` runs
// as a process with the ServiceAccount and RBAC of deploy/autonomy-controller.yaml; only this node's link is cut
// (ClusterFixture.nodeLink), so kubectl and the controller keep talking to the API server, as in a real outage.
//
// Without autonomy (the control case) the taint-eviction controller deletes the Deployment-style pod while the node is
// away, and edged kills it when the link returns; with it nothing is deleted, nothing restarts, and the statuses the
// node controller marked NotReady are replayed.

import EdgedCore
import EdgedDaemon
import EdgedTestSupport
import Foundation
import Testing

/// The repository's deploy/ folder (the manifests operators apply).
private let deployDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("deploy").path

/// One `edged autonomy-controller` process, as one replica of the Deployment runs it.
final class AutonomyControllerProcess: @unchecked Sendable {
    let identity: String
    let logFile: String
    private let process: Process

    /// Starts a replica with the kubeconfig of the controller's ServiceAccount and test-sized timers.
    init(_ f: ClusterFixture, identity: String, kubeconfig: String) throws {
        self.identity = identity
        logFile = f.side.sub("autonomy-\(identity).log")
        process = Process()
        process.executableURL = URL(fileURLWithPath: "\(buildBinDir)/edged")
        process.arguments = ["autonomy-controller", "--kubeconfig", kubeconfig, "--identity", identity,
                             "--resync-seconds", "2", "--leader-elect-lease-duration", "3s",
                             "--leader-elect-renew-deadline", "2s", "--leader-elect-retry-period", "500ms",
                             "--log-level", "debug"]
        FileManager.default.createFile(atPath: logFile, contents: nil)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: logFile))
        process.standardOutput = h
        process.standardError = h
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var log: String { (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "" }
    var isRunning: Bool { process.isRunning }

    /// SIGKILL: the replica vanishes without releasing its Lease (a crashed pod, a lost host).
    func kill() {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// SIGTERM and wait (it releases its Lease).
    func stop() {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }
}

extension ClusterFixture {
    /// Applies deploy/autonomy-controller.yaml (ServiceAccount, RBAC, Deployment: the test API server runs no
    /// Deployment controller, so the replicas are started here as processes) and writes a kubeconfig with a token of
    /// the controller's ServiceAccount.
    func installAutonomyController() throws -> String {
        try kubectl.run(["apply", "-f", "\(deployDir)/autonomy-controller.yaml"])
        let token = try api.serviceAccountToken(namespace: "kube-system", name: "edged-autonomy-controller", expirationSeconds: 24 * 3600)
        let file = side.sub("autonomy-controller.kubeconfig")
        try api.writeKubeconfig(to: file, token: token)
        return file
    }

    /// The pod as the API server has it, nil when it is gone.
    func apiPod(_ name: String) throws -> [String: Any]? {
        let out = try kubectl.run(["get", "pod", name, "--ignore-not-found", "-o", "json"]).stdout
        if out.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return nil }
        return try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
    }

    /// The seconds of the pod's NoExecute toleration of `taint` ("forever" without tolerationSeconds, "none").
    func tolerationSeconds(_ pod: [String: Any], _ taint: String) -> String {
        let ts = ((path(pod, "spec", "tolerations") as? [[String: Any]]) ?? [])
            .filter { $0["key"] as? String == "node.kubernetes.io/\(taint)" && $0["effect"] as? String == "NoExecute" }
        guard let t = ts.first else { return "none" }
        return (t["tolerationSeconds"] as? Int).map(String.init) ?? "forever"
    }

    func nodeTaints() throws -> [String] {
        let node = try kubectl.json(["get", "node", self.node])
        return ((path(node, "spec", "taints") as? [[String: Any]]) ?? []).map { "\($0["key"] as? String ?? "?"):\($0["effect"] as? String ?? "?")" }
    }

    /// Reasons of the Events about `object` (pod name or node name).
    func eventReasons(_ object: String) throws -> [String] {
        let list = try kubectl.json(["get", "events", "-A", "--field-selector", "involvedObject.name=\(object)"])
        return ((list["items"] as? [[String: Any]]) ?? []).compactMap { $0["reason"] as? String }
    }

    func events(_ object: String, reason: String) throws -> [[String: Any]] {
        let list = try kubectl.json(["get", "events", "-A", "--field-selector", "involvedObject.name=\(object)"])
        return ((list["items"] as? [[String: Any]]) ?? []).filter { $0["reason"] as? String == reason }
    }

    /// (containerID, restarts) of the pod's main container on the node.
    func nodeContainer(_ name: String) throws -> String? {
        guard let p = try edged.pod(name) else { return nil }
        let c = mainContainer(p)
        return "\(c["containerID"] as? String ?? "?") restarts=\(c["restarts"] as? Int ?? -1)"
    }
}

/// A pod as a ReplicaSet (Deployment) creates it: owned by the ReplicaSet, default tolerations from admission.
private func replicaSetPod(_ name: String, node: String) -> String {
    boundPod(name, node: node, command: "exec sleep 3600").replacingOccurrences(of: "  namespace: default\n", with: """
          namespace: default
          ownerReferences:
          - {apiVersion: apps/v1, kind: ReplicaSet, name: \(name)-rs, uid: 6b1f3a52-0000-4000-8000-\(String(repeating: "1", count: 12)), controller: true, blockOwnerDeletion: true}

        """)
}

/// A pod as the DaemonSet controller creates it: owned by the DaemonSet, with the forever tolerations of the
/// not-ready and unreachable NoExecute taints it adds (pkg/controller/daemon/util AddOrUpdateDaemonPodTolerations).
private func daemonSetPod(_ name: String, node: String) -> String {
    boundPod(name, node: node, command: "exec sleep 3600", extra: """
          tolerations:
          - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute}
          - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute}
          - {key: node.kubernetes.io/disk-pressure, operator: Exists, effect: NoSchedule}
        """).replacingOccurrences(of: "  namespace: default\n", with: """
          namespace: default
          ownerReferences:
          - {apiVersion: apps/v1, kind: DaemonSet, name: \(name)-ds, uid: 6b1f3a52-0000-4000-8000-\(String(repeating: "2", count: 12)), controller: true, blockOwnerDeletion: true}

        """)
}

private func scaledOptions(tolerationSeconds: Int) -> KubeAPIServer.Options {
    var o = KubeAPIServer.Options()
    o.nodeLifecycle = .init(monitorPeriod: .milliseconds(500), gracePeriod: .seconds(4), startupGracePeriod: .seconds(30))
    o.defaultTolerationSeconds = tolerationSeconds
    return o
}

private func waitUntil(_ what: String, timeout: TimeInterval, _ check: () throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if (try? check()) == true { return }
        try await Task.sleep(for: .milliseconds(200))
    }
    throw TestFailure("timed out after \(Int(timeout)) s waiting for \(what)")
}

@Suite(.serialized, .enabled(if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge")
                                && findExecutable("kubectl") != nil, "needs root, CNI plugins and kubectl"))
struct NodeAutonomyTests {
    static let tolerations = 8

    @Test(arguments: [true, false])
    func podsOutliveTheirTolerationsOnlyOnAnAutonomousNode(autonomous: Bool) async throws {
      try await withCluster(name: autonomous ? "auton" : "autoff", subnet: autonomous ? "10.250.95.0/24" : "10.250.96.0/24",
                            options: scaledOptions(tolerationSeconds: Self.tolerations), nodeLink: true) { f in
        try f.edged.start()
        _ = try f.join(autonomous ? [] : ["--no-autonomy"])
        let node = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }
        let annotation = (path(node, "metadata", "annotations") as? [String: String])?[NodeAutonomy.durationAnnotation]
        #expect(annotation == (autonomous ? "0" : nil), "edgectl join \(autonomous ? "" : "--no-autonomy") → annotation \(annotation ?? "none")")
        let kubeconfig = try f.installAutonomyController()
        let controller = try AutonomyControllerProcess(f, identity: "ctl-a", kubeconfig: kubeconfig)
        defer { controller.stop() }

        try f.kubectl.run(["apply", "-f", "-"], stdin: replicaSetPod("app", node: f.node))
        try f.kubectl.run(["apply", "-f", "-"], stdin: daemonSetPod("agent", node: f.node))
        let agentSpec = path(try #require(try f.apiPod("agent")), "spec", "tolerations") as? [[String: Any]]
        for name in ["app", "agent"] {
            _ = try await f.kubectl.wait(["get", "pod", name], "\(name) Running") {
                path($0, "status", "phase") as? String == "Running" && condition($0, "Ready") == "True"
            }
        }
        if autonomous {
            let app = try await f.kubectl.wait(["get", "pod", "app"], timeout: 20, "app's tolerations set by the controller") {
                f.tolerationSeconds($0, "unreachable") == "forever" && f.tolerationSeconds($0, "not-ready") == "forever"
            }
            print("autonomy: app's tolerations: \(path(app, "spec", "tolerations") ?? "none")")
            try await waitUntil("the AutonomyTolerationsSet Event on app", timeout: 10) {
                try !f.events("app", reason: "AutonomyTolerationsSet").isEmpty
            }
            let event = try #require(try f.events("app", reason: "AutonomyTolerationsSet").first)
            let message = event["message"] as? String ?? ""
            #expect(message.contains(f.node) && message.contains("forever"), "\(message)")
            #expect(path(event, "source", "component") as? String == "edged-autonomy-controller", "\(event)")
        } else {
            try await Task.sleep(for: .seconds(5))   // two resyncs of the controller
            let app = try #require(try f.apiPod("app"))
            #expect(f.tolerationSeconds(app, "unreachable") == "\(Self.tolerations)" && f.tolerationSeconds(app, "not-ready") == "\(Self.tolerations)",
                    "the controller changed a pod of a node that is not autonomous: \(path(app, "spec", "tolerations") ?? "none")")
            #expect(try f.events("app", reason: "AutonomyTolerationsSet").isEmpty)
        }
        // DaemonSet pods are the DaemonSet controller's business: untouched either way.
        #expect(NSDictionary(dictionary: ["t": agentSpec ?? []]).isEqual(to: ["t": path(try #require(try f.apiPod("agent")), "spec", "tolerations") ?? []]),
                "the DaemonSet pod's tolerations changed")

        let before = ["app": try f.nodeContainer("app"), "agent": try f.nodeContainer("agent")]
        try await waitForHub(f, "connected")

        // The uplink goes for longer than the tolerations.
        let link = try #require(f.nodeLink)
        link.setCut(true)
        try await waitUntil("the unreachable NoExecute taint", timeout: 20) {
            try f.nodeTaints().contains("node.kubernetes.io/unreachable:NoExecute")
        }
        let tainted = Date()
        print("autonomy (\(autonomous)): node tainted unreachable")
        try await Task.sleep(for: .seconds(Double(Self.tolerations) + 4))
        let app = try f.apiPod("app")
        if autonomous {
            #expect(app != nil && path(app ?? [:], "metadata", "deletionTimestamp") == nil,
                    "app was deleted \(Int(Date().timeIntervalSince(tainted))) s into the outage on an autonomous node")
        } else {
            // The control case: the taint-eviction controller deleted it (gracefully: the node must confirm).
            #expect(app == nil || path(app ?? [:], "metadata", "deletionTimestamp") != nil,
                    "app outlived its \(Self.tolerations) s tolerations on a node that is not autonomous")
            #expect(try f.eventReasons("app").contains("TaintManagerEviction"))
        }
        let agent = try f.apiPod("agent")
        #expect(agent != nil && path(agent ?? [:], "metadata", "deletionTimestamp") == nil, "the DaemonSet pod was deleted")
        // The edge keeps running both while it is away.
        #expect(try f.nodeContainer("app") == before["app"] && f.nodeContainer("agent") == before["agent"])

        // The link returns.
        link.setCut(false)
        _ = try await f.kubectl.wait(["get", "node", f.node], timeout: 30, "node Ready after the outage") { condition($0, "Ready") == "True" }
        if autonomous {
            for name in ["app", "agent"] {
                _ = try await f.kubectl.wait(["get", "pod", name], timeout: 20, "\(name)'s Ready status replayed") {
                    condition($0, "Ready") == "True" && path($0, "metadata", "deletionTimestamp") == nil
                }
            }
            try await Task.sleep(for: .seconds(3))
            #expect(try f.nodeContainer("app") == before["app"] && f.nodeContainer("agent") == before["agent"],
                    "a pod restarted after the link returned")
        } else {
            try await waitUntil("edged to kill the evicted app", timeout: 30) { try f.edged.pod("app") == nil }
            try await waitUntil("app gone from the API server", timeout: 30) { try f.apiPod("app") == nil }
            #expect(try f.nodeContainer("agent") == before["agent"], "the DaemonSet pod restarted")
        }
        #expect(!controller.log.lowercased().contains("forbidden"), "the controller was refused something:\n\(controller.log.suffix(3000))")
      }
    }

    /// Level-triggered and leader-elected: both replicas die, a pod is created while no controller runs, the link is
    /// cut, and a new replica (another identity: it must wait for the dead leader's Lease to run out) still saves the
    /// pod before its tolerations run out. Before any controller ran, `edgectl status` warned that the node's pods
    /// still carried their default tolerations. Then a bad annotation: an Event on the Node, nothing touched.
    @Test func aControllerRestartedMidOutageStillSavesThePodsAndBadAnnotationsAreReported() async throws {
      let tolerations = 14
      try await withCluster(name: "autoctl", subnet: "10.250.97.0/24", options: scaledOptions(tolerationSeconds: tolerations),
                            clusterSettings: "  autonomyGraceSeconds: 2", nodeLink: true) { f in
        try f.edged.start()
        _ = try f.join()
        _ = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }
        try f.kubectl.run(["apply", "-f", "-"], stdin: replicaSetPod("early", node: f.node))
        _ = try await f.kubectl.wait(["get", "pod", "early"], "early Running") { path($0, "status", "phase") as? String == "Running" }

        // No controller yet: the node says its pods are not protected.
        try await waitUntil("edgectl status to warn about the unreconciled pod", timeout: 20) {
            let r = try f.edged.edgectl(["status"], check: false)
            return r.status != 0 && r.stdout.contains("autonomy controller") && r.stdout.contains("early")
        }
        let warned = try f.edged.edgectl(["status"], check: false).stdout
        print("edgectl status without a controller:\n\(warned)")

        let kubeconfig = try f.installAutonomyController()
        let a = try AutonomyControllerProcess(f, identity: "ctl-a", kubeconfig: kubeconfig)
        let b = try AutonomyControllerProcess(f, identity: "ctl-b", kubeconfig: kubeconfig)
        _ = try await f.kubectl.wait(["get", "pod", "early"], timeout: 20, "early reconciled") { f.tolerationSeconds($0, "unreachable") == "forever" }
        let lease = try f.kubectl.json(["get", "lease", "-n", "kube-system", "edged-autonomy-controller"])
        let leader = path(lease, "spec", "holderIdentity") as? String
        #expect(leader == "ctl-a" || leader == "ctl-b", "lease holder: \(leader ?? "none")")
        // Only the leader writes: one Event for the one change.
        #expect(try f.events("early", reason: "AutonomyTolerationsSet").count == 1)
        try await waitUntil("edgectl status without the autonomy warning", timeout: 20) {
            !(try f.edged.edgectl(["status"], check: false).stdout.contains("autonomy controller"))
        }

        // Both replicas die without releasing the Lease; a pod arrives while none runs.
        a.kill()
        b.kill()
        try f.kubectl.run(["apply", "-f", "-"], stdin: replicaSetPod("late", node: f.node))
        _ = try await f.kubectl.wait(["get", "pod", "late"], "late Running") { path($0, "status", "phase") as? String == "Running" }
        #expect(f.tolerationSeconds(try #require(try f.apiPod("late")), "unreachable") == "\(tolerations)")
        try await waitForHub(f, "connected")
        let before = ["early": try f.nodeContainer("early"), "late": try f.nodeContainer("late")]

        let link = try #require(f.nodeLink)
        link.setCut(true)
        try await waitUntil("the unreachable NoExecute taint", timeout: 20) {
            try f.nodeTaints().contains("node.kubernetes.io/unreachable:NoExecute")
        }
        let tainted = Date()
        // A new replica, mid-outage: it waits out the dead leader's Lease (3 s), then fixes what changed.
        let c = try AutonomyControllerProcess(f, identity: "ctl-c", kubeconfig: kubeconfig)
        defer { c.stop() }
        _ = try await f.kubectl.wait(["get", "pod", "late"], timeout: 20, "late reconciled by the new replica") {
            f.tolerationSeconds($0, "unreachable") == "forever" && f.tolerationSeconds($0, "not-ready") == "forever"
        }
        print("autonomy: late reconciled \(String(format: "%.1f", Date().timeIntervalSince(tainted))) s into the outage")
        let holder = path(try f.kubectl.json(["get", "lease", "-n", "kube-system", "edged-autonomy-controller"]), "spec", "holderIdentity") as? String
        #expect(holder == "ctl-c")
        let wait = Double(tolerations) + 4 - Date().timeIntervalSince(tainted)
        if wait > 0 { try await Task.sleep(for: .seconds(wait)) }
        for name in ["early", "late"] {
            let p = try f.apiPod(name)
            #expect(p != nil && path(p ?? [:], "metadata", "deletionTimestamp") == nil, "\(name) was deleted during the outage")
        }
        link.setCut(false)
        _ = try await f.kubectl.wait(["get", "node", f.node], timeout: 30, "node Ready after the outage") { condition($0, "Ready") == "True" }
        for name in ["early", "late"] {
            _ = try await f.kubectl.wait(["get", "pod", name], timeout: 20, "\(name) Ready again") { condition($0, "Ready") == "True" }
        }
        #expect(try f.nodeContainer("early") == before["early"] && f.nodeContainer("late") == before["late"], "a pod restarted")

        // A bad annotation: a Warning Event on the Node, the node counts as not autonomous, nothing is touched.
        try f.kubectl.run(["annotate", "node", f.node, "--overwrite", "\(NodeAutonomy.durationAnnotation)=three-days"])
        try await waitUntil("the InvalidAutonomyAnnotation Event on the node", timeout: 15) {
            try !f.events(f.node, reason: "InvalidAutonomyAnnotation").isEmpty
        }
        let bad = try #require(try f.events(f.node, reason: "InvalidAutonomyAnnotation").first)
        #expect(bad["type"] as? String == "Warning" && (bad["message"] as? String ?? "").contains("three-days"), "\(bad)")
        try f.kubectl.run(["apply", "-f", "-"], stdin: replicaSetPod("after", node: f.node))
        _ = try await f.kubectl.wait(["get", "pod", "after"], "after Running") { path($0, "status", "phase") as? String == "Running" }
        try await Task.sleep(for: .seconds(5))   // two resyncs
        #expect(f.tolerationSeconds(try #require(try f.apiPod("after")), "unreachable") == "\(tolerations)",
                "a pod of a node with a bad annotation was changed")
        #expect(f.tolerationSeconds(try #require(try f.apiPod("early")), "unreachable") == "forever")
        #expect(try f.events(f.node, reason: "InvalidAutonomyAnnotation").count == 1, "one Event per bad value, not one per resync")
        let status = try f.edged.edgectl(["status"], check: false)
        #expect(status.status != 0 && status.stdout.contains("three-days"), "\(status.stdout)")
        for p in [a, b, c] {
            #expect(!p.log.lowercased().contains("forbidden"), "\(p.identity) was refused something:\n\(p.log.suffix(3000))")
        }
      }
    }

    /// A power cut inside the outage: everything killed, /run emptied, edged started with the link still cut. The
    /// pods run again within 2 s, and are still not deleted when the link returns.
    @Test func anOfflineRebootInsideTheOutageKeepsThePods() async throws {
      try await withCluster(name: "autoboot", subnet: "10.250.98.0/24", options: scaledOptions(tolerationSeconds: Self.tolerations),
                            nodeLink: true) { f in
        try f.edged.start()
        _ = try f.join()
        _ = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }
        let controller = try AutonomyControllerProcess(f, identity: "ctl-a", kubeconfig: try f.installAutonomyController())
        defer { controller.stop() }
        try f.kubectl.run(["apply", "-f", "-"], stdin: replicaSetPod("app", node: f.node))
        try f.kubectl.run(["apply", "-f", "-"], stdin: daemonSetPod("agent", node: f.node))
        _ = try await f.kubectl.wait(["get", "pod", "app"], timeout: 30, "app Running and reconciled") {
            path($0, "status", "phase") as? String == "Running" && f.tolerationSeconds($0, "unreachable") == "forever"
        }
        _ = try await f.kubectl.wait(["get", "pod", "agent"], "agent Running") { path($0, "status", "phase") as? String == "Running" }
        try await waitForHub(f, "connected")
        try await Task.sleep(for: .seconds(1))   // the hub's cache writer has stored the last watch events

        let link = try #require(f.nodeLink)
        link.setCut(true)
        try await waitUntil("the unreachable NoExecute taint", timeout: 20) {
            try f.nodeTaints().contains("node.kubernetes.io/unreachable:NoExecute")
        }
        let tainted = Date()
        var pids: [String: Int] = [:]
        for name in ["app", "agent"] { pids[name] = mainContainer(try #require(try f.edged.pod(name)))["pid"] as? Int }
        try await OfflineRebootTests.powerCycle(f)
        try f.edged.start()
        let answering = Date()
        for name in ["app", "agent"] {
            _ = try f.edged.waitForPod(name, timeout: 30, "Running again after the offline power cycle") {
                let pid = mainContainer($0)["pid"] as? Int ?? 0
                return $0["phase"] as? String == "Running" && mainContainer($0)["state"] as? String == "running"
                    && pid != pids[name] && pidAlive(Int32(pid))
            }
            let seconds = Date().timeIntervalSince(answering)
            print("autonomy: \(name) running again \(String(format: "%.2f", seconds)) s after edged answered, link cut")
            #expect(seconds < 2, "\(name) took \(seconds) s to run again after edged answered")
        }
        let wait = Double(Self.tolerations) + 4 - Date().timeIntervalSince(tainted)
        if wait > 0 { try await Task.sleep(for: .seconds(wait)) }
        let afterBoot = ["app": try f.nodeContainer("app"), "agent": try f.nodeContainer("agent")]
        link.setCut(false)
        let restored = Date()
        _ = try await f.kubectl.wait(["get", "node", f.node], timeout: 40, "node Ready after the outage") { condition($0, "Ready") == "True" }
        // edged registered nothing while it was away since its start: the Node write that failed then is retried as
        // soon as the hub sees the cloud again, not after the rest of a back-off of up to 30 s (1.3 s with that, 6.9 s
        // without it in one run here).
        let readyAfter = Date().timeIntervalSince(restored)
        print("autonomy: node Ready \(String(format: "%.1f", readyAfter)) s after the link returned (edged restarted offline)")
        #expect(readyAfter < 5, "node Ready only \(readyAfter) s after the link returned")
        for name in ["app", "agent"] {
            _ = try await f.kubectl.wait(["get", "pod", name], timeout: 20, "\(name) Ready again and not deleted") {
                condition($0, "Ready") == "True" && path($0, "metadata", "deletionTimestamp") == nil
            }
        }
        try await Task.sleep(for: .seconds(3))
        #expect(try f.nodeContainer("app") == afterBoot["app"] && f.nodeContainer("agent") == afterBoot["agent"],
                "a pod restarted after the link returned")
      }
    }
}
