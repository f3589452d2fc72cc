// The error type of EdgedRuntime: a public struct over a code, messages name the container.

/// A runtime failure; the message names the container (namespace/pod/container) or the path that failed.
public struct RuntimeError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }
        /// The container process could not be started (the message is the child's, e.g. "exec /bin/x: ...").
        public static let startFailed = Code(name: "startFailed")
        public static let notFound = Code(name: "notFound")
        public static let alreadyExists = Code(name: "alreadyExists")
        /// The operation needs a running (or an exited) container.
        public static let invalidState = Code(name: "invalidState")
        public static let invalidSpec = Code(name: "invalidSpec")
        public static let cgroup = Code(name: "cgroup")
        public static let sandbox = Code(name: "sandbox")
        public static let io = Code(name: "io")
        public static let timeout = Code(name: "timeout")
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// "No such file or directory" for an errno value.
func errnoString(_ e: Int32) -> String {
    String(cString: strerror(e))
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
