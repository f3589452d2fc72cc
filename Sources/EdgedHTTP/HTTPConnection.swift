// One TCP (or TLS) connection to a server, usable from async code; requests run on it one at a time.

#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// A connection and the handler that carries its requests. Every call hops to the channel's event loop.
final class HTTPConnection: Sendable {
    let channel: Channel
    let key: HTTPURL.PoolKey
    private let handler: NIOLoopBound<ConnectionHandler>

    private init(channel: Channel, key: HTTPURL.PoolKey, handler: NIOLoopBound<ConnectionHandler>) {
        self.channel = channel
        self.key = key
        self.handler = handler
    }

    var isActive: Bool { channel.isActive }

    /// Connects to `url`'s host and port, doing the TLS handshake when `tls` is given, within `timeout`.
    ///
    /// - Throws: `HTTPError` `.connect` (refused, unreachable, unknown host, timed out) or `.tls`.
    static func connect(to url: HTTPURL, tls: NIOSSLContext?, serverName: String?, group: any EventLoopGroup,
                        timeout: TimeAmount) async throws(HTTPError) -> HTTPConnection {
        let deadline = NIODeadline.now() + timeout
        let authority = url.authority
        let identity = TLSServerIdentity(serverName: serverName, host: url.host)
        // Happy eyeballs may start several channels; each records its handler here, and the winner's is used.
        // (Asking the winner's pipeline later fails when TLS already closed it.)
        let attempts = Attempts()
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tls {
                        try sync.addHandler(identity.makeClientHandler(context: tls) { problem in
                            HTTPError(.tls, "TLS with \(authority) failed: \(problem)")
                        })
                    }
                    try sync.addHTTPClientHandlers()
                    let handler = ConnectionHandler(authority: authority, usesTLS: tls != nil,
                                                    connectDeadline: deadline, eventLoop: channel.eventLoop)
                    try sync.addHandler(handler)
                    attempts.add(channel, NIOLoopBound(handler, eventLoop: channel.eventLoop), handler.ready)
                }
            }
        let channel: Channel
        do {
            channel = try await bootstrap.connect(host: url.host, port: url.port).get()
        } catch {
            throw connectError(error, authority: authority, timeout: timeout)
        }
        do {
            guard let (handler, ready) = attempts.find(channel) else {
                throw HTTPError(.connect, "cannot connect to \(authority): the connection has no HTTP handler")
            }
            try await ready.get()
            return HTTPConnection(channel: channel, key: url.poolKey, handler: handler)
        } catch {
            channel.close(promise: nil)
            throw (error as? HTTPError) ?? HTTPError(.connect, "cannot connect to \(authority): \(error)")
        }
    }

    /// Sends the request; returns the response head once it arrives.
    func start(_ head: HTTPRequestHead, body: [UInt8]?, what: String, idleTimeout: TimeAmount?, deadline: NIODeadline?,
               deadlineMessage: String) async throws(HTTPError) -> (HTTPResponseHead, generation: Int) {
        let handler = self.handler
        do {
            return try await channel.eventLoop.flatSubmit {
                handler.value.start(head, body: body, what: what, idleTimeout: idleTimeout, deadline: deadline,
                                    deadlineMessage: deadlineMessage).map { ($0, handler.value.generation) }
            }.get()
        } catch {
            throw (error as? HTTPError) ?? HTTPError(.closed, "\(what): \(error)")
        }
    }

    /// The next body chunk of request `generation`; nil at its end.
    func next(generation: Int) async throws(HTTPError) -> ByteBuffer? {
        let handler = self.handler
        do {
            return try await channel.eventLoop.flatSubmit { handler.value.next(generation: generation) }.get()
        } catch {
            throw (error as? HTTPError) ?? HTTPError(.closed, "\(error)")
        }
    }

    /// Ends the request in flight; true when the connection may carry another one.
    func finish() async -> Bool {
        let handler = self.handler
        return (try? await channel.eventLoop.submit { handler.value.finish() }.get()) ?? false
    }

    /// Whether any part of a response arrived for the request in flight (a request that got none may be retried).
    func sawResponse() async -> Bool {
        let handler = self.handler
        return (try? await channel.eventLoop.submit { handler.value.sawResponse }.get()) ?? true
    }

    /// Fails what waits on this connection with `error` and closes it.
    func fail(_ error: HTTPError) {
        let handler = self.handler
        channel.eventLoop.execute { handler.value.fail(error) }
    }

    func close() {
        channel.close(promise: nil)
    }

    private static func connectError(_ error: Error, authority: String, timeout: TimeAmount) -> HTTPError {
        let hint = "; check that the server runs and that the address and port are right"
        if let e = error as? ChannelError, case .connectTimeout = e {
            return HTTPError(.connect, "cannot connect to \(authority): no answer within \(ConnectionHandler.format(timeout))\(hint)")
        }
        if let e = error as? NIOConnectionError {
            if e.dnsAError != nil || e.dnsAAAAError != nil, e.connectionErrors.isEmpty {
                return HTTPError(.connect, "cannot connect to \(authority): the host name does not resolve; check the name")
            }
            let reasons = e.connectionErrors.map { reason($0.error) }
            let unique = reasons.reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
            return HTTPError(.connect, "cannot connect to \(authority): \(unique.isEmpty ? "no address" : unique.joined(separator: ", "))\(hint)")
        }
        if error is NIOSSLError || error is NIOSSLExtraError || error is BoringSSLError {
            return HTTPError(.tls, "cannot set up TLS to \(authority): \(error)")
        }
        return HTTPError(.connect, "cannot connect to \(authority): \(reason(error))\(hint)")
    }

    private static func reason(_ error: Error) -> String {
        if let e = error as? IOError {
            #if canImport(Glibc)
            return String(cString: strerror(e.errnoCode)).lowercased()
            #else
            return "\(e)"
            #endif
        }
        if let e = error as? ChannelError, case .connectTimeout = e { return "timed out" }
        return "\(error)"
    }
}

/// The channels one connect started, with their handlers.
private final class Attempts: Sendable {
    private let list = Mutex<[(Channel, NIOLoopBound<ConnectionHandler>, EventLoopFuture<Void>)]>([])

    func add(_ channel: Channel, _ handler: NIOLoopBound<ConnectionHandler>, _ ready: EventLoopFuture<Void>) {
        list.withLock { $0.append((channel, handler, ready)) }
    }

    func find(_ channel: Channel) -> (NIOLoopBound<ConnectionHandler>, EventLoopFuture<Void>)? {
        list.withLock { l in l.first { $0.0 === channel }.map { ($0.1, $0.2) } }
    }
}

extension HTTPURL {
    /// Connections are pooled per scheme + host + port.
    struct PoolKey: Hashable, Sendable {
        var tls: Bool
        var host: String
        var port: Int
    }

    var poolKey: PoolKey { PoolKey(tls: tls, host: host, port: port) }
}
