// One TCP stream carried over the tunnel: socket bytes go out as DATA, DATA from the peer goes to the socket.

import NIOCore
import Synchronization

/// Relays one socket (a frontend client on the server, a local destination on the agent) to and from the tunnel.
///
/// Reading: the socket is read in `run` and each chunk handed to `send`, which waits while this stream has too much
/// queued for gRPC (see `PacketOutbox`), so a fast sender is slowed by TCP back-pressure and nobody else is.
///
/// Writing: the gRPC receive loop must never wait for one stream's socket, or every other stream on the same
/// Connect stream would stall behind it (head-of-line blocking). So `deliver` only queues the bytes, and this
/// relay's own task writes them to the socket as fast as its reader takes them. The Konnectivity protocol has no
/// per-stream flow control to slow the far side down, so the queue is capped: when a reader is so slow that more
/// than `bufferLimit` bytes are waiting for it, `deliver` refuses, and the owner closes this stream (CLOSE_REQ /
/// CLOSE_RSP to the peer, socket closed) and logs why. Only the slow stream is lost; the others never wait.
final class StreamRelay: Sendable {
    /// Why `run` returned.
    enum End: Sendable, Equatable {
        /// The socket closed or failed first: the peer must be told.
        case local
        /// The peer closed the stream (`finish`) and everything queued was written.
        case remote
        /// `abort` was called: the owner already knows.
        case aborted
    }

    private struct State {
        var queued = 0
        var channel: (any Channel)?
        var ended: End?
    }

    let bufferLimit: Int
    private let chunks: AsyncStream<ByteBuffer>
    private let input: AsyncStream<ByteBuffer>.Continuation
    private let state = Mutex(State())

    init(bufferLimit: Int) {
        self.bufferLimit = bufferLimit
        (chunks, input) = AsyncStream.makeStream(of: ByteBuffer.self)
    }

    /// Queues bytes from the peer for the socket. Returns false, queuing nothing, when the socket's reader is more
    /// than `bufferLimit` bytes behind: the caller then closes the stream.
    func deliver(_ bytes: ByteBuffer) -> Bool {
        let ok = state.withLock { s -> Bool in
            guard s.ended == nil else { return true }
            guard s.queued + bytes.readableBytes <= bufferLimit else { return false }
            s.queued += bytes.readableBytes
            return true
        }
        if ok { input.yield(bytes) }
        return ok
    }

    /// Bytes waiting for the socket (for tests and status).
    var queuedBytes: Int { state.withLock { $0.queued } }

    /// The peer closed the stream: write what is queued, then close the socket.
    func finish() {
        state.withLock { s in if s.ended == nil { s.ended = .remote } }
        input.finish()
    }

    /// Closes the socket now, dropping whatever is queued.
    func abort() {
        let channel = state.withLock { s -> (any Channel)? in
            if s.ended == nil || s.ended == .remote { s.ended = .aborted }
            return s.channel
        }
        input.finish()
        channel?.close(promise: nil)
    }

    /// Relays until the socket is closed: `leftover` and every chunk read go to `send`, delivered bytes to `outbound`.
    func run(
        channel: any Channel,
        inbound: inout NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator,
        outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>,
        leftover: ByteBuffer? = nil,
        send: (ByteBuffer) async -> Void
    ) async -> End {
        let alreadyAborted = state.withLock { s -> Bool in
            s.channel = channel
            return s.ended == .aborted
        }
        if alreadyAborted {
            channel.close(promise: nil)
            return .aborted
        }
        await withTaskGroup(of: Void.self) { group in
            let chunks = self.chunks
            group.addTask {
                var failed = false
                for await chunk in chunks {
                    do { try await outbound.write(chunk) } catch { failed = true; break }
                    self.state.withLock { $0.queued -= chunk.readableBytes }
                }
                // The peer closed: let what the socket still holds go out before closing (a half-close waits for
                // pending writes; a slow but live reader still gets everything). Failed or aborted: close now.
                if !failed && !Task.isCancelled && self.state.withLock({ $0.ended == .remote }) {
                    try? await channel.close(mode: .output).get()
                }
                channel.close(promise: nil)
            }
            if let leftover, leftover.readableBytes > 0 { await send(leftover) }
            do {
                while let chunk = try await inbound.next() { await send(chunk) }
            } catch {}
            state.withLock { s in if s.ended == nil { s.ended = .local } }
            input.finish()
            channel.close(promise: nil)
            group.cancelAll()
        }
        return state.withLock { $0.ended ?? .local }
    }
}
