// PATCH bodies: strategic merge (status updates like kubelet), JSON merge (RFC 7386), JSON patch (RFC 6902).

import EdgedCore

/// A PATCH request body with its content type.
public struct Patch: Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable {
        case strategicMerge = "application/strategic-merge-patch+json"
        case merge = "application/merge-patch+json"
        case json = "application/json-patch+json"
    }

    public var kind: Kind
    public var body: JSONValue

    public init(kind: Kind, body: JSONValue) {
        self.kind = kind
        self.body = body
    }

    public var contentType: String { kind.rawValue }

    /// A strategic merge patch: lists with merge keys (conditions by type, containerStatuses by name, ...) are
    /// merged element by element on the server, so a status patch need not carry every element.
    public static func strategicMerge(_ body: JSONValue) -> Patch { Patch(kind: .strategicMerge, body: body) }

    /// A strategic merge patch from an Encodable (nil fields are left alone).
    public static func strategicMerge<T: Encodable>(encoding value: T) throws -> Patch {
        Patch(kind: .strategicMerge, body: try KubeJSON.value(of: value))
    }

    /// {"status": <status>} as a strategic merge patch, for pods/status and nodes/status.
    public static func status<T: Encodable>(_ status: T) throws -> Patch {
        Patch(kind: .strategicMerge, body: .object([("status", try KubeJSON.value(of: status))]))
    }

    /// {"status": <status>} as a strategic merge patch that also removes what an earlier status had and this one
    /// has not. A strategic merge keeps every key a patch leaves out, so without the nulls a container that went
    /// from waiting to running shows both states, and a message that was cleared stays; kubelet sends the two-way
    /// diff from the API's status for the same reason. `previous`: the statuses the API may hold (the last one
    /// written, the one last read); list elements are paired by their merge keys.
    public static func status<T: Encodable>(_ status: T, replacing previous: [T?]) throws -> Patch {
        var body = try KubeJSON.value(of: status)
        for old in previous { if let old { body = body.clearingKeys(of: try KubeJSON.value(of: old), field: "status") } }
        return Patch(kind: .strategicMerge, body: .object([("status", body)]))
    }

    /// The merge keys (patchMergeKey) of the lists in pod and node statuses.
    static let statusMergeKeys: [String: String] = [
        "conditions": "type", "addresses": "type", "containerStatuses": "name", "initContainerStatuses": "name",
        "ephemeralContainerStatuses": "name", "podIPs": "ip", "hostIPs": "ip", "volumesAttached": "name",
    ]

    /// An RFC 7386 merge patch: objects merge, null deletes a key, arrays are replaced whole.
    public static func merge(_ body: JSONValue) -> Patch { Patch(kind: .merge, body: body) }

    /// The merge patch from `old` to `new` (nil when they are equal).
    public static func mergeDiff<T: Encodable>(from old: T, to new: T) throws -> Patch? {
        guard let d = JSONValue.mergePatch(from: try KubeJSON.value(of: old), to: try KubeJSON.value(of: new)) else { return nil }
        return Patch(kind: .merge, body: d)
    }

    /// An RFC 6902 JSON patch.
    public static func json(_ operations: [JSONPatchOperation]) -> Patch {
        Patch(kind: .json, body: .array(operations.map(\.json)))
    }
}

/// One RFC 6902 operation. Paths are JSON pointers ("/metadata/labels/app"); use `pointer(_:)` to escape keys.
public struct JSONPatchOperation: Sendable, Equatable {
    public var op: String
    public var path: String
    public var value: JSONValue?
    public var from: String?

    public static func add(_ path: String, _ value: JSONValue) -> Self { .init(op: "add", path: path, value: value) }
    public static func replace(_ path: String, _ value: JSONValue) -> Self { .init(op: "replace", path: path, value: value) }
    public static func remove(_ path: String) -> Self { .init(op: "remove", path: path) }
    /// Fails the whole patch unless the value at `path` equals `value` (an optimistic-lock guard).
    public static func test(_ path: String, _ value: JSONValue) -> Self { .init(op: "test", path: path, value: value) }

    public init(op: String, path: String, value: JSONValue? = nil, from: String? = nil) {
        self.op = op
        self.path = path
        self.value = value
        self.from = from
    }

    /// A JSON pointer from keys: ["metadata", "labels", "a/b"] → "/metadata/labels/a~1b".
    public static func pointer(_ keys: [String]) -> String {
        keys.map { key in
            var out = ""
            for ch in key {
                switch ch {
                case "~": out += "~0"
                case "/": out += "~1"
                default: out.append(ch)
                }
            }
            return "/" + out
        }.joined()
    }

    var json: JSONValue {
        var members: [(String, JSONValue)] = [("op", .string(op)), ("path", .string(path))]
        if let from { members.append(("from", .string(from))) }
        if let value { members.append(("value", value)) }
        return .object(members)
    }
}

extension JSONValue {
    /// This value with a null for each object key that `old` has and this value has not, recursing into objects
    /// and into the elements of merge-keyed lists (paired with `old`'s by key). `field` names this value.
    func clearingKeys(of old: JSONValue, field: String) -> JSONValue {
        switch (self, old) {
        case (.object(let members), .object(let oldMembers)):
            var out = members.map { key, value in
                (key, oldMembers.first { $0.0 == key }.map { value.clearingKeys(of: $0.1, field: key) } ?? value)
            }
            for (key, _) in oldMembers where !members.contains(where: { $0.0 == key }) { out.append((key, .null)) }
            return .object(out)
        case (.array(let items), .array(let oldItems)):
            guard let mergeKey = Patch.statusMergeKeys[field] else { return self }
            return .array(items.map { item in
                guard let key = item[mergeKey], let match = oldItems.first(where: { $0[mergeKey] == key }) else { return item }
                return item.clearingKeys(of: match, field: field)
            })
        default:
            return self
        }
    }
}
