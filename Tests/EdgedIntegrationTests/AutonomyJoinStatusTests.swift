// Node autonomy on the node side, end to end with the real edged, edgectl and kubectl: `edgectl join` registers the
// Node with node.openyurt.io/autonomy-duration (default "0", `--autonomy=DURATION`, none with `--no-autonomy`), the
// annotation is the operator's once the Node exists (edged restarts and re-joins leave it alone; a Node edged
// creates again gets the join's setting), and `edgectl status` shows the setting and says DEGRADED while a bound
// pod lacks the autonomy tolerations past `cluster.autonomyGraceSeconds`, or when the annotation's value is bad.

import EdgedCluster
import EdgedControl
import EdgedCore
import EdgedDaemon
import EdgedTestSupport
import Foundation
import Testing

private let durationKey = NodeAutonomy.durationAnnotation

private func annotations(_ node: [String: Any]) -> [String: String] {
    path(node, "metadata", "annotations") as? [String: String] ?? [:]
}

extension ClusterFixture {
    /// Polls `edgectl status` until `condition` holds for its result; returns that result.
    func waitForStatus(timeout: TimeInterval = 20, _ what: String,
                       _ condition: (CommandResult) -> Bool) async throws -> CommandResult {
        let deadline = Date().addingTimeInterval(timeout)
        var last: CommandResult?
        while Date() < deadline {
            let r = try edged.edgectl(["status"], check: false)
            last = r
            if condition(r) { return r }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw TestFailure("timed out waiting for edgectl status to show \(what); last (exit \(last?.status ?? -1)):\n\(last?.stdout ?? "")\n\(last?.stderr ?? "")")
    }

    /// `cluster.autonomy` of `edgectl status --json`.
    func autonomyJSON() throws -> [String: Any]? {
        path(try edged.status(), "cluster", "autonomy") as? [String: Any]
    }
}

@Suite(.serialized, .enabled(if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge")
                                && findExecutable("kubectl") != nil, "needs root, CNI plugins and kubectl"))
struct AutonomyJoinStatusTests {
    @Test func aJoinedNodeIsAutonomousAndStatusWarnsUntilItsPodsCarryIt() async throws {
      try await withCluster(name: "autojoin", subnet: "10.250.51.0/24", clusterSettings: "  autonomyGraceSeconds: 2") { f in
        try f.edged.start()
        let joined = try f.join()
        #expect(joined.stdout.contains("autonomy: node.openyurt.io/autonomy-duration=0 on the Node (forever)"), "\(joined.stdout)")
        let node = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }
        #expect(annotations(node)[durationKey] == "0", "\(annotations(node))")
        let forever = "Autonomy:  on, forever (node.openyurt.io/autonomy-duration=0): the cloud keeps this node's pods through an outage of any length\n"
        let healthy = try await f.waitForStatus("the autonomy line") { $0.stdout.contains(forever) }
        #expect(healthy.status == 0, "\(healthy.stderr)")
        let json = try #require(try f.autonomyJSON())
        #expect(json["setting"] as? String == "on" && json["value"] as? String == "0" && json["seconds"] == nil)
        #expect(json["graceSeconds"] as? Int == 2)

        // A pod bound to the node gets DefaultTolerationSeconds' 300 s tolerations; with no autonomy controller to
        // reconcile them, the node says DEGRADED once the grace has passed.
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("web", node: f.node, command: "sleep 3600"))
        let warned = try await f.waitForStatus("the autonomy warning") { $0.stderr.contains("DEGRADED: node is autonomous") }
        #expect(warned.status == 1)
        #expect(warned.stderr.contains("DEGRADED: node is autonomous (node.openyurt.io/autonomy-duration=0) but 1 pod still carries tolerations that autonomy has not set (default/web: unreachable 300 s, not-ready 300 s): no autonomy controller has reconciled it within 2 s, so the cloud deletes it 300 s into an outage; deploy it: kubectl apply -f deploy/autonomy-controller.yaml"),
                "\(warned.stderr)")
        let unreconciled = try #require(try f.autonomyJSON()?["unreconciledPods"] as? [[String: Any]])
        #expect(unreconciled.map { $0["name"] as? String } == ["web"] && (unreconciled.first?["forSeconds"] as? Int ?? 0) >= 2)

        // The controller's change (tolerationSeconds only, which pod update validation allows) clears it.
        let pod = try f.kubectl.json(["get", "pod", "web"])
        var tolerations = path(pod, "spec", "tolerations") as? [[String: Any]] ?? []
        #expect(tolerations.count == 2, "\(tolerations)")
        for i in tolerations.indices where NodeAutonomy.taintKeys.contains(tolerations[i]["key"] as? String ?? "") {
            tolerations[i]["tolerationSeconds"] = nil
        }
        let patch = String(decoding: try JSONSerialization.data(withJSONObject: ["spec": ["tolerations": tolerations]]), as: UTF8.self)
        try f.kubectl.run(["patch", "pod", "web", "--type=merge", "-p", patch])
        let cleared = try await f.waitForStatus("the warning cleared") { !$0.stderr.contains("node is autonomous") }
        #expect(cleared.stdout.contains(forever), "\(cleared.stdout)")
        #expect((try f.autonomyJSON()?["unreconciledPods"] as? [Any])?.isEmpty == true)

        // The operator writes a bad value: status says what is wrong and how to fix it.
        try f.kubectl.run(["annotate", "node", f.node, "\(durationKey)=banana", "--overwrite"])
        let bad = try await f.waitForStatus("the bad annotation") { $0.stderr.contains("banana") }
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("DEGRADED: node.openyurt.io/autonomy-duration=\"banana\" is not valid (not a duration): write \"0\" for forever or a duration such as \"72h\" or \"90m\"; the node is treated as not autonomous until then (kubectl annotate node \(f.node) node.openyurt.io/autonomy-duration=0 --overwrite)"),
                "\(bad.stderr)")
        #expect(bad.stdout.contains("Autonomy:  off, node.openyurt.io/autonomy-duration=banana is not valid:"), "\(bad.stdout)")
        #expect(try f.autonomyJSON()?["setting"] as? String == "invalid")

        // 72h from the operator, then an edged restart: the annotation is the operator's and stays.
        try f.kubectl.run(["annotate", "node", f.node, "\(durationKey)=72h", "--overwrite"])
        let line72h = "Autonomy:  on, 72h (node.openyurt.io/autonomy-duration=72h): the cloud keeps this node's pods for 72h of outage"
        _ = try await f.waitForStatus("72h") { $0.stdout.contains(line72h) }
        f.edged.stop()
        try f.edged.start()
        _ = try await f.waitForStatus("registered again with 72h") { r in
            r.stdout.contains(line72h) && ((try? f.edged.status()).flatMap { path($0, "cluster", "registered") as? Bool } ?? false)
        }
        #expect(annotations(try f.kubectl.json(["get", "node", f.node]))[durationKey] == "72h")
        // The pod carries forever where the node now says 72h: not reconciled for this setting.
        let again = try await f.waitForStatus("the warning for 72h") { $0.stderr.contains("node is autonomous") }
        #expect(again.stderr.contains("node is autonomous (node.openyurt.io/autonomy-duration=72h) but 1 pod still carries tolerations that autonomy has not set (default/web: unreachable forever, not-ready forever)"), "\(again.stderr)")

        // Joining again, even with --no-autonomy, does not touch the Node's annotation.
        let rejoin = try f.join(["--no-autonomy"])
        #expect(rejoin.stdout.contains("already joined") && rejoin.stdout.contains("the Node's annotation stays as it is"), "\(rejoin.stdout)")
        try await Task.sleep(for: .seconds(1))
        #expect(annotations(try f.kubectl.json(["get", "node", f.node]))[durationKey] == "72h")
      }
    }

    @Test func joinWithoutAutonomyOrWithADurationAndABadValueJoinsNothing() async throws {
      try await withCluster(name: "autoflag", subnet: "10.250.52.0/24") { f in
        try f.edged.start()

        // A bad value: the error says what to give, and nothing is joined (edgectl checks it, and so does edged
        // for a client that does not).
        let bad = try f.join(["--autonomy=banana"], check: false)
        #expect(bad.status == 2 && bad.stderr.contains("--autonomy=banana is not valid (not a duration): give --autonomy or --autonomy=0 for forever"), "\(bad.stderr)")
        let client = ControlClient(socketPath: f.edged.socket)
        await #expect(throws: ControlError(status: 400, message: JoinRequest.autonomyProblem("banana")!)) {
            _ = try await client.join(JoinRequest(server: f.api.url, token: f.token, caCertHashes: [f.api.caCertHash], autonomy: "banana"))
        }
        #expect(try f.edged.status()["mode"] as? String == "standalone")
        #expect(!f.api.requests().contains { $0.path.contains("certificatesigningrequests") }, "a CSR was made for a refused join")
        #expect(try f.kubectl.run(["get", "node", f.node], check: false).status != 0)

        // --no-autonomy: no annotation, and status says what that means and how to turn it on.
        let joined = try f.join(["--no-autonomy"])
        #expect(joined.stdout.contains("autonomy: off (--no-autonomy)"), "\(joined.stdout)")
        let node = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }
        #expect(annotations(node)[durationKey] == nil && annotations(node)[NodeAutonomy.legacyAnnotation] == nil, "\(annotations(node))")
        let off = try await f.waitForStatus("autonomy off") { $0.stdout.contains("Autonomy:  off") }
        #expect(off.stdout.contains("Autonomy:  off: the cloud deletes this node's pods once their tolerations run out (300 s by default) after it loses the node; enable with kubectl annotate node \(f.node) node.openyurt.io/autonomy-duration=0\n"), "\(off.stdout)")
        #expect(off.status == 0, "\(off.stderr)")
        #expect(try f.autonomyJSON()?["setting"] as? String == "off")

        // Joining again with `--autonomy 72h` keeps the setting for the next registration; the Node stays as it is.
        let rejoin = try f.join(["--autonomy", "72h"])
        #expect(rejoin.stdout.contains("already joined"), "\(rejoin.stdout)")
        #expect(annotations(try f.kubectl.json(["get", "node", f.node]))[durationKey] == nil)
        // The Node deleted while edged is down: edged creates it again, with the join's setting.
        f.edged.stop()
        try f.kubectl.run(["delete", "node", f.node])
        try f.edged.start()
        let recreated = try await f.kubectl.wait(["get", "node", f.node], "node registered again") { condition($0, "Ready") == "True" }
        #expect(annotations(recreated)[durationKey] == "72h", "\(annotations(recreated))")
        _ = try await f.waitForStatus("autonomy 72h") {
            $0.stdout.contains("Autonomy:  on, 72h (node.openyurt.io/autonomy-duration=72h): the cloud keeps this node's pods for 72h of outage")
        }
      }
    }
}

/// The parts that need no root: the grace setting and the stored join setting.
@Suite struct AutonomySettingsTests {
    @Test func autonomyGraceSecondsIsAClusterSetting() throws {
        #expect(try EdgedConfig.parse("", source: "c.yaml").cluster.autonomyGraceSeconds == 60)
        #expect(try EdgedConfig.parse("cluster:\n  autonomyGraceSeconds: 0\n", source: "c.yaml").cluster.autonomyGraceSeconds == 0)
        #expect(throws: EdgedError(.invalidConfig, "c.yaml: cluster.autonomyGraceSeconds must be 0 or more")) {
            try EdgedConfig.parse("cluster:\n  autonomyGraceSeconds: -1\n", source: "c.yaml")
        }
    }

    @Test func theJoinSettingIsStoredAndAnOldFileMeansTheDefault() throws {
        let dir = try TempDir("edged-registration")
        defer { dir.remove() }
        // node.json written before autonomy existed: the default, forever.
        try #"{"labels": {"site": "a"}, "taints": []}"#.write(toFile: dir.sub(NodeRegistration.fileName), atomically: true, encoding: .utf8)
        #expect(try NodeRegistration.load(dir: dir.path)?.autonomy == "0")
        for value in [nil, "0", "72h"] as [String?] {
            try NodeRegistration(labels: ["site": "a"], nodePool: "p", autonomy: value).save(dir: dir.path)
            #expect(try NodeRegistration.load(dir: dir.path) == NodeRegistration(labels: ["site": "a"], nodePool: "p", autonomy: value))
        }
        // --no-autonomy is written as null, not left out (which would read back as the default).
        let text = try String(contentsOfFile: dir.sub(NodeRegistration.fileName), encoding: .utf8)
        #expect(text.contains("72h"))
        try NodeRegistration(autonomy: nil).save(dir: dir.path)
        #expect(try String(contentsOfFile: dir.sub(NodeRegistration.fileName), encoding: .utf8).contains(#""autonomy":null"#))
    }
}
