// Credentials of the cloud-side commands: kubeconfigs as kubeadm/kubectl write them (inline data, files relative to
// the kubeconfig, tokens, token files that rotate), the in-cluster ServiceAccount, and an error for each way a
// kubeconfig can be unusable that names the file and the field.

@testable import EdgedAutonomy
import EdgedCore
import EdgedKube
import EdgedTestSupport
import Foundation
import Synchronization
import Testing

private func b64(_ s: String) -> String { Data(s.utf8).base64EncodedString() }

private func write(_ text: String, _ path: String) throws {
    try text.write(toFile: path, atomically: true, encoding: .utf8)
}

/// A kubeconfig with one context, "ctx", its cluster and user given as YAML lines.
private func kubeconfig(cluster: [String], user: [String], currentContext: String = "ctx") -> String {
    """
    apiVersion: v1
    kind: Config
    clusters:
    - name: c1
      cluster:
    \(cluster.map { "    " + $0 }.joined(separator: "\n"))
    users:
    - name: u1
      user:
    \(user.map { "    " + $0 }.joined(separator: "\n"))
    contexts:
    - name: ctx
      context: {cluster: c1, user: u1}
    current-context: \(currentContext)

    """
}

@Suite struct ClusterAccessTests {
    private func nodes(_ access: ClusterAccess) async throws -> Int {
        let client = try KubeClient(config: access.config)
        return try await client.list(.nodes).items.count
    }

    @Test func adminKubeconfigWithInlineData() async throws {
        let api = try await KubeAPIServer.start(options: .init(nodeLifecycle: nil))
        defer { Task { try? await api.shutdown() } }
        let dir = try TempDir("kubeconfig")
        defer { dir.remove() }
        try api.writeAdminKubeconfig(to: dir.sub("admin.conf"))
        let access = try ClusterAccess.kubeconfig(path: dir.sub("admin.conf"), userAgent: "t")
        #expect(access.config.server == api.url && access.tokenFile == nil)
        #expect(access.source == "kubeconfig \(dir.sub("admin.conf")), context test")
        guard case .clientCertificate = access.config.credentials else { Issue.record("\(access.config.credentials)"); return }
        _ = try await nodes(access)
    }

    @Test func filesRelativeToTheKubeconfigAndTokenFilesThatRotate() async throws {
        let api = try await KubeAPIServer.start(options: .init(nodeLifecycle: nil))
        defer { Task { try? await api.shutdown() } }
        let dir = try TempDir("kubeconfig")
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.sub("pki"), withIntermediateDirectories: true)
        try write(api.caPEM, dir.sub("pki/ca.crt"))
        try write(api.adminCertPEM, dir.sub("pki/admin.crt"))
        try write(api.adminKeyPEM, dir.sub("pki/admin.key"))
        try write(kubeconfig(cluster: ["server: \(api.url)", "certificate-authority: pki/ca.crt"],
                             user: ["client-certificate: pki/admin.crt", "client-key: \(dir.sub("pki/admin.key"))"]), dir.sub("files.conf"))
        _ = try await nodes(try ClusterAccess.kubeconfig(path: dir.sub("files.conf"), userAgent: "t"))

        api.addToken("first-token", user: "first", groups: ["system:masters"])
        api.addToken("second-token", user: "second", groups: ["system:masters"])
        try write("first-token\n", dir.sub("token"))
        try write(kubeconfig(cluster: ["server: \(api.url)", "certificate-authority-data: \(b64(api.caPEM))"],
                             user: ["tokenFile: token"]), dir.sub("tokenfile.conf"))
        let access = try ClusterAccess.kubeconfig(path: dir.sub("tokenfile.conf"), userAgent: "t")
        #expect(access.tokenFile == dir.sub("token") && access.config.credentials == .bearerToken("first-token"))
        let client = try KubeClient(config: access.config)
        _ = try await client.list(.nodes)
        #expect(api.requests().last?.user == "first")
        // The token is rotated on disk: the client picks it up at the next re-read.
        let errors = Mutex([String]())
        let refresher = Task {
            await ClusterAccess.refreshToken(file: dir.sub("token"), client: client, current: "first-token",
                                             interval: .milliseconds(50)) { e in errors.withLock { $0.append(e) } }
        }
        defer { refresher.cancel() }
        try write("second-token", dir.sub("token"))
        try await eventually("the new token in use") {
            _ = try await client.list(.nodes)
            return api.requests().last?.user == "second"
        }
        // A token file that cannot be read keeps the last token, and says so.
        try FileManager.default.removeItem(atPath: dir.sub("token"))
        try await eventually("the error") { !errors.withLock { $0 }.isEmpty }
        _ = try await client.list(.nodes)
        #expect(api.requests().last?.user == "second")
        #expect(errors.withLock { $0 }.first?.contains("cannot re-read the token \(dir.sub("token"))") == true)

        // An inline token.
        try write(kubeconfig(cluster: ["server: \(api.url)", "certificate-authority-data: \(b64(api.caPEM))"],
                             user: ["token: second-token"]), dir.sub("token.conf"))
        let inline = try ClusterAccess.kubeconfig(path: dir.sub("token.conf"), userAgent: "t")
        #expect(inline.config.credentials == .bearerToken("second-token") && inline.tokenFile == nil)
        _ = try await nodes(inline)
        // insecure-skip-tls-verify, no CA.
        try write(kubeconfig(cluster: ["server: \(api.url)", "insecure-skip-tls-verify: true"], user: ["token: second-token"]),
                  dir.sub("insecure.conf"))
        let insecure = try ClusterAccess.kubeconfig(path: dir.sub("insecure.conf"), userAgent: "t")
        #expect(insecure.config.insecureSkipTLSVerify && insecure.config.caPEM == nil)
        _ = try await nodes(insecure)
    }

    @Test func everyUnusableKubeconfigNamesTheFileAndTheField() throws {
        let dir = try TempDir("kubeconfig")
        defer { dir.remove() }
        let ca = "certificate-authority-data: \(b64("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))"
        let cases: [(String, String)] = [
            ("apiVersion: v1\nclusters: []\n", "no current-context: set one with `kubectl config use-context NAME"),
            (kubeconfig(cluster: ["server: https://x"], user: ["token: t"], currentContext: "other"), "current-context \"other\" is not in contexts"),
            (kubeconfig(cluster: [ca], user: ["token: t"]), "cluster \"c1\" has no server"),
            (kubeconfig(cluster: ["server: https://x", "certificate-authority-data: '%%%'"], user: ["token: t"]),
             "cluster \"c1\" certificate-authority-data is not valid base64"),
            (kubeconfig(cluster: ["server: https://x", "certificate-authority-data: \(b64("hello"))"], user: ["token: t"]),
             "the certificate authority of cluster \"c1\" is not a PEM certificate"),
            (kubeconfig(cluster: ["server: https://x", "certificate-authority: missing/ca.crt"], user: ["token: t"]),
             "cluster \"c1\" certificate-authority \(dir.path)/missing/ca.crt: cannot read it"),
            (kubeconfig(cluster: ["server: https://x", ca], user: ["username: admin"]),
             "user \"u1\" has no credentials: give token, tokenFile, or client-certificate(-data) and client-key(-data)"),
            (kubeconfig(cluster: ["server: https://x", ca], user: ["exec: {command: aws, apiVersion: client.authentication.k8s.io/v1beta1}"]),
             "authenticates with exec/auth-provider, which edged does not run"),
            (kubeconfig(cluster: ["server: https://x", ca], user: ["client-certificate-data: \(b64("cert"))"]),
             "has a client certificate without its key"),
            (kubeconfig(cluster: ["server: https://x", ca], user: ["tokenFile: nothing-here"]),
             "user \"u1\" tokenFile \(dir.path)/nothing-here: cannot read it"),
            ("clusters: [", "not valid YAML"),
            ("", "the file is empty or not a YAML mapping"),
        ]
        for (i, (text, expected)) in cases.enumerated() {
            let file = dir.sub("bad-\(i).conf")
            try write(text, file)
            do {
                _ = try ClusterAccess.kubeconfig(path: file, userAgent: "t")
                Issue.record("case \(i) was accepted: \(expected)")
            } catch {
                #expect(error.message.hasPrefix("kubeconfig \(file): "), "\(error.message)")
                #expect(error.message.contains(expected), "case \(i): \(error.message)")
            }
        }
        do {
            _ = try ClusterAccess.kubeconfig(path: dir.sub("absent.conf"), userAgent: "t")
            Issue.record("a missing kubeconfig was accepted")
        } catch {
            #expect(error.message == "kubeconfig \(dir.sub("absent.conf")): cannot read it (No such file or directory): check --kubeconfig")
        }
    }

    @Test func inClusterServiceAccount() throws {
        let dir = try TempDir("serviceaccount")
        defer { dir.remove() }
        let env = { (vars: [String: String]) in { (name: String) in vars[name] } }
        #expect(throws: EdgedError.self) { try ClusterAccess.inCluster(userAgent: "t", directory: dir.path, environment: env([:])) }
        do {
            _ = try ClusterAccess.inCluster(userAgent: "t", directory: dir.path, environment: env([:]))
        } catch {
            #expect(error.message.contains("KUBERNETES_SERVICE_HOST/PORT are not set): give --kubeconfig PATH"))
        }
        let vars = env(["KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"])
        do {
            _ = try ClusterAccess.inCluster(userAgent: "t", directory: dir.path, environment: vars)
            Issue.record("no token was accepted")
        } catch {
            #expect(error.message.contains("cannot read the ServiceAccount token \(dir.path)/token"), "\(error.message)")
        }
        try write("tok\n", dir.sub("token"))
        #expect(throws: EdgedError.self) { try ClusterAccess.inCluster(userAgent: "t", directory: dir.path, environment: vars) }
        try write("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", dir.sub("ca.crt"))
        let access = try ClusterAccess.inCluster(userAgent: "t", directory: dir.path, environment: vars)
        #expect(access.config.server == "https://10.96.0.1:443" && access.config.credentials == .bearerToken("tok"))
        #expect(access.tokenFile == dir.sub("token"))
        let v6 = try ClusterAccess.inCluster(userAgent: "t", directory: dir.path,
                                             environment: env(["KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"]))
        #expect(v6.config.server == "https://[fd00::1]:6443")
        #expect(ClusterAccess.inClusterNamespace(directory: dir.path) == nil)
        try write("kube-system\n", dir.sub("namespace"))
        #expect(ClusterAccess.inClusterNamespace(directory: dir.path) == "kube-system")
    }
}
