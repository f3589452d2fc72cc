// The test API server's network side: TLS (client certificates requested, checked by the core so a bad one
// gets a 401 like the real server instead of a failed handshake), HTTP/1.1, and chunked watch streams.

import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import X509

/// One connection: collects a request, hands it to the core, writes the reply or keeps the stream open for a watch.
final class KubeAPIHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let core: KubeAPIServerCore
    private var head: HTTPRequestHead?
    private var body = Data()
    private var watchID: Int?
    private var bookmarkTask: RepeatedTask?
    private var timeoutTask: Scheduled<Void>?

    init(core: KubeAPIServerCore) { self.core = core }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            stopWatch()
            head = h
            body = Data()
        case .body(var buf):
            if let bytes = buf.readBytes(length: buf.readableBytes) { body.append(contentsOf: bytes) }
        case .end:
            guard let h = head else { return }
            head = nil
            respond(context: context, head: h)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        stopWatch()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    private func stopWatch() {
        if let id = watchID {
            core.store.lock.withLock { core.store.removeWatcher(id) }
            core.traffic.closed(id)   // +Traffic
        }
        watchID = nil
        bookmarkTask?.cancel()
        bookmarkTask = nil
        timeoutTask?.cancel()
        timeoutTask = nil
    }

    private func peerCertificate(_ context: ChannelHandlerContext) -> Certificate? {
        guard let peer = try? context.pipeline.syncOperations.nioSSL_peerCertificate(),
              let der = try? peer.toDERBytes() else { return nil }
        return try? Certificate(derEncoded: der)
    }

    private func respond(context: ChannelHandlerContext, head h: HTTPRequestHead) {
        var headers: [String: String] = [:]
        for (k, v) in h.headers { headers[k.lowercased()] = v }
        let user = core.authenticate(peer: peerCertificate(context), authorization: headers["authorization"])
        if let user, KubeletProxy.start(core: core, context: context, head: h, body: body, user: user) { return }   // +KubeletProxy
        let req = APIRequest(method: h.method.rawValue, uri: h.uri, headers: headers, body: body)
        let channel = context.channel
        let sink: @Sendable (Data) -> Void = { data in
            channel.eventLoop.execute {
                channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: data))), promise: nil)
            }
        }
        let fault = core.takeFault(req)   // armed by tests only (KubeAPIServer+Faults.swift)
        let reply = fault.damage(core.serve(req, user: user, watchSink: fault.watchSink(sink, channel: channel)), core: core)
        let keepAlive = h.isKeepAlive
        switch reply {
        case .object(let code, let json):
            let isText = json.string != nil
            let bytes = isText ? Array(json.string!.utf8) : json.bytes
            self.reply(context: context, head: h, req: req, user: user, code: code, bytes: bytes,
                  contentType: isText ? "text/plain; charset=utf-8" : "application/json")
        case .json(let code, let bytes):
            self.reply(context: context, head: h, req: req, user: user, code: code, bytes: bytes, contentType: "application/json")
        case .watch(let id, let bookmarks, let timeoutSeconds):
            core.log(.init(method: req.method, path: h.uri, code: 200, user: user?.name ?? ""))
            var out = HTTPHeaders()
            out.add(name: "Content-Type", value: "application/json")
            out.add(name: "Transfer-Encoding", value: "chunked")
            out.add(name: "Cache-Control", value: "no-cache, private")
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: h.version, status: .ok, headers: out))), promise: nil)
            let core = self.core
            let end: @Sendable () -> Void = {
                channel.eventLoop.execute {
                    channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
                    if !keepAlive { channel.close(promise: nil) }
                }
            }
            guard let id else { end(); return }
            watchID = id
            core.traffic.opened(id, user: user?.name ?? "", path: h.uri)   // +Traffic
            if bookmarks {
                let interval = TimeAmount.nanoseconds(Int64(core.options.watchBookmarkInterval.components.seconds) * 1_000_000_000
                    + core.options.watchBookmarkInterval.components.attoseconds / 1_000_000_000)
                bookmarkTask = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
                    core.store.lock.withLock { core.store.bookmark(id) }
                }
            }
            if let timeoutSeconds {
                let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
                timeoutTask = context.eventLoop.scheduleTask(in: .seconds(Int64(timeoutSeconds))) {
                    let handler = loopBound.value
                    guard handler.watchID == id else { return }
                    handler.stopWatch()
                    end()
                }
            }
        }
    }
}

extension KubeAPIHTTPHandler {
    /// Writes a complete response (Content-Length) and closes the connection unless it is kept alive.
    fileprivate func reply(context: ChannelHandlerContext, head h: HTTPRequestHead, req: APIRequest, user: KubeUser?,
                           code: Int, bytes: [UInt8], contentType: String) {
        core.log(.init(method: req.method, path: h.uri, code: code, user: user?.name ?? ""))
        let keepAlive = h.isKeepAlive
        var out = HTTPHeaders()
        out.add(name: "Content-Type", value: contentType)
        out.add(name: "Content-Length", value: String(bytes.count))
        out.add(name: "Cache-Control", value: "no-cache, private")
        if !keepAlive { out.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: h.version, status: .init(statusCode: code), headers: out))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: bytes)))), promise: nil)
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        let channel = context.channel
        if !keepAlive { done.whenComplete { _ in channel.close(promise: nil) } }
    }
}

/// Builds the TLS context: the serving certificate, client certificates requested but optional.
enum KubeAPITLS {
    static func context(serving: TestKeyPair, ca: TestPKI) throws -> NIOSSLContext {
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(serving.certPEM.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(serving.keyPEM.utf8), format: .pem)))
        tls.certificateVerification = .optionalVerification
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(ca.caPEM.utf8)))
        return try NIOSSLContext(configuration: tls)
    }

    /// Accepts any presented certificate at the TLS layer; the core verifies it against the CA per request.
    static func handler(_ context: NIOSSLContext) -> NIOSSLServerHandler {
        NIOSSLServerHandler(context: context, customVerificationCallback: { _, promise in
            promise.succeed(.certificateVerified)
        })
    }
}
