// One Connect stream from the agent to one tunnel server instance, and the TCP streams it carries.

import GRPCCore
import EdgedGRPCTransport
import EdgedHTTP
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

@available(macOS 15.0, *)
extension TunnelAgent {
    /// Dials the server, runs one Connect stream until it ends and returns why (nil: closed cleanly).
    func runConnection(id: Int, events: AsyncStream<Event>.Continuation) async -> String? {
        let outbox = PacketOutbox(streamLimit: config.streamBufferLimit)
        state.withLock { $0.outboxes[id] = outbox }
        do {
            let transport = try makeTransport()
            try await withGRPCClient(transport: transport) { client in
                let service = KonnAgentService.Client(wrapping: client)
                var options = CallOptions.defaults
                options.waitForReady = false
                let metadata: Metadata = [
                    "agentID": "\(config.agentID)",
                    "agentIdentifiers": "\(config.identifiers.encoded)",
                ]
                try await service.connect(metadata: metadata, options: options) { writer in
                    try await outbox.drain(into: writer)
                } onResponse: { response in
                    defer { outbox.close() }
                    if case .failure(let error) = response.accepted { throw error }
                    let serverID = response.metadata[stringValues: "serverID"].first(where: { _ in true })
                    guard let serverID, !serverID.isEmpty else {
                        throw TunnelError("tunnel server \(self.config.serverHost):\(self.config.serverPort) sent no serverID header; is it a Konnectivity server?")
                    }
                    let count = response.metadata[stringValues: "serverCount"].first(where: { _ in true }).flatMap { Int($0) } ?? 1
                    events.yield(.established(id: id, serverID: serverID, serverCount: count))
                    let session = AgentSession(agent: self, outbox: outbox, serverID: serverID)
                    try await withThrowingDiscardingTaskGroup { group in
                        defer { session.abortAll() }
                        for try await packet in response.messages {
                            session.handle(packet, group: &group)
                        }
                    }
                }
            }
            return nil
        } catch {
            outbox.close()
            return describe(error)
        }
    }

    /// A fresh transport, reading the certificate, key and CA files now.
    private func makeTransport() throws -> GRPCHTTP2ClientTransport {
        let tls: NIOSSLContext
        do {
            var tlsConfig = TLSConfiguration.makeClientConfiguration()
            tlsConfig.certificateChain = try NIOSSLCertificate.fromPEMFile(config.certPath).map { .certificate($0) }
            tlsConfig.privateKey = .privateKey(try NIOSSLPrivateKey(file: config.keyPath, format: .pem))
            tlsConfig.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(config.caPath))
            tlsConfig.applicationProtocols = ["h2"]
            tls = try NIOSSLContext(configuration: tlsConfig)
        } catch {
            throw TunnelError("tunnel agent: cannot set up TLS with \(config.certPath), \(config.keyPath) and CA \(config.caPath): \(describe(error))")
        }
        // The server name (else the dialled host) is checked: a DNS name through SNI, an IP address in the IP SANs.
        let host = String(config.serverHost.filter { $0 != "[" && $0 != "]" })
        let identity = TLSServerIdentity(serverName: config.serverName, host: host)
        return GRPCHTTP2ClientTransport(config: .init(
            host: host, port: config.serverPort, tls: tls,
            serverHostname: identity.sni,
            authority: config.serverName,
            connectTimeout: config.dialTimeout,
            keepaliveInterval: config.keepaliveInterval, keepaliveTimeout: config.keepaliveTimeout,
            makeTLSHandler: { try identity.makeClientHandler(context: tls) }))
    }
}

/// Text for an error from gRPC, NIO or us, without the noise of nested descriptions.
func describe(_ error: any Error) -> String {
    if let e = error as? RPCError {
        var text = "\(e.code): \(e.message)"
        if let cause = e.cause { text += " (\(describe(cause)))" }
        return text
    }
    if let e = error as? RuntimeError {
        var text = e.message
        if let cause = e.cause { text += " (\(describe(cause)))" }
        return text
    }
    return "\(error)"
}

/// The TCP streams of one Connect stream on the agent side.
///
/// DIAL_REQ: the destination must pass `allowDestination`, else a DIAL_RSP with an error goes back (and a warning
/// is logged); otherwise it is dialled in its own task and answered with DIAL_RSP (connectID or error). DATA goes
/// to that stream's relay, CLOSE_REQ closes it after its queued bytes are written, and every stream's end is
/// reported with CLOSE_RSP. DIAL_CLS withdraws a dial still under way.
@available(macOS 15.0, *)
final class AgentSession: Sendable {
    private struct State {
        var streams: [Int64: StreamRelay] = [:]
        var dialing: Set<Int64> = []
        var withdrawn: Set<Int64> = []
        var nextConnectID: Int64 = 0
    }

    let agent: TunnelAgent
    let outbox: PacketOutbox
    let serverID: String
    private let state = Mutex(State())

    init(agent: TunnelAgent, outbox: PacketOutbox, serverID: String) {
        self.agent = agent
        self.outbox = outbox
        self.serverID = serverID
    }

    var logger: Logger { agent.logger }

    func handle(_ packet: KonnPacket, group: inout ThrowingDiscardingTaskGroup<any Error>) {
        switch packet.type {
        case .dialReq:
            let request = packet.dialRequest
            _ = state.withLock { $0.dialing.insert(request.random) }
            group.addTask {
                await self.dial(request)
                self.state.withLock { s in
                    s.dialing.remove(request.random)
                    s.withdrawn.remove(request.random)
                }
            }
        case .data:
            let data = packet.data
            guard let relay = state.withLock({ $0.streams[data.connectID] }) else {
                logger.debug("tunnel: DATA for unknown connection \(data.connectID) from server \(serverID)")
                return
            }
            if !relay.deliver(ByteBuffer(bytes: data.data)) {
                logger.warning("tunnel: connection \(data.connectID): the local reader is more than \(relay.bufferLimit) bytes behind; closing it")
                relay.abort()
            }
        case .closeReq:
            let id = packet.closeRequest.connectID
            if let relay = state.withLock({ $0.streams[id] }) {
                relay.finish()
            } else {
                outbox.send(.closeResponse(id, error: "unknown connectID \(id)"))
            }
        case .dialCls:
            let random = packet.closeDial.random
            state.withLock { s in if s.dialing.contains(random) { s.withdrawn.insert(random) } }
        default:
            logger.debug("tunnel: ignoring \(packet.type) packet from server \(serverID)")
        }
    }

    /// Closes every stream at once (the Connect stream is gone).
    func abortAll() {
        let relays = state.withLock { Array($0.streams.values) }
        for r in relays { r.abort() }
    }

    private func dial(_ request: KonnDialRequest) async {
        let config = agent.config
        guard let (host, port) = splitHostPort(request.address), request.protocol.isEmpty || request.protocol == "tcp" else {
            outbox.send(.dialResponse(random: request.random, error: "edged tunnel agent \(config.agentID): cannot dial \(request.protocol) \(request.address): not a TCP host:port"))
            return
        }
        // The node's own name is not necessarily resolvable here: it means this node, i.e. its first address.
        let dialHost = config.identifiers.hosts.contains { $0.lowercased() == host.lowercased() }
            ? (config.identifiers.ipv4.first ?? "127.0.0.1") : host
        guard config.allowDestination(dialHost, port) else {
            logger.warning("tunnel: refused dial to \(request.address) from server \(serverID): not a destination on this node")
            agent.state.withLock { $0.lastError = "refused dial to \(request.address): not a destination on this node" }
            outbox.send(.dialResponse(random: request.random, error: "edged tunnel agent \(config.agentID): \(request.address) is not a destination on this node; refused"))
            return
        }
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.nanoseconds(Int64(config.dialTimeout.components.seconds) * 1_000_000_000
                    + config.dialTimeout.components.attoseconds / 1_000_000_000))
                .channelOption(.socketOption(.so_keepalive), value: 1)
                .connect(host: dialHost, port: port) { ch in
                    ch.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch) }
                }
        } catch {
            logger.info("tunnel: dial to \(request.address) failed: \(error)")
            outbox.send(.dialResponse(random: request.random, error: "edged tunnel agent \(config.agentID): dial \(request.address): \(error)"))
            return
        }
        let relay = StreamRelay(bufferLimit: config.streamBufferLimit)
        let connectID = state.withLock { s -> Int64? in
            if s.withdrawn.remove(request.random) != nil { return nil }
            s.nextConnectID += 1
            s.streams[s.nextConnectID] = relay
            return s.nextConnectID
        }
        guard let connectID else {
            try? await channel.channel.close()
            return
        }
        agent.state.withLock { $0.openStreams += 1 }
        outbox.send(.dialResponse(random: request.random, connectID: connectID))
        let outbox = self.outbox
        let end = try? await channel.executeThenClose { inbound, outbound in
            var it = inbound.makeAsyncIterator()
            return await relay.run(channel: channel.channel, inbound: &it, outbound: outbound) { chunk in
                await outbox.send(data: .data(connectID, chunk), stream: connectID, bytes: chunk.readableBytes)
            }
        }
        state.withLock { _ = $0.streams.removeValue(forKey: connectID) }
        agent.state.withLock { $0.openStreams -= 1 }
        outbox.forget(stream: connectID)
        outbox.send(.closeResponse(connectID, error: end == .aborted ? "closed by the agent: local reader too slow or tunnel gone" : ""))
    }
}
