// The edge hub end to end, as issue [4] describes it: pull the plug on the cloud (the test API server stopped, or
// turned into a blackhole), and kubectl pointed at the hub still lists and gets pods, configmaps and services, a
// watch stays open; edged restarted while offline (its pods stopped, as by a reboot) brings its pods back from the
// store; plug the cloud back in and the queued statuses land, watches resume and kubectl sees fresh data.

import EdgedDaemon
import EdgedTestSupport
import Foundation
import Testing

/// `edgectl status --json`'s hub section.
func hubState(_ f: ClusterFixture) throws -> [String: Any] {
    (path(try f.edged.status(), "cluster", "hub") as? [String: Any]) ?? [:]
}

func waitForHub(_ f: ClusterFixture, _ cloud: String, timeout: TimeInterval = 20) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    var last: [String: Any] = [:]
    while Date() < deadline {
        last = (try? hubState(f)) ?? [:]
        if last["cloud"] as? String == cloud { return }
        try await Task.sleep(for: .milliseconds(200))
    }
    throw TestFailure("the hub did not become \(cloud) within \(Int(timeout)) s; last: \(last)")
}

/// A command left running in the background (a watch), stopped by the test.
final class BackgroundCommand: @unchecked Sendable {
    private let process = Process()

    init(_ args: [String]) throws {
        process.executableURL = URL(fileURLWithPath: findExecutable(args[0]) ?? args[0])
        process.arguments = Array(args.dropFirst())
        try process.run()
    }

    var isRunning: Bool { process.isRunning }

    func terminate() {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }
}

func restartCount(_ pod: [String: Any]) -> Int { containerStatus(pod, "main")?["restartCount"] as? Int ?? -1 }

@Suite(.serialized, .enabled(if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge")
                                && findExecutable("kubectl") != nil, "needs root, CNI plugins and kubectl"))
struct HubOfflineTests {
    /// kubectl through the hub's HTTP port (no token: it acts as the node) lists pods and configMaps of the whole
    /// namespace, which a Node-authorized API server refuses the node; these tests are about the hub's cache, not
    /// authorization, so the test API server's Node authorizer is off for them (NodeAccessTests covers it).
    static var hubReadOptions: KubeAPIServer.Options {
        var o = KubeAPIServer.Options()
        o.nodeAuthorizer = false
        return o
    }

    @Test func nodeKeepsWorkingWhileTheCloudIsAwayAndConvergesAfter() async throws {
        try await withCluster(name: "huboff", subnet: "10.250.71.0/24", options: Self.hubReadOptions) { f in
            try await Self.offlineScenario(f)
        }
    }

    static func offlineScenario(_ f: ClusterFixture) async throws {
        try f.edged.start()
        _ = try f.join()
        _ = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("web", node: f.node, command: "exec sleep 3600"))
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("flaky", node: f.node, command: "sleep 2; exit 1"))
        try f.kubectl.run(["apply", "-f", "-"], stdin: """
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: site, namespace: default}
            data: {plant: "7"}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: web, namespace: default}
            spec:
              ports: [{port: 80, targetPort: 8080}]
              selector: {app: web}
            """)
        _ = try await f.kubectl.wait(["get", "pod", "web"], "web Running") { path($0, "status", "phase") as? String == "Running" }
        try await waitForHub(f, "connected")

        // kubectl through the hub while online: answered by the cloud, and cached for client "kubectl".
        let hub = try f.hubKubectl()
        for kind in ["pods", "configmaps", "services"] { _ = try hub.json(["get", kind]) }
        let onlinePods = try hub.json(["get", "pods"])
        #expect(((onlinePods["items"] as? [[String: Any]]) ?? []).contains { path($0, "metadata", "name") as? String == "web" })
        let health = try runCommand(["curl", "-sS", "http://127.0.0.1:\(f.hubHealthPort)/metrics"]).stdout
        #expect(health.contains("edged_hub_cloud_online 1"), "\(health)")

        // A watch through the hub, open across the cut.
        let watchOut = f.side.sub("watch.out")
        let watch = try BackgroundCommand(["curl", "-sS", "-N", "-A", "kubectl/v1.31.0"] + f.hubClientAuth + ["-o", watchOut,
                                           "\(f.hubURL)/api/v1/namespaces/default/configmaps?watch=1&allowWatchBookmarks=true"])

        // Cut the cloud.
        let restartsBefore = restartCount(try f.kubectl.json(["get", "pod", "flaky"]))
        try await f.api.stop()
        try await waitForHub(f, "offline")
        let status = try f.edged.edgectl(["status"], check: false)
        #expect(status.status != 0, "edgectl status must say DEGRADED while the cloud is away")
        #expect(status.stdout.contains("OFFLINE") && status.stdout.contains("unreachable"), "\(status.stdout)")

        // kubectl keeps working from the hub's store.
        let offlinePods = try hub.json(["get", "pods"])
        let names = Set(((offlinePods["items"] as? [[String: Any]]) ?? []).compactMap { path($0, "metadata", "name") as? String })
        #expect(names.isSuperset(of: ["web", "flaky"]), "\(names)")
        let cm = try hub.json(["get", "configmap", "site"])
        #expect(path(cm, "data", "plant") as? String == "7")
        let svc = try hub.json(["get", "service", "web"])
        #expect(path(svc, "spec", "ports", "0", "port") as? Int == 80)
        let missing = try hub.run(["get", "configmap", "nope"], check: false)
        #expect(missing.status != 0 && missing.stderr.contains("not found"), "\(missing.stderr)")
        let deleted = try hub.run(["delete", "configmap", "site"], check: false)
        #expect(deleted.status != 0 && deleted.stderr.contains("unreachable"), "a delete while offline must fail clearly: \(deleted.stderr)")
        #expect(watch.isRunning, "the watch through the hub must stay open while offline")

        // edged restarted while offline, its pods stopped first (a reboot): the pods come back from the store.
        f.edged.stop()
        try f.edged.start(extraArgs: ["--stop-pods-on-exit"])
        f.edged.stop()
        let rebootStart = Date()
        try f.edged.start()
        _ = try await f.edged.waitForPod("web", timeout: 15, "Running again after an offline restart") { $0["phase"] as? String == "Running" }
        let back = Date().timeIntervalSince(rebootStart)
        #expect(back < 10, "pods took \(back) s to come back offline")
        // flaky keeps restarting offline: its statuses queue up.
        try await Task.sleep(for: .seconds(4))
        let queued = try hubState(f)["queuedWrites"] as? Int ?? 0
        let hubNow = try hubState(f)
        #expect(queued > 0, "pod statuses written while offline must be queued: \(hubNow)")

        // The cloud comes back: queued statuses land, the watch ends (its client re-lists), kubectl sees fresh data.
        try await f.api.resume()
        try await waitForHub(f, "connected", timeout: 30)
        _ = try await f.kubectl.wait(["get", "pod", "flaky"], timeout: 30, "restarts made offline reach the API server") {
            restartCount($0) > restartsBefore
        }
        let deadline = Date().addingTimeInterval(15)
        while watch.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(200)) }
        #expect(!watch.isRunning, "a watch served from the store must end when the cloud is back")
        watch.terminate()
        try f.kubectl.run(["apply", "-f", "-"], stdin: """
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: site, namespace: default}
            data: {plant: "8"}
            """)
        _ = try await hub.wait(["get", "configmap", "site"], timeout: 10, "fresh data through the hub") {
            path($0, "data", "plant") as? String == "8"
        }
        #expect(try f.edged.pod("web")?["phase"] as? String == "Running")
        let web = try f.kubectl.json(["get", "pod", "web"])
        #expect(path(web, "status", "phase") as? String == "Running")
        #expect(try hubState(f)["queuedWrites"] as? Int == 0)
    }

    @Test func podsReachTheHubOverHTTPSAsTheKubernetesService() async throws {
        try await withCluster(name: "hubtls", subnet: "10.250.75.0/24", hubHTTPS: true) { f in try await Self.httpsScenario(f) }
    }

    static func httpsScenario(_ f: ClusterFixture) async throws {
        let port = try #require(f.hubHTTPSPort)
        try f.edged.start()
        _ = try f.join()
        _ = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }
        // The listener starts once the serving certificate (with the hub's address as an IP SAN) is issued.
        let answer = try await f.hubHTTPSAnswer("https://127.0.0.1:\(port)/version")
        #expect(answer?.status == 0 && answer?.stdout.contains("gitVersion") == true, "\(answer?.stdout ?? "")\(answer?.stderr ?? "")")
        // What pods see: the kubernetes Service rewritten to the hub (masterservice), for edged's own client.
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("envcheck", node: f.node,
            command: "echo svc=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; sleep 3600"))
        _ = try await f.kubectl.wait(["get", "pod", "envcheck"], "envcheck Running") { path($0, "status", "phase") as? String == "Running" }
        var logs = ""
        for _ in 0..<50 where !logs.contains("svc=") {
            logs = (try? f.edged.edgectl(["logs", "envcheck"], check: false).stdout) ?? ""
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(logs.contains("svc=127.0.0.1:\(port)"), "\(logs)")
    }

    @Test func blackholedCloudIsDetectedAndServedFromTheStore() async throws {
      try await withCluster(name: "hubbh", subnet: "10.250.72.0/24", options: Self.hubReadOptions) { f in
        try f.edged.start()
        _ = try f.join()
        _ = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("web", node: f.node, command: "exec sleep 3600"))
        _ = try await f.kubectl.wait(["get", "pod", "web"], "web Running") { path($0, "status", "phase") as? String == "Running" }
        let hub = try f.hubKubectl()
        _ = try hub.json(["get", "pods"])

        f.api.setBlackhole(true)
        try await waitForHub(f, "offline", timeout: 30)
        // Answered from the store at once, not after a timeout on the stalled connection (timed with curl: kubectl's
        // own start-up takes seconds on a loaded 2-core machine).
        let started = Date()
        let listed = try runCommand(["curl", "-sS", "-f", "-A", "kubectl/v1.31.0"] + f.hubClientAuth + ["\(f.hubURL)/api/v1/namespaces/default/pods"])
        let elapsed = Date().timeIntervalSince(started)
        #expect(listed.stdout.contains("\"name\":\"web\""), "\(listed.stdout.prefix(300))")
        #expect(elapsed < 2, "offline reads must not wait for the blackhole: \(elapsed) s")
        let pods = try hub.json(["get", "pods"])
        #expect(((pods["items"] as? [[String: Any]]) ?? []).contains { path($0, "metadata", "name") as? String == "web" })

        f.api.setBlackhole(false)
        try await waitForHub(f, "connected", timeout: 30)
        #expect(try f.edged.pod("web")?["phase"] as? String == "Running")
      }
    }
}

/// The link flapping and edged crashing under load: nothing lost, nothing duplicated, the store always opens clean.
@Suite(.serialized, .enabled(if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge")
                                && findExecutable("kubectl") != nil && findExecutable("sqlite3") != nil,
                             "needs root, CNI plugins, kubectl and sqlite3"))
struct HubResilienceTests {
    @Test func fiftyFlapsOfTheLinkLoseNoUpdateAndDuplicateNoPod() async throws {
        try await withCluster(name: "hubflap", subnet: "10.250.73.0/24") { f in try await Self.flapScenario(f) }
    }

    static func flapScenario(_ f: ClusterFixture) async throws {
        try f.edged.start()
        _ = try f.join()
        _ = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("steady", node: f.node, command: "exec sleep 3600"))
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("flaky", node: f.node, command: "sleep 1; exit 1"))
        _ = try await f.kubectl.wait(["get", "pod", "steady"], "steady Running") { path($0, "status", "phase") as? String == "Running" }
        let steadyID = try #require(containerStatus(try f.kubectl.json(["get", "pod", "steady"]), "main")?["containerID"] as? String)

        for _ in 0..<50 {
            try await f.api.stop()
            try await Task.sleep(for: .milliseconds(Int.random(in: 100...600)))
            try await f.api.resume()
            try await Task.sleep(for: .milliseconds(Int.random(in: 100...600)))
        }
        try await waitForHub(f, "connected", timeout: 30)

        // No lost update: the restarts edged counted reach the API server (queued or sent directly).
        let counted = try #require(try f.edged.pod("flaky")?["restarts"] as? Int)
        #expect(counted >= 2, "flaky should have restarted (with kubelet's back-off) during the flaps")
        _ = try await f.kubectl.wait(["get", "pod", "flaky"], timeout: 30, "restarts up to \(counted) in the API") { restartCount($0) >= counted }
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, (try hubState(f)["queuedWrites"] as? Int ?? 0) > 0 { try await Task.sleep(for: .milliseconds(200)) }
        #expect(try hubState(f)["queuedWrites"] as? Int == 0, "the queue must drain once the link is stable")

        // No duplicate pod, in the API or on the node; the steady pod never restarted because of the link.
        let names = ((try f.kubectl.json(["get", "pods"])["items"] as? [[String: Any]]) ?? []).compactMap { path($0, "metadata", "name") as? String }
        #expect(names.sorted() == ["flaky", "steady"], "\(names)")
        let onNode = ((try f.edged.status()["pods"] as? [[String: Any]]) ?? []).compactMap { $0["name"] as? String }
        #expect(onNode.sorted() == ["flaky", "steady"], "\(onNode)")
        let steady = try f.kubectl.json(["get", "pod", "steady"])
        #expect(restartCount(steady) == 0 && containerStatus(steady, "main")?["containerID"] as? String == steadyID)

        // The store is sound.
        f.edged.stop()
        let check = try runCommand(["sqlite3", "\(f.edged.stateDir)/hub/cache.db", "PRAGMA integrity_check"])
        #expect(check.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "ok", "\(check.stdout)")
    }

    @Test func killingEdgedDuringHeavyCacheWritesNeverCorruptsTheStore() async throws {
        try await withCluster(name: "hubkill", subnet: "10.250.74.0/24") { f in try await Self.killScenario(f) }
    }

    static func killScenario(_ f: ClusterFixture) async throws {
        try f.edged.start()
        _ = try f.join()
        _ = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }
        let filler = String(repeating: "x", count: 2000)
        for i in 0..<300 {
            _ = try f.api.put("/api/v1/namespaces/default/configmaps/load-\(i)",
                              ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": "load-\(i)"], "data": ["v": "\(i)", "pad": filler]])
        }
        // Load: lists of 300 configmaps through the hub (each one a full replace in the store) and a stream of changes.
        let load = HubLoad(url: "\(f.hubURL)/api/v1/namespaces/default/configmaps", api: f.api, auth: f.hubClientAuth)
        load.start()
        for round in 0..<20 {
            try await Task.sleep(for: .milliseconds(Int.random(in: 300...900)))
            f.edged.crash()
            try f.edged.start()
            let log = f.edged.log()
            #expect(!log.contains("moved aside") && !log.contains("corrupt"), "round \(round): the store did not open clean:\n\(log.suffix(2000))")
        }
        load.stop()
        #expect(load.lists > 20, "the load generator listed through the hub only \(load.lists) times")
        f.edged.stop()
        let check = try runCommand(["sqlite3", "\(f.edged.stateDir)/hub/cache.db", "PRAGMA integrity_check"])
        #expect(check.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "ok", "\(check.stdout)")
        let aside = (try FileManager.default.contentsOfDirectory(atPath: "\(f.edged.stateDir)/hub")).filter { $0.contains("corrupt") }
        #expect(aside.isEmpty, "\(aside)")
    }
}

/// Lists through the hub and changes objects in the API server, on background threads, until stopped.
final class HubLoad: @unchecked Sendable {
    let url: String
    let api: KubeAPIServer
    private let lock = NSLock()
    private var running = true
    private var listCount = 0
    private var threads: [Thread] = []

    /// curl arguments with the client's credentials.
    let auth: [String]

    init(url: String, api: KubeAPIServer, auth: [String] = []) {
        self.url = url
        self.api = api
        self.auth = auth
    }

    var lists: Int { lock.withLock { listCount } }
    private var isRunning: Bool { lock.withLock { running } }

    func start() {
        let lister = Thread { [self] in
            while isRunning {
                if (try? runCommand(["curl", "-sS", "-f", "-m", "5", "-o", "/dev/null", "-A", "kubectl/v1.31.0"] + auth + [url], check: false))?.status == 0 {
                    lock.withLock { listCount += 1 }
                }
            }
        }
        let writer = Thread { [self] in
            var i = 0
            while isRunning {
                _ = try? api.put("/api/v1/namespaces/default/configmaps/load-\(i % 300)",
                                 ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": "load-\(i % 300)"], "data": ["v": "\(i)"]])
                i += 1
                Thread.sleep(forTimeInterval: 0.005)
            }
        }
        threads = [lister, writer]
        for t in threads { t.start() }
    }

    func stop() {
        lock.withLock { running = false }
        while threads.contains(where: { $0.isExecuting }) { Thread.sleep(forTimeInterval: 0.05) }
    }
}
