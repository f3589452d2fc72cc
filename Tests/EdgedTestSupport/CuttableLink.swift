// One node's uplink, for outage tests: a loopback TCP forwarder between edged and the API server that can be cut
// while everybody else (kubectl, a cloud-side controller, the API server's own controllers) keeps talking to the API
// server directly. Cut, it behaves like a dead uplink: every open and new connection is accepted but silently drops
// every byte both ways (a TLS handshake hangs, a request times out); restored, the stalled connections are closed so
// their clients reconnect, as after a link flap.

import NIOCore
import NIOPosix
import Synchronization

/// Listens on 127.0.0.1 (a free port) and forwards each connection to `127.0.0.1:targetPort`.
public final class CuttableLink: Sendable {
    public let port: Int
    public var host: String { "127.0.0.1:\(port)" }
    private let group: MultiThreadedEventLoopGroup
    private let listener: Channel
    private let state: LinkShared

    public init(targetPort: Int) throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let state = LinkShared()
        self.group = group
        self.state = state
        do {
            listener = try ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.autoRead, value: false)
                .childChannelInitializer { client in
                    let pair = LinkPair(client: client)
                    let cut = state.value.withLock { s in
                        s.pairs[ObjectIdentifier(pair)] = pair
                        return s.cut
                    }
                    pair.stalled.withLock { $0 = cut }
                    client.closeFuture.whenComplete { _ in
                        state.value.withLock { _ = $0.pairs.removeValue(forKey: ObjectIdentifier(pair)) }
                    }
                    return ClientBootstrap(group: client.eventLoop)
                        .channelOption(.autoRead, value: false)
                        .channelInitializer { target in
                            target.pipeline.addHandler(LinkHalf(pair: pair, peer: client))
                        }
                        .connect(host: "127.0.0.1", port: targetPort)
                        .flatMap { target in
                            pair.target.withLock { $0 = target }
                            target.closeFuture.whenComplete { _ in client.close(promise: nil) }
                            return client.pipeline.addHandler(LinkHalf(pair: pair, peer: target))
                        }
                }
                .bind(host: "127.0.0.1", port: 0).wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw error
        }
        port = listener.localAddress?.port ?? 0
    }

    /// Cut (true): every connection, open or new, drops all bytes. Restored (false): new connections work; the
    /// stalled ones are closed so that their clients reconnect, or with `keepStalledDead` stay silent for good, as
    /// connections through a firewall that dropped packets for minutes do until TCP gives up on them (the client
    /// sees no reset and must notice by itself).
    public func setCut(_ cut: Bool, keepStalledDead: Bool = false) {
        let pairs: [LinkPair] = state.value.withLock { s in
            s.cut = cut
            return Array(s.pairs.values)
        }
        for pair in pairs {
            if cut {
                pair.stalled.withLock { $0 = true }
            } else if pair.stalled.withLock({ $0 }), !keepStalledDead {
                pair.closeBoth()
            }
        }
    }

    public var isCut: Bool { state.value.withLock { $0.cut } }

    public func stop() {
        try? listener.close().wait()
        for pair in state.value.withLock({ Array($0.pairs.values) }) { pair.closeBoth() }
        try? group.syncShutdownGracefully()
    }
}

private final class LinkShared: Sendable {
    let value = Mutex(LinkState())
}

private struct LinkState {
    var cut = false
    var pairs: [ObjectIdentifier: LinkPair] = [:]
}

/// The two channels of one forwarded connection.
private final class LinkPair: Sendable {
    let client: Channel
    let target = Mutex<Channel?>(nil)
    let stalled = Mutex(false)

    init(client: Channel) { self.client = client }

    func closeBoth() {
        client.close(mode: .all, promise: nil)
        target.withLock { $0 }?.close(mode: .all, promise: nil)
    }
}

/// One direction: what this channel reads goes to `peer` unless the link is cut (then it is dropped); the next
/// read waits until the peer took the bytes.
private final class LinkHalf: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    private let pair: LinkPair
    private let peer: Channel

    init(pair: LinkPair, peer: Channel) {
        self.pair = pair
        self.peer = peer
    }

    func channelActive(context: ChannelHandlerContext) {
        context.read()
        context.fireChannelActive()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { context.read() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        if pair.stalled.withLock({ $0 }) {
            context.read()
            return
        }
        let channel = context.channel
        peer.writeAndFlush(buffer).whenComplete { result in
            switch result {
            case .success: channel.read()
            case .failure: channel.close(promise: nil)
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        peer.close(promise: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
