// What the daemon answers edgectl with: the server routes each request to one of these methods.

/// The daemon's side of the control API. The server calls it from request handlers, possibly concurrently.
///
/// Methods that throw should throw `ControlError` (its status and message go to the client as is); any other error
/// becomes a 500 with the error's description.
public protocol ControlBackend: Sendable {
    /// The node's health, for `edgectl status`.
    func status() async -> StatusReport
    func pods() async -> [PodSummary]
    func images() async -> [ImageInfo]
    /// Imports an image archive (OCI layout, OCI archive, docker-archive) at a path on the node.
    /// - Throws: `ControlError` 400 for a bad archive, 404 for a missing file.
    func importImage(path: String) async throws -> [ImageInfo]
    /// - Throws: `ControlError` 400 for a bad reference, 502/503 when the registry cannot be reached.
    func pullImage(reference: String) async throws -> ImageInfo
    /// - Throws: `ControlError` 404 when unknown, 409 when a pod uses it.
    func removeImage(reference: String) async throws
    /// Removes images no pod uses; returns the references (or digests) removed.
    func pruneImages() async throws -> [String]
    /// The CRI log file for a container ("" or nil container = the pod's only/first container); previous = the last
    /// terminated instance.
    /// - Throws: `ControlError` 404 when the pod, container or previous instance is unknown; 400 when the pod has
    ///   several containers and none was named.
    func logPath(namespace: String, pod: String, container: String?, previous: Bool) async throws -> String
    /// Joins the node to a cluster (TLS bootstrap) and starts the node agent.
    /// - Throws: `ControlError` 400 for bad arguments or a rejected token/CA, 502 when the API server cannot be
    ///   reached, 504 when the CSR is not approved in time; the message says what to fix.
    func join(_ request: JoinRequest) async throws -> JoinResponse
}

extension ControlBackend {
    public func join(_ request: JoinRequest) async throws -> JoinResponse {
        throw ControlError(status: 501, message: "this edged cannot join a cluster")
    }
}

/// An error with an HTTP status for the control API: 400 bad request, 404 not found, 409 conflict, 500 internal,
/// 502/503 upstream or not ready. Sent to the client as `ControlErrorBody` JSON; the client throws it back.
public struct ControlError: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: Int
    public var message: String

    public init(status: Int, message: String) {
        self.status = status
        self.message = message
    }

    public static func badRequest(_ message: String) -> ControlError { ControlError(status: 400, message: message) }
    public static func notFound(_ message: String) -> ControlError { ControlError(status: 404, message: message) }
    public static func conflict(_ message: String) -> ControlError { ControlError(status: 409, message: message) }
    public static func `internal`(_ message: String) -> ControlError { ControlError(status: 500, message: message) }
    public static func unavailable(_ message: String) -> ControlError { ControlError(status: 503, message: message) }

    public var description: String { message }
}
