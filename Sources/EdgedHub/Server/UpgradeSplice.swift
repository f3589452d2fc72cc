// Upgraded connections (exec, attach, port-forward over SPDY/3.1 or websocket): the hub does not speak those
// protocols, it relays them. The request head goes upstream, and once the upstream answers, the client's HTTP
// handlers leave the pipeline and a pair of splice handlers copies bytes both ways, half-closes included.

import EdgedHTTP
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

extension HubServer {
    /// Answers an upgrade request by splicing the connection to the handler's upstream, then waits until the
    /// connection closes. Without an upstream, or when the upstream cannot be reached, answers a Status error.
    func upgrade(_ request: HubHTTPRequest, version: HTTPVersion, channel: any Channel) async {
        let what = "\(request.method) \(request.target)"
        guard let target = await handler.upgradeTarget(for: request) else {
            try? await writeStatus(channel, version: version, code: 503, reason: "ServiceUnavailable",
                                   message: "the edge hub cannot open the stream of \(what): exec, attach and port-forward need the API server, which it cannot reach now; try again once the node is back online",
                                   keepAlive: false)
            return
        }
        let upstream: any Channel
        do {
            upstream = try await UpgradeSplice.connect(request, to: target, eventLoop: channel.eventLoop)
            try await channel.eventLoop.submit { try UpgradeSplice.join(client: channel, upstream: upstream) }.get()
        } catch {
            logger.warning("upgrade not relayed", metadata: ["request": "\(what)", "error": "\(error)"])
            let message = (error as? HubServerError)?.message ?? "\(error)"
            try? await writeStatus(channel, version: version, code: 502, reason: "BadGateway",
                                   message: "the edge hub cannot open the stream of \(what): \(message)", keepAlive: false)
            return
        }
        logger.debug("upgrade relayed", metadata: ["request": "\(what)", "upstream": "\(target.host):\(target.port)"])
        await withTaskCancellationHandler {
            try? await channel.closeFuture.get()
        } onCancel: {
            channel.close(promise: nil)
        }
        upstream.close(promise: nil)
    }
}

enum UpgradeSplice {
    /// How long the upstream may take to connect, and then to answer the upgrade request.
    static let connectTimeout: TimeAmount = .seconds(10)
    static let answerTimeout: TimeAmount = .seconds(30)

    /// Connects to `target` on `eventLoop` (the client's: a splice pair shares one loop), sends the request head and
    /// body, and returns once the first bytes of the answer arrived (held until `join`).
    ///
    /// - Throws: `HubServerError` `.upstream` (refused, timed out, TLS failed, closed without answering) or `.tls`.
    static func connect(_ request: HubHTTPRequest, to target: HubUpstream, eventLoop: any EventLoop) async throws -> any Channel {
        let authority = "\(target.host):\(target.port)"
        let context = try target.tls.map { options throws(HubServerError) in try makeClientContext(options, authority: authority) }
        let identity = TLSServerIdentity(serverName: target.tls?.serverName, host: target.host)
        let answered = eventLoop.makePromise(of: Void.self)
        let upstream: any Channel
        do {
            upstream = try await ClientBootstrap(group: eventLoop)
                .connectTimeout(connectTimeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        if let context {
                            try sync.addHandler(identity.makeClientHandler(context: context) { problem in
                                HubServerError(.upstream, "TLS with \(authority) failed: \(problem)")
                            })
                        }
                        try sync.addHandler(SpliceHandler(firstRead: answered))
                    }
                }
                .connect(host: target.host, port: target.port).get()
        } catch {
            answered.fail(error)
            throw HubServerError(.upstream, "cannot connect to \(authority): \(HubServer.reason(error))")
        }
        var bytes = ByteBuffer(bytes: requestHead(request, target: target))
        bytes.writeBytes(request.body)
        upstream.writeAndFlush(bytes, promise: nil)
        let timeout = eventLoop.scheduleTask(in: answerTimeout) {
            answered.fail(HubServerError(.upstream, "\(authority) did not answer within \(answerTimeout.nanoseconds / 1_000_000_000) s"))
        }
        defer { timeout.cancel() }
        do {
            try await answered.futureResult.get()
        } catch {
            upstream.close(promise: nil)
            if let e = error as? HubServerError { throw e }
            if error is NIOSSLError || error is BoringSSLError {
                throw HubServerError(.upstream, "TLS with \(authority) failed: \(error); check the API server's CA and the node's client certificate")
            }
            throw HubServerError(.upstream, "\(authority) failed before answering: \(HubServer.reason(error))")
        }
        return upstream
    }

    /// Turns the client's connection into a raw byte stream and pairs it with `upstream`. On the event loop.
    static func join(client: any Channel, upstream: any Channel) throws {
        let sync = client.pipeline.syncOperations
        let upstreamSplice = try upstream.pipeline.syncOperations.handler(type: SpliceHandler.self)
        try client.syncOptions?.setOption(.allowRemoteHalfClosure, value: true)
        // The encoder leaves first: the splice handler's writes pass where it was. The splice handler goes right
        // after the decoder, which hands it the bytes it held back after the upgrade request when it leaves.
        sync.removeHandler(try sync.handler(type: HTTPResponseEncoder.self), promise: nil)
        let decoder = try sync.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
        let splice = SpliceHandler(firstRead: nil)
        try sync.addHandler(splice, position: .after(decoder))
        sync.removeHandler(decoder, promise: nil)
        if let h = try? sync.handler(type: NIOHTTPResponseHeadersValidator.self) { sync.removeHandler(h, promise: nil) }
        if let h = try? sync.handler(type: HTTPServerProtocolErrorHandler.self) { sync.removeHandler(h, promise: nil) }
        if let h = try? sync.handler(type: HTTPServerUpgradeHandler.self) { sync.removeHandler(h, promise: nil) }
        SpliceHandler.join(splice, upstreamSplice)
    }

    /// The request head as sent upstream: the original method, target and headers, with `Host` naming the upstream,
    /// the body's framing redone (it was read whole), and `extraHeaders` replacing headers of the same name.
    static func requestHead(_ request: HubHTTPRequest, target: HubUpstream) -> [UInt8] {
        let replaced = Set(target.extraHeaders.map { $0.0.lowercased() })
        let dropped: Set<String> = ["host", "content-length", "transfer-encoding"]
        var text = "\(request.method) \(request.target) HTTP/1.1\r\n"
        let defaultPort = target.tls == nil ? 80 : 443
        let host = target.host.contains(":") ? "[\(target.host)]" : target.host
        text += "Host: \(target.port == defaultPort ? host : "\(host):\(target.port)")\r\n"
        let original = request.headers.filter { !replaced.contains($0.0.lowercased()) }
        for (name, value) in original + target.extraHeaders {
            if dropped.contains(name.lowercased()) { continue }
            // A header that could split the head is not forwarded.
            if name.utf8.contains(where: { $0 == 13 || $0 == 10 }) || value.utf8.contains(where: { $0 == 13 || $0 == 10 }) { continue }
            text += "\(name): \(value)\r\n"
        }
        if !request.body.isEmpty { text += "Content-Length: \(request.body.count)\r\n" }
        text += "\r\n"
        return Array(text.utf8)
    }

    /// The NIOSSL client context for `options` (trust, client certificate), built by EdgedHTTP like every other
    /// client connection edged makes.
    static func makeClientContext(_ options: TLSOptions, authority: String) throws(HubServerError) -> NIOSSLContext {
        do {
            return try options.makeClientContext()
        } catch {
            throw HubServerError(.tls, "TLS to \(authority): \(error.message)")
        }
    }
}

/// One end of a splice: what it reads goes to its partner's channel, and its partner's reads come out here.
///
/// Reads wait while the partner cannot take more (back-pressure both ways). End of input on one side half-closes
/// the other's output; a side whose input and output are both closed closes; one side closing or failing closes the
/// other. Before the pair is joined, the upstream end holds what it reads (the answer's first bytes) and reports the
/// first read, or the failure before it, through `firstRead`.
final class SpliceHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: SpliceHandler?
    private var context: ChannelHandlerContext?
    private var firstRead: EventLoopPromise<Void>?
    private var held: [ByteBuffer] = []
    private var heldEOF = false
    private var pendingRead = false
    private var inputClosed = false
    private var outputClosed = false

    init(firstRead: EventLoopPromise<Void>?) {
        self.firstRead = firstRead
    }

    /// Pairs two ends on the same event loop and passes on what each held.
    static func join(_ a: SpliceHandler, _ b: SpliceHandler) {
        a.partner = b
        b.partner = a
        a.release()
        b.release()
    }

    private func release() {
        guard let partner else { return }
        if !held.isEmpty {
            for buffer in held { partner.partnerWrite(buffer) }
            held.removeAll()
            partner.partnerFlush()
        }
        if heldEOF {
            heldEOF = false
            partner.partnerWriteEOF()
        }
        if pendingRead, partner.partnerWritable {
            pendingRead = false
            context?.read()
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        firstRead?.succeed()
        firstRead = nil
        if let partner {
            partner.partnerWrite(buffer)
        } else {
            held.append(buffer)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.partnerFlush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case ChannelEvent.inputClosed = event else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        inputClosed = true
        firstRead?.fail(HubServerError(.upstream, "the upstream closed the connection without answering"))
        firstRead = nil
        if let partner {
            partner.partnerWriteEOF()
        } else {
            heldEOF = true
        }
        if outputClosed { context.close(promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        firstRead?.fail(HubServerError(.upstream, "the upstream closed the connection without answering"))
        firstRead = nil
        partner?.partnerCloseFull()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        firstRead?.fail(error)
        firstRead = nil
        partner?.partnerCloseFull()
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let partner {
            if partner.partnerWritable { context.read() } else { pendingRead = true }
        } else if held.isEmpty && !heldEOF {
            context.read()
        } else {
            pendingRead = true
        }
    }

    // MARK: Called by the partner

    private func partnerWrite(_ buffer: ByteBuffer) {
        context?.write(wrapOutboundOut(buffer), promise: nil)
    }

    private func partnerFlush() {
        context?.flush()
    }

    private func partnerWriteEOF() {
        guard let context, !outputClosed else { return }
        outputClosed = true
        if inputClosed {
            context.close(promise: nil)
            return
        }
        // A channel that cannot half-close closes whole.
        let channel = context.channel
        let done = context.eventLoop.makePromise(of: Void.self)
        done.futureResult.whenFailure { _ in channel.close(promise: nil) }
        context.close(mode: .output, promise: done)
    }

    private func partnerCloseFull() {
        context?.close(promise: nil)
    }

    private func partnerBecameWritable() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }

    private var partnerWritable: Bool {
        context?.channel.isWritable ?? false
    }
}

@available(*, unavailable)
extension SpliceHandler: Sendable {}
