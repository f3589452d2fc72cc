// A gRPC client transport for GRPCCore: one TLS connection (ALPN h2) to one server, one HTTP/2 stream per call.

import GRPCCore
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// Dials once, when `connect()` runs, and carries every call of its GRPCClient on that connection; it does not
/// redial (the tunnel agent makes a fresh transport per connection and owns the backoff). Calls made before the
/// connection is up wait for it; if the dial or the TLS handshake fails, they fail with `unavailable` and the reason.
/// Keepalive PINGs close a connection whose peer has gone silent.
///
/// grpc-swift-nio-transport would do this too, but it links full Foundation and ICU into the binary (about 45 MB
/// on arm64), which a gateway cannot afford; this needs only SwiftNIO, NIOSSL and NIOHTTP2.
public final class GRPCHTTP2ClientTransport: ClientTransport, Sendable {
    public typealias Bytes = [UInt8]

    public struct Config: Sendable {
        public var host: String
        public var port: Int
        /// A client TLS context; `applicationProtocols` should include "h2".
        public var tls: NIOSSLContext
        /// Name sent as SNI and checked in the server's certificate; nil for an IP address (the address is checked).
        public var serverHostname: String?
        /// Makes the TLS handler of the connection instead of `tls` + `serverHostname`, for checks of the server's
        /// identity that NIOSSL does not do itself (an IP address as the server name: EdgedHTTP's TLSServerIdentity).
        public var makeTLSHandler: (@Sendable () throws -> NIOSSLClientHandler)?
        /// The :authority of every call.
        public var authority: String
        public var connectTimeout: Duration
        /// PING when the connection was quiet this long; close it when a PING is not answered within the timeout.
        public var keepaliveInterval: Duration
        public var keepaliveTimeout: Duration
        public var maxMessageBytes: Int

        public init(host: String, port: Int, tls: NIOSSLContext, serverHostname: String?, authority: String? = nil,
                    connectTimeout: Duration = .seconds(20), keepaliveInterval: Duration = .seconds(30),
                    keepaliveTimeout: Duration = .seconds(20), maxMessageBytes: Int = 4 << 20,
                    makeTLSHandler: (@Sendable () throws -> NIOSSLClientHandler)? = nil) {
            self.host = host
            self.port = port
            self.tls = tls
            self.serverHostname = serverHostname
            self.authority = authority ?? (host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)")
            self.connectTimeout = connectTimeout
            self.keepaliveInterval = keepaliveInterval
            self.keepaliveTimeout = keepaliveTimeout
            self.maxMessageBytes = maxMessageBytes
            self.makeTLSHandler = makeTLSHandler
        }
    }

    private struct Connection: Sendable {
        let channel: Channel
        let multiplexer: NIOHTTP2Handler.AsyncStreamMultiplexer<Void>
    }

    private enum Phase {
        case idle
        case ready(Connection)
        case failed(RPCError)
    }

    private struct State {
        var phase = Phase.idle
        var waiters: [CheckedContinuation<Connection, any Error>] = []
        var activeStreams = 0
        var shuttingDown = false
    }

    public let config: Config
    public let retryThrottle: RetryThrottle? = nil
    private let state = Mutex(State())

    public init(config: Config) {
        self.config = config
    }

    public func config(forMethod descriptor: MethodDescriptor) -> MethodConfig? { nil }

    private var target: String { "\(config.host):\(config.port)" }

    public func connect() async throws {
        if state.withLock({ $0.shuttingDown }) {
            settle(.failed(RPCError(code: .unavailable, message: "the connection to \(target) was shut down before it was made")))
            return
        }
        let connection: Connection
        do {
            connection = try await dial()
        } catch {
            settle(.failed(RPCError(code: .unavailable, message: "cannot connect to \(target): \(Self.describe(error))", cause: error)))
            return
        }
        settle(.ready(connection))
        if state.withLock({ $0.shuttingDown && $0.activeStreams == 0 }) { connection.channel.close(promise: nil) }
        await withTaskCancellationHandler {
            try? await connection.channel.closeFuture.get()
        } onCancel: {
            connection.channel.close(promise: nil)
        }
        settle(.failed(RPCError(code: .unavailable, message: "the connection to \(target) is closed")))
    }

    public func beginGracefulShutdown() {
        let (connection, waiters) = state.withLock { s -> (Connection?, [CheckedContinuation<Connection, any Error>]) in
            s.shuttingDown = true
            if case .ready(let c) = s.phase, s.activeStreams == 0 { return (c, []) }
            if case .idle = s.phase {
                s.phase = .failed(RPCError(code: .unavailable, message: "the connection to \(target) was shut down"))
                defer { s.waiters = [] }
                return (nil, s.waiters)
            }
            return (nil, [])
        }
        connection?.channel.close(promise: nil)
        for w in waiters { w.resume(throwing: RPCError(code: .unavailable, message: "the connection to \(target) was shut down")) }
    }

    public func withStream<T: Sendable>(
        descriptor: MethodDescriptor, options: CallOptions,
        _ closure: (_ stream: RPCStream<Inbound, Outbound>, _ context: ClientContext) async throws -> T
    ) async throws -> T {
        let connection = try await readyConnection()
        let stream: NIOAsyncChannel<HTTP2Frame.FramePayload, HTTP2Frame.FramePayload>
        do {
            stream = try await connection.multiplexer.openStream { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<HTTP2Frame.FramePayload, HTTP2Frame.FramePayload>(wrappingChannelSynchronously: channel)
                }
            }
        } catch {
            throw RPCError(code: .unavailable, message: "cannot open an HTTP/2 stream to \(target): \(Self.describe(error))", cause: error)
        }
        state.withLock { $0.activeStreams += 1 }
        defer {
            let close = state.withLock { s -> Bool in
                s.activeStreams -= 1
                return s.shuttingDown && s.activeStreams == 0
            }
            if close { connection.channel.close(promise: nil) }
        }
        var headers: HPACKHeaders = [
            ":method": "POST", ":scheme": "https", ":path": "/" + descriptor.fullyQualifiedMethod,
            ":authority": config.authority, "content-type": GRPCWire.contentType, "te": "trailers",
            "user-agent": "edged-grpc",
        ]
        if let timeout = options.timeout { headers.add(name: "grpc-timeout", value: GRPCWire.timeout(timeout)) }
        let callHeaders = headers
        let remote = peerDescription(connection.channel.remoteAddress)
        let local = peerDescription(connection.channel.localAddress)
        let maxMessageBytes = options.maxResponseMessageBytes ?? config.maxMessageBytes
        return try await stream.executeThenClose { inbound, outbound in
            let parts = ClientResponseParts(source: FrameSource(inbound.makeAsyncIterator()), maxMessageBytes: maxMessageBytes,
                                            peer: "the server at \(target)")
            let rpc = RPCStream(descriptor: descriptor, inbound: RPCAsyncSequence(wrapping: parts),
                                outbound: RPCWriter.Closable(wrapping: ClientRequestWriter(outbound: outbound, callHeaders: callHeaders)))
            return try await closure(rpc, ClientContext(descriptor: descriptor, remotePeer: remote, localPeer: local))
        }
    }

    // MARK: Connection

    private func readyConnection() async throws -> Connection {
        try await withCheckedThrowingContinuation { continuation in
            let now = state.withLock { s -> Result<Connection, RPCError>? in
                switch s.phase {
                case .ready(let c): return .success(c)
                case .failed(let e): return .failure(e)
                case .idle:
                    s.waiters.append(continuation)
                    return nil
                }
            }
            switch now {
            case .success(let c): continuation.resume(returning: c)
            case .failure(let e): continuation.resume(throwing: e)
            case nil: break
            }
        }
    }

    private func settle(_ phase: Phase) {
        let waiters = state.withLock { s -> [CheckedContinuation<Connection, any Error>] in
            s.phase = phase
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters {
            switch phase {
            case .ready(let c): w.resume(returning: c)
            case .failed(let e): w.resume(throwing: e)
            case .idle: break
            }
        }
    }

    /// TCP, then TLS (waiting for the handshake, so its failure is the dial's error), then HTTP/2.
    private func dial() async throws -> Connection {
        let config = self.config
        let (connection, handshake) = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(TimeAmount(config.connectTimeout))
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connect(host: config.host, port: config.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    let handshake = channel.eventLoop.makePromise(of: Void.self)
                    try sync.addHandler(config.makeTLSHandler?()
                                        ?? NIOSSLClientHandler(context: config.tls, serverHostname: config.serverHostname))
                    try sync.addHandler(TLSHandshakeWatch(promise: handshake))
                    let multiplexer = try sync.configureAsyncHTTP2Pipeline(
                        mode: .client, configuration: GRPCHTTP2Settings.configuration()
                    ) { stream in
                        stream.close(promise: nil)   // servers do not start gRPC streams
                        return stream.eventLoop.makeSucceededVoidFuture()
                    }
                    try sync.addHandler(HTTP2Keepalive(interval: config.keepaliveInterval, timeout: config.keepaliveTimeout))
                    return (Connection(channel: channel, multiplexer: multiplexer), handshake.futureResult)
                }
            }
        do {
            try await handshake.get()
        } catch {
            connection.channel.close(promise: nil)
            throw error
        }
        return connection
    }

    static func describe(_ error: any Error) -> String {
        if let e = error as? NIOSSLError, case .handshakeFailed(let inner) = e { return "TLS handshake failed: \(inner)" }
        if let e = error as? NIOConnectionError, let first = e.connectionErrors.first { return "\(first.error)" }
        return "\(error)"
    }
}

/// Completes its promise when the TLS handshake is done, or fails it with the first error or the close.
final class TLSHandshakeWatch: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private let promise: EventLoopPromise<Void>
    private var settled = false

    init(promise: EventLoopPromise<Void>) { self.promise = promise }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event, !settled {
            settled = true
            promise.succeed()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !settled {
            settled = true
            promise.fail(error)
        }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !settled {
            settled = true
            promise.fail(ChannelError.eof)
        }
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if !settled {
            settled = true
            promise.fail(ChannelError.ioOnClosedChannel)
        }
    }
}
