// The listen address, port and extra serving-certificate names (Options.listenHost/listenPort/extraServingNames),
// which `edged-bench test-apiserver` uses so that a VM reaching this host as 10.0.2.2 can join the server.

import Foundation
import Testing
@testable import EdgedTestSupport

@Suite struct KubeAPIServerListenTests {
    /// curl of /version at `host`:port, connected to 127.0.0.1, verifying the certificate for `host`.
    private func version(_ f: APIFixture, as host: String) throws -> CommandResult {
        let port = f.server.port
        return try runCommand(["/usr/bin/curl", "-sS", "--max-time", "10", "--cacert", f.caFile,
                               "--connect-to", "\(host):\(port):127.0.0.1:\(port)", "https://\(host):\(port)/version"],
                              check: false)
    }

    @Test func extraNamesAreOnTheServingCertificateAndTheFirstIsAdvertised() async throws {
        let f = try await APIFixture(options: .init(extraServingNames: ["10.0.2.2", "gw-host.example"]))
        defer { Task { await f.close() } }
        #expect(f.server.url == "https://127.0.0.1:\(f.server.port)")
        for host in ["10.0.2.2", "gw-host.example", "127.0.0.1", "localhost"] {
            let r = try version(f, as: host)
            #expect(r.status == 0 && r.stdout.contains("gitVersion"), "\(host): \(r.stderr)")
        }
        // A name the certificate does not carry fails verification (curl 60: peer certificate cannot be authenticated).
        let other = try version(f, as: "10.0.2.3")
        #expect(other.status == 60, "10.0.2.3 verified: \(other.stdout) \(other.stderr)")
        // cluster-info (what a joining node reads) and discovery advertise the first extra name.
        try f.server.addBootstrapToken(id: "abcdef", secret: "0123456789abcdef")
        let ci = try f.request("GET", "/api/v1/namespaces/kube-public/configmaps/cluster-info", as: .anonymous)
        #expect(str(ci.json, "data.kubeconfig")?.contains("server: https://10.0.2.2:\(f.server.port)\n") == true)
        let api = try f.request("GET", "/api")
        let addresses = value(api.json, "serverAddressByClientCIDRs") as? [[String: Any]]
        #expect(addresses?.first?["serverAddress"] as? String == "10.0.2.2:\(f.server.port)")
    }

    @Test func withoutExtraNamesNothingElseVerifies() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        #expect(try version(f, as: "10.0.2.2").status == 60)
        try f.server.addBootstrapToken(id: "abcdef", secret: "0123456789abcdef")
        let ci = try f.request("GET", "/api/v1/namespaces/kube-public/configmaps/cluster-info", as: .anonymous)
        #expect(str(ci.json, "data.kubeconfig")?.contains("server: \(f.server.url)\n") == true)
    }

    @Test func aGivenPortIsUsedAcrossStopAndResumeAndABusyOneIsRefused() async throws {
        let port = try freeTCPPort()
        let f = try await APIFixture(options: .init(listenHost: "127.0.0.1", listenPort: port))
        defer { Task { await f.close() } }
        #expect(f.server.port == port && f.server.url == "https://127.0.0.1:\(port)")
        #expect(try f.request("GET", "/version").code == 200)
        try await f.server.stop()
        try await f.server.resume()
        #expect(try f.request("GET", "/version").code == 200)
        // A second server on the same port fails to start (and says why) instead of serving elsewhere.
        await #expect(throws: (any Error).self) { _ = try await KubeAPIServer.start(options: .init(listenPort: port)) }
    }

    @Test func anEmptyServingNameIsRefused() async throws {
        do {
            let s = try await KubeAPIServer.start(options: .init(extraServingNames: [""]))
            try await s.shutdown()
            Issue.record("an empty serving name was accepted")
        } catch let e as KubeAPIServer.Failure {
            #expect(e.code == 400 && e.message.contains("empty serving certificate name"))
        }
    }
}
