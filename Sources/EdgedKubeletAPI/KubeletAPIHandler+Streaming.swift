// The hand-over of exec, attach and port-forward connections to the streaming server (Streaming/).

import NIOCore
import NIOHTTP1

extension KubeletAPIHandler {
    /// Hands an authenticated and authorized streaming request to the streaming server, on the channel's event loop;
    /// this server reads nothing more from the connection. Open sessions are counted on /metrics until the
    /// connection closes.
    func startStreaming(channel: any Channel, head: HTTPRequestHead, request: StreamingRequest, httpHandlerNames: [String]) {
        let kind: String
        switch request {
        case .exec: kind = "exec"
        case .attach: kind = "attach"
        case .portForward: kind = "portforward"
        }
        metrics.streamOpened(kind)
        let metrics = self.metrics
        channel.closeFuture.whenComplete { _ in metrics.streamClosed(kind) }
        streamingServerStart(channel: channel, head: head, request: request, httpHandlerNames: httpHandlerNames)
    }

    /// The one call into the streaming server.
    private func streamingServerStart(channel: any Channel, head: HTTPRequestHead, request: StreamingRequest,
                                      httpHandlerNames: [String]) {
        StreamingServer.start(channel: channel, head: head, request: request, backend: backend,
                              httpHandlerNames: httpHandlerNames, logger: logger)
    }
}
