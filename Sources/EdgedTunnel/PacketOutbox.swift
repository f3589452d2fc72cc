// The outbound side of one Connect stream: many TCP streams hand it packets, one task writes them to gRPC.

import GRPCCore
import Synchronization

/// The queue of packets waiting to go out on one Connect stream, with the bytes queued per TCP stream counted.
///
/// Every relay's reader puts its DATA here; a single writer task drains it into the gRPC writer (which waits for
/// HTTP/2 flow control). A reader whose own stream has more than `streamLimit` bytes queued waits in `send` until
/// the writer has taken it below half of that: that reader stops reading its socket (back-pressure reaches the
/// peer through TCP), while every other stream keeps going. Control packets (dial, close) are never held back.
final class PacketOutbox: Sendable {
    private struct Item: Sendable {
        let packet: KonnPacket
        let stream: Int64
        let bytes: Int
    }

    private struct State {
        var queued: [Int64: Int] = [:]
        var waiters: [Int64: [CheckedContinuation<Void, Never>]] = [:]
        var closed = false
    }

    private let items: AsyncStream<Item>
    private let input: AsyncStream<Item>.Continuation
    private let state = Mutex(State())
    let streamLimit: Int

    init(streamLimit: Int) {
        self.streamLimit = streamLimit
        (items, input) = AsyncStream.makeStream(of: Item.self)
    }

    /// Queues a control packet (never waits).
    func send(_ packet: KonnPacket) {
        input.yield(Item(packet: packet, stream: 0, bytes: 0))
    }

    /// Queues DATA for `stream`; returns once that stream has room again (at once unless it is over its limit).
    func send(data packet: KonnPacket, stream: Int64, bytes: Int) async {
        let overLimit = state.withLock { s -> Bool in
            guard !s.closed else { return false }
            s.queued[stream, default: 0] += bytes
            return s.queued[stream, default: 0] > streamLimit
        }
        input.yield(Item(packet: packet, stream: stream, bytes: bytes))
        guard overLimit else { return }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { s -> Bool in
                if s.closed || s.queued[stream, default: 0] <= streamLimit / 2 { return true }
                s.waiters[stream, default: []].append(c)
                return false
            }
            if resumeNow { c.resume() }
        }
    }

    /// Forgets a finished stream's count and lets any reader still waiting on it go.
    func forget(stream: Int64) {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.queued[stream] = nil
            return s.waiters.removeValue(forKey: stream) ?? []
        }
        for w in waiters { w.resume() }
    }

    /// Writes queued packets to `writer` until `close()`; throws what the writer throws.
    func drain(into writer: RPCWriter<KonnPacket>) async throws {
        for await item in items {
            try await writer.write(item.packet)
            guard item.bytes > 0 else { continue }
            let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
                guard let q = s.queued[item.stream] else { return [] }
                s.queued[item.stream] = q - item.bytes
                guard q - item.bytes <= streamLimit / 2 else { return [] }
                return s.waiters.removeValue(forKey: item.stream) ?? []
            }
            for w in waiters { w.resume() }
        }
    }

    /// Ends the queue: `drain` returns once what is queued has been written, waiting readers go on.
    func close() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.closed = true
            defer { s.waiters = [:] }
            return s.waiters.values.flatMap { $0 }
        }
        input.finish()
        for w in waiters { w.resume() }
    }
}
