// The HTTP CONNECT frontend of the tunnel server: what kube-apiserver's egress selector (HTTPConnect) talks to.

import Logging
import NIOCore
import NIOPosix
import NIOSSL

@available(macOS 15.0, *)
extension TunnelServer {
    typealias Connection = NIOAsyncChannel<ByteBuffer, ByteBuffer>
    typealias Listener = NIOAsyncChannel<Connection, Never>

    struct Frontends {
        var listeners: [Listener] = []
        var tcpPort: Int?
    }

    /// Binds the TCP (optionally TLS) and Unix socket frontends that are configured.
    func bindFrontends() async throws -> Frontends {
        var result = Frontends()
        var tlsContext: NIOSSLContext?
        if let tls = config.frontendTLS {
            do {
                var c = TLSConfiguration.makeServerConfiguration(
                    certificateChain: try NIOSSLCertificate.fromPEMFile(tls.certPath).map { .certificate($0) },
                    privateKey: .privateKey(try NIOSSLPrivateKey(file: tls.keyPath, format: .pem)))
                if let ca = tls.clientCAPath {
                    c.trustRoots = .file(ca)
                    c.certificateVerification = .noHostnameVerification
                }
                tlsContext = try NIOSSLContext(configuration: c)
            } catch {
                throw TunnelError("tunnel server \(config.serverID): cannot load the frontend TLS files \(tls.certPath) / \(tls.keyPath): \(error)")
            }
        }
        let frontendTLS = tlsContext
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
        if let host = config.frontendHost ?? config.frontendPort.map({ _ in "127.0.0.1" }) {
            let port = config.frontendPort ?? 0
            do {
                let listener = try await bootstrap.bind(host: host, port: port) { ch in
                    ch.eventLoop.makeCompletedFuture {
                        if let frontendTLS { try ch.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: frontendTLS)) }
                        return try Connection(wrappingChannelSynchronously: ch)
                    }
                }
                result.tcpPort = listener.channel.localAddress?.port
                result.listeners.append(listener)
            } catch {
                throw TunnelError("tunnel server \(config.serverID): cannot listen for CONNECT on \(host):\(port): \(error)")
            }
        }
        if let path = config.unixSocketPath {
            do {
                let listener = try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true) { ch in
                    ch.eventLoop.makeCompletedFuture { try Connection(wrappingChannelSynchronously: ch) }
                }
                result.listeners.append(listener)
            } catch {
                for l in result.listeners { try? await l.channel.close() }
                throw TunnelError("tunnel server \(config.serverID): cannot listen for CONNECT on \(path): \(error)")
            }
        }
        return result
    }

    /// Accepts frontend connections until the listener closes or the task is cancelled.
    func acceptFrontends(_ listener: Listener) async {
        do {
            try await listener.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in inbound {
                        group.addTask { await self.serveFrontend(connection) }
                    }
                }
            }
        } catch {
            if !Task.isCancelled { logger.error("tunnel: CONNECT frontend stopped: \(error)") }
        }
    }

    /// One frontend connection: read `CONNECT host:port`, dial through the agent for that host, answer, relay.
    ///
    /// Answers: 200 Connection established; 400 for a request that is not `CONNECT host:port`; 503 when no agent
    /// names that host; 502 when the agent refused or failed the dial, timed out, or went away meanwhile.
    func serveFrontend(_ connection: Connection) async {
        let channel = connection.channel
        try? await connection.executeThenClose { inbound, outbound in
            var it = inbound.makeAsyncIterator()
            var buffer = ByteBuffer()
            var headEnd: Int? = nil
            while headEnd == nil {
                guard let chunk = try await it.next() else { return }
                buffer.writeImmutableBuffer(chunk)
                headEnd = buffer.readableBytesView.firstRange(of: [13, 10, 13, 10]).map { $0.upperBound - buffer.readerIndex }
                if headEnd == nil && buffer.readableBytes > 16 << 10 {
                    try await reply(outbound, 431, "Request Header Fields Too Large", "tunnel server: request head over 16 KiB")
                    return
                }
            }
            let head = buffer.readString(length: headEnd!) ?? ""
            let leftover = buffer
            let requestLine = head.split(separator: "\r\n", maxSplits: 1).first.map(String.init) ?? ""
            let parts = requestLine.split(separator: " ")
            guard parts.count == 3, parts[0] == "CONNECT", parts[2].hasPrefix("HTTP/1.") else {
                try await reply(outbound, 400, "Bad Request", "tunnel server: expected 'CONNECT host:port HTTP/1.1', got '\(requestLine.prefix(200))'")
                return
            }
            let target = String(parts[1])
            guard let (host, _) = splitHostPort(target) else {
                try await reply(outbound, 400, "Bad Request", "tunnel server: CONNECT target '\(target)' is not host:port")
                return
            }
            guard let session = route(host: host) else {
                let agents = connectedAgentIDs()
                logger.info("tunnel: CONNECT \(target): no agent for \(host)")
                try await reply(outbound, 503, "Service Unavailable",
                                "tunnel server \(config.serverID): no tunnel agent is connected for host \(host) (connected agents: \(agents.isEmpty ? "none" : agents.joined(separator: ", ")))")
                return
            }
            let relay = StreamRelay(bufferLimit: config.streamBufferLimit)
            let connectID: Int64
            switch await session.dial(address: target, relay: relay, timeout: config.dialTimeout) {
            case .connected(let id):
                connectID = id
            case .failed(let why):
                logger.info("tunnel: CONNECT \(target) via agent \(session.agentID) failed: \(why)")
                try await reply(outbound, 502, "Bad Gateway",
                                "tunnel server \(config.serverID): agent \(session.agentID) could not connect to \(target): \(why)")
                return
            }
            do {
                try await outbound.write(ByteBuffer(string: "HTTP/1.1 200 Connection established\r\n\r\n"))
            } catch {
                session.remove(connectID)
                session.outbox.send(.closeRequest(connectID))
                return
            }
            let outbox = session.outbox
            let end = await relay.run(channel: channel, inbound: &it, outbound: outbound, leftover: leftover) { chunk in
                await outbox.send(data: .data(connectID, chunk), stream: connectID, bytes: chunk.readableBytes)
            }
            session.remove(connectID)
            if end != .remote { outbox.send(.closeRequest(connectID)) }
        }
    }

    private func reply(_ outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, _ code: Int, _ reason: String,
                       _ message: String) async throws {
        let body = message + "\n"
        try await outbound.write(ByteBuffer(string: "HTTP/1.1 \(code) \(reason)\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"))
    }
}
