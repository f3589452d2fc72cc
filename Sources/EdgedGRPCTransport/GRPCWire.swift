// gRPC's wire format on HTTP/2: length-prefixed messages, request and response headers, status trailers.
// https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GRPCCore
import NIOCore
import NIOHPACK

/// Splits the bytes of DATA frames into gRPC messages: a 1-byte compressed flag, a 4-byte big-endian length, the
/// payload. Compression is never negotiated, so a compressed message is an error.
struct GRPCMessageDeframer {
    private var buffer = ByteBuffer()
    let maxMessageBytes: Int

    init(maxMessageBytes: Int) { self.maxMessageBytes = maxMessageBytes }

    mutating func append(_ bytes: ByteBuffer) {
        var bytes = bytes
        buffer.writeBuffer(&bytes)
    }

    /// The next whole message; nil when more bytes are needed.
    mutating func next() throws -> [UInt8]? {
        let start = buffer.readerIndex
        guard let flag = buffer.getInteger(at: start, as: UInt8.self),
              let length = buffer.getInteger(at: start + 1, as: UInt32.self) else { return nil }
        guard flag == 0 else {
            throw RPCError(code: .internalError, message: "received a compressed gRPC message, but no compression was negotiated")
        }
        guard Int(length) <= maxMessageBytes else {
            throw RPCError(code: .resourceExhausted, message: "gRPC message of \(length) bytes is over the limit of \(maxMessageBytes) bytes")
        }
        guard buffer.readableBytes >= 5 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 5)
        let message = buffer.readBytes(length: Int(length)) ?? []
        if buffer.readableBytes == 0 {
            buffer.clear()
        } else if buffer.readerIndex > 1 << 16 {
            buffer.discardReadBytes()
        }
        return message
    }

    /// Every whole message now in the buffer after `bytes` are added.
    mutating func messages(after bytes: ByteBuffer) throws -> [[UInt8]] {
        append(bytes)
        var out: [[UInt8]] = []
        while let message = try next() { out.append(message) }
        return out
    }

    /// Bytes of a message that has not fully arrived.
    var pendingBytes: Int { buffer.readableBytes }
}

enum GRPCWire {
    static let contentType = "application/grpc"

    /// One message with its 5-byte prefix.
    static func frame(_ message: [UInt8], allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 5 + message.count)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(message.count))
        buffer.writeBytes(message)
        return buffer
    }

    /// Whether a content-type header names gRPC (application/grpc, optionally +proto etc. or ;params).
    static func isGRPC(contentType header: String?) -> Bool {
        guard let value = header?.lowercased(), value.hasPrefix(contentType) else { return false }
        let rest = value.dropFirst(contentType.count)
        return rest.isEmpty || rest.hasPrefix("+") || rest.hasPrefix(";")
    }

    /// Headers that are the transport's, not the application's metadata.
    private static let reserved: Set<String> = ["content-type", "te", "grpc-status", "grpc-message",
                                                "grpc-encoding", "grpc-accept-encoding", "content-length"]

    /// Application metadata as HTTP/2 headers: lower-case names, "-bin" values base64-encoded.
    static func add(_ metadata: Metadata, to headers: inout HPACKHeaders) {
        for (key, value) in metadata {
            let name = key.lowercased()
            if name.hasPrefix(":") || reserved.contains(name) { continue }
            headers.add(name: name, value: value.encoded())
        }
    }

    /// The application metadata in received headers (pseudo-headers and gRPC's own dropped; grpc-timeout kept, as
    /// GRPCCore reads the deadline from it).
    static func metadata(from headers: HPACKHeaders) -> Metadata {
        var metadata = Metadata()
        for (name, value, _) in headers {
            let key = name.lowercased()
            if key.hasPrefix(":") || reserved.contains(key) { continue }
            if key.hasSuffix("-bin") {
                if let bytes = base64Decode(value) { metadata.addBinary(bytes, forKey: key) }
            } else {
                metadata.addString(value, forKey: key)
            }
        }
        return metadata
    }

    /// grpc-status and grpc-message from trailers (or a trailers-only response).
    static func status(from headers: HPACKHeaders) -> Status {
        guard let raw = headers.first(name: "grpc-status") else {
            return Status(code: .unknown, message: "the server ended the call without a grpc-status")
        }
        guard let value = Int(raw), let code = Status.Code(rawValue: value) else {
            return Status(code: .unknown, message: "the server sent an invalid grpc-status \(raw)")
        }
        return Status(code: code, message: percentDecode(headers.first(name: "grpc-message") ?? ""))
    }

    /// The gRPC code for an HTTP status other than 200, as gRPC's spec maps them.
    static func code(forHTTPStatus status: Int) -> Status.Code {
        switch status {
        case 400: return .internalError
        case 401: return .unauthenticated
        case 403: return .permissionDenied
        case 404: return .unimplemented
        case 429, 502, 503, 504: return .unavailable
        default: return .unknown
        }
    }

    /// grpc-message encoding: bytes outside printable ASCII, and '%', as %XX.
    static func percentEncode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            if byte >= 0x20 && byte <= 0x7E && byte != 0x25 {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out += "%" + hex(byte >> 4) + hex(byte & 0xF)
            }
        }
        return out
    }

    static func percentDecode(_ text: String) -> String {
        var bytes: [UInt8] = []
        let utf8 = Array(text.utf8)
        var i = 0
        while i < utf8.count {
            if utf8[i] == 0x25, i + 2 < utf8.count, let hi = hexValue(utf8[i + 1]), let lo = hexValue(utf8[i + 2]) {
                bytes.append(hi << 4 | lo)
                i += 3
            } else {
                bytes.append(utf8[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// A grpc-timeout header value (at most 8 digits and a unit).
    static func timeout(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let micros = seconds * 1_000_000 + attoseconds / 1_000_000_000_000
        if micros < 100_000_000 { return "\(max(micros, 1))u" }
        let millis = micros / 1000
        if millis < 100_000_000 { return "\(millis)m" }
        return "\(min(seconds, 99_999_999))S"
    }

    private static func hex(_ nibble: UInt8) -> String {
        String(Unicode.Scalar(nibble < 10 ? 0x30 + nibble : 0x41 + nibble - 10))
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }

    /// Base64 with or without padding (Go's gRPC sends it without).
    private static func base64Decode(_ text: String) -> [UInt8]? {
        var padded = text
        while padded.utf8.count % 4 != 0 { padded += "=" }
        return Data(base64Encoded: padded).map { Array($0) }
    }
}
