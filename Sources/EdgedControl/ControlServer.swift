// The control API server: HTTP/1.1 + JSON on a Unix socket, answering from a ControlBackend.

import EdgedCore
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Serves the local control API (what edgectl talks to) on a Unix socket.
///
/// `run()` binds the socket and serves until the task is cancelled or `shutdown()` is called; then it stops
/// accepting, ends open log streams and removes the socket file. The socket is created root-only (0600), or
/// 0660 for `groupID`; a stale socket file left by a crashed edged is removed, but if another edged answers on it
/// `run()` throws `ControlServerError` "edged is already running (pid N) on SOCKET".
public final class ControlServer: Sendable {
    public struct Configuration: Sendable {
        public static let defaultSocketPath = "/run/edged/edged.sock"
        public var socketPath: String
        /// A group allowed to use the socket besides root; nil = root only.
        public var groupID: UInt32?
        /// Largest request body accepted (import/pull requests are small JSON documents).
        public var maxBodyBytes: Int
        /// How often `logs?follow=true` looks for new lines.
        public var logPollInterval: Duration
        /// A listening Unix stream socket handed over by systemd (edged.socket, LISTEN_FDS): served as it is, never
        /// bound, chmod'ed or removed here (the socket unit owns the file and its mode); nil = bind `socketPath`.
        public var inheritedListener: Int32?

        public init(socketPath: String = Configuration.defaultSocketPath, groupID: UInt32? = nil,
                    maxBodyBytes: Int = 1 << 20, logPollInterval: Duration = .milliseconds(150)) {
            self.socketPath = socketPath
            self.groupID = groupID
            self.maxBodyBytes = maxBodyBytes
            self.logPollInterval = logPollInterval
        }
    }

    private enum State {
        case idle
        case running(Channel)
        case stopped
    }

    public let configuration: Configuration
    private let backend: any ControlBackend
    private let group: any EventLoopGroup
    private let state = Mutex<State>(.idle)

    public init(configuration: Configuration = Configuration(), backend: any ControlBackend,
                eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.configuration = configuration
        self.backend = backend
        self.group = eventLoopGroup
    }

    private typealias Connection = NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>

    /// The listener's bootstrap, for a passed socket and for one bound here alike.
    private var bootstrap: ServerBootstrap { ServerBootstrap(group: group).serverChannelOption(.backlog, value: 64) }

    /// Each accepted connection: HTTP/1.1 server pipeline, wrapped for async iteration.
    private static func connection(_ channel: any Channel) -> EventLoopFuture<Connection> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
            return try Connection(wrappingChannelSynchronously: channel)
        }
    }

    /// Binds and serves until cancelled or shut down.
    /// - Throws: `ControlServerError` when the socket cannot be set up (already running, not a socket, I/O).
    public func run() async throws {
        let path = configuration.socketPath
        if let fd = configuration.inheritedListener {
            let server: NIOAsyncChannel<Connection, Never>
            do {
                server = try await bootstrap.bind(fd) { ControlServer.connection($0) }
            } catch {
                throw ControlServerError(kind: .io, socketPath: path,
                                         message: "cannot serve the socket systemd passed for \(path) (fd \(fd)): \(error); check edged.socket (systemctl status edged.socket)")
            }
            try await serve(listener: server)
            return
        }
        try ControlSocket.prepare(path: path)
        // Bind at a temporary name, set the permissions, then rename into place: the socket is never reachable
        // with looser permissions, and it only appears once it is ready.
        let bindPath = "\(path).\(getpid()).tmp"
        unlink(bindPath)
        let server: NIOAsyncChannel<Connection, Never>
        do {
            server = try await bootstrap.bind(unixDomainSocketPath: bindPath) { ControlServer.connection($0) }
        } catch {
            throw ControlServerError(kind: .io, socketPath: path, message: "cannot listen on \(path): \(error)")
        }
        do {
            try ControlSocket.restrict(path: bindPath, groupID: configuration.groupID)
            guard rename(bindPath, path) == 0 else {
                throw ControlServerError(kind: .io, socketPath: path, message: "cannot create \(path): \(ControlSocket.errnoText())")
            }
        } catch {
            unlink(bindPath)
            try? await server.executeThenClose { _ in }
            throw error
        }
        let inode = ControlSocket.inode(of: path)
        defer {
            // Remove the socket file only if it is still ours.
            if let inode, ControlSocket.inode(of: path) == inode { unlink(path) }
        }
        try await serve(listener: server)
    }

    /// Accepts and serves connections on `server` until cancelled or shut down.
    private func serve(listener server: NIOAsyncChannel<Connection, Never>) async throws {
        let proceed = state.withLock { state -> Bool in
            if case .stopped = state { return false }
            state = .running(server.channel)
            return true
        }
        guard proceed else {
            try? await server.executeThenClose { _ in }
            return
        }
        // The accept loop runs in its own task so that cancelling `run()` does not abandon connections already
        // accepted (each must be closed through its executeThenClose): cancellation closes the listening channel,
        // the loop drains what was accepted, then ends. A discarding group: a plain task group keeps every finished
        // child until it is awaited, which here was never, so each request's task (~8 KB with its frames and task
        // locals) stayed in memory for the life of the daemon: `edgectl status` once a second grew edged by 30 MB a
        // hour (issue 17's churn runs, seen with heaptrack).
        let acceptLoop = Task {
            try await server.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { tasks in
                    var stopping = false
                    do {
                        for try await connection in inbound {
                            if !stopping, case .stopped = self.state.withLock({ $0 }) {
                                stopping = true
                                tasks.cancelAll()
                            }
                            tasks.addTask { await self.serve(connection) }
                        }
                    } catch {
                        // The listening channel closed under us (shutdown): not an error.
                    }
                    tasks.cancelAll()
                }
            }
        }
        try await withTaskCancellationHandler {
            try await acceptLoop.value
        } onCancel: {
            self.shutdown()
        }
    }

    /// Stops accepting connections and ends open requests; `run()` then returns.
    public func shutdown() {
        let channel = state.withLock { state -> Channel? in
            defer { state = .stopped }
            if case .running(let channel) = state { return channel }
            return nil
        }
        guard let channel else { return }
        // Stop accepting first, and close a moment later: a connection accepted just before the close is still
        // handed to the accept loop (and closed properly) instead of being dropped half set up.
        channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in
            channel.eventLoop.scheduleTask(in: .milliseconds(20)) { channel.close(promise: nil) }
        }
    }

    // MARK: - Connections

    private func serve(_ connection: Connection) async {
        let channel = connection.channel
        try? await connection.executeThenClose { inbound, outbound in
            var head: HTTPRequestHead?
            var body = ByteBuffer()
            for try await part in inbound {
                switch part {
                case .head(let h):
                    head = h
                    body.clear()
                case .body(var chunk):
                    if body.readableBytes + chunk.readableBytes > configuration.maxBodyBytes {
                        try await writeJSON(outbound, status: .payloadTooLarge,
                                            ControlErrorBody(error: "request body larger than \(configuration.maxBodyBytes) bytes"),
                                            keepAlive: false)
                        return
                    }
                    body.writeBuffer(&chunk)
                case .end:
                    guard let request = head else { return }
                    let keepAlive = try await respond(to: request, body: body, outbound: outbound, channel: channel)
                    if !keepAlive || !request.isKeepAlive { return }
                    head = nil
                }
            }
        }
    }

    /// Answers one request; returns whether the connection may serve another.
    private func respond(to head: HTTPRequestHead, body: ByteBuffer, outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>,
                         channel: any Channel) async throws -> Bool {
        let keepAlive = head.isKeepAlive
        do {
            let route = try ControlRoute.parse(method: head.method.rawValue, uri: head.uri)
            switch route {
            case .status:
                try await writeJSON(outbound, status: .ok, await backend.status(), keepAlive: keepAlive)
            case .pods:
                try await writeJSON(outbound, status: .ok, await backend.pods(), keepAlive: keepAlive)
            case .images:
                try await writeJSON(outbound, status: .ok, await backend.images(), keepAlive: keepAlive)
            case .importImage:
                let request = try decodeBody(body)
                guard let path = request.path, !path.isEmpty else { throw ControlError.badRequest("missing \"path\" in the request body") }
                try await writeJSON(outbound, status: .ok, try await backend.importImage(path: path), keepAlive: keepAlive)
            case .pullImage:
                let request = try decodeBody(body)
                guard let reference = request.reference, !reference.isEmpty else {
                    throw ControlError.badRequest("missing \"reference\" in the request body")
                }
                try await writeJSON(outbound, status: .ok, try await backend.pullImage(reference: reference), keepAlive: keepAlive)
            case .removeImage(let reference):
                try await backend.removeImage(reference: reference)
                try await writeJSON(outbound, status: .ok, PruneResponse(removed: [reference]), keepAlive: keepAlive)
            case .pruneImages:
                try await writeJSON(outbound, status: .ok, PruneResponse(removed: try await backend.pruneImages()), keepAlive: keepAlive)
            case .logs(let request):
                try await streamLogs(request, outbound: outbound, channel: channel)
                return false
            case .join:
                let request: JoinRequest
                do { request = try JSONDecoder().decode(JoinRequest.self, from: Data(body.readableBytesView)) } catch {
                    throw ControlError.badRequest("the join request is not valid JSON: \(error)")
                }
                try await writeJSON(outbound, status: .ok, try await backend.join(request), keepAlive: keepAlive)
            }
            return true
        } catch let error as ControlError {
            try await writeJSON(outbound, status: HTTPResponseStatus(statusCode: error.status), ControlErrorBody(error: error.message),
                                keepAlive: keepAlive)
            return true
        } catch is CancellationError {
            return false
        } catch let error as NIOAsyncWriterError {
            throw error
        } catch {
            try await writeJSON(outbound, status: .internalServerError, ControlErrorBody(error: "\(error)"), keepAlive: keepAlive)
            return true
        }
    }

    private func decodeBody(_ body: ByteBuffer) throws(ControlError) -> ImageRequest {
        do {
            return try JSONDecoder().decode(ImageRequest.self, from: Data(body.readableBytesView))
        } catch {
            throw ControlError.badRequest("the request body is not valid JSON: \(error)")
        }
    }

    /// Streams the log as plain text, chunked. With follow, it keeps going until the client closes the connection
    /// (watched through the channel's close future) or the server shuts down.
    private func streamLogs(_ request: LogRequest, outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>,
                            channel: any Channel) async throws {
        let path = try await backend.logPath(namespace: request.namespace, pod: request.pod, container: request.container,
                                             previous: request.previous)
        let options = CRILogOptions(tailLines: request.tail, follow: request.follow, sinceSeconds: request.sinceSeconds,
                                    timestamps: request.timestamps, limitBytes: request.limitBytes)
        let reader = CRILogReader(path: path, options: options, pollInterval: configuration.logPollInterval)
        guard !reader.files().isEmpty else {
            let which = request.container.map { "container \($0) of " } ?? ""
            throw ControlError.notFound("no log yet for \(which)pod \(request.namespace)/\(request.pod) (\(path))")
        }
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/plain; charset=utf-8")
        headers.add(name: "transfer-encoding", value: "chunked")
        headers.add(name: "connection", value: "close")
        try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)))
        let follow = request.follow
        await withTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                do {
                    try await reader.read { bytes in
                        try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: bytes))))
                    }
                } catch let error as EdgedError {
                    // A file vanished or became unreadable mid-stream: say so in the text itself.
                    try? await outbound.write(.body(.byteBuffer(ByteBuffer(string: "\nedged: \(error.message)\n"))))
                } catch {
                    // The client went away (write failed) or we were cancelled.
                }
                try? await outbound.write(.end(nil))
                // Ends the close watcher below, too.
                if follow { channel.close(promise: nil) }
            }
            if follow {
                // The client closing the connection is the only way a follow ends on its own.
                tasks.addTask { try? await channel.closeFuture.get() }
            }
            await tasks.next()
            tasks.cancelAll()
        }
    }

    private func writeJSON(_ outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>, status: HTTPResponseStatus,
                           _ value: some Encodable, keepAlive: Bool) async throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = (try? encoder.encode(value)) ?? Data("{\"error\":\"cannot encode the answer\"}".utf8)
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/json")
        headers.add(name: "content-length", value: String(data.count + 1))
        headers.add(name: "connection", value: keepAlive ? "keep-alive" : "close")
        try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)))
        var buffer = ByteBuffer(bytes: data)
        buffer.writeString("\n")
        try await outbound.write(.body(.byteBuffer(buffer)))
        try await outbound.write(.end(nil))
    }
}
