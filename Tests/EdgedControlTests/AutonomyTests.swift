// Node autonomy on the node side: what `edgectl status` says about the Node's autonomy annotation and the pods'
// tolerations (AutonomyReport), how `edgectl join --autonomy[=DURATION]` / `--no-autonomy` are read, and how the
// setting travels to the daemon (JoinRequest).

@testable import EdgedControl
import EdgedCore
import Foundation
import Testing

/// A pod from JSON (metadata, spec and status as the API server has them).
private func pod(_ name: String, uid: String? = nil, tolerations: String = "[]", meta: String = "", phase: String = "Running") throws -> Pod {
    let json = """
        {"metadata": {"name": "\(name)", "namespace": "default", "uid": "\(uid ?? "uid-\(name)")"\(meta)},
         "spec": {"nodeName": "gw-1", "containers": [{"name": "main", "image": "busybox"}], "tolerations": \(tolerations)},
         "status": {"phase": "\(phase)"}}
        """
    return try JSONDecoder().decode(Pod.self, from: Data(json.utf8))
}

/// The tolerations DefaultTolerationSeconds gives a pod: both taints, 300 s.
private let defaultTolerations = """
    [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
     {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
    """

/// What the autonomy controller leaves a pod of a node autonomous forever with.
private let foreverTolerations = """
    [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
     {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]
    """

private let duration = NodeAutonomy.durationAnnotation

@Suite struct AutonomyReportTests {
    @Test func foreverLineAndNoProblemOnceThePodsCarryTheTolerations() throws {
        let report = AutonomyReport(annotations: [duration: "0"], pods: [try pod("web", tolerations: foreverTolerations)],
                                    graceSeconds: 60)
        #expect(report.setting == "on" && report.duration == "forever" && report.seconds == nil && report.value == "0")
        #expect(report.annotation == duration && report.invalidReason == nil)
        #expect(report.unreconciledPods.isEmpty)
        #expect(report.line(nodeName: "gw-1") == "Autonomy:  on, forever (node.openyurt.io/autonomy-duration=0): the cloud keeps this node's pods through an outage of any length")
        #expect(report.problems(nodeName: "gw-1").isEmpty)
    }

    @Test func durationLineGivesTheSecondsTheCloudWaits() throws {
        let report = AutonomyReport(annotations: [duration: "72h"], pods: [], graceSeconds: 60)
        #expect(report.setting == "on" && report.duration == "72h" && report.seconds == 259_200)
        #expect(report.line(nodeName: "gw-1") == "Autonomy:  on, 72h (node.openyurt.io/autonomy-duration=72h): the cloud keeps this node's pods for 72h of outage")
        // The value as written, the duration as the cloud counts it.
        let mixed = AutonomyReport(annotations: [duration: "1h30m"], pods: [], graceSeconds: 60)
        #expect(mixed.line(nodeName: "gw-1").hasPrefix("Autonomy:  on, 90m (node.openyurt.io/autonomy-duration=1h30m): the cloud keeps this node's pods for 90m of outage"))
        #expect(mixed.seconds == 5400)
    }

    @Test func offSaysWhatTheCloudDoesAndHowToTurnItOn() throws {
        // A pod with the default tolerations is no problem on a node that is not autonomous.
        let report = AutonomyReport(annotations: ["other": "x"], pods: [try pod("web", tolerations: defaultTolerations)],
                                    ages: ["uid-web": 3600], graceSeconds: 60)
        #expect(report.setting == "off" && report.annotation == nil && report.value == nil && report.duration == nil)
        #expect(report.unreconciledPods.isEmpty && report.problems(nodeName: "gw-1").isEmpty)
        #expect(report.line(nodeName: "gw-1") == "Autonomy:  off: the cloud deletes this node's pods once their tolerations run out (300 s by default) after it loses the node; enable with kubectl annotate node gw-1 node.openyurt.io/autonomy-duration=0")
        #expect(AutonomyReport(annotations: nil, pods: [], graceSeconds: 60) == AutonomyReport(annotations: [:], pods: [], graceSeconds: 60))
    }

    @Test func theOlderOpenYurtAnnotationCounts() throws {
        let on = AutonomyReport(annotations: [NodeAutonomy.legacyAnnotation: "true"], pods: [], graceSeconds: 60)
        #expect(on.line(nodeName: "gw-1") == "Autonomy:  on, forever (node.beta.openyurt.io/autonomy=true): the cloud keeps this node's pods through an outage of any length")
        let off = AutonomyReport(annotations: [NodeAutonomy.legacyAnnotation: "false"], pods: [], graceSeconds: 60)
        #expect(off.setting == "off")
        #expect(off.line(nodeName: "gw-1").hasPrefix("Autonomy:  off (node.beta.openyurt.io/autonomy=false): the cloud deletes"))
        #expect(off.line(nodeName: "gw-1").hasSuffix("enable with kubectl annotate node gw-1 node.openyurt.io/autonomy-duration=0"))
        // autonomy-duration wins over the older annotation.
        let both = AutonomyReport(annotations: [NodeAutonomy.legacyAnnotation: "false", duration: "72h"], pods: [], graceSeconds: 60)
        #expect(both.annotation == duration && both.duration == "72h")
    }

    @Test func anInvalidValueIsADegradedReasonWithTheFix() throws {
        let report = AutonomyReport(annotations: [duration: "banana"], pods: [try pod("web", tolerations: defaultTolerations)],
                                    ages: ["uid-web": 3600], graceSeconds: 60)
        let expected = #"node.openyurt.io/autonomy-duration="banana" is not valid (not a duration): write "0" for forever or a duration such as "72h" or "90m"; the node is treated as not autonomous until then"#
        #expect(report.setting == "invalid" && report.invalidReason == expected && report.value == "banana")
        // The node counts as not autonomous: its pods are not expected to carry anything.
        #expect(report.unreconciledPods.isEmpty && report.seconds == nil && report.duration == nil)
        #expect(report.problems(nodeName: "gw-1") == [expected + " (kubectl annotate node gw-1 node.openyurt.io/autonomy-duration=0 --overwrite)"])
        #expect(report.line(nodeName: "gw-1") == "Autonomy:  off, node.openyurt.io/autonomy-duration=banana is not valid: the cloud deletes this node's pods once their tolerations run out (300 s by default) after it loses the node; fix with kubectl annotate node gw-1 node.openyurt.io/autonomy-duration=0 --overwrite")
        let legacy = AutonomyReport(annotations: [NodeAutonomy.legacyAnnotation: "yes"], pods: [], graceSeconds: 60)
        #expect(legacy.setting == "invalid")
        #expect(legacy.problems(nodeName: "gw-1").first?.hasPrefix("node.beta.openyurt.io/autonomy=\"yes\" is not valid (it must be \"true\" or \"false\")") == true)
    }

    @Test func podsWithoutTheAutonomyTolerationsWarnOnlyAfterTheGrace() throws {
        let daemonSet = #", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "uid": "d1", "controller": true}]"#
        let mirror = #", "annotations": {"kubernetes.io/config.mirror": "abc"}"#
        let terminating = #", "deletionTimestamp": "2026-01-01T00:00:00Z""#
        let pods = [
            try pod("web", tolerations: defaultTolerations),
            try pod("done", tolerations: defaultTolerations, phase: "Succeeded"),
            try pod("ds", tolerations: defaultTolerations, meta: daemonSet),
            try pod("static", tolerations: defaultTolerations, meta: mirror),
            try pod("leaving", tolerations: defaultTolerations, meta: terminating),
            try pod("kept", tolerations: foreverTolerations),
        ]
        let fresh = AutonomyReport(annotations: [duration: "0"], pods: pods, ages: ["uid-web": 10], graceSeconds: 60)
        #expect(fresh.unreconciledPods == [UnreconciledPod(namespace: "default", name: "web", tolerations: "unreachable 300 s, not-ready 300 s",
                                                           deletedAfterSeconds: 300, forSeconds: 10)])
        #expect(fresh.problems(nodeName: "gw-1").isEmpty, "within the grace the controller may still be at work")
        #expect(fresh.line(nodeName: "gw-1").hasSuffix("; 1 pod not reconciled by the autonomy controller yet"))

        let late = AutonomyReport(annotations: [duration: "0"], pods: pods, ages: ["uid-web": 60], graceSeconds: 60)
        #expect(late.problems(nodeName: "gw-1") == ["node is autonomous (node.openyurt.io/autonomy-duration=0) but 1 pod still carries tolerations that autonomy has not set (default/web: unreachable 300 s, not-ready 300 s): no autonomy controller has reconciled it within 60 s, so the cloud deletes it 300 s into an outage; deploy it: kubectl apply -f deploy/autonomy-controller.yaml (README \"Node autonomy\")"])

        // A pod that carries forever where the node says 72h is not reconciled either.
        let changed = AutonomyReport(annotations: [duration: "72h"], pods: pods, ages: ["uid-kept": 61, "uid-web": 61], graceSeconds: 60)
        #expect(changed.unreconciledPods.map(\.name) == ["kept", "web"])
        #expect(changed.unreconciledPods.first?.deletedAfterSeconds == nil)
        #expect(changed.problems(nodeName: "gw-1").first?.contains("2 pods still carry tolerations that autonomy has not set (default/kept: unreachable forever, not-ready forever; default/web: unreachable 300 s, not-ready 300 s): no autonomy controller has reconciled them within 60 s, so the cloud deletes the first of them 300 s into an outage") == true)
    }

    @Test func manyPodsAreListedShortAndAPodWithoutTolerationsGoesAtOnce() throws {
        var pods = try (1...4).map { try pod("p\($0)", tolerations: defaultTolerations) }
        pods.append(try pod("bare"))
        let ages = Dictionary(uniqueKeysWithValues: pods.map { ($0.metadata.uid!, Int64(120)) })
        let report = AutonomyReport(annotations: [duration: "0"], pods: pods, ages: ages, graceSeconds: 60)
        let problem = try #require(report.problems(nodeName: "gw-1").first)
        #expect(problem.contains("but 5 pods still carry tolerations that autonomy has not set (default/bare: unreachable: none, not-ready: none; default/p1: unreachable 300 s, not-ready 300 s; default/p2: unreachable 300 s, not-ready 300 s; and 2 more)"), "\(problem)")
        #expect(problem.contains("so the cloud deletes the first of them as soon as it loses the node"), "\(problem)")
    }

    @Test func deletionDelayIsTheFirstMatchingTolerations() throws {
        let key = "node.kubernetes.io/unreachable"
        func delay(_ t: [Toleration]) -> Int64? { NodeAutonomy.deletionDelay(t, taintKey: key) }
        #expect(delay([]) == 0)
        #expect(delay([Toleration(operator: "Exists")]) == nil, "tolerates every taint forever")
        #expect(delay([Toleration(key: key, operator: "Exists", effect: "NoExecute", tolerationSeconds: 300)]) == 300)
        #expect(delay([Toleration(key: key, effect: "NoExecute", tolerationSeconds: 30)]) == 30, "Equal with no value matches the value-less taint")
        #expect(delay([Toleration(key: key, value: "x", effect: "NoExecute", tolerationSeconds: 30)]) == 0)
        #expect(delay([Toleration(key: key, operator: "Exists", effect: "NoSchedule")]) == 0, "another effect")
        #expect(delay([Toleration(key: "other", operator: "Exists", effect: "NoExecute")]) == 0, "another key")
        #expect(delay([Toleration(key: key, operator: "Exists", effect: "NoExecute", tolerationSeconds: -5)]) == 0)
        #expect(delay([Toleration(key: key, operator: "Exists"), Toleration(key: key, operator: "Exists", effect: "NoExecute", tolerationSeconds: 300)]) == nil,
                "the first match decides")
    }

    @Test func theReportIsPartOfTheStatusJSON() throws {
        var cluster = ClusterReport(server: "https://10.0.0.1:6443", registered: true)
        cluster.autonomy = AutonomyReport(annotations: [duration: "72h"], pods: [try pod("web", tolerations: defaultTolerations)],
                                          ages: ["uid-web": 5], graceSeconds: 2)
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(cluster)) as? [String: Any]
        let autonomy = try #require(json?["autonomy"] as? [String: Any])
        #expect(autonomy["setting"] as? String == "on" && autonomy["value"] as? String == "72h" && autonomy["seconds"] as? Int == 259_200)
        #expect(autonomy["graceSeconds"] as? Int == 2 && autonomy["annotation"] as? String == duration)
        let pods = try #require(autonomy["unreconciledPods"] as? [[String: Any]])
        #expect(pods.first?["name"] as? String == "web" && pods.first?["forSeconds"] as? Int == 5 && pods.first?["deletedAfterSeconds"] as? Int == 300)
        #expect(try JSONDecoder().decode(ClusterReport.self, from: JSONEncoder().encode(cluster)) == cluster)
    }
}

@Suite struct JoinRequestAutonomyTests {
    @Test func theSettingTravelsAndAMissingOneIsTheDefault() throws {
        let old = #"{"server": "https://x", "token": "a.b", "caCertHashes": [], "labels": {}, "taints": [], "approvalTimeoutSeconds": 120}"#
        #expect(try JSONDecoder().decode(JoinRequest.self, from: Data(old.utf8)).autonomy == "0")
        let none = #"{"server": "https://x", "token": "a.b", "autonomy": null}"#
        #expect(try JSONDecoder().decode(JoinRequest.self, from: Data(none.utf8)).autonomy == nil)
        for value in [nil, "0", "72h"] as [String?] {
            let request = JoinRequest(server: "https://x", token: "a.b", labels: ["site": "a"], nodePool: "p", autonomy: value)
            #expect(try JSONDecoder().decode(JoinRequest.self, from: JSONEncoder().encode(request)) == request)
        }
        #expect(JoinRequest(server: "https://x", token: "a.b").autonomy == "0")
    }

    @Test func badValuesSayWhatToGive() {
        for good in ["0", "72h", "1h30m", "90m", "3600s"] { #expect(JoinRequest.autonomyProblem(good) == nil, "\(good)") }
        #expect(JoinRequest.autonomyProblem("banana") == "--autonomy=banana is not valid (not a duration): give --autonomy or --autonomy=0 for forever, a duration such as --autonomy=72h or --autonomy=90m, or --no-autonomy for none")
        #expect(JoinRequest.autonomyProblem("-5m")?.contains("(a duration cannot be negative)") == true)
        #expect(JoinRequest.autonomyProblem("") != nil)
        #expect(JoinRequest.autonomyProblem("72") != nil, "a number without a unit is not a Go duration")
    }
}

/// The real edgectl binary against a served control socket whose backend records the join requests.
@Suite struct EdgectlAutonomyTests {
    @Test func joinReadsAutonomyWithOrWithoutAValue() async throws {
        let served = try await ServedControl.start()
        let base = ["join", "--server", "https://10.0.0.1:6443", "--token", "abcdef.0123456789abcdef", "--socket", served.socketPath]
        let cases: [([String], String?)] = [
            (base, "0"),                                                    // the default: an edged node is an edge node
            (base + ["--autonomy"], "0"),                                   // bare, last
            (["join", "--autonomy"] + base.dropFirst(), "0"),               // bare, before other options
            (base + ["--autonomy=72h"], "72h"),
            (base + ["--autonomy", "90m"], "90m"),                          // join has no positional arguments
            (base + ["--no-autonomy"], nil),
            (base + ["--autonomy= 72h"], "72h"),                            // sent as given, stored trimmed by the daemon
        ]
        for (args, expected) in cases {
            let r = try await edgectl(args)
            #expect(r.status == 0, "\(args): \(r.stderr)")
            let sent = await served.backend.joins.last
            #expect(sent?.autonomy?.trimmingCharacters(in: .whitespaces) == expected, "\(args): \(String(describing: sent?.autonomy))")
        }
        let first = try await edgectl(base)
        #expect(first.stdout.contains("autonomy: node.openyurt.io/autonomy-duration=0 on the Node (forever)"), "\(first.stdout)")
        let off = try await edgectl(base + ["--no-autonomy"])
        #expect(off.stdout.contains("autonomy: off (--no-autonomy)"), "\(off.stdout)")
        await served.stop()
    }

    @Test func badAutonomyArgumentsJoinNothing() async throws {
        let served = try await ServedControl.start()
        let base = ["join", "--server", "https://10.0.0.1:6443", "--token", "abcdef.0123456789abcdef", "--socket", served.socketPath]
        let both = try await edgectl(base + ["--autonomy", "--no-autonomy"])
        #expect(both.status == 2)
        #expect(both.stderr.contains("--autonomy and --no-autonomy contradict each other: give one of them"), "\(both.stderr)")
        let bothValue = try await edgectl(base + ["--no-autonomy", "--autonomy=72h"])
        #expect(bothValue.status == 2 && bothValue.stderr.contains("contradict"))
        for args in [["--autonomy=banana"], ["--autonomy", "banana"]] {
            let bad = try await edgectl(base + args)
            #expect(bad.status == 2, "\(args)")
            #expect(bad.stderr.contains("--autonomy=banana is not valid (not a duration): give --autonomy or --autonomy=0 for forever"), "\(bad.stderr)")
        }
        let negative = try await edgectl(base + ["--autonomy=-1h"])
        #expect(negative.status == 2 && negative.stderr.contains("cannot be negative"), "\(negative.stderr)")
        #expect(await served.backend.joins.isEmpty, "a bad autonomy value must reach nothing")
        // Only join's --autonomy is rewritten: another subcommand still refuses it.
        let status = try await edgectl(["status", "--autonomy", "--socket", served.socketPath])
        #expect(status.status == 2 && status.stderr.contains("Unknown option '--autonomy'"), "\(status.stderr)")
        await served.stop()
    }

    @Test func statusShowsTheAutonomyLineAndTheWarning() async throws {
        let served = try await ServedControl.start()
        var report = await served.backend.report
        var cluster = ClusterReport(server: "https://10.0.0.1:6443", registered: true, leaseAgeSeconds: 2)
        let web = try pod("web", tolerations: defaultTolerations)
        cluster.autonomy = AutonomyReport(annotations: [duration: "0"], pods: [web], ages: ["uid-web": 90], graceSeconds: 60)
        report.cluster = cluster
        report.mode = "joined"
        report.reasons = cluster.autonomy!.problems(nodeName: report.nodeName)
        report.healthy = report.reasons.isEmpty
        await served.backend.setReport(report)

        let r = try await edgectl(["status", "--socket", served.socketPath], environment: ["NO_COLOR": "1"])
        #expect(r.status == 1)
        #expect(r.stdout.contains("\nAutonomy:  on, forever (node.openyurt.io/autonomy-duration=0): the cloud keeps this node's pods through an outage of any length; 1 pod not reconciled by the autonomy controller yet\n"), "\(r.stdout)")
        #expect(r.stderr.contains("DEGRADED: node is autonomous (node.openyurt.io/autonomy-duration=0) but 1 pod still carries tolerations that autonomy has not set (default/web: unreachable 300 s, not-ready 300 s)"), "\(r.stderr)")
        let json = try await edgectl(["status", "--json", "--socket", served.socketPath])
        let decoded = try JSONDecoder().decode(StatusReport.self, from: Data(json.stdout.utf8))
        #expect(decoded.cluster?.autonomy == cluster.autonomy)

        // Off: a line that says how to turn it on, and no warning.
        cluster.autonomy = AutonomyReport(annotations: nil, pods: [web], ages: [:], graceSeconds: 60)
        report.cluster = cluster
        report.reasons = []
        report.healthy = true
        await served.backend.setReport(report)
        let off = try await edgectl(["status", "--socket", served.socketPath])
        #expect(off.status == 0)
        #expect(off.stdout.contains("\nAutonomy:  off: the cloud deletes this node's pods once their tolerations run out (300 s by default) after it loses the node; enable with kubectl annotate node gw-1 node.openyurt.io/autonomy-duration=0\n"), "\(off.stdout)")
        await served.stop()
    }
}
