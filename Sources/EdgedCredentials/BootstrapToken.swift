// Bootstrap tokens ("abcdef.0123456789abcdef") as kubeadm creates them.

/// A Kubernetes bootstrap token: a public 6-character id and a 16-character secret, both `[a-z0-9]`.
///
/// The id names the Secret bootstrap-token-<id> in kube-system and the cluster-info signature
/// jws-kubeconfig-<id>; the secret keys that signature and, with the id, is the bearer token for the CSR.
/// `description` shows only the id so the secret does not end up in logs.
public struct BootstrapToken: Sendable, Hashable, CustomStringConvertible {
    public let id: String
    public let secret: String

    /// Parses "<id>.<secret>"; surrounding spaces (a token pasted from a file) are ignored.
    public init(parsing text: String) throws(CredentialError) {
        let trimmed = text.trimmingSpaces
        let parts = trimmed.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].utf8.count == 6, parts[1].utf8.count == 16,
              BootstrapToken.isTokenAlphabet(parts[0]), BootstrapToken.isTokenAlphabet(parts[1])
        else {
            // Show only what could be the id: a mistyped secret should not be echoed either.
            let shown = parts.count == 2 && parts[0].utf8.count <= 16 ? "\(parts[0]).…" : "(\(trimmed.utf8.count) characters)"
            throw CredentialError(.invalidToken, "bootstrap token \(shown) is not valid: expected the form [a-z0-9]{6}.[a-z0-9]{16}, as printed by kubeadm token create")
        }
        id = String(parts[0])
        secret = String(parts[1])
    }

    /// "<id>.<secret>", the bearer token.
    public var bearerToken: String { "\(id).\(secret)" }

    public var description: String { "\(id).<secret>" }

    static func isTokenAlphabet(_ s: Substring) -> Bool {
        s.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) }
    }
}
