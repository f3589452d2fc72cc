// One JSON configuration for everything EdgedKube sends and reads, plus raw-JSON helpers (parse, path-set, diff)
// for objects edged must write back without losing fields it does not model.

import EdgedCore

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The JSON coding rules of the Kubernetes API as edged uses them: Data as base64 (Secret data, CSR requests),
/// nil optionals omitted, slashes not escaped.
public enum KubeJSON {
    public static func decoder() -> JSONDecoder {
        JSONDecoder()
    }

    public static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.withoutEscapingSlashes]
        return e
    }

    public static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        Array(try encoder().encode(value))
    }

    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        try decoder().decode(type, from: Data(bytes))
    }

    /// Converts an Encodable value to a JSONValue tree (to edit it or diff it).
    public static func value<T: Encodable>(of object: T) throws -> JSONValue {
        try JSONValue.parse(encode(object))
    }
}

extension JSONValue {
    /// The value at `path` (object keys), or nil when some step is missing or not an object.
    public subscript(path path: [String]) -> JSONValue? {
        var cur: JSONValue? = self
        for key in path { cur = cur?[key] }
        return cur
    }

    /// Sets the value at `path`, creating objects for missing steps and replacing non-object steps.
    /// Setting `nil` removes the last key. Key order of existing members is kept; new keys go last.
    public mutating func set(_ path: [String], to value: JSONValue?) {
        guard let first = path.first else {
            self = value ?? .null
            return
        }
        var members: [(String, JSONValue)]
        if case .object(let m) = self { members = m } else { members = [] }
        let rest = Array(path.dropFirst())
        if let i = members.firstIndex(where: { $0.0 == first }) {
            if rest.isEmpty, value == nil {
                members.remove(at: i)
            } else {
                var child = members[i].1
                child.set(rest, to: value)
                members[i].1 = child
            }
        } else if rest.isEmpty {
            if let value { members.append((first, value)) }
        } else if value != nil {
            var child = JSONValue.object([])
            child.set(rest, to: value)
            members.append((first, child))
        }
        self = .object(members)
    }

    /// A copy with the value at `path` set (see `set(_:to:)`).
    public func setting(_ path: [String], to value: JSONValue?) -> JSONValue {
        var copy = self
        copy.set(path, to: value)
        return copy
    }

    /// The RFC 7386 merge patch that turns `old` into `new`: changed keys with their new values, removed keys as
    /// null, arrays replaced whole. Returns nil when nothing changed.
    public static func mergePatch(from old: JSONValue, to new: JSONValue) -> JSONValue? {
        guard case .object(let o) = old, case .object(let n) = new else {
            return old == new ? nil : new
        }
        var out: [(String, JSONValue)] = []
        for (key, newValue) in n {
            if let oldValue = o.first(where: { $0.0 == key })?.1 {
                if let d = mergePatch(from: oldValue, to: newValue) { out.append((key, d)) }
            } else {
                out.append((key, newValue))
            }
        }
        for (key, _) in o where !n.contains(where: { $0.0 == key }) {
            out.append((key, .null))
        }
        return out.isEmpty ? nil : .object(out)
    }
}
