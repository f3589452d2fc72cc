// The error type of EdgedKube: API errors carry the HTTP status and the Status object the server sent;
// transport errors (cannot connect, TLS, timeout) are a separate kind so callers can tell "offline" from "refused".

/// A failed Kubernetes API call. Messages say what failed and what to do.
public struct KubeError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The server answered with a non-success status (see `statusCode`, `reason`, `status`).
        case api
        /// The server could not be reached or the connection failed (network, TLS, timeout).
        case transport
        /// The server answered, but with a body edged could not decode.
        case decoding
        /// The caller asked for something invalid (bad URL, missing name); no request was sent.
        case invalidRequest
    }

    public var kind: Kind
    /// HTTP status for `.api` errors, or the code of a watch ERROR event's Status.
    public var statusCode: Int?
    /// The Status reason ("NotFound", "AlreadyExists", "Conflict", "Expired", "Gone", "Unauthorized", ...).
    public var reason: String?
    /// The Status object the server sent, when it sent one.
    public var status: Status?
    public var message: String

    public init(kind: Kind, statusCode: Int? = nil, reason: String? = nil, status: Status? = nil, message: String) {
        self.kind = kind
        self.statusCode = statusCode
        self.reason = reason
        self.status = status
        self.message = message
    }

    public var description: String { message }

    public var isNotFound: Bool { kind == .api && (statusCode == 404 || reason == "NotFound") }
    public var isAlreadyExists: Bool { kind == .api && reason == "AlreadyExists" }
    /// A stale resourceVersion on update (409 Conflict), not AlreadyExists (also 409).
    public var isConflict: Bool { kind == .api && (reason == "Conflict" || (statusCode == 409 && reason != "AlreadyExists")) }
    /// The resourceVersion asked for is older than the server's history (410 Gone / Expired): re-list.
    public var isGone: Bool { kind == .api && (statusCode == 410 || reason == "Expired" || reason == "Gone") }
    public var isUnauthorized: Bool { kind == .api && statusCode == 401 }
    public var isForbidden: Bool { kind == .api && statusCode == 403 }
    public var isTooManyRequests: Bool { kind == .api && statusCode == 429 }
    public var isInvalid: Bool { kind == .api && statusCode == 422 }
    public var isTransport: Bool { kind == .transport }
    /// Seconds the server asked us to wait (429/503 Status details or Retry-After).
    public var retryAfterSeconds: Int? { status?.details?.retryAfterSeconds }

    /// The error for a non-success response. `what` names the request ("GET https://…/api/v1/nodes/n1"), `server`
    /// the API server URL.
    static func fromResponse(status code: Int, body: [UInt8], what: String, server: String) -> KubeError {
        var st = try? KubeJSON.decode(Status.self, from: body)
        if st?.kind != nil, st?.kind != "Status" { st = nil }
        let reason = st?.reason ?? defaultReason(code)
        let serverMessage = st?.message ?? String(decoding: body.prefix(300), as: UTF8.self)
        let detail = serverMessage.isEmpty ? "" : ": \(serverMessage)"
        let message: String
        switch code {
        case 401:
            message = "\(what): credentials rejected by \(server) (401 Unauthorized)\(detail): re-run edgectl join to get new node credentials"
        case 403:
            message = "\(what): forbidden by \(server) (403)\(detail): the node's identity lacks permission for this request; check its RBAC or node authorizer"
        case 429:
            message = "\(what): \(server) is throttling requests (429 TooManyRequests)\(detail): retry later"
        default:
            message = "\(what): \(code) \(reason)\(detail)"
        }
        return KubeError(kind: .api, statusCode: code, reason: reason, status: st, message: message)
    }

    /// The error for a watch ERROR event.
    static func fromWatchStatus(_ st: Status, what: String) -> KubeError {
        let code = st.code ?? 500
        let reason = st.reason ?? defaultReason(code)
        return KubeError(kind: .api, statusCode: code, reason: reason, status: st,
                         message: "\(what): watch error \(code) \(reason): \(st.message ?? "")")
    }

    static func defaultReason(_ code: Int) -> String {
        switch code {
        case 400: return "BadRequest"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "NotFound"
        case 405: return "MethodNotAllowed"
        case 406: return "NotAcceptable"
        case 409: return "Conflict"
        case 410: return "Gone"
        case 415: return "UnsupportedMediaType"
        case 422: return "Invalid"
        case 429: return "TooManyRequests"
        case 500: return "InternalError"
        case 503: return "ServiceUnavailable"
        case 504: return "Timeout"
        default: return "HTTP\(code)"
        }
    }
}

/// The meta/v1 Status object the API server returns for errors (and some deletes).
public struct Status: Codable, Sendable, Equatable {
    public var apiVersion: String?
    public var kind: String?
    /// "Success" or "Failure".
    public var status: String?
    public var message: String?
    public var reason: String?
    public var code: Int?
    public var details: StatusDetails?
    public var metadata: ListMeta?

    public init(status: String? = "Failure", message: String? = nil, reason: String? = nil, code: Int? = nil) {
        self.apiVersion = "v1"
        self.kind = "Status"
        self.status = status
        self.message = message
        self.reason = reason
        self.code = code
    }
}

public struct StatusDetails: Codable, Sendable, Equatable {
    public var name: String?
    public var group: String?
    public var kind: String?
    public var uid: String?
    public var causes: [StatusCause]?
    public var retryAfterSeconds: Int?
}

public struct StatusCause: Codable, Sendable, Equatable {
    public var reason: String?
    public var message: String?
    public var field: String?
}
