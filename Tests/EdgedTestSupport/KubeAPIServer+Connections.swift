// The test API server's open connections, so a test can cut the cloud: close them all at once (stop), or let them
// hang like a blackholed route (the server accepts, then never sends or reads another byte).

import NIOCore
import NIOSSL
import Synchronization

/// Every open connection of one server, and whether the server is blackholed. Thread-safe.
final class KubeConnections: Sendable {
    /// One accepted connection. `stalled` is set while a blackhole is on (or was on when it was accepted) and is
    /// never cleared: a stalled connection only ends by being closed.
    final class Connection: Sendable {
        let channel: Channel
        let stalled = Atomic<Bool>(false)
        /// Set while a slow link is on (or was on when it was accepted): bytes out trickle at `bytesPerSecond`.
        let slowBytesPerSecond = Atomic<Int>(0)
        /// Set while the link answers garbage: the connection gets a few bytes that are not TLS and is closed.
        let garbage = Atomic<Bool>(false)
        init(channel: Channel) { self.channel = channel }

        /// Closes the socket below TLS: no close_notify, no waiting for the peer's (like a killed process).
        func closeAbruptly() -> EventLoopFuture<Void> {
            let channel = self.channel
            return channel.eventLoop.submit {
                if let gate = try? channel.pipeline.syncOperations.context(name: KubeConnectionGate.name) {
                    gate.close(promise: nil)
                } else {
                    channel.close(promise: nil)
                }
            }.flatMap { channel.closeFuture }
        }
    }

    private struct State {
        var blackhole = false
        var slowBytesPerSecond = 0
        var garbage = false
        var open: [ObjectIdentifier: Connection] = [:]
    }
    private let state = Mutex(State())
    /// A serving TLS context that replaces the server's own for new connections (nil: the server's own).
    let servingOverride = Mutex<NIOSSLContext?>(nil)

    /// Tracks a new connection until it closes; it starts stalled while the blackhole is on.
    func register(_ channel: Channel) -> Connection {
        let c = Connection(channel: channel)
        let id = ObjectIdentifier(channel)
        state.withLock { s in
            if s.blackhole { c.stalled.store(true, ordering: .relaxed) }
            c.slowBytesPerSecond.store(s.slowBytesPerSecond, ordering: .relaxed)
            c.garbage.store(s.garbage, ordering: .relaxed)
            s.open[id] = c
        }
        channel.closeFuture.whenComplete { [weak self] _ in
            _ = self?.state.withLock { $0.open.removeValue(forKey: id) }
        }
        return c
    }

    var blackhole: Bool { state.withLock { $0.blackhole } }

    var count: Int { state.withLock { $0.open.count } }

    /// On: every open connection stalls, and so will every new one. Off: the stalled connections are closed
    /// (their clients see the connection drop and reconnect); returns them so the caller may wait for the closes.
    @discardableResult
    func setBlackhole(_ on: Bool) -> [EventLoopFuture<Void>] {
        let stalled: [Connection] = state.withLock { s in
            s.blackhole = on
            if on {
                for c in s.open.values { c.stalled.store(true, ordering: .relaxed) }
                return []
            }
            return s.open.values.filter { $0.stalled.load(ordering: .relaxed) }
        }
        return stalled.map { $0.closeAbruptly() }
    }

    /// On (> 0): every open and new connection sends at most this many bytes per second (the rest waits in a
    /// queue). Off (0): the slowed connections are closed, so their clients reconnect at full speed.
    @discardableResult
    func setSlow(bytesPerSecond: Int) -> [EventLoopFuture<Void>] {
        let slowed: [Connection] = state.withLock { s in
            s.slowBytesPerSecond = bytesPerSecond
            if bytesPerSecond > 0 {
                for c in s.open.values { c.slowBytesPerSecond.store(bytesPerSecond, ordering: .relaxed) }
                return []
            }
            return s.open.values.filter { $0.slowBytesPerSecond.load(ordering: .relaxed) > 0 }
        }
        return slowed.map { $0.closeAbruptly() }
    }

    /// On: open connections are closed and every new one gets a plain-text answer instead of a TLS handshake (as
    /// from a captive portal or a misrouted port), then is closed. Off: new connections are served normally.
    func setGarbage(_ on: Bool) async {
        state.withLock { $0.garbage = on }
        if on { await closeAll() }
    }

    /// Closes every open connection abruptly and waits until they are closed.
    func closeAll() async {
        let all = state.withLock { Array($0.open.values) }
        for c in all { try? await c.closeAbruptly().get() }
    }
}

/// The first handler of a connection (below TLS): while the connection is stalled it drops every byte read and
/// every byte written, so nothing gets through in either direction, the TLS handshake included.
final class KubeConnectionGate: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    static let name = "kube-api-gate"

    private let connection: KubeConnections.Connection

    init(_ connection: KubeConnections.Connection) { self.connection = connection }

    private var stalled: Bool { connection.stalled.load(ordering: .relaxed) }
    private var trickle = ByteBuffer()
    private var trickleTask: RepeatedTask?

    func channelActive(context: ChannelHandlerContext) {
        if connection.garbage.load(ordering: .relaxed) {
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")))
                .whenComplete { _ in context.close(promise: nil) }
            return
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        trickleTask?.cancel()
        trickleTask = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if stalled || connection.garbage.load(ordering: .relaxed) { return }
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if stalled { return }
        context.fireChannelReadComplete()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if stalled {
            // The bytes vanish like packets into a blackhole; the writer is told they were sent.
            promise?.succeed(())
            return
        }
        let rate = connection.slowBytesPerSecond.load(ordering: .relaxed)
        if rate > 0 {
            // Queued and let out a byte at a time; the writer is told they were sent (they are, slowly).
            var bytes = unwrapOutboundIn(data)
            trickle.writeBuffer(&bytes)
            promise?.succeed(())
            startTrickle(context: context, rate: rate)
            return
        }
        context.write(data, promise: promise)
    }

    private func startTrickle(context: ChannelHandlerContext, rate: Int) {
        guard trickleTask == nil else { return }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        trickleTask = context.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: .nanoseconds(1_000_000_000 / Int64(rate))) { _ in
            let (gate, context) = bound.value
            guard let byte = gate.trickle.readSlice(length: 1) else { return }
            context.writeAndFlush(gate.wrapOutboundOut(byte), promise: nil)
        }
    }
}
