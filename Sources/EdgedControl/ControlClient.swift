// The client side of the control API, for edgectl: one HTTP/1.1 request per connection over the Unix socket.

import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Why edgectl could not talk to edged at all (as opposed to edged answering with an error, a `ControlError`).
public struct ControlClientError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// No socket, nothing listening on it, or nothing answering on it (edged.socket holds the socket while edged
        /// is down, starting or hung: the connection is accepted and then nobody answers).
        case notRunning
        /// The socket is there but this user may not use it.
        case permissionDenied
        /// edged answered something that is not the control API.
        case badResponse
    }
    public var kind: Kind
    public var message: String
    public var description: String { message }
}

/// Talks to edged's control socket. Every method throws `ControlClientError` when edged cannot be reached and
/// `ControlError` (status + edged's message) when edged refuses the request.
public struct ControlClient: Sendable {
    public let socketPath: String
    private let group: any EventLoopGroup
    /// How long edged may take to start answering a request (not to finish a followed log stream). With edged.socket
    /// systemd accepts connections for edged while it is down or hung, so without a limit edgectl would wait forever.
    public let answerTimeout: Duration

    public init(socketPath: String = ControlServer.Configuration.defaultSocketPath,
                eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                answerTimeout: Duration = .seconds(30)) {
        self.socketPath = socketPath
        self.group = eventLoopGroup
        self.answerTimeout = answerTimeout
    }

    public func status() async throws -> StatusReport { try await getJSON("/v1/status") }
    public func pods() async throws -> [PodSummary] { try await getJSON("/v1/pods") }
    public func images() async throws -> [ImageInfo] { try await getJSON("/v1/images") }

    public func importImage(path: String) async throws -> [ImageInfo] {
        try await sendJSON(.POST, "/v1/images/import", body: ImageRequest(path: path))
    }

    public func pullImage(reference: String) async throws -> ImageInfo {
        try await sendJSON(.POST, "/v1/images/pull", body: ImageRequest(reference: reference))
    }

    public func removeImage(reference: String) async throws {
        let _: PruneResponse = try await sendJSON(.DELETE, "/v1/images?reference=\(RequestTarget.encode(reference))", body: nil as ImageRequest?)
    }

    public func join(_ request: JoinRequest) async throws -> JoinResponse {
        // edged answers a join once the CSR is approved (or the approval timeout passes).
        try await sendJSON(.POST, "/v1/join", body: request,
                           answerTimeout: answerTimeout + .seconds(max(request.approvalTimeoutSeconds, 0)))
    }

    public func pruneImages() async throws -> [String] {
        let response: PruneResponse = try await sendJSON(.POST, "/v1/images/prune", body: nil as ImageRequest?)
        return response.removed
    }

    /// Streams a container's log text; `onChunk` gets the bytes as they arrive. With `follow` it returns when the
    /// task is cancelled or edged closes the stream.
    public func logs(_ request: LogRequest, onChunk: @escaping @Sendable ([UInt8]) async throws -> Void) async throws {
        _ = try await perform(.GET, request.uri, body: nil, onBody: onChunk)
    }

    // MARK: - Transport

    private func getJSON<T: Decodable>(_ uri: String) async throws -> T {
        try await sendJSON(.GET, uri, body: nil as ImageRequest?)
    }

    private func sendJSON<T: Decodable, B: Encodable>(_ method: HTTPMethod, _ uri: String, body: B?,
                                                      answerTimeout: Duration? = nil) async throws -> T {
        let bodyBytes = try body.map { Array(try JSONEncoder().encode($0)) }
        let collected = Collected()
        _ = try await perform(method, uri, body: bodyBytes, answerTimeout: answerTimeout) { bytes in
            await collected.append(bytes)
        }
        let data = await collected.bytes
        do {
            return try JSONDecoder().decode(T.self, from: Data(data))
        } catch {
            throw ControlClientError(kind: .badResponse,
                                     message: "edged on \(socketPath) answered \(method) \(uri) with something edgectl cannot read (\(error)); are edged and edgectl the same version?")
        }
    }

    private actor Collected {
        var bytes: [UInt8] = []
        func append(_ more: [UInt8]) { bytes += more }
    }

    /// Sends one request; passes a 2xx body to `onBody`, turns a non-2xx answer into `ControlError`.
    private func perform(_ method: HTTPMethod, _ uri: String, body: [UInt8]?, answerTimeout: Duration? = nil,
                         onBody: @escaping @Sendable ([UInt8]) async throws -> Void) async throws -> HTTPResponseStatus {
        let channel = try await connect()
        let limit = answerTimeout ?? self.answerTimeout
        // No response head within the limit: close the connection, and say why instead of "closed the connection".
        let timedOut = NIOLockedValueBox(false)
        let (seconds, attoseconds) = limit.components
        let timer = channel.channel.eventLoop.scheduleTask(in: .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)) {
            timedOut.withLockedValue { $0 = true }
            channel.channel.close(promise: nil)
        }
        defer { timer.cancel() }
        do {
            return try await exchange(channel, method, uri, body: body, timer: timer, onBody: onBody)
        } catch where timedOut.withLockedValue({ $0 }) {
            throw ControlClientError(kind: .notRunning, message:
                "edged did not answer on \(socketPath) within \(seconds) s: it is starting, hung or restarting " +
                "(edged.socket keeps the socket open while edged is down). Check: systemctl status edged; edgectl logs --daemon")
        }
    }

    private func exchange(_ channel: ClientChannel, _ method: HTTPMethod, _ uri: String, body: [UInt8]?,
                          timer: Scheduled<Void>,
                          onBody: @escaping @Sendable ([UInt8]) async throws -> Void) async throws -> HTTPResponseStatus {
        try await channel.executeThenClose { inbound, outbound in
            var headers = HTTPHeaders()
            headers.add(name: "host", value: "edged")
            headers.add(name: "user-agent", value: "edgectl")
            headers.add(name: "connection", value: "close")
            if let body {
                headers.add(name: "content-type", value: "application/json")
                headers.add(name: "content-length", value: String(body.count))
            } else if method == .POST {
                headers.add(name: "content-length", value: "0")
            }
            try await outbound.write(.head(HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: headers)))
            if let body { try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: body)))) }
            try await outbound.write(.end(nil))

            var status: HTTPResponseStatus?
            var errorBody: [UInt8] = []
            for try await part in inbound {
                switch part {
                case .head(let head):
                    timer.cancel()
                    status = head.status
                case .body(let buffer):
                    guard let status else { continue }
                    if (200..<300).contains(status.code) {
                        try await onBody(Array(buffer.readableBytesView))
                    } else if errorBody.count < 1 << 20 {
                        errorBody += buffer.readableBytesView
                    }
                case .end:
                    guard let status else { break }
                    if !(200..<300).contains(status.code) {
                        let message = (try? JSONDecoder().decode(ControlErrorBody.self, from: Data(errorBody)))?.error
                            ?? String(decoding: errorBody, as: UTF8.self)
                        throw ControlError(status: Int(status.code), message: message.isEmpty ? status.reasonPhrase : message)
                    }
                    return status
                }
            }
            throw ControlClientError(kind: .badResponse, message: "edged on \(socketPath) closed the connection before answering \(method) \(uri)")
        }
    }

    private typealias ClientChannel = NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>

    private func connect() async throws -> ClientChannel {
        do {
            return try await ClientBootstrap(group: group)
                .connectTimeout(.seconds(5))
                .connect(unixDomainSocketPath: socketPath) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        return try ClientChannel(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw describe(connectError: error)
        }
    }

    /// Turns a failed connect into a message that says what to do.
    func describe(connectError error: any Error) -> ControlClientError {
        describe(errnoCode: (error as? IOError)?.errnoCode ?? probeErrno(), error: error)
    }

    func describe(errnoCode code: Int32, error: any Error) -> ControlClientError {
        switch code {
        case EACCES, EPERM:
            return ControlClientError(kind: .permissionDenied,
                                      message: "permission denied on \(socketPath): run edgectl as root (sudo edgectl …)")
        case ECONNREFUSED:
            return ControlClientError(kind: .notRunning,
                                      message: "edged is not running (nothing listens on \(socketPath)). Start it with: systemctl start edged")
        case ENOENT, ENOTDIR:
            return ControlClientError(kind: .notRunning,
                                      message: "edged is not running (no socket at \(socketPath)). Start it with: systemctl start edged")
        default:
            return ControlClientError(kind: .notRunning, message: "cannot reach edged on \(socketPath): \(error)")
        }
    }

    /// When the connect error carries no errno, look at the socket file ourselves.
    private func probeErrno() -> Int32 {
        var st = stat()
        if stat(socketPath, &st) != 0 { return errno }
        if access(socketPath, W_OK) != 0 { return errno }
        return ECONNREFUSED
    }
}
