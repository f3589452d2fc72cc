// exec, attach and port-forward over WebSocket: the channel.k8s.io protocols, where each binary message starts with
// the number of the stream it belongs to.
import Logging
import NIOCore
import NIOWebSocket

/// The server side of a WebSocket streaming session, after the frame decoder and aggregator.
///
/// exec/attach (v4.channel.k8s.io, v5.channel.k8s.io, and the channel.k8s.io family): channel 0 stdin, 1 stdout,
/// 2 stderr, 3 error (the final status), 4 resize (`{"Width":W,"Height":H}`); v5 adds channel 255, whose message
/// `[n]` closes the client's stream n (stdin: 0). port-forward (portforward.k8s.io, v4.channel.k8s.io): ports in
/// query order, channel 2i carries port i's data and 2i+1 its errors, and the first message on each is the port as
/// two little-endian bytes. Pings get pongs. Confined to the channel's event loop.
final class WebSocketSession: ChannelDuplexHandler, RemovableChannelHandler, ExecOutput, @unchecked Sendable {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    enum Mode {
        case exec(ExecDriver, jsonStatus: Bool, closeSignal: Bool)
        case portForward(backend: any KubeletBackend, namespace: String, pod: String, uid: String?, ports: [UInt16])
    }

    let mode: Mode
    let logger: Logger
    let description: String
    private var context: ChannelHandlerContext?
    private let gate = ReadGate()
    private var connections: [PortForwardConnection?] = []
    private var openConnections = 0
    private var closing = false
    private var ended = false
    private var resizeBuffer: [UInt8] = []
    private let loop: EventLoop

    init(mode: Mode, eventLoop: EventLoop, logger: Logger, description: String) {
        self.loop = eventLoop
        self.mode = mode
        self.logger = logger
        self.description = description
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        gate.channel = context.channel
        switch mode {
        case .exec(let driver, _, _):
            driver.output = self
            driver.start()
        case .portForward(let backend, let namespace, let pod, let uid, let ports):
            openConnections = ports.count
            for (i, port) in ports.enumerated() {
                let data = UInt8(2 * i), errors = UInt8(2 * i + 1)
                let prefix = [UInt8(port & 0xff), UInt8(port >> 8)]
                sendMessage(channel: data, ByteBuffer(bytes: prefix))
                sendMessage(channel: errors, ByteBuffer(bytes: prefix))
                let connection = PortForwardConnection(eventLoop: context.eventLoop, port: port, logger: logger)
                connection.toClient = { [weak self] bytes in
                    guard let self else { return connection.eventLoop.makeSucceededVoidFuture() }
                    return self.sendMessage(channel: data, bytes)
                }
                connection.onPodEOF = { [weak self] in self?.connectionDone(i) }
                connection.onError = { [weak self] message in
                    self?.sendMessage(channel: errors, ByteBuffer(string: message))
                    self?.connectionDone(i)
                }
                connections.append(connection)
                connection.start(backend: backend, namespace: namespace, pod: pod, uid: uid)
            }
            context.flush()
        }
    }

    private func connectionDone(_ index: Int) {
        guard index < connections.count, let connection = connections[index] else { return }
        connection.close()
        connections[index] = nil
        openConnections -= 1
        if openConnections == 0 { closeSession(code: .normalClosure) }
    }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard !ended else { return }
        switch frame.opcode {
        case .ping:
            guard !closing else { return }
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)),
                                  promise: nil)
        case .pong:
            break
        case .connectionClose:
            closeSession(code: .normalClosure)
        case .binary:
            var payload = frame.unmaskedData
            guard let channel = payload.readInteger(as: UInt8.self) else { return }
            received(channel: channel, payload)
        case .text:
            logger.warning("WebSocket session of \(description): text message from the client (only the binary channel protocols are spoken); closing")
            closeSession(code: .unacceptableData)
        default:
            logger.warning("WebSocket session of \(description): unexpected frame \(frame.opcode); closing")
            closeSession(code: .protocolError)
        }
    }

    private func received(channel: UInt8, _ payload: ByteBuffer) {
        switch mode {
        case .exec(let driver, _, let closeSignal):
            switch channel {
            case 0:
                if payload.readableBytes > 0 { gate.track(payload.readableBytes, driver.stdin(payload)) }
            case 4:
                resizeBuffer += payload.readableBytesView
                for size in ResizeDecoder.take(&resizeBuffer) { driver.resize(width: size.0, height: size.1) }
            case 255 where closeSignal:
                if payload.readableBytesView.first == 0 { driver.stdinEnd() }
            default:
                break
            }
        case .portForward:
            let index = Int(channel) / 2
            guard channel % 2 == 0, index < connections.count, let connection = connections[index],
                  payload.readableBytes > 0 else { return }
            let done = connection.write(payload)
            gate.track(payload.readableBytes, done)
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
        logger.warning("WebSocket session of \(description) ended: \(error)")
        context.close(promise: nil)
        end()
    }

    private func end() {
        guard !ended else { return }
        ended = true
        switch mode {
        case .exec(let driver, _, _): driver.clientGone()
        case .portForward:
            for connection in connections { connection?.close() }
            connections = []
        }
    }

    // MARK: outbound

    @discardableResult
    private func sendMessage(channel: UInt8, _ bytes: ByteBuffer) -> EventLoopFuture<Void> {
        guard let context, !closing else { return loop.makeFailedFuture(ChannelError.ioOnClosedChannel) }
        var buffer = context.channel.allocator.buffer(capacity: bytes.readableBytes + 1)
        buffer.writeInteger(channel)
        var bytes = bytes
        buffer.writeBuffer(&bytes)
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, data: buffer)), promise: promise)
        return promise.futureResult
    }

    private func closeSession(code: WebSocketErrorCode) {
        guard let context, !closing else { return }
        closing = true
        var data = context.channel.allocator.buffer(capacity: 2)
        data.write(webSocketErrorCode: code)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)))
            .whenComplete { _ in channel.close(promise: nil) }
    }

    // MARK: ExecOutput

    func send(_ stream: ExecOutputStream, _ bytes: ByteBuffer) -> EventLoopFuture<Void> {
        sendMessage(channel: stream == .stdout ? 1 : 2, bytes)
    }

    func finish(_ status: ExecStatus) {
        guard case .exec(_, let jsonStatus, _) = mode else { return }
        let text = jsonStatus ? status.statusJSON : status.statusText
        if !text.isEmpty { sendMessage(channel: 3, ByteBuffer(string: text)) }
        closeSession(code: .normalClosure)
    }
}
