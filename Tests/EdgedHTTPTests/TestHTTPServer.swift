// A small real HTTP/1.1 server (plain or TLS, optionally requiring client certificates) for the client's tests.
//
// Routes: /hello (5 bytes, content-length), /echo (the request body back, X-Method header), /chunked (chunked
// body), /big?bytes=N (N bytes of a counting pattern, written as the client reads), /never (never answers),
// /stall (head and one chunk, then nothing), /close (Connection: close), /nocontent (204), /whoami (the client
// certificate's subject, or "none"), /once (answers the first request of a connection, then closes on the next).

import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import EdgedTestSupport
import Synchronization

final class TestHTTPServer: Sendable {
    let port: Int
    let channel: Channel
    let stats: ServerStats

    /// Starts on 127.0.0.1, a free port; `tls` makes it a TLS server.
    init(tls: NIOSSLContext? = nil) throws {
        let stats = ServerStats()
        self.stats = stats
        channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { child in
                stats.state.withLock { $0.accepted += 1; $0.open += 1 }
                child.closeFuture.whenComplete { _ in stats.state.withLock { $0.open -= 1 } }
                return child.eventLoop.makeCompletedFuture {
                    if let tls { try child.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    try child.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: false)
                    try child.pipeline.syncOperations.addHandler(TestRequestHandler(stats: stats))
                }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
        port = channel.localAddress!.port!
    }

    var url: String { "http://127.0.0.1:\(port)" }
    var tlsURL: String { "https://127.0.0.1:\(port)" }
    var accepted: Int { stats.state.withLock { $0.accepted } }
    var open: Int { stats.state.withLock { $0.open } }
    var bigBytesWritten: Int { stats.state.withLock { $0.bigBytesWritten } }

    func stop() {
        try? channel.close().wait()
    }

    /// A server TLS context with `pair`; `clientCA` makes client certificates required and checked against it.
    static func tlsContext(_ pair: TestKeyPair, clientCA: String? = nil) throws -> NIOSSLContext {
        var config = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(pair.certPEM.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(pair.keyPEM.utf8), format: .pem)))
        if let clientCA {
            config.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(clientCA.utf8)))
            config.certificateVerification = .noHostnameVerification
        }
        return try NIOSSLContext(configuration: config)
    }

    /// A port nothing listens on (bound, then closed).
    static func closedPort() throws -> Int {
        let ch = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).wait()
        let port = ch.localAddress!.port!
        try ch.close().wait()
        return port
    }
}

/// What the server saw, shared by its connections.
final class ServerStats: Sendable {
    struct Counts {
        var accepted = 0
        var open = 0
        var bigBytesWritten = 0
    }

    let state = Mutex(Counts())
}

final class TestRequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let stats: ServerStats
    var head: HTTPRequestHead?
    var body: [UInt8] = []
    var answered = 0

    init(stats: ServerStats) {
        self.stats = stats
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case let .head(h):
            head = h
            body = []
        case let .body(b):
            body += Array(b.readableBytesView)
        case .end:
            guard let head else { return }
            answered += 1
            respond(context, head)
        }
    }

    private func send(_ context: ChannelHandlerContext, status: HTTPResponseStatus = .ok, headers: [(String, String)] = [],
                      body: [UInt8]?, isHEAD: Bool = false) {
        var h = HTTPHeaders(headers)
        if let body, !h.contains(name: "content-length") { h.add(name: "Content-Length", value: String(body.count)) }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: h))), promise: nil)
        if let body, !body.isEmpty, !isHEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    private func respond(_ context: ChannelHandlerContext, _ head: HTTPRequestHead) {
        let path = head.uri.split(separator: "?").first.map(String.init) ?? head.uri
        let query = head.uri.split(separator: "?").dropFirst().first.map(String.init) ?? ""
        switch path {
        case "/hello":
            send(context, headers: [("Content-Length", "5")], body: Array("hello".utf8), isHEAD: head.method == .HEAD)
        case "/echo":
            send(context, headers: [("X-Method", head.method.rawValue),
                                    ("X-Host", head.headers["host"].first ?? "")], body: body)
        case "/chunked":
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok))), promise: nil)
            for i in 0..<5 {
                context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: "chunk\(i)")))), promise: nil)
            }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        case "/big":
            let total = Int(query.split(separator: "=").last ?? "0") ?? 0
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok,
                                                                 headers: ["Content-Length": String(total)]))), promise: nil)
            writeBig(context, offset: 0, total: total)
        case "/never":
            break
        case "/stall":
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: "partial")))), promise: nil)
        case "/close":
            let done = context.eventLoop.makePromise(of: Void.self)
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Connection": "close", "Content-Length": "3"]))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: "bye")))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
            let channel = context.channel
            done.futureResult.whenComplete { _ in channel.close(promise: nil) }
        case "/nocontent":
            send(context, status: .noContent, body: nil)
        case "/whoami":
            let handler = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)
            let subject = handler?.peerCertificate.map { Self.commonName($0) } ?? "none"
            send(context, body: Array(subject.utf8))
        case "/once":
            if answered == 1 { send(context, body: Array("first".utf8)) } else { context.close(promise: nil) }
        default:
            send(context, status: .notFound, body: Array("no route \(path)".utf8))
        }
    }

    /// Writes `total` bytes (byte i is i % 251) in 64 KiB pieces, each after the previous one left the process.
    private func writeBig(_ context: ChannelHandlerContext, offset: Int, total: Int) {
        guard offset < total else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            return
        }
        let n = min(65536, total - offset)
        let start = offset % 251
        let buffer = context.channel.allocator.buffer(bytes: bigPattern[start..<(start + n)])
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: written)
        let stats = self.stats
        written.futureResult.assumeIsolated().whenSuccess { [self] in
            stats.state.withLock { $0.bigBytesWritten += n }
            writeBig(context, offset: offset + n, total: total)
        }
    }

    /// The subject's common name, from NIOSSL's description ("<NIOSSLCertificate;serial_number=…;common_name=…>").
    static func commonName(_ cert: NIOSSLCertificate) -> String {
        let text = cert.description
        guard let range = text.range(of: "common_name=") else { return "no common name" }
        return String(text[range.upperBound...].prefix { $0 != ";" && $0 != ">" })
    }
}

/// Byte i is i % 251, long enough for any 64 KiB window of the /big body (and 1 MiB windows on the client side).
let bigPattern: [UInt8] = (0..<((1 << 20) + 251)).map { UInt8($0 % 251) }
