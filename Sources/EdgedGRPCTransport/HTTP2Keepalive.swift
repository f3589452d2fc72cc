// HTTP/2 keepalive: a PING every interval on an otherwise quiet connection; no answer in time closes it.

import NIOCore
import NIOHTTP2

/// Sits after NIOHTTP2Handler in a connection's pipeline (which passes stream-0 frames on): sends a PING when
/// nothing was read for `interval` and closes the connection when it is not acknowledged within `timeout`. A dead
/// peer behind NAT is noticed this way; TCP alone can take many minutes.
final class HTTP2Keepalive: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private let interval: TimeAmount
    private let timeout: TimeAmount
    private var lastRead = NIODeadline.now()
    private var pingTimer: Scheduled<Void>?
    private var timeoutTimer: Scheduled<Void>?
    private var started = false
    private var pingCount: UInt64 = 0

    init(interval: Duration, timeout: Duration) {
        self.interval = TimeAmount(interval)
        self.timeout = TimeAmount(timeout)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stop()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stop()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .ping(_, ack: true) = unwrapInboundIn(data).payload {
            timeoutTimer?.cancel()
            timeoutTimer = nil
        }
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // Frames of any stream count as signs of life; only stream 0's reach channelRead here.
        lastRead = .now()
        context.fireChannelReadComplete()
    }

    private func start(_ context: ChannelHandlerContext) {
        guard !started, interval > .zero else { return }
        started = true
        lastRead = .now()
        schedulePing(context, after: interval)
    }

    private func stop() {
        pingTimer?.cancel()
        timeoutTimer?.cancel()
        pingTimer = nil
        timeoutTimer = nil
    }

    private func schedulePing(_ context: ChannelHandlerContext, after delay: TimeAmount) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        pingTimer = context.eventLoop.scheduleTask(in: delay) {
            let (handler, context) = bound.value
            handler.tick(context)
        }
    }

    private func tick(_ context: ChannelHandlerContext) {
        let idle = NIODeadline.now() - lastRead
        if idle < interval, timeoutTimer == nil {
            schedulePing(context, after: interval - idle)
            return
        }
        if timeoutTimer == nil {
            pingCount &+= 1
            let ping = HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(withInteger: pingCount), ack: false))
            context.writeAndFlush(wrapOutboundOut(ping), promise: nil)
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            timeoutTimer = context.eventLoop.scheduleTask(in: timeout) {
                let (handler, context) = bound.value
                handler.timeoutTimer = nil
                context.pipeline.fireErrorCaught(KeepaliveTimeout(timeout: handler.timeout))
                context.close(promise: nil)
            }
        }
        schedulePing(context, after: interval)
    }
}

/// The peer did not answer a keepalive PING in time.
struct KeepaliveTimeout: Error, CustomStringConvertible {
    let timeout: TimeAmount
    var description: String {
        "the peer did not answer a keepalive ping within \(timeout.nanoseconds / 1_000_000) ms; connection closed"
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
