// The seam between the API client and the wire: today HTTPS to the API server (`HTTPKubeTransport`), later the edge
// hub of issue [4] serving requests in-process from its cache when the cloud is away.

/// A request relative to the API server: `path` includes the query ("/api/v1/pods?limit=500").
public struct KubeRequest: Sendable {
    public var method: String
    public var path: String
    public var headers: [(String, String)]
    public var body: [UInt8]?

    public init(method: String, path: String, headers: [(String, String)] = [], body: [UInt8]? = nil) {
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
    }
}

public struct KubeResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(String, String)] = [], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public func header(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.first { $0.0.lowercased() == lower }?.1
    }
}

/// A response body delivered chunk by chunk (watch streams). Iterate it once.
public struct KubeByteStream: AsyncSequence {
    public typealias Element = [UInt8]

    private let next: () async throws -> [UInt8]?

    public init(next: @escaping () async throws -> [UInt8]?) {
        self.next = next
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let next: () async throws -> [UInt8]?
        public mutating func next() async throws -> [UInt8]? { try await next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(next: next) }
}

/// Carries API requests. Implementations add authentication; they throw `KubeError` with kind `.transport` when the
/// server cannot be reached, and never interpret HTTP statuses (the client does).
public protocol KubeTransport: Sendable {
    /// The API server's base URL, for messages ("https://10.0.0.1:6443").
    var server: String { get }

    /// Sends a request and reads the whole response. `timeout` covers connect, request and response.
    func execute(_ request: KubeRequest, timeout: Duration) async throws -> KubeResponse

    /// Sends a request and hands the response head and streamed body to `body`; the connection is released when
    /// `body` returns. `idleTimeout` fails the stream when no byte arrives for that long.
    func streamResponse<R: Sendable>(_ request: KubeRequest, idleTimeout: Duration?,
                                     _ body: (_ head: KubeResponseHead, _ chunks: KubeByteStream) async throws -> R) async throws -> R

    /// Switches to new credentials for requests started from now on (certificate rotation); streams already open
    /// keep their connection until they end.
    func updateCredentials(_ credentials: KubeCredentials) throws
}

extension KubeTransport {
    /// `streamResponse` for callers that need only the status.
    public func stream<R: Sendable>(_ request: KubeRequest, idleTimeout: Duration?,
                                    _ body: (_ status: Int, _ chunks: KubeByteStream) async throws -> R) async throws -> R {
        try await streamResponse(request, idleTimeout: idleTimeout) { head, chunks in try await body(head.status, chunks) }
    }
}

/// The status line and headers of a streamed response.
public struct KubeResponseHead: Sendable {
    public var status: Int
    public var headers: [(String, String)]

    public init(status: Int, headers: [(String, String)] = []) {
        self.status = status
        self.headers = headers
    }

    public func header(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.first { $0.0.lowercased() == lower }?.1
    }
}

/// How the node authenticates to the API server.
public enum KubeCredentials: Sendable, Equatable {
    /// A TLS client certificate (PEM chain, leaf first) and its private key (PEM).
    case clientCertificate(certificatePEM: String, privateKeyPEM: String)
    /// "Authorization: Bearer TOKEN" (bootstrap tokens, ServiceAccount tokens).
    case bearerToken(String)
    /// Anonymous (only kube-public/cluster-info on a default cluster).
    case none
}

/// Where and how to reach the API server.
public struct KubeClientConfig: Sendable {
    /// "https://HOST:6443".
    public var server: String
    /// The cluster CA the server certificate must chain to; nil trusts the system roots.
    public var caPEM: String?
    /// Skip server verification entirely: only for fetching cluster-info before the CA is known, whose content is
    /// then checked against a pinned CA hash or JWS signature.
    public var insecureSkipTLSVerify: Bool
    public var credentials: KubeCredentials
    /// "edged/<version>".
    public var userAgent: String
    /// Timeout of each non-watch request.
    public var requestTimeout: Duration
    /// A watch stream with no byte for this long (not even a bookmark) is treated as dead. Watches with
    /// `timeoutSeconds` use that plus 30 s instead.
    public var watchIdleTimeout: Duration
    public var connectTimeout: Duration

    public init(server: String, caPEM: String?, credentials: KubeCredentials, userAgent: String = "edged",
                insecureSkipTLSVerify: Bool = false, requestTimeout: Duration = .seconds(30),
                watchIdleTimeout: Duration = .seconds(330), connectTimeout: Duration = .seconds(10)) {
        self.server = server.hasSuffix("/") ? String(server.dropLast()) : server
        self.caPEM = caPEM
        self.credentials = credentials
        self.userAgent = userAgent
        self.insecureSkipTLSVerify = insecureSkipTLSVerify
        self.requestTimeout = requestTimeout
        self.watchIdleTimeout = watchIdleTimeout
        self.connectTimeout = connectTimeout
    }
}
