// A Kubernetes object kept as raw JSON, for read-modify-write of objects whose fields edged does not all model.

import EdgedCore

/// Any API object as a JSON tree: edit the fields you own with `set(_:to:)` and write it back; every other field
/// (including ones newer servers add) goes back unchanged. `KubeClient` reads and writes it byte-for-byte through
/// `JSONValue.parse`/`jsonText`, keeping key order and number text; the Codable conformance is only a fallback.
public struct JSONObject: KubeObject, Equatable {
    public var value: JSONValue

    public init(_ value: JSONValue) { self.value = value }

    /// The decoded metadata (name, namespace, uid, resourceVersion, labels, ...); empty if absent or malformed.
    public var metadata: ObjectMeta {
        guard let m = value["metadata"],
              let meta = try? KubeJSON.decode(ObjectMeta.self, from: Array(m.jsonText.utf8)) else { return ObjectMeta() }
        return meta
    }

    public subscript(path path: [String]) -> JSONValue? { value[path: path] }

    public mutating func set(_ path: [String], to newValue: JSONValue?) { value.set(path, to: newValue) }

    /// Decodes the whole object as a typed model.
    public func decode<T: Decodable>(as type: T.Type) throws -> T {
        try KubeJSON.decode(type, from: Array(value.jsonText.utf8))
    }

    public init(from decoder: Decoder) throws {
        value = try JSONObject.decodeValue(from: decoder)
    }

    public func encode(to encoder: Encoder) throws {
        try JSONObject.encodeValue(value, to: encoder)
    }

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { return nil }
    }

    private struct Element: Codable {
        var value: JSONValue
        init(_ v: JSONValue) { value = v }
        init(from decoder: Decoder) throws { value = try JSONObject.decodeValue(from: decoder) }
        func encode(to encoder: Encoder) throws { try JSONObject.encodeValue(value, to: encoder) }
    }

    static func decodeValue(from decoder: Decoder) throws -> JSONValue {
        if let keyed = try? decoder.container(keyedBy: Key.self) {
            var members: [(String, JSONValue)] = []
            for k in keyed.allKeys {
                members.append((k.stringValue, try keyed.decode(Element.self, forKey: k).value))
            }
            return .object(members)
        }
        if var list = try? decoder.unkeyedContainer() {
            var items: [JSONValue] = []
            while !list.isAtEnd { items.append(try list.decode(Element.self).value) }
            return .array(items)
        }
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { return .null }
        if let b = try? c.decode(Bool.self) { return .bool(b) }
        if let i = try? c.decode(Int64.self) { return .number(String(i)) }
        if let d = try? c.decode(Double.self) { return .number(String(d)) }
        return .string(try c.decode(String.self))
    }

    static func encodeValue(_ value: JSONValue, to encoder: Encoder) throws {
        switch value {
        case .object(let members):
            var c = encoder.container(keyedBy: Key.self)
            for (k, v) in members { try c.encode(Element(v), forKey: Key(stringValue: k)) }
        case .array(let items):
            var c = encoder.unkeyedContainer()
            for v in items { try c.encode(Element(v)) }
        case .null:
            var c = encoder.singleValueContainer()
            try c.encodeNil()
        case .bool(let b):
            var c = encoder.singleValueContainer()
            try c.encode(b)
        case .number(let n):
            var c = encoder.singleValueContainer()
            if let i = Int64(n) { try c.encode(i) } else { try c.encode(Double(n) ?? 0) }
        case .string(let s):
            var c = encoder.singleValueContainer()
            try c.encode(s)
        }
    }
}
