// The kubelet API on :10250: HTTPS with the node's serving certificate, as kube-apiserver and metrics-server expect.

import EdgedKube
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

/// Serves the kubelet API (/healthz, /pods, /containerLogs, /exec, /attach, /portForward, /metrics,
/// /metrics/resource, /stats/summary) over HTTPS, with kubelet's webhook authentication and authorization through
/// the API server `client` talks to.
///
/// Each connection's pipeline: NIOSSLServerHandler → "http-decoder" (leftover bytes forwarded, for upgrades) →
/// "http-encoder" → "kubelet-http". The TLS context is taken per connection from `ServingTLS`, which reloads the
/// certificate when its files change. `run()` serves until cancelled or graceful shutdown, then closes the listener
/// and every open connection (followed logs and streaming sessions included).
public final class KubeletServer: Sendable, ServiceLifecycle.Service {
    public let config: KubeletServerConfig
    let api: KubeletAPIHandler
    let tls: ServingTLS
    private let logger: Logger
    private let group: any EventLoopGroup
    private let state = Mutex<State>(State())

    private struct State {
        var listener: (any Channel)?
        var port: Int?
        var stopped = false
        var connections: [ObjectIdentifier: any Channel] = [:]
    }

    public init(config: KubeletServerConfig, backend: any KubeletBackend, client: KubeClient,
                logger: Logger = Logger(label: "edged.kubelet-api"),
                eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.config = config
        self.logger = logger
        self.group = eventLoopGroup
        let fallback = config.fallbackCertPath.flatMap { c in config.fallbackKeyPath.map { (certPath: c, keyPath: $0) } }
        self.tls = ServingTLS(certPath: config.certPath, keyPath: config.keyPath, clientCAPath: config.clientCAPath,
                              fallback: fallback, logger: logger)
        self.api = KubeletAPIHandler(config: config, backend: backend, client: client, metrics: KubeletServerMetrics(),
                                     logger: logger)
    }

    /// The certificate new connections get: loads the issued one as soon as its file exists (the switch from the
    /// self-signed fallback happens here or at the next connection, whichever comes first). nil when nothing loads.
    public func servingCertificate() -> ServingCertificateSource? {
        _ = try? tls.context()
        return tls.source
    }

    /// The port actually bound (the one to use with port 0); nil before `run()` has bound it and after it returned.
    public var boundPort: Int? { state.withLock { $0.port } }

    /// Binds, then serves until cancelled or graceful shutdown.
    /// - Throws: `KubeletServerError` `.tls` (certificate, key or client CA does not load) or `.bind` (the port is
    ///   taken), before serving anything.
    public func run() async throws {
        _ = try tls.context()
        let listener: any Channel
        do {
            listener = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture { try self.configure(channel) }
                }
                .bind(host: config.host, port: config.port).get()
        } catch {
            throw KubeletServerError(.bind, "the kubelet API cannot listen on \(config.host):\(config.port): \(error); stop what uses the port or set another kubelet port in the configuration")
        }
        let bound = listener.localAddress?.port ?? config.port
        let proceed = state.withLock { s -> Bool in
            guard !s.stopped else { return false }
            s.listener = listener
            s.port = bound
            return true
        }
        guard proceed else {
            try? await listener.close()
            return
        }
        logger.info("kubelet API listening", metadata: ["address": "\(config.host):\(bound)", "node": "\(config.nodeName)"])
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                try? await listener.closeFuture.get()
            } onCancel: {
                self.shutdown()
            }
        } onGracefulShutdown: {
            self.shutdown()
        }
        state.withLock { $0.port = nil }
        logger.debug("kubelet API stopped")
    }

    /// Stops accepting and closes every open connection; `run()` then returns.
    public func shutdown() {
        let (listener, connections) = state.withLock { s -> ((any Channel)?, [any Channel]) in
            s.stopped = true
            defer { s.listener = nil }
            return (s.listener, Array(s.connections.values))
        }
        listener?.close(promise: nil)
        for connection in connections { connection.close(promise: nil) }
    }

    /// Sets up one accepted connection (on its event loop).
    private func configure(_ channel: any Channel) throws {
        let registered = state.withLock { s -> Bool in
            guard !s.stopped else { return false }
            s.connections[ObjectIdentifier(channel)] = channel
            return true
        }
        guard registered else { throw ChannelError.ioOnClosedChannel }
        channel.closeFuture.whenComplete { [self] _ in
            _ = state.withLock { $0.connections.removeValue(forKey: ObjectIdentifier(channel)) }
        }
        let context: NIOSSLContext
        do { context = try tls.context() } catch {
            logger.error("kubelet API: refusing a connection, no usable TLS certificate", metadata: ["error": "\(error.message)"])
            throw error
        }
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(NIOSSLServerHandler(context: context), name: "tls")
        try sync.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)), name: "http-decoder")
        try sync.addHandler(HTTPResponseEncoder(), name: "http-encoder")
        try sync.addHandler(KubeletConnectionHandler(api: api), name: KubeletConnectionHandler.name)
    }

    /// Counts for tests and /metrics: open followed logs and streaming sessions of `kind` (logs, exec, attach,
    /// portforward).
    public func openStreams(_ kind: String) -> Int { api.metrics.openStreams(kind) }
}
