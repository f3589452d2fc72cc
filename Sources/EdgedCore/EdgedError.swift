// The error type of EdgedCore: a public struct over a code, so codes can grow without breaking callers.

/// An error with a stable code and a message that names what failed and, where possible, what to do.
public struct EdgedError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }
        public static let invalidManifest = Code(name: "invalidManifest")
        public static let invalidQuantity = Code(name: "invalidQuantity")
        public static let invalidConfig = Code(name: "invalidConfig")
        public static let io = Code(name: "io")
        public static let notFound = Code(name: "notFound")
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
