// One HTTP(S) listener of the edge hub: 10261 (plain HTTP for node-local clients), 10268 (HTTPS for pods) and the
// health port 10267 are each a HubServer with their own handler.

#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

/// Serves HTTP/1.1 (over TLS when `tls` is set) on one address, handing each request to a `HubHandler`.
///
/// Connections are kept alive; pipelined requests are answered in order, one at a time. Request bodies are read
/// whole up to `maxRequestBytes` (a kube-style 413 Status beyond, before the handler runs); responses stream through
/// a `HubResponseWriter` with back-pressure. `Connection: Upgrade` requests (exec, attach, port-forward) are spliced
/// to the upstream the handler names, bytes relayed both ways until either side closes.
///
/// `run()` serves until its task is cancelled or graceful shutdown: then it stops accepting, closes idle
/// keep-alive connections, lets requests in flight finish for `shutdownGrace`, and cancels what is left (watches).
public final class HubServer: Sendable, Service {
    /// The largest request body read (the API server's own limit for most writes is 3 MiB).
    public static let maxRequestBytes = 10 << 20

    public let name: String
    public let host: String
    public let port: Int
    let tls: HubServerTLS?
    let handler: any HubHandler
    let logger: Logger
    let shutdownGrace: Duration
    let connections = ConnectionRegistry()
    private let group: any EventLoopGroup
    private let state = Mutex<State>(.idle)

    private enum State {
        case idle
        case running(any Channel, port: Int)
        case stopped
    }

    /// Requests come in through the async channel; responses are written to the channel directly (ResponseWriter).
    typealias Connection = NIOAsyncChannel<HTTPServerRequestPart, Never>

    /// Listens on host:port; tls nil = plain HTTP. `name` ("proxy", "proxy-https", "health") labels logs and errors.
    public init(name: String, host: String, port: Int, tls: HubServerTLS?, handler: any HubHandler, logger: Logger,
                shutdownGrace: Duration = .seconds(2),
                eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.name = name
        self.host = host
        self.port = port
        self.tls = tls
        self.handler = handler
        var logger = logger
        logger[metadataKey: "listener"] = "\(name)"
        self.logger = logger
        self.shutdownGrace = shutdownGrace
        self.group = eventLoopGroup
    }

    /// The port actually bound (useful with port 0); nil before `run()` has bound or after it returned.
    public var boundPort: Int? {
        state.withLock { state in
            if case .running(_, let port) = state { return port }
            return nil
        }
    }

    /// Binds, then serves until cancelled or graceful shutdown.
    /// - Throws: `HubServerError` `.bind` (the port is taken, the address is not local) or `.tls` (certificate or key
    ///   does not load), before serving anything.
    public func run() async throws {
        let sslContext = try tls.map { tls throws(HubServerError) in try Self.makeServerContext(tls, listener: name) }
        let server: NIOAsyncChannel<Connection, Never>
        do {
            server = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .bind(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        if let sslContext { try sync.addHandler(NIOSSLServerHandler(context: sslContext)) }
                        // An upgrade configuration without upgraders: it steps aside at the first request, and it
                        // makes the decoder hand on the bytes after an upgrade request (spliced upstream).
                        try sync.configureHTTPServerPipeline(withPipeliningAssistance: false,
                                                             withServerUpgrade: (upgraders: [], completionHandler: { _ in }),
                                                             withErrorHandling: true)
                        return try Connection(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw HubServerError(.bind, "the hub's \(name) listener cannot listen on \(host):\(port): \(Self.reason(error)); "
                                 + "stop what uses the port or choose another one in the hub configuration")
        }
        let bound = server.channel.localAddress?.port ?? port
        let proceed = state.withLock { state -> Bool in
            if case .stopped = state { return false }
            state = .running(server.channel, port: bound)
            return true
        }
        guard proceed else {
            try? await server.executeThenClose { _ in }
            return
        }
        logger.info("edge hub listening", metadata: ["address": "\(host):\(bound)", "tls": "\(tls != nil)"])
        // The accept loop runs in its own task so that cancelling `run()` does not abandon connections already
        // accepted (each must be closed through its executeThenClose): cancellation closes the listener, the loop
        // drains what was accepted, then ends.
        let acceptLoop = Task {
            try await server.executeThenClose { inbound in
                try? await withThrowingDiscardingTaskGroup { tasks in
                    do {
                        for try await connection in inbound {
                            tasks.addTask {
                                // The last connection to end during shutdown ends the grace period early.
                                if await self.serve(connection) { throw ShutdownComplete() }
                            }
                        }
                    } catch {
                        // The listener closed under us (shutdown): not an error.
                    }
                    for channel in self.connections.stop(grace: nil) { channel.close(promise: nil) }
                    let grace = self.connections.grace ?? self.shutdownGrace
                    tasks.addTask {
                        guard !self.connections.isEmpty else { return }
                        do { try await Task.sleep(for: grace) } catch { return }
                        // Requests still running (watches, slow lists) are cancelled.
                        throw ShutdownComplete()
                    }
                }
            }
        }
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                _ = try? await acceptLoop.value
            } onCancel: {
                self.shutdown(grace: .zero)
            }
        } onGracefulShutdown: {
            self.shutdown(grace: nil)
        }
        state.withLock { $0 = .stopped }
        logger.debug("edge hub listener stopped")
    }

    /// Stops accepting and closes idle connections; requests in flight get `grace` (nil: `shutdownGrace`), then
    /// are cancelled. `run()` returns once every connection is closed.
    public func shutdown(grace: Duration? = nil) {
        let idle = connections.stop(grace: grace ?? shutdownGrace)
        for channel in idle { channel.close(promise: nil) }
        let channel = state.withLock { state -> (any Channel)? in
            defer { state = .stopped }
            if case .running(let channel, _) = state { return channel }
            return nil
        }
        guard let channel else { return }
        // Stop accepting first and close a moment later: a connection accepted just before the close is still
        // handed to the accept loop (and closed properly) instead of being dropped half set up.
        channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in
            channel.eventLoop.scheduleTask(in: .milliseconds(20)) { channel.close(promise: nil) }
        }
    }

    private struct ShutdownComplete: Error {}

    static func makeServerContext(_ tls: HubServerTLS, listener: String) throws(HubServerError) -> NIOSSLContext {
        let certificates: [NIOSSLCertificate]
        do { certificates = try NIOSSLCertificate.fromPEMBytes(Array(tls.certificateChainPEM.utf8)) } catch {
            throw HubServerError(.tls, "the hub's \(listener) listener: its certificate does not load (\(error)); check the certificate PEM")
        }
        guard !certificates.isEmpty else {
            throw HubServerError(.tls, "the hub's \(listener) listener: its certificate PEM holds no certificate; check the certificate file")
        }
        let key: NIOSSLPrivateKey
        do { key = try NIOSSLPrivateKey(bytes: Array(tls.privateKeyPEM.utf8), format: .pem) } catch {
            throw HubServerError(.tls, "the hub's \(listener) listener: its private key does not load (\(error)); it must be an unencrypted PEM key (EC, PKCS#8 or RSA)")
        }
        var config = TLSConfiguration.makeServerConfiguration(certificateChain: certificates.map { .certificate($0) },
                                                               privateKey: .privateKey(key))
        // HTTP/1.1 only: clients that offer h2 fall back to it, and upgrades (SPDY, websocket) need it anyway.
        config.applicationProtocols = ["http/1.1"]
        do {
            return try NIOSSLContext(configuration: config)
        } catch {
            throw HubServerError(.tls, "the hub's \(listener) listener cannot set up TLS: \(error); check that the certificate matches its key")
        }
    }

    /// A short reason for a socket error ("connection refused", "address already in use").
    static func reason(_ error: any Error) -> String {
        if let e = error as? IOError {
            return String(cString: strerror(e.errnoCode)).lowercased()
        }
        if let e = error as? ChannelError, case .connectTimeout(let limit) = e {
            return "no answer within \(limit.nanoseconds / 1_000_000_000) s"
        }
        if let e = error as? NIOConnectionError {
            if e.dnsAError != nil || e.dnsAAAAError != nil, e.connectionErrors.isEmpty { return "the host name does not resolve" }
            let reasons = e.connectionErrors.map { reason($0.error) }
            let unique = reasons.reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
            return unique.isEmpty ? "no address" : unique.joined(separator: ", ")
        }
        return "\(error)"
    }
}

/// The connections of one listener, so that shutdown can close the idle ones and knows when the last one ended.
final class ConnectionRegistry: Sendable {
    private struct Entry {
        var channel: any Channel
        var busy: Bool
    }

    private struct State {
        var entries: [ObjectIdentifier: Entry] = [:]
        var stopping = false
        var grace: Duration?
    }

    private let state = Mutex(State())

    /// Records a new connection; false when shutting down (close it then).
    func add(_ channel: any Channel) -> Bool {
        state.withLock { s in
            guard !s.stopping else { return false }
            s.entries[ObjectIdentifier(channel)] = Entry(channel: channel, busy: false)
            return true
        }
    }

    /// Marks a connection busy (a request is being answered) or idle; returns whether the server is stopping.
    @discardableResult
    func setBusy(_ channel: any Channel, _ busy: Bool) -> Bool {
        state.withLock { s in
            s.entries[ObjectIdentifier(channel)]?.busy = busy
            return s.stopping
        }
    }

    /// Forgets a closed connection; true when the server is stopping and it was the last one.
    func remove(_ channel: any Channel) -> Bool {
        state.withLock { s in
            s.entries[ObjectIdentifier(channel)] = nil
            return s.stopping && s.entries.isEmpty
        }
    }

    /// Marks the server stopping; returns the idle connections, to be closed. A later call keeps the first grace.
    func stop(grace: Duration?) -> [any Channel] {
        state.withLock { s in
            s.stopping = true
            if s.grace == nil { s.grace = grace }
            return s.entries.values.filter { !$0.busy }.map(\.channel)
        }
    }

    var isStopping: Bool { state.withLock { $0.stopping } }
    var isEmpty: Bool { state.withLock { $0.entries.isEmpty } }
    var grace: Duration? { state.withLock { $0.grace } }
}
