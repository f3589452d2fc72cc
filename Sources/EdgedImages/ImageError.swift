// The error type of EdgedImages: a public struct over a code, so codes can grow without breaking callers.

/// An image store error: a stable code plus a message that names the image reference or archive path and says
/// what to do about it.
public struct ImageError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }
        /// The reference string does not parse (bad characters, uppercase repository, bad digest).
        public static let invalidReference = Code(name: "invalidReference")
        /// No such image in the store, or the registry has no such manifest.
        public static let notFound = Code(name: "notFound")
        /// A blob's content does not hash to the digest that names it.
        public static let digestMismatch = Code(name: "digestMismatch")
        /// An archive or layer is truncated or is not a valid tar / JSON document.
        public static let corruptArchive = Code(name: "corruptArchive")
        /// A gzip stream is corrupt, or the compression (zstd) is not supported.
        public static let compression = Code(name: "compression")
        /// A manifest, config or layer has a media type edged does not know.
        public static let unsupportedMediaType = Code(name: "unsupportedMediaType")
        /// An index has no manifest for the node's platform.
        public static let platformNotFound = Code(name: "platformNotFound")
        /// A layer entry would escape the layer root (absolute path, `..`, through a symlink, hardlink outside).
        public static let unsafeEntry = Code(name: "unsafeEntry")
        /// An image layout or archive lacks a blob its manifest names.
        public static let missingBlob = Code(name: "missingBlob")
        /// The registry could not be reached (DNS, connect, TLS).
        public static let registryUnreachable = Code(name: "registryUnreachable")
        /// The registry refused access, also after authenticating.
        public static let unauthorized = Code(name: "unauthorized")
        /// The registry answered with an unexpected status (5xx, 4xx other than 401/404).
        public static let registryError = Code(name: "registryError")
        /// The image is used by a running container and cannot be removed.
        public static let inUse = Code(name: "inUse")
        /// A file system operation failed.
        public static let io = Code(name: "io")
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    /// The same error with `context: ` in front of the message.
    func prefixed(_ context: String) -> ImageError {
        ImageError(code, "\(context): \(message)")
    }
}
