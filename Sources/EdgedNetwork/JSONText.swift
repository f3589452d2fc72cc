// JSON for CNI: configs and plugin results go through EdgedCore's parser (plugins' fields must pass through
// untouched), plus the few accessors CNI code needs.

import EdgedCore

enum JSONText {
    struct Failure: Error {
        let message: String
    }

    /// Parses one JSON document (EdgedCore's parser); throws with the byte offset of the first error.
    static func parse(_ text: String) throws(Failure) -> JSONValue {
        try parse(Array(text.utf8))
    }

    static func parse(_ bytes: [UInt8]) throws(Failure) -> JSONValue {
        do { return try JSONValue.parse(bytes) } catch { throw Failure(message: "\(error.message) at byte \(error.offset)") }
    }
}

extension JSONValue {
    /// A copy of this object with `key` set to `value` (replacing it in place, or appended).
    func setting(_ key: String, _ value: JSONValue) -> JSONValue {
        guard case .object(var members) = self else { return self }
        if let at = members.firstIndex(where: { $0.0 == key }) { members[at].1 = value } else { members.append((key, value)) }
        return .object(members)
    }

    /// A copy of this object without `key`.
    func removing(_ key: String) -> JSONValue {
        guard case .object(let members) = self else { return self }
        return .object(members.filter { $0.0 != key })
    }

    var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    var isObject: Bool {
        if case .object = self { return true }
        return false
    }

    var intValue: Int? {
        if case .number(let n) = self { return Int(n) }
        return nil
    }

    var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }
}
