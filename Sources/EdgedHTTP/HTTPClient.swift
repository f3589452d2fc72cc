// An HTTP/1.1 client on SwiftNIO + NIOSSL: keep-alive pool, pinned CAs and client certificates, streamed bodies
// with back-pressure, fast connect errors. Redirects are the caller's business.

import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// Sends HTTP/1.1 requests over plain TCP or TLS, keeping idle connections per scheme + host + port.
///
/// Redirects are not followed (the caller decides, e.g. dropping Authorization when the host changes). An
/// idempotent request that fails on a reused connection before any response byte (the server closed it while
/// idle) is retried once on a fresh connection. Cancelling the calling task closes its connection.
public final class HTTPClient: Sendable {
    public let configuration: HTTPClientConfiguration
    private let group: any EventLoopGroup
    private let pool: ConnectionPool
    /// Built on first TLS use, then shared by every connection.
    private let tlsContext = Mutex<Result<NIOSSLContext, HTTPError>?>(nil)

    public init(configuration: HTTPClientConfiguration = .init(),
                eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.configuration = configuration
        self.group = eventLoopGroup
        self.pool = ConnectionPool(maxIdlePerHost: max(0, configuration.maxIdleConnectionsPerHost))
    }

    deinit {
        for c in pool.shutdown() { c.close() }
    }

    /// Sends `request` and reads the whole response.
    ///
    /// `timeout` covers connecting, sending and reading the full body.
    ///
    /// - Throws: `HTTPError` `.invalidURL`, `.connect`, `.tls`, `.timeout`, `.protocolError`, `.bodyTooLarge`
    ///   (body over `maxBodyBytes`), `.cancelled`, `.closed`.
    public func execute(_ request: HTTPRequest, timeout: Duration, maxBodyBytes: Int = 64 << 20) async throws -> HTTPResponse {
        let limit = TimeAmount(timeout)
        let deadline = NIODeadline.now() + limit
        let connectTimeout = min(TimeAmount(configuration.connectTimeout), limit)
        return try await perform(request, connectTimeout: connectTimeout, idleTimeout: nil, deadline: deadline,
                                 deadlineText: "no complete response within \(ConnectionHandler.format(limit))") { head, body in
            if let length = head.header("content-length").flatMap(Int.init), length > maxBodyBytes {
                throw HTTPError(.bodyTooLarge, "\(request.method) \(request.url): the response body (\(length) bytes) is larger than the \(maxBodyBytes) allowed")
            }
            let bytes: [UInt8]
            do {
                bytes = try await body.collect(upTo: maxBodyBytes)
            } catch let e as HTTPError where e.code == .bodyTooLarge {
                throw HTTPError(.bodyTooLarge, "\(request.method) \(request.url): the response body is larger than the \(maxBodyBytes) bytes allowed")
            }
            return HTTPResponse(head: head, body: bytes)
        }
    }

    /// Sends `request` and hands the response head and its streamed body to `body`.
    ///
    /// The connection is released when `body` returns or throws: back to the pool only if the body was read to
    /// the end. `body` runs in the caller's isolation (an actor may pass a closure that uses its state). `idleTimeout` fails the wait for the head or for the next chunk when no byte comes for that long.
    ///
    /// - Throws: what `body` throws, or `HTTPError` `.invalidURL`, `.connect`, `.tls`, `.timeout`,
    ///   `.protocolError`, `.cancelled`, `.closed`.
    nonisolated(nonsending) public func stream<T: Sendable>(_ request: HTTPRequest, connectTimeout: Duration? = nil, idleTimeout: Duration? = nil,
                                    _ body: (HTTPResponseHead, HTTPBodyStream) async throws -> T) async throws -> T {
        try await perform(request, connectTimeout: TimeAmount(connectTimeout ?? configuration.connectTimeout),
                          idleTimeout: idleTimeout.map { TimeAmount($0) }, deadline: nil, deadlineText: "", body)
    }

    /// Closes pooled connections; later calls throw `.closed`.
    public func shutdown() async {
        let idle = pool.shutdown()
        for c in idle { c.close() }
        for c in idle { try? await c.channel.closeFuture.get() }
    }

    // MARK: Internals

    nonisolated(nonsending) private func perform<T: Sendable>(_ request: HTTPRequest, connectTimeout: TimeAmount, idleTimeout: TimeAmount?,
                                      deadline: NIODeadline?, deadlineText: String,
                                      _ body: (HTTPResponseHead, HTTPBodyStream) async throws -> T) async throws -> T {
        let url = try HTTPURL(request.url)
        let what = "\(request.method) \(url.tls ? "https" : "http")://\(url.authority)\(url.target)"
        guard !pool.isClosed else { throw HTTPError(.closed, "\(what): the HTTP client was shut down") }
        let head = requestHead(request, url: url)
        let idempotent = ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"].contains(request.method.uppercased())
        let current = CurrentConnection()
        let cancelled = HTTPError(.cancelled, "\(what): cancelled")
        return try await withTaskCancellationHandler {
            var retried = false
            while true {
                // Pooled connections serve every method; only idempotent requests are retried when one turns out dead.
                var connection = retried ? nil : pool.take(url.poolKey)
                let reused = connection != nil
                if connection == nil {
                    let timeout = deadline.map { min(connectTimeout, $0 - .now()) } ?? connectTimeout
                    connection = try await connect(url, timeout: timeout)
                }
                guard let connection else { continue }
                guard current.set(connection) else {
                    connection.close()
                    throw cancelled
                }
                let responseHead: HTTPResponseHead
                let generation: Int
                do {
                    (responseHead, generation) = try await connection.start(head, body: request.body, what: what,
                                                                            idleTimeout: idleTimeout, deadline: deadline,
                                                                            deadlineMessage: "\(what): \(deadlineText)")
                } catch {
                    connection.close()
                    let code = (error as? HTTPError)?.code
                    if reused, idempotent, !retried, code == .closed || code == .tls, !(await connection.sawResponse()) {
                        retried = true
                        continue
                    }
                    throw error
                }
                do {
                    let result = try await body(responseHead, HTTPBodyStream(connection: connection, generation: generation))
                    if await connection.finish(), pool.put(connection) {
                        watch(connection)
                    } else {
                        connection.close()
                    }
                    return result
                } catch {
                    connection.close()
                    if Task.isCancelled, error is HTTPError { throw cancelled }
                    throw error
                }
            }
        } onCancel: {
            current.cancel(cancelled)
        }
    }

    private func connect(_ url: HTTPURL, timeout: TimeAmount) async throws(HTTPError) -> HTTPConnection {
        var tls: NIOSSLContext?
        if url.tls {
            do { tls = try tlsContextForConnections() } catch {
                throw HTTPError(.tls, "cannot connect to \(url.authority): \(error.message)")
            }
        }
        return try await HTTPConnection.connect(to: url, tls: tls, serverName: url.tls ? configuration.tls.serverName : nil,
                                                group: group, timeout: max(timeout, .milliseconds(1)))
    }

    /// Drops a pooled connection from the pool when the server closes it.
    private func watch(_ connection: HTTPConnection) {
        connection.channel.closeFuture.whenComplete { [weak pool] _ in pool?.remove(connection) }
    }

    private func requestHead(_ request: HTTPRequest, url: HTTPURL) -> HTTPRequestHead {
        var headers = HTTPHeaders(request.headers)
        if !headers.contains(name: "host") { headers.replaceOrAdd(name: "Host", value: url.hostHeader) }
        if let agent = configuration.userAgent, !headers.contains(name: "user-agent") { headers.add(name: "User-Agent", value: agent) }
        if !headers.contains(name: "content-length") && !headers.contains(name: "transfer-encoding") {
            if let body = request.body {
                headers.add(name: "Content-Length", value: String(body.count))
            } else if ["POST", "PUT", "PATCH"].contains(request.method.uppercased()) {
                headers.add(name: "Content-Length", value: "0")
            }
        }
        return HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: request.method), uri: url.target, headers: headers)
    }

    private func tlsContextForConnections() throws(HTTPError) -> NIOSSLContext {
        let result = tlsContext.withLock { cached in
            if let cached { return cached }
            let made = Result { () throws(HTTPError) in try configuration.tls.makeClientContext() }
            cached = made
            return made
        }
        return try result.get()
    }

    /// Builds the NIOSSL context for `options`.
    ///
    /// - Throws: `HTTPError.tls` naming the PEM that does not load.
    static func makeTLSContext(_ options: TLSOptions) throws(HTTPError) -> NIOSSLContext {
        try options.makeClientContext()
    }
}

extension TLSOptions {
    /// The NIOSSL client context for these options (also used by the hub's upgrade splice).
    public func makeClientContext() throws(HTTPError) -> NIOSSLContext {
        let options = self
        var config = TLSConfiguration.makeClientConfiguration()
        switch options.trust {
        case .system:
            break
        case let .certificates(pem):
            let certificates: [NIOSSLCertificate]
            do { certificates = try NIOSSLCertificate.fromPEMBytes(Array(pem.utf8)) } catch {
                throw HTTPError(.tls, "the trusted CA certificates do not load (\(error)); check the CA PEM")
            }
            guard !certificates.isEmpty else { throw HTTPError(.tls, "the trusted CA PEM holds no certificate; check the CA file") }
            config.trustRoots = .certificates(certificates)
        case .noVerification:
            config.certificateVerification = .none
        }
        switch (options.clientCertificateChainPEM, options.clientPrivateKeyPEM) {
        case (nil, nil):
            break
        case let (chain?, key?):
            do {
                let certificates = try NIOSSLCertificate.fromPEMBytes(Array(chain.utf8))
                guard !certificates.isEmpty else { throw HTTPError(.tls, "the client certificate PEM holds no certificate") }
                config.certificateChain = certificates.map { .certificate($0) }
            } catch let e as HTTPError {
                throw e
            } catch {
                throw HTTPError(.tls, "the client certificate does not load (\(error)); check its PEM")
            }
            do {
                config.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(key.utf8), format: .pem))
            } catch {
                throw HTTPError(.tls, "the client private key does not load (\(error)); it must be an unencrypted PEM key (EC, PKCS#8 or RSA)")
            }
        default:
            throw HTTPError(.tls, "a client certificate needs both the certificate chain and the private key")
        }
        do {
            return try NIOSSLContext(configuration: config)
        } catch {
            throw HTTPError(.tls, "cannot set up TLS: \(error); check the client certificate matches its key")
        }
    }
}

/// The connection a request uses, so that cancelling the task can close it.
private final class CurrentConnection: Sendable {
    private let state = Mutex<(cancelled: HTTPError?, connection: HTTPConnection?)>((nil, nil))

    /// Records `connection`; false when the task was already cancelled.
    func set(_ connection: HTTPConnection) -> Bool {
        state.withLock { s in
            if s.cancelled != nil { return false }
            s.connection = connection
            return true
        }
    }

    func cancel(_ error: HTTPError) {
        let connection = state.withLock { s in
            s.cancelled = error
            return s.connection
        }
        connection?.fail(error)
    }
}
