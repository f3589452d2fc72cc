// The error type of EdgedNetwork: a public struct over a code, so codes can grow without breaking callers.

/// A pod-networking error. The message names the network config file or the CNI plugin that failed and, where
/// possible, what to do about it.
public struct NetworkError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }
        /// No usable CNI network config (kubelet: "cni config uninitialized", node NotReady).
        public static let notReady = Code(name: "notReady")
        /// A network config file that cannot be parsed or misses name, cniVersion or plugins[].type.
        public static let invalidConfig = Code(name: "invalidConfig")
        /// A plugin binary that is in none of the plugin directories.
        public static let pluginNotFound = Code(name: "pluginNotFound")
        /// A plugin that exited with an error result (or a non-zero status).
        public static let pluginFailed = Code(name: "pluginFailed")
        /// A plugin that did not finish within the per-call timeout (it is killed).
        public static let timeout = Code(name: "timeout")
        /// A plugin result that is not valid CNI result JSON.
        public static let invalidResult = Code(name: "invalidResult")
        /// No cached ADD result for the pod (CHECK without a previous ADD).
        public static let notFound = Code(name: "notFound")
        /// A file or process operation of edged itself.
        public static let io = Code(name: "io")
    }

    public let code: Code
    public let message: String
    /// The plugin type that failed, for `.pluginFailed`, `.pluginNotFound`, `.timeout` and `.invalidResult`.
    public let plugin: String?

    public init(_ code: Code, _ message: String, plugin: String? = nil) {
        self.code = code
        self.message = message
        self.plugin = plugin
    }

    public var description: String { message }
}
