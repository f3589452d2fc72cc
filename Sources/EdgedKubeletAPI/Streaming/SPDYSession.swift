// One SPDY/3.1 session on an upgraded connection: frames, streams opened by the client, flow control.
import Logging
import NIOCore

/// What runs on top of a SPDY session (exec/attach or port-forward). Called on the session's event loop.
protocol SPDYApplication: AnyObject {
    /// The client opened stream `id` (the session has already replied).
    func streamOpened(_ session: SPDYSession, id: UInt32, headers: SPDYHeaders)
    /// Data from the client; the future completes once it was consumed (then the window is given back).
    func streamData(_ session: SPDYSession, id: UInt32, _ data: ByteBuffer) -> EventLoopFuture<Void>
    /// The client finished sending on `id` (FIN).
    func streamHalfClosed(_ session: SPDYSession, id: UInt32)
    /// The client reset `id`.
    func streamReset(_ session: SPDYSession, id: UInt32)
    /// The connection is gone (client closed, GOAWAY, protocol error or `close()`).
    func sessionEnded(_ session: SPDYSession)
}

/// The server side of a SPDY/3.1 session: decodes frames, replies to the client's streams, answers PINGs, and
/// carries DATA both ways with SPDY/3.1 stream and session windows.
///
/// Flow control: WINDOW_UPDATEs are sent as the application consumes data. Send windows are honoured once the
/// client shows it does flow control (it sent SETTINGS or WINDOW_UPDATE); spdystream, which kubectl and
/// kube-apiserver use, never does and never sends either, so for it the windows are not enforced, as kubelet
/// (spdystream too) does not enforce them either. Reads from the connection pause while much received data is still
/// being written to its targets. A malformed frame ends the session with GOAWAY PROTOCOL_ERROR and a log line.
///
/// Confined to the channel's event loop.
final class SPDYSession: ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let defaultWindow = 65_536
    /// Largest DATA payload this side sends in one frame.
    static let maxDataFrame = 32 * 1024

    private struct Stream {
        var headers: SPDYHeaders
        var remoteClosed = false
        var localClosed = false
        var sendWindow: Int
        var unacked = 0
        /// Data waiting for the send window: payload, FIN, promise.
        var queue: [(ByteBuffer, Bool, EventLoopPromise<Void>?)] = []
    }

    let logger: Logger
    let description: String
    var application: (any SPDYApplication)?
    private let codec = SPDYFrameCodec()
    private var buffer: ByteBuffer?
    private var streams: [UInt32: Stream] = [:]
    private var lastClientStream: UInt32 = 0
    private var initialSendWindow = SPDYSession.defaultWindow
    private var sessionSendWindow = SPDYSession.defaultWindow
    private var sessionUnacked = 0
    private var peerDoesFlowControl = false
    private var context: ChannelHandlerContext?
    private let gate = ReadGate()
    private var ended = false
    private var closing = false

    init(logger: Logger, description: String) {
        self.logger = logger
        self.description = description
    }

    var eventLoop: EventLoop { context!.eventLoop }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        gate.channel = context.channel
        buffer = context.channel.allocator.buffer(capacity: 0)
    }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        guard !ended else { return }
        buffer!.writeBuffer(&incoming)
        do {
            while !ended, let frame = try codec.decode(&buffer!) {
                try handle(frame)
            }
            buffer!.discardReadBytes()
        } catch {
            protocolError("\(error)")
        }
    }

    private func protocolError(_ message: String) {
        logger.warning("SPDY session of \(description) ended: malformed frame from the client: \(message)")
        write(.goAway(lastGoodStreamID: lastClientStream, status: 1), promise: nil)
        flush()
        close()
    }

    private func handle(_ frame: SPDYFrame) throws {
        switch frame {
        case .synStream(let id, _, _, let fin, _, let headers):
            guard id % 2 == 1, id > lastClientStream else {
                throw SPDYProtocolError("SYN_STREAM for stream \(id) (client streams are odd and increasing, last \(lastClientStream))")
            }
            lastClientStream = id
            streams[id] = Stream(headers: headers, remoteClosed: fin, sendWindow: initialSendWindow)
            write(.synReply(streamID: id, fin: false, headers: SPDYHeaders()), promise: nil)
            flush()
            application?.streamOpened(self, id: id, headers: headers)
            if fin { application?.streamHalfClosed(self, id: id) }
        case .data(let id, let fin, let payload):
            guard var stream = streams[id], !stream.remoteClosed else {
                write(.rstStream(streamID: id, status: SPDYStatus.invalidStream), promise: nil)
                flush()
                return
            }
            if fin { stream.remoteClosed = true }
            streams[id] = stream
            let count = payload.readableBytes
            if count > 0 {
                let consumed = application?.streamData(self, id: id, payload) ?? eventLoop.makeSucceededVoidFuture()
                gate.track(count, consumed)
                consumed.whenComplete { [self] _ in self.consumed(count, on: id) }
            }
            if fin {
                application?.streamHalfClosed(self, id: id)
                forgetIfDone(id)
            }
        case .rstStream(let id, _):
            guard streams.removeValue(forKey: id) != nil else { return }
            application?.streamReset(self, id: id)
        case .settings(_, let entries):
            peerDoesFlowControl = true
            for e in entries where e.id == SPDYSetting.initialWindowSize {
                let delta = Int(e.value) - initialSendWindow
                initialSendWindow = Int(e.value)
                for key in streams.keys { streams[key]!.sendWindow += delta }
            }
            drainQueues()
        case .ping(let id):
            if id % 2 == 1 { write(.ping(id: id), promise: nil); flush() }
        case .goAway:
            logger.debug("SPDY client of \(description) sent GOAWAY")
            close()
        case .headers(let id, let fin, _):
            if fin, var stream = streams[id], !stream.remoteClosed {
                stream.remoteClosed = true
                streams[id] = stream
                application?.streamHalfClosed(self, id: id)
            }
        case .windowUpdate(let id, let delta):
            peerDoesFlowControl = true
            if id == 0 {
                sessionSendWindow += Int(delta)
            } else if streams[id] != nil {
                streams[id]!.sendWindow += Int(delta)
            }
            drainQueues()
        case .synReply:
            throw SPDYProtocolError("SYN_REPLY from the client (this side opens no streams)")
        }
    }

    /// Gives window back once half of it was consumed.
    private func consumed(_ count: Int, on id: UInt32) {
        guard !ended else { return }
        sessionUnacked += count
        var updates: [SPDYFrame] = []
        if sessionUnacked >= Self.defaultWindow / 2 {
            updates.append(.windowUpdate(streamID: 0, delta: UInt32(sessionUnacked)))
            sessionUnacked = 0
        }
        if var stream = streams[id], !stream.remoteClosed {
            stream.unacked += count
            if stream.unacked >= Self.defaultWindow / 2 {
                updates.append(.windowUpdate(streamID: id, delta: UInt32(stream.unacked)))
                stream.unacked = 0
            }
            streams[id] = stream
        }
        if !updates.isEmpty {
            for u in updates { write(u, promise: nil) }
            flush()
        }
    }

    func read(context: ChannelHandlerContext) {
        if gate.allowRead() { context.read() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        end()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.debug("SPDY connection of \(description) failed: \(error)")
        close()
    }

    private func end() {
        guard !ended else { return }
        ended = true
        for (_, stream) in streams { for (_, _, p) in stream.queue { p?.fail(ChannelError.ioOnClosedChannel) } }
        streams = [:]
        let app = application
        application = nil
        app?.sessionEnded(self)
    }

    // MARK: outbound (for the application)

    /// Sends `data` (and FIN when `fin`) on stream `id`; completes once written.
    func send(_ data: ByteBuffer, on id: UInt32, fin: Bool = false) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        guard !ended, var stream = streams[id], !stream.localClosed else {
            promise.fail(ChannelError.ioOnClosedChannel)
            return promise.futureResult
        }
        if fin { stream.localClosed = true }
        stream.queue.append((data, fin, promise))
        streams[id] = stream
        drain(id)
        flush()
        if fin { forgetIfDone(id) }
        return promise.futureResult
    }

    /// Ends this side of stream `id` (an empty DATA frame with FIN).
    func finish(_ id: UInt32) -> EventLoopFuture<Void> {
        send(ByteBuffer(), on: id, fin: true)
    }

    /// Resets stream `id`.
    func reset(_ id: UInt32, status: UInt32 = SPDYStatus.cancel) {
        guard !ended, streams.removeValue(forKey: id) != nil else { return }
        write(.rstStream(streamID: id, status: status), promise: nil)
        flush()
    }

    func headers(of id: UInt32) -> SPDYHeaders? { streams[id]?.headers }

    /// Sends GOAWAY once everything queued is written, then closes the connection.
    func goAway() {
        guard !ended, !closing else { return }
        closing = true
        let pending = streams.values.flatMap { $0.queue.compactMap { $0.2?.futureResult } }
        EventLoopFuture.andAllComplete(pending, on: eventLoop).whenComplete { [self] _ in
            guard !ended else { return }
            write(.goAway(lastGoodStreamID: lastClientStream, status: 0), promise: nil)
            flush()
            close()
        }
    }

    /// Closes the connection now.
    func close() {
        guard let context, !ended else { return }
        context.close(promise: nil)
        end()
    }

    private func forgetIfDone(_ id: UInt32) {
        if let s = streams[id], s.localClosed, s.remoteClosed, s.queue.isEmpty { streams[id] = nil }
    }

    private func drainQueues() {
        for id in streams.keys.sorted() { drain(id) }
        flush()
    }

    private func drain(_ id: UInt32) {
        while var stream = streams[id], !stream.queue.isEmpty {
            var (data, fin, promise) = stream.queue.removeFirst()
            var allowed = min(data.readableBytes, Self.maxDataFrame)
            if peerDoesFlowControl {
                allowed = min(allowed, stream.sendWindow, sessionSendWindow)
                if allowed <= 0 && data.readableBytes > 0 {
                    stream.queue.insert((data, fin, promise), at: 0)
                    streams[id] = stream
                    return
                }
            }
            let chunk = data.readSlice(length: max(allowed, 0))!
            let last = data.readableBytes == 0
            stream.sendWindow -= chunk.readableBytes
            sessionSendWindow -= chunk.readableBytes
            if !last { stream.queue.insert((data, fin, promise), at: 0) }
            streams[id] = stream
            write(.data(streamID: id, fin: last && fin, payload: chunk), promise: last ? promise : nil)
            if last && fin { forgetIfDone(id) }
        }
    }

    private func write(_ frame: SPDYFrame, promise: EventLoopPromise<Void>?) {
        guard let context else { promise?.fail(ChannelError.ioOnClosedChannel); return }
        var out = context.channel.allocator.buffer(capacity: 64)
        do {
            try codec.encode(frame, into: &out)
        } catch {
            logger.error("SPDY session of \(description): cannot encode a frame: \(error)")
            promise?.fail(error)
            return
        }
        context.write(wrapOutboundOut(out), promise: promise)
    }

    private func flush() { context?.flush() }
}
