// edged-bench: pod start latency against runc and podman, edged's RSS idle and with 20 pods, binary size, and the edge
// hub's LIST throughput (vs direct and kubectl proxy), cached RSS, offline LIST and offline reboot, and the tunnel.
// Needs root; starts its own edged on temp dirs and removes everything it started.

import ArgumentParser
import EdgedControl
import EdgedDaemon
import EdgedTestSupport
import Foundation

@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edged-bench",
        abstract: "Measure edged's pod start latency (vs runc and podman), RSS, binary size, memory limits, the edge hub and the tunnel. Needs root.",
        // `edged-bench [--json]` runs everything but `memory` (the full benchmark); the options belong to each
        // subcommand alone (a root option would swallow a subcommand's option of the same name).
        subcommands: [FullBench.self, StoreWriter.self, HubOnly.self, MemoryBench.self, FleetBench.self, TunnelOnly.self, TunnelAgentProcess.self,
                      TestAPIServer.self],
        defaultSubcommand: FullBench.self)
}

/// `edged-bench` / `edged-bench all`: the full benchmark.
struct FullBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "all",
        abstract: "Pod start latency (vs runc and podman), RSS, binary size, the edge hub and the tunnel (the default). Needs root.")

    @Flag(help: "Print one JSON object instead of the table.")
    var json = false
    @Option(help: "Pods to start (one at a time, then all kept running for the RSS figure).")
    var pods = 20
    @Option(help: "Directory with the edged, edgectl and edged-monitor binaries (default: next to edged-bench).")
    var binDir: String?
    @Option(help: "cross/build.sh's output dir, for the arm64 binary size.")
    var crossOut = "cross/out"

    func run() async throws {
        guard getuid() == 0 else { throw ValidationError("edged-bench needs root: it starts real containers (sudo edged-bench)") }
        let bin = binDir ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        let root = NSTemporaryDirectory() + "edged-bench-\(getpid())"
        defer { cleanUp(root: root, cgroupPrefix: "edged-bench") }
        let fm = FileManager.default
        let state = "\(root)/state", run = "\(root)/run", manifests = "\(root)/manifests", logs = "\(root)/logs"
        for d in [state, run, manifests, logs, "\(state)/images/import"] { try fm.createDirectory(atPath: d, withIntermediateDirectories: true) }
        try Demo.writeImageArchive(to: "\(state)/images/import/busybox.tar")
        try Demo.writeImageArchive(to: "\(root)/busybox-oci.tar")
        let socket = "\(run)/edged.sock"
        let args = ["--state-dir", state, "--run-dir", run, "--manifest-dir", manifests, "--log-dir", logs, "--socket", socket,
                    "--node-name", "bench", "--cgroup-root", "edged-bench", "--config", "\(root)/none.yaml", "--log-level", "warning"]
        // No CNI network (the host may have podman's in /etc/cni/net.d): pods get a netns with only lo.
        try "cni:\n  confDir: \(root)/no-cni\n".write(toFile: "\(root)/none.yaml", atomically: true, encoding: .utf8)

        // edged idle.
        let edged = try launch("\(bin)/edged", args + ["--stop-pods-on-exit"], log: "\(root)/edged.log")
        defer { if edged.isRunning { edged.terminate(); edged.waitUntilExit() } }
        let client = ControlClient(socketPath: socket)
        try await waitUntil(timeout: 30) { (try? await client.pods()) != nil }
        try await Task.sleep(for: .seconds(2))
        let rssIdle = rssKB(edged.processIdentifier)
        let anonIdle = anonymousKB(edged.processIdentifier)

        // Pod start latency: manifest written → container running and pod Running.
        var samples: [Double] = []
        for i in 0..<pods {
            let name = "bench\(i)"
            let text = """
                apiVersion: v1
                kind: Pod
                metadata: {name: \(name)}
                spec:
                  terminationGracePeriodSeconds: 1
                  containers:
                  - {name: main, image: \(Demo.imageReference), imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}
                """
            try text.write(toFile: "\(root)/\(name).tmp", atomically: false, encoding: .utf8)
            let t0 = DispatchTime.now()
            rename("\(root)/\(name).tmp", "\(manifests)/\(name).yaml")
            try await waitUntil(timeout: 30, poll: .milliseconds(2)) {
                guard let list = try? await client.pods(), let p = list.first(where: { $0.name == "\(name)-bench" }) else { return false }
                return p.phase == "Running" && p.containers.allSatisfy { $0.state == "running" && ($0.pid ?? 0) > 0 }
            }
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - t0.uptimeNanoseconds) / 1e6)
        }
        try await Task.sleep(for: .seconds(2))
        let status = try await client.status()
        let rss20 = rssKB(edged.processIdentifier) + Int(status.daemon.monitorsRSSBytes / 1024)

        // Stop: edged removes every pod (--stop-pods-on-exit).
        for i in 0..<pods { unlink("\(manifests)/bench\(i).yaml") }
        try await waitUntil(timeout: 60) { (try? await client.pods())?.isEmpty ?? false }
        edged.terminate()
        edged.waitUntilExit()

        // Joined: the same edged joined to the test API server (the only API server stand-in the project has),
        // pods created in the API and bound to the node; timed until edged has written status Running.
        let joined = try await joinedPhase(bin: bin, args: args, socket: socket, root: root, pods: pods)
        // The edge hub: its own API server and edged on temp dirs (issue [4]).
        defer { cleanUp(root: "\(root)/hub", cgroupPrefix: hubCgroupRoot) }
        let hub = try await hubPhase(bin: bin, root: "\(root)/hub")
        // The tunnel (issue [5]): 100 MB through it vs direct TCP, added latency, the agent's RSS.
        let tunnel = try await tunnelPhase(megabytes: 100)

        let runc = try? runcStartP50(root: root, runs: pods)
        let podman = try? podmanStartP50(archive: "\(root)/busybox-oci.tar", runs: 5)
        let size = strippedSize("\(bin)/edged", scratch: "\(root)/edged.stripped")
        let monitorSize = strippedSize("\(bin)/edged-monitor", scratch: "\(root)/monitor.stripped")
        // The shipped arm64 binary, when cross/build.sh has produced it (already static and stripped).
        let arm64 = (try? FileManager.default.attributesOfItem(atPath: crossOut + "/aarch64/edged"))?[.size] as? Int

        let sorted = samples.sorted()
        let result = BenchResult(
            pod_start_p50_ms: percentile(sorted, 0.5), pod_start_p95_ms: percentile(sorted, 0.95),
            runc_start_p50_ms: runc, podman_start_p50_ms: podman,
            rss_idle_kb: rssIdle, anon_idle_kb: anonIdle, rss_20_pods_kb: rss20, rss_per_pod_kb: Double(rss20 - rssIdle) / Double(max(pods, 1)),
            binary_bytes: size, monitor_binary_bytes: monitorSize, arm64_binary_bytes: arm64, pods: pods,
            api_pod_start_p50_ms: percentile(joined.samples, 0.5), api_pod_start_p95_ms: percentile(joined.samples, 0.95),
            rss_joined_idle_kb: joined.rssIdle, anon_joined_idle_kb: joined.anonIdle,
            hub_list_per_s: hub.hubList.perSecond, hub_list_p50_ms: hub.hubList.p50Ms, hub_list_p99_ms: hub.hubList.p99Ms,
            direct_list_per_s: hub.directList.perSecond, direct_list_p50_ms: hub.directList.p50Ms, direct_list_p99_ms: hub.directList.p99Ms,
            kubectl_proxy_list_per_s: hub.kubectlProxyList?.perSecond, kubectl_proxy_list_p50_ms: hub.kubectlProxyList?.p50Ms,
            kubectl_proxy_list_p99_ms: hub.kubectlProxyList?.p99Ms, hub_rss_1000_pods_kb: hub.rss1000PodsKB,
            hub_anon_1000_pods_kb: hub.anon1000PodsKB,
            offline_list_p50_ms: hub.offlineList.p50Ms, offline_reboot_20_pods_ms: hub.offlineReboot20PodsMs,
            tunnel_mb_per_s: tunnel.tunnel_mb_per_s, direct_mb_per_s: tunnel.direct_mb_per_s,
            tunnel_added_latency_ms: tunnel.tunnel_added_latency_ms,
            tunnel_added_latency_after_bulk_ms: tunnel.tunnel_added_latency_after_bulk_ms, tunnel_rss_idle_kb: tunnel.tunnel_rss_idle_kb,
            tunnel_rss_50_streams_kb: tunnel.tunnel_rss_50_streams_kb)
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            print(String(decoding: try enc.encode(result), as: UTF8.self))
        } else {
            print(result.table)
        }
    }
}

struct BenchResult: Codable {
    var pod_start_p50_ms: Double
    var pod_start_p95_ms: Double
    var runc_start_p50_ms: Double?
    var podman_start_p50_ms: Double?
    var rss_idle_kb: Int
    /// Of the idle RSS, the anonymous (private, not file-backed) part: what edged really costs in RAM;
    /// the rest is clean code pages of the binary and shared libraries.
    var anon_idle_kb: Int
    var rss_20_pods_kb: Int
    var rss_per_pod_kb: Double
    var binary_bytes: Int
    var monitor_binary_bytes: Int
    /// Static, stripped aarch64 edged from cross/out (nil when it was not built).
    var arm64_binary_bytes: Int?
    var pods: Int
    /// Pod created in the API server (bound to the node) → edged has written status Running; cached image.
    var api_pod_start_p50_ms: Double
    var api_pod_start_p95_ms: Double
    /// edged's RSS joined to a cluster (node agent, lease, watches), no pods.
    var rss_joined_idle_kb: Int
    /// Of that, the anonymous part.
    var anon_joined_idle_kb: Int
    /// Edge hub: sequential LISTs of 1000 pods (about 3 KB each) through the hub's HTTP port, direct to the test API
    /// server (HTTPS, admin certificate) and through `kubectl proxy` (nil without kubectl), one HTTP client.
    var hub_list_per_s: Double
    var hub_list_p50_ms: Double
    var hub_list_p99_ms: Double
    var direct_list_per_s: Double
    var direct_list_p50_ms: Double
    var direct_list_p99_ms: Double
    var kubectl_proxy_list_per_s: Double?
    var kubectl_proxy_list_p50_ms: Double?
    var kubectl_proxy_list_p99_ms: Double?
    /// edged's RSS once the hub has cached the 1000 pods, minus before the first hub LIST.
    var hub_rss_1000_pods_kb: Int
    /// Of that, the anonymous part (the cache's real RAM cost; the rest is code pages the LIST path touched).
    var hub_anon_1000_pods_kb: Int
    /// The same LIST through the hub while the API server is stopped (served from the store).
    var offline_list_p50_ms: Double
    /// API server stopped, edged stopped with its 20 pods stopped, edged launched → all 20 Running again.
    var offline_reboot_20_pods_ms: Double
    /// 100 MB through the tunnel (CONNECT → tunnel server → gRPC/TLS → agent → loopback TCP) and straight over loopback.
    var tunnel_mb_per_s: Double
    var direct_mb_per_s: Double
    /// Median (new tunnel connection + 64-byte echo) minus median (new TCP connection + the same echo).
    var tunnel_added_latency_ms: Double
    /// The same right after the 100 MB transfer.
    var tunnel_added_latency_after_bulk_ms: Double
    /// RSS of an agent-only process idle, and with 50 open streams (before the bulk transfer).
    var tunnel_rss_idle_kb: Int
    var tunnel_rss_50_streams_kb: Int

    var table: String {
        func ms(_ v: Double?) -> String { v.map { String(format: "%.1f ms", $0) } ?? "n/a" }
        func perS(_ v: Double?) -> String { v.map { String(format: "%.1f lists/s", $0) } ?? "n/a" }
        return """
            measure                              value
            pod start p50 (edged)                \(ms(pod_start_p50_ms))
            pod start p95 (edged)                \(ms(pod_start_p95_ms))
            runc run p50 (same rootfs)           \(ms(runc_start_p50_ms))
            podman run --rm p50                  \(ms(podman_start_p50_ms))
            edged RSS idle                       \(rss_idle_kb) KB (\(anon_idle_kb) KB anonymous, the rest clean code pages)
            edged RSS + monitors, \(pods) pods      \(rss_20_pods_kb) KB (\(String(format: "%.0f", rss_per_pod_kb)) KB per pod)
            API pod start p50 / p95 (joined)     \(ms(api_pod_start_p50_ms)) / \(ms(api_pod_start_p95_ms))
            edged RSS joined, idle               \(rss_joined_idle_kb) KB (\(anon_joined_idle_kb) KB anonymous)
            LIST 1000 pods via hub               \(perS(hub_list_per_s)), p50 / p99 \(ms(hub_list_p50_ms)) / \(ms(hub_list_p99_ms))
            LIST 1000 pods direct                \(perS(direct_list_per_s)), p50 / p99 \(ms(direct_list_p50_ms)) / \(ms(direct_list_p99_ms))
            LIST 1000 pods via kubectl proxy     \(perS(kubectl_proxy_list_per_s)), p50 / p99 \(ms(kubectl_proxy_list_p50_ms)) / \(ms(kubectl_proxy_list_p99_ms))
            hub RSS with 1000 cached pods        \(hub_rss_1000_pods_kb) KB (\(hub_anon_1000_pods_kb) KB anonymous)
            LIST 1000 pods via hub, offline p50  \(ms(offline_list_p50_ms))
            offline reboot to 20 pods Running    \(ms(offline_reboot_20_pods_ms))
            100 MB through the tunnel / direct   \(tunnel_mb_per_s) / \(direct_mb_per_s) MB/s
            tunnel added latency (new stream)    \(ms(tunnel_added_latency_ms)) (\(ms(tunnel_added_latency_after_bulk_ms)) after 100 MB)
            tunnel agent RSS idle / 50 streams   \(tunnel_rss_idle_kb) / \(tunnel_rss_50_streams_kb) KB
            edged binary (stripped)              \(binary_bytes) bytes
            edged-monitor binary (stripped)      \(monitor_binary_bytes) bytes
            edged arm64 static (cross/out)       \(arm64_binary_bytes.map { "\($0) bytes" } ?? "n/a (run cross/build.sh)")
            """
    }
}

/// Starts edged again on the same state, joins it to a test API server, measures idle RSS, then creates `pods`
/// pods bound to the node one at a time and times each until its status in the API server says Running.
func joinedPhase(bin: String, args: [String], socket: String, root: String, pods: Int) async throws -> (samples: [Double], rssIdle: Int, anonIdle: Int) {
    let api = try await KubeAPIServer.start()
    defer { Task { try? await api.shutdown() } }
    try api.addBootstrapToken(id: "benchx", secret: "0123456789abcdef")
    // The hub on free loopback ports: the bench never touches the host's interfaces or fixed ports.
    try "cluster:\n  nodeIP: 127.0.0.1\ncni:\n  confDir: \(root)/no-cni\nhub:\n  httpsAddress: \"\"\n  httpAddress: 127.0.0.1:\(try freeTCPPort())\n  healthAddress: 127.0.0.1:\(try freeTCPPort())\n"
        .write(toFile: "\(root)/joined.yaml", atomically: true, encoding: .utf8)
    var joinedArgs = args
    if let i = joinedArgs.firstIndex(of: "--config") { joinedArgs[i + 1] = "\(root)/joined.yaml" }
    let edged = try launch("\(bin)/edged", joinedArgs + ["--stop-pods-on-exit"], log: "\(root)/edged-joined.log")
    defer { if edged.isRunning { edged.terminate(); edged.waitUntilExit() } }
    let client = ControlClient(socketPath: socket)
    try await waitUntil(timeout: 30) { (try? await client.pods()) != nil }
    _ = try await client.join(JoinRequest(server: api.url, token: "benchx.0123456789abcdef", caCertHashes: [api.caCertHash]))
    try await waitUntil(timeout: 30) { api.objectJSON("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/bench") != nil }
    try await Task.sleep(for: .seconds(3))
    let rssIdle = rssKB(edged.processIdentifier)
    let anonIdle = anonymousKB(edged.processIdentifier)

    var samples: [Double] = []
    for i in 0..<pods {
        let name = "api\(i)"
        let pod: [String: Any] = [
            "apiVersion": "v1", "kind": "Pod", "metadata": ["name": name, "namespace": "default"],
            "spec": ["nodeName": "bench", "terminationGracePeriodSeconds": 1,
                     "containers": [["name": "main", "image": Demo.imageReference, "imagePullPolicy": "IfNotPresent",
                                     "command": ["sleep", "3600"]]]],
        ]
        let body = try JSONSerialization.data(withJSONObject: pod)
        let t0 = DispatchTime.now()
        let created = api.call("POST", "/api/v1/namespaces/default/pods", body: body)
        guard created.code == 201 else { throw ValidationError("creating pod \(name): \(String(decoding: created.body, as: UTF8.self))") }
        try await waitUntil(timeout: 30, poll: .milliseconds(2)) {
            guard let obj = api.objectJSON("/api/v1/namespaces/default/pods/\(name)"),
                  let status = obj["status"] as? [String: Any], status["phase"] as? String == "Running" else { return false }
            return true
        }
        samples.append(Double(DispatchTime.now().uptimeNanoseconds - t0.uptimeNanoseconds) / 1e6)
    }
    for i in 0..<pods { _ = api.call("DELETE", "/api/v1/namespaces/default/pods/api\(i)?gracePeriodSeconds=0") }
    try await waitUntil(timeout: 60) { (try? await client.pods())?.isEmpty ?? false }
    edged.terminate()
    edged.waitUntilExit()
    try? FileManager.default.removeItem(atPath: "\(root)/state/pki")
    return (samples.sorted(), rssIdle, anonIdle)
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    let i = min(Int((Double(sorted.count - 1) * p).rounded()), sorted.count - 1)
    return sorted[i]
}

func launch(_ exe: String, _ args: [String], log: String) throws -> Process {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    FileManager.default.createFile(atPath: log, contents: nil)
    let h = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
    p.standardOutput = h
    p.standardError = h
    try p.run()
    return p
}

@discardableResult
func sh(_ args: [String]) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

func waitUntil(timeout: Double, poll: Duration = .milliseconds(50), _ cond: () async -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(timeout)
    while ContinuousClock.now < deadline {
        if await cond() { return }
        try await Task.sleep(for: poll)
    }
    throw ValidationError("timed out after \(timeout)s")
}

func rssKB(_ pid: Int32) -> Int {
    guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
    for line in s.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
    }
    return 0
}

/// The Anonymous total of /proc/PID/smaps_rollup, in KB (0 when the process is gone).
func anonymousKB(_ pid: Int32) -> Int { ProcessMemory(pid: pid)?.anonymousKB ?? 0 }

func strippedSize(_ path: String, scratch: String) -> Int {
    try? FileManager.default.removeItem(atPath: scratch)
    guard (try? FileManager.default.copyItem(atPath: path, toPath: scratch)) != nil else { return 0 }
    _ = try? sh(["strip", scratch])
    return ((try? FileManager.default.attributesOfItem(atPath: scratch))?[.size] as? Int) ?? 0
}

/// `runc run` of a bundle made from the same busybox rootfs, running /bin/true, timed end to end.
func runcStartP50(root: String, runs: Int) throws -> Double? {
    guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/runc") || FileManager.default.isExecutableFile(atPath: "/usr/bin/runc") else { return nil }
    let bundle = "\(root)/runc-bundle"
    let rootfs = "\(bundle)/rootfs"
    try FileManager.default.createDirectory(atPath: "\(rootfs)/bin", withIntermediateDirectories: true)
    for d in ["proc", "sys", "dev", "tmp", "etc"] { try FileManager.default.createDirectory(atPath: "\(rootfs)/\(d)", withIntermediateDirectories: true) }
    try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: "\(rootfs)/bin/busybox")
    try FileManager.default.createSymbolicLink(atPath: "\(rootfs)/bin/true", withDestinationPath: "busybox")
    let (rc, out) = try sh(["runc", "spec", "--bundle", bundle])
    guard rc == 0 else { throw ValidationError("runc spec: \(out)") }
    var spec = try String(contentsOfFile: "\(bundle)/config.json", encoding: .utf8)
    spec = spec.replacingOccurrences(of: "\"sh\"", with: "\"/bin/true\"").replacingOccurrences(of: "\"terminal\": true", with: "\"terminal\": false")
    try spec.write(toFile: "\(bundle)/config.json", atomically: true, encoding: .utf8)
    var samples: [Double] = []
    for i in 0..<runs {
        let t0 = DispatchTime.now()
        let (rc, out) = try sh(["runc", "--root", "\(root)/runc-state", "run", "--bundle", bundle, "edged-bench-\(getpid())-\(i)"])
        guard rc == 0 else { throw ValidationError("runc run: \(out)") }
        samples.append(Double(DispatchTime.now().uptimeNanoseconds - t0.uptimeNanoseconds) / 1e6)
    }
    return percentile(samples.sorted(), 0.5)
}

/// `podman run --rm` of the same image (loaded from the OCI archive), or nil when podman cannot run here.
func podmanStartP50(archive: String, runs: Int) throws -> Double? {
    let common = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs", "--root", "/var/lib/edged-bench-podman"]
    guard (try? sh(common + ["load", "-i", archive]))?.0 == 0 else { return nil }
    defer { _ = try? sh(common + ["rmi", "-af"]) ; _ = try? sh(common + ["system", "reset", "-f"]) }
    var samples: [Double] = []
    for _ in 0..<runs {
        let t0 = DispatchTime.now()
        let (rc, _) = try sh(common + ["run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
                                       Demo.imageReference, "/bin/true"])
        guard rc == 0 else { return nil }
        samples.append(Double(DispatchTime.now().uptimeNanoseconds - t0.uptimeNanoseconds) / 1e6)
    }
    return percentile(samples.sorted(), 0.5)
}

/// Removes what the run left: the sandboxes bind mount (kept by the runtime like /run/netns), the now-empty
/// cgroup prefix dirs, the temp tree.
func cleanUp(root: String, cgroupPrefix: String) {
    umount2("\(root)/run/sandboxes", Int32(MNT_DETACH))
    let fm = FileManager.default
    for hierarchy in (try? fm.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
        let dir = "/sys/fs/cgroup/\(hierarchy)/\(cgroupPrefix)"
        guard fm.fileExists(atPath: dir) else { continue }
        // Deepest first; cgroup dirs are removed with rmdir, never recursively.
        // (rmdir fails harmlessly on the control files the enumeration also lists.)
        let entries = fm.enumerator(atPath: dir)?.allObjects as? [String] ?? []
        for sub in entries.sorted(by: { $0.count > $1.count }) { rmdir("\(dir)/\(sub)") }
        rmdir(dir)
    }
    try? fm.removeItem(atPath: root)
}
