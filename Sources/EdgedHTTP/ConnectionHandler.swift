// The channel handler at the end of each connection's pipeline: carries one request at a time, hands the response
// to async callers chunk by chunk, holds reads back while they lag (back-pressure), and fails them with an
// HTTPError on timeouts, cancellation, TLS or protocol errors and early closes.

import Glibc
import NIOCore
import NIOHTTP1
import NIOSSL
import NIOTLS

/// Lives on the connection's event loop; `HTTPConnection` reaches it through `NIOLoopBound`.
///
/// Timeline of a connection: connecting → ready (TCP up, TLS handshake done) → per request: `start` writes it
/// and waits for the head, `next` hands out body chunks until the end, `finish` says whether the connection can
/// be reused. A failure is sticky: once set, every later call fails with it and the channel is closed.
final class ConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    /// Reads stop while this many body bytes wait for the caller.
    static let highWatermark = 256 << 10

    /// "host:port", for messages.
    let authority: String
    private let usesTLS: Bool
    private let connectDeadline: NIODeadline
    private let readyPromise: EventLoopPromise<Void>
    private var readyDone = false
    private var context: ChannelHandlerContext?
    private var handshakeTimer: Scheduled<Void>?

    // The request in flight.
    private(set) var generation = 0
    private var inFlight = false
    private var what = ""
    private var headPromise: EventLoopPromise<HTTPResponseHead>?
    private var waiter: EventLoopPromise<ByteBuffer?>?
    private var buffered = CircularBuffer<ByteBuffer>()
    static let coalesceLimit = 256 << 10
    private var bufferedBytes = 0
    private var ended = false
    private(set) var sawResponse = false
    private var keepAlive = true
    private var idleTimeout: TimeAmount?
    private var idleTimer: Scheduled<Void>?
    private var deadlineTimer: Scheduled<Void>?
    private var readHeld = false
    private(set) var failure: HTTPError?

    init(authority: String, usesTLS: Bool, connectDeadline: NIODeadline, eventLoop: EventLoop) {
        self.authority = authority
        self.usesTLS = usesTLS
        self.connectDeadline = connectDeadline
        self.readyPromise = eventLoop.makePromise()
    }

    /// Succeeds once TCP is up (and the TLS handshake is done); fails with the connect or TLS error.
    var ready: EventLoopFuture<Void> { readyPromise.futureResult }

    // MARK: Calls from HTTPConnection (on the event loop)

    /// Writes the request and returns a future for the response head.
    func start(_ head: HTTPRequestHead, body: [UInt8]?, what: String, idleTimeout: TimeAmount?,
               deadline: NIODeadline?, deadlineMessage: String) -> EventLoopFuture<HTTPResponseHead> {
        guard let context else { return readyPromise.futureResult.eventLoop.makeFailedFuture(HTTPError(.closed, "\(what): connection to \(authority) is gone")) }
        if let failure { return context.eventLoop.makeFailedFuture(failure) }
        precondition(!inFlight, "EdgedHTTP: two requests at once on one connection")
        generation += 1
        inFlight = true
        self.what = what
        buffered.removeAll()
        bufferedBytes = 0
        ended = false
        sawResponse = false
        keepAlive = !head.headers[canonicalForm: "connection"].contains { $0.lowercased() == "close" }
        self.idleTimeout = idleTimeout
        let promise = context.eventLoop.makePromise(of: HTTPResponseHead.self)
        headPromise = promise
        if let deadline {
            deadlineTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
                fail(HTTPError(.timeout, deadlineMessage))
            }
        }
        armIdleTimer()
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if let body, !body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
        written.futureResult.assumeIsolated().whenFailure { [self] error in
            fail(describe(error, stage: "sending the request"))
        }
        resumeReading()
        return promise.futureResult
    }

    /// The next body chunk of request `generation`, or nil at the end.
    func next(generation: Int) -> EventLoopFuture<ByteBuffer?> {
        let loop = readyPromise.futureResult.eventLoop
        guard generation == self.generation, inFlight else {
            return loop.makeFailedFuture(HTTPError(.closed, "\(what): the response body was read after its request finished"))
        }
        if var chunk = buffered.popFirst() {
            bufferedBytes -= chunk.readableBytes
            // Chunks that piled up while the reader was busy go out as one (up to 256 KiB): a reader hop per
            // 16 KiB TLS record costs more than the copy.
            while chunk.readableBytes < Self.coalesceLimit, var more = buffered.popFirst() {
                bufferedBytes -= more.readableBytes
                chunk.writeBuffer(&more)
            }
            if bufferedBytes < Self.highWatermark { resumeReading() }
            return loop.makeSucceededFuture(chunk)
        }
        if ended { return loop.makeSucceededFuture(nil) }
        if let failure { return loop.makeFailedFuture(failure) }
        precondition(waiter == nil, "EdgedHTTP: two readers of one response body")
        let promise = loop.makePromise(of: ByteBuffer?.self)
        waiter = promise
        armIdleTimer()
        resumeReading()
        return promise.futureResult
    }

    /// Ends the request in flight; true when the whole response was read and the connection can carry another.
    func finish() -> Bool {
        let reusable = inFlight && ended && buffered.isEmpty && keepAlive && failure == nil && (context?.channel.isActive ?? false)
        inFlight = false
        cancelTimers()
        buffered.removeAll()
        bufferedBytes = 0
        if !reusable { fail(HTTPError(.closed, "connection to \(authority) closed after \(what)")) }
        return reusable
    }

    /// Fails whatever waits with `error` (the first failure wins) and closes the channel.
    func fail(_ error: HTTPError) {
        if failure == nil { failure = error }
        let failure = self.failure!
        cancelTimers()
        handshakeTimer?.cancel()
        handshakeTimer = nil
        if !readyDone {
            readyDone = true
            readyPromise.fail(failure)
        }
        if let promise = headPromise {
            headPromise = nil
            promise.fail(failure)
        }
        if let promise = waiter {
            waiter = nil
            promise.fail(failure)
        }
        context?.close(promise: nil)
    }

    // MARK: ChannelHandler

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { channelBecameActive(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        // The channel is gone (a failed connect never becomes active): nothing may be left waiting.
        fail(HTTPError(readyDone ? .closed : .connect, "connection to \(authority) was closed"))
    }

    func channelActive(context: ChannelHandlerContext) {
        channelBecameActive(context)
        context.fireChannelActive()
    }

    private func channelBecameActive(_ context: ChannelHandlerContext) {
        if !usesTLS {
            markReady()
        } else if handshakeTimer == nil && !readyDone {
            handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: connectDeadline) { [self] in
                fail(HTTPError(.tls, "TLS handshake with \(authority) did not finish in time; check that the port speaks TLS"))
            }
        }
    }

    private func markReady() {
        guard !readyDone else { return }
        readyDone = true
        handshakeTimer?.cancel()
        handshakeTimer = nil
        readyPromise.succeed()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent { markReady() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard inFlight, failure == nil else {
            if failure == nil { fail(HTTPError(.protocolError, "\(authority) sent data while no request was in flight")) }
            return
        }
        sawResponse = true
        switch unwrapInboundIn(data) {
        case let .head(head):
            if !head.isKeepAlive { keepAlive = false }
            cancelIdleTimer()
            let h = HTTPResponseHead(status: Int(head.status.code), headers: head.headers.map { ($0.name, $0.value) })
            if let promise = headPromise {
                headPromise = nil
                promise.succeed(h)
            }
        case let .body(chunk):
            if let promise = waiter {
                waiter = nil
                cancelIdleTimer()
                promise.succeed(chunk)
            } else {
                buffered.append(chunk)
                bufferedBytes += chunk.readableBytes
            }
        case .end:
            ended = true
            cancelTimers()
            if let promise = waiter {
                waiter = nil
                promise.succeed(nil)
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if inFlight && !ended {
            fail(HTTPError(.closed, sawResponse
                ? "\(what): \(authority) closed the connection before the response was complete"
                : "\(what): \(authority) closed the connection without answering"))
        } else if failure == nil {
            failure = HTTPError(.closed, "connection to \(authority) was closed")
            if !readyDone { fail(HTTPError(.connect, "\(authority) closed the connection during set-up")) }
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // A server that closes without TLS close_notify: the close itself decides (an EOF-framed body ends there).
        if let e = error as? NIOSSLError, case .uncleanShutdown = e { return }
        fail(describe(error, stage: readyDone ? "reading the response" : "connecting"))
    }

    func read(context: ChannelHandlerContext) {
        if inFlight && !ended && bufferedBytes >= Self.highWatermark {
            readHeld = true
        } else {
            context.read()
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        context.write(data, promise: promise)
    }

    // MARK: Helpers

    private func resumeReading() {
        guard readHeld, let context else { return }
        readHeld = false
        context.read()
    }

    private func armIdleTimer() {
        cancelIdleTimer()
        guard let idleTimeout, let context else { return }
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: idleTimeout) { [self] in
            fail(HTTPError(.timeout, "\(what): no data from \(authority) for \(Self.format(idleTimeout))"))
        }
    }

    private func cancelIdleTimer() {
        idleTimer?.cancel()
        idleTimer = nil
    }

    private func cancelTimers() {
        cancelIdleTimer()
        deadlineTimer?.cancel()
        deadlineTimer = nil
    }

    /// The current time as "2026-11-22 13:58:00".
    static func utcNow() -> String {
        var t = time(nil)
        var parts = tm()
        gmtime_r(&t, &parts)
        var buf = [CChar](repeating: 0, count: 32)
        let n = strftime(&buf, buf.count, "%Y-%m-%d %H:%M:%S", &parts)
        return String(decoding: buf.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Turns a NIO, NIOSSL or parser error into an HTTPError naming the server.
    func describe(_ error: Error, stage: String) -> HTTPError {
        if let e = error as? HTTPError { return e }
        let subject = what.isEmpty ? authority : "\(what)"
        if error is NIOSSLError || error is NIOSSLExtraError || error is BoringSSLError {
            var hint = "check the trusted CA, the server name and the client certificate"
            if "\(error)".contains("CERTIFICATE_VERIFY_FAILED") {
                // A clock far off makes every certificate look expired or not valid yet; devices without an RTC
                // battery boot in 1970. Say what time the node thinks it is.
                hint += ", and the node's clock (it reads \(Self.utcNow()) UTC; fix it with NTP if that is wrong)"
            }
            return HTTPError(.tls, "TLS with \(authority) failed while \(stage): \(error); \(hint)")
        }
        if error is HTTPParserError {
            return HTTPError(.protocolError, "\(subject): \(authority) sent a response that is not valid HTTP/1.1 (\(error))")
        }
        return HTTPError(readyDone ? .closed : .connect, "\(subject): connection to \(authority) failed while \(stage): \(error)")
    }

    static func format(_ t: TimeAmount) -> String {
        let ms = t.nanoseconds / 1_000_000
        return ms % 1000 == 0 ? "\(ms / 1000) s" : "\(ms) ms"
    }
}
