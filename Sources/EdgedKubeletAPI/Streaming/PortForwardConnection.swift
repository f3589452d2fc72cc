// One forwarded TCP connection into a pod, shared by the SPDY and WebSocket port-forward handlers.
import EdgedCore
import Logging
import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// Dials `port` in the pod through the backend and relays bytes: `toClient` carries what the pod sends, `write`
/// what the client sends, `clientFinished` half-closes towards the pod. `onPodEOF` is told when the pod stops
/// sending, `onError` when the dial fails. Confined to the session's event loop.
final class PortForwardConnection: @unchecked Sendable {
    let eventLoop: EventLoop
    let port: UInt16
    let logger: Logger
    private var channel: Channel?
    private var queue: [(ByteBuffer, EventLoopPromise<Void>)] = []
    private var clientDone = false
    private var closed = false
    private var task: Task<Void, Never>?

    var toClient: (ByteBuffer) -> EventLoopFuture<Void> = { _ in fatalError("toClient not set") }
    var onPodEOF: () -> Void = {}
    var onError: (String) -> Void = { _ in }

    init(eventLoop: EventLoop, port: UInt16, logger: Logger) {
        self.eventLoop = eventLoop
        self.port = port
        self.logger = logger
    }

    func start(backend: any KubeletBackend, namespace: String, pod: String, uid: String?) {
        let port = self.port
        task = Task {
            do {
                let fd = try await backend.portForward(namespace: namespace, pod: pod, uid: uid, port: port)
                self.eventLoop.execute { self.connected(fd) }
            } catch {
                let message = "error forwarding port \(port) to pod \(namespace)/\(pod), uid \(uid ?? ""): \(error)"
                self.eventLoop.execute {
                    self.logger.warning("\(message)")
                    self.failQueue()
                    self.onError(message)
                }
            }
        }
    }

    private func connected(_ fd: Int32) {
        if closed { Glibc.close(fd); return }
        ClientBootstrap(group: eventLoop)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(StreamPump(
                        onData: { [weak self] bytes in
                            guard let self, !self.closed else { return channel.eventLoop.makeSucceededVoidFuture() }
                            return self.toClient(bytes)
                        },
                        onEnd: { [weak self] in self?.onPodEOF() }))
                }
            }
            .withConnectedSocket(fd)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    if self.closed { channel.close(promise: nil); return }
                    self.channel = channel
                    self.flush()
                case .failure(let error):
                    let message = "error forwarding port \(self.port): cannot use the pod connection: \(error)"
                    self.logger.warning("\(message)")
                    self.failQueue()
                    self.onError(message)
                }
            }
    }

    /// Bytes from the client for the pod; completes once written.
    func write(_ bytes: ByteBuffer) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        if closed || clientDone { promise.succeed(); return promise.futureResult }
        queue.append((bytes, promise))
        flush()
        return promise.futureResult
    }

    /// The client sends no more: shut the pod connection's write side.
    func clientFinished() {
        clientDone = true
        flush()
    }

    private func flush() {
        guard let channel else { return }
        for (bytes, promise) in queue { channel.writeAndFlush(bytes, promise: promise) }
        queue = []
        if clientDone { channel.close(mode: .output, promise: nil) }
    }

    private func failQueue() {
        for (_, promise) in queue { promise.succeed() }
        queue = []
    }

    func close() {
        guard !closed else { return }
        closed = true
        task?.cancel()
        failQueue()
        channel?.close(promise: nil)
        channel = nil
    }
}
