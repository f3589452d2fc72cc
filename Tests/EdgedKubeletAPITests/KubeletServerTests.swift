// The kubelet API server against the real test API server's TokenReview/SubjectAccessReview: review caching with
// kubelet's TTLs, a review that cannot be made is never an allow, and a serving certificate replaced on disk is what
// new connections get. The node side is a small backend over a real CRI log file.

import EdgedCore
import EdgedKube
import EdgedKubeletAPI
import EdgedTestSupport
import Foundation
import Logging
import Testing

/// A node with one pod whose container log is a real CRI file.
private struct FileBackend: KubeletBackend {
    let log: String
    func podList() async -> JSONValue {
        .object([("kind", .string("PodList")), ("apiVersion", .string("v1")), ("items", .array([]))])
    }
    func logPath(_ ref: ContainerRef, previous: Bool) async throws -> String {
        guard ref.namespace == "default", ref.pod == "p", ref.container == "c" else {
            throw EdgedError(.notFound, "\(ref) not found on this node")
        }
        return log
    }
    func exec(_ ref: ContainerRef, command: [String], stdin: Bool, tty: Bool) async throws -> ContainerProcess {
        throw EdgedError(.notFound, "no exec in this test")
    }
    func portForward(namespace: String, pod: String, uid: String?, port: UInt16) async throws -> Int32 {
        throw EdgedError(.notFound, "no port-forward in this test")
    }
    func statsSummary() async throws -> JSONValue { .object([]) }
    func resourceUsage() async throws -> NodeResourceUsage {
        NodeResourceUsage(timestampMillis: 0, node: .init(cpuSeconds: 1, memoryWorkingSetBytes: 1), containers: [])
    }
}

private final class KubeletFixture: @unchecked Sendable {
    let api: KubeAPIServer
    let dir: TempDir
    let server: KubeletServer
    let task: Task<Void, any Error>
    let port: Int

    /// `selfSigned`: no serving.pem yet, only a fallback pair from a CA of its own (fallback.pem), as the daemon
    /// serves until the kubelet-serving CSR is approved.
    init(allowedTTL: Duration = .seconds(300), selfSigned: Bool = false) async throws {
        api = try await KubeAPIServer.start()
        dir = try TempDir("edged-kubelet-api")
        if selfSigned {
            let pair = try TestPKI.makeCA(commonName: "node-a-ca@1").issue(serverFor: "node-a@1", ips: ["127.0.0.1"])
            try (pair.certPEM + "\n" + pair.keyPEM).write(toFile: dir.sub("fallback.pem"), atomically: true, encoding: .utf8)
        } else {
            let pair = try api.pki.issue(serverFor: "node-a", ips: ["127.0.0.1"])
            try (pair.certPEM + "\n" + pair.keyPEM).write(toFile: dir.sub("serving.pem"), atomically: true, encoding: .utf8)
        }
        try api.caPEM.write(toFile: dir.sub("ca.crt"), atomically: true, encoding: .utf8)
        let record = CRILogRecord(timestamp: CRITimestamp.now(), stream: .stdout, isPartial: false, message: Array("hello".utf8))
        FileManager.default.createFile(atPath: dir.sub("c.log"), contents: Data(record.encoded()))
        let client = try KubeClient(config: KubeClientConfig(
            server: api.url, caPEM: api.caPEM,
            credentials: .clientCertificate(certificatePEM: api.adminCertPEM, privateKeyPEM: api.adminKeyPEM),
            userAgent: "edged/test", requestTimeout: .seconds(5)))
        var logger = Logger(label: "kubelet-test")
        logger.logLevel = .warning
        server = KubeletServer(
            config: KubeletServerConfig(host: "127.0.0.1", port: 0, certPath: dir.sub("serving.pem"), keyPath: dir.sub("serving.pem"),
                                        clientCAPath: dir.sub("ca.crt"), nodeName: "node-a", authorizedCacheTTL: allowedTTL,
                                        fallbackCertPath: selfSigned ? dir.sub("fallback.pem") : nil,
                                        fallbackKeyPath: selfSigned ? dir.sub("fallback.pem") : nil),
            backend: FileBackend(log: dir.sub("c.log")), client: client, logger: logger)
        let s = server
        task = Task { try await s.run() }
        var bound: Int?
        for _ in 0..<200 {
            bound = server.boundPort
            if bound != nil { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        if bound == nil {
            task.cancel()
            if case .failure(let error) = await task.result { Issue.record("the kubelet server did not start: \(error)") }
        }
        port = try #require(bound)
    }

    /// curl with a bearer token; returns (HTTP code, body, the -v output).
    func get(_ path: String, token: String) throws -> (code: String, body: String, verbose: String) {
        let r = try runCommand(["curl", "-sS", "-v", "--cacert", dir.sub("ca.crt"), "-H", "Authorization: Bearer \(token)",
                                "-w", "\n%{http_code}", "https://127.0.0.1:\(port)\(path)"], check: false)
        let parts = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        return (String(parts.last ?? ""), parts.dropLast().joined(separator: "\n"), r.stderr)
    }

    func close() async {
        server.shutdown()
        _ = await task.result
        try? await api.shutdown()
        dir.remove()
    }
}

@Suite(.serialized, .enabled(if: findExecutable("curl") != nil, "needs curl"))
struct KubeletServerTests {
    @Test func reviewsAreCachedWithTheirTTLs() async throws {
        let f = try await KubeletFixture(allowedTTL: .seconds(1))
        f.api.addToken("t1", user: "alice")
        f.api.grant(user: "alice", verb: "get", resource: "nodes", subresource: "proxy")
        let (tr0, sar0) = (f.api.tokenReviewCount, f.api.subjectAccessReviewCount)
        let first = try f.get("/containerLogs/default/p/c", token: "t1")
        #expect(first.code == "200" && first.body == "hello\n", "\(first.code) \(first.body)")
        #expect(try f.get("/containerLogs/default/p/c", token: "t1").code == "200")
        // One TokenReview and one SubjectAccessReview for both requests.
        #expect(f.api.tokenReviewCount == tr0 + 1)
        #expect(f.api.subjectAccessReviewCount == sar0 + 1)
        // The allowed answer lives 1 s here: after it, a new SubjectAccessReview (the token's 2 min still hold).
        try await Task.sleep(for: .milliseconds(1500))
        #expect(try f.get("/containerLogs/default/p/c", token: "t1").code == "200")
        #expect(f.api.subjectAccessReviewCount == sar0 + 2)
        #expect(f.api.tokenReviewCount == tr0 + 1)
        // Unknown container: 404 naming it.
        let missing = try f.get("/containerLogs/default/p/nope", token: "t1")
        #expect(missing.code == "404" && missing.body.contains("nope"), "\(missing)")
        await f.close()
    }

    @Test func aReviewThatCannotBeMadeIsNeverAnAllow() async throws {
        let f = try await KubeletFixture()
        f.api.addToken("t2", user: "bob")
        f.api.grant(user: "bob", verb: "get", resource: "nodes", subresource: "proxy")
        try await f.api.stop()
        let r = try f.get("/pods", token: "t2")
        #expect(r.code.hasPrefix("5"), "the API server is down: \(r.code) \(r.body)")
        #expect(!r.body.contains("PodList"))
        // Once it is back, the same caller gets through (the failure was not cached as a denial).
        try await f.api.resume()
        var code = ""
        for _ in 0..<50 where code != "200" {
            code = try f.get("/pods", token: "t2").code
            if code != "200" { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(code == "200")
        await f.close()
    }

    @Test func aServingCertificateReplacedOnDiskIsWhatNewConnectionsGet() async throws {
        let f = try await KubeletFixture()
        let before = try f.get("/healthz", token: "none").verbose
        let next = try f.api.pki.issue(serverFor: "node-a-rotated", ips: ["127.0.0.1"])
        // Written like the credential store does: a new file renamed over the old one.
        try (next.certPEM + "\n" + next.keyPEM).write(toFile: f.dir.sub("serving.pem.tmp"), atomically: false, encoding: .utf8)
        rename(f.dir.sub("serving.pem.tmp"), f.dir.sub("serving.pem"))
        var after = ""
        for _ in 0..<50 where !after.contains("node-a-rotated") {
            after = try f.get("/healthz", token: "none").verbose
            if !after.contains("node-a-rotated") { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(before.contains("CN=node-a") && !before.contains("node-a-rotated"))
        #expect(after.contains("node-a-rotated"), "\(after.suffix(800))")
        await f.close()
    }

    /// The daemon's case before the kubelet-serving CSR is approved: the self-signed fallback is served at once; a
    /// half-written issued file (certificate, no key yet) leaves it in place; the complete file is what new
    /// connections get, from the same listener.
    @Test func theSelfSignedFallbackIsServedUntilTheIssuedCertificateAppears() async throws {
        let f = try await KubeletFixture(selfSigned: true)
        #expect(f.server.servingCertificate() == .selfSigned)
        let insecure = try runCommand(["curl", "-sSk", "-v", "-o", "/dev/null", "https://127.0.0.1:\(f.port)/healthz"], check: false)
        #expect(insecure.stderr.contains("CN=node-a-ca@1") || insecure.stderr.contains("CN = node-a-ca@1"), "\(insecure.stderr.suffix(800))")
        let verified = try f.get("/healthz", token: "none")
        #expect(verified.code == "000", "the self-signed certificate does not verify with the cluster CA: \(verified.verbose.suffix(400))")

        let issued = try f.api.pki.issue(serverFor: "node-a-issued", ips: ["127.0.0.1"])
        try issued.certPEM.write(toFile: f.dir.sub("serving.pem"), atomically: true, encoding: .utf8)
        #expect(f.server.servingCertificate() == .selfSigned, "a certificate without its key does not replace the fallback")
        let still = try runCommand(["curl", "-sSk", "-v", "-o", "/dev/null", "https://127.0.0.1:\(f.port)/healthz"], check: false)
        #expect(still.stderr.contains("node-a-ca@1"), "\(still.stderr.suffix(800))")

        try (issued.certPEM + "\n" + issued.keyPEM).write(toFile: f.dir.sub("serving.pem.tmp"), atomically: false, encoding: .utf8)
        rename(f.dir.sub("serving.pem.tmp"), f.dir.sub("serving.pem"))
        let after = try f.get("/healthz", token: "none")
        #expect(after.verbose.contains("node-a-issued") && after.code == "401", "\(after.code) \(after.verbose.suffix(800))")
        #expect(f.server.servingCertificate() == .issued)
        await f.close()
    }

    /// A fallback that does not load (and no issued certificate): the server does not start and says which file.
    @Test func anUnreadableFallbackIsATLSErrorNamingTheFile() async throws {
        let dir = try TempDir("edged-kubelet-api-bad")
        defer { dir.remove() }
        let pki = try TestPKI.makeCA()
        try pki.caPEM.write(toFile: dir.sub("ca.crt"), atomically: true, encoding: .utf8)
        try "-----BEGIN CERTIFICATE-----\nhalf".write(toFile: dir.sub("fallback.pem"), atomically: true, encoding: .utf8)
        let client = try KubeClient(config: KubeClientConfig(server: "https://127.0.0.1:1", caPEM: pki.caPEM, credentials: .none))
        let server = KubeletServer(
            config: KubeletServerConfig(host: "127.0.0.1", port: 0, certPath: dir.sub("serving.pem"), keyPath: dir.sub("serving.pem"),
                                        clientCAPath: dir.sub("ca.crt"), nodeName: "node-a",
                                        fallbackCertPath: dir.sub("fallback.pem"), fallbackKeyPath: dir.sub("fallback.pem")),
            backend: FileBackend(log: dir.sub("c.log")), client: client)
        let e = await #expect(throws: KubeletServerError.self) { try await server.run() }
        #expect(e?.code == .tls && e?.message.contains(dir.sub("fallback.pem")) == true, "\(String(describing: e))")
        #expect(server.servingCertificate() == nil)
    }
}
