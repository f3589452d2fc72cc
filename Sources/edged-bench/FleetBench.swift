// `edged-bench fleet --nodes N` (issue [5]): N real edged daemons on this machine, each in its own network
// namespace with its own dirs and cgroup prefix, joined with `edgectl join` to the test API server (in this
// process, listening on the fleet bridge; or any API server: --server, --token, --ca-cert-hash, --kubeconfig, the
// nodes reaching it through NAT on this host), each with 2 pods (a node-pool DaemonSet's pod and one more, busybox
// imported per node from a tarball). Measures what each node costs the control plane at steady state, and the
// reconnect after every node lost the API server at once. Requests and watches are counted by the test API server;
// against another server only the node side is measured (bytes, CPU, PSS, join and Ready times): count its
// requests in its audit log (user system:node:<name>). The shared parts are in Tests/EdgedTestSupport/Fleet.swift.
//
// Network: bridge efbbr (10.252.0.1/16) on the host, one veth per node (eth0 = 10.252.x.y in the node's netns).
// Each node's pods have their own CNI bridge and /24 inside the node's netns (10.253.<i>.0/24). Everything (processes, netns, veths, bridge, cgroups, mounts, dirs) is
// removed at the end, on error and on Ctrl-C/SIGTERM.

import ArgumentParser
import EdgedDaemon
import EdgedTestSupport
import Foundation

struct FleetBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet",
        abstract: "N edged nodes in network namespaces joined to one test API server: per-node API load, watches, bytes, CPU, PSS, and the reconnect after an outage. Needs root.")

    @Option(help: "Nodes to start.")
    var nodes = 10
    @Option(help: "Seconds of steady state to measure (after every node is Ready and every pod Running).")
    var steadySeconds = 300
    @Option(help: "Seconds the API server is gone for every node at once (0: no outage phase).")
    var outageSeconds = 60
    @Option(help: "Nodes started and joined at the same time.")
    var parallel = 4
    @Option(help: "Directory with the edged, edgectl and edged-monitor binaries (default: next to edged-bench).")
    var binDir: String?
    @Option(help: "edged's --log-level (each node's log is in its dir while the run lasts).")
    var edgedLogLevel = "warning"
    @Option(help: "Join this API server instead of the test API server, e.g. https://192.168.1.10:6443 (an IP address: the nodes' netns have no DNS of their own). Needs --token, --ca-cert-hash and --kubeconfig.")
    var server: String?
    @Option(help: "A bootstrap token for --server (kubeadm token create).")
    var token: String?
    @Option(name: .customLong("ca-cert-hash"), help: "sha256:<hex> of --server's CA.")
    var caCertHash: String?
    @Option(help: "An admin kubeconfig for --server: kubectl creates the DaemonSet and pods, reads node readiness and deletes the fleet's Nodes at the end.")
    var kubeconfig: String?
    @Flag(help: "Print one JSON object instead of the table.")
    var json = false
    @Option(help: "Also write the JSON object to this file (the table still goes to stdout).")
    var jsonFile: String?

    static let prefix = "efb", net = "10.252"

    func validate() throws {
        guard (1...1000).contains(nodes) else { throw ValidationError("--nodes must be 1 to 1000") }
        guard steadySeconds >= 30 else { throw ValidationError("--steady-seconds must be at least 30 (three lease periods)") }
        guard outageSeconds >= 0 else { throw ValidationError("--outage-seconds must not be negative") }
        guard parallel >= 1 else { throw ValidationError("--parallel must be at least 1") }
        let external = [server, token, caCertHash, kubeconfig]
        guard external.allSatisfy({ $0 == nil }) || external.allSatisfy({ $0 != nil }) else {
            throw ValidationError("--server needs --token, --ca-cert-hash and --kubeconfig (and they need --server)")
        }
        if let server, !server.hasPrefix("https://") {
            throw ValidationError("--server \(server): give the API server's URL, https://ADDRESS:PORT")
        }
        if server != nil, findExecutable("kubectl") == nil { throw ValidationError("--server needs kubectl on PATH") }
    }

    func run() async throws {
        guard getuid() == 0 else { throw ValidationError("edged-bench fleet needs root: it creates network namespaces, cgroups and containers") }
        let bin = binDir ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        let root = NSTemporaryDirectory() + "edged-bench-fleet-\(getpid())"
        let log: @Sendable (String) -> Void = { line in
            FileHandle.standardError.write(Data("fleet: \(line)\n".utf8))
        }
        // Ctrl-C / SIGTERM, also while the nodes start: kill and remove everything synchronously, then exit.
        let inotify = FleetCluster.inotifyInstances
        let count = nodes
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let sources = [SIGINT, SIGTERM].map { (sig: Int32) -> any DispatchSourceSignal in
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler {
                log("signal \(sig): removing the fleet")
                FleetCluster.emergencyTearDown(prefix: Self.prefix, net: Self.net, root: root, count: count, inotifyInstances: inotify)
                Foundation.exit(130)
            }
            s.resume()
            return s
        }
        let cluster = try await FleetCluster.start(
            count: nodes, prefix: Self.prefix, net: Self.net, bin: bin, root: root, imageReference: Demo.imageReference,
            parallel: parallel, logLevel: edgedLogLevel, nat: server != nil, controlPlane: controlPlane(),
            writeImage: { try Demo.writeImageArchive(to: $0) }, progress: log)
        defer { sources.forEach { $0.cancel() } }
        do {
            let result = try await measure(cluster, log: log)
            await cluster.tearDown()
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            let encoded = try enc.encode(result)
            if let jsonFile { try encoded.write(to: URL(fileURLWithPath: jsonFile)) }
            if json {
                print(String(decoding: encoded, as: UTF8.self))
            } else {
                print(result.table)
            }
        } catch {
            await cluster.tearDown()
            throw error
        }
    }

    /// --server's control plane (nil: the test API server).
    func controlPlane() -> (@Sendable (FleetNetwork) async throws -> any FleetControlPlane)? {
        guard let server, let token, let caCertHash, let kubeconfig else { return nil }
        return { _ in KubectlControlPlane(server: server, token: token, caCertHash: caCertHash, kubeconfig: kubeconfig) }
    }

    func measure(_ cluster: FleetCluster, log: @escaping @Sendable (String) -> Void) async throws -> FleetResult {
        let api = cluster.api
        log(String(format: "all %d nodes Ready, %d pods Running after %.1f s; settling 15 s, then %d s of steady state",
                   nodes, nodes * 2, cluster.joinSeconds, steadySeconds))
        // The join's own traffic (serving CSR, first status writes, events) settles first.
        try await Task.sleep(for: .seconds(15))
        let start = cluster.mark()
        var watchSamples: [[String: Int]] = []
        let end = ContinuousClock.now + .seconds(steadySeconds)
        while ContinuousClock.now < end {
            try await Task.sleep(for: .seconds(min(10, max(0.1, MemoryHealth.seconds(end - ContinuousClock.now)))))
            if let api { watchSamples.append(fleetWatches(api, nodes: cluster.nodeNames)) }
        }
        let stop = cluster.mark()
        let load = cluster.load(since: start, until: stop)
        let pss = cluster.nodes.compactMap { $0.pid.flatMap { ProcessMemory(pid: $0)?.pssKB } }
        // Watches per node: the most any node held in any sample.
        var most: [String: Int] = [:]
        for sample in watchSamples { for (node, n) in sample { most[node] = max(most[node] ?? 0, n) } }
        let kubelet = FleetLoad.kubeletWatches(referencedObjects: 1)
        var result = FleetResult(
            api_server: server ?? "the test API server (in edged-bench)",
            fleet_nodes: nodes, fleet_pods: nodes * 2, fleet_join_s: cluster.joinSeconds,
            join_requests_per_node: cluster.joinLoad.map { l in Double(l.requestsByNode.values.reduce(0, +)) / Double(max(nodes, 1)) },
            join_requests_by_kind: cluster.joinLoad.map { l in l.kindTotals.mapValues { (Double($0) / Double(max(nodes, 1)) * 10).rounded() / 10 } },
            join_bootstrap_requests: cluster.joinLoad.map { _ in cluster.joinBootstrapRequests },
            steady_seconds: steadySeconds,
            api_requests_per_node_min: api.map { _ in load.requestsPerNodeMinute },
            api_requests_per_node_min_max: api.map { _ in cluster.nodeNames.map(load.perMinute).max() ?? 0 },
            watches_per_node: api.map { _ in most.values.max() ?? 0 },
            watches_of_first_node: api.map { fleetWatchKinds($0, node: cluster.nodeNames[0]) },
            kubelet_watches_per_node: kubelet,
            api_bytes_per_node_min: FleetMark.bytesPerNodeMinute(start, stop),
            cpu_ms_per_node_min: FleetMark.cpuMsPerNodeMinute(start, stop),
            pss_per_node_kb: pss.isEmpty ? 0 : pss.reduce(0, +) / pss.count,
            fleet_requests_by_kind: api.map { _ in
                Dictionary(uniqueKeysWithValues: load.kindsPerNodeMinute.map { ($0.kind, ($0.rate * 100).rounded() / 100) })
            },
            goal_violations: api.map { _ in load.violations(watches: most, kubeletWatches: kubelet) },
            outage_seconds: outageSeconds)
        log(String(format: "steady state: %@ requests per node per minute, %@ watches per node at most",
                   result.api_requests_per_node_min.map { String(format: "%.2f", $0) } ?? "(not counted)",
                   result.watches_per_node.map(String.init) ?? "(not counted)"))
        guard outageSeconds > 0 else { return result }

        // Outage for every node at once: the test API server stops (listener closed, every connection cut);
        // another server is cut off by taking the fleet's bridge down (packets dropped).
        log("outage: the API server is gone for \(outageSeconds) s")
        if let api { try await api.stop() } else { try cluster.network.setLinked(false) }
        try await Task.sleep(for: .seconds(outageSeconds))
        let notReady = await cluster.readiness().values.filter { $0 != "True" }.count
        let before = cluster.mark()
        if let api { try await api.resume() } else { try cluster.network.setLinked(true) }
        let back = ContinuousClock.now
        log("the API server is back (\(notReady) nodes marked not Ready meanwhile); counting the first minute")
        // Requests per second (from the log's length every 250 ms), and when every node is Ready again.
        var perSecond: [Int] = []
        var lastCount = before.requestIndex, lastSecond = back
        var allReady: Double?
        var lastReadyCheck = back - .seconds(10)
        while ContinuousClock.now < back + .seconds(60) {
            try await Task.sleep(for: .milliseconds(250))
            if let api, ContinuousClock.now - lastSecond >= .seconds(1) {
                let n = api.requests().count
                perSecond.append(n - lastCount)
                lastCount = n
                lastSecond = .now
            }
            // kubectl against another server: at most once a second.
            if allReady == nil, api != nil || ContinuousClock.now - lastReadyCheck >= .seconds(1) {
                lastReadyCheck = .now
                if await cluster.readiness().values.allSatisfy({ $0 == "True" }) {
                    allReady = MemoryHealth.seconds(ContinuousClock.now - back)
                }
            }
        }
        let after = cluster.mark()
        if allReady == nil {
            let deadline = ContinuousClock.now + .seconds(120)
            while ContinuousClock.now < deadline {
                if await cluster.readiness().values.allSatisfy({ $0 == "True" }) {
                    allReady = MemoryHealth.seconds(ContinuousClock.now - back)
                    break
                }
                try await Task.sleep(for: .seconds(1))
            }
        }
        var bytes = 0
        for (a, b) in zip(before.bytes, after.bytes) { bytes += (b.fromNode - a.fromNode) + (b.toNode - a.toNode) }
        result.reconnect_bytes_first_min = bytes
        if api != nil {
            let storm = cluster.load(since: before, until: after)
            result.reconnect_requests_first_min = storm.requestsByNode.values.reduce(0, +)
            result.reconnect_peak_requests_per_s = perSecond.max() ?? 0
            result.reconnect_requests_per_s = perSecond
            result.reconnect_requests_by_kind = storm.kindTotals
        }
        result.reconnect_all_ready_s = allReady
        result.reconnect_nodes_not_ready = notReady
        return result
    }
}

struct FleetResult: Codable {
    /// "the test API server (in edged-bench)" or --server.
    var api_server: String
    var fleet_nodes: Int
    var fleet_pods: Int
    /// First edged started → every node Ready and every pod Running in the API.
    var fleet_join_s: Double
    /// Requests per node (its own credentials) during the join, by verb and resource (per node), and the bootstrap
    /// token's requests of all nodes together (test API server only).
    var join_requests_per_node: Double?
    var join_requests_by_kind: [String: Double]?
    var join_bootstrap_requests: Int?
    var steady_seconds: Int
    /// Mean over the nodes; and the busiest node.
    /// Counted by the test API server only (nil with --server, as every figure below that needs its request log).
    var api_requests_per_node_min: Double?
    var api_requests_per_node_min_max: Double?
    /// The most watch streams any node held open (sampled every 10 s).
    var watches_per_node: Int?
    /// The first node's open watches by kind and selector.
    var watches_of_first_node: [String: Int]?
    /// kubelet's for the same pods: pods, its Node, Services, kube-root-ca.crt (every pod's kube-api-access volume).
    var kubelet_watches_per_node: Int
    /// Both ways, through the node's veth (TLS and HTTP headers included).
    var api_bytes_per_node_min: Double
    /// edged and its monitors.
    var cpu_ms_per_node_min: Double
    /// edged's PSS (smaps_rollup; shared code divided among the nodes), mean.
    var pss_per_node_kb: Int
    /// Per verb and resource: requests per node per minute at steady state.
    var fleet_requests_by_kind: [String: Double]?
    var goal_violations: [String]?
    var outage_seconds: Int
    /// All nodes together, in the first 60 s after the API server came back.
    var reconnect_requests_first_min: Int? = nil
    var reconnect_bytes_first_min: Int? = nil
    var reconnect_peak_requests_per_s: Int? = nil
    /// HTTP requests the API server got (only the nodes make any) in each second of the first minute.
    var reconnect_requests_per_s: [Int]? = nil
    var reconnect_requests_by_kind: [String: Int]? = nil
    /// API server back → every node Ready=True again (nil: not within 3 minutes).
    var reconnect_all_ready_s: Double? = nil
    /// Nodes the node lifecycle controller had marked not Ready when the server came back.
    var reconnect_nodes_not_ready: Int? = nil

    var table: String {
        func f(_ v: Double, _ d: Int = 1) -> String { String(format: "%.\(d)f", v) }
        let notCounted = "(counted only by the test API server: see the server's audit log, user system:node:<name>)"
        let rate = api_requests_per_node_min.map { "\(f($0, 2)) (busiest node \(f(api_requests_per_node_min_max ?? 0, 2)))" } ?? "-"
        let watches = watches_per_node.map(String.init) ?? "-"
        var lines = [
            "API server: \(api_server)",
            "measure                                 edged (per node)          kubelet (documented)",
            "nodes / pods                            \(fleet_nodes) / \(fleet_pods)",
            "join: first start → all Ready/Running   \(f(fleet_join_s)) s"
                + (join_requests_per_node.map { ", \(f($0)) requests per node (+ \(join_bootstrap_requests ?? 0) with the bootstrap token, all nodes)" } ?? ""),
            "API requests / node / min (steady)      " + rate.padding(toLength: 26, withPad: " ", startingAt: 0)
                + "6 Lease updates + node status on change, at least every 5 min (goal ≤ 8)",
            "open watches / node                     " + watches.padding(toLength: 26, withPad: " ", startingAt: 0)
                + "\(kubelet_watches_per_node): its pods, its Node, Services, 1 per referenced configMap/secret",
            "API bytes / node / min (both ways)      \(Int(api_bytes_per_node_min)) B",
            "CPU / node / min (edged + monitors)     \(f(cpu_ms_per_node_min)) ms",
            "PSS / node (edged)                      \(pss_per_node_kb) KB",
            "",
        ]
        if let join = join_requests_by_kind {
            lines.append("join by verb and resource (per node): " + join.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
                .map { "\($0.key) \(f($0.value))" }.joined(separator: ", "))
        }
        if let kinds = fleet_requests_by_kind, let watched = watches_of_first_node {
            lines.append("watches of node 0: " + watched.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", "))
            lines.append("steady state by verb and resource (requests / node / min, over \(steady_seconds) s):")
            for (kind, rate) in kinds.sorted(by: { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }) {
                lines.append("  " + kind.padding(toLength: 38, withPad: " ", startingAt: 0) + f(rate, 2))
            }
        } else {
            lines.append("requests and watches \(notCounted)")
        }
        if let violations = goal_violations {
            lines.append(violations.isEmpty ? "goals (≤ 8 requests/node/min, watches ≤ kubelet's): met" : "goals NOT met:")
            for v in violations { lines.append("  " + v) }
        }
        if outage_seconds > 0 {
            lines += [
                "",
                "after a \(outage_seconds) s outage of the API server for all nodes (\(reconnect_nodes_not_ready ?? 0) not Ready when it came back):",
                "  bytes in the first minute, all nodes       \(reconnect_bytes_first_min ?? 0) B",
                "  back → every node Ready again              \(reconnect_all_ready_s.map { f($0) + " s" } ?? "not within 3 min")",
            ]
            if let reqs = reconnect_requests_first_min {
                lines += [
                    "  requests in the first minute, all nodes    \(reqs) (\(f(Double(reqs) / Double(max(fleet_nodes, 1)))) per node), peak \(reconnect_peak_requests_per_s ?? 0)/s",
                    "  requests per second, first 20 s            " + (reconnect_requests_per_s ?? []).prefix(20).map(String.init).joined(separator: " "),
                    "  first minute by verb and resource (all nodes):",
                ]
                for (kind, n) in (reconnect_requests_by_kind ?? [:]).sorted(by: { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }) {
                    lines.append("    " + kind.padding(toLength: 36, withPad: " ", startingAt: 0) + "\(n)")
                }
            } else {
                lines.append("  requests \(notCounted)")
            }
        }
        return lines.joined(separator: "\n")
    }
}
