// edged's own API client goes through the hub in-process: the same cache, queue and offline answers as the hub's
// listeners give kube-proxy or kubectl, without a loopback hop.

import EdgedCore
import EdgedKube
import Synchronization

/// A `KubeTransport` served by the hub core, as client "edged".
public final class HubTransport: KubeTransport {
    let core: HubCore
    let userAgent: String

    init(core: HubCore, userAgent: String) {
        self.core = core
        self.userAgent = userAgent
    }

    public var server: String { core.server }

    public func updateCredentials(_ credentials: KubeCredentials) throws {
        try core.updateCredentials(credentials)
    }

    private func hubRequest(_ request: KubeRequest) -> HubHTTPRequest {
        var headers = request.headers
        if !headers.contains(where: { $0.0.lowercased() == "user-agent" }) { headers.append(("User-Agent", userAgent)) }
        return HubHTTPRequest(method: request.method, target: request.path, headers: headers, body: request.body ?? [],
                              remoteAddress: nil, isTLS: false)
    }

    public func execute(_ request: KubeRequest, timeout: Duration) async throws -> KubeResponse {
        let writer = CollectingWriter()
        await core.serve(hubRequest(request), writer)
        return writer.response
    }

    public func streamResponse<R: Sendable>(_ request: KubeRequest, idleTimeout: Duration?,
                                            _ body: (KubeResponseHead, KubeByteStream) async throws -> R) async throws -> R {
        let writer = StreamingWriter()
        let hubRequest = hubRequest(request)
        let core = self.core
        let serving = Task { await core.serve(hubRequest, writer); writer.end() }
        defer {
            writer.close()
            serving.cancel()
        }
        let head = try await writer.head()
        var iterator = writer.chunks.makeAsyncIterator()
        let stream = KubeByteStream { try await iterator.next() }
        return try await body(head, stream)
    }
}

/// Collects a whole response (execute).
final class CollectingWriter: HubResponseWriter {
    private struct State {
        var status = 0
        var headers: [(String, String)] = []
        var body: [UInt8] = []
    }
    private let state = Mutex(State())

    var response: KubeResponse {
        state.withLock { KubeResponse(status: $0.status, headers: $0.headers, body: $0.body) }
    }
    var clientClosed: Bool { false }

    func writeHead(status: Int, headers: [(String, String)]) async throws {
        state.withLock { $0.status = status; $0.headers = headers }
    }
    func writeBody(_ bytes: [UInt8]) async throws { state.withLock { $0.body += bytes } }
    func finish() async throws {}
}

/// Hands a response to a streaming reader: the head once, then chunks (unbounded buffer: the in-process readers are
/// edged's informers, which keep up).
final class StreamingWriter: HubResponseWriter {
    private struct State {
        var head: KubeResponseHead?
        var headWaiter: CheckedContinuation<KubeResponseHead, any Error>?
        var ended = false
        var closed = false
    }
    private let state = Mutex(State())
    let chunks: AsyncThrowingStream<[UInt8], any Error>
    private let continuation: AsyncThrowingStream<[UInt8], any Error>.Continuation

    struct NoResponse: Error, CustomStringConvertible {
        var description: String { "edged's edge hub ended the request without an answer" }
    }

    init() {
        (chunks, continuation) = AsyncThrowingStream.makeStream(of: [UInt8].self)
    }

    var clientClosed: Bool { state.withLock { $0.closed } }

    func writeHead(status: Int, headers: [(String, String)]) async throws {
        let head = KubeResponseHead(status: status, headers: headers)
        let waiter = state.withLock { s -> CheckedContinuation<KubeResponseHead, any Error>? in
            s.head = head
            defer { s.headWaiter = nil }
            return s.headWaiter
        }
        waiter?.resume(returning: head)
    }

    func writeBody(_ bytes: [UInt8]) async throws {
        if clientClosed { throw CancellationError() }
        continuation.yield(bytes)
    }

    func finish() async throws { end() }

    /// The response is complete (or the core returned).
    func end() {
        let waiter = state.withLock { s -> CheckedContinuation<KubeResponseHead, any Error>? in
            s.ended = true
            defer { s.headWaiter = nil }
            return s.headWaiter
        }
        waiter?.resume(throwing: NoResponse())
        continuation.finish()
    }

    /// The reader is done.
    func close() {
        state.withLock { $0.closed = true }
        end()
    }

    func head() async throws -> KubeResponseHead {
        try await withCheckedThrowingContinuation { c in
            let result = state.withLock { s -> Result<KubeResponseHead, any Error>? in
                if let h = s.head { return .success(h) }
                if s.ended { return .failure(NoResponse()) }
                s.headWaiter = c
                return nil
            }
            if let result { c.resume(with: result) }
        }
    }
}
