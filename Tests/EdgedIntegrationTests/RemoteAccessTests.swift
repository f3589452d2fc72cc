// kubectl logs / exec / port-forward from "the cloud" to a node it cannot dial: the test API server reaches the
// kubelet API only through the tunnel (egress HTTP CONNECT on the tunnel server's Unix socket → `edged
// tunnel-server` → the agent inside edged → the kubelet API on the node → the pod). Real kubectl, real edged,
// real containers, real TLS everywhere.

import EdgedDaemon
import EdgedTestSupport
import Foundation
import Testing

/// A process left running in the background, its stdout and stderr going to one file.
final class BackgroundProcess: @unchecked Sendable {
    let process = Process()
    let output: String

    init(_ args: [String], output: String) throws {
        self.output = output
        FileManager.default.createFile(atPath: output, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
        let exe = args[0].hasPrefix("/") ? args[0] : (findExecutable(args[0]) ?? args[0])
        process.executableURL = URL(fileURLWithPath: exe)
        process.arguments = Array(args.dropFirst())
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    var text: String { (try? String(contentsOfFile: output, encoding: .utf8)) ?? "" }

    func kill(_ signal: Int32 = SIGTERM) {
        if process.isRunning { Glibc.kill(process.processIdentifier, signal) }
        process.waitUntilExit()
    }

    /// Waits until the output contains `needle`.
    func wait(for needle: String, timeout: TimeInterval = 20) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if text.contains(needle) { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestFailure("no \"\(needle)\" within \(Int(timeout)) s from \(process.executableURL?.lastPathComponent ?? "?"): \(text.suffix(2000))")
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// `edged tunnel-server` with a certificate from the cluster CA, agents on `agentPort`, CONNECT on a Unix socket.
struct TunnelServerProcess {
    let socket: String
    let args: [String]

    init(f: ClusterFixture, agentPort: Int) throws {
        let pair = try f.api.pki.issue(serverFor: "edged-tunnel-server", ips: ["127.0.0.1"])
        try pair.certPEM.write(toFile: f.side.sub("tunnel.crt"), atomically: true, encoding: .utf8)
        try pair.keyPEM.write(toFile: f.side.sub("tunnel.key"), atomically: true, encoding: .utf8)
        try f.api.caPEM.write(toFile: f.side.sub("cluster-ca.crt"), atomically: true, encoding: .utf8)
        socket = f.side.sub("konnectivity.sock")
        args = ["\(buildBinDir)/edged", "tunnel-server", "--agent-bind-address", "127.0.0.1", "--agent-port", "\(agentPort)",
                "--cluster-cert", f.side.sub("tunnel.crt"), "--cluster-key", f.side.sub("tunnel.key"),
                "--cluster-ca-cert", f.side.sub("cluster-ca.crt"), "--uds-name", socket, "--server-id", "test-tunnel"]
    }

    func start(_ f: ClusterFixture, log: String) async throws -> BackgroundProcess {
        let p = try BackgroundProcess(args, output: f.side.sub(log))
        try await p.wait(for: "tunnel server listening")
        return p
    }
}

/// `edgectl status --json`'s cluster section.
func clusterStatus(_ f: ClusterFixture) throws -> [String: Any] {
    let out = try f.edged.edgectl(["status", "--json"], check: false).stdout
    let obj = (try? JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]) ?? [:]
    return obj["cluster"] as? [String: Any] ?? [:]
}

func waitForRemoteAccess(_ f: ClusterFixture, timeout: TimeInterval = 40) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    var last: [String: Any] = [:]
    while Date() < deadline {
        last = try clusterStatus(f)
        let kubelet = last["kubeletAPI"] as? [String: Any]
        let tunnel = last["tunnel"] as? [String: Any]
        // The issued serving certificate: the test API server verifies it (--kubelet-certificate-authority), while
        // the self-signed one that is served until the kubelet-serving CSR is approved would fail its dial.
        if kubelet?["listening"] != nil, kubelet?["servingCertificate"] as? String == "issued",
           (tunnel?["connectedServers"] as? Int ?? 0) >= 1 { return }
        try await Task.sleep(for: .milliseconds(250))
    }
    throw TestFailure("kubelet API or tunnel not up within \(Int(timeout)) s: \(last)")
}

@Suite(.serialized, .enabled(if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge")
                                && findExecutable("kubectl") != nil && findExecutable("curl") != nil,
                             "needs root, CNI plugins, kubectl and curl"))
struct RemoteAccessTests {
    @Test func kubectlReachesPodsOnlyThroughTheTunnel() async throws {
        let kubeletPort = try freeTCPPort(), agentPort = try freeTCPPort()
        try await withCluster(name: "remote", subnet: "10.250.76.0/24",
                              clusterConfig: "kubelet:\n  port: \(kubeletPort)\ntunnel:\n  server: 127.0.0.1:\(agentPort)\n") { f in
            try await Self.scenario(f, kubeletPort: kubeletPort, agentPort: agentPort)
        }
    }

    static func scenario(_ f: ClusterFixture, kubeletPort: Int, agentPort: Int) async throws {
        let tunnel = try TunnelServerProcess(f: f, agentPort: agentPort)
        var server = try await tunnel.start(f, log: "tunnel-1.log")
        defer { server.kill() }
        // The API server reaches kubelets only through the tunnel: no fallback to a direct dial.
        f.api.setEgress(.connectUnix(path: tunnel.socket))

        try f.edged.start()
        try f.join()
        _ = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }
        try await waitForRemoteAccess(f)
        let screen = try f.edged.edgectl(["status"], check: false).stdout
        #expect(screen.contains("kubelet API 0.0.0.0:\(kubeletPort)") && screen.contains("tunnel 1/1 server at 127.0.0.1:\(agentPort)"), "\(screen)")

        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("talker", node: f.node, command: """
            mkdir -p /tmp/w && echo hello-through-the-tunnel > /tmp/w/index.html && httpd -p 8080 -h /tmp/w
            i=0; while true; do echo "line $i"; i=$((i+1)); sleep 0.2; done
            """))
        _ = try await f.kubectl.wait(["get", "pod", "talker"], "talker Running") {
            path($0, "status", "phase") as? String == "Running" && condition($0, "Ready") == "True"
        }
        try await Task.sleep(for: .seconds(1))

        // kubectl logs, with kubelet's query parameters.
        let logs = try f.kubectl.run(["logs", "talker"]).stdout
        #expect(logs.hasPrefix("line 0\n"), "\(logs.prefix(200))")
        let tail = try f.kubectl.run(["logs", "talker", "--tail=2", "--timestamps"]).stdout
        let tailLines = tail.split(separator: "\n")
        #expect(tailLines.count == 2 && tailLines.allSatisfy { $0.contains("Z line ") }, "\(tail)")

        // kubectl logs -f: new lines keep arriving over the open stream.
        let follow = try BackgroundProcess(["kubectl", "--kubeconfig", f.kubectl.kubeconfig, "logs", "-f", "--tail=1", "talker"],
                                           output: f.side.sub("follow.log"))
        try await follow.wait(for: "line ")
        let first = follow.text.split(separator: "\n").count
        try await Task.sleep(for: .seconds(2))
        #expect(follow.text.split(separator: "\n").count >= first + 5, "followed: \(follow.text)")
        let streams = (try clusterStatus(f)["tunnel"] as? [String: Any])?["openStreams"] as? Int ?? 0
        #expect(streams >= 1, "the followed log must be a tunnel stream")

        // kubectl exec (WebSocket v5, kubectl 1.32's default) and over SPDY/3.1: output, stderr, exit code.
        for env in [[], ["KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false"]] {
            let r = try runCommand(["env"] + env + ["kubectl", "--kubeconfig", f.kubectl.kubeconfig, "exec", "talker", "--",
                                                     "sh", "-c", "echo out; echo err >&2; exit 3"], check: false)
            #expect(r.status == 3 && r.stdout == "out\n" && r.stderr.contains("err"), "\(env): \(r.status) \(r.stdout) \(r.stderr)")
            let input = f.side.sub("stdin.txt")
            try "hello stdin\n".write(toFile: input, atomically: true, encoding: .utf8)
            let cat = try runCommand(["sh", "-c", "env \(env.joined(separator: " ")) kubectl --kubeconfig \(f.kubectl.kubeconfig) exec -i talker -- cat < \(input)"], check: false)
            #expect(cat.status == 0 && cat.stdout == "hello stdin\n", "\(env): \(cat.status) \(cat.stdout) \(cat.stderr)")
        }
        // exec -it: a terminal inside the container (script gives kubectl a terminal of its own).
        if findExecutable("script") != nil {
            let tty = try runCommand(["script", "-qec", "kubectl --kubeconfig \(f.kubectl.kubeconfig) exec -it talker -- sh -c 'ls -l /proc/self/fd/0'", "/dev/null"], check: false)
            #expect(tty.stdout.contains("/dev/pts/"), "\(tty.stdout) \(tty.stderr)")
        }

        // kubectl port-forward (WebSocket tunnelling, the default, and SPDY) carries HTTP both ways.
        for (i, env) in [[String](), ["KUBECTL_PORT_FORWARD_WEBSOCKETS=false"]].enumerated() {
            let local = try freeTCPPort()
            let pf = try BackgroundProcess(["env"] + env + ["kubectl", "--kubeconfig", f.kubectl.kubeconfig, "port-forward", "pod/talker", "\(local):8080"],
                                           output: f.side.sub("pf-\(i).log"))
            defer { pf.kill() }
            try await pf.wait(for: "Forwarding from")
            for _ in 0..<3 {
                let body = try runCommand(["curl", "-sS", "--max-time", "10", "http://127.0.0.1:\(local)/"], check: false)
                #expect(body.stdout == "hello-through-the-tunnel\n", "\(env): \(body.stdout) \(body.stderr) \(pf.text)")
            }
        }

        // The kubelet API itself: no anonymous access, a user without a grant is forbidden.
        let anonymous = try runCommand(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "https://127.0.0.1:\(kubeletPort)/pods"], check: false)
        #expect(anonymous.stdout == "401")
        let mallory = try f.api.pki.issueClient(cn: "mallory")
        try mallory.certPEM.write(toFile: f.side.sub("mallory.crt"), atomically: true, encoding: .utf8)
        try mallory.keyPEM.write(toFile: f.side.sub("mallory.key"), atomically: true, encoding: .utf8)
        let forbidden = try runCommand(["curl", "-sk", "--cert", f.side.sub("mallory.crt"), "--key", f.side.sub("mallory.key"),
                                        "https://127.0.0.1:\(kubeletPort)/pods"], check: false)
        #expect(forbidden.stdout.contains("Forbidden") && forbidden.stdout.contains("user=mallory"), "\(forbidden.stdout)")
        // A bearer token (TokenReview) with a grant for nodes/proxy and nodes/metrics; a bad query value is a 400, an
        // unknown container a 404 naming it; metrics-server's endpoint answers in Prometheus text.
        f.api.addToken("ops-token", user: "ops")
        f.api.grant(user: "ops", verb: "get", resource: "nodes", subresource: "proxy")
        f.api.grant(user: "ops", verb: "get", resource: "nodes", subresource: "metrics")
        func kubelet(_ path: String, token: String = "ops-token") throws -> (code: String, body: String) {
            let r = try runCommand(["curl", "-sk", "-H", "Authorization: Bearer \(token)", "-w", "\n%{http_code}",
                                    "https://127.0.0.1:\(kubeletPort)\(path)"], check: false)
            let parts = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            return (String(parts.last ?? ""), parts.dropLast().joined(separator: "\n"))
        }
        let pods = try kubelet("/pods")
        #expect(pods.code == "200" && pods.body.contains("\"kind\":\"PodList\"") && pods.body.contains("talker"), "\(pods)")
        #expect(try kubelet("/pods", token: "no-such-token").code == "401")
        let bad = try kubelet("/containerLogs/default/talker/main?tailLines=abc")
        #expect(bad.code == "400" && bad.body.contains("tailLines"), "\(bad)")
        let missing = try kubelet("/containerLogs/default/talker/nope")
        #expect(missing.code == "404" && missing.body.contains("nope"), "\(missing)")
        let resource = try kubelet("/metrics/resource")
        #expect(resource.code == "200" && resource.body.contains("node_cpu_usage_seconds_total")
                && resource.body.contains("container=\"main\"") && resource.body.contains("pod=\"talker\""), "\(resource.body.prefix(600))")
        #expect(try kubelet("/stats/summary").code == "403", "stats needs nodes/stats")

        // The tunnel server dies in the middle of a followed log; once it is back, the agent reconnects and new
        // requests work.
        server.kill(SIGKILL)
        let cut = Date()
        while follow.process.isRunning, Date().timeIntervalSince(cut) < 15 { try await Task.sleep(for: .milliseconds(100)) }
        #expect(!follow.process.isRunning, "kubectl logs -f must end when the tunnel under it breaks")
        follow.kill()
        try? FileManager.default.removeItem(atPath: tunnel.socket)
        server = try await tunnel.start(f, log: "tunnel-2.log")
        try await waitForRemoteAccess(f, timeout: 60)
        let again = try f.kubectl.run(["logs", "talker", "--tail=1"]).stdout
        #expect(again.hasPrefix("line "), "\(again)")
    }
}
