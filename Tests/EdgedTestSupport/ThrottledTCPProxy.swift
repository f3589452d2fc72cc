// A loopback TCP forwarder whose answers (target → client) trickle at a fixed rate: it makes a registry pull
// last long enough for a test to land a kill inside it on a fast or a loaded machine alike.

import NIOCore
import NIOPosix

/// Listens on 127.0.0.1 (a free port) and forwards each connection to `127.0.0.1:targetPort`; bytes from the
/// target reach the client at no more than `bytesPerSecond`. `stop()` closes everything.
public final class ThrottledTCPProxy: @unchecked Sendable {
    public let port: Int
    public var host: String { "127.0.0.1:\(port)" }
    private let group: MultiThreadedEventLoopGroup
    private let listener: Channel

    public init(targetPort: Int, bytesPerSecond: Int) throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.group = group
        do {
            listener = try ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.autoRead, value: false)
                .childChannelOption(.maxMessagesPerRead, value: 1)
                .childChannelInitializer { client in
                    ClientBootstrap(group: client.eventLoop)
                        .channelOption(.autoRead, value: false)
                        .channelOption(.maxMessagesPerRead, value: 1)
                        .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 16 * 1024))
                        .channelInitializer { target in
                            target.pipeline.addHandler(ProxyHalf(peer: client, bytesPerSecond: bytesPerSecond))
                        }
                        .connect(host: "127.0.0.1", port: targetPort)
                        .flatMap { target in client.pipeline.addHandler(ProxyHalf(peer: target, bytesPerSecond: nil)) }
                }
                .bind(host: "127.0.0.1", port: 0).wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw error
        }
        port = listener.localAddress?.port ?? 0
    }

    public func stop() {
        try? listener.close().wait()
        try? group.syncShutdownGracefully()
    }
}

/// One direction: what this channel reads is written to `peer`; the next read waits until the peer took it and,
/// when throttled, until the bytes' share of a second has passed.
private final class ProxyHalf: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    private let peer: Channel
    private let bytesPerSecond: Int?

    init(peer: Channel, bytesPerSecond: Int?) {
        self.peer = peer
        self.bytesPerSecond = bytesPerSecond
    }

    func channelActive(context: ChannelHandlerContext) {
        context.read()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let channel = context.channel
        let pause = bytesPerSecond.map { TimeAmount.nanoseconds(Int64(buffer.readableBytes) * 1_000_000_000 / Int64(max($0, 1))) }
        peer.writeAndFlush(buffer).whenComplete { result in
            guard case .success = result else { channel.close(promise: nil); return }
            if let pause {
                channel.eventLoop.scheduleTask(in: pause) { channel.read() }
            } else {
                channel.read()
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        peer.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
