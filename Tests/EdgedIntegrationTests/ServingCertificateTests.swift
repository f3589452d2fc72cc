// Issue [5]: a node whose kubelet-serving CSR nobody approves. kube-controller-manager approves the node's client CSR
// (csrapproving, for bootstrap tokens) but never kubelet-serving ones, and many clusters never do. Real edged, real
// openssl and curl, the test API server with auto-approval off: the test approves the client CSR as the controller would.
//
// Before: edged polled the serving CSR with a GET every 500 ms for as long as it waited (about 119 requests per node
// per minute) and the kubelet API did not listen, so kubectl logs/exec failed until someone approved it. Now: one
// list and one watch of that CSR, the kubelet API serving a self-signed certificate at once (kubelet's default),
// `edgectl status` naming the CSR to approve, and the issued certificate served as soon as it is approved, by the
// same process and listener.

import EdgedTestSupport
import Foundation
import Testing

private let csrPath = "/apis/certificates.k8s.io/v1/certificatesigningrequests"

extension ClusterFixture {
    /// CSRs of `signer` as the API server has them: (name, approved, issued).
    func csrs(signer: String) -> [(name: String, approved: Bool, issued: Bool)] {
        let (code, body) = api.call("GET", csrPath)
        guard code == 200, let list = try? JSONSerialization.jsonObject(with: body) as? [String: Any],
              let items = list["items"] as? [[String: Any]] else { return [] }
        return items.compactMap { item in
            guard path(item, "spec", "signerName") as? String == signer, let name = path(item, "metadata", "name") as? String
            else { return nil }
            let conditions = path(item, "status", "conditions") as? [[String: Any]] ?? []
            return (name, conditions.contains { $0["type"] as? String == "Approved" }, path(item, "status", "certificate") != nil)
        }
    }

    /// The certificate the kubelet API presents on `port`: openssl's "issuer=..." and "subject=..." lines, and
    /// whether it verifies against the cluster CA.
    func servedCertificate(port: Int) throws -> (issuer: String, subject: String, verifiesWithClusterCA: Bool) {
        let ca = "\(edged.stateDir)/pki/ca.crt"
        let names = try runCommand(["sh", "-c", "openssl s_client -connect 127.0.0.1:\(port) </dev/null 2>/dev/null | openssl x509 -noout -issuer -subject"], check: false)
        let lines = names.stdout.split(separator: "\n").map(String.init)
        let verify = try runCommand(["sh", "-c", "openssl s_client -connect 127.0.0.1:\(port) -CAfile \(ca) -verify_return_error </dev/null 2>&1"], check: false)
        return (lines.first { $0.hasPrefix("issuer") } ?? "", lines.first { $0.hasPrefix("subject") } ?? "",
                verify.status == 0 && verify.stdout.contains("Verify return code: 0 (ok)"))
    }

    /// Requests the node made about CSRs (its own user: system:node:<node>).
    func nodeCSRRequests() -> [KubeAPIServer.RequestRecord] {
        api.requests().filter { $0.user == nodeUser && $0.path.hasPrefix(csrPath) }
    }
}

@Suite(.serialized, .enabled(if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge")
                                && findExecutable("curl") != nil && findExecutable("openssl") != nil,
                             "needs root, the CNI bridge plugin, curl and openssl"))
struct ServingCertificateTests {
    @Test func selfSignedUntilTheServingCSRIsApprovedThenTheIssuedOne() async throws {
        let kubeletPort = try freeTCPPort()
        try await withCluster(name: "selfsig", subnet: "10.250.104.0/24", options: .init(autoApproveCSRs: false),
                              clusterConfig: "kubelet:\n  port: \(kubeletPort)\n") { f in
            try f.edged.start()
            // The join's client CSR: approved by the test, as kube-controller-manager's csrapproving does.
            // edgectl join blocks until the approval: on a thread of its own, not one of the few of Swift's pool
            // (parallel tests block the others with their commands, and this test must go on to approve).
            let joining = Task {
                try await withCheckedThrowingContinuation { (c: CheckedContinuation<CommandResult, any Error>) in
                    Thread.detachNewThread { c.resume(with: Result { try f.join(["--approval-timeout", "60"]) }) }
                }
            }
            var clientCSR: String?
            for _ in 0..<200 where clientCSR == nil {
                clientCSR = f.csrs(signer: "kubernetes.io/kube-apiserver-client-kubelet").first?.name
                if clientCSR == nil { try await Task.sleep(for: .milliseconds(100)) }
            }
            let client = try #require(clientCSR, "edgectl join made no client CSR")
            try f.api.approveCSR(client)
            let joined = try await joining.value
            #expect(joined.stdout.contains("joined"), "\(joined.stdout)\(joined.stderr)")
            // The join waited with a list and a watch of its CSR, not a GET every 500 ms.
            let joinRequests = f.api.requests().filter { $0.user == "system:bootstrap:abcdef" && $0.path.hasPrefix(csrPath) }
            #expect(joinRequests.count <= 3, "create, list, watch: \(joinRequests)")

            // The serving CSR appears and nobody approves it.
            var servingCSR: String?
            for _ in 0..<200 where servingCSR == nil {
                servingCSR = f.csrs(signer: "kubernetes.io/kubelet-serving").first?.name
                if servingCSR == nil { try await Task.sleep(for: .milliseconds(100)) }
            }
            let csr = try #require(servingCSR, "no kubelet-serving CSR")

            // The kubelet API answers at once, with kubelet's kind of self-signed certificate.
            var served = try f.servedCertificate(port: kubeletPort)
            for _ in 0..<100 where served.issuer.isEmpty {
                try await Task.sleep(for: .milliseconds(100))
                served = try f.servedCertificate(port: kubeletPort)
            }
            #expect(served.issuer.contains("CN=\(f.node)-ca@") || served.issuer.contains("CN = \(f.node)-ca@"), "\(served)")
            #expect(served.subject.contains("\(f.node)@"), "\(served)")
            #expect(!served.verifiesWithClusterCA)
            let pki = "\(f.edged.stateDir)/pki"
            #expect(FileManager.default.fileExists(atPath: "\(pki)/kubelet.crt") && FileManager.default.fileExists(atPath: "\(pki)/kubelet.key"))
            #expect(!FileManager.default.fileExists(atPath: "\(pki)/kubelet-server-current.pem"))
            let keyMode = try FileManager.default.attributesOfItem(atPath: "\(pki)/kubelet.key")[.posixPermissions] as? Int
            #expect(keyMode == 0o600)
            // An HTTP answer over that TLS (401: no credentials, anonymous access is off).
            let anonymous = try runCommand(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "https://127.0.0.1:\(kubeletPort)/pods"], check: false)
            #expect(anonymous.stdout == "401", "\(anonymous.stdout) \(anonymous.stderr)")

            // edgectl status says so and names the CSR to approve.
            var kubelet: [String: Any] = [:]
            for _ in 0..<50 {
                kubelet = (try clusterStatus(f))["kubeletAPI"] as? [String: Any] ?? [:]
                if kubelet["servingCSR"] != nil { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(kubelet["listening"] as? String == "0.0.0.0:\(kubeletPort)", "\(kubelet)")
            #expect(kubelet["servingCertificate"] as? String == "self-signed", "\(kubelet)")
            #expect(kubelet["servingCSR"] as? String == csr, "\(kubelet)")
            let screen = try f.edged.edgectl(["status"], check: false)
            #expect(screen.status == 0, "a self-signed serving certificate is kubelet's default, not a problem: \(screen.stdout)")
            #expect(screen.stdout.contains("kubelet API 0.0.0.0:\(kubeletPort) (self-signed serving certificate: the kubelet-serving CSR \(csr) waits for approval — kubectl certificate approve \(csr))"), "\(screen.stdout)")
            let pid = try f.edged.status()["pid"] as? Int

            // 20 s of waiting: the node keeps one watch on its CSR and sends nothing else about it (the old loop: 40).
            let windowStart = f.nodeCSRRequests().count
            try await Task.sleep(for: .seconds(20))
            let window = Array(f.nodeCSRRequests().dropFirst(windowStart))
            let all = f.nodeCSRRequests()
            #expect(window.isEmpty, "CSR requests in 20 s of waiting: \(window)")
            #expect(all.count <= 3, "create, list, watch: \(all)")
            #expect(f.api.openWatches("certificatesigningrequests", namespace: nil, name: csr) == 1)
            print("serving-CSR: node requests about CSRs while waiting: \(all.map { "\($0.method) \($0.path.prefix(120))" }); in the 20 s window: \(window.count) (\(Double(window.count) * 3) per minute)")

            // Approved (through /approval, as `kubectl certificate approve` does; this kubectl would send protobuf,
            // which the test API server does not read) → the issued certificate is served, by the same edged.
            let approved = Date()
            try f.api.approveCSR(csr)
            var issued = false
            while !issued && Date().timeIntervalSince(approved) < 15 {
                issued = try f.servedCertificate(port: kubeletPort).verifiesWithClusterCA
                if !issued { try await Task.sleep(for: .milliseconds(200)) }
            }
            served = try f.servedCertificate(port: kubeletPort)
            #expect(issued, "the kubelet API still serves \(served)")
            print("serving-CSR: issued certificate served \(String(format: "%.1f", Date().timeIntervalSince(approved))) s after the approval")
            #expect(served.subject.contains("system:node:\(f.node)"), "\(served)")
            #expect(FileManager.default.fileExists(atPath: "\(pki)/kubelet-server-current.pem"))
            #expect(try f.edged.status()["pid"] as? Int == pid, "edged restarted")
            var line = ""
            for _ in 0..<50 {
                line = try f.edged.edgectl(["status"], check: false).stdout
                if line.contains("kubelet API 0.0.0.0:\(kubeletPort)") && !line.contains("self-signed") { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(line.contains("kubelet API 0.0.0.0:\(kubeletPort)") && !line.contains("self-signed"), "\(line)")
            kubelet = (try clusterStatus(f))["kubeletAPI"] as? [String: Any] ?? [:]
            #expect(kubelet["servingCertificate"] as? String == "issued" && kubelet["servingCSR"] == nil, "\(kubelet)")
            var open = 1
            for _ in 0..<50 where open > 0 {
                open = f.api.openWatches("certificatesigningrequests", namespace: nil, name: csr)
                if open > 0 { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(open == 0, "the CSR's watch is closed once the certificate came")
            #expect(f.nodeCSRRequests().count == all.count, "nothing about CSRs after the certificate: \(f.nodeCSRRequests())")
        }
    }
}
