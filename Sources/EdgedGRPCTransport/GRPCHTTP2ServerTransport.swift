// A gRPC server transport for GRPCCore: TLS (ALPN h2) connections, one call per HTTP/2 stream, the client's
// certificate handed to the call.

import GRPCCore
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NIOSSL
import Synchronization
import X509

/// Listens on one TCP address. Each call's ServerContext carries a `PeerContext` with the client's certificate
/// (from mutual TLS) in `transportSpecific`. `beginGracefulShutdown` stops accepting, closes idle connections and
/// each busy one when its last call ends; cancelling `listen` closes everything at once.
public final class GRPCHTTP2ServerTransport: ServerTransport, Sendable {
    public typealias Bytes = [UInt8]

    public struct Config: Sendable {
        public var host: String
        public var port: Int
        /// A server TLS context; `applicationProtocols` should include "h2". Require client certificates here.
        public var tls: NIOSSLContext
        public var keepaliveInterval: Duration
        public var keepaliveTimeout: Duration
        public var maxMessageBytes: Int

        public init(host: String, port: Int, tls: NIOSSLContext, keepaliveInterval: Duration = .seconds(30),
                    keepaliveTimeout: Duration = .seconds(20), maxMessageBytes: Int = 4 << 20) {
            self.host = host
            self.port = port
            self.tls = tls
            self.keepaliveInterval = keepaliveInterval
            self.keepaliveTimeout = keepaliveTimeout
            self.maxMessageBytes = maxMessageBytes
        }
    }

    /// What a call learns about its connection.
    public struct PeerContext: ServerContext.TransportSpecific {
        /// The client's certificate, when it presented one.
        public var peerCertificate: Certificate?
    }

    private struct IncomingStream: Sendable {
        let channel: NIOAsyncChannel<HTTP2Frame.FramePayload, HTTP2Frame.FramePayload>
        let peerCertificate: Certificate?
    }

    private struct IncomingConnection: Sendable {
        let channel: Channel
        let streams: NIOHTTP2AsyncSequence<IncomingStream>
    }

    private struct State {
        var address: Result<SocketAddress, any Error>?
        var addressWaiters: [CheckedContinuation<SocketAddress, any Error>] = []
        var listener: Channel?
        var shuttingDown = false
        /// Open connections and their calls in progress.
        var connections: [ObjectIdentifier: (channel: Channel, calls: Int)] = [:]
    }

    public let config: Config
    private let state = Mutex(State())

    public init(config: Config) {
        self.config = config
    }

    /// The address listened on, once bound (port 0 becomes the port chosen); throws when binding failed.
    public func listeningAddress() async throws -> SocketAddress {
        try await withCheckedThrowingContinuation { continuation in
            let now = state.withLock { s -> Result<SocketAddress, any Error>? in
                if s.address == nil { s.addressWaiters.append(continuation) }
                return s.address
            }
            if let now { continuation.resume(with: now) }
        }
    }

    public func listen(
        streamHandler: @escaping @Sendable (_ stream: RPCStream<Inbound, Outbound>, _ context: ServerContext) async -> Void
    ) async throws {
        let config = self.config
        let server: NIOAsyncChannel<IncomingConnection, Never>
        do {
            server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.backlog, value: 128)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.so_keepalive), value: 1)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .bind(host: config.host, port: config.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        try sync.addHandler(NIOSSLServerHandler(context: config.tls))
                        let multiplexer = try sync.configureAsyncHTTP2Pipeline(
                            mode: .server, configuration: GRPCHTTP2Settings.configuration()
                        ) { stream in
                            stream.eventLoop.makeCompletedFuture {
                                let peer = try? stream.parent?.pipeline.syncOperations.nioSSL_peerCertificate()
                                let certificate = peer.flatMap { try? Certificate(derEncoded: $0.toDERBytes()) }
                                return IncomingStream(
                                    channel: try NIOAsyncChannel(wrappingChannelSynchronously: stream),
                                    peerCertificate: certificate)
                            }
                        }
                        try sync.addHandler(HTTP2Keepalive(interval: config.keepaliveInterval, timeout: config.keepaliveTimeout))
                        return IncomingConnection(channel: channel, streams: multiplexer.inbound)
                    }
                }
        } catch {
            publish(.failure(error))
            throw error
        }
        publish(server.channel.localAddress.map { .success($0) } ?? .failure(ChannelError.unknownLocalAddress))
        let closeNow = state.withLock { s -> Bool in
            s.listener = server.channel
            return s.shuttingDown
        }
        if closeNow { server.channel.close(promise: nil) }

        try await withThrowingDiscardingTaskGroup { group in
            try await server.executeThenClose { connections in
                for try await connection in connections {
                    group.addTask { await self.serve(connection, streamHandler: streamHandler) }
                }
            }
        }
    }

    public func beginGracefulShutdown() {
        let (listener, idle) = state.withLock { s -> (Channel?, [Channel]) in
            s.shuttingDown = true
            return (s.listener, s.connections.values.filter { $0.calls == 0 }.map(\.channel))
        }
        listener?.close(promise: nil)
        for channel in idle { channel.close(promise: nil) }
    }

    private func publish(_ result: Result<SocketAddress, any Error>) {
        let waiters = state.withLock { s -> [CheckedContinuation<SocketAddress, any Error>] in
            s.address = result
            defer { s.addressWaiters = [] }
            return s.addressWaiters
        }
        for w in waiters { w.resume(with: result) }
    }

    // MARK: Connections and calls

    private func serve(_ connection: IncomingConnection,
                       streamHandler: @escaping @Sendable (RPCStream<Inbound, Outbound>, ServerContext) async -> Void) async {
        let id = ObjectIdentifier(connection.channel)
        let closeNow = state.withLock { s -> Bool in
            s.connections[id] = (connection.channel, 0)
            return s.shuttingDown
        }
        if closeNow { connection.channel.close(promise: nil) }
        await withDiscardingTaskGroup { group in
            await withTaskCancellationHandler {
                do {
                    for try await stream in connection.streams {
                        state.withLock { $0.connections[id]?.calls += 1 }
                        group.addTask {
                            await self.handle(stream, on: connection.channel, streamHandler: streamHandler)
                            let close = self.state.withLock { s -> Bool in
                                s.connections[id]?.calls -= 1
                                return s.shuttingDown && s.connections[id]?.calls == 0
                            }
                            if close { connection.channel.close(promise: nil) }
                        }
                    }
                } catch {}
            } onCancel: {
                connection.channel.close(promise: nil)
            }
        }
        _ = state.withLock { $0.connections.removeValue(forKey: id) }
        connection.channel.close(promise: nil)
    }

    private func handle(_ stream: IncomingStream, on connection: Channel,
                        streamHandler: @escaping @Sendable (RPCStream<Inbound, Outbound>, ServerContext) async -> Void) async {
        let maxMessageBytes = config.maxMessageBytes
        let remote = peerDescription(connection.remoteAddress)
        let local = peerDescription(connection.localAddress)
        let streamChannel = stream.channel.channel
        try? await stream.channel.executeThenClose { inbound, outbound in
            var frames = inbound.makeAsyncIterator()
            guard case .headers(let request)? = try await frames.next() else { return }
            let headers = request.headers
            guard headers.first(name: ":method") == "POST" else {
                try await outbound.write(.headers(.init(headers: [":status": "405"], endStream: true)))
                return
            }
            guard GRPCWire.isGRPC(contentType: headers.first(name: "content-type")) else {
                try await outbound.write(.headers(.init(headers: [":status": "415"], endStream: true)))
                return
            }
            let path = headers.first(name: ":path") ?? ""
            let parts = path.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 3, parts[0].isEmpty, !parts[1].isEmpty, !parts[2].isEmpty else {
                var trailers = ServerResponseWriter.responseHeaders()
                trailers.add(name: "grpc-status", value: String(Status.Code.unimplemented.rawValue))
                trailers.add(name: "grpc-message", value: GRPCWire.percentEncode("malformed method path \(path)"))
                try await outbound.write(.headers(.init(headers: trailers, endStream: true)))
                return
            }
            let descriptor = MethodDescriptor(fullyQualifiedService: String(parts[1]), method: String(parts[2]))
            let source = FrameSource(frames)
            if request.endStream { source.markFinished() }
            let requestParts = ServerRequestParts(metadata: GRPCWire.metadata(from: headers),
                                                  source: source, endedWithHeaders: request.endStream,
                                                  maxMessageBytes: maxMessageBytes)
            let writer = ServerResponseWriter(outbound: outbound)
            await withServerContextRPCCancellationHandle { handle in
                streamChannel.closeFuture.whenComplete { _ in handle.cancel() }
                var context = ServerContext(descriptor: descriptor, remotePeer: remote, localPeer: local, cancellation: handle)
                context.transportSpecific = PeerContext(peerCertificate: stream.peerCertificate)
                await streamHandler(
                    RPCStream(descriptor: descriptor, inbound: RPCAsyncSequence(wrapping: requestParts),
                              outbound: RPCWriter.Closable(wrapping: writer)),
                    context)
            }
            // The writer only queued the last frames: closing the stream now would reset it before they are sent
            // (the client's flow-control window may hold them back). HTTP/2 closes the stream once both ends have
            // ended it; a client that is still sending gets a short grace and then the reset.
            try await Self.waitForClose(streamChannel, within: source.peerFinished ? nil : .seconds(2))
        }
    }

    private static func waitForClose(_ channel: Channel, within limit: Duration?) async throws {
        guard let limit else {
            try await channel.closeFuture.get()
            return
        }
        let timer = channel.eventLoop.scheduleTask(in: TimeAmount(limit)) { channel.close(promise: nil) }
        defer { timer.cancel() }
        try await channel.closeFuture.get()
    }
}
