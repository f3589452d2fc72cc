// How a cloud-side edged process reaches the API server: a kubeconfig (what kubeadm and kubectl write), or the
// in-cluster ServiceAccount of the pod it runs in (client-go's rest.InClusterConfig).
//
// kubeconfig: current-context → its cluster (server, certificate-authority or certificate-authority-data,
// insecure-skip-tls-verify) and its user (token or tokenFile; client-certificate(-data) + client-key(-data)).
// Relative file paths are relative to the kubeconfig's folder, as in kubectl. exec and auth-provider users are not
// supported (they run programs or need cloud SDKs): the error says to use a token or a certificate.
// In-cluster: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT with the token and ca.crt of
// /var/run/secrets/kubernetes.io/serviceaccount. Tokens from files are re-read every minute (bound ServiceAccount
// tokens are rotated by kubelet), as client-go does.

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import EdgedCore
import EdgedKube
import Glibc

/// Where the API server is and the credentials to use.
public struct ClusterAccess: Sendable {
    public var config: KubeClientConfig
    /// A token file to re-read (in-cluster, or a kubeconfig tokenFile); nil for fixed credentials.
    public var tokenFile: String?
    /// For the startup log: "kubeconfig /etc/x (context admin@k)", "in-cluster service account".
    public var source: String

    public static let serviceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount"

    /// Reads a kubeconfig. Errors name the file and the field to fix.
    public static func kubeconfig(path: String, userAgent: String) throws(EdgedError) -> ClusterAccess {
        func fail(_ what: String) -> EdgedError { EdgedError(.invalidConfig, "kubeconfig \(path): \(what)") }
        guard let text = Files.readText(path, limit: 4 << 20) else {
            throw fail("cannot read it (\(String(cString: strerror(errno)))): check --kubeconfig")
        }
        let docs: [JSONValue]
        do { docs = try YAMLParser.parse(text) } catch { throw fail("not valid YAML: \(error.message)") }
        guard let doc = docs.first, case .object = doc else { throw fail("the file is empty or not a YAML mapping") }
        let folder = Files.parentDirectory(of: path)
        func resolve(_ file: String) -> String { file.hasPrefix("/") ? file : "\(folder)/\(file)" }
        func named(_ list: String, _ name: String) -> JSONValue? {
            guard case .array(let items)? = doc[list] else { return nil }
            return items.first { $0["name"]?.stringValue == name }
        }
        func readFile(_ file: String, field: String) throws(EdgedError) -> String {
            let full = resolve(file)
            guard let text = Files.readText(full, limit: 4 << 20) else {
                throw fail("\(field) \(full): cannot read it (\(String(cString: strerror(errno))))")
            }
            return text
        }
        func base64(_ value: String, field: String) throws(EdgedError) -> String {
            let compact = String(value.unicodeScalars.filter { !$0.properties.isWhitespace })
            guard let data = Data(base64Encoded: compact) else { throw fail("\(field) is not valid base64") }
            return String(decoding: data, as: UTF8.self)
        }

        guard let contextName = doc["current-context"]?.stringValue, !contextName.isEmpty else {
            throw fail("no current-context: set one with `kubectl config use-context NAME --kubeconfig \(path)`")
        }
        guard let context = named("contexts", contextName)?["context"] else {
            throw fail("current-context \"\(contextName)\" is not in contexts")
        }
        guard let clusterName = context["cluster"]?.stringValue, let cluster = named("clusters", clusterName)?["cluster"] else {
            throw fail("the cluster of context \"\(contextName)\" (\(context["cluster"]?.stringValue ?? "none")) is not in clusters")
        }
        guard let server = cluster["server"]?.stringValue, !server.isEmpty else {
            throw fail("cluster \"\(clusterName)\" has no server")
        }
        var caPEM: String?
        if let data = cluster["certificate-authority-data"]?.stringValue, !data.isEmpty {
            caPEM = try base64(data, field: "cluster \"\(clusterName)\" certificate-authority-data")
        } else if let file = cluster["certificate-authority"]?.stringValue, !file.isEmpty {
            caPEM = try readFile(file, field: "cluster \"\(clusterName)\" certificate-authority")
        }
        let insecure = cluster["insecure-skip-tls-verify"] == .bool(true)
        if let pem = caPEM, !pem.contains("-----BEGIN CERTIFICATE-----") {
            throw fail("the certificate authority of cluster \"\(clusterName)\" is not a PEM certificate")
        }

        let userName = context["user"]?.stringValue ?? ""
        let user = named("users", userName)?["user"] ?? .object([])
        if !userName.isEmpty, named("users", userName) == nil {
            throw fail("the user of context \"\(contextName)\" (\(userName)) is not in users")
        }
        if user["exec"] != nil || user["auth-provider"] != nil {
            throw fail("user \"\(userName)\" authenticates with exec/auth-provider, which edged does not run: use a kubeconfig with a token, tokenFile or client certificate (e.g. a ServiceAccount token)")
        }
        var credentials = KubeCredentials.none
        var tokenFile: String?
        var certPEM: String?
        var keyPEM: String?
        if let d = user["client-certificate-data"]?.stringValue, !d.isEmpty {
            certPEM = try base64(d, field: "user \"\(userName)\" client-certificate-data")
        } else if let f = user["client-certificate"]?.stringValue, !f.isEmpty {
            certPEM = try readFile(f, field: "user \"\(userName)\" client-certificate")
        }
        if let d = user["client-key-data"]?.stringValue, !d.isEmpty {
            keyPEM = try base64(d, field: "user \"\(userName)\" client-key-data")
        } else if let f = user["client-key"]?.stringValue, !f.isEmpty {
            keyPEM = try readFile(f, field: "user \"\(userName)\" client-key")
        }
        if let cert = certPEM, let key = keyPEM {
            credentials = .clientCertificate(certificatePEM: cert, privateKeyPEM: key)
        } else if certPEM != nil || keyPEM != nil {
            throw fail("user \"\(userName)\" has a client certificate without its key (or a key without its certificate): give both client-certificate(-data) and client-key(-data)")
        } else if let token = user["token"]?.stringValue, !token.isEmpty {
            credentials = .bearerToken(token.trimmed)
        } else if let f = user["tokenFile"]?.stringValue, !f.isEmpty {
            let full = resolve(f)
            let token = try readFile(f, field: "user \"\(userName)\" tokenFile").trimmed
            guard !token.isEmpty else { throw fail("user \"\(userName)\" tokenFile \(full) is empty") }
            credentials = .bearerToken(token)
            tokenFile = full
        } else {
            throw fail("user \"\(userName)\" has no credentials: give token, tokenFile, or client-certificate(-data) and client-key(-data)")
        }
        let config = KubeClientConfig(server: server, caPEM: caPEM, credentials: credentials, userAgent: userAgent,
                                      insecureSkipTLSVerify: insecure)
        return ClusterAccess(config: config, tokenFile: tokenFile, source: "kubeconfig \(path), context \(contextName)")
    }

    /// The pod's own ServiceAccount. `environment` looks up variables (tests pass their own).
    public static func inCluster(userAgent: String, directory: String = serviceAccountDirectory,
                                 environment: (String) -> String? = { getenv($0).map { String(cString: $0) } })
        throws(EdgedError) -> ClusterAccess
    {
        guard let host = environment("KUBERNETES_SERVICE_HOST"), !host.isEmpty,
              let port = environment("KUBERNETES_SERVICE_PORT"), !port.isEmpty else {
            throw EdgedError(.invalidConfig, "not running in a cluster (KUBERNETES_SERVICE_HOST/PORT are not set): give --kubeconfig PATH")
        }
        let tokenPath = "\(directory)/token"
        guard let token = Files.readText(tokenPath, limit: 1 << 20)?.trimmed, !token.isEmpty else {
            throw EdgedError(.invalidConfig, "in-cluster: cannot read the ServiceAccount token \(tokenPath) (\(String(cString: strerror(errno)))): the pod needs automountServiceAccountToken, or give --kubeconfig PATH")
        }
        let caPath = "\(directory)/ca.crt"
        guard let ca = Files.readText(caPath, limit: 4 << 20), ca.contains("-----BEGIN CERTIFICATE-----") else {
            throw EdgedError(.invalidConfig, "in-cluster: cannot read the cluster CA \(caPath): the pod needs automountServiceAccountToken, or give --kubeconfig PATH")
        }
        let hostPart = host.contains(":") ? "[\(host)]" : host
        let config = KubeClientConfig(server: "https://\(hostPart):\(port)", caPEM: ca, credentials: .bearerToken(token),
                                      userAgent: userAgent)
        return ClusterAccess(config: config, tokenFile: tokenPath, source: "in-cluster service account (\(directory))")
    }

    /// The namespace of the pod's ServiceAccount (in-cluster), if there is one.
    public static func inClusterNamespace(directory: String = serviceAccountDirectory) -> String? {
        guard let ns = Files.readText("\(directory)/namespace", limit: 4096)?.trimmed, !ns.isEmpty else { return nil }
        return ns
    }

    /// Re-reads `tokenFile` every `interval` and hands a changed token to the client, until cancelled.
    public static func refreshToken(file: String, client: KubeClient, current: String?, interval: Duration = .seconds(60),
                                    onError: @Sendable (String) -> Void = { _ in }) async {
        var last = current
        while true {
            do { try await Task.sleep(for: interval) } catch { return }
            guard let token = Files.readText(file, limit: 1 << 20)?.trimmed, !token.isEmpty else {
                onError("cannot re-read the token \(file) (\(String(cString: strerror(errno)))); keeping the previous one")
                continue
            }
            guard token != last else { continue }
            do {
                try client.updateCredentials(.bearerToken(token))
                last = token
            } catch {
                onError("cannot use the new token from \(file): \(error)")
            }
        }
    }
}
