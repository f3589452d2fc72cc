// The real `kubectl proxy` in front of the test API server (the hub benchmark compares against it).

import Foundation
import Testing
@testable import EdgedTestSupport

private let kubectlPath = ["/usr/bin/kubectl", "/usr/local/bin/kubectl"].first { FileManager.default.isExecutableFile(atPath: $0) }

/// `kubectl proxy --port 0`, with the port it printed.
final class KubectlProxy: @unchecked Sendable {
    private let process = Process()
    let port: Int

    init(kubeconfig: String) async throws {
        process.executableURL = URL(fileURLWithPath: kubectlPath!)
        process.arguments = ["proxy", "--kubeconfig", kubeconfig, "--port", "0"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        // "Starting to serve on 127.0.0.1:41234"
        let handle = pipe.fileHandleForReading
        let found: Int? = await withCheckedContinuation { cont in
            Thread.detachNewThread {
                var text = ""
                while true {
                    let chunk = handle.availableData
                    if chunk.isEmpty { cont.resume(returning: nil); return }
                    text += String(decoding: chunk, as: UTF8.self)
                    if let r = text.range(of: "Starting to serve on 127.0.0.1:"),
                       let nl = text[r.upperBound...].firstIndex(of: "\n") {
                        cont.resume(returning: Int(text[r.upperBound..<nl]))
                        // Keep draining so kubectl never blocks on a full pipe.
                        while !handle.availableData.isEmpty {}
                        return
                    }
                }
            }
        }
        guard let found else {
            kill(process.processIdentifier, SIGKILL)
            throw TestFailure("kubectl proxy did not say where it serves")
        }
        port = found
    }

    func stop() {
        let pid = process.processIdentifier
        if pid > 0 { kill(pid, SIGKILL) }
    }
}

@Suite(.enabled(if: kubectlPath != nil, "kubectl is not installed"))
struct KubeAPIServerKubectlProxyTests {
    @Test func kubectlProxyServesListsGetsAndWatches() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let kubeconfig = f.dir.sub("admin.conf")
        try f.server.writeAdminKubeconfig(to: kubeconfig)
        try f.server.createPods(namespace: "bench", count: 200, nodeName: "edge-1")
        let proxy = try await KubectlProxy(kubeconfig: kubeconfig)
        defer { proxy.stop() }
        let base = "http://127.0.0.1:\(proxy.port)"
        func get(_ path: String) throws -> (code: Int, json: [String: Any]) {
            let r = try runCommand(["/usr/bin/curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}", base + path])
            let nl = r.stdout.lastIndex(of: "\n")!
            let json = (try? JSONSerialization.jsonObject(with: Data(r.stdout[..<nl].utf8))) as? [String: Any] ?? [:]
            return (Int(r.stdout[r.stdout.index(after: nl)...]) ?? 0, json)
        }
        let pods = try get("/api/v1/pods")
        #expect(pods.code == 200 && str(pods.json, "kind") == "PodList")
        #expect((value(pods.json, "items") as? [Any])?.count == 200)
        #expect(try get("/api/v1/namespaces/bench/pods/pod-7").json["metadata"] != nil)
        #expect(try get("/api/v1/namespaces/bench/pods/nope").code == 404)
        #expect(try get("/api").code == 200)
        #expect(str(try get("/apis").json, "kind") == "APIGroupList")
        #expect(str(try get("/version").json, "gitVersion") == KubeDiscovery.gitVersion)
        #expect(try get("/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1&limit=10").json["items"] != nil)
        // The requests reached the server as the kubeconfig's admin.
        #expect(f.server.requests().contains { $0.path == "/api/v1/pods" && $0.code == 200 && $0.user == "kubernetes-admin" })

        // A watch streams through the proxy.
        let rv = f.server.resourceVersion
        let w = try WatchReader(args: ["-sS", "-N", "\(base)/api/v1/namespaces/bench/pods?watch=1&resourceVersion=\(rv)"])
        defer { w.stop() }
        try await Task.sleep(for: .milliseconds(300))
        try f.server.createPods(namespace: "bench", count: 1, namePrefix: "late-")
        let e = try await w.nextChange()
        #expect(e["type"] as? String == "ADDED" && str(e, "object.metadata.name") == "late-0")
    }
}
