// PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and an approximation of strategic merge
// patch that knows the merge keys of the fields a kubelet patches.

import Foundation

extension KubeAPIServerCore {
    func applyPatch(_ old: KJSON, contentType: String, patch: Data, resource r: KubeResource) throws -> KJSON {
        let type = contentType.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        let parsed: KJSON
        do { parsed = try KJSON.parse(patch) } catch {
            throw APIError.badRequest("error decoding patch: \(error)")
        }
        switch type {
        case "application/merge-patch+json":
            guard parsed.object != nil else { throw APIError.badRequest("the merge patch is not a JSON object") }
            return Self.mergePatch(old, parsed)
        case "application/strategic-merge-patch+json":
            guard parsed.object != nil else { throw APIError.badRequest("the strategic merge patch is not a JSON object") }
            return try Self.strategicMerge(old, parsed, field: "", parent: "")
        case "application/json-patch+json":
            guard let ops = parsed.array else { throw APIError.badRequest("the JSON patch is not an array of operations") }
            return try Self.jsonPatch(old, ops)
        default:
            throw APIError(code: 415, reason: "UnsupportedMediaType",
                           message: "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json")
        }
    }

    /// RFC 7386: objects merge recursively, null deletes, anything else replaces.
    static func mergePatch(_ target: KJSON, _ patch: KJSON) -> KJSON {
        guard let p = patch.object else { return patch }
        var out = target.object ?? [:]
        for (k, v) in p {
            if v.isNull { out[k] = nil } else { out[k] = mergePatch(out[k] ?? .null, v) }
        }
        return .object(out)
    }

    // MARK: Strategic merge

    /// The merge key of a list field (patchMergeKey in the Go types), by field name and parent field.
    static func mergeKey(field: String, parent: String) -> String? {
        switch field {
        case "conditions", "addresses": return "type"
        case "containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses", "containers", "initContainers",
             "ephemeralContainers", "volumes", "env", "imagePullSecrets", "volumeDevices": return "name"
        case "podIPs", "hostIPs": return "ip"
        case "volumeMounts": return "mountPath"
        case "taints": return "key"
        case "ownerReferences": return "uid"
        case "ports": return parent == "spec" ? "port" : "containerPort"
        default: return nil
        }
    }

    /// Lists of scalars that merge as sets (patchStrategy:"merge" on a []string).
    static let mergedScalarLists: Set<String> = ["finalizers"]

    static func strategicMerge(_ target: KJSON, _ patch: KJSON, field: String, parent: String) throws -> KJSON {
        guard var p = patch.object else { return patch }
        if p["$patch"]?.string == "replace" {
            p["$patch"] = nil
            return .object(p.filter { !$0.key.hasPrefix("$") })
        }
        if p["$patch"]?.string == "delete" { return .null }
        var out = target.object ?? [:]
        for (k, v) in p {
            if k.hasPrefix("$setElementOrder/") || k == "$retainKeys" || k == "$patch" { continue }
            if k.hasPrefix("$deleteFromPrimitiveList/") {
                let name = String(k.dropFirst("$deleteFromPrimitiveList/".count))
                let remove = v.array ?? []
                out[name] = out[name]?.array.map { KJSON.array($0.filter { !remove.contains($0) }) }
                continue
            }
            if v.isNull { out[k] = nil; continue }
            switch v {
            case .object:
                let merged = try strategicMerge(out[k] ?? .null, v, field: k, parent: field)
                out[k] = merged.isNull ? nil : merged
            case .array(let items):
                out[k] = try mergeList(out[k]?.array, items, field: k, parent: field)
            default:
                out[k] = v
            }
        }
        return .object(out)
    }

    private static func mergeList(_ current: [KJSON]?, _ patch: [KJSON], field: String, parent: String) throws -> KJSON {
        if patch.contains(where: { $0["$patch"]?.string == "replace" }) {
            return .array(patch.filter { $0["$patch"]?.string != "replace" })
        }
        if mergedScalarLists.contains(field) {
            var out = current ?? []
            for item in patch where !out.contains(item) { out.append(item) }
            return .array(out)
        }
        guard let key = mergeKey(field: field, parent: parent), patch.allSatisfy({ $0.object != nil }) else {
            return .array(patch)   // no merge key: the list is replaced, like the atomic/replace strategy
        }
        var out = current ?? []
        for item in patch {
            guard let kv = item[key] else {
                throw APIError(code: 422, reason: "Invalid", message: "map: \(item.text) does not contain declared merge key: \(key)")
            }
            let idx = out.firstIndex { $0[key] == kv }
            if item["$patch"]?.string == "delete" {
                if let idx { out.remove(at: idx) }
                continue
            }
            if let idx { out[idx] = try strategicMerge(out[idx], item, field: field, parent: parent) }
            else { out.append(try strategicMerge(.object([:]), item, field: field, parent: parent)) }
        }
        return .array(out)
    }

    // MARK: JSON patch

    /// RFC 6902 add/remove/replace/test (plus move/copy); a failed test or a missing path is 422 Invalid.
    static func jsonPatch(_ doc: KJSON, _ ops: [KJSON]) throws -> KJSON {
        var doc = doc
        for op in ops {
            guard let name = op["op"]?.string, let path = op["path"]?.string else {
                throw APIError.badRequest("a JSON patch operation needs \"op\" and \"path\": \(op.text)")
            }
            let tokens = try pointer(path)
            switch name {
            case "add": doc = try set(doc, tokens, op["value"] ?? .null, insert: true)
            case "replace":
                _ = try get(doc, tokens)
                doc = try set(doc, tokens, op["value"] ?? .null, insert: false)
            case "remove": doc = try remove(doc, tokens)
            case "test":
                let actual = try get(doc, tokens)
                if actual != (op["value"] ?? .null) {
                    throw APIError(code: 422, reason: "Invalid", message: "the server rejected our request due to an error in our request: testing value \(path) failed")
                }
            case "move", "copy":
                guard let from = op["from"]?.string else { throw APIError.badRequest("\(name) needs \"from\"") }
                let value = try get(doc, try pointer(from))
                if name == "move" { doc = try remove(doc, try pointer(from)) }
                doc = try set(doc, tokens, value, insert: true)
            default: throw APIError.badRequest("unknown JSON patch operation \"\(name)\"")
            }
        }
        return doc
    }

    private static func pointer(_ path: String) throws -> [String] {
        if path.isEmpty { return [] }
        guard path.hasPrefix("/") else { throw APIError.badRequest("JSON pointer \"\(path)\" must start with '/'") }
        return path.dropFirst().split(separator: "/", omittingEmptySubsequences: false).map {
            $0.split(separator: "~1", omittingEmptySubsequences: false).joined(separator: "/")
                .split(separator: "~0", omittingEmptySubsequences: false).joined(separator: "~")
        }
    }

    private static func missing(_ tokens: [String]) -> APIError {
        APIError(code: 422, reason: "Invalid",
                 message: "the server rejected our request due to an error in our request: path /\(tokens.joined(separator: "/")) does not exist")
    }

    private static func get(_ doc: KJSON, _ tokens: [String]) throws -> KJSON {
        var cur = doc
        for t in tokens {
            if let o = cur.object, let v = o[t] { cur = v }
            else if let a = cur.array, let i = Int(t), i >= 0, i < a.count { cur = a[i] }
            else { throw missing(tokens) }
        }
        return cur
    }

    private static func set(_ doc: KJSON, _ tokens: [String], _ value: KJSON, insert: Bool) throws -> KJSON {
        guard let first = tokens.first else { return value }
        let rest = Array(tokens.dropFirst())
        if var o = doc.object {
            if rest.isEmpty { o[first] = value; return .object(o) }
            guard let child = o[first] else { throw missing(tokens) }
            o[first] = try set(child, rest, value, insert: insert)
            return .object(o)
        }
        if var a = doc.array {
            if rest.isEmpty {
                if first == "-", insert { a.append(value); return .array(a) }
                guard let i = Int(first), i >= 0, i <= a.count, insert || i < a.count else { throw missing(tokens) }
                if insert { a.insert(value, at: i) } else { a[i] = value }
                return .array(a)
            }
            guard let i = Int(first), i >= 0, i < a.count else { throw missing(tokens) }
            a[i] = try set(a[i], rest, value, insert: insert)
            return .array(a)
        }
        throw missing(tokens)
    }

    private static func remove(_ doc: KJSON, _ tokens: [String]) throws -> KJSON {
        guard let first = tokens.first else { throw missing(tokens) }
        let rest = Array(tokens.dropFirst())
        if var o = doc.object {
            guard let child = o[first] else { throw missing(tokens) }
            o[first] = rest.isEmpty ? nil : try remove(child, rest)
            return .object(o)
        }
        if var a = doc.array, let i = Int(first), i >= 0, i < a.count {
            if rest.isEmpty { a.remove(at: i) } else { a[i] = try remove(a[i], rest) }
            return .array(a)
        }
        throw missing(tokens)
    }
}
