// The hand-over point from the kubelet HTTP server: upgrade negotiation and the pipeline swap.
import EdgedCore
import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket

/// Turns an authorized exec, attach or port-forward request into a SPDY/3.1 or WebSocket streaming session.
public enum StreamingServer {
    /// remotecommand subprotocols over SPDY, most preferred first (the client's order decides, as in kubelet).
    static let spdyExecProtocols = ["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"]
    static let spdyPortForwardProtocols = ["portforward.k8s.io"]
    static let webSocketExecProtocols = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
    static let webSocketPortForwardProtocols = ["portforward.k8s.io", "v4.channel.k8s.io"]
    /// Largest WebSocket message accepted from the client.
    static let maxWebSocketMessage = 1 << 20

    /// Called by B after authentication + authorization, on the channel's event loop, with no more HTTP parts
    /// expected to be handled by B for this connection (B ignores whatever arrives afterwards). Checks the
    /// upgrade headers, negotiates (SPDY/3.1 + X-Stream-Protocol-Version, or WebSocket + Sec-WebSocket-Protocol),
    /// writes the 101 through "http-encoder", swaps the pipeline (removing `httpHandlerNames` and "http-encoder",
    /// adding the session, then removing "http-decoder" so leftover bytes reach the session), and runs the session.
    /// A request that is not a usable upgrade gets a 400 (403 when no subprotocol matches) and the connection closes.
    ///
    /// The handlers named in `httpHandlerNames` must be `RemovableChannelHandler`s.
    public static func start(channel: any Channel, head: HTTPRequestHead, request: StreamingRequest,
                             backend: any KubeletBackend, httpHandlerNames: [String], logger: Logger) {
        channel.eventLoop.assertInEventLoop()
        let what = describe(request)
        let upgrade = head.headers[canonicalForm: "upgrade"].map { $0.lowercased() }
        let connection = head.headers[canonicalForm: "connection"].map { $0.lowercased() }
        guard connection.contains("upgrade") else {
            refuse(channel, .badRequest, "\(what) needs a connection upgrade: send Connection: Upgrade with Upgrade: SPDY/3.1 or websocket", logger: logger)
            return
        }
        if upgrade.contains("spdy/3.1") {
            startSPDY(channel: channel, head: head, request: request, backend: backend, names: httpHandlerNames, logger: logger)
        } else if upgrade.contains("websocket") {
            startWebSocket(channel: channel, head: head, request: request, backend: backend, names: httpHandlerNames, logger: logger)
        } else {
            refuse(channel, .badRequest, "\(what): unsupported upgrade \(upgrade.joined(separator: ", ")) (want SPDY/3.1 or websocket)", logger: logger)
        }
    }

    static func describe(_ request: StreamingRequest) -> String {
        switch request {
        case .exec(let ref, let command, _): return "exec \(command.first ?? "") in \(ref)"
        case .attach(let ref, _): return "attach to \(ref)"
        case .portForward(let ns, let pod, _, _): return "port-forward to pod \(ns)/\(pod)"
        }
    }

    /// Header values split on commas (a list may come as several lines or one).
    static func list(_ headers: HTTPHeaders, _ name: String) -> [String] {
        headers[name].flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters() }.filter { !$0.isEmpty }
    }

    private static func startSPDY(channel: any Channel, head: HTTPRequestHead, request: StreamingRequest,
                                  backend: any KubeletBackend, names: [String], logger: Logger) {
        let what = describe(request)
        let offered = list(head.headers, "X-Stream-Protocol-Version")
        let supported: [String]
        if case .portForward = request { supported = spdyPortForwardProtocols } else { supported = spdyExecProtocols }
        var chosen: String
        if offered.isEmpty {
            chosen = supported.last!  // clients from before negotiation (kubelet falls back the same way)
        } else if let match = offered.first(where: { supported.contains($0) }) {
            chosen = match
        } else {
            var extra = HTTPHeaders()
            for p in supported { extra.add(name: "X-Accepted-Stream-Protocol-Versions", value: p) }
            refuse(channel, .forbidden, "unable to upgrade: unable to negotiate protocol: client supports \(offered), server accepts \(supported)",
                   headers: extra, logger: logger)
            return
        }
        if case .portForward = request { chosen = "portforward.k8s.io" }
        var headers = HTTPHeaders()
        headers.add(name: "Connection", value: "Upgrade")
        headers.add(name: "Upgrade", value: "SPDY/3.1")
        if !offered.isEmpty { headers.add(name: "X-Stream-Protocol-Version", value: chosen) }

        let session = SPDYSession(logger: logger, description: what)
        let application: any SPDYApplication
        var execHandler: SPDYExecHandler?
        switch request {
        case .exec(_, _, let flags), .attach(_, let flags):
            let driver = ExecDriver(eventLoop: channel.eventLoop, request: request, backend: backend, logger: logger)
            let handler = SPDYExecHandler(driver: driver, protocolVersion: chosen, flags: flags, logger: logger)
            execHandler = handler
            application = handler
        case .portForward(let ns, let pod, let uid, _):
            application = SPDYPortForwardHandler(backend: backend, namespace: ns, pod: pod, uid: uid, logger: logger)
        }
        session.application = application  // held by the session until it ends
        do {
            try swap(channel, head: HTTPResponseHead(version: head.version, status: .switchingProtocols, headers: headers),
                     names: names, add: [session])
        } catch {
            logger.warning("\(what): cannot switch the connection to SPDY: \(error)")
            channel.close(promise: nil)
            return
        }
        execHandler?.attach(to: session, eventLoop: channel.eventLoop)
        logger.debug("\(what): SPDY/3.1 session with \(chosen)")
    }

    private static func startWebSocket(channel: any Channel, head: HTTPRequestHead, request: StreamingRequest,
                                       backend: any KubeletBackend, names: [String], logger: Logger) {
        let what = describe(request)
        guard let key = head.headers["Sec-WebSocket-Key"].first?.trimmingCharacters(), !key.isEmpty else {
            refuse(channel, .badRequest, "\(what): WebSocket upgrade without Sec-WebSocket-Key", logger: logger)
            return
        }
        guard head.headers["Sec-WebSocket-Version"].contains("13") else {
            var extra = HTTPHeaders()
            extra.add(name: "Sec-WebSocket-Version", value: "13")
            refuse(channel, .badRequest, "\(what): unsupported WebSocket version (want 13)", headers: extra, logger: logger)
            return
        }
        let offered = list(head.headers, "Sec-WebSocket-Protocol")
        let supported: [String]
        if case .portForward = request { supported = webSocketPortForwardProtocols } else { supported = webSocketExecProtocols }
        var chosen: String?
        if !offered.isEmpty {
            guard let match = offered.first(where: { supported.contains($0) }) else {
                refuse(channel, .badRequest, "\(what): none of the WebSocket subprotocols \(offered) is spoken here (accepted: \(supported.joined(separator: ", ")))",
                       logger: logger)
                return
            }
            chosen = match
        }
        let mode: WebSocketSession.Mode
        switch request {
        case .exec, .attach:
            let driver = ExecDriver(eventLoop: channel.eventLoop, request: request, backend: backend, logger: logger)
            mode = .exec(driver, jsonStatus: chosen != nil, closeSignal: chosen == "v5.channel.k8s.io")
        case .portForward(let ns, let pod, let uid, let ports):
            guard !ports.isEmpty else {
                refuse(channel, .badRequest, "\(what) over WebSocket needs at least one port= query parameter", logger: logger)
                return
            }
            mode = .portForward(backend: backend, namespace: ns, pod: pod, uid: uid, ports: ports)
        }
        var headers = HTTPHeaders()
        headers.add(name: "Connection", value: "Upgrade")
        headers.add(name: "Upgrade", value: "websocket")
        headers.add(name: "Sec-WebSocket-Accept", value: SHA1.webSocketAccept(key: key))
        if let chosen { headers.add(name: "Sec-WebSocket-Protocol", value: chosen) }
        let session = WebSocketSession(mode: mode, eventLoop: channel.eventLoop, logger: logger, description: what)
        do {
            try swap(channel, head: HTTPResponseHead(version: head.version, status: .switchingProtocols, headers: headers),
                     names: names, add: [
                        ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: maxWebSocketMessage)),
                        WebSocketFrameEncoder(),
                        NIOWebSocketFrameAggregator(minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 1 << 12,
                                                    maxAccumulatedFrameSize: maxWebSocketMessage),
                        session,
                     ])
        } catch {
            logger.warning("\(what): cannot switch the connection to WebSocket: \(error)")
            channel.close(promise: nil)
            return
        }
        logger.debug("\(what): WebSocket session with \(chosen ?? "channel.k8s.io")")
    }

    /// Writes the 101, then replaces the HTTP handlers with `add`; the decoder goes last so its leftover bytes
    /// (frames the client sent right behind its request) reach the new handlers.
    private static func swap(_ channel: any Channel, head: HTTPResponseHead, names: [String],
                             add handlers: [any ChannelHandler]) throws {
        let ops = channel.pipeline.syncOperations
        channel.write(HTTPServerResponsePart.head(head), promise: nil)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        for name in names {
            if let ctx = try? ops.context(name: name) { ops.removeHandler(context: ctx, promise: nil) }
        }
        let encoder = try ops.context(name: "http-encoder")
        ops.removeHandler(context: encoder, promise: nil)
        for handler in handlers { try ops.addHandler(handler) }
        let decoder = try ops.context(name: "http-decoder")
        ops.removeHandler(context: decoder, promise: nil)
    }

    /// Answers `status` with a metav1.Status body and closes the connection.
    static func refuse(_ channel: any Channel, _ status: HTTPResponseStatus, _ message: String,
                       headers extra: HTTPHeaders = HTTPHeaders(), logger: Logger) {
        logger.info("streaming request refused (\(status.code)): \(message)")
        let body = JSONValue.object([
            ("kind", .string("Status")), ("apiVersion", .string("v1")), ("metadata", .object([])),
            ("status", .string("Failure")), ("message", .string(message)),
            ("reason", .string(status == .forbidden ? "Forbidden" : "BadRequest")), ("code", .number("\(status.code)")),
        ]).jsonText
        var headers = extra
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: "\(body.utf8.count)")
        headers.add(name: "Connection", value: "close")
        channel.write(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)), promise: nil)
        channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: body))), promise: nil)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { _ in channel.close(promise: nil) }
    }
}

extension Substring {
    fileprivate func trimmingCharacters() -> String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}

extension String {
    fileprivate func trimmingCharacters() -> String { Substring(self).trimmingCharacters() }
}
