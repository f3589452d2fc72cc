// A fleet of real edged nodes on one machine, shared by `edged-bench fleet` and FleetTests (issue [5]): each node
// is an edged daemon in its own network namespace (so it has its own kubelet port, hub listeners and 169.254.2.1
// hub address), with its own state/run/manifest/log dirs and cgroup prefix, joined with the real `edgectl join`.
//
// Network: one host bridge (<prefix>br, HOST_IP/16) and one veth pair per node (host side <prefix>h<i> on the
// bridge, eth0 in the node's netns with the node's address). The API server listens on the bridge's address. Each
// node's pods get a CNI network of their own inside the node's netns (bridge fleet0, host-local /24, its own IPAM
// dir): without a network config a node is NotReady, as kubelet's is. What a node sends to and receives from the
// API server is what crosses its veth (the host side's counters: TLS, headers and all).
//
// The API side is counted from the test API server's request log (user system:node:<name>) and its open watch
// streams (KubeAPIServer+Traffic.swift); FleetLoad turns them into per-node rates and checks the goals.

import Foundation

/// The host side of a fleet: the bridge, and a network namespace plus veth pair per node.
public struct FleetNetwork: Sendable {
    /// Short, so that "<prefix>h<index>" fits a 15-character interface name (prefix ≤ 6 characters).
    public let prefix: String
    /// The first two octets of the /16, e.g. "10.252".
    public let net: String
    public var bridge: String { "\(prefix)br" }
    public var hostIP: String { "\(net).0.1" }

    public init(prefix: String, net: String) {
        precondition(prefix.count <= 6, "a fleet prefix longer than 6 characters makes veth names over 15")
        self.prefix = prefix
        self.net = net
    }

    public func namespace(_ i: Int) -> String { "\(prefix)-\(i)" }
    public func hostVeth(_ i: Int) -> String { "\(prefix)h\(i)" }
    /// Node i's address: 10.x.(1 + i / 250).(2 + i % 250).
    public func nodeIP(_ i: Int) -> String { "\(net).\(1 + i / 250).\(2 + i % 250)" }
    /// Node i's pod subnet, 10.(x+1).(i % 256).0/24: only inside the node's netns (pods of different nodes never
    /// talk here), so a repeat after 256 nodes does no harm.
    public func podSubnet(_ i: Int) -> String {
        let parts = net.split(separator: ".")
        return "\(parts[0]).\((Int(parts[1]) ?? 0) + 1).\(i % 256).0/24"
    }

    private func ip(_ args: [String]) throws {
        let r = try runCommand(["ip"] + args, check: false)
        if r.status != 0 {
            throw TestFailure("ip \(args.joined(separator: " ")) failed: \(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines)); is iproute2 installed and are we root?")
        }
    }

    /// Removes what an earlier run with the same prefix left (a killed run), then creates the bridge. With `nat`
    /// the nodes also reach addresses beyond this host (another API server): forwarding on and the fleet's /16
    /// masqueraded (both undone by tearDown).
    public func setUp(nat: Bool = false) throws {
        tearDown()
        try ip(["link", "add", bridge, "type", "bridge"])
        try ip(["addr", "add", "\(hostIP)/16", "dev", bridge])
        try ip(["link", "set", bridge, "up"])
        if nat {
            let forwarding = procText(Self.forwardFile)?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "0"
            try forwarding.write(toFile: savedForwardFile, atomically: true, encoding: .utf8)
            try "1\n".write(toFile: Self.forwardFile, atomically: false, encoding: .utf8)
            let r = try runCommand(["iptables"] + natRule("-A"), check: false)
            guard r.status == 0 else { throw TestFailure("iptables \(natRule("-A").joined(separator: " ")) failed: \(r.stderr)") }
        }
    }

    static let forwardFile = "/proc/sys/net/ipv4/ip_forward"
    /// ip_forward as it was before setUp(nat:), kept in a file so a later run can restore it after a killed one.
    var savedForwardFile: String { "/run/edged-fleet-\(prefix)-ip_forward" }
    func natRule(_ op: String) -> [String] { ["-t", "nat", op, "POSTROUTING", "-s", "\(net).0.0/16", "!", "-o", bridge, "-j", "MASQUERADE"] }

    /// Node i's netns with lo up and eth0 (its veth) on the bridge.
    public func addNode(_ i: Int) throws {
        let ns = namespace(i), veth = hostVeth(i)
        try ip(["netns", "add", ns])
        try ip(["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        try ip(["link", "set", veth, "master", bridge, "up"])
        try ip(["-n", ns, "link", "set", "lo", "up"])
        try ip(["-n", ns, "addr", "add", "\(nodeIP(i))/16", "dev", "eth0"])
        try ip(["-n", ns, "link", "set", "eth0", "up"])
        try ip(["-n", ns, "route", "add", "default", "via", hostIP])
    }

    /// Cuts every node off the server at once (the bridge goes down: packets are dropped, nothing is refused), or
    /// brings them back.
    public func setLinked(_ up: Bool) throws {
        try ip(["link", "set", bridge, up ? "up" : "down"])
    }

    /// Bytes through node i's veth, as the host side counts them: rx = sent by the node, tx = sent to it.
    public func bytes(_ i: Int) -> (fromNode: Int, toNode: Int) {
        func read(_ f: String) -> Int {
            Int((procText("/sys/class/net/\(hostVeth(i))/statistics/\(f)") ?? "").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        }
        return (read("rx_bytes"), read("tx_bytes"))
    }

    /// Deletes every netns and veth of this prefix and the bridge (also those of an earlier, killed run).
    public func tearDown() {
        let namespaces = (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []
        for ns in namespaces where ns.hasPrefix("\(prefix)-") {
            _ = try? runCommand(["ip", "netns", "del", ns], check: false)
        }
        let links = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/class/net")) ?? []
        for link in links where link.hasPrefix("\(prefix)h") || link == bridge {
            _ = try? runCommand(["ip", "link", "del", link], check: false)
        }
        if let forwarding = procText(savedForwardFile) {
            while (try? runCommand(["iptables"] + natRule("-D"), check: false))?.status == 0 {}
            try? forwarding.write(toFile: Self.forwardFile, atomically: false, encoding: .utf8)
            unlink(savedForwardFile)
        }
    }
}

/// One node of the fleet: edged in netns `network.namespace(index)`, launched with nsenter (only the network
/// namespace changes: mounts and cgroups are the host's, as for an edged on its own machine).
public final class FleetNode: @unchecked Sendable {
    public let index: Int
    public let name: String
    public let root: String
    public let cgroupRoot: String
    public let network: FleetNetwork
    public private(set) var process: Process?
    public var socket: String { "\(root)/run/edged.sock" }
    public var logFile: String { "\(root)/edged.log" }
    public var user: String { "system:node:\(name)" }
    public var pid: Int32? { process.map { $0.processIdentifier } }

    /// `root`: a directory of its own (created); `writeImage` writes the busybox archive for the node to import.
    public init(index: Int, name: String, root: String, network: FleetNetwork, writeImage: (String) throws -> Void) throws {
        self.index = index
        self.name = name
        self.root = root
        self.network = network
        cgroupRoot = "\(network.prefix)-\(index)"
        let fm = FileManager.default
        for d in ["state/images/import", "run", "manifests", "logs"] {
            try fm.createDirectory(atPath: "\(root)/\(d)", withIntermediateDirectories: true)
        }
        try writeImage("\(root)/state/images/import/busybox.tar")
        // The node's pod network, inside its netns: bridge fleet0 (each netns has its own) and host-local addresses
        // from the node's /24 with the node's own IPAM store. Without a network config edged, like kubelet, reports
        // the node NotReady (NetworkReady=false).
        try fm.createDirectory(atPath: "\(root)/net.d", withIntermediateDirectories: true)
        try """
            {"cniVersion":"1.0.0","name":"fleet","plugins":[
             {"type":"bridge","bridge":"fleet0","isGateway":true,"ipMasq":false,
              "ipam":{"type":"host-local","dataDir":"\(root)/ipam","ranges":[[{"subnet":"\(network.podSubnet(index))"}]]}},
             {"type":"loopback"}]}
            """.write(toFile: "\(root)/net.d/10-fleet.conflist", atomically: true, encoding: .utf8)
        // The node's address for its Node object and kubelet API; the rest defaults, which the node's own netns
        // makes safe (hub on 127.0.0.1:10261 and 169.254.2.1:10268, kubelet on :10250).
        try "cluster:\n  nodeIP: \(network.nodeIP(index))\ncni:\n  confDir: \(root)/net.d\n  binDirs: [/usr/lib/cni, /opt/cni/bin]\n"
            .write(toFile: "\(root)/config.yaml", atomically: true, encoding: .utf8)
    }

    public func start(bin: String, logLevel: String = "warning") throws {
        let args = ["--net=/run/netns/\(network.namespace(index))", "--", "\(bin)/edged",
                    "--state-dir", "\(root)/state", "--run-dir", "\(root)/run", "--manifest-dir", "\(root)/manifests",
                    "--log-dir", "\(root)/logs", "--socket", socket, "--node-name", name, "--cgroup-root", cgroupRoot,
                    "--config", "\(root)/config.yaml", "--log-level", logLevel, "--stop-pods-on-exit"]
        let p = Process()
        p.executableURL = URL(fileURLWithPath: findExecutable("nsenter") ?? "/usr/bin/nsenter")
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["NOTIFY_SOCKET"] = nil
        p.environment = env
        FileManager.default.createFile(atPath: logFile, contents: nil)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: logFile))
        p.standardOutput = h
        p.standardError = h
        p.standardInput = FileHandle.nullDevice
        try p.run()
        process = p
    }

    /// Waits until edged answers on its socket.
    public func waitForSocket(bin: String, timeout: Double = 60) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let p = process, !p.isRunning {
                throw TestFailure("node \(name): edged exited with \(p.terminationStatus) at start; its log \(logFile):\n\(tail())")
            }
            let argv = ["\(bin)/edgectl", "--socket", socket, "status"]
            if let r = try? await offPool({ try runCommand(argv, check: false) }), r.status == 0 || r.status == 1 { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw TestFailure("node \(name): edged did not answer on \(socket) within \(Int(timeout)) s; its log:\n\(tail())")
    }

    /// `edgectl join` as an operator runs it.
    public func join(bin: String, server: String, token: String, caCertHash: String, nodePool: String) throws {
        let r = try runCommand(["\(bin)/edgectl", "--socket", socket, "join", "--server", server, "--token", token,
                                "--ca-cert-hash", caCertHash, "--node-pool", nodePool], check: false)
        guard r.status == 0 else {
            throw TestFailure("node \(name): edgectl join failed (exit \(r.status)): \(r.stderr)\(r.stdout)\nedged log:\n\(tail())")
        }
    }

    public func tail(_ bytes: Int = 3000) -> String {
        String(((try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "").suffix(bytes))
    }

    /// Processes of this node: edged and its pod monitors (every process whose command line names the node's dir).
    public func processIDs() -> [Int32] { Self.processIDs(root: root) }

    static func processIDs(root: String) -> [Int32] {
        var out: [Int32] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), let cmd = procText("/proc/\(entry)/cmdline") else { continue }
            if cmd.contains(root + "/") { out.append(pid) }
        }
        return out
    }

    /// CPU time (user + system) of edged and its monitors so far, in ms.
    public func cpuMilliseconds() -> Double {
        let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
        var ticks = 0
        for pid in processIDs() {
            guard let stat = procText("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { continue }
            let f = stat[stat.index(after: close)...].split(separator: " ")
            // f[0] is field 3; utime and stime are fields 14 and 15.
            if f.count > 12 { ticks += (Int(f[11]) ?? 0) + (Int(f[12]) ?? 0) }
        }
        return Double(ticks) * 1000 / hz
    }

    /// SIGTERM (edged stops its pods: --stop-pods-on-exit), SIGKILL after `timeout`.
    public func stop(timeout: Double = 20) async {
        guard let p = process, p.isRunning else { return }
        p.terminate()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(50)) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
    }

    /// After stop: kills what is left of the node (monitors, containers in its cgroups), removes its cgroups,
    /// the mounts under its dir and the dir.
    public func cleanUp() {
        if let p = process, p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        Self.cleanUp(root: root, cgroupRoot: cgroupRoot)
    }

    /// cleanUp without the instance (a signal handler's last resort, a killed run's leftovers).
    public static func cleanUp(root: String, cgroupRoot: String) {
        for pid in processIDs(root: root) { kill(pid, SIGKILL) }
        let fm = FileManager.default
        for hierarchy in (try? fm.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
            let dir = "/sys/fs/cgroup/\(hierarchy)/\(cgroupRoot)"
            guard fm.fileExists(atPath: dir) else { continue }
            let entries = (fm.enumerator(atPath: dir)?.allObjects as? [String] ?? []).sorted { $0.count > $1.count }
            for sub in entries where sub.hasSuffix("cgroup.procs") {
                for pid in (procText("\(dir)/\(sub)") ?? "").split(separator: "\n").compactMap({ Int32($0) }) { kill(pid, SIGKILL) }
            }
            for _ in 0..<20 {
                for sub in entries { rmdir("\(dir)/\(sub)") }
                if rmdir(dir) == 0 || errno == ENOENT { break }
                usleep(50_000)
            }
        }
        if let mounts = procText("/proc/self/mountinfo") {
            let points = mounts.split(separator: "\n").compactMap { line -> String? in
                let f = line.split(separator: " ")
                return f.count > 4 && f[4].hasPrefix(root + "/") ? String(f[4]) : nil
            }
            for point in points.sorted(by: { $0.count > $1.count }) { umount2(point, Int32(MNT_DETACH)) }
        }
        try? fm.removeItem(atPath: root)
    }
}

/// One API request of a node, as counted: method, path with query, and the user that made it.
public struct FleetRequest: Sendable, Equatable {
    public let method: String
    public let path: String
    public let user: String
    public init(method: String, path: String, user: String) {
        self.method = method
        self.path = path
        self.user = user
    }

    /// "verb resource[/subresource]" as an audit log would count it: watch, list, get, create, update, patch,
    /// delete, deletecollection.
    public var kind: String {
        let q = path.firstIndex(of: "?")
        let query = q.map { String(path[path.index(after: $0)...]) } ?? ""
        var parts = (q.map { String(path[..<$0]) } ?? path).split(separator: "/").map(String.init)
        if parts.first == "api" { parts.removeFirst(min(2, parts.count)) } else if parts.first == "apis" { parts.removeFirst(min(3, parts.count)) }
        var watch = query.split(separator: "&").contains { $0 == "watch=1" || $0 == "watch=true" }
        if parts.first == "watch" { watch = true; parts.removeFirst() }
        if parts.count >= 3, parts[0] == "namespaces" { parts.removeFirst(2) }
        guard let resource = parts.first else { return "\(method.lowercased()) (discovery)" }
        let name = parts.count > 1 ? parts[1] : nil
        let sub = parts.count > 2 ? "/" + parts[2...].joined(separator: "/") : ""
        let verb: String
        switch method {
        case "GET": verb = watch ? "watch" : (name == nil ? "list" : "get")
        case "POST": verb = "create"
        case "PUT": verb = "update"
        case "PATCH": verb = "patch"
        case "DELETE": verb = name == nil ? "deletecollection" : "delete"
        default: verb = method.lowercased()
        }
        return "\(verb) \(resource)\(sub)"
    }
}

extension KubeAPIServer {
    /// The request log from `from` on (an index into `requests()`), as FleetRequests.
    public func fleetRequests(from: Int = 0) -> [FleetRequest] {
        let all = requests()
        return all[min(from, all.count)...].map { FleetRequest(method: $0.method, path: $0.path, user: $0.user) }
    }
}

/// What the nodes of a fleet cost the API server over a window, and the goals of issue [5].
public struct FleetLoad: Sendable {
    /// Requests per node per minute a node may make at steady state.
    public static let maxRequestsPerNodeMinute = 8.0

    /// kubelet's watches for a node whose pods reference `referencedObjects` distinct configMaps/secrets: its pods
    /// (spec.nodeName), its own Node (metadata.name), the Services (for pod environment variables), and one per
    /// referenced configMap/secret (the default Watch change-detection strategy). pkg/kubelet/kubelet.go,
    /// pkg/kubelet/config/apiserver.go, pkg/kubelet/util/manager/watch_based_manager.go.
    public static func kubeletWatches(referencedObjects: Int) -> Int { 3 + referencedObjects }

    public let nodes: [String]
    public let minutes: Double
    /// Requests per node (by user "system:node:<name>"), and per kind for each node.
    public let requestsByNode: [String: Int]
    public let kindsByNode: [String: [String: Int]]

    public init(nodes: [String], requests: [FleetRequest], minutes: Double) {
        self.nodes = nodes
        self.minutes = minutes
        var byNode: [String: Int] = [:], kinds: [String: [String: Int]] = [:]
        let users = Dictionary(uniqueKeysWithValues: nodes.map { ("system:node:\($0)", $0) })
        for r in requests {
            guard let node = users[r.user] else { continue }
            byNode[node, default: 0] += 1
            kinds[node, default: [:]][r.kind, default: 0] += 1
        }
        requestsByNode = byNode
        kindsByNode = kinds
    }

    public func perMinute(_ node: String) -> Double { Double(requestsByNode[node] ?? 0) / max(minutes, 1e-9) }

    /// Mean over the nodes of requests per node per minute.
    public var requestsPerNodeMinute: Double {
        nodes.isEmpty ? 0 : nodes.map(perMinute).reduce(0, +) / Double(nodes.count)
    }

    /// Per kind, the requests of all nodes together.
    public var kindTotals: [String: Int] {
        var total: [String: Int] = [:]
        for k in kindsByNode.values { for (kind, n) in k { total[kind, default: 0] += n } }
        return total
    }

    /// Per kind, requests per node per minute (mean over the nodes), the busiest first.
    public var kindsPerNodeMinute: [(kind: String, rate: Double)] {
        var total: [String: Int] = [:]
        for k in kindsByNode.values { for (kind, n) in k { total[kind, default: 0] += n } }
        let d = Double(max(nodes.count, 1)) * max(minutes, 1e-9)
        return total.map { ($0.key, Double($0.value) / d) }.sorted { $0.rate != $1.rate ? $0.rate > $1.rate : $0.kind < $1.kind }
    }

    /// What breaks the goals, one line per node and problem (empty: within them): more than
    /// maxRequestsPerNodeMinute requests per minute, or more open watches than kubelet would have.
    public func violations(watches: [String: Int], kubeletWatches: Int) -> [String] {
        var out: [String] = []
        for node in nodes {
            let rate = perMinute(node)
            if rate > Self.maxRequestsPerNodeMinute {
                let top = (kindsByNode[node] ?? [:]).sorted { $0.value > $1.value }.prefix(3)
                    .map { String(format: "%@ %.1f/min", $0.key, Double($0.value) / max(minutes, 1e-9)) }.joined(separator: ", ")
                out.append(String(format: "node %@ made %.1f API requests per minute, over the %.0f of the goal (most: %@)",
                                  node, rate, Self.maxRequestsPerNodeMinute, top))
            }
            let w = watches[node] ?? 0
            if w > kubeletWatches {
                out.append("node \(node) holds \(w) watches open, more than the \(kubeletWatches) kubelet would for the same pods")
            }
        }
        return out
    }
}

/// Open watch streams per node (by user), from the test API server.
public func fleetWatches(_ api: KubeAPIServer, nodes: [String]) -> [String: Int] {
    let byUser = api.openWatchesByUser()
    return Dictionary(uniqueKeysWithValues: nodes.map { ($0, byUser["system:node:\($0)"]?.count ?? 0) })
}

/// Node `node`'s open watch streams by kind ("watch pods", ...).
public func fleetWatchKinds(_ api: KubeAPIServer, node: String) -> [String: Int] {
    var out: [String: Int] = [:]
    for w in api.openWatchesByUser()["system:node:\(node)"] ?? [] {
        var kind = FleetRequest(method: "GET", path: w.path, user: w.user).kind
        if let q = w.path.firstIndex(of: "?"), let sel = w.path[q...].split(separator: "&").first(where: { $0.contains("fieldSelector=") }) {
            kind += " (" + (sel.split(separator: "=", maxSplits: 1).last.map { String($0).removingPercentEncoding ?? String($0) } ?? "") + ")"
        }
        out[kind, default: 0] += 1
    }
    return out
}

/// A pod bound to `node` (as the scheduler would bind it) running busybox `sleep`, as JSON for a POST. With
/// `daemonSet` (name, uid) it is owned by that DaemonSet, as the DaemonSet controller makes its pods.
public func fleetPodJSON(name: String, node: String, image: String, daemonSet: (name: String, uid: String)? = nil) throws -> Data {
    var metadata: [String: Any] = ["name": name, "namespace": "default", "labels": ["app": daemonSet?.name ?? "fleet-app"]]
    if let ds = daemonSet {
        metadata["ownerReferences"] = [["apiVersion": "apps/v1", "kind": "DaemonSet", "name": ds.name, "uid": ds.uid,
                                        "controller": true, "blockOwnerDeletion": true]]
    }
    let pod: [String: Any] = [
        "apiVersion": "v1", "kind": "Pod", "metadata": metadata,
        "spec": ["nodeName": node, "terminationGracePeriodSeconds": 1,
                 "containers": [["name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                                 "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]]]],
    ]
    return try JSONSerialization.data(withJSONObject: pod)
}

/// A node-pool DaemonSet (inert in the test API server: no controller makes its pods; fleetPodJSON does).
public func fleetDaemonSetJSON(name: String, nodePool: String, image: String) throws -> Data {
    let ds: [String: Any] = [
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": ["name": name, "namespace": "default"],
        "spec": [
            "selector": ["matchLabels": ["app": name]],
            "template": [
                "metadata": ["labels": ["app": name]],
                "spec": ["nodeSelector": ["apps.openyurt.io/nodepool": nodePool],
                         "containers": [["name": "main", "image": image, "command": ["sleep", "100000"]]]],
            ],
        ],
    ]
    return try JSONSerialization.data(withJSONObject: ds)
}

/// The node's Ready condition status in the API ("True", "False", "Unknown"; nil: no Node or no condition).
public func fleetNodeReady(_ api: KubeAPIServer, node: String) -> String? {
    fleetReadyCondition(api, node: node)?["status"] as? String
}

/// The node's Ready condition in the API (nil: no Node or no condition).
public func fleetReadyCondition(_ api: KubeAPIServer, node: String) -> [String: Any]? {
    let conditions = (api.objectJSON("/api/v1/nodes/\(node)")?["status"] as? [String: Any])?["conditions"] as? [[String: Any]]
    return conditions?.first { $0["type"] as? String == "Ready" }
}

/// The API server a fleet joins, as FleetCluster uses it: the in-process test API server (TestControlPlane), or
/// any other one given by URL, bootstrap token and CA hash, driven with the real kubectl (KubectlControlPlane).
public protocol FleetControlPlane: Sendable {
    /// The URL nodes join, a bootstrap token "id.secret" and "sha256:<hex>" of the CA.
    var server: String { get }
    var token: String { get }
    var caCertHash: String { get }
    /// The test API server, which counts requests and watches (nil: another server, whose audit log does).
    var testServer: KubeAPIServer? { get }
    /// Creates the node-pool DaemonSet (a real cluster's controller then makes its pods on the fleet's nodes).
    func createDaemonSet(name: String, nodePool: String, image: String) async throws
    /// The pods of one node: the DaemonSet's (the test API server has no controller: made here, owned by it) and
    /// one more, bound to the node.
    func createPods(node: String, daemonSet: String, image: String) async throws
    /// Every node's Ready condition and Running pod count, by node name.
    func nodeStates() async -> [String: (ready: [String: Any]?, runningPods: Int)]
    /// Removes what the fleet made in the cluster (DaemonSet, pods, Nodes); the test API server: shuts it down.
    func cleanUp(nodes: [String]) async
}

/// The in-process test API server, listening on the fleet bridge.
public final class TestControlPlane: FleetControlPlane, @unchecked Sendable {
    public let api: KubeAPIServer
    public let server: String
    public let token = "fleetx.0123456789abcdef"
    public var caCertHash: String { api.caCertHash }
    public var testServer: KubeAPIServer? { api }
    private var daemonSetUID = ""

    public init(listenOn host: String) async throws {
        // Bookmarks every 60 s, as kube-apiserver sends them (the test default, 1 s, would dominate the bytes).
        api = try await KubeAPIServer.start(options: .init(watchBookmarkInterval: .seconds(60), listenHost: host))
        server = "https://\(host):\(api.port)"
        try api.addBootstrapToken(id: "fleetx", secret: "0123456789abcdef")
    }

    public func createDaemonSet(name: String, nodePool: String, image: String) async throws {
        let ds = api.call("POST", "/apis/apps/v1/namespaces/default/daemonsets", body: try fleetDaemonSetJSON(name: name, nodePool: nodePool, image: image))
        guard ds.code == 201, let obj = try? JSONSerialization.jsonObject(with: ds.body) as? [String: Any],
              let uid = (obj["metadata"] as? [String: Any])?["uid"] as? String else {
            throw TestFailure("the test API server refused the DaemonSet: \(String(decoding: ds.body.prefix(300), as: UTF8.self))")
        }
        daemonSetUID = uid
    }

    public func createPods(node: String, daemonSet: String, image: String) async throws {
        for (pod, owner) in [("\(daemonSet)-\(node)", (name: daemonSet, uid: daemonSetUID)), ("fleet-app-\(node)", nil)] as [(String, (name: String, uid: String)?)] {
            let created = api.call("POST", "/api/v1/namespaces/default/pods", body: try fleetPodJSON(name: pod, node: node, image: image, daemonSet: owner))
            guard created.code == 201 else {
                throw TestFailure("the test API server refused pod \(pod): \(String(decoding: created.body.prefix(300), as: UTF8.self))")
            }
        }
    }

    public func nodeStates() async -> [String: (ready: [String: Any]?, runningPods: Int)] {
        fleetNodeStates(nodes: api.call("GET", "/api/v1/nodes").body, pods: api.call("GET", "/api/v1/namespaces/default/pods").body)
    }

    public func cleanUp(nodes: [String]) async { try? await api.shutdown() }
}

/// Another API server (`edged-bench fleet --server`), driven with kubectl and an admin kubeconfig.
public struct KubectlControlPlane: FleetControlPlane {
    public let server: String
    public let token: String
    public let caCertHash: String
    public let kubeconfig: String
    public var testServer: KubeAPIServer? { nil }

    public init(server: String, token: String, caCertHash: String, kubeconfig: String) {
        self.server = server
        self.token = token
        self.caCertHash = caCertHash
        self.kubeconfig = kubeconfig
    }

    func kubectl(_ args: [String], stdin: Data? = nil) async throws -> String {
        var argv = ["kubectl", "--kubeconfig", kubeconfig] + args
        var file: String?
        if let stdin {
            let f = NSTemporaryDirectory() + "edged-fleet-\(UInt32.random(in: 0..<UInt32.max)).json"
            try stdin.write(to: URL(fileURLWithPath: f))
            argv += ["-f", f]
            file = f
        }
        defer { if let file { try? FileManager.default.removeItem(atPath: file) } }
        let command = argv
        let r = try await offPool { try runCommand(command, check: false) }
        guard r.status == 0 else { throw TestFailure("\(args.prefix(3).joined(separator: " ")) failed: \(r.stderr)\(r.stdout)") }
        return r.stdout
    }

    public func createDaemonSet(name: String, nodePool: String, image: String) async throws {
        _ = try await kubectl(["apply", "--validate=false"], stdin: try fleetDaemonSetJSON(name: name, nodePool: nodePool, image: image))
    }

    public func createPods(node: String, daemonSet: String, image: String) async throws {
        _ = try await kubectl(["apply", "--validate=false"], stdin: try fleetPodJSON(name: "fleet-app-\(node)", node: node, image: image))
    }

    public func nodeStates() async -> [String: (ready: [String: Any]?, runningPods: Int)] {
        guard let nodes = try? await kubectl(["get", "nodes", "-o", "json"]),
              let pods = try? await kubectl(["get", "pods", "-n", "default", "-o", "json"]) else { return [:] }
        return fleetNodeStates(nodes: Data(nodes.utf8), pods: Data(pods.utf8))
    }

    public func cleanUp(nodes: [String]) async {
        _ = try? await kubectl(["delete", "daemonset", "-n", "default", FleetCluster.daemonSet, "--wait=false"])
        _ = try? await kubectl(["delete", "pods", "-n", "default", "--wait=false"] + nodes.map { "fleet-app-\($0)" })
        _ = try? await kubectl(["delete", "nodes", "--wait=false"] + nodes)
    }
}

/// Ready conditions and Running pod counts by node, from a NodeList and a PodList.
func fleetNodeStates(nodes: Data, pods: Data) -> [String: (ready: [String: Any]?, runningPods: Int)] {
    var out: [String: (ready: [String: Any]?, runningPods: Int)] = [:]
    func items(_ d: Data) -> [[String: Any]] { ((try? JSONSerialization.jsonObject(with: d)) as? [String: Any])?["items"] as? [[String: Any]] ?? [] }
    for n in items(nodes) {
        guard let name = (n["metadata"] as? [String: Any])?["name"] as? String else { continue }
        let conditions = (n["status"] as? [String: Any])?["conditions"] as? [[String: Any]]
        out[name] = (conditions?.first { $0["type"] as? String == "Ready" }, 0)
    }
    for p in items(pods) {
        guard let node = (p["spec"] as? [String: Any])?["nodeName"] as? String,
              (p["status"] as? [String: Any])?["phase"] as? String == "Running", let s = out[node] else { continue }
        out[node] = (s.ready, s.runningPods + 1)
    }
    return out
}

/// N nodes joined to one API server (the in-process test API server on the fleet bridge unless `controlPlane` makes
/// another), each with two pods: one of a node-pool DaemonSet and one more. `start` returns once every node is Ready
/// and has both pods Running in the API.
public final class FleetCluster: @unchecked Sendable {
    public static let nodePool = "fleet"
    public static let daemonSet = "fleet-agent"
    public let controlPlane: any FleetControlPlane
    /// The test API server (nil when the fleet joined another one).
    public var api: KubeAPIServer? { controlPlane.testServer }
    public let network: FleetNetwork
    public let nodes: [FleetNode]
    public let bin: String
    /// From the first edged start to every node Ready and every pod Running.
    public private(set) var joinSeconds = 0.0
    /// The nodes' requests over that time (test API server only), and the bootstrap token's (shared by all nodes).
    public private(set) var joinLoad: FleetLoad?
    public private(set) var joinBootstrapRequests = 0
    private let root: String
    private let savedInotifyInstances: String?
    static let inotifyFile = "/proc/sys/fs/inotify/max_user_instances"

    private init(controlPlane: any FleetControlPlane, network: FleetNetwork, nodes: [FleetNode], bin: String, root: String, savedInotifyInstances: String?) {
        self.controlPlane = controlPlane
        self.network = network
        self.nodes = nodes
        self.bin = bin
        self.root = root
        self.savedInotifyInstances = savedInotifyInstances
    }

    public var nodeNames: [String] { nodes.map(\.name) }

    /// Sets up the network and the control plane (`controlPlane`; default: a test API server on the bridge; with
    /// `nat` the nodes reach beyond the host through it), starts and joins `count` nodes (`parallel` at a time) and
    /// creates their pods. On any failure everything made so far is removed before the error is thrown.
    public static func start(count: Int, prefix: String, net: String, bin: String, root: String, imageReference: String,
                             parallel: Int = 4, logLevel: String = "warning", nat: Bool = false,
                             controlPlane makeControlPlane: (@Sendable (FleetNetwork) async throws -> any FleetControlPlane)? = nil,
                             writeImage: @escaping @Sendable (String) throws -> Void,
                             progress: @escaping @Sendable (String) -> Void = { _ in }) async throws -> FleetCluster {
        for tool in ["edged", "edgectl", "edged-monitor"] where !FileManager.default.isExecutableFile(atPath: "\(bin)/\(tool)") {
            throw TestFailure("no \(bin)/\(tool): build it first (swift build --product \(tool))")
        }
        let network = FleetNetwork(prefix: prefix, net: net)
        // Each edged holds inotify instances (manifest dir, ...); the default 128 per user runs out near 40 nodes.
        let saved = procText(inotifyFile)?.trimmingCharacters(in: .whitespacesAndNewlines)
        if let s = saved, let v = Int(s), v < count * 8 + 128 {
            try? "\(count * 8 + 128)\n".write(toFile: inotifyFile, atomically: false, encoding: .utf8)
        }
        var nodes: [FleetNode] = []
        var plane: (any FleetControlPlane)?
        func undo() async {
            await withTaskGroup(of: Void.self) { g in for n in nodes { g.addTask { await n.stop() } } }
            for n in nodes { n.cleanUp() }
            network.tearDown()
            await plane?.cleanUp(nodes: nodes.map(\.name))
            if let saved { try? "\(saved)\n".write(toFile: inotifyFile, atomically: false, encoding: .utf8) }
            try? FileManager.default.removeItem(atPath: root)
        }
        do {
            try network.setUp(nat: nat)
            let cp: any FleetControlPlane
            if let makeControlPlane { cp = try await makeControlPlane(network) } else { cp = try await TestControlPlane(listenOn: network.hostIP) }
            plane = cp
            try await cp.createDaemonSet(name: daemonSet, nodePool: nodePool, image: imageReference)
            for i in 0..<count {
                try network.addNode(i)
                nodes.append(try FleetNode(index: i, name: "\(prefix)-\(i)", root: "\(root)/node-\(i)", network: network, writeImage: writeImage))
            }
            progress("network and \(count) node dirs ready; starting edged")
            let t0 = ContinuousClock.now
            let firstRequest = cp.testServer?.requests().count ?? 0
            let joined = FleetCounter()
            let list = nodes
            try await withThrowingTaskGroup(of: Void.self) { group in
                var next = 0
                func add() {
                    let node = list[next]
                    next += 1
                    group.addTask {
                        try node.start(bin: bin, logLevel: logLevel)
                        try await node.waitForSocket(bin: bin)
                        try await offPool {
                            try node.join(bin: bin, server: cp.server, token: cp.token, caCertHash: cp.caCertHash, nodePool: nodePool)
                        }
                        try await cp.createPods(node: node.name, daemonSet: daemonSet, image: imageReference)
                        let n = joined.increment()
                        if n % 10 == 0 || n == list.count { progress("\(n) of \(list.count) nodes joined") }
                    }
                }
                for _ in 0..<min(parallel, list.count) { add() }
                while try await group.next() != nil {
                    if next < list.count { add() }
                }
            }
            // Every node Ready and both of its pods Running.
            let deadline = ContinuousClock.now + .seconds(120 + count * 2)
            var waiting: [String] = []
            while ContinuousClock.now < deadline {
                let states = await cp.nodeStates()
                waiting = []
                for n in list {
                    let s = states[n.name]
                    if let c = s?.ready, c["status"] as? String != "True" {
                        waiting.append("node \(n.name) Ready=\(c["status"] ?? "?") (\(c["reason"] ?? ""): \(c["message"] ?? ""))")
                    } else if s?.ready == nil {
                        waiting.append("node \(n.name) has no Ready condition")
                    }
                    if (s?.runningPods ?? 0) < 2 { waiting.append("node \(n.name) runs \(s?.runningPods ?? 0) of its 2 pods") }
                }
                if waiting.isEmpty { break }
                try await Task.sleep(for: .milliseconds(500))
            }
            guard waiting.isEmpty else {
                let first = waiting.first!
                let node = list.first { first.hasPrefix("node \($0.name) ") }
                throw TestFailure("the fleet did not come up: \(waiting.count) left, e.g. \(waiting.prefix(5).joined(separator: "; "))" +
                                  (node.map { "\nlog of \($0.name) (\($0.logFile)):\n\($0.tail())" } ?? ""))
            }
            let cluster = FleetCluster(controlPlane: cp, network: network, nodes: nodes, bin: bin, root: root, savedInotifyInstances: saved)
            cluster.joinSeconds = MemoryHealth.seconds(ContinuousClock.now - t0)
            if let api = cp.testServer {
                let requests = api.fleetRequests(from: firstRequest)
                cluster.joinLoad = FleetLoad(nodes: cluster.nodeNames, requests: requests, minutes: cluster.joinSeconds / 60)
                cluster.joinBootstrapRequests = requests.filter { $0.user.hasPrefix("system:bootstrap:") }.count
            }
            return cluster
        } catch {
            await undo()
            throw error
        }
    }

    /// Every node's Ready status ("True", "False", "Unknown"; nil: none), by node name.
    public func readiness() async -> [String: String?] {
        let states = await controlPlane.nodeStates()
        return Dictionary(uniqueKeysWithValues: nodeNames.map { ($0, states[$0]?.ready?["status"] as? String) })
    }

    /// Stops every node (its pods with it), removes their dirs, cgroups and mounts, the network, what the fleet
    /// made in the cluster (or the test API server), and restores the inotify limit.
    public func tearDown() async {
        await withTaskGroup(of: Void.self) { g in for n in nodes { g.addTask { await n.stop() } } }
        for n in nodes { n.cleanUp() }
        network.tearDown()
        await controlPlane.cleanUp(nodes: nodeNames)
        if let saved = savedInotifyInstances { try? "\(saved)\n".write(toFile: Self.inotifyFile, atomically: false, encoding: .utf8) }
        try? FileManager.default.removeItem(atPath: root)
    }

    /// Where the counters stand now: the request log's length, each node's veth bytes and CPU time.
    public func mark() -> FleetMark {
        FleetMark(requestIndex: api?.requests().count ?? 0, time: .now, bytes: nodes.map { network.bytes($0.index) },
                  cpuMs: nodes.map { $0.cpuMilliseconds() })
    }

    /// The nodes' API requests since `mark`, over the time since it (none counted on a server other than the test
    /// API server).
    public func load(since mark: FleetMark, until end: FleetMark? = nil) -> FleetLoad {
        let end = end ?? self.mark()
        let requests = api.map { Array($0.fleetRequests(from: mark.requestIndex).prefix(end.requestIndex - mark.requestIndex)) } ?? []
        return FleetLoad(nodes: nodeNames, requests: requests, minutes: MemoryHealth.seconds(end.time - mark.time) / 60)
    }

    /// A synchronous last resort for a signal handler, also while `start` runs: kills every process of the
    /// fleet's nodes, removes their cgroups, mounts and dirs (those `start` names "<root>/node-<i>" and
    /// "<prefix>-<i>"), the network, and restores the inotify limit.
    public static func emergencyTearDown(prefix: String, net: String, root: String, count: Int, inotifyInstances: String?) {
        for i in 0..<count { FleetNode.cleanUp(root: "\(root)/node-\(i)", cgroupRoot: "\(prefix)-\(i)") }
        FleetNetwork(prefix: prefix, net: net).tearDown()
        if let saved = inotifyInstances { try? "\(saved)\n".write(toFile: inotifyFile, atomically: false, encoding: .utf8) }
        try? FileManager.default.removeItem(atPath: root)
    }

    /// max_user_instances now (to give emergencyTearDown before `start` raises it).
    public static var inotifyInstances: String? { procText(inotifyFile)?.trimmingCharacters(in: .whitespacesAndNewlines) }
}

/// Runs blocking work (a child process) off Swift's cooperative pool, which has only as many threads as cores.
public func offPool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { cont in
        DispatchQueue.global().async { cont.resume(with: Result { try work() }) }
    }
}

/// Counters at one moment (FleetCluster.mark()).
public struct FleetMark: Sendable {
    public let requestIndex: Int
    public let time: ContinuousClock.Instant
    /// Per node (in node order): bytes from and to the node through its veth.
    public let bytes: [(fromNode: Int, toNode: Int)]
    /// Per node: CPU ms of edged and its monitors so far.
    public let cpuMs: [Double]

    /// Bytes both ways per node per minute between two marks (mean over the nodes).
    public static func bytesPerNodeMinute(_ a: FleetMark, _ b: FleetMark) -> Double {
        let minutes = MemoryHealth.seconds(b.time - a.time) / 60
        let total = zip(a.bytes, b.bytes).map { ($1.fromNode - $0.fromNode) + ($1.toNode - $0.toNode) }.reduce(0, +)
        return Double(total) / Double(max(a.bytes.count, 1)) / max(minutes, 1e-9)
    }

    /// CPU ms per node per minute between two marks (mean over the nodes).
    public static func cpuMsPerNodeMinute(_ a: FleetMark, _ b: FleetMark) -> Double {
        let minutes = MemoryHealth.seconds(b.time - a.time) / 60
        let total = zip(a.cpuMs, b.cpuMs).map { $1 - $0 }.reduce(0, +)
        return total / Double(max(a.cpuMs.count, 1)) / max(minutes, 1e-9)
    }
}

/// A counter shared by concurrent tasks.
final class FleetCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func increment() -> Int { lock.withLock { value += 1; return value } }
}
