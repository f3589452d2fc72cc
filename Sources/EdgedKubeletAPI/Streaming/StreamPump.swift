// Moves bytes between a NIO channel wrapped around a process pipe, pty or pod socket and a streaming session.
import NIOCore

/// Sits last in a pipe or socket channel: hands each read to `onData` and asks for the next read only when the
/// previous chunks were written on (their futures completed), so a slow client slows the process, not memory.
/// `onEnd` is told once when the input ends (EOF, a pty's EIO when its last writer exits, half-close, close).
///
/// Confined to its channel's event loop, which is the session's event loop too.
final class StreamPump: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let onData: (ByteBuffer) -> EventLoopFuture<Void>
    private let onEnd: () -> Void
    private var pending = 0
    private var readWanted = false
    private var ended = false
    private var channel: Channel?

    init(onData: @escaping (ByteBuffer) -> EventLoopFuture<Void>, onEnd: @escaping () -> Void) {
        self.onData = onData
        self.onEnd = onEnd
    }

    func handlerAdded(context: ChannelHandlerContext) { channel = context.channel }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard !ended, buffer.readableBytes > 0 else { return }
        pending += 1
        onData(buffer).whenComplete { [self] _ in
            pending -= 1
            if pending == 0, readWanted {
                readWanted = false
                channel?.read()
            }
        }
    }

    func read(context: ChannelHandlerContext) {
        if pending > 0 { readWanted = true } else { context.read() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, e == .inputClosed { end() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        end()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // A pty master reads EIO once the process side is closed: that is its end of file.
        end()
        context.close(promise: nil)
    }

    private func end() {
        guard !ended else { return }
        ended = true
        onEnd()
    }
}

/// Holds back a session channel's reads while too many bytes it delivered are still being written to their
/// targets (for clients that ignore flow control), and lets them go again once those writes drain.
final class ReadGate: @unchecked Sendable {
    private var inFlight = 0
    private var readWanted = false
    private let limit: Int
    var channel: Channel?

    init(limit: Int = 4 << 20) { self.limit = limit }

    /// Call from the handler's `read`: true when the read may go on now.
    func allowRead() -> Bool {
        if inFlight > limit { readWanted = true; return false }
        return true
    }

    /// Tracks `bytes` until `future` completes.
    func track(_ bytes: Int, _ future: EventLoopFuture<Void>) {
        inFlight += bytes
        future.whenComplete { [self] _ in
            inFlight -= bytes
            if inFlight <= limit, readWanted {
                readWanted = false
                channel?.read()
            }
        }
    }
}
