// The test API server's path to kubelets (pods/log, exec, attach, portforward, nodes/proxy) against a small real
// HTTPS "kubelet" started here (TLS from the cluster CA, client certificates required), directly and through an HTTP
// CONNECT egress proxy on a Unix socket also written here; and the real `kubectl logs` through it.

import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import Testing
import X509
@testable import EdgedTestSupport

// MARK: - A small kubelet

/// An HTTPS server standing in for a kubelet: records each request, answers logs (streamed with follow=true),
/// nodes/proxy paths (a JSON echo), and upgrades (101, then an echo of the bytes; "bye" and close on half-close).
final class FakeKubelet: @unchecked Sendable {
    struct Seen: Sendable {
        let method: String
        let uri: String
        let headers: [(String, String)]
        let clientCN: String
        func header(_ name: String) -> [String] { headers.filter { $0.0.lowercased() == name.lowercased() }.map(\.1) }
    }
    let port: Int
    private let channel: Channel
    let group: MultiThreadedEventLoopGroup
    let seen = Mutex<[Seen]>([])
    let closedConnections = Atomic<Int>(0)
    let followTicks: Int

    private init(port: Int, channel: Channel, group: MultiThreadedEventLoopGroup, followTicks: Int) {
        self.port = port
        self.channel = channel
        self.group = group
        self.followTicks = followTicks
    }

    static func start(pki: TestPKI, ips: [String] = ["127.0.0.1"], dns: [String] = ["localhost"], followTicks: Int = 100) async throws -> FakeKubelet {
        let serving = try pki.issue(serverFor: "edge-1", ips: ips, dns: dns)
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(serving.certPEM.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(serving.keyPEM.utf8), format: .pem)))
        tls.certificateVerification = .noHostnameVerification   // a client certificate of the CA is required
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(pki.caPEM.utf8)))
        let context = try NIOSSLContext(configuration: tls)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let box = Mutex<FakeKubelet?>(nil)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    guard let owner = box.withLock({ $0 }) else { throw TestFailure("kubelet not ready") }
                    ch.closeFuture.whenComplete { _ in owner.closedConnections.add(1, ordering: .relaxed) }
                    try ch.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try ch.pipeline.syncOperations.addHandler(HTTPResponseEncoder(), name: "enc")
                    try ch.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)), name: "dec")
                    try ch.pipeline.syncOperations.addHandler(FakeKubeletHandler(owner: owner), name: "kubelet")
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let k = FakeKubelet(port: channel.localAddress?.port ?? 0, channel: channel, group: group, followTicks: followTicks)
        box.withLock { $0 = k }
        return k
    }

    func requests() -> [Seen] { seen.withLock { $0 } }

    func shutdown() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }
}

private final class FakeKubeletHandler: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let owner: FakeKubelet
    var head: HTTPRequestHead?
    var ticker: RepeatedTask?
    var ticks = 0

    init(owner: FakeKubelet) { self.owner = owner }

    func channelInactive(context: ChannelHandlerContext) {
        ticker?.cancel()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let h = head else { return }
            var cn = ""
            if let peer = try? context.pipeline.syncOperations.nioSSL_peerCertificate(),
               let cert = try? Certificate(derEncoded: try peer.toDERBytes()) {
                var name = "", orgs: [String] = []
                for rdn in cert.subject {
                    for attr in rdn {
                        if attr.type == .RDNAttributeType.commonName { name = String(describing: attr.value) }
                        if attr.type == .RDNAttributeType.organizationName { orgs.append(String(describing: attr.value)) }
                    }
                }
                cn = name + "/" + orgs.joined(separator: ",")
            }
            owner.seen.withLock { $0.append(.init(method: h.method.rawValue, uri: h.uri, headers: h.headers.map { ($0.name, $0.value) }, clientCN: cn)) }
            answer(context: context, head: h)
        }
    }

    private func answer(context: ChannelHandlerContext, head h: HTTPRequestHead) {
        let path = String(h.uri.split(separator: "?", maxSplits: 1)[0])
        if !h.headers["upgrade"].isEmpty {
            // Switch protocols by hand: raw bytes from here on.
            var text = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: \(h.headers["upgrade"][0])\r\n"
            if let v = h.headers["x-stream-protocol-version"].first { text += "X-Stream-Protocol-Version: \(v)\r\n" }
            text += "\r\n"
            let p = context.pipeline.syncOperations
            try? p.addHandler(EchoHandler())
            if let enc = try? p.context(name: "enc") { p.removeHandler(context: enc, promise: nil) }
            p.removeHandler(context: context, promise: nil)
            if let dec = try? p.context(name: "dec") { p.removeHandler(context: dec, promise: nil) }
            context.channel.writeAndFlush(ByteBuffer(string: text), promise: nil)
            return
        }
        if path.hasPrefix("/containerLogs/") {
            let container = path.split(separator: "/").last.map(String.init) ?? ""
            if h.uri.contains("follow=true") {
                var headers = HTTPHeaders()
                headers.add(name: "Content-Type", value: "text/plain")
                context.writeAndFlush(wrapOutboundOut(.head(.init(version: h.version, status: .ok, headers: headers))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "line 1\nline 2\n")))), promise: nil)
                let loop = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                let limit = owner.followTicks
                ticker = context.eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(100), delay: .milliseconds(100)) { task in
                    let (handler, ctx) = loop.value
                    handler.ticks += 1
                    let n = handler.ticks
                    if n > limit {
                        task.cancel()
                        ctx.writeAndFlush(handler.wrapOutboundOut(.end(nil)), promise: nil)
                        return
                    }
                    ctx.writeAndFlush(handler.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "tick \(n)\n")))), promise: nil)
                }
                return
            }
            respond(context, h, "hello from \(container)\n", type: "text/plain")
            return
        }
        respond(context, h, "{\"uri\":\"\(h.uri)\"}", type: "application/json")
    }

    private func respond(_ context: ChannelHandlerContext, _ h: HTTPRequestHead, _ body: String, type: String) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        context.write(wrapOutboundOut(.head(.init(version: h.version, status: .ok, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}

/// After a 101: echoes "echo:<bytes>"; when the peer half-closes, says "bye" and closes.
private final class EchoHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var out = ByteBuffer(string: "echo:")
        var b = unwrapInboundIn(data)
        out.writeBuffer(&b)
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
    }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "bye\n"))).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

// MARK: - A CONNECT proxy on a Unix socket

/// An HTTP CONNECT proxy (like the tunnel server's frontend) on a Unix socket: dials the requested host:port over
/// TCP and splices; records the targets.
final class ConnectProxy: @unchecked Sendable {
    let path: String
    let targets = Mutex<[String]>([])
    private let channel: Channel
    private let group: MultiThreadedEventLoopGroup

    private init(path: String, channel: Channel, group: MultiThreadedEventLoopGroup) {
        self.path = path
        self.channel = channel
        self.group = group
    }

    static func start(path: String) async throws -> ConnectProxy {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let targets = Mutex<[String]>([])
        let box = Mutex<ConnectProxy?>(nil)
        let channel = try await ServerBootstrap(group: group)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(ConnectProxyHandler { target in
                        box.withLock { $0?.targets.withLock { $0.append(target) } }
                    })
                }
            }
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
        _ = targets
        let p = ConnectProxy(path: path, channel: channel, group: group)
        box.withLock { $0 = p }
        return p
    }

    func shutdown() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }
}

private final class ConnectProxyHandler: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    let record: @Sendable (String) -> Void
    var buffer = ByteBuffer()
    var started = false

    init(record: @escaping @Sendable (String) -> Void) { self.record = record }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var b = unwrapInboundIn(data)
        buffer.writeBuffer(&b)
        guard !started, let text = buffer.getString(at: buffer.readerIndex, length: buffer.readableBytes),
              let end = text.range(of: "\r\n\r\n") else { return }
        started = true
        buffer.moveReaderIndex(forwardBy: text[..<end.upperBound].utf8.count)
        let line = text[..<end.lowerBound].split(separator: "\r\n").first ?? ""
        let parts = line.split(separator: " ")
        guard parts.count == 3, parts[0] == "CONNECT", let colon = parts[1].lastIndex(of: ":"),
              let port = Int(parts[1][parts[1].index(after: colon)...]) else {
            context.writeAndFlush(NIOAny(ByteBuffer(string: "HTTP/1.1 400 Bad Request\r\n\r\n")), promise: nil)
            context.close(promise: nil)
            return
        }
        let host = String(parts[1][..<colon])
        record(String(parts[1]))
        let client = context.channel
        let loop = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        ClientBootstrap(group: context.eventLoop).channelOption(.allowRemoteHalfClosure, value: true)
            .connect(host: host, port: port).whenComplete { result in
                let (handler, ctx) = loop.value
                switch result {
                case .failure:
                    client.writeAndFlush(ByteBuffer(string: "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"), promise: nil)
                    client.close(promise: nil)
                case .success(let upstream):
                    let a = RawSpliceEnd(), b = RawSpliceEnd()
                    a.partner = b
                    b.partner = a
                    try? upstream.pipeline.syncOperations.addHandler(b)
                    try? client.pipeline.syncOperations.addHandler(a)
                    client.writeAndFlush(ByteBuffer(string: "HTTP/1.1 200 Connection established\r\n\r\n"), promise: nil)
                    ctx.pipeline.syncOperations.removeHandler(context: ctx, promise: nil)
                    _ = handler
                }
            }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if buffer.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(buffer)) }
    }
}

// MARK: - A raw TLS client

/// A TLS connection to the API server with the admin certificate, for requests written by hand and everything read
/// back as bytes.
final class RawTLSClient: @unchecked Sendable {
    let channel: Channel
    let group: MultiThreadedEventLoopGroup
    private let collected: Collector

    private init(channel: Channel, group: MultiThreadedEventLoopGroup, collected: Collector) {
        self.channel = channel
        self.group = group
        self.collected = collected
    }

    static func connect(_ server: KubeAPIServer) async throws -> RawTLSClient {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(server.caPEM.utf8)))
        tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(server.adminCertPEM.utf8)).map { .certificate($0) }
        tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(server.adminKeyPEM.utf8), format: .pem))
        let context = try NIOSSLContext(configuration: tls)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let collector = Collector()
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: "localhost"))
                    try ch.pipeline.syncOperations.addHandler(collector)
                }
            }
            .connect(host: "127.0.0.1", port: server.port).get()
        return RawTLSClient(channel: channel, group: group, collected: collector)
    }

    func send(_ text: String) async throws { try await send(Array(text.utf8)) }
    func send(_ bytes: [UInt8]) async throws { try await channel.writeAndFlush(ByteBuffer(bytes: bytes)) }
    /// Half-close: TLS close_notify, then the socket's write side.
    func closeOutput() async throws { try await channel.close(mode: .output) }

    var received: [UInt8] { collected.bytes.withLock { $0 } }
    var text: String { String(decoding: received, as: UTF8.self) }
    var isClosed: Bool { collected.closed.load(ordering: .relaxed) }

    /// Waits until what was received contains `needle`.
    @discardableResult
    func waitFor(_ needle: String, timeout: Duration = .seconds(10)) async throws -> String {
        let deadline = ContinuousClock.now + timeout
        while !text.contains(needle) {
            if ContinuousClock.now > deadline || (isClosed && !text.contains(needle)) {
                throw TestFailure("did not receive \(needle.debugDescription); got \(text.debugDescription)")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        return text
    }

    func waitClosed(timeout: Duration = .seconds(10)) async throws {
        let deadline = ContinuousClock.now + timeout
        while !isClosed {
            if ContinuousClock.now > deadline { throw TestFailure("connection still open; got \(text.debugDescription)") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    func close() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }

    final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let bytes = Mutex<[UInt8]>([])
        let closed = Atomic<Bool>(false)
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var b = unwrapInboundIn(data)
            let new = b.readBytes(length: b.readableBytes) ?? []
            bytes.withLock { $0 += new }
        }
        func channelInactive(context: ChannelHandlerContext) { closed.store(true, ordering: .relaxed) }
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case ChannelEvent.inputClosed = event { closed.store(true, ordering: .relaxed) }
        }
        func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
    }
}

/// One WebSocket frame as a client sends it (masked).
private func clientFrame(opcode: UInt8, _ payload: [UInt8]) -> [UInt8] {
    var out: [UInt8] = [0x80 | opcode]
    if payload.count < 126 { out.append(0x80 | UInt8(payload.count)) } else {
        out.append(0x80 | 126)
        out += [UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
    }
    let mask: [UInt8] = [0x11, 0x22, 0x33, 0x44]
    out += mask
    out += payload.enumerated().map { $0.element ^ mask[$0.offset & 3] }
    return out
}

// MARK: - Fixture

private let kubectlPath = ["/usr/bin/kubectl", "/usr/local/bin/kubectl"].first { FileManager.default.isExecutableFile(atPath: $0) }

/// A server with node edge-1 pointing at a fake kubelet, pod p1 (container c) on it, p2 (two containers) and
/// p3 (no node).
private func withKubelet(proxy: Bool = false, _ body: (APIFixture, FakeKubelet) async throws -> Void) async throws {
    let f = try await APIFixture()
    let kubelet = try await FakeKubelet.start(pki: f.server.pki)
    var connect: ConnectProxy? = nil
    do {
        if proxy {
            connect = try await ConnectProxy.start(path: f.dir.sub("konnectivity.sock"))
            f.server.setEgress(.connectUnix(path: connect!.path))
        }
        try putNode(f, "edge-1", port: kubelet.port)
        try f.server.put("/api/v1/namespaces/default/pods", [
            "metadata": ["name": "p1"], "spec": ["nodeName": "edge-1", "containers": [["name": "c", "image": "busybox:1.36"]]]])
        try f.server.put("/api/v1/namespaces/default/pods", [
            "metadata": ["name": "p2"], "spec": ["nodeName": "edge-1", "containers": [
                ["name": "a", "image": "busybox:1.36"], ["name": "b", "image": "busybox:1.36"]]]])
        try f.server.put("/api/v1/namespaces/default/pods", [
            "metadata": ["name": "p3"], "spec": ["containers": [["name": "c", "image": "busybox:1.36"]]]])
        try await body(f, kubelet)
    } catch {
        await connect?.shutdown()
        await kubelet.shutdown()
        await f.close()
        throw error
    }
    await connect?.shutdown()
    await kubelet.shutdown()
    await f.close()
}

private func putNode(_ f: APIFixture, _ name: String, port: Int, addresses: [[String: String]]? = nil) throws {
    try f.server.put("/api/v1/nodes", [
        "metadata": ["name": name],
        "status": ["addresses": addresses ?? [["type": "Hostname", "address": "localhost"], ["type": "InternalIP", "address": "127.0.0.1"]],
                   "daemonEndpoints": ["kubeletEndpoint": ["Port": port]]],
    ])
}

private let execPath = "/api/v1/namespaces/default/pods/p1/exec?command=sh&command=-c&command=echo%20hi&stdin=true&stdout=true&tty=true&container=c"

// MARK: - Tests

@Suite struct KubeletProxyTests {
    @Test func logsAndNodeProxyAreRewrittenToKubeletPaths() async throws {
        try await withKubelet { f, kubelet in
            let log = try f.request("GET", "/api/v1/namespaces/default/pods/p1/log?container=c&tailLines=5&timestamps=true&sinceSeconds=10&limitBytes=100&previous=false")
            #expect(log.code == 200)
            #expect(log.json["_text"] as? String == "hello from c\n")
            let stats = try f.request("GET", "/api/v1/nodes/edge-1/proxy/stats/summary?only_cpu_and_memory=true")
            #expect(stats.code == 200)
            #expect(stats.json["uri"] as? String == "/stats/summary?only_cpu_and_memory=true")
            // A bearer token is not passed on: the kubelet sees the API server's kubelet client certificate.
            f.server.addToken("root-token", user: "root", groups: ["system:masters"])
            #expect(try f.request("GET", "/api/v1/nodes/edge-1/proxy/pods", as: .token("root-token")).code == 200)

            let seen = kubelet.requests()
            #expect(seen.map(\.uri) == ["/containerLogs/default/p1/c?limitBytes=100&sinceSeconds=10&tailLines=5&timestamps=true",
                                        "/stats/summary?only_cpu_and_memory=true", "/pods"])
            #expect(seen.allSatisfy { $0.clientCN == "kube-apiserver-kubelet-client/system:masters" })
            #expect(seen.allSatisfy { $0.header("authorization").isEmpty })
            #expect(seen[0].header("host") == ["127.0.0.1:\(kubelet.port)"])
            #expect(f.server.requests().contains { $0.path.hasPrefix("/api/v1/namespaces/default/pods/p1/log") && $0.code == 200 })
        }
    }

    @Test func followedLogStreamsUntilTheClientLeaves() async throws {
        try await withKubelet { f, kubelet in
            let c = try await RawTLSClient.connect(f.server)
            try await c.send("GET /api/v1/namespaces/default/pods/p1/log?follow=true HTTP/1.1\r\nHost: localhost\r\n\r\n")
            let first = try await c.waitFor("tick 2\n")
            #expect(first.hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(first.lowercased().contains("transfer-encoding: chunked"))
            #expect(first.contains("line 1\nline 2\n"))
            #expect(kubelet.requests().last?.uri == "/containerLogs/default/p1/c?follow=true")
            // The kubelet's stream ends when the client goes away.
            let before = kubelet.closedConnections.load(ordering: .relaxed)
            await c.close()
            let deadline = ContinuousClock.now + .seconds(5)
            while kubelet.closedConnections.load(ordering: .relaxed) == before && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(kubelet.closedConnections.load(ordering: .relaxed) > before)
        }
    }

    @Test(arguments: [false, true]) func upgradeIsSplicedBothWays(throughProxy: Bool) async throws {
        try await withKubelet(proxy: throughProxy) { f, kubelet in
            let c = try await RawTLSClient.connect(f.server)
            defer { Task { await c.close() } }
            try await c.send("POST \(execPath) HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                + "X-Stream-Protocol-Version: v4.channel.k8s.io\r\nX-Stream-Protocol-Version: v3.channel.k8s.io\r\nContent-Length: 0\r\n\r\n")
            let head = try await c.waitFor("\r\n\r\n")
            #expect(head.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"))
            #expect(head.contains("X-Stream-Protocol-Version: v4.channel.k8s.io"))
            try await c.send("ping")
            try await c.waitFor("echo:ping")
            try await c.send([0, 1, 2, 255])
            try await c.waitFor("echo:\u{0}\u{1}\u{2}")
            // Half-close: the kubelet sees the end of input and still answers.
            try await c.closeOutput()
            try await c.waitFor("bye\n")
            try await c.waitClosed()

            let seen = try #require(kubelet.requests().last)
            #expect(seen.uri == "/exec/default/p1/c?command=sh&command=-c&command=echo+hi&stdin=1&stdout=1&tty=1")
            #expect(seen.method == "POST")
            #expect(seen.header("upgrade") == ["SPDY/3.1"])
            #expect(seen.header("x-stream-protocol-version") == ["v4.channel.k8s.io", "v3.channel.k8s.io"])
            if throughProxy {
                #expect(f.server.requests().last?.code == 101)
            }
        }
    }

    @Test func egressProxyCarriesEveryKubeletRequest() async throws {
        try await withKubelet(proxy: true) { f, kubelet in
            let log = try f.request("GET", "/api/v1/namespaces/default/pods/p1/log")
            let health = try f.request("GET", "/api/v1/nodes/edge-1/proxy/healthz")
            #expect(log.json["_text"] as? String == "hello from c\n")
            #expect(health.code == 200)
            #expect(kubelet.requests().count == 2)
        }
        // The proxy saw CONNECT 127.0.0.1:<kubelet port> (checked through a fresh fixture to read its targets).
        let f = try await APIFixture()
        let kubelet = try await FakeKubelet.start(pki: f.server.pki)
        let proxy = try await ConnectProxy.start(path: f.dir.sub("egress.sock"))
        f.server.setEgress(.connectUnix(path: proxy.path))
        try putNode(f, "edge-1", port: kubelet.port)
        let r = try f.request("GET", "/api/v1/nodes/edge-1/proxy/pods")
        let targets = proxy.targets.withLock { $0 }
        await proxy.shutdown()
        await kubelet.shutdown()
        await f.close()
        #expect(r.code == 200)
        #expect(targets == ["127.0.0.1:\(kubelet.port)"])
    }

    @Test func portForwardWebSocketIsTranslatedToSPDY() async throws {
        try await withKubelet { f, kubelet in
            let c = try await RawTLSClient.connect(f.server)
            defer { Task { await c.close() } }
            try await c.send("GET /api/v1/namespaces/default/pods/p1/portforward HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
                + "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                + "Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io\r\n\r\n")
            let head = try await c.waitFor("\r\n\r\n")
            #expect(head.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"))
            #expect(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"))
            #expect(head.contains("Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io\r\n"))
            let headLength = head.utf8.count
            // SPDY bytes inside a binary message reach the kubelet raw; its answer comes back as a binary message.
            try await c.send(clientFrame(opcode: 2, Array("spdy-bytes".utf8)))
            let expected: [UInt8] = [0x82, UInt8("echo:spdy-bytes".utf8.count)] + Array("echo:spdy-bytes".utf8)
            let deadline = ContinuousClock.now + .seconds(10)
            while Array(c.received.dropFirst(headLength)).count < expected.count && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(Array(c.received.dropFirst(headLength)) == expected)
            // Ping → pong.
            try await c.send(clientFrame(opcode: 9, [7]))
            let pongBy = ContinuousClock.now + .seconds(10)
            while !c.received.suffix(3).elementsEqual([0x8A, 0x01, 0x07]) && ContinuousClock.now < pongBy {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(c.received.suffix(3).elementsEqual([0x8A, 0x01, 0x07]), "no pong: \(c.received.suffix(8))")

            let seen = try #require(kubelet.requests().last)
            #expect(seen.uri == "/portForward/default/p1")
            #expect(seen.header("upgrade") == ["SPDY/3.1"])
            #expect(seen.header("x-stream-protocol-version") == ["portforward.k8s.io"])
            #expect(seen.headers.allSatisfy { !$0.0.lowercased().hasPrefix("sec-websocket") })
        }
    }

    @Test func errorsLikeTheRealServer() async throws {
        try await withKubelet { f, kubelet in
            let missing = try f.request("GET", "/api/v1/namespaces/default/pods/nope/log")
            #expect(missing.code == 404)
            #expect(str(missing.json, "message") == "pods \"nope\" not found")
            let choose = try f.request("GET", "/api/v1/namespaces/default/pods/p2/log")
            #expect(choose.code == 400)
            #expect(str(choose.json, "message") == "a container name must be specified for pod p2, choose one of: [a b]")
            let wrong = try f.request("POST", "/api/v1/namespaces/default/pods/p1/exec?command=ls&container=zz")
            #expect(wrong.code == 400)
            #expect(str(wrong.json, "message") == "container zz is not valid for pod p1")
            let noHost = try f.request("POST", "/api/v1/namespaces/default/pods/p3/exec?command=ls&stdout=true")
            #expect(noHost.code == 400)
            #expect(str(noHost.json, "message") == "pod p3 does not have a host assigned")
            let noHostLog = try f.request("GET", "/api/v1/namespaces/default/pods/p3/log")
            #expect(noHostLog.code == 200)
            #expect(noHostLog.json["_text"] as? String == "")
            #expect(try f.request("GET", "/api/v1/nodes/ghost/proxy/pods").code == 404)
            #expect(try f.request("GET", "/api/v1/namespaces/default/pods/p1/log?tailLines=x").code == 400)
            #expect(try f.request("GET", "/api/v1/namespaces/default/pods/p1/log?tailLines=-1").code == 422)

            // Not allowed: 403 with the real message.
            try f.server.addBootstrapToken(id: "abcdef", secret: "0123456789abcdef")
            let forbidden = try f.request("GET", "/api/v1/namespaces/default/pods/p1/log", as: .token("abcdef.0123456789abcdef"))
            #expect(forbidden.code == 403)
            #expect(str(forbidden.json, "message")?.contains("cannot get resource \"pods/log\"") == true)
            #expect(try f.request("GET", "/api/v1/namespaces/default/pods/p1/log", as: .anonymous).code == 403)

            // Node unreachable: 500 naming the node.
            let closed = try freeTCPPort()
            try putNode(f, "edge-2", port: closed)
            try f.server.put("/api/v1/namespaces/default/pods", [
                "metadata": ["name": "p4"], "spec": ["nodeName": "edge-2", "containers": [["name": "c", "image": "busybox:1.36"]]]])
            let down = try f.request("GET", "/api/v1/namespaces/default/pods/p4/log")
            #expect(down.code == 500)
            #expect(str(down.json, "reason") == "InternalError")
            #expect(str(down.json, "message")?.contains("error dialing backend: node \"edge-2\" at 127.0.0.1:\(closed)") == true)
            let downExec = try f.request("POST", "/api/v1/namespaces/default/pods/p4/exec?command=ls")
            #expect(downExec.code == 500)

            // A node without addresses.
            try putNode(f, "edge-3", port: kubelet.port, addresses: [])
            let noAddr = try f.request("GET", "/api/v1/nodes/edge-3/proxy/pods")
            #expect(noAddr.code == 500)
            #expect(str(noAddr.json, "message")?.contains("no preferred addresses found for node \"edge-3\"") == true)

            // Egress proxy not there.
            f.server.setEgress(.connectUnix(path: f.dir.sub("no-such.sock")))
            let noProxy = try f.request("GET", "/api/v1/namespaces/default/pods/p1/log")
            #expect(noProxy.code == 500)
            #expect(str(noProxy.json, "message")?.contains("node \"edge-1\"") == true)
            f.server.setEgress(.direct)
            #expect(try f.request("GET", "/api/v1/namespaces/default/pods/p1/log").code == 200)
        }
    }

    @Test func kubeletCertificateMustNameTheAddress() async throws {
        let f = try await APIFixture()
        let kubelet = try await FakeKubelet.start(pki: f.server.pki, ips: ["10.0.0.9"], dns: ["edge-9"])
        let other = try await FakeKubelet.start(pki: try TestPKI.makeCA())
        try putNode(f, "edge-9", port: kubelet.port)
        try putNode(f, "edge-x", port: other.port)
        let wrongName = try f.request("GET", "/api/v1/nodes/edge-9/proxy/pods")
        let wrongCA = try f.request("GET", "/api/v1/nodes/edge-x/proxy/pods")
        await kubelet.shutdown()
        await other.shutdown()
        await f.close()
        #expect(wrongName.code == 500)
        #expect(str(wrongName.json, "message")?.contains("x509: certificate is valid for edge-9, 10.0.0.9, not 127.0.0.1") == true)
        #expect(wrongCA.code == 500)
        #expect(kubelet.requests().isEmpty || kubelet.requests().count == 1)
    }

    @Test(.enabled(if: kubectlPath != nil, "kubectl is not installed"))
    func kubectlLogsGoesThroughTheKubelet() async throws {
        try await withKubelet(proxy: true) { f, kubelet in
            let kubeconfig = f.dir.sub("admin.conf")
            try f.server.writeAdminKubeconfig(to: kubeconfig)
            func kubectl(_ args: [String], check: Bool = true) throws -> CommandResult {
                try runCommand([kubectlPath!, "--kubeconfig", kubeconfig, "--request-timeout=20s"] + args, check: check)
            }
            #expect(try kubectl(["logs", "p1", "--tail=2", "--timestamps"]).stdout == "hello from c\n")
            #expect(kubelet.requests().last?.uri == "/containerLogs/default/p1/c?tailLines=2&timestamps=true")
            #expect(try kubectl(["logs", "p2", "-c", "b"]).stdout == "hello from b\n")
            // kubectl 1.32 picks the first container itself (and says so) when the pod has several.
            let none = try kubectl(["logs", "p2"], check: false)
            #expect(none.status == 0 && none.stdout == "hello from a\n", "\(none.stdout) \(none.stderr)")
            #expect(none.stderr.contains("Defaulted container \"a\" out of: a, b"))
        }
        // Follow: kubectl prints the lines as they come and exits when the stream ends.
        let f = try await APIFixture()
        let kubelet = try await FakeKubelet.start(pki: f.server.pki, followTicks: 3)
        try putNode(f, "edge-1", port: kubelet.port)
        try f.server.put("/api/v1/namespaces/default/pods", [
            "metadata": ["name": "p1"], "spec": ["nodeName": "edge-1", "containers": [["name": "c", "image": "busybox:1.36"]]]])
        let kubeconfig = f.dir.sub("admin.conf")
        try f.server.writeAdminKubeconfig(to: kubeconfig)
        let r = try runCommand([kubectlPath!, "--kubeconfig", kubeconfig, "logs", "-f", "p1"], check: false)
        await kubelet.shutdown()
        await f.close()
        #expect(r.status == 0)
        #expect(r.stdout == "line 1\nline 2\ntick 1\ntick 2\ntick 3\n")
    }
}
