// HTTP plumbing of the kubelet API: request targets and queries, Status bodies, and writing responses to a channel.

import EdgedCore
import NIOCore
import NIOHTTP1
import Synchronization

/// A request target split into its path (percent-decoded per segment later) and its query parameters.
struct KubeletTarget: Sendable, Equatable {
    /// The path as sent, without the query.
    var path: String
    /// The raw query string after "?" ("" when none).
    var rawQuery: String
    /// Query parameters in order, names and values percent-decoded ("+" is a space).
    var query: [(String, String)]

    init(uri: String) {
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        path = parts.isEmpty ? "/" : String(parts[0])
        if path.isEmpty { path = "/" }
        rawQuery = parts.count > 1 ? String(parts[1]) : ""
        query = Self.parseQuery(rawQuery)
    }

    static func == (a: KubeletTarget, b: KubeletTarget) -> Bool {
        a.path == b.path && a.rawQuery == b.rawQuery
    }

    /// The path's segments, percent-decoded, without empty ones.
    var segments: [String] {
        path.split(separator: "/", omittingEmptySubsequences: true).map { Self.percentDecode(String($0), plusIsSpace: false) }
    }

    /// The values given for `name`, in order.
    func values(_ name: String) -> [String] {
        query.filter { $0.0 == name }.map(\.1)
    }

    static func parseQuery(_ raw: String) -> [(String, String)] {
        guard !raw.isEmpty else { return [] }
        return raw.split(separator: "&", omittingEmptySubsequences: true).map { item in
            let kv = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = percentDecode(String(kv[0]), plusIsSpace: true)
            let value = kv.count > 1 ? percentDecode(String(kv[1]), plusIsSpace: true) : ""
            return (name, value)
        }
    }

    /// Decodes %XX escapes (an invalid escape is kept as written).
    static func percentDecode(_ text: String, plusIsSpace: Bool) -> String {
        guard text.utf8.contains(where: { $0 == 37 || (plusIsSpace && $0 == 43) }) else { return text }
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        func hex(_ b: UInt8) -> UInt8? {
            switch b {
            case 48...57: return b - 48
            case 65...70: return b - 55
            case 97...102: return b - 87
            default: return nil
            }
        }
        while i < bytes.count {
            let b = bytes[i]
            if b == 37, i + 2 < bytes.count, let hi = hex(bytes[i + 1]), let lo = hex(bytes[i + 2]) {
                out.append(hi << 4 | lo)
                i += 3
            } else {
                out.append(plusIsSpace && b == 43 ? 32 : b)
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// A failed request: its HTTP status and the message of its Status body.
struct KubeletHTTPError: Error, Sendable {
    var code: Int
    var message: String

    init(_ code: Int, _ message: String) {
        self.code = code
        self.message = message
    }

    static func badRequest(_ message: String) -> KubeletHTTPError { KubeletHTTPError(400, message) }
    static func notFound(_ message: String) -> KubeletHTTPError { KubeletHTTPError(404, message) }
}

enum KubeletStatus {
    /// A v1 Status body, like the API server's (kubectl prints its message).
    static func body(code: Int, message: String) -> [UInt8] {
        let status = JSONValue.object([
            ("kind", .string("Status")),
            ("apiVersion", .string("v1")),
            ("metadata", .object([])),
            ("status", .string("Failure")),
            ("message", .string(message)),
            ("reason", .string(reason(code))),
            ("code", .number(String(code))),
        ])
        return Array(status.jsonText.utf8)
    }

    static func reason(_ code: Int) -> String {
        switch code {
        case 400: return "BadRequest"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "NotFound"
        case 405: return "MethodNotAllowed"
        case 501: return "NotImplemented"
        case 503: return "ServiceUnavailable"
        default: return "InternalError"
        }
    }
}

/// Writes one response to a connection from outside the pipeline (through "http-encoder"), each write waiting until
/// it has been handed to the socket, so a slow reader slows the writer down.
final class KubeletResponseWriter: Sendable {
    let channel: any Channel
    let keepAlive: Bool
    private let sentStatus = Mutex<Int?>(nil)

    init(channel: any Channel, keepAlive: Bool) {
        self.channel = channel
        self.keepAlive = keepAlive
    }

    /// The status written, nil before the head.
    var status: Int? { sentStatus.withLock { $0 } }

    func head(_ code: Int, contentType: String, contentLength: Int? = nil, keepAlive: Bool? = nil) async throws {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: contentType)
        if let contentLength {
            headers.add(name: "content-length", value: String(contentLength))
        } else {
            headers.add(name: "transfer-encoding", value: "chunked")
        }
        if !(keepAlive ?? self.keepAlive) { headers.add(name: "connection", value: "close") }
        sentStatus.withLock { $0 = code }
        let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: code), headers: headers)
        try await channel.writeAndFlush(HTTPServerResponsePart.head(head)).get()
    }

    func body(_ bytes: [UInt8]) async throws {
        guard !bytes.isEmpty else { return }
        try await channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: bytes)))).get()
    }

    func end() async throws {
        try await channel.writeAndFlush(HTTPServerResponsePart.end(nil)).get()
    }

    /// A whole response with a content length.
    func full(_ code: Int, contentType: String, _ bytes: [UInt8]) async throws {
        try await head(code, contentType: contentType, contentLength: bytes.count)
        try await body(bytes)
        try await end()
    }

    func status(_ code: Int, _ message: String) async throws {
        try await full(code, contentType: "application/json", KubeletStatus.body(code: code, message: message))
    }
}
