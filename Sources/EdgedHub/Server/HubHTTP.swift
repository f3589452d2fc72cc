// The hub server's value types and protocols: one buffered request, the streaming response writer a handler answers
// through, the handler itself, where an upgraded connection is spliced to, and the server's one error type.

import EdgedCore
import EdgedHTTP

/// One request as the hub server received it, its body read whole (at most `HubServer.maxRequestBytes`).
public struct HubHTTPRequest: Sendable {
    /// "GET", "POST", ...
    public var method: String
    /// Path and query exactly as received ("/api/v1/pods?watch=true").
    public var target: String
    public var headers: [(String, String)]
    public var body: [UInt8]
    /// "127.0.0.1:43210"; nil when unknown.
    public var remoteAddress: String?
    /// Whether it came in on a TLS listener.
    public var isTLS: Bool

    public init(method: String, target: String, headers: [(String, String)] = [], body: [UInt8] = [],
                remoteAddress: String? = nil, isTLS: Bool = false) {
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.remoteAddress = remoteAddress
        self.isTLS = isTLS
    }

    /// The first value of header `name`, compared case-insensitively; nil when absent.
    public func header(_ name: String) -> String? {
        headers.first { $0.0.utf8.count == name.utf8.count && $0.0.lowercased() == name.lowercased() }?.1
    }

    /// Whether this asks to switch protocols (`Connection: Upgrade` plus an `Upgrade` header): SPDY/3.1 or
    /// websocket streams of exec, attach and port-forward.
    public var isUpgrade: Bool {
        guard header("upgrade") != nil else { return false }
        return headers.contains { name, value in
            name.lowercased() == "connection"
                && value.split(separator: ",").contains { hubTrimmed($0).lowercased() == "upgrade" }
        }
    }
}

/// Where a handler's response goes: the head, then the body as it comes, then the end.
///
/// The server owns framing: with a `Content-Length` in `writeHead` the body is sent as is, without one it is sent
/// with chunked transfer encoding (close-delimited for an HTTP/1.0 client); `Connection`, `Keep-Alive` and
/// `Transfer-Encoding` from the handler are dropped. `writeBody` waits while more than 256 KiB are not yet in the
/// socket (back-pressure: a client that does not read holds the handler back; the hub never buffers a whole body),
/// and `finish` returns once everything is in the socket.
/// Calls must not overlap. A handler that returns without `finish()` after a head makes the server close the
/// connection, so the client sees the response as cut short; one that wrote nothing gets a 500 sent for it.
///
/// - Throws: `HubServerError` `.clientClosed` when the client has gone away (end the stream then), `.misuse` for a
///   body before the head, a second head, or more bytes than the `Content-Length` declared.
public protocol HubResponseWriter: Sendable {
    func writeHead(status: Int, headers: [(String, String)]) async throws
    func writeBody(_ bytes: [UInt8]) async throws
    func finish() async throws
    /// True once the client has closed the connection. The handler's task is also cancelled then, so a watch
    /// waiting for its next event ends without polling this.
    var clientClosed: Bool { get }
}

/// What answers the hub's requests.
public protocol HubHandler: Sendable {
    /// Answers one request through `writer`. Runs in a task that is cancelled when the client goes away or when
    /// the server's shutdown grace runs out.
    func handle(_ request: HubHTTPRequest, _ writer: any HubResponseWriter) async
    /// For requests with `Connection: Upgrade` (exec/attach/port-forward, SPDY or websocket): where to splice the
    /// raw connection to. nil → the server answers 503 with a message.
    func upgradeTarget(for request: HubHTTPRequest) async -> HubUpstream?
}

/// Where an upgraded connection is relayed to.
public struct HubUpstream: Sendable {
    public var host: String
    public var port: Int
    /// nil: plain TCP; otherwise TLS with this trust, client certificate and server name.
    public var tls: TLSOptions?
    /// Added to the request head sent upstream, replacing headers of the same name (e.g. the node's
    /// `Authorization` when the caller had none).
    public var extraHeaders: [(String, String)]

    public init(host: String, port: Int, tls: TLSOptions? = nil, extraHeaders: [(String, String)] = []) {
        self.host = host
        self.port = port
        self.tls = tls
        self.extraHeaders = extraHeaders
    }
}

/// The certificate and key a TLS listener serves.
public struct HubServerTLS: Sendable {
    /// Leaf first, then intermediates.
    public var certificateChainPEM: String
    /// Unencrypted PEM: "EC PRIVATE KEY", "PRIVATE KEY" or "RSA PRIVATE KEY".
    public var privateKeyPEM: String

    public init(certificateChainPEM: String, privateKeyPEM: String) {
        self.certificateChainPEM = certificateChainPEM
        self.privateKeyPEM = privateKeyPEM
    }
}

/// Everything the hub server throws. `message` names the listener or the request, and what to do.
public struct HubServerError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        /// The listener cannot bind (port in use, bad address).
        case bind
        /// The listener's certificate or key does not load, or an upstream's TLS settings do not.
        case tls
        /// The client went away while the response was being written.
        case clientClosed
        /// The handler used the writer wrongly (body before head, two heads, more than Content-Length).
        case misuse
        /// An upgraded connection could not be relayed (upstream unreachable, TLS failed, no answer).
        case upstream
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// The body of a kube-style error: a meta/v1 Status, so kubectl and client-go print `message`.
func hubStatusBody(code: Int, reason: String, message: String) -> [UInt8] {
    let status = JSONValue.object([
        ("kind", .string("Status")),
        ("apiVersion", .string("v1")),
        ("metadata", .object([])),
        ("status", .string("Failure")),
        ("message", .string(message)),
        ("reason", .string(reason)),
        ("code", .number(String(code))),
    ])
    return Array(status.jsonText.utf8)
}

/// `text` without leading and trailing spaces and tabs.
func hubTrimmed(_ text: Substring) -> Substring {
    var t = text
    while let c = t.first, c == " " || c == "\t" { t.removeFirst() }
    while let c = t.last, c == " " || c == "\t" { t.removeLast() }
    return t
}
