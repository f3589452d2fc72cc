// Label and field selectors, parsed like apimachinery's labels.Parse / fields.ParseSelector.

import Foundation

/// A label selector: every requirement must hold.
struct LabelSelector: Sendable {
    enum Op: Sendable { case equals, notEquals, inSet, notIn, exists, doesNotExist }
    struct Requirement: Sendable {
        let key: String
        let op: Op
        let values: [String]
    }
    let requirements: [Requirement]

    static let everything = LabelSelector(requirements: [])

    /// Parses "a=b,c!=d,e in (x,y),f notin (z),g,!h". Throws a message for a 400 BadRequest.
    static func parse(_ text: String) throws -> LabelSelector {
        var parts: [String] = []
        var depth = 0, cur = ""
        for ch in text {
            if ch == "(" { depth += 1 } else if ch == ")" { depth -= 1 }
            if ch == ",", depth == 0 { parts.append(cur); cur = "" } else { cur.append(ch) }
        }
        parts.append(cur)
        var reqs: [Requirement] = []
        for raw in parts {
            let p = raw.trimmingCharacters(in: .whitespaces)
            if p.isEmpty { if parts.count == 1 { break }; throw SelectorError("found ',', expected: identifier") }
            reqs.append(try requirement(p))
        }
        return LabelSelector(requirements: reqs)
    }

    private static func requirement(_ p: String) throws -> Requirement {
        if p.hasPrefix("!") {
            let key = String(p.dropFirst()).trimmingCharacters(in: .whitespaces)
            try validKey(key)
            return Requirement(key: key, op: .doesNotExist, values: [])
        }
        for (token, op) in [("!=", Op.notEquals), ("==", Op.equals), ("=", Op.equals)] {
            if let r = p.range(of: token) {
                let key = p[..<r.lowerBound].trimmingCharacters(in: .whitespaces)
                let value = p[r.upperBound...].trimmingCharacters(in: .whitespaces)
                try validKey(key)
                return Requirement(key: key, op: op, values: [value])
            }
        }
        let words = p.split(separator: " ", maxSplits: 1).map(String.init)
        if words.count == 2 {
            let rest = words[1].trimmingCharacters(in: .whitespaces)
            let op: Op
            let setText: Substring
            if rest.hasPrefix("notin") { op = .notIn; setText = rest.dropFirst(5) }
            else if rest.hasPrefix("in") { op = .inSet; setText = rest.dropFirst(2) }
            else { throw SelectorError("unable to parse requirement: found '\(rest)', expected: in, notin, =, ==, !=") }
            let s = setText.trimmingCharacters(in: .whitespaces)
            guard s.hasPrefix("("), s.hasSuffix(")") else {
                throw SelectorError("unable to parse requirement: found '\(s)', expected: '('")
            }
            let values = s.dropFirst().dropLast().split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            try validKey(words[0])
            return Requirement(key: words[0], op: op, values: values)
        }
        try validKey(p)
        return Requirement(key: p, op: .exists, values: [])
    }

    private static func validKey(_ key: String) throws {
        let ok = !key.isEmpty && key.allSatisfy { $0.isLetter || $0.isNumber || "-_./".contains($0) }
        if !ok { throw SelectorError("unable to parse requirement: invalid label key \"\(key)\"") }
    }

    func matches(_ labels: [String: String]) -> Bool {
        requirements.allSatisfy { r in
            let v = labels[r.key]
            switch r.op {
            case .equals: return v == r.values[0]
            case .notEquals: return v != r.values[0]
            case .inSet: return v.map { r.values.contains($0) } ?? false
            case .notIn: return v.map { !r.values.contains($0) } ?? true
            case .exists: return v != nil
            case .doesNotExist: return v == nil
            }
        }
    }
}

/// A field selector: "a=b,c!=d" over the few fields each resource supports.
struct FieldSelector: Sendable {
    struct Requirement: Sendable {
        let field: String
        let equals: Bool
        let value: String
    }
    let requirements: [Requirement]

    static let everything = FieldSelector(requirements: [])

    /// Parses and checks each field against `resource`'s supported labels (the real server answers 400 for others).
    static func parse(_ text: String, for resource: KubeResource) throws -> FieldSelector {
        var reqs: [Requirement] = []
        for raw in text.split(separator: ",") {
            let p = String(raw)
            let (token, equals) = p.contains("!=") ? ("!=", false) : (p.contains("==") ? ("==", true) : ("=", true))
            guard let r = p.range(of: token) else { throw SelectorError("invalid selector: '\(text)'; can't understand '\(p)'") }
            let field = String(p[..<r.lowerBound]), value = String(p[r.upperBound...])
            let supported = ["metadata.name", "metadata.namespace"] + resource.fieldLabels
            guard supported.contains(field) else {
                throw SelectorError("field label not supported: \(field)")
            }
            reqs.append(Requirement(field: field, equals: equals, value: value))
        }
        return FieldSelector(requirements: reqs)
    }

    /// The object's name when the selector pins metadata.name (watches of one object).
    var pinnedName: String? { requirements.first { $0.field == "metadata.name" && $0.equals }?.value }

    func matches(_ object: KJSON) -> Bool {
        requirements.allSatisfy { r in
            let actual: String
            switch r.field {
            case "source": actual = object[path: ["source", "component"]]?.selectorText ?? ""
            case "spec.hostNetwork", "spec.unschedulable":
                actual = object[path: r.field.split(separator: ".").map(String.init)]?.selectorText ?? "false"
            default: actual = object[path: r.field.split(separator: ".").map(String.init)]?.selectorText ?? ""
            }
            return (actual == r.value) == r.equals
        }
    }
}

/// A selector that does not parse; the server answers 400 BadRequest with this message.
struct SelectorError: Error {
    let message: String
    init(_ m: String) { message = m }
}
