// One client connection of a HubServer: read a request (body buffered up to the limit), hand it to the handler,
// stream its response, repeat while the connection is kept alive.

import NIOCore
import NIOHTTP1
import Synchronization

extension HubServer {
    typealias Inbound = NIOAsyncChannelInboundStream<HTTPServerRequestPart>.AsyncIterator

    /// Serves one connection until it closes; returns true when the server is stopping and this was the last one.
    func serve(_ connection: Connection) async -> Bool {
        let channel = connection.channel
        guard connections.add(channel) else {
            try? await connection.executeThenClose { _ in }
            return false
        }
        let slot = HandlerSlot()
        // One callback per connection (not per request): a client that goes away cancels the handler answering it.
        channel.closeFuture.whenComplete { _ in slot.channelClosed() }
        let remote = channel.remoteAddress.flatMap { address in
            address.ipAddress.map { ip in address.port.map { "\(ip):\($0)" } ?? ip }
        }
        do {
            try await connection.executeThenClose { inbound in
                var parts = inbound.makeAsyncIterator()
                while let part = try await parts.next() {
                    // Anything but a head here is the rest of a request already answered (413): skip it.
                    guard case .head(let head) = part else { continue }
                    connections.setBusy(channel, true)
                    let keepAlive = try await exchange(head, parts: &parts, channel: channel, remote: remote, slot: slot)
                    let stopping = connections.setBusy(channel, false)
                    if !keepAlive || stopping { return }
                }
            }
        } catch {
            logger.trace("connection ended", metadata: ["remote": "\(remote ?? "?")", "error": "\(error)"])
        }
        return connections.remove(channel)
    }

    /// Reads the rest of one request and answers it; returns whether the connection may carry another.
    private func exchange(_ head: HTTPRequestHead, parts: inout Inbound, channel: any Channel, remote: String?,
                          slot: HandlerSlot) async throws -> Bool {
        let what = "\(head.method.rawValue) \(head.uri)"
        if head.method == .CONNECT {
            try await writeStatus(channel, version: head.version, code: 405, reason: "MethodNotAllowed",
                                  message: "the edge hub does not support CONNECT (\(head.uri)); send API requests to it directly",
                                  keepAlive: false)
            return false
        }
        let limit = Self.maxRequestBytes
        if let length = head.headers.first(name: "content-length").flatMap({ Int($0) }), length > limit {
            try await tooLarge(what, bytes: length, version: head.version, channel: channel, parts: &parts)
            return false
        }
        if head.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" }) {
            try await channel.writeAndFlush(HTTPServerResponsePart.head(HTTPResponseHead(version: head.version, status: .continue)))
        }
        var body: [UInt8] = []
        var complete = false
        reading: while let part = try await parts.next() {
            switch part {
            case .head:
                return false
            case .body(let chunk):
                if body.count + chunk.readableBytes > limit {
                    try await tooLarge(what, bytes: nil, version: head.version, channel: channel, parts: &parts)
                    return false
                }
                body.append(contentsOf: chunk.readableBytesView)
            case .end:
                complete = true
                break reading
            }
        }
        guard complete else { return false }
        let request = HubHTTPRequest(method: head.method.rawValue, target: head.uri,
                                     headers: head.headers.map { ($0.name, $0.value) }, body: body,
                                     remoteAddress: remote, isTLS: tls != nil)
        if request.isUpgrade {
            await upgrade(request, version: head.version, channel: channel)
            return false
        }
        let writer = ResponseWriter(channel: channel, version: head.version,
                                    isHead: head.method == .HEAD, keepAliveWanted: head.isKeepAlive,
                                    what: what, connections: connections)
        let handler = self.handler
        let task = Task { await handler.handle(request, writer) }
        slot.set(task)
        await withTaskCancellationHandler {
            await task.value
        } onCancel: {
            task.cancel()
        }
        slot.set(nil)
        // The decoder stops at anything that looks like an upgrade: no further request can follow it.
        let mayContinue = try await writer.complete()
        return mayContinue && !head.headers.contains(name: "upgrade")
    }

    /// Answers 413 and reads (and drops) what the client still sends, so that it sees the answer instead of a
    /// reset; the connection is closed after at most two seconds.
    private func tooLarge(_ what: String, bytes: Int?, version: HTTPVersion, channel: any Channel,
                          parts: inout Inbound) async throws {
        let size = bytes.map { "of \($0) bytes " } ?? ""
        let message = "the request body \(size)of \(what) is larger than the \(Self.maxRequestBytes) bytes the edge hub accepts"
        logger.notice("request body too large", metadata: ["request": "\(what)"])
        try await writeStatus(channel, version: version, code: 413, reason: "RequestEntityTooLarge", message: message,
                              keepAlive: false)
        channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
        while let part = try await parts.next() {
            if case .end = part { break }
        }
    }

    /// Writes a whole kube-style Status error response.
    func writeStatus(_ channel: any Channel, version: HTTPVersion, code: Int, reason: String, message: String,
                     keepAlive: Bool) async throws {
        let body = hubStatusBody(code: code, reason: reason, message: message)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.count))
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let status = HTTPResponseStatus(statusCode: code)
        channel.write(HTTPServerResponsePart.head(HTTPResponseHead(version: version, status: status, headers: headers)), promise: nil)
        channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil)
        try await channel.writeAndFlush(HTTPServerResponsePart.end(nil))
    }
}

/// The task answering the current request of a connection, cancelled when the connection closes.
final class HandlerSlot: Sendable {
    private let state = Mutex<(task: Task<Void, Never>?, closed: Bool)>((nil, false))

    func set(_ task: Task<Void, Never>?) {
        let cancel = state.withLock { s -> Bool in
            s.task = task
            return s.closed
        }
        if cancel { task?.cancel() }
    }

    func channelClosed() {
        let task = state.withLock { s -> Task<Void, Never>? in
            s.closed = true
            return s.task
        }
        task?.cancel()
    }
}

/// The `HubResponseWriter` of one request.
///
/// Writes go to the channel directly, each returning a future that completes once NIO handed the bytes to the
/// socket. At most `window` bytes may be unconfirmed: past that, `writeBody` waits for the socket, so a client
/// that does not read holds the handler back (the socket's buffers plus one window, whatever the handler's pace).
final class ResponseWriter: HubResponseWriter {
    static let window = 256 << 10

    private enum Phase {
        case idle
        case streaming
        case finished
        /// Cut short (fewer bytes than the Content-Length, or a failed write): the connection must close.
        case broken
    }

    private struct State {
        var phase = Phase.idle
        var declaredLength: Int?
        var written = 0
        var keepAlive = false
        var unconfirmed = 0
    }

    private let channel: any Channel
    private let version: HTTPVersion
    private let isHead: Bool
    private let keepAliveWanted: Bool
    private let what: String
    private let connections: ConnectionRegistry
    private let state = Mutex(State())

    /// Hop-by-hop headers the server sets itself.
    private static let serverOwned: Set<String> = ["connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"]

    init(channel: any Channel, version: HTTPVersion, isHead: Bool, keepAliveWanted: Bool, what: String,
         connections: ConnectionRegistry) {
        self.channel = channel
        self.version = version
        self.isHead = isHead
        self.keepAliveWanted = keepAliveWanted
        self.what = what
        self.connections = connections
    }

    var clientClosed: Bool { !channel.isActive }

    /// HTTP/1.1 or later: chunked encoding and keep-alive by default.
    private var isHTTP11: Bool { version.major > 1 || (version.major == 1 && version.minor >= 1) }

    func writeHead(status: Int, headers: [(String, String)]) async throws {
        var out = HTTPHeaders()
        var length: Int?
        var handlerSaysClose = false
        for (name, value) in headers {
            let lower = name.lowercased()
            if Self.serverOwned.contains(lower) {
                if lower == "connection", value.lowercased().contains("close") { handlerSaysClose = true }
                continue
            }
            if lower == "content-length" {
                guard let n = Int(hubTrimmed(value[...])), n >= 0 else {
                    throw HubServerError(.misuse, "the response to \(what) has an invalid Content-Length \"\(value)\"")
                }
                length = n
            }
            out.add(name: name, value: value)
        }
        let bodyless = isHead || status == 204 || status == 304 || (100..<200).contains(status)
        let keepAlive = keepAliveWanted && !handlerSaysClose && !connections.isStopping
            && (length != nil || bodyless || isHTTP11)
        if !keepAlive {
            out.add(name: "Connection", value: "close")
        } else if !isHTTP11 {
            out.add(name: "Connection", value: "keep-alive")
        }
        try state.withLock { s throws(HubServerError) in
            guard s.phase == .idle else {
                throw HubServerError(.misuse, "the response to \(what) already has its head; a second one is not sent")
            }
            s.phase = .streaming
            s.declaredLength = isHead ? nil : length
            s.keepAlive = keepAlive
        }
        try await send(.head(HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: status), headers: out)),
                       bytes: 256)
    }

    func writeBody(_ bytes: [UInt8]) async throws {
        let send = try state.withLock { s throws(HubServerError) -> Bool in
            guard s.phase == .streaming else {
                throw HubServerError(.misuse, s.phase == .idle ? "the response to \(what) has a body before its head"
                                                               : "the response to \(what) is already complete")
            }
            if let declared = s.declaredLength, s.written + bytes.count > declared {
                s.phase = .broken
                throw HubServerError(.misuse, "the response to \(what) is longer than the \(declared) bytes its Content-Length declared")
            }
            s.written += bytes.count
            return !bytes.isEmpty && !isHead
        }
        guard send else { return }
        try await self.send(.body(.byteBuffer(ByteBuffer(bytes: bytes))), bytes: bytes.count)
    }

    func finish() async throws {
        try state.withLock { s throws(HubServerError) in
            guard s.phase == .streaming else {
                throw HubServerError(.misuse, s.phase == .idle ? "the response to \(what) is finished before its head"
                                                               : "the response to \(what) is already complete")
            }
            if let declared = s.declaredLength, s.written < declared {
                s.phase = .broken
                throw HubServerError(.misuse, "the response to \(what) ends after \(s.written) of the \(declared) bytes its Content-Length declared; the connection is closed")
            }
            s.phase = .finished
        }
        try await send(.end(nil), bytes: 0, confirm: true)
    }

    /// After the handler returned: answers 500 for a handler that wrote nothing; returns whether the connection
    /// may carry another request.
    func complete() async throws -> Bool {
        let (phase, keepAlive) = state.withLock { ($0.phase, $0.keepAlive) }
        switch phase {
        case .finished:
            return keepAlive
        case .streaming, .broken:
            return false
        case .idle:
            guard channel.isActive, !Task.isCancelled else { return false }
            let body = hubStatusBody(code: 500, reason: "InternalError",
                                     message: "the edge hub wrote no answer to \(what); this is a bug in edged, please report it")
            try await writeHead(status: 500, headers: [("Content-Type", "application/json"), ("Content-Length", String(body.count))])
            try await writeBody(body)
            try await finish()
            return state.withLock { $0.keepAlive }
        }
    }

    /// Writes and flushes `part`; waits for the socket when `confirm` or when more than `window` bytes are unconfirmed.
    /// A task cancelled while waiting (shutdown grace over) closes the connection, which ends the wait.
    private func send(_ part: HTTPServerResponsePart, bytes: Int, confirm: Bool = false) async throws {
        guard channel.isActive else {
            state.withLock { $0.phase = .broken }
            throw HubServerError(.clientClosed, "the client closed the connection before the response to \(what) was complete")
        }
        let written = channel.eventLoop.makePromise(of: Void.self)
        channel.writeAndFlush(part, promise: written)
        let wait = state.withLock { s -> Bool in
            s.unconfirmed += bytes
            guard confirm || s.unconfirmed >= Self.window else { return false }
            s.unconfirmed = 0
            return true
        }
        guard wait else { return }
        let channel = self.channel
        do {
            try await withTaskCancellationHandler {
                try await written.futureResult.get()
            } onCancel: {
                channel.close(promise: nil)
            }
        } catch {
            state.withLock { $0.phase = .broken }
            if Task.isCancelled { throw CancellationError() }
            throw HubServerError(.clientClosed, "the client closed the connection before the response to \(what) was complete")
        }
    }
}
