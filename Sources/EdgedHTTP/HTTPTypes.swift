// The value types of the HTTP client: configuration, requests, responses and its one error type.

import NIOCore

/// How the client authenticates the server, and itself, over TLS.
public struct TLSOptions: Sendable {
    /// Which certificate authorities the client trusts for the server's certificate.
    public enum Trust: Sendable {
        /// The system's trust store.
        case system
        /// Only these CA certificates (PEM, one or more): a cluster CA, a pinned registry CA.
        case certificates(pem: String)
        /// No verification at all (tests, explicitly insecure registries).
        case noVerification
    }

    public var trust: Trust
    /// The client certificate chain as PEM, leaf first; used with `clientPrivateKeyPEM`.
    public var clientCertificateChainPEM: String?
    /// The client's key as PEM: "EC PRIVATE KEY" (SEC1), "PRIVATE KEY" (PKCS#8) or "RSA PRIVATE KEY".
    public var clientPrivateKeyPEM: String?
    /// The name sent as SNI and checked against the certificate; nil means the URL's host (an IP host is
    /// checked against the certificate's IP SANs).
    public var serverName: String?

    public init(trust: Trust = .system, clientCertificateChainPEM: String? = nil, clientPrivateKeyPEM: String? = nil,
                serverName: String? = nil) {
        self.trust = trust
        self.clientCertificateChainPEM = clientCertificateChainPEM
        self.clientPrivateKeyPEM = clientPrivateKeyPEM
        self.serverName = serverName
    }
}

/// Settings fixed for the lifetime of one `HTTPClient`.
public struct HTTPClientConfiguration: Sendable {
    public var tls: TLSOptions
    /// Limit for the TCP connect plus the TLS handshake.
    public var connectTimeout: Duration
    /// Idle keep-alive connections kept per scheme + host + port.
    public var maxIdleConnectionsPerHost: Int
    /// Sent as User-Agent unless the request has its own.
    public var userAgent: String?

    public init(tls: TLSOptions = .init(), connectTimeout: Duration = .seconds(10), maxIdleConnectionsPerHost: Int = 4,
                userAgent: String? = nil) {
        self.tls = tls
        self.connectTimeout = connectTimeout
        self.maxIdleConnectionsPerHost = maxIdleConnectionsPerHost
        self.userAgent = userAgent
    }
}

/// One request. Host, Content-Length and User-Agent are added unless present.
public struct HTTPRequest: Sendable {
    /// "GET", "POST", ...
    public var method: String
    /// `http(s)://host[:port]/path?query`; an IPv6 host is written `[::1]`.
    public var url: String
    public var headers: [(String, String)]
    public var body: [UInt8]?

    public init(method: String = "GET", url: String, headers: [(String, String)] = [], body: [UInt8]? = nil) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
    }
}

/// Status and headers of a response.
public struct HTTPResponseHead: Sendable {
    public var status: Int
    public var headers: [(String, String)]

    public init(status: Int, headers: [(String, String)]) {
        self.status = status
        self.headers = headers
    }

    /// The first value of header `name`, compared case-insensitively; nil when absent.
    public func header(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.first { $0.0.lowercased() == lower }?.1
    }
}

/// A response read whole.
public struct HTTPResponse: Sendable {
    public var head: HTTPResponseHead
    public var body: [UInt8]
    public var status: Int { head.status }

    public init(head: HTTPResponseHead, body: [UInt8]) {
        self.head = head
        self.body = body
    }
}

/// Everything the client throws. `message` names the server (host:port), what failed and, where it helps, what to do.
public struct HTTPError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable {
        /// The URL does not parse or its scheme is not http/https.
        case invalidURL
        /// No TCP connection: refused, unreachable, no address, or no answer within the connect timeout.
        case connect
        /// TLS failed: untrusted certificate, name mismatch, bad client key, refused client certificate.
        case tls
        /// The request's timeout, or a stream's idle timeout, ran out.
        case timeout
        /// The server sent something that is not HTTP/1.1.
        case protocolError
        /// The body is bigger than the caller allowed.
        case bodyTooLarge
        /// The calling task was cancelled.
        case cancelled
        /// The connection closed before the response was complete, or the client was shut down.
        case closed
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
