// The agent side of the tunnel server: AgentService.Connect, node identity checks, one session per agent stream.

import GRPCCore
import EdgedGRPCTransport
import Logging
import NIOCore
import Synchronization
import X509

/// AgentService.Connect: checks who the agent is, answers with the serverID / serverCount headers and runs the
/// agent's session until either side ends the stream.
@available(macOS 15.0, *)
struct AgentServiceHandler: KonnAgentService.StreamingServiceProtocol {
    let server: TunnelServer

    func connect(request: StreamingServerRequest<KonnPacket>, context: ServerContext) async throws
        -> StreamingServerResponse<KonnPacket> {
        let config = server.config
        guard let agentID = request.metadata[stringValues: "agentID"].first(where: { _ in true }), !agentID.isEmpty else {
            server.logger.warning("tunnel: refused an agent from \(context.remotePeer): no agentID metadata")
            throw RPCError(code: .invalidArgument, message: "tunnel server \(config.serverID): no agentID metadata")
        }
        let identifiers = AgentIdentifiers.parse(request.metadata[stringValues: "agentIdentifiers"].first(where: { _ in true }) ?? "")
        guard let certificate = (context.transportSpecific as? GRPCHTTP2ServerTransport.PeerContext)?.peerCertificate else {
            server.logger.warning("tunnel: refused agent \(agentID) from \(context.remotePeer): no client certificate")
            throw RPCError(code: .unauthenticated, message: "tunnel server \(config.serverID): agent \(agentID) sent no client certificate")
        }
        let commonName = certificate.subject.commonName
        guard commonName == "system:node:\(agentID)" else {
            server.logger.warning("tunnel: refused agent \(agentID) from \(context.remotePeer): its client certificate is for \(commonName)")
            throw RPCError(code: .permissionDenied,
                           message: "tunnel server \(config.serverID): agent ID \(agentID) does not match the client certificate CN \(commonName); it must be system:node:\(agentID)")
        }
        let session = ServerAgentSession(server: server, agentID: agentID, identifiers: identifiers,
                                         commonName: commonName, serial: "\(certificate.serialNumber)")
        let metadata: Metadata = ["serverID": "\(config.serverID)", "serverCount": "\(config.serverCount)"]
        return StreamingServerResponse(metadata: metadata) { writer in
            server.register(session)
            server.logger.info("tunnel: agent \(agentID) connected from \(context.remotePeer) (\(identifiers.encoded))")
            defer {
                server.unregister(session)
                session.end()
                server.logger.info("tunnel: agent \(agentID) disconnected")
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await session.outbox.drain(into: writer) }
                group.addTask {
                    for try await packet in request.messages { session.handle(packet) }
                }
                defer { group.cancelAll() }
                _ = try await group.next()
            }
            return [:]
        }
    }
}

extension DistinguishedName {
    /// The (last) CN in this name, or "" when there is none.
    var commonName: String {
        var cn = ""
        for rdn in self {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                cn = String(describing: attribute.value)
            }
        }
        return cn
    }
}

/// One agent's Connect stream on the server: its pending dials and open streams.
///
/// DIAL_RSP settles a pending dial (registering its relay before anything else from the agent is read, so DATA
/// that follows at once is not lost), DATA goes to the stream's relay without waiting for its reader (see
/// StreamRelay for the cap), CLOSE_RSP ends the stream after its queued bytes are written, DIAL_CLS fails a
/// pending dial, DRAIN marks the agent as going away.
@available(macOS 15.0, *)
final class ServerAgentSession: Sendable {
    enum DialResult: Sendable {
        case connected(Int64)
        case failed(String)
    }

    private struct Pending {
        let relay: StreamRelay
        let continuation: CheckedContinuation<DialResult, Never>
    }

    private struct State {
        var pending: [Int64: Pending] = [:]
        var streams: [Int64: StreamRelay] = [:]
        var draining = false
        var ended = false
    }

    let server: TunnelServer
    let agentID: String
    let identifiers: AgentIdentifiers
    let commonName: String
    let serial: String
    let outbox: PacketOutbox
    private let state = Mutex(State())

    init(server: TunnelServer, agentID: String, identifiers: AgentIdentifiers, commonName: String, serial: String) {
        self.server = server
        self.agentID = agentID
        self.identifiers = identifiers
        self.commonName = commonName
        self.serial = serial
        self.outbox = PacketOutbox(streamLimit: server.config.streamBufferLimit)
    }

    var isDraining: Bool { state.withLock { $0.draining } }

    func info() -> TunnelServerAgent {
        state.withLock { s in
            TunnelServerAgent(agentID: agentID, identifiers: identifiers, certificateCommonName: commonName,
                              certificateSerial: serial, openStreams: s.streams.count, draining: s.draining)
        }
    }

    /// Asks the agent to dial `address`; on success `relay` is registered under the returned connectID.
    func dial(address: String, relay: StreamRelay, timeout: Duration) async -> DialResult {
        let random = Int64.random(in: 1...Int64.max)
        let timer = Task { [outbox] in
            try await Task.sleep(for: timeout)
            if self.settle(random, .failed("the agent did not answer the dial within \(timeout)")) {
                outbox.send(.closeDial(random: random))
            }
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { (c: CheckedContinuation<DialResult, Never>) in
            let ended = state.withLock { s -> Bool in
                if s.ended { return true }
                s.pending[random] = Pending(relay: relay, continuation: c)
                return false
            }
            if ended {
                c.resume(returning: .failed("the agent disconnected"))
            } else {
                outbox.send(.dialRequest(random: random, address: address))
            }
        }
    }

    /// Settles a pending dial; false when it was no longer pending.
    @discardableResult
    private func settle(_ random: Int64, _ result: DialResult) -> Bool {
        let pending = state.withLock { s -> Pending? in
            guard let p = s.pending.removeValue(forKey: random) else { return nil }
            if case .connected(let id) = result { s.streams[id] = p.relay }
            return p
        }
        pending?.continuation.resume(returning: result)
        return pending != nil
    }

    /// The frontend side of stream `connectID` is done (its CLOSE_REQ, if any, is the caller's).
    func remove(_ connectID: Int64) {
        state.withLock { _ = $0.streams.removeValue(forKey: connectID) }
        outbox.forget(stream: connectID)
    }

    func handle(_ packet: KonnPacket) {
        switch packet.type {
        case .dialRsp:
            let rsp = packet.dialResponse
            let result: DialResult = rsp.error.isEmpty ? .connected(rsp.connectID) : .failed(rsp.error)
            if !settle(rsp.random, result), rsp.error.isEmpty {
                // Too late (timed out): the agent has a connection nobody wants.
                outbox.send(.closeRequest(rsp.connectID))
            }
        case .data:
            let data = packet.data
            guard let relay = state.withLock({ $0.streams[data.connectID] }) else {
                server.logger.debug("tunnel: DATA from agent \(agentID) for unknown connection \(data.connectID)")
                return
            }
            if !relay.deliver(ByteBuffer(bytes: data.data)) {
                server.logger.warning("tunnel: connection \(data.connectID) via agent \(agentID): the frontend reader is more than \(relay.bufferLimit) bytes behind; closing it")
                relay.abort()
            }
        case .closeRsp:
            let id = packet.closeResponse.connectID
            state.withLock { $0.streams[id] }?.finish()
        case .dialCls:
            settle(packet.closeDial.random, .failed("the agent withdrew the dial"))
        case .drain:
            server.logger.info("tunnel: agent \(agentID) is draining")
            state.withLock { $0.draining = true }
        default:
            server.logger.debug("tunnel: ignoring \(packet.type) packet from agent \(agentID)")
        }
    }

    /// The Connect stream is gone: fail pending dials, close every frontend connection.
    func end() {
        let (pending, streams) = state.withLock { s in
            s.ended = true
            defer { s.pending = [:]; s.streams = [:] }
            return (Array(s.pending.values), Array(s.streams.values))
        }
        outbox.close()
        for p in pending { p.continuation.resume(returning: .failed("the agent disconnected")) }
        for r in streams { r.abort() }
    }
}
