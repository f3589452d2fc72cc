// Watch events and the incremental decoder for the newline-delimited JSON of a watch stream.

import EdgedCore

/// One event of a watch stream.
public enum WatchEvent<Object: Codable & Sendable>: Sendable {
    case added(Object)
    case modified(Object)
    case deleted(Object)
    /// The server's newest resourceVersion for this watch (no object change).
    case bookmark(resourceVersion: String)
    /// An ERROR event: usually 410 Expired (the resourceVersion is too old: re-list).
    case error(Status)
}

extension WatchEvent: Equatable where Object: Equatable {}

/// Splits a watch response body into events, one JSON object per line, across arbitrary chunk boundaries.
/// Only the unfinished tail of the stream is buffered.
public struct WatchStreamDecoder<Object: Codable & Sendable> {
    /// A single event larger than this fails the stream (a broken server, not a big object).
    public var maxEventBytes: Int
    private var pending: [UInt8] = []

    public init(maxEventBytes: Int = 32 << 20) {
        self.maxEventBytes = maxEventBytes
    }

    /// Adds a chunk and returns the events it completed, in order.
    public mutating func feed<C: Collection<UInt8>>(_ chunk: C) throws(KubeError) -> [WatchEvent<Object>] {
        var events: [WatchEvent<Object>] = []
        var start = chunk.startIndex
        var i = chunk.startIndex
        while i != chunk.endIndex {
            if chunk[i] == 0x0A {
                pending.append(contentsOf: chunk[start..<i])
                if let e = try takeLine() { events.append(e) }
                start = chunk.index(after: i)
            }
            i = chunk.index(after: i)
        }
        pending.append(contentsOf: chunk[start..<chunk.endIndex])
        guard pending.count <= maxEventBytes else {
            throw KubeError(kind: .decoding, message: "watch event larger than \(maxEventBytes) bytes without a line end: the stream is not a Kubernetes watch")
        }
        return events
    }

    /// Call at the end of the stream: the last event may lack its newline.
    public mutating func finish() throws(KubeError) -> WatchEvent<Object>? {
        try takeLine()
    }

    private mutating func takeLine() throws(KubeError) -> WatchEvent<Object>? {
        defer { pending.removeAll(keepingCapacity: pending.count < 1 << 16) }
        guard pending.contains(where: { $0 != 0x20 && $0 != 0x0D && $0 != 0x09 }) else { return nil }
        return try WatchStreamDecoder.decodeEvent(pending)
    }

    /// Decodes one {"type": ..., "object": ...} line.
    public static func decodeEvent(_ line: [UInt8]) throws(KubeError) -> WatchEvent<Object> {
        if Object.self == JSONObject.self {
            return try decodeRawEvent(line)
        }
        let envelope: WatchEnvelope<Object>
        do {
            envelope = try KubeJSON.decode(WatchEnvelope<Object>.self, from: line)
        } catch {
            let preview = String(decoding: line.prefix(200), as: UTF8.self)
            throw KubeError(kind: .decoding, message: "undecodable watch event (\(error)): \(preview)")
        }
        return envelope.event
    }

    private static func decodeRawEvent(_ line: [UInt8]) throws(KubeError) -> WatchEvent<Object> {
        let v: JSONValue
        do { v = try JSONValue.parse(line) } catch {
            throw KubeError(kind: .decoding, message: "undecodable watch event: \(error)")
        }
        let type = v["type"]?.stringValue ?? ""
        let object = v["object"] ?? .null
        func typed() -> Object { JSONObject(object) as! Object }
        switch type {
        case "ADDED": return .added(typed())
        case "MODIFIED": return .modified(typed())
        case "DELETED": return .deleted(typed())
        case "BOOKMARK": return .bookmark(resourceVersion: object[path: ["metadata", "resourceVersion"]]?.stringValue ?? "")
        case "ERROR":
            let st = (try? JSONObject(object).decode(as: Status.self)) ?? Status(message: object.jsonText)
            return .error(st)
        default:
            throw KubeError(kind: .decoding, message: "unknown watch event type \"\(type)\"")
        }
    }
}

/// {"type":"ADDED","object":{...}}: decodes `object` by `type` (BOOKMARK carries only metadata, ERROR a Status).
private struct WatchEnvelope<Object: Codable & Sendable>: Decodable {
    var event: WatchEvent<Object>

    enum CodingKeys: String, CodingKey { case type, object }

    private struct BookmarkObject: Decodable {
        struct Meta: Decodable { var resourceVersion: String? }
        var metadata: Meta?
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let type = try c.decode(String.self, forKey: .type)
        switch type {
        case "ADDED": event = .added(try c.decode(Object.self, forKey: .object))
        case "MODIFIED": event = .modified(try c.decode(Object.self, forKey: .object))
        case "DELETED": event = .deleted(try c.decode(Object.self, forKey: .object))
        case "BOOKMARK":
            let b = try c.decode(BookmarkObject.self, forKey: .object)
            event = .bookmark(resourceVersion: b.metadata?.resourceVersion ?? "")
        case "ERROR": event = .error(try c.decode(Status.self, forKey: .object))
        default:
            throw DecodingError.dataCorruptedError(forKey: .type, in: c, debugDescription: "unknown watch event type \"\(type)\"")
        }
    }
}
