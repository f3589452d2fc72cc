// Token discovery: the kube-public/cluster-info ConfigMap, its detached JWS signatures, and the CA pin check.

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto
import EdgedCore

/// What a node learns from kube-public/cluster-info before it trusts the API server: the server URL and CA.
///
/// The ConfigMap is readable anonymously, so nothing in it is trusted until (1) its kubeconfig carries a valid
/// detached JWS `jws-kubeconfig-<token id>` made with the token secret — proof that whoever wrote it knows
/// the token — and (2) its CA matches one of the `--ca-cert-hash` pins — proof that it is the CA the admin
/// meant. This mirrors kubeadm's token discovery (cmd/kubeadm/app/discovery/token).
public struct ClusterInfo: Sendable, Equatable {
    /// The API server URL from the kubeconfig's first cluster.
    public let server: String
    /// The cluster CA certificate(s), PEM, decoded from certificate-authority-data.
    public let caPEM: String

    /// The key of the kubeconfig in the cluster-info ConfigMap's data.
    public static let kubeconfigKey = "kubeconfig"

    /// The key of the signature for `tokenID` in the cluster-info ConfigMap's data.
    public static func signatureKey(tokenID: String) -> String { "jws-kubeconfig-\(tokenID)" }

    /// Parses the kubeconfig YAML stored in cluster-info: clusters[0].cluster.server and
    /// clusters[0].cluster.certificate-authority-data (base64 PEM).
    public init(kubeconfig: String) throws(CredentialError) {
        let docs: [JSONValue]
        do { docs = try YAMLParser.parse(kubeconfig) } catch {
            throw CredentialError(.invalidClusterInfo, "kube-public/cluster-info: the kubeconfig is not valid YAML: \(error)")
        }
        guard let doc = docs.first, case .array(let clusters)? = doc["clusters"], let cluster = clusters.first?["cluster"] else {
            throw CredentialError(.invalidClusterInfo, "kube-public/cluster-info: the kubeconfig has no clusters[0].cluster")
        }
        guard let server = cluster["server"]?.stringValue, !server.isEmpty else {
            throw CredentialError(.invalidClusterInfo, "kube-public/cluster-info: the kubeconfig's cluster has no server")
        }
        guard let caData = cluster["certificate-authority-data"]?.stringValue,
              let caBytes = Data(base64Encoded: caData.trimmingSpaces)
        else {
            throw CredentialError(.invalidClusterInfo, "kube-public/cluster-info: the kubeconfig's cluster has no base64 certificate-authority-data")
        }
        let caPEM = String(decoding: caBytes, as: UTF8.self)
        do { _ = try PEMBlocks.certificates(caPEM, source: "kube-public/cluster-info certificate-authority-data") } catch {
            throw CredentialError(.invalidClusterInfo, "\(error)")
        }
        self.server = server
        self.caPEM = caPEM
    }

    /// Verifies the data of the cluster-info ConfigMap for `token` and returns what it says.
    ///
    /// Checks, in order: a signature for the token id exists (otherwise the token is unknown to this cluster),
    /// the signature matches the token secret, the kubeconfig parses, and — when `caPins` is not empty — the
    /// CA matches a pin. An empty `caPins` skips pinning, like kubeadm's
    /// --discovery-token-unsafe-skip-ca-verification; the caller decides whether to allow that.
    public static func verify(configMapData data: [String: String], token: BootstrapToken, caPins: [CAPin])
        throws(CredentialError) -> ClusterInfo
    {
        guard let kubeconfig = data[kubeconfigKey] else {
            throw CredentialError(.invalidClusterInfo, "kube-public/cluster-info has no \(kubeconfigKey) key: is this a kubeadm cluster with the bootstrap signer enabled?")
        }
        guard let jws = data[signatureKey(tokenID: token.id)] else {
            throw CredentialError(.tokenNotValid, "token \(token.id) is not valid for this cluster (no \(signatureKey(tokenID: token.id)) in kube-public/cluster-info): check the token with kubeadm token list")
        }
        try DetachedJWS.verify(jws, payload: Array(kubeconfig.utf8), token: token)
        let info = try ClusterInfo(kubeconfig: kubeconfig)
        if !caPins.isEmpty {
            try CAPin.verify(caPEM: info.caPEM, against: caPins)
        }
        return info
    }
}

/// The detached JWS (RFC 7515 appendix F) that kubeadm's bootstrap signer puts in cluster-info:
/// "<base64url header>..<base64url HMAC-SHA256>" over "<base64url header>.<base64url payload>", keyed by the
/// token secret, with header {"alg":"HS256","kid":"<token id>"}.
public enum DetachedJWS {
    /// Signs `payload` the way the bootstrap signer does (used by tests and by the test API server).
    public static func sign(payload: [UInt8], token: BootstrapToken) -> String {
        let header = Base64URL.encode(Array("{\"alg\":\"HS256\",\"kid\":\"\(token.id)\"}".utf8))
        let mac = HMAC<SHA256>.authenticationCode(for: signingInput(header: header, payload: payload),
                                                   using: SymmetricKey(data: Array(token.secret.utf8)))
        return header + ".." + Base64URL.encode(Array(mac))
    }

    /// Verifies a detached JWS over `payload` with the token secret; throws `signatureMismatch` otherwise.
    public static func verify(_ jws: String, payload: [UInt8], token: BootstrapToken) throws(CredentialError) {
        let name = "\(ClusterInfo.signatureKey(tokenID: token.id)) in kube-public/cluster-info"
        let parts = jws.trimmingSpaces.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[1].isEmpty, let headerBytes = Base64URL.decode(parts[0]),
              let signature = Base64URL.decode(parts[2])
        else {
            throw CredentialError(.signatureMismatch, "\(name) is not a detached JWS (<header>..<signature>)")
        }
        let header: JSONValue
        do {
            guard let h = try YAMLParser.parse(String(decoding: headerBytes, as: UTF8.self)).first else { throw CredentialError(.signatureMismatch, "") }
            header = h
        } catch {
            throw CredentialError(.signatureMismatch, "\(name) has a JWS header that is not JSON")
        }
        guard header["alg"]?.stringValue == "HS256" else {
            throw CredentialError(.signatureMismatch, "\(name) uses algorithm \(header["alg"]?.stringValue ?? "none"), expected HS256")
        }
        if let kid = header["kid"]?.stringValue, kid != token.id {
            throw CredentialError(.signatureMismatch, "\(name) was made for token \(kid), not \(token.id)")
        }
        let valid = HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: signingInput(header: String(parts[0]), payload: payload),
                                                           using: SymmetricKey(data: Array(token.secret.utf8)))
        guard valid else {
            throw CredentialError(.signatureMismatch, "the signature \(name) does not match token \(token.id): the token secret is wrong or cluster-info was tampered with; check the token with kubeadm token list")
        }
    }

    static func signingInput(header: String, payload: [UInt8]) -> [UInt8] {
        Array((header + "." + Base64URL.encode(payload)).utf8)
    }
}

/// Unpadded base64url (RFC 4648 §5), as JWS uses.
enum Base64URL {
    static func encode(_ bytes: [UInt8]) -> String {
        var s = Data(bytes).base64EncodedString()
        while s.hasSuffix("=") { s.removeLast() }
        return String(s.map { $0 == "+" ? "-" : $0 == "/" ? "_" : $0 })
    }

    static func decode(_ text: Substring) -> [UInt8]? {
        // Standard-alphabet characters and padding are not base64url.
        guard !text.contains(where: { $0 == "+" || $0 == "/" || $0 == "=" }) else { return nil }
        var s = String(text.map { $0 == "-" ? "+" : $0 == "_" ? "/" : $0 })
        while s.utf8.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s).map { Array($0) }
    }
}
