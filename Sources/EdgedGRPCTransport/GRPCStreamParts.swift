// The two halves of one gRPC call on an HTTP/2 stream, for each side: what GRPCCore reads (request or response
// parts decoded from frames) and what it writes (parts encoded as frames).

import GRPCCore
import NIOCore
import NIOHPACK
import NIOHTTP2
import Synchronization

typealias FrameStream = NIOAsyncChannelInboundStream<HTTP2Frame.FramePayload>
typealias FrameWriter = NIOAsyncChannelOutboundWriter<HTTP2Frame.FramePayload>

/// The one iterator of a stream's inbound frames, handed from whoever read the first frame to the part sequence.
/// A call's parts are read by one task at a time, which is what makes the unchecked Sendable sound.
final class FrameSource: @unchecked Sendable {
    private var iterator: FrameStream.AsyncIterator
    private let ended = Atomic<Bool>(false)

    init(_ iterator: FrameStream.AsyncIterator) { self.iterator = iterator }

    func next() async throws -> HTTP2Frame.FramePayload? {
        let frame = try await iterator.next()
        switch frame {
        case .headers(let h) where h.endStream: ended.store(true, ordering: .relaxed)
        case .data(let d) where d.endStream: ended.store(true, ordering: .relaxed)
        case .rstStream, nil: ended.store(true, ordering: .relaxed)
        default: break
        }
        return frame
    }

    /// Whether the peer has finished its side of the stream (END_STREAM, a reset, or the stream is gone).
    var peerFinished: Bool { ended.load(ordering: .relaxed) }

    /// Marks the peer's side finished when the first frame already carried END_STREAM.
    func markFinished() { ended.store(true, ordering: .relaxed) }
}

// MARK: - Client side

/// Response parts from the server's frames: headers → .metadata, DATA → .message per gRPC message, trailers (or a
/// trailers-only response) → .status. A stream that ends without trailers ends with an `unavailable` status.
struct ClientResponseParts: AsyncSequence, Sendable {
    typealias Element = RPCResponsePart<[UInt8]>
    let source: FrameSource
    let maxMessageBytes: Int
    let peer: String

    func makeAsyncIterator() -> Iterator { Iterator(source: source, deframer: .init(maxMessageBytes: maxMessageBytes), peer: peer) }

    struct Iterator: AsyncIteratorProtocol {
        let source: FrameSource
        var deframer: GRPCMessageDeframer
        let peer: String
        var sawHeaders = false
        var done = false
        var pending: [Element] = []

        mutating func next() async throws -> Element? {
            while true {
                if !pending.isEmpty { return pending.removeFirst() }
                if done { return nil }
                guard let frame = try await source.next() else {
                    done = true
                    return .status(Status(code: .unavailable, message: "\(peer) closed the stream before the call ended"), [:])
                }
                switch frame {
                case .headers(let h):
                    if !sawHeaders {
                        sawHeaders = true
                        let httpStatus = h.headers.first(name: ":status") ?? ""
                        if httpStatus != "200" {
                            done = true
                            let code = GRPCWire.code(forHTTPStatus: Int(httpStatus) ?? 0)
                            return .status(Status(code: code, message: "\(peer) answered HTTP status \(httpStatus), not a gRPC response"),
                                           GRPCWire.metadata(from: h.headers))
                        }
                        if h.endStream {   // trailers-only: an error before any response
                            done = true
                            return .status(GRPCWire.status(from: h.headers), GRPCWire.metadata(from: h.headers))
                        }
                        guard GRPCWire.isGRPC(contentType: h.headers.first(name: "content-type")) else {
                            done = true
                            return .status(Status(code: .internalError, message: "\(peer) answered with content-type \(h.headers.first(name: "content-type") ?? "none"), not application/grpc"), [:])
                        }
                        return .metadata(GRPCWire.metadata(from: h.headers))
                    }
                    done = true
                    return .status(GRPCWire.status(from: h.headers), GRPCWire.metadata(from: h.headers))
                case .data(let d):
                    guard case .byteBuffer(let bytes) = d.data else { continue }
                    pending += try deframer.messages(after: bytes).map { .message($0) }
                    if d.endStream {
                        done = true
                        pending.append(.status(Status(code: .internalError, message: "\(peer) ended the stream without a grpc-status"), [:]))
                    }
                case .rstStream(let code):
                    done = true
                    pending.append(.status(Status(code: code == .refusedStream ? .unavailable : .cancelled,
                                                  message: "\(peer) reset the stream (\(code))"), [:]))
                default:
                    continue
                }
            }
        }
    }
}

/// Request parts as frames: .metadata → HEADERS with the call's pseudo-headers, .message → DATA, finish → an
/// empty DATA with END_STREAM, finish(throwing:) → RST_STREAM.
final class ClientRequestWriter: ClosableRPCWriterProtocol, Sendable {
    typealias Element = RPCRequestPart<[UInt8]>
    private let outbound: FrameWriter
    private let callHeaders: HPACKHeaders
    private let headersSent = Atomic<Bool>(false)

    init(outbound: FrameWriter, callHeaders: HPACKHeaders) {
        self.outbound = outbound
        self.callHeaders = callHeaders
    }

    func write(_ part: Element) async throws {
        switch part {
        case .metadata(let metadata):
            var headers = callHeaders
            GRPCWire.add(metadata, to: &headers)
            headersSent.store(true, ordering: .relaxed)
            try await outbound.write(.headers(.init(headers: headers)))
        case .message(let message):
            if !headersSent.exchange(true, ordering: .relaxed) {
                try await outbound.write(.headers(.init(headers: callHeaders)))
            }
            try await outbound.write(.data(.init(data: .byteBuffer(GRPCWire.frame(message, allocator: .init())))))
        }
    }

    func write(contentsOf parts: some Sequence<Element>) async throws {
        for part in parts { try await write(part) }
    }

    func finish() async {
        if !headersSent.exchange(true, ordering: .relaxed) {
            try? await outbound.write(.headers(.init(headers: callHeaders, endStream: true)))
        } else {
            try? await outbound.write(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)))
        }
    }

    func finish(throwing error: any Error) async {
        try? await outbound.write(.rstStream(.cancel))
    }
}

// MARK: - Server side

/// Request parts from the client's frames: the first HEADERS (already read to route the call) → .metadata, then
/// one .message per gRPC message until END_STREAM. A reset or a stream that closes before END_STREAM is an error.
struct ServerRequestParts: AsyncSequence, Sendable {
    typealias Element = RPCRequestPart<[UInt8]>
    let metadata: Metadata
    let source: FrameSource
    let endedWithHeaders: Bool
    let maxMessageBytes: Int

    func makeAsyncIterator() -> Iterator {
        Iterator(first: metadata, source: source, done: endedWithHeaders, deframer: .init(maxMessageBytes: maxMessageBytes))
    }

    struct Iterator: AsyncIteratorProtocol {
        var first: Metadata?
        let source: FrameSource
        var done: Bool
        var deframer: GRPCMessageDeframer
        var pending: [Element] = []

        mutating func next() async throws -> Element? {
            if let metadata = first {
                first = nil
                return .metadata(metadata)
            }
            while true {
                if !pending.isEmpty { return pending.removeFirst() }
                if done { return nil }
                guard let frame = try await source.next() else {
                    done = true
                    throw RPCError(code: .cancelled, message: "the client closed the stream before ending its requests")
                }
                switch frame {
                case .data(let d):
                    guard case .byteBuffer(let bytes) = d.data else { continue }
                    pending += try deframer.messages(after: bytes).map { .message($0) }
                    if d.endStream {
                        done = true
                        if deframer.pendingBytes > 0 {
                            throw RPCError(code: .internalError, message: "the client ended its requests in the middle of a message")
                        }
                    }
                case .headers(let h) where h.endStream:
                    done = true   // trailers from a client: nothing in them for us
                case .rstStream(let code):
                    done = true
                    throw RPCError(code: .cancelled, message: "the client reset the stream (\(code))")
                default:
                    continue
                }
            }
        }
    }
}

/// Response parts as frames: .metadata → HEADERS :status 200, .message → DATA, .status → trailers with END_STREAM
/// (a trailers-only HEADERS when nothing was sent before).
final class ServerResponseWriter: ClosableRPCWriterProtocol, Sendable {
    typealias Element = RPCResponsePart<[UInt8]>
    private let outbound: FrameWriter
    private let headersSent = Atomic<Bool>(false)

    init(outbound: FrameWriter) { self.outbound = outbound }

    static func responseHeaders() -> HPACKHeaders {
        [":status": "200", "content-type": GRPCWire.contentType]
    }

    func write(_ part: Element) async throws {
        switch part {
        case .metadata(let metadata):
            var headers = Self.responseHeaders()
            GRPCWire.add(metadata, to: &headers)
            headersSent.store(true, ordering: .relaxed)
            try await outbound.write(.headers(.init(headers: headers)))
        case .message(let message):
            if !headersSent.exchange(true, ordering: .relaxed) {
                try await outbound.write(.headers(.init(headers: Self.responseHeaders())))
            }
            try await outbound.write(.data(.init(data: .byteBuffer(GRPCWire.frame(message, allocator: .init())))))
        case .status(let status, let trailers):
            var headers: HPACKHeaders = headersSent.exchange(true, ordering: .relaxed) ? [:] : Self.responseHeaders()
            headers.add(name: "grpc-status", value: String(status.code.rawValue))
            if !status.message.isEmpty { headers.add(name: "grpc-message", value: GRPCWire.percentEncode(status.message)) }
            GRPCWire.add(trailers, to: &headers)
            try await outbound.write(.headers(.init(headers: headers, endStream: true)))
        }
    }

    func write(contentsOf parts: some Sequence<Element>) async throws {
        for part in parts { try await write(part) }
    }

    func finish() async {}

    func finish(throwing error: any Error) async {
        try? await outbound.write(.rstStream(.internalError))
    }
}
