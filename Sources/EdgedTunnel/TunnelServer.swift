// The cloud-side tunnel server: accepts agents over gRPC and offers kube-apiserver an HTTP CONNECT frontend.

#if canImport(Glibc)
import Glibc
#endif
import GRPCCore
import EdgedGRPCTransport
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

/// The tunnel server, as a Service (`edged tunnel-server`), for clusters without a Konnectivity server.
///
/// Agents connect to AgentService.Connect over mutual TLS: the client certificate must chain to the agent CA and
/// carry CN `system:node:<agentID>`, else the call is refused (PERMISSION_DENIED). Each accepted stream gets the
/// `serverID` / `serverCount` response headers. The frontend (TCP, optionally TLS, and/or a Unix socket) takes
/// `CONNECT host:port`, finds the agent whose identifiers (or agent ID) name that host, asks it to dial and relays
/// the bytes; see `TunnelServer+Frontend.swift` for the answers it gives when that fails.
@available(macOS 15.0, *)
public final class TunnelServer: Service, Sendable {
    struct State {
        var sessions: [ServerAgentSession] = []
        var addresses: Result<TunnelServerAddresses, TunnelError>?
        var waiters: [CheckedContinuation<Result<TunnelServerAddresses, TunnelError>, Never>] = []
    }

    let config: TunnelServerConfig
    let logger: Logger
    let state = Mutex(State())

    public init(config: TunnelServerConfig, logger: Logger) {
        self.config = config
        var logger = logger
        logger[metadataKey: "serverID"] = "\(config.serverID)"
        self.logger = logger
    }

    /// The bound addresses, once `run` is listening everywhere; throws if it failed to start or has stopped.
    public func addresses() async throws -> TunnelServerAddresses {
        let result = await withCheckedContinuation { (c: CheckedContinuation<Result<TunnelServerAddresses, TunnelError>, Never>) in
            let now = state.withLock { s -> Result<TunnelServerAddresses, TunnelError>? in
                if let a = s.addresses { return a }
                s.waiters.append(c)
                return nil
            }
            if let now { c.resume(returning: now) }
        }
        return try result.get()
    }

    /// The agents connected right now.
    public func agents() -> [TunnelServerAgent] {
        state.withLock { $0.sessions.map { $0.info() } }
    }

    public func run() async throws {
        do {
            try await serve()
        } catch {
            let message = (error as? TunnelError) ?? TunnelError("tunnel server \(config.serverID): \(describe(error))")
            publish(.failure(message))
            throw message
        }
        publish(.failure(TunnelError("tunnel server \(config.serverID) has stopped")))
    }

    private func serve() async throws {
        let tls: NIOSSLContext
        do {
            var tlsConfig = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(config.certPath).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: config.keyPath, format: .pem)))
            tlsConfig.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(config.agentCAPath))
            tlsConfig.certificateVerification = .noHostnameVerification
            tlsConfig.applicationProtocols = ["h2"]
            tls = try NIOSSLContext(configuration: tlsConfig)
        } catch {
            throw TunnelError("tunnel server \(config.serverID): cannot set up agent TLS with \(config.certPath), \(config.keyPath) and CA \(config.agentCAPath): \(describe(error))")
        }
        let transport = GRPCHTTP2ServerTransport(config: .init(
            host: config.agentHost, port: config.agentPort, tls: tls,
            keepaliveInterval: config.keepaliveInterval, keepaliveTimeout: config.keepaliveTimeout))
        let grpc = GRPCServer(transport: transport, services: [AgentServiceHandler(server: self)])
        let frontends = try await bindFrontends()
        defer {
            if let path = config.unixSocketPath { _ = unlink(path) }
        }
        let (grpcDone, grpcDoneInput) = AsyncStream.makeStream(of: Void.self)
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                defer { grpcDoneInput.finish() }
                do { try await grpc.serve() } catch where Task.isCancelled {}
            }
            for listener in frontends.listeners {
                group.addTask { await self.acceptFrontends(listener) }
            }
            let bound: SocketAddress
            do {
                bound = try await transport.listeningAddress()
            } catch {
                throw TunnelError("tunnel server \(config.serverID): cannot listen for agents on \(config.agentHost):\(config.agentPort): \(describe(error))")
            }
            let agentPort = bound.port ?? config.agentPort
            publish(.success(TunnelServerAddresses(agentPort: agentPort, frontendPort: frontends.tcpPort,
                                                   unixSocketPath: config.unixSocketPath)))
            logger.info("tunnel server listening: agents on port \(agentPort), CONNECT frontend on \(frontends.tcpPort.map { "port \($0)" } ?? "no TCP port")\(config.unixSocketPath.map { " and \($0)" } ?? "")")
            try? await gracefulShutdown()
            if !Task.isCancelled {
                // Stop listening first, then end every Connect stream ourselves: they never end by themselves.
                grpc.beginGracefulShutdown()
                for session in state.withLock({ $0.sessions }) { session.end() }
                await withTaskGroup(of: Void.self) { wait in
                    wait.addTask { for await _ in grpcDone {} }
                    wait.addTask { try? await Task.sleep(for: .seconds(5)) }
                    await wait.next()
                    wait.cancelAll()
                }
            }
            group.cancelAll()
        }
    }

    private func publish(_ result: Result<TunnelServerAddresses, TunnelError>) {
        let waiters = state.withLock { s -> [CheckedContinuation<Result<TunnelServerAddresses, TunnelError>, Never>] in
            s.addresses = result
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume(returning: result) }
    }

    // MARK: Agent sessions

    func register(_ session: ServerAgentSession) {
        state.withLock { $0.sessions.append(session) }
    }

    func unregister(_ session: ServerAgentSession) {
        state.withLock { $0.sessions.removeAll { $0 === session } }
    }

    /// The agent that serves `host`: one whose identifiers or agent ID name it, not draining if there is a choice,
    /// the most recently connected first.
    func route(host: String) -> ServerAgentSession? {
        state.withLock { s in
            let candidates = s.sessions.filter { $0.identifiers.contains(host) || $0.agentID.lowercased() == host.lowercased() }
            return candidates.last { !$0.isDraining } ?? candidates.last
        }
    }

    /// Agent IDs connected now, for error messages.
    func connectedAgentIDs() -> [String] {
        state.withLock { $0.sessions.map(\.agentID) }
    }
}
