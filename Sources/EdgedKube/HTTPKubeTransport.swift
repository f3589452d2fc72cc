// KubeTransport over HTTPS with EdgedHTTP: cluster-CA verification, client certificates or bearer tokens.

import EdgedHTTP
import NIOCore
import Synchronization

/// Sends API requests straight to the API server.
///
/// Certificate rotation swaps the whole HTTP client (its TLS identity is fixed per client): requests started
/// afterwards use the new identity; streams already open keep the old client alive until they end, and its pooled
/// connections close when the last one does.
public final class HTTPKubeTransport: KubeTransport {
    public let server: String
    private let config: KubeClientConfig
    private struct Current {
        var client: HTTPClient
        var credentials: KubeCredentials
    }
    private let current: Mutex<Current>

    /// - Throws: `KubeError` `.invalidRequest` when the server URL is not http(s).
    public init(config: KubeClientConfig) throws {
        guard config.server.hasPrefix("https://") || config.server.hasPrefix("http://") else {
            throw KubeError(kind: .invalidRequest, message: "API server address \"\(config.server)\" must start with https://; check --server")
        }
        self.server = config.server
        self.config = config
        self.current = Mutex(Current(client: HTTPKubeTransport.makeClient(config, config.credentials), credentials: config.credentials))
    }

    private static func makeClient(_ config: KubeClientConfig, _ credentials: KubeCredentials) -> HTTPClient {
        var tls = TLSOptions()
        if config.insecureSkipTLSVerify {
            tls.trust = .noVerification
        } else if let ca = config.caPEM {
            tls.trust = .certificates(pem: ca)
        }
        if case let .clientCertificate(cert, key) = credentials {
            tls.clientCertificateChainPEM = cert
            tls.clientPrivateKeyPEM = key
        }
        return HTTPClient(configuration: HTTPClientConfiguration(tls: tls, connectTimeout: config.connectTimeout,
                                                                 userAgent: config.userAgent))
    }

    public func updateCredentials(_ credentials: KubeCredentials) throws {
        let client = HTTPKubeTransport.makeClient(config, credentials)
        current.withLock { $0 = Current(client: client, credentials: credentials) }
    }

    private func prepare(_ request: KubeRequest) -> (HTTPClient, HTTPRequest) {
        let (client, credentials) = current.withLock { ($0.client, $0.credentials) }
        var headers = request.headers
        if case let .bearerToken(token) = credentials { headers.append(("Authorization", "Bearer \(token)")) }
        return (client, HTTPRequest(method: request.method, url: server + request.path, headers: headers, body: request.body))
    }

    public func execute(_ request: KubeRequest, timeout: Duration) async throws -> KubeResponse {
        let (client, http) = prepare(request)
        do {
            let r = try await client.execute(http, timeout: timeout)
            return KubeResponse(status: r.status, headers: r.head.headers, body: r.body)
        } catch let e as HTTPError {
            throw mapError(e, request)
        }
    }

    public func streamResponse<R: Sendable>(_ request: KubeRequest, idleTimeout: Duration?,
                                            _ body: (KubeResponseHead, KubeByteStream) async throws -> R) async throws -> R {
        let (client, http) = prepare(request)
        do {
            return try await client.stream(http, idleTimeout: idleTimeout) { head, chunks in
                var iterator = chunks.makeAsyncIterator()
                let bytes = KubeByteStream {
                    guard let buffer = try await iterator.next() else { return nil }
                    return Array(buffer.readableBytesView)
                }
                return try await body(KubeResponseHead(status: head.status, headers: head.headers), bytes)
            }
        } catch let e as HTTPError {
            throw mapError(e, request)
        }
    }

    private func mapError(_ e: HTTPError, _ request: KubeRequest) -> Error {
        if e.code == .cancelled { return CancellationError() }
        let hint: String
        switch e.code {
        case .tls: hint = "check the cluster CA and the node's certificate (re-run edgectl join if they changed)"
        case .connect: hint = "check the API server address and that it is reachable from this node"
        case .timeout: hint = "the API server or the network is slow or down; edged retries"
        default: hint = "edged retries"
        }
        return KubeError(kind: .transport, message: "\(request.method) \(server)\(request.path): \(e.message); \(hint)")
    }
}
