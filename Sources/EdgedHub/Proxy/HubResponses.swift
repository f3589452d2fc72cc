// Small helpers of the hub's request path: kube-style Status answers and JSON bits.

import EdgedCore

enum HubStatus {
    /// A `Status` failure, as kube-apiserver writes it.
    static func write(_ writer: any HubResponseWriter, code: Int, reason: String, message: String,
                      details: [(String, String)] = []) async throws {
        var members: [(String, JSONValue)] = [
            ("kind", .string("Status")), ("apiVersion", .string("v1")), ("metadata", .object([])),
            ("status", .string("Failure")), ("message", .string(message)), ("reason", .string(reason)),
        ]
        if !details.isEmpty { members.append(("details", .object(details.map { ($0.0, .string($0.1)) }))) }
        members.append(("code", .number(String(code))))
        try await writeJSON(writer, status: code, body: HubJSON.bytes(.object(members)))
    }

    static func writeJSON(_ writer: any HubResponseWriter, status: Int, body: [UInt8]) async throws {
        try await writer.writeHead(status: status, headers: [("Content-Type", "application/json"),
                                                             ("Content-Length", String(body.count))])
        try await writer.writeBody(body)
        try await writer.finish()
    }
}

enum HubJSON {
    static func bytes(_ value: JSONValue) -> [UInt8] { Array(value.jsonText.utf8) }

    static func quoted(_ s: String) -> String { JSONValue.string(s).jsonText }

    static func stringMap(_ value: JSONValue?) -> [String: String]? {
        guard case .object(let members)? = value else { return nil }
        var out: [String: String] = [:]
        for (k, v) in members { if let s = v.stringValue { out[k] = s } }
        return out
    }

    /// RFC 7386: objects merge key by key, null removes, anything else (arrays too) replaces.
    static func applyMergePatch(_ target: JSONValue, _ patch: JSONValue) -> JSONValue {
        guard case .object(let p) = patch else { return patch }
        var result: JSONValue = { if case .object = target { return target }; return .object([]) }()
        for (key, value) in p {
            if case .null = value {
                result.set([key], to: nil)
            } else {
                result.set([key], to: applyMergePatch(result[key] ?? .null, value))
            }
        }
        return result
    }

    /// A strategic merge patch applied as a merge patch, minus its `$`-directives (the hub's local copy only
    /// needs to look like what the API server will make of it; the server applies the real patch on replay).
    static func applyStrategicPatch(_ target: JSONValue, _ patch: JSONValue) -> JSONValue {
        applyMergePatch(target, withoutDirectives(patch))
    }

    private static func withoutDirectives(_ v: JSONValue) -> JSONValue {
        switch v {
        case .object(let m): return .object(m.filter { !$0.0.hasPrefix("$") }.map { ($0.0, withoutDirectives($0.1)) })
        case .array(let a): return .array(a.map(withoutDirectives))
        default: return v
        }
    }

    /// The object with kind and apiVersion first (list items come without them).
    static func withKind(_ object: JSONValue, kind: String, apiVersion: String) -> JSONValue {
        guard case .object(var m) = object else { return object }
        if !m.contains(where: { $0.0 == "kind" }) { m.insert(("kind", .string(kind)), at: 0) }
        if !m.contains(where: { $0.0 == "apiVersion" }) { m.insert(("apiVersion", .string(apiVersion)), at: 1) }
        return .object(m)
    }
}
