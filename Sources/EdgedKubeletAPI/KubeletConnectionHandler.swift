// The last handler of a kubelet API connection: it collects requests and runs them one at a time in a task.

import Logging
import NIOCore
import NIOHTTP1
import NIOSSL

/// How a request left its connection.
enum KubeletOutcome: Sendable {
    /// Answered; the next request may follow on this connection.
    case keepAlive
    /// Answered (or the client went away); close the connection.
    case close
    /// An authorized exec, attach or port-forward: the streaming server takes the connection over.
    case handOver(StreamingRequest)
}

/// Reads requests off "http-decoder" and answers them through `KubeletAPIHandler`, one at a time (requests that
/// arrive meanwhile wait in order). The caller's client certificate, if any, is read once from the TLS handler.
/// When the connection closes, the request in progress (a followed log) is cancelled.
final class KubeletConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart

    /// Its name in the pipeline (given to the streaming server, which removes it when it takes over).
    static let name = "kubelet-http"
    /// Requests queued behind the one being answered, at most (more is a misbehaving client: closed).
    static let maxQueuedParts = 256

    private let api: KubeletAPIHandler
    private var context: ChannelHandlerContext?
    private var head: HTTPRequestHead?
    private var queued: CircularBuffer<HTTPServerRequestPart> = []
    private var busy = false
    private var handedOver = false
    private var peer: KubeletPeer?
    private var task: Task<Void, Never>?

    init(api: KubeletAPIHandler) {
        self.api = api
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !handedOver else { return }
        let part = unwrapInboundIn(data)
        if busy {
            guard queued.count < Self.maxQueuedParts else {
                context.close(promise: nil)
                return
            }
            queued.append(part)
            return
        }
        process(part, context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        task?.cancel()
        task = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A request that does not parse, a TLS failure, a reset: nothing sensible can be answered.
        if !handedOver { api.logger.debug("kubelet API connection error", metadata: ["error": "\(error)"]) }
        context.close(promise: nil)
    }

    private func process(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let h):
            head = h
        case .body:
            break  // the kubelet API takes no request bodies
        case .end:
            guard let request = head else { return }
            head = nil
            busy = true
            let peer = peerIdentity(context)
            let channel = context.channel
            let api = self.api
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            task = Task {
                let outcome = await api.respond(to: request, peer: peer, channel: channel)
                channel.eventLoop.execute {
                    bound.value.finished(request, outcome)
                }
            }
        }
    }

    private func finished(_ request: HTTPRequestHead, _ outcome: KubeletOutcome) {
        task = nil
        busy = false
        guard let context else { return }
        switch outcome {
        case .keepAlive:
            while !busy, !handedOver, let part = queued.popFirst() {
                process(part, context: context)
            }
        case .close:
            queued.removeAll()
            context.close(promise: nil)
        case .handOver(let streaming):
            handedOver = true
            queued.removeAll()
            api.startStreaming(channel: context.channel, head: request, request: streaming,
                               httpHandlerNames: [Self.name])
        }
    }

    /// The caller's client certificate, read from the TLS handler once per connection.
    private func peerIdentity(_ context: ChannelHandlerContext) -> KubeletPeer {
        if let peer { return peer }
        let result: KubeletPeer
        if let tls = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
           let certificate = tls.peerCertificate {
            result = ServingTLS.user(of: certificate).map(KubeletPeer.certificate) ?? .unreadableCertificate
        } else {
            result = .none
        }
        peer = result
        return result
    }
}

/// What the TLS handshake says about the caller.
enum KubeletPeer: Sendable {
    /// No client certificate.
    case none
    /// A certificate verified against the cluster CA, for this user.
    case certificate(KubeletUser)
    /// A verified certificate without a usable subject (no CN).
    case unreadableCertificate
}
