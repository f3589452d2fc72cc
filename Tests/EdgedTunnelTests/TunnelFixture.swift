// Test fixtures for the tunnel: a CA with server and node certificates on disk, a TCP echo server, a tunnel
// server and agent on loopback, and a CONNECT client.

import EdgedTestSupport
@testable import EdgedTunnel
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle

func testLogger(_ label: String) -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = ProcessInfo.processInfo.environment["EDGED_TEST_DEBUG"] != nil ? .debug : .critical
    return logger
}

/// A CA, a server certificate for 127.0.0.1/localhost and node client certificates, as PEM files in a temp dir.
struct TunnelPKI {
    let dir: TempDir
    let ca: TestPKI
    var caPath: String { dir.sub("ca.crt") }
    var serverCertPath: String { dir.sub("server.crt") }
    var serverKeyPath: String { dir.sub("server.key") }

    init() throws {
        dir = try TempDir("edged-tunnel")
        ca = try TestPKI.makeCA(commonName: "tunnel-test-ca")
        try ca.caPEM.write(toFile: dir.sub("ca.crt"), atomically: true, encoding: .utf8)
        let server = try ca.issue(serverFor: "tunnel-server", ips: ["127.0.0.1"], dns: ["localhost"])
        try server.certPEM.write(toFile: dir.sub("server.crt"), atomically: true, encoding: .utf8)
        try server.keyPEM.write(toFile: dir.sub("server.key"), atomically: true, encoding: .utf8)
    }

    /// Writes a client certificate with CN `cn` to `<name>.crt` / `<name>.key` and returns the paths.
    @discardableResult
    func writeClient(cn: String, name: String) throws -> (cert: String, key: String) {
        let pair = try ca.issueClient(cn: cn, orgs: ["system:nodes"])
        try pair.certPEM.write(toFile: dir.sub("\(name).crt"), atomically: true, encoding: .utf8)
        try pair.keyPEM.write(toFile: dir.sub("\(name).key"), atomically: true, encoding: .utf8)
        return (dir.sub("\(name).crt"), dir.sub("\(name).key"))
    }
}

/// A TCP echo server on 127.0.0.1 (port 0).
final class EchoServer: Sendable {
    private final class Echo: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.write(data, promise: nil) }
        func channelReadComplete(context: ChannelHandlerContext) { context.flush() }
    }

    let channel: any Channel
    let port: Int

    init() async throws {
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { ch in ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(Echo()) } }
            .bind(host: "127.0.0.1", port: 0).get()
        port = channel.localAddress!.port!
    }

    func stop() async { try? await channel.close() }
}

/// A running tunnel server (its `run` in a task).
struct RunningServer {
    let server: TunnelServer
    let group: ServiceGroup
    let task: Task<Void, any Error>
    let addresses: TunnelServerAddresses

    static func start(_ pki: TunnelPKI, id: String = "server-1", agentPort: Int = 0, unixSocket: String? = nil,
                      streamBufferLimit: Int = 8 << 20, dialTimeout: Duration = .seconds(5),
                      frontendTLS: TunnelServerConfig.FrontendTLS? = nil) async throws -> RunningServer {
        let config = TunnelServerConfig(
            agentHost: "127.0.0.1", agentPort: agentPort, certPath: pki.serverCertPath, keyPath: pki.serverKeyPath,
            agentCAPath: pki.caPath, frontendHost: "127.0.0.1", frontendPort: 0, frontendTLS: frontendTLS,
            unixSocketPath: unixSocket,
            serverID: id, serverCount: 1, dialTimeout: dialTimeout, streamBufferLimit: streamBufferLimit)
        let server = TunnelServer(config: config, logger: testLogger("tunnel-server"))
        let group = ServiceGroup(services: [server], logger: testLogger("service-group"))
        let task = Task { try await group.run() }
        let addresses = try await server.addresses()
        return RunningServer(server: server, group: group, task: task, addresses: addresses)
    }

    /// Stops the server as the daemon does: a graceful shutdown of its service group.
    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }
}

/// A running tunnel agent.
struct RunningAgent {
    let agent: TunnelAgent
    let group: ServiceGroup
    let task: Task<Void, any Error>

    static func start(_ pki: TunnelPKI, port: Int, agentID: String = "node-1", cert: (cert: String, key: String),
                      allow: @escaping @Sendable (String, Int) -> Bool = { host, _ in host == "127.0.0.1" },
                      streamBufferLimit: Int = 8 << 20) -> RunningAgent {
        let config = TunnelAgentConfig(
            serverHost: "127.0.0.1", serverPort: port, caPath: pki.caPath, certPath: cert.cert, keyPath: cert.key,
            agentID: agentID, identifiers: AgentIdentifiers(hosts: [agentID], ipv4: ["127.0.0.1"]),
            allowDestination: allow, backoffInitial: .milliseconds(100), backoffMax: .seconds(1),
            streamBufferLimit: streamBufferLimit)
        let agent = TunnelAgent(config: config, logger: testLogger("tunnel-agent"))
        let group = ServiceGroup(services: [agent], logger: testLogger("service-group"))
        return RunningAgent(agent: agent, group: group, task: Task { try await group.run() })
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }
}

/// Polls `condition` every 20 ms until it holds; throws after `timeout`.
func waitUntil(_ what: String, timeout: Duration = .seconds(10), _ condition: () async -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if await condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw TestFailure("timed out waiting for \(what)")
}

enum Frontend {
    case tcp(Int)
    case unix(String)
    /// TCP with TLS: the server verified against `caPath`, optionally presenting a client certificate.
    case tls(Int, caPath: String, client: (cert: String, key: String)?)
}

/// A CONNECT that the server answered with something other than 200.
struct ConnectRefused: Error, CustomStringConvertible {
    let status: Int
    let body: String
    var description: String { "CONNECT answered \(status): \(body)" }
}

/// The client end of an established CONNECT tunnel.
final class TunnelClient {
    var inbound: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    var buffered = ByteBuffer()

    init(inbound: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) {
        self.inbound = inbound
        self.outbound = outbound
    }

    func write(_ bytes: [UInt8]) async throws { try await outbound.write(ByteBuffer(bytes: bytes)) }

    /// Reads exactly `count` bytes; throws at EOF before that.
    func read(count: Int) async throws -> [UInt8] {
        while buffered.readableBytes < count {
            guard let chunk = try await inbound.next() else {
                throw TestFailure("EOF after \(buffered.readableBytes) of \(count) bytes")
            }
            buffered.writeImmutableBuffer(chunk)
        }
        return buffered.readBytes(length: count)!
    }

    /// Reads until EOF (or an error), returning the byte count.
    func drainToEnd() async -> Int {
        var n = buffered.readableBytes
        buffered.clear()
        do { while let chunk = try await inbound.next() { n += chunk.readableBytes } } catch {}
        return n
    }

    /// Reads the response head of a CONNECT; returns the status and, for errors, the body.
    func readHead() async throws -> (status: Int, body: String) {
        while true {
            if let range = buffered.readableBytesView.firstRange(of: Array("\r\n\r\n".utf8)) {
                let head = buffered.readString(length: range.upperBound - buffered.readerIndex)!
                let status = Int(head.split(separator: " ")[1]) ?? 0
                if status == 200 { return (200, "") }
                var body = buffered.readString(length: buffered.readableBytes) ?? ""
                do { while let chunk = try await inbound.next() { body += String(buffer: chunk) } } catch {}
                return (status, body)
            }
            guard let chunk = try await inbound.next() else { throw TestFailure("EOF before the CONNECT answer") }
            buffered.writeImmutableBuffer(chunk)
        }
    }
}

/// CONNECTs to `target` through the frontend and runs `body` on the tunnel; throws ConnectRefused for non-200.
func withTunnel<R: Sendable>(_ frontend: Frontend, to target: String, _ run: (TunnelClient) async throws -> R) async throws -> R {
    let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
    let initializer: @Sendable (any Channel) -> EventLoopFuture<NIOAsyncChannel<ByteBuffer, ByteBuffer>> = { ch in
        ch.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch) }
    }
    let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
    switch frontend {
    case .tcp(let port): channel = try await bootstrap.connect(host: "127.0.0.1", port: port, channelInitializer: initializer)
    case .unix(let path): channel = try await bootstrap.connect(unixDomainSocketPath: path, channelInitializer: initializer)
    case .tls(let port, let caPath, let client):
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(caPath)
        if let client {
            tls.certificateChain = try NIOSSLCertificate.fromPEMFile(client.cert).map { .certificate($0) }
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: client.key, format: .pem))
        }
        let context = try NIOSSLContext(configuration: tls)
        channel = try await bootstrap.connect(host: "127.0.0.1", port: port) { ch in
            ch.eventLoop.makeCompletedFuture {
                try ch.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: "localhost"))
                return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch)
            }
        }
    }
    return try await channel.executeThenClose { inbound, outbound in
        let client = TunnelClient(inbound: inbound.makeAsyncIterator(), outbound: outbound)
        try await client.write(Array("CONNECT \(target) HTTP/1.1\r\nHost: \(target)\r\n\r\n".utf8))
        let (status, text) = try await client.readHead()
        guard status == 200 else { throw ConnectRefused(status: status, body: text) }
        return try await run(client)
    }
}

/// Deterministic pseudo-random bytes.
func pattern(_ count: Int, seed: UInt8 = 1) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    var x = UInt32(seed) &* 2654435761
    for i in 0..<count {
        x = x &* 1664525 &+ 1013904223
        out[i] = UInt8(truncatingIfNeeded: x >> 24)
    }
    return out
}
