// kubelet's TLS bootstrap, driven by `edgectl join`:
//   bootstrap token → kube-public/cluster-info fetched without trusting the server yet → its JWS signature checked
//   with the token and the CA pinned by --ca-cert-hash (kubeadm discovery) → a P-256 key made on the device → a CSR
//   (signer kubernetes.io/kube-apiserver-client-kubelet, CN system:node:NAME, O system:nodes) → approval awaited →
//   key (0600) and certificate stored. The kubelet serving certificate is asked for later by the node agent: its
//   approval is often manual, and joining must not wait for it.

import EdgedControl
import EdgedCore
import EdgedCredentials
import EdgedKube
import Logging
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The result of a join, for `edgectl join`.
public struct JoinOutcome: Sendable, Equatable {
    public var nodeName: String
    public var server: String
    /// False when the node was already joined to this server with valid credentials (join is idempotent).
    public var newlyJoined: Bool
    public var certificateNotAfter: String
    public var csrName: String?
}

public struct Bootstrapper: Sendable {
    public let store: CredentialStore
    public let nodeName: String
    public let userAgent: String
    let logger: Logger

    public init(store: CredentialStore, nodeName: String, userAgent: String, logger: Logger) {
        self.store = store
        self.nodeName = nodeName
        self.userAgent = userAgent
        self.logger = logger
    }

    /// Joins, or confirms an existing join to the same server. Errors say what to fix.
    /// `options` is what `edgectl join` sent; an empty `caCertHashes` trusts the CA that the token's signature on
    /// cluster-info vouches for (kubeadm's --discovery-token-unsafe-skip-ca-verification).
    public func join(_ options: JoinRequest) async throws(EdgedError) -> JoinOutcome {
        // The autonomy value first: a bad one must not leave anything joined.
        if let autonomy = options.autonomy, let problem = JoinRequest.autonomyProblem(autonomy) {
            throw EdgedError(.invalidConfig, problem)
        }
        let server = options.server.hasSuffix("/") ? String(options.server.dropLast()) : options.server
        guard server.hasPrefix("https://") else {
            throw EdgedError(.invalidConfig, "--server \(server) must be an https:// URL, e.g. https://10.0.0.1:6443")
        }
        let token: BootstrapToken
        let pins: [CAPin]
        do {
            token = try BootstrapToken(parsing: options.token)
            pins = try options.caCertHashes.map { h throws(CredentialError) in try CAPin(parsing: h) }
        } catch {
            throw EdgedError(.invalidConfig, error.message)
        }
        for t in options.taints { _ = try NodeRegistration.parseTaint(t) }
        for key in options.labels.keys.sorted() { try NodeRegistration.checkLabel(key) }
        let registration = NodeRegistration(labels: options.labels, nodePool: options.nodePool, taints: options.taints,
                                            autonomy: options.autonomy?.trimmed)

        // Unreadable credentials (a corrupt file) are replaced by this join, like a first join.
        if let existing = (try? store.load()) ?? nil, let cluster = existing.cluster, let client = existing.client, existing.caPEM != nil {
            if cluster.server == server && cluster.nodeName == nodeName && client.info.notAfter > Date() {
                try registration.save(dir: store.directory)
                logger.info("already joined to \(server) as \(nodeName)")
                return JoinOutcome(nodeName: nodeName, server: server, newlyJoined: false,
                                   certificateNotAfter: Self.rfc3339(client.info.notAfter), csrName: nil)
            }
            if cluster.server != server {
                throw EdgedError(.invalidConfig, "this node is already joined to \(cluster.server) as \(cluster.nodeName): run `edgectl reset` first to join another cluster")
            }
        }

        // 1. Discovery: the cluster CA, vouched for by the token's signature and the pinned hash.
        let info = try await discover(server: server, token: token, pins: pins)
        logger.info("cluster CA verified\(pins.isEmpty ? " by the token signature only (no --ca-cert-hash given)" : " against \(pins.map(\.description).joined(separator: ", "))")")

        // 2. The client certificate, through a CSR created with the bootstrap token.
        let bootstrap = try client(server: server, caPEM: info.caPEM, credentials: .bearerToken(token.bearerToken))
        let key = NodeKey.generate()
        let csr: NodeCSR
        do { csr = try NodeCSR.client(nodeName: nodeName, key: key) } catch { throw EdgedError(.invalidConfig, error.message) }
        let (csrName, certPEM) = try await requestCertificate(bootstrap, csr: csr, timeoutSeconds: options.approvalTimeoutSeconds,
                                                              what: "client certificate")
        let certInfo = try check(certPEM, key: key, caPEM: info.caPEM, csrName: csrName)

        // 3. Stored crash-safely; the node agent starts from these files.
        do {
            try store.saveCA(info.caPEM)
            _ = try store.save(.client, certificatePEM: certPEM, key: key)
            try store.saveCluster(.init(server: server, nodeName: nodeName))
        } catch {
            throw EdgedError(.io, error.message)
        }
        try registration.save(dir: store.directory)
        logger.info("joined \(server) as \(nodeName) (certificate valid until \(Self.rfc3339(certInfo.notAfter)))")
        return JoinOutcome(nodeName: nodeName, server: server, newlyJoined: true,
                           certificateNotAfter: Self.rfc3339(certInfo.notAfter), csrName: csrName)
    }

    /// Fetches kube-public/cluster-info without trusting the server, then verifies it.
    func discover(server: String, token: BootstrapToken, pins: [CAPin]) async throws(EdgedError) -> ClusterInfo {
        let anonymous = try client(server: server, caPEM: nil, credentials: .none, insecure: true)
        let cm: ConfigMap
        do {
            cm = try await anonymous.get(.configMaps, namespace: "kube-public", name: "cluster-info")
        } catch {
            if let e = error as? KubeError, e.isNotFound {
                throw EdgedError(.notFound, "\(server) has no kube-public/cluster-info ConfigMap: is it a kubeadm-style cluster? (kubeadm init creates it)")
            }
            throw EdgedError(.io, "cannot reach the API server at \(server): \(error) (check --server, the network and the firewall)")
        }
        do {
            return try ClusterInfo.verify(configMapData: cm.data ?? [:], token: token, caPins: pins)
        } catch {
            throw EdgedError(.invalidConfig, error.message)
        }
    }

    func client(server: String, caPEM: String?, credentials: KubeCredentials, insecure: Bool = false) throws(EdgedError) -> KubeClient {
        do {
            return try KubeClient(config: KubeClientConfig(server: server, caPEM: caPEM, credentials: credentials,
                                                           userAgent: userAgent, insecureSkipTLSVerify: insecure,
                                                           requestTimeout: .seconds(15), connectTimeout: .seconds(10)),
                                  logger: logger)
        } catch {
            throw EdgedError(.invalidConfig, "cannot use \(server): \(error)")
        }
    }

    /// Creates a CSR and waits for its certificate. Returns (CSR name, certificate PEM).
    func requestCertificate(_ client: KubeClient, csr: NodeCSR, timeoutSeconds: Int, what: String) async throws(EdgedError) -> (String, String) {
        return try await CSRFlow.request(client, csr: csr, timeoutSeconds: timeoutSeconds, what: what, logger: logger)
    }

    func check(_ certPEM: String, key: NodeKey, caPEM: String, csrName: String) throws(EdgedError) -> CertificateInfo {
        do {
            let info = try CertificateInfo(pem: certPEM, source: "the certificate of CSR \(csrName)")
            guard info.matches(key) else {
                throw EdgedError(.invalidConfig, "the certificate of CSR \(csrName) is not for this node's key: the CSR was answered wrongly; run join again")
            }
            try info.verify(issuedBy: caPEM)
            try CertificateRotation.checkClock(notBefore: info.notBefore)
            return info
        } catch {
            if let e = error as? EdgedError { throw e }
            throw EdgedError(.invalidConfig, "\(error)")
        }
    }

    static func rfc3339(_ d: Date) -> String {
        Timestamp(nanoseconds: Int64(d.timeIntervalSince1970 * 1e9)).rfc3339
    }
}
