// The error type of EdgedCredentials: a public struct over a code, so codes can grow without breaking callers.

/// An error from key, certificate, token or credential-store handling.
///
/// The message names the object that failed (a file path, a token id, a hash) and, where there is one, the fix.
public struct CredentialError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }
        /// A private key that cannot be decoded or is not ECDSA P-256.
        public static let invalidKey = Code(name: "invalidKey")
        /// A certificate request that could not be built (bad node name, bad IP address).
        public static let invalidRequest = Code(name: "invalidRequest")
        /// A certificate (or chain) that cannot be parsed.
        public static let invalidCertificate = Code(name: "invalidCertificate")
        /// A `sha256:<hex>` CA pin with the wrong form.
        public static let invalidPin = Code(name: "invalidPin")
        /// The cluster CA does not hash to any of the given pins.
        public static let pinMismatch = Code(name: "pinMismatch")
        /// A bootstrap token with the wrong form.
        public static let invalidToken = Code(name: "invalidToken")
        /// cluster-info has no signature for this token id.
        public static let tokenNotValid = Code(name: "tokenNotValid")
        /// cluster-info's signature does not match the token secret.
        public static let signatureMismatch = Code(name: "signatureMismatch")
        /// cluster-info's kubeconfig cannot be parsed or lacks server / CA data.
        public static let invalidClusterInfo = Code(name: "invalidClusterInfo")
        /// The certificate's validity starts in the future: the local clock is behind.
        public static let clockSkew = Code(name: "clockSkew")
        /// A stored credential file is corrupt or half-written.
        public static let corruptFile = Code(name: "corruptFile")
        /// A file-system operation failed.
        public static let io = Code(name: "io")
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
