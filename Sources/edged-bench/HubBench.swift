// The edge hub benchmark (issue [4]): LIST of 1000 pods direct to the test API server vs through the hub's HTTP
// port vs through `kubectl proxy`, side by side with one HTTP client; the hub's extra RSS with those pods cached;
// the cache-served LIST while the cloud is away; an offline reboot to 20 running pods.

import ArgumentParser
import EdgedControl
import EdgedDaemon
import EdgedHTTP
import EdgedTestSupport
import Foundation

/// `edged-bench hub`: only the edge hub phase, printed as one JSON object with the full run's hub keys.
struct HubOnly: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hub", abstract: "Only the edge hub figures (LIST via hub / direct / kubectl proxy, offline), as JSON. Needs root.")

    @Option(help: "Directory with the edged binary (default: next to edged-bench).")
    var binDir: String?

    func run() async throws {
        guard getuid() == 0 else { throw ValidationError("edged-bench hub needs root: it starts real containers") }
        let bin = binDir ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        let root = NSTemporaryDirectory() + "edged-bench-hub-\(getpid())"
        defer { cleanUp(root: root, cgroupPrefix: hubCgroupRoot) }
        let r = try await hubPhase(bin: bin, root: root)
        func ms(_ v: Double?) -> String { v.map { String(format: "%.1f", $0) } ?? "null" }
        let fields: [(String, String)] = [
            ("hub_list_per_s", ms(r.hubList.perSecond)), ("hub_list_p50_ms", ms(r.hubList.p50Ms)), ("hub_list_p99_ms", ms(r.hubList.p99Ms)),
            ("direct_list_per_s", ms(r.directList.perSecond)), ("direct_list_p50_ms", ms(r.directList.p50Ms)),
            ("direct_list_p99_ms", ms(r.directList.p99Ms)),
            ("kubectl_proxy_list_per_s", ms(r.kubectlProxyList?.perSecond)), ("kubectl_proxy_list_p50_ms", ms(r.kubectlProxyList?.p50Ms)),
            ("kubectl_proxy_list_p99_ms", ms(r.kubectlProxyList?.p99Ms)), ("hub_rss_1000_pods_kb", "\(r.rss1000PodsKB)"),
            ("hub_anon_1000_pods_kb", "\(r.anon1000PodsKB)"),
            ("offline_list_p50_ms", ms(r.offlineList.p50Ms)), ("offline_reboot_20_pods_ms", ms(r.offlineReboot20PodsMs)),
        ]
        print("{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}")
    }
}

struct HubBenchResult {
    var hubList: ListTiming
    var directList: ListTiming
    var kubectlProxyList: ListTiming?
    var offlineList: ListTiming
    var rss1000PodsKB: Int
    /// The anonymous part of that (smaps_rollup): what the cache really costs in RAM.
    var anon1000PodsKB: Int
    var offlineReboot20PodsMs: Double
}

/// Sequential LISTs of one URL: throughput and latency percentiles.
struct ListTiming {
    var perSecond: Double
    var p50Ms: Double
    var p99Ms: Double
}

private let listedPods = 1000
private let rebootPods = 20
private let warmUp = 5
private let timedLists = 50
private let benchUserAgent = "edged-bench/0.1.0 (linux) hub-benchmark"

/// Its own test API server and edged (on temp dirs under `root`), joined with the hub on free loopback ports.
func hubPhase(bin: String, root: String) async throws -> HubBenchResult {
    let fm = FileManager.default
    let state = "\(root)/state", run = "\(root)/run", manifests = "\(root)/manifests", logs = "\(root)/logs"
    for d in [state, run, manifests, logs, "\(state)/images/import"] { try fm.createDirectory(atPath: d, withIntermediateDirectories: true) }
    try Demo.writeImageArchive(to: "\(state)/images/import/busybox.tar")
    let socket = "\(run)/edged.sock"
    let hubPort = try freeTCPPort(), healthPort = try freeTCPPort()
    try """
        cni:
          confDir: \(root)/no-cni
        cluster:
          nodeIP: 127.0.0.1
        hub:
          httpAddress: 127.0.0.1:\(hubPort)
          httpsAddress: ""
          healthAddress: 127.0.0.1:\(healthPort)
          healthCheckSeconds: 1
          healthCheckTimeoutSeconds: 1
          cacheComponents: [edged-bench]

        """.write(toFile: "\(root)/hub.yaml", atomically: true, encoding: .utf8)
    let args = ["--state-dir", state, "--run-dir", run, "--manifest-dir", manifests, "--log-dir", logs, "--socket", socket,
                "--node-name", "bench", "--cgroup-root", hubCgroupRoot, "--config", "\(root)/hub.yaml", "--log-level", "warning",
                "--stop-pods-on-exit"]

    let api = try await KubeAPIServer.start()
    defer { Task { try? await api.shutdown() } }
    try api.addBootstrapToken(id: "benchh", secret: "0123456789abcdef")
    // Bound to another node: edged does not run them, every client may list them.
    try api.createPods(namespace: "bench", count: listedPods, nodeName: "elsewhere")

    var edged = try launch("\(bin)/edged", args, log: "\(root)/edged-hub.log")
    defer { if edged.isRunning { edged.terminate(); edged.waitUntilExit() } }
    let control = ControlClient(socketPath: socket)
    try await waitUntil(timeout: 30) { (try? await control.pods()) != nil }
    _ = try await control.join(JoinRequest(server: api.url, token: "benchh.0123456789abcdef", caCertHashes: [api.caCertHash]))
    try await waitForHub(control, "connected", timeout: 30)

    let kubeconfig = "\(root)/admin.kubeconfig"
    try api.writeAdminKubeconfig(to: kubeconfig)
    let http = HTTPClient(configuration: HTTPClientConfiguration(
        tls: TLSOptions(trust: .certificates(pem: api.caPEM), clientCertificateChainPEM: api.adminCertPEM,
                        clientPrivateKeyPEM: api.adminKeyPEM),
        userAgent: benchUserAgent))
    defer { Task { await http.shutdown() } }
    let listPath = "/api/v1/namespaces/bench/pods"
    let hubURL = "http://127.0.0.1:\(hubPort)"
    // A node-local client with its own token, which the hub passes on (kube-proxy and coredns have theirs): without
    // one it would list as the node, which the Node authorizer lets read only the node's own pods.
    let clientToken = "bench-reader-token-0123456789"
    api.addToken(clientToken, user: "bench-reader", groups: ["system:masters"])
    let hubAuth = [("Authorization", "Bearer \(clientToken)")]

    // Direct to the API server (HTTPS, admin client certificate).
    let direct = try await timeLists(http, api.url + listPath, what: "direct to the test API server")

    // Through the hub, as a cached client: edged's RSS before the first hub list and once the pods are cached.
    try await Task.sleep(for: .seconds(1))
    let cachedBefore = try await control.status().cluster?.hub?.cachedObjects ?? 0
    let rssBefore = rssKB(edged.processIdentifier)
    let anonBefore = anonymousKB(edged.processIdentifier)
    let hub = try await timeLists(http, hubURL + listPath, what: "through the hub", headers: hubAuth)
    try await waitUntil(timeout: 30) {
        ((try? await control.status().cluster?.hub?.cachedObjects) ?? 0) >= cachedBefore + listedPods
    }
    try await Task.sleep(for: .seconds(1))
    let rssAfter = rssKB(edged.processIdentifier)
    let anonAfter = anonymousKB(edged.processIdentifier)

    // Through `kubectl proxy` (nil when kubectl is not installed).
    var proxied: ListTiming?
    if let kubectl = findExecutable("kubectl") {
        let port = try freeTCPPort()
        let proxy = try launch(kubectl, ["proxy", "--kubeconfig", kubeconfig, "--address", "127.0.0.1", "--port", "\(port)"],
                               log: "\(root)/kubectl-proxy.log")
        defer { if proxy.isRunning { proxy.terminate(); proxy.waitUntilExit() } }
        try await waitUntil(timeout: 30) {
            (try? await http.execute(HTTPRequest(url: "http://127.0.0.1:\(port)/version"), timeout: .seconds(2)))?.status == 200
        }
        proxied = try await timeLists(http, "http://127.0.0.1:\(port)" + listPath, what: "through kubectl proxy")
    }

    // The cloud cut: LISTs answered from the hub's store.
    try await api.stop()
    try await waitForHub(control, "offline", timeout: 30)
    let offline = try await timeLists(http, hubURL + listPath, what: "through the hub, offline", headers: hubAuth)
    try await api.resume()
    try await waitForHub(control, "connected", timeout: 30)

    // Offline reboot: 20 API pods on this node running, the cloud cut, edged stopped with its pods (as by a
    // reboot), then started again: launch → all 20 Running again.
    let names = (0..<rebootPods).map { "reboot\($0)" }
    for name in names {
        let created = api.call("POST", "/api/v1/namespaces/default/pods", body: try boundPodJSON(name))
        guard created.code == 201 else { throw BenchFailure("creating pod \(name): \(String(decoding: created.body, as: UTF8.self))") }
    }
    try await waitUntil(timeout: 60, poll: .milliseconds(20)) { await allRunning(control, names) }
    let oldPIDs = try await containerPIDs(control, names)
    try await api.stop()
    try await waitForHub(control, "offline", timeout: 30)
    edged.terminate()
    edged.waitUntilExit()
    // --stop-pods-on-exit: the containers are gone, as after a reboot.
    try await waitUntil(timeout: 10) { oldPIDs.allSatisfy { Glibc.kill($0, 0) != 0 } }
    let t0 = DispatchTime.now()
    edged = try launch("\(bin)/edged", args, log: "\(root)/edged-hub-reboot.log")
    try await waitUntil(timeout: 30, poll: .milliseconds(5)) { await allRunning(control, names) }
    let rebootMs = Double(DispatchTime.now().uptimeNanoseconds - t0.uptimeNanoseconds) / 1e6
    guard try await containerPIDs(control, names).isDisjoint(with: oldPIDs) else {
        throw BenchFailure("after the offline reboot some pods still had their old containers: nothing was restarted")
    }

    // Clean up: the cloud back, the pods deleted there, edged stopped.
    try await api.resume()
    for name in names { _ = api.call("DELETE", "/api/v1/namespaces/default/pods/\(name)?gracePeriodSeconds=0") }
    try await waitUntil(timeout: 60) { (try? await control.pods())?.isEmpty ?? false }
    edged.terminate()
    edged.waitUntilExit()

    return HubBenchResult(hubList: hub, directList: direct, kubectlProxyList: proxied, offlineList: offline,
                          rss1000PodsKB: rssAfter - rssBefore, anon1000PodsKB: anonAfter - anonBefore, offlineReboot20PodsMs: rebootMs)
}

/// The hub phase's edged has its own cgroup root (removed by `cleanUp`).
let hubCgroupRoot = "edged-bench-hub"

struct BenchFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// `warmUp` LISTs (the first one checked: a PodList of all the seeded pods), then `timedLists` timed ones, one at a
/// time on the same keep-alive client.
private func timeLists(_ http: HTTPClient, _ url: String, what: String,
                       headers: [(String, String)] = []) async throws -> ListTiming {
    func list() async throws -> HTTPResponse {
        let r = try await http.execute(HTTPRequest(url: url, headers: headers), timeout: .seconds(30))
        guard r.status == 200 else {
            throw BenchFailure("LIST \(what) (\(url)): HTTP \(r.status): \(String(decoding: r.body.prefix(300), as: UTF8.self))")
        }
        return r
    }
    let first = try await list()
    let json = try JSONSerialization.jsonObject(with: Data(first.body)) as? [String: Any]
    let items = (json?["items"] as? [Any])?.count ?? -1
    guard json?["kind"] as? String == "PodList", items == listedPods else {
        throw BenchFailure("LIST \(what) (\(url)): expected a PodList of \(listedPods) pods, got \(json?["kind"] ?? "no kind") with \(items) items")
    }
    for _ in 1..<warmUp { _ = try await list() }
    var samples: [Double] = []
    let start = DispatchTime.now()
    for _ in 0..<timedLists {
        let t0 = DispatchTime.now()
        _ = try await list()
        samples.append(Double(DispatchTime.now().uptimeNanoseconds - t0.uptimeNanoseconds) / 1e6)
    }
    let total = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
    samples.sort()
    return ListTiming(perSecond: Double(timedLists) / total, p50Ms: percentile(samples, 0.5), p99Ms: percentile(samples, 0.99))
}

func waitForHub(_ control: ControlClient, _ cloud: String, timeout: Double) async throws {
    do {
        try await waitUntil(timeout: timeout, poll: .milliseconds(100)) {
            (try? await control.status().cluster?.hub?.cloud) == cloud
        }
    } catch {
        let last = try? await control.status().cluster?.hub
        throw BenchFailure("the hub did not report cloud \(cloud) within \(Int(timeout)) s; last: \(last.map { "\($0)" } ?? "no hub report")")
    }
}

/// Every named pod Running in edged, its containers running.
func allRunning(_ control: ControlClient, _ names: [String]) async -> Bool {
    guard let pods = try? await control.pods() else { return false }
    let running = Set(pods.filter { p in
        p.phase == "Running" && !p.containers.isEmpty && p.containers.allSatisfy { $0.state == "running" && ($0.pid ?? 0) > 0 }
    }.map(\.name))
    return names.allSatisfy(running.contains)
}

private func containerPIDs(_ control: ControlClient, _ names: [String]) async throws -> Set<Int32> {
    let wanted = Set(names)
    return Set(try await control.pods().filter { wanted.contains($0.name) }.flatMap { $0.containers.compactMap { $0.pid.map { Int32($0) } } })
}

/// A pod bound to node `bench` running busybox `command`.
func boundPodJSON(_ name: String, command: [String] = ["sleep", "3600"]) throws -> Data {
    let pod: [String: Any] = [
        "apiVersion": "v1", "kind": "Pod", "metadata": ["name": name, "namespace": "default"],
        "spec": ["nodeName": "bench", "terminationGracePeriodSeconds": 1,
                 "containers": [["name": "main", "image": Demo.imageReference, "imagePullPolicy": "IfNotPresent",
                                 "command": command]]],
    ]
    return try JSONSerialization.data(withJSONObject: pod)
}
