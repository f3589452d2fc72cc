// End to end as an operator sees it: `edgectl join` against the test API server, then the real `kubectl` shows a
// Ready node with a renewed lease, runs pods bound to it, sees their status, restarts, events and deletion.

import EdgedCore
import EdgedDaemon
import EdgedTestSupport
import Foundation
import Testing

/// The real kubectl against the test API server, as the cluster admin.
struct Kubectl {
    let kubeconfig: String

    /// (`apply` skips client-side validation: the test API server serves no OpenAPI document.)
    @discardableResult
    func run(_ args: [String], stdin: String? = nil, check: Bool = true) throws -> CommandResult {
        let args = args.first == "apply" ? args + ["--validate=false"] : args
        if let stdin {
            let file = kubeconfig + ".stdin-\(UInt32.random(in: 0..<UInt32.max)).yaml"
            try stdin.write(toFile: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: file) }
            return try runCommand(["kubectl", "--kubeconfig", kubeconfig] + args.map { $0 == "-" ? file : $0 }, check: check)
        }
        return try runCommand(["kubectl", "--kubeconfig", kubeconfig] + args, check: check)
    }

    func json(_ args: [String]) throws -> [String: Any] {
        let out = try run(args + ["-o", "json"]).stdout
        return (try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]) ?? [:]
    }

    /// Polls `kubectl get ... -o json` until `condition` holds.
    func wait(_ args: [String], timeout: TimeInterval = 40, _ what: String,
              _ condition: ([String: Any]) -> Bool) async throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        var last: [String: Any] = [:]
        while Date() < deadline {
            if let obj = try? json(args) {
                last = obj
                if condition(obj) { return obj }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw TestFailure("timed out waiting for \(what) on kubectl get \(args.joined(separator: " ")); last: \(last)")
    }
}

func path(_ obj: [String: Any], _ keys: String...) -> Any? {
    var cur: Any? = obj
    for k in keys {
        if let i = Int(k), let a = cur as? [Any] { cur = i < a.count ? a[i] : nil } else { cur = (cur as? [String: Any])?[k] }
    }
    return cur
}

func condition(_ obj: [String: Any], _ type: String) -> String? {
    ((path(obj, "status", "conditions") as? [[String: Any]]) ?? []).first { $0["type"] as? String == type }?["status"] as? String
}

func containerStatus(_ pod: [String: Any], _ name: String) -> [String: Any]? {
    ((path(pod, "status", "containerStatuses") as? [[String: Any]]) ?? []).first { $0["name"] as? String == name }
}

/// A pod bound to `node` running the demo busybox image.
func boundPod(_ name: String, node: String, command: String, extra: String = "", volumes: String = "", mounts: String = "",
              env: String = "", restartPolicy: String = "Always", image: String = Demo.imageReference, resources: String = "") -> String {
    """
    apiVersion: v1
    kind: Pod
    metadata:
      name: \(name)
      namespace: default
    spec:
      nodeName: \(node)
      restartPolicy: \(restartPolicy)
      terminationGracePeriodSeconds: 2
    \(volumes)
      containers:
      - name: main
        image: \(image)
        imagePullPolicy: IfNotPresent
        command: ["/bin/sh", "-c", \(jsonString(command))]
    \(mounts)
    \(env)
    \(resources)
    \(extra)
    """
}

func jsonString(_ s: String) -> String {
    // JSONSerialization writes "/" as "\/", which YAML does not accept.
    String(decoding: try! JSONSerialization.data(withJSONObject: [s]), as: UTF8.self).dropFirst().dropLast()
        .description.split(separator: "\\/", omittingEmptySubsequences: false).joined(separator: "/")
}

/// An API server with a bootstrap token, a kubeconfig for kubectl, and an edged with a CNI bridge network.
final class ClusterFixture: @unchecked Sendable {
    let api: KubeAPIServer
    let kubectl: Kubectl
    let edged: EdgedInstance
    let side: TempDir
    let bridge: String
    let token = "abcdef.0123456789abcdef"
    var node: String { "node-\(edged.name)" }
    /// The edge hub's plain-HTTP listener and health port (free ports picked per fixture).
    let hubPort: Int
    let hubHealthPort: Int
    var hubURL: String { "http://127.0.0.1:\(hubPort)" }

    /// The hub's HTTPS listener (pods' `kubernetes` Service), when the fixture was asked for one.
    let hubHTTPSPort: Int?

    /// The node's own uplink to the API server, when the fixture was asked for one (`nodeLink: true`): edged joins
    /// through it, so cutting it (`nodeLink.setCut(true)`) takes only this node off the cloud while kubectl, other
    /// clients and the API server's controllers carry on.
    let nodeLink: CuttableLink?
    /// The API server URL edged joins (through the node link when there is one).
    var nodeServerURL: String { nodeLink.map { "https://\($0.host)" } ?? api.url }

    /// `clusterConfig`: extra top-level lines of edged's config file; `clusterSettings`: extra lines of its `cluster:`
    /// section (each indented by two spaces, e.g. "  autonomyGraceSeconds: 2").
    init(name: String, subnet: String, options: KubeAPIServer.Options = .init(), clusterConfig: String = "",
         clusterSettings: String = "", hubHTTPS: Bool = false, nodeLink: Bool = false) async throws {
        api = try await KubeAPIServer.start(options: options)
        self.nodeLink = nodeLink ? try CuttableLink(targetPort: api.port) : nil
        try api.addBootstrapToken(id: "abcdef", secret: "0123456789abcdef")
        api.addToken(Self.hubClientToken, user: "edge-operator", groups: ["system:masters"])
        side = try TempDir("edged-cluster-\(name)")
        try api.writeAdminKubeconfig(to: side.sub("admin.kubeconfig"))
        kubectl = Kubectl(kubeconfig: side.sub("admin.kubeconfig"))
        edged = try EdgedInstance(name: name)
        hubPort = try freeTCPPort()
        hubHealthPort = try freeTCPPort()
        hubHTTPSPort = hubHTTPS ? try freeTCPPort() : nil
        bridge = "edc\(String(UInt32.random(in: 0..<UInt32.max), radix: 16))"
        TestBridges.removeLeftovers(holding: subnet)
        try FileManager.default.createDirectory(atPath: side.sub("net.d"), withIntermediateDirectories: true)
        try """
            {"cniVersion":"1.0.0","name":"edged-\(name)","plugins":[
             {"type":"bridge","bridge":"\(bridge)","isGateway":true,"ipMasq":false,
              "ipam":{"type":"host-local","dataDir":"\(side.sub("ipam"))","ranges":[[{"subnet":"\(subnet)"}]]}},
             {"type":"loopback"}]}
            """.write(toFile: side.sub("net.d/10-test.conflist"), atomically: true, encoding: .utf8)
        try """
            cni:
              confDir: \(side.sub("net.d"))
              binDirs: [/usr/lib/cni]
            cluster:
              nodeIP: 127.0.0.1
              leaseRenewSeconds: 1
              leaseDurationSeconds: 5
              volumeRefreshSeconds: 2
            \(clusterSettings)
            hub:
              httpAddress: 127.0.0.1:\(hubPort)
              httpsAddress: "\(hubHTTPSPort.map { "127.0.0.1:\($0)" } ?? "")"
              healthAddress: 127.0.0.1:\(hubHealthPort)
              healthCheckSeconds: 1
              healthCheckTimeoutSeconds: 1
              cacheComponents: [kubectl, curl]
            \(clusterConfig)
            """.write(toFile: edged.root.sub("config.yaml"), atomically: true, encoding: .utf8)
        try Demo.writeImageArchive(to: "\(edged.stateDir)/images/import/busybox.tar")
    }

    /// The bearer token of a node-local client with its own credentials (static token, user edge-operator in
    /// system:masters), as kube-proxy or coredns have theirs; the hub passes it on. A caller without credentials goes
    /// upstream as the node, and a Node-authorized API server lets the node read only its own pods, what they
    /// reference, nodes, services and endpoints.
    static let hubClientToken = "edge-operator-token-0123456789"

    /// curl arguments for a node-local client with its own credentials (`hubClientToken`).
    var hubClientAuth: [String] { ["-H", "Authorization: Bearer \(Self.hubClientToken)"] }

    /// kubectl against the hub's HTTP port, as a node-local client. kubectl sends no bearer token over plain HTTP,
    /// so it acts as the node: what it may read depends on the API server's Node authorizer.
    func hubKubectl() throws -> Kubectl {
        let file = side.sub("hub.kubeconfig")
        try """
            apiVersion: v1
            kind: Config
            clusters: [{name: hub, cluster: {server: "\(hubURL)"}}]
            users: [{name: node, user: {}}]
            contexts: [{name: hub, context: {cluster: hub, user: node}}]
            current-context: hub
            """.write(toFile: file, atomically: true, encoding: .utf8)
        return Kubectl(kubeconfig: file)
    }

    func join(_ extra: [String] = [], check: Bool = true) throws -> CommandResult {
        try edged.edgectl(["join", "--server", nodeServerURL, "--token", token, "--ca-cert-hash", api.caCertHash] + extra, check: check)
    }

    /// Forgets the cluster before the harness' clean-up run, so that run sees the API pods' containers as
    /// unwanted leftovers and removes them.
    func tearDown() async {
        edged.stop()
        try? FileManager.default.removeItem(atPath: "\(edged.stateDir)/pki")
        edged.cleanUp()
        _ = try? runCommand(["ip", "link", "del", bridge], check: false)
        try? await api.shutdown()
        nodeLink?.stop()
        side.remove()
    }
}

/// Runs `body` against a fresh cluster. When it succeeds, also checks that the node asked the API server for
/// nothing it may not do: no request of the node's user (system:node:<node>) answered 403, and no "403" or
/// "is forbidden" in edged's log. `expectsForbidden: true` skips that check for a test that provokes a 403 on purpose.
func withCluster(name: String, subnet: String, options: KubeAPIServer.Options = .init(), clusterConfig: String = "",
                 clusterSettings: String = "", hubHTTPS: Bool = false, nodeLink: Bool = false, expectsForbidden: Bool = false,
                 _ body: (ClusterFixture) async throws -> Void) async throws {
    let f = try await ClusterFixture(name: name, subnet: subnet, options: options, clusterConfig: clusterConfig,
                                     clusterSettings: clusterSettings, hubHTTPS: hubHTTPS, nodeLink: nodeLink)
    do {
        try await body(f)
        if !expectsForbidden { try f.checkNoForbiddenRequests() }
    } catch {
        Issue.record("edged log tail:\n\(f.edged.log().suffix(4000))")
        await f.tearDown()
        throw error
    }
    await f.tearDown()
}

extension ClusterFixture {
    /// The API server's user for this node's client certificate.
    var nodeUser: String { "system:node:\(node)" }

    /// curl of `url` on the hub's HTTPS listener, trusting the cluster CA, retried for up to 30 s (the listener starts
    /// once the serving certificate, with the hub's address as an IP SAN, is issued); the last answer.
    func hubHTTPSAnswer(_ url: String) async throws -> CommandResult? {
        let ca = "\(edged.stateDir)/pki/ca.crt"
        var answer: CommandResult?
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            answer = try runCommand(["curl", "-sS", "--max-time", "5", "--cacert", ca, url], check: false)
            if answer?.status == 0 { break }
            try await Task.sleep(for: .milliseconds(300))
        }
        return answer
    }

    /// Requests of the node's user the API server refused with 403.
    func forbiddenNodeRequests() -> [KubeAPIServer.RequestRecord] {
        api.requests().filter { $0.user == nodeUser && $0.code == 403 }
    }

    /// Lines of edged's log whose message (after the klog header "… file:line] ") says 403 or "is forbidden". A 403
    /// that is a value (timeoutSeconds=403, a port :403, a fraction .403, part of a uid 1fe8-403d) is not one.
    func forbiddenLogLines() -> [String] {
        // "is forbidden" is how the authorizers and admission word a refusal; a 422 field error "Forbidden: ..." is not one.
        let pattern = try! NSRegularExpression(pattern: #"(?<![\w=:.\-/])403(?![\w.\-])|is forbidden"#)
        return edged.log().split(separator: "\n").map(String.init).filter { line in
            let message = line.range(of: "] ").map { String(line[$0.upperBound...]) } ?? line
            return pattern.firstMatch(in: message, range: NSRange(message.startIndex..., in: message)) != nil
        }
    }

    /// Throws when the API server refused a request of the node's user with 403, or edged logged a 403.
    func checkNoForbiddenRequests() throws {
        let refused = forbiddenNodeRequests()
        let lines = forbiddenLogLines()
        guard refused.isEmpty && lines.isEmpty else {
            throw TestFailure("""
                the node made requests that a Node-authorized API server refuses (403); every node request must be \
                allowed for \(nodeUser):
                \(refused.prefix(20).map { "  \($0)" }.joined(separator: "\n"))
                edged's log:
                \(lines.prefix(20).map { "  \($0)" }.joined(separator: "\n"))
                """)
        }
    }
}

@Suite(.serialized, .enabled(if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge")
                                && findExecutable("kubectl") != nil, "needs root, CNI plugins and kubectl"))
struct ClusterJoinTests {
    @Test func joinRunsBoundPodsLikeAKubeletNode() async throws {
      try await withCluster(name: "join", subnet: "10.250.61.0/24") { f in
        try f.edged.start()

        // Join: a Ready node, with our labels, that renews its lease.
        let joined = try f.join(["--labels", "site=plant7,role=gateway", "--node-pool", "pool-a", "--taint", "dedicated=edge:NoSchedule"])
        #expect(joined.stdout.contains("joined \(f.api.url) as node \(f.node)"), "\(joined.stdout)\(joined.stderr)")
        let again = try f.join()
        #expect(again.stdout.contains("already joined"), "join must be idempotent: \(again.stdout)")
        let node = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }
        let labels = path(node, "metadata", "labels") as? [String: String] ?? [:]
        #expect(labels["site"] == "plant7" && labels["apps.openyurt.io/nodepool"] == "pool-a")
        #expect(labels["kubernetes.io/hostname"] == f.node && labels["kubernetes.io/os"] == "linux" && labels["kubernetes.io/arch"] != nil)
        let taints = path(node, "spec", "taints") as? [[String: Any]] ?? []
        #expect(taints.contains { $0["key"] as? String == "dedicated" && $0["value"] as? String == "edge" && $0["effect"] as? String == "NoSchedule" })
        let info = path(node, "status", "nodeInfo") as? [String: Any] ?? [:]
        #expect((info["kubeletVersion"] as? String)?.contains("+edged-") == true)
        #expect((info["containerRuntimeVersion"] as? String)?.hasPrefix("edged://") == true)
        #expect(path(node, "status", "capacity", "pods") as? String == "110")
        #expect(condition(node, "MemoryPressure") == "False" && condition(node, "DiskPressure") == "False")
        let addresses = path(node, "status", "addresses") as? [[String: Any]] ?? []
        #expect(addresses.contains { $0["type"] as? String == "InternalIP" && $0["address"] as? String == "127.0.0.1" })
        // (The test API server has no server-side table printing, so kubectl's columns come from custom-columns.)
        let wide = try f.kubectl.run(["get", "nodes", "-o", "custom-columns=NAME:.metadata.name,READY:.status.conditions[?(@.type==\"Ready\")].status,VERSION:.status.nodeInfo.kubeletVersion"]).stdout
        #expect(wide.contains(f.node) && wide.contains("True") && wide.contains("+edged-"), "\(wide)")

        let lease1 = try f.kubectl.json(["get", "lease", "-n", "kube-node-lease", f.node])
        let renew1 = path(lease1, "spec", "renewTime") as? String
        #expect(path(lease1, "spec", "holderIdentity") as? String == f.node)
        _ = try await f.kubectl.wait(["get", "lease", "-n", "kube-node-lease", f.node], timeout: 10, "lease renewed") {
            path($0, "spec", "renewTime") as? String != renew1
        }

        // A pod bound to the node: Running with a pod IP from CNI, status written like kubelet.
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("web", node: f.node,
            command: "mkdir -p /tmp/w && echo hi > /tmp/w/index.html && exec httpd -f -p 8080 -h /tmp/w"))
        let web = try await f.kubectl.wait(["get", "pod", "web"], "web Running with an IP") {
            path($0, "status", "phase") as? String == "Running" && (path($0, "status", "podIP") as? String)?.hasPrefix("10.250.61.") == true
                && condition($0, "Ready") == "True"
        }
        #expect(path(web, "status", "hostIP") as? String == "127.0.0.1")
        #expect(path(web, "status", "qosClass") as? String == "BestEffort")
        let webStatus = try #require(containerStatus(web, "main"))
        #expect((webStatus["containerID"] as? String)?.hasPrefix("edged://") == true)
        #expect((webStatus["imageID"] as? String)?.contains("@sha256:") == true)
        #expect(path(webStatus, "state", "running", "startedAt") != nil)
        // One state only: the waiting state it had while being created is gone (a strategic merge keeps it unless
        // the patch clears it).
        #expect((path(webStatus, "state") as? [String: Any])?.keys.sorted() == ["running"], "\(webStatus)")
        for c in ["Initialized", "ContainersReady", "PodScheduled"] { #expect(condition(web, c) == "True", "\(c)") }
        let podsWide = try f.kubectl.run(["get", "pod", "web", "-o", "custom-columns=STATUS:.status.phase,IP:.status.podIP,NODE:.spec.nodeName"]).stdout
        #expect(podsWide.contains("Running") && podsWide.contains(f.node) && podsWide.contains("10.250.61."), "\(podsWide)")

        // A container that exits is restarted, and the restart is counted with the last state.
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("crasher", node: f.node, command: "echo run; sleep 1; exit 3"))
        let crasher = try await f.kubectl.wait(["get", "pod", "crasher"], "a counted restart") {
            (containerStatus($0, "main")?["restartCount"] as? Int ?? 0) >= 1
        }
        #expect(path(containerStatus(crasher, "main") ?? [:], "lastState", "terminated", "exitCode") as? Int == 3)

        // Events with kubelet's reasons.
        _ = try await f.kubectl.wait(["get", "events", "--field-selector", "involvedObject.name=web"], "web's events") { list in
            let reasons = Set(((list["items"] as? [[String: Any]]) ?? []).compactMap { $0["reason"] as? String })
            return reasons.isSuperset(of: ["Pulled", "Created", "Started"])
        }
        let describe = try f.kubectl.run(["describe", "pod", "web"]).stdout
        #expect(describe.contains("Started container main") && describe.contains(f.node), "\(describe)")

        // Deleting the pod: graceful stop on the node, then the object is gone.
        try f.kubectl.run(["delete", "pod", "crasher", "--wait=false"])
        let deadline = Date().addingTimeInterval(30)
        var gone = false
        while Date() < deadline && !gone {
            gone = try f.kubectl.run(["get", "pod", "crasher"], check: false).status != 0
            if !gone { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(gone, "pod crasher still exists 30 s after kubectl delete:\n\(f.edged.log().suffix(2000))")
        #expect(try f.edged.pod("crasher") == nil)
        // The other pod kept running throughout.
        #expect(try f.edged.pod("web")?["phase"] as? String == "Running")

        // A static pod gets a mirror pod in the API, with its status; removing the manifest removes it.
        try f.edged.writeManifest("static.yaml", busyboxPod("static", command: "sleep 3600"))
        let mirror = try await f.kubectl.wait(["get", "pod", "static-\(f.node)"], "mirror pod Running") {
            path($0, "status", "phase") as? String == "Running"
        }
        let annotations = path(mirror, "metadata", "annotations") as? [String: String] ?? [:]
        #expect(annotations["kubernetes.io/config.source"] == "file" && annotations["kubernetes.io/config.mirror"] != nil)
        #expect(path(mirror, "spec", "nodeName") as? String == f.node)
        #expect((path(mirror, "metadata", "ownerReferences", "0", "kind") as? String) == "Node")
        f.edged.removeManifest("static.yaml")
        let deadline2 = Date().addingTimeInterval(30)
        var mirrorGone = false
        while Date() < deadline2 && !mirrorGone {
            mirrorGone = try f.kubectl.run(["get", "pod", "static-\(f.node)"], check: false).status != 0
            if !mirrorGone { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(mirrorGone, "mirror pod still there after its manifest was removed")

        let status = try f.edged.status()
        #expect(status["mode"] as? String == "joined")
        #expect(path(status, "cluster", "registered") as? Bool == true)
        let screenRun = try f.edged.edgectl(["status"], check: false)
        #expect(screenRun.stdout.contains("cluster \(f.api.url)"), "\(screenRun.status) \(screenRun.stdout) \(screenRun.stderr)")
      }
    }

    @Test func secretsConfigMapsAndBadPodsReachTheStatus() async throws {
      try await withCluster(name: "vols", subnet: "10.250.62.0/24") { f in
        try f.edged.start()
        try f.join()
        _ = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }

        // (kubectl create sends protobuf, which the test API server does not speak; apply sends JSON.)
        func secret(_ password: String) -> String {
            "apiVersion: v1\nkind: Secret\nmetadata: {name: app, namespace: default}\ndata: {password: \(Data(password.utf8).base64EncodedString())}\n"
        }
        try f.kubectl.run(["apply", "-f", "-"], stdin: secret("one"))
        try f.kubectl.run(["apply", "-f", "-"], stdin: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: default}\ndata: {mode: fast}\n")
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("reader", node: f.node,
            command: "echo env=$MODE/$PASS; while true; do echo file=$(cat /etc/secret/password); sleep 0.3; done",
            volumes: """
              volumes:
              - name: secret
                secret: {secretName: app}
            """,
            mounts: """
                volumeMounts:
                - {name: secret, mountPath: /etc/secret, readOnly: true}
            """,
            env: """
                env:
                - name: MODE
                  valueFrom: {configMapKeyRef: {name: settings, key: mode}}
                - name: PASS
                  valueFrom: {secretKeyRef: {name: app, key: password}}
            """))
        _ = try await f.kubectl.wait(["get", "pod", "reader"], "reader Running") { path($0, "status", "phase") as? String == "Running" }
        func logs() -> String { (try? f.edged.edgectl(["logs", "reader"], check: false).stdout) ?? "" }
        var deadline = Date().addingTimeInterval(10)
        while Date() < deadline && !logs().contains("file=one") { try await Task.sleep(for: .milliseconds(200)) }
        #expect(logs().contains("env=fast/one") && logs().contains("file=one"), "\(logs())")

        // An update of the secret reaches the mounted file while the container runs.
        try f.kubectl.run(["apply", "-f", "-"], stdin: secret("two"))
        deadline = Date().addingTimeInterval(20)
        while Date() < deadline && !logs().contains("file=two") { try await Task.sleep(for: .milliseconds(200)) }
        #expect(logs().contains("file=two"), "secret update did not reach the volume: \(logs().suffix(500))")
        #expect(containerStatus(try f.kubectl.json(["get", "pod", "reader"]), "main")?["restartCount"] as? Int == 0)

        // downwardAPI and projected (service-account token + configMap) volumes, envFrom, service variables.
        try f.kubectl.run(["apply", "-f", "-"], stdin: """
            apiVersion: v1
            kind: Pod
            metadata: {name: downward, namespace: default, labels: {app: demo, tier: edge}}
            spec:
              nodeName: \(f.node)
              terminationGracePeriodSeconds: 1
              volumes:
              - name: info
                downwardAPI:
                  items:
                  - {path: labels, fieldRef: {fieldPath: metadata.labels}}
                  - {path: name, fieldRef: {fieldPath: metadata.name}}
              - name: projected
                projected:
                  sources:
                  - serviceAccountToken: {path: token, expirationSeconds: 3600}
                  - configMap: {name: settings, items: [{key: mode, path: cfg/mode}]}
              containers:
              - name: main
                image: \(Demo.imageReference)
                command: [sh, -c, "echo labels=$(cat /info/labels | tr '\\\\n' ' '); echo name=$(cat /info/name); echo mode=$(cat /var/run/p/cfg/mode); echo tokenlen=$(cat /var/run/p/token | wc -c); echo svc=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; echo from=$CFG_mode; sleep 3600"]
                envFrom: [{prefix: CFG_, configMapRef: {name: settings}}]
                volumeMounts: [{name: info, mountPath: /info}, {name: projected, mountPath: /var/run/p}]
            """)
        _ = try await f.kubectl.wait(["get", "pod", "downward"], "downward Running") { path($0, "status", "phase") as? String == "Running" }
        var dlogs = ""
        for _ in 0..<100 where !dlogs.contains("from=") {
            dlogs = (try? f.edged.edgectl(["logs", "downward"], check: false).stdout) ?? ""
            if !dlogs.contains("from=") { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(dlogs.contains("app=\"demo\"") && dlogs.contains("tier=\"edge\""), "\(dlogs)")
        #expect(dlogs.contains("name=downward") && dlogs.contains("mode=fast") && dlogs.contains("from=fast"), "\(dlogs)")
        #expect(dlogs.contains("svc=10.96.0.1:443"), "\(dlogs)")
        #expect(!dlogs.contains("tokenlen=0") && dlogs.contains("tokenlen="), "\(dlogs)")

        // Bad pods fail alone, with a status and an Event that name the problem.
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("badimage", node: f.node, command: "true",
                                                                image: "127.0.0.1:1/nothing/here:v1"))
        let bad = try await f.kubectl.wait(["get", "pod", "badimage"], "image pull failure in status") {
            let reason = path(containerStatus($0, "main") ?? [:], "state", "waiting", "reason") as? String
            return reason == "ErrImagePull" || reason == "ImagePullBackOff"
        }
        #expect((path(containerStatus(bad, "main") ?? [:], "state", "waiting", "message") as? String)?.contains("127.0.0.1:1") == true)

        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("nfs", node: f.node, command: "true",
            volumes: """
              volumes:
              - name: data
                nfs: {server: 10.0.0.9, path: /export}
            """,
            mounts: """
                volumeMounts:
                - {name: data, mountPath: /data}
            """))
        let nfs = try await f.kubectl.wait(["get", "pod", "nfs"], "unsupported volume in status") {
            (path($0, "status", "message") as? String)?.contains("volume \"data\" has no supported source") == true
        }
        #expect(path(nfs, "status", "phase") as? String == "Pending")

        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("huge", node: f.node, command: "true",
            resources: """
                resources:
                  requests: {cpu: "512"}
            """))
        let huge = try await f.kubectl.wait(["get", "pod", "huge"], "admission failure") { path($0, "status", "phase") as? String == "Failed" }
        #expect(path(huge, "status", "reason") as? String == "OutOfcpu")
        #expect((path(huge, "status", "message") as? String)?.contains("cpu") == true)
        _ = try await f.kubectl.wait(["get", "events", "--field-selector", "involvedObject.name=huge"], "admission event") { list in
            ((list["items"] as? [[String: Any]]) ?? []).contains { $0["reason"] as? String == "OutOfcpu" }
        }
        // A missing secret: FailedMount with kubelet's wording; a failing liveness probe: Unhealthy, then a restart.
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("nosecret", node: f.node, command: "sleep 3600",
            volumes: """
              volumes:
              - {name: s, secret: {secretName: nope}}
            """,
            mounts: """
                volumeMounts:
                - {name: s, mountPath: /s}
            """))
        let missing = try await f.kubectl.wait(["get", "pod", "nosecret"], "missing secret in status") {
            (path(containerStatus($0, "main") ?? [:], "state", "waiting", "message") as? String)?.contains("secret \"nope\" not found") == true
        }
        #expect(path(containerStatus(missing, "main") ?? [:], "state", "waiting", "reason") as? String == "CreateContainerConfigError")
        _ = try await f.kubectl.wait(["get", "events", "--field-selector", "involvedObject.name=nosecret"], "FailedMount event") { list in
            ((list["items"] as? [[String: Any]]) ?? []).contains {
                $0["reason"] as? String == "FailedMount" && ($0["message"] as? String)?.contains("MountVolume.SetUp failed for volume \"s\"") == true
            }
        }
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("sick", node: f.node, command: "sleep 3600",
            extra: """
                livenessProbe: {exec: {command: ["false"]}, periodSeconds: 1, failureThreshold: 1}
            """))
        _ = try await f.kubectl.wait(["get", "events", "--field-selector", "involvedObject.name=sick"], "Unhealthy event") { list in
            let reasons = Set(((list["items"] as? [[String: Any]]) ?? []).compactMap { $0["reason"] as? String })
            return reasons.isSuperset(of: ["Unhealthy", "Killing"])
        }
        _ = try await f.kubectl.wait(["get", "pod", "sick"], "liveness restart counted") {
            (containerStatus($0, "main")?["restartCount"] as? Int ?? 0) >= 1
        }
        // A resource the node does not have at all (no GPU here): rejected at admission, like kubelet.
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("gpu", node: f.node, command: "true",
            resources: """
                resources:
                  limits: {nvidia.com/gpu: "1"}
            """))
        let gpu = try await f.kubectl.wait(["get", "pod", "gpu"], "admission failure for a missing resource") {
            path($0, "status", "phase") as? String == "Failed"
        }
        #expect(path(gpu, "status", "reason") as? String == "UnexpectedAdmissionError")
        #expect((path(gpu, "status", "message") as? String)?.contains("nvidia.com/gpu") == true)
        #expect(try f.edged.pod("reader")?["phase"] as? String == "Running")
      }
    }

    @Test func pullSecretsInPlaceUpgradesAndRestarts() async throws {
      try await withCluster(name: "upgrade", subnet: "10.250.64.0/24") { f in
        let token = try TestTokenServer(directory: f.side.path)
        defer { token.stop() }
        let registry = try TestRegistry(directory: f.side.path, token: token)
        defer { registry.stop() }
        try Demo.writeImageArchive(to: f.side.sub("demo.tar"))
        try registry.push("oci-archive:\(f.side.sub("demo.tar"))", as: "private/busybox:2")
        let privateImage = "\(registry.host)/private/busybox:2"

        try f.edged.start()
        try f.join()
        _ = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }
        let auths = "{\"auths\":{\"\(registry.host)\":{\"username\":\"\(token.username)\",\"password\":\"\(token.password)\"}}}"
        try f.kubectl.run(["apply", "-f", "-"], stdin: """
            apiVersion: v1
            kind: Secret
            metadata: {name: regcred, namespace: default}
            type: kubernetes.io/dockerconfigjson
            data: {.dockerconfigjson: \(Data(auths.utf8).base64EncodedString())}
            """)

        // Without the secret the private image is refused; with it, it runs.
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("nosecret", node: f.node, command: "sleep 3600", image: privateImage))
        let refused = try await f.kubectl.wait(["get", "pod", "nosecret"], "unauthorized pull") {
            ["ErrImagePull", "ImagePullBackOff"].contains(path(containerStatus($0, "main") ?? [:], "state", "waiting", "reason") as? String ?? "")
        }
        #expect((path(containerStatus(refused, "main") ?? [:], "state", "waiting", "message") as? String)?.contains(registry.host) == true)
        // A pull secret that does not exist: the pull is tried without it, and an Event says why.
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("wrongsecret", node: f.node, command: "sleep 3600",
                                                                extra: "  imagePullSecrets: [{name: missing}]", image: privateImage))
        _ = try await f.kubectl.wait(["get", "events", "--field-selector", "involvedObject.name=wrongsecret"], "pull-secret event") { list in
            ((list["items"] as? [[String: Any]]) ?? []).contains {
                $0["reason"] as? String == "FailedToRetrieveImagePullSecret" && ($0["message"] as? String)?.contains("\"missing\" not found") == true
            }
        }

        // An in-place image change (OpenKruise-style upgrade) restarts just that container, keeping the pod IP.
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("app", node: f.node, command: "sleep 3600",
                                                                extra: "  imagePullSecrets: [{name: regcred}]"))
        let before = try await f.kubectl.wait(["get", "pod", "app"], "app Running") {
            path($0, "status", "phase") as? String == "Running" && path($0, "status", "podIP") != nil
        }
        let ip = path(before, "status", "podIP") as? String
        try f.kubectl.run(["patch", "pod", "app", "-p", "{\"spec\":{\"containers\":[{\"name\":\"main\",\"image\":\"\(privateImage)\"}]}}"])
        let after = try await f.kubectl.wait(["get", "pod", "app"], "app restarted with the new image") {
            let cs = containerStatus($0, "main") ?? [:]
            return cs["image"] as? String == privateImage && path(cs, "state", "running") != nil && (cs["restartCount"] as? Int ?? 0) == 1
        }
        #expect(path(after, "status", "podIP") as? String == ip)
        let containerID = containerStatus(after, "main")?["containerID"] as? String

        // edged restarts: running pods are adopted (same container), a pod deleted meanwhile is cleaned up.
        f.edged.stop()
        try f.api.delete("/api/v1/namespaces/default/pods/nosecret")
        try f.edged.start()
        _ = try await f.kubectl.wait(["get", "node", f.node], "node Ready after restart") { condition($0, "Ready") == "True" }
        let adopted = try await f.kubectl.wait(["get", "pod", "app"], "app still running") { path($0, "status", "phase") as? String == "Running" }
        #expect(containerStatus(adopted, "main")?["containerID"] as? String == containerID)
        #expect(containerStatus(adopted, "main")?["restartCount"] as? Int == 1)
        var leftover = true
        for _ in 0..<100 where leftover {
            leftover = ((try? f.edged.status()["pods"] as? [[String: Any]]) ?? []).contains { $0["name"] as? String == "nosecret" }
            if leftover { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(!leftover)
      }
    }

    @Test func certificatesRotateAndDaemonSetStylePodsRun() async throws {
      try await withCluster(name: "rotate", subnet: "10.250.65.0/24", options: .init(certificateLifetime: .seconds(12))) { f in
        try f.edged.start()
        try f.join()
        _ = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }
        let pki = "\(f.edged.stateDir)/pki"
        let first = try FileManager.default.destinationOfSymbolicLink(atPath: "\(pki)/kubelet-client-current.pem")
        // The serving certificate is asked for after the join (the test server approves kubelet-serving CSRs).
        var serving = false
        for _ in 0..<100 where !serving {
            serving = FileManager.default.fileExists(atPath: "\(pki)/kubelet-server-current.pem")
            if !serving { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(serving, "no kubelet serving certificate")

        // A DaemonSet-style pod (kube-proxy, flannel): hostNetwork, privileged, hostPath, tolerations.
        try f.kubectl.run(["apply", "-f", "-"], stdin: """
            apiVersion: v1
            kind: Pod
            metadata: {name: proxy, namespace: kube-system}
            spec:
              nodeName: \(f.node)
              hostNetwork: true
              priorityClassName: system-node-critical
              tolerations: [{operator: Exists}]
              terminationGracePeriodSeconds: 1
              volumes: [{name: lock, hostPath: {path: \(f.side.sub("xtables.lock")), type: FileOrCreate}}]
              containers:
              - name: main
                image: \(Demo.imageReference)
                command: [sh, -c, "echo $POD_IP > /dev/null; sleep 3600"]
                env: [{name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]
                securityContext: {privileged: true}
                volumeMounts: [{name: lock, mountPath: /run/xtables.lock}]
            """)
        let proxy = try await f.kubectl.wait(["get", "pod", "proxy", "-n", "kube-system"], "host-network pod Running") {
            path($0, "status", "phase") as? String == "Running"
        }
        #expect(path(proxy, "status", "podIP") as? String == "127.0.0.1")
        #expect(FileManager.default.fileExists(atPath: f.side.sub("xtables.lock")))

        // The client certificate (12 s lifetime) is replaced at 70–90 % of its life; the node stays Ready on the new one.
        var rotated = first
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline && rotated == first {
            rotated = (try? FileManager.default.destinationOfSymbolicLink(atPath: "\(pki)/kubelet-client-current.pem")) ?? first
            if rotated == first { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(rotated != first, "the client certificate was not rotated")
        let lease = try f.kubectl.json(["get", "lease", "-n", "kube-node-lease", f.node])
        let renew = path(lease, "spec", "renewTime") as? String
        _ = try await f.kubectl.wait(["get", "lease", "-n", "kube-node-lease", f.node], timeout: 10, "lease renewed with the new certificate") {
            path($0, "spec", "renewTime") as? String != renew
        }
        let users = Set(f.api.requests().suffix(20).map(\.user))
        #expect(users.contains("system:node:\(f.node)"), "\(users)")
      }
    }

    /// evictionHard drives the node's MemoryPressure condition and is taken off allocatable memory, as in kubelet.
    /// A threshold of 99% of memory is above what is available on any running machine.
    @Test func evictionHardDrivesMemoryPressureAndAllocatable() async throws {
      try await withCluster(name: "mempress", subnet: "10.250.66.0/24", clusterConfig: "evictionHard: {memory.available: \"99%\"}") { f in
        try f.edged.start()
        try f.join()
        let node = try await f.kubectl.wait(["get", "node", f.node], "node Ready with MemoryPressure") {
            condition($0, "Ready") == "True" && condition($0, "MemoryPressure") == "True"
        }
        let pressure = ((path(node, "status", "conditions") as? [[String: Any]]) ?? []).first { $0["type"] as? String == "MemoryPressure" }
        #expect(pressure?["reason"] as? String == "KubeletHasInsufficientMemory")
        let total = Int64(String(decoding: FileManager.default.contents(atPath: "/proc/meminfo") ?? Data(), as: UTF8.self)
            .split(separator: "\n").first { $0.hasPrefix("MemTotal:") }?.split(separator: " ").dropFirst().first ?? "0") ?? 0
        let threshold = Int64(Double(total * 1024) * 99 / 100)
        let capacity = try Quantity(path(node, "status", "capacity", "memory") as? String ?? "").value()
        let allocatable = try Quantity(path(node, "status", "allocatable", "memory") as? String ?? "").value()
        #expect(allocatable == max(capacity - threshold, 0), "capacity \(capacity), threshold \(threshold), allocatable \(allocatable)")
      }
    }

    @Test func corruptCredentialsAreReportedAndAJoinReplacesThem() async throws {
      try await withCluster(name: "corrupt", subnet: "10.250.68.0/24") { f in
        try f.edged.start()
        try f.join()
        _ = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }
        f.edged.stop()
        let pki = "\(f.edged.stateDir)/pki"
        let target = try FileManager.default.destinationOfSymbolicLink(atPath: "\(pki)/kubelet-client-current.pem")
        try "-----BEGIN CERTIFICATE-----\ngarbage\n".write(toFile: target.hasPrefix("/") ? target : "\(pki)/\(target)",
                                                         atomically: true, encoding: .utf8)
        try f.edged.writeManifest("local.yaml", busyboxPod("local", command: "sleep 3600"))
        try f.edged.start()
        // edged keeps running its static pods and says what is wrong and what to do.
        _ = try f.edged.waitForPod("local", "Running") { $0["phase"] as? String == "Running" }
        let status = try f.edged.edgectl(["status"], check: false)
        #expect(status.status == 1)
        #expect(status.stderr.contains("kubelet-client") && status.stderr.contains("edgectl join"), "\(status.stderr)")
        // A new join replaces the broken files.
        let again = try f.join()
        #expect(again.stdout.contains("joined \(f.api.url)"), "\(again.stdout)\(again.stderr)")
        let renewed = try f.kubectl.json(["get", "lease", "-n", "kube-node-lease", f.node])
        _ = try await f.kubectl.wait(["get", "lease", "-n", "kube-node-lease", f.node], timeout: 15, "lease renewed after re-join") {
            path($0, "spec", "renewTime") as? String != path(renewed, "spec", "renewTime") as? String
        }
        var healthy = false
        for _ in 0..<100 where !healthy {
            healthy = (try? f.edged.edgectl(["status"], check: false).status) == 0
            if !healthy { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(healthy, "\((try? f.edged.edgectl(["status"], check: false).stderr) ?? "")")
      }
    }

    @Test func joinErrorsSayWhatToFix() async throws {
      try await withCluster(name: "joinerr", subnet: "10.250.63.0/24", options: .init(autoApproveCSRs: false)) { f in
        try f.edged.start()

        let badTaint = try f.edged.edgectl(["join", "--server", f.api.url, "--token", f.token, "--taint", "dedicated=edge"], check: false)
        #expect(badTaint.status == 1 && badTaint.stderr.contains("key=value:NoSchedule"), "\(badTaint.stderr)")
        // A label NodeRestriction refuses the node (a real cluster would refuse its registration every time).
        let badLabel = try f.edged.edgectl(["join", "--server", f.api.url, "--token", f.token,
                                            "--labels", "site=a,node-role.kubernetes.io/edge="], check: false)
        #expect(badLabel.status == 1 && badLabel.stderr.contains("node-role.kubernetes.io/edge cannot be set by the node")
                && badLabel.stderr.contains("kubectl label node"), "\(badLabel.stderr)")
        let badFormat = try f.edged.edgectl(["join", "--server", f.api.url, "--token", "not-a-token"], check: false)
        #expect(badFormat.status == 1 && badFormat.stderr.contains("token"), "\(badFormat.stderr)")

        let unknown = try f.edged.edgectl(["join", "--server", f.api.url, "--token", "zzzzzz.0123456789abcdef"], check: false)
        #expect(unknown.status == 1 && unknown.stderr.contains("token zzzzzz is not valid"), "\(unknown.stderr)")

        let wrongPin = "sha256:" + String(repeating: "ab", count: 32)
        let pin = try f.edged.edgectl(["join", "--server", f.api.url, "--token", f.token, "--ca-cert-hash", wrongPin], check: false)
        #expect(pin.status == 1 && pin.stderr.contains("--ca-cert-hash") && pin.stderr.contains(f.api.caCertHash), "\(pin.stderr)")

        let closed = try f.edged.edgectl(["join", "--server", "https://127.0.0.1:1", "--token", f.token], check: false)
        #expect(closed.status == 1 && closed.stderr.contains("cannot reach the API server"), "\(closed.stderr)")

        let pending = try f.join(["--approval-timeout", "2"], check: false)
        #expect(pending.status == 1 && pending.stderr.contains("kubectl certificate approve node-csr-"), "\(pending.stderr)")
        #expect(try f.edged.status()["mode"] as? String == "standalone")
      }
    }
}
