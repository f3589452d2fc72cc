// YAML documents parsed with libyaml (a system library) into JSON trees.

import CYAML

/// Parses YAML (1.2 core schema scalars; JSON is valid YAML) into JSON values, one per document.
///
/// libyaml does the parsing; this type only builds the tree from its events. Plain scalars become
/// null/bool/number where the core schema says so; quoted scalars are always strings. Anchors and aliases
/// are resolved. Errors carry libyaml's line and column.
public enum YAMLParser {
    public static func parse(_ text: String) throws(EdgedError) -> [JSONValue] {
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else { throw EdgedError(.invalidManifest, "YAML parser could not start") }
        defer { yaml_parser_delete(&parser) }
        let bytes = Array(text.utf8)
        return try bytes.withUnsafeBufferPointer { buf throws(EdgedError) -> [JSONValue] in
            yaml_parser_set_input_string(&parser, buf.baseAddress, buf.count)
            var builder = Builder()
            while true {
                var event = yaml_event_t()
                guard yaml_parser_parse(&parser, &event) == 1 else {
                    let problem = parser.problem.map { String(cString: $0) } ?? "syntax error"
                    let mark = parser.problem_mark
                    throw EdgedError(.invalidManifest, "YAML error at line \(mark.line + 1), column \(mark.column + 1): \(problem)")
                }
                defer { yaml_event_delete(&event) }
                if event.type == YAML_STREAM_END_EVENT { break }
                try builder.handle(&event)
            }
            return builder.documents
        }
    }

    private struct Builder {
        enum Frame {
            case sequence([JSONValue], anchor: String?)
            case mapping([(String, JSONValue)], pendingKey: String?, anchor: String?)
        }
        var stack: [Frame] = []
        var documents: [JSONValue] = []
        var anchors: [String: JSONValue] = [:]
        var current: JSONValue?

        mutating func handle(_ event: inout yaml_event_t) throws(EdgedError) {
            switch event.type {
            case YAML_DOCUMENT_START_EVENT:
                current = nil
                anchors = [:]
            case YAML_DOCUMENT_END_EVENT:
                documents.append(current ?? .null)
            case YAML_SEQUENCE_START_EVENT:
                stack.append(.sequence([], anchor: event.data.sequence_start.anchor.map { String(cString: $0) }))
            case YAML_MAPPING_START_EVENT:
                stack.append(.mapping([], pendingKey: nil, anchor: event.data.mapping_start.anchor.map { String(cString: $0) }))
            case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                guard let frame = stack.popLast() else { return }
                switch frame {
                case let .sequence(items, anchor):
                    try add(.array(items), anchor: anchor)
                case let .mapping(members, _, anchor):
                    try add(.object(members), anchor: anchor)
                }
            case YAML_SCALAR_EVENT:
                let s = event.data.scalar
                let text = String(decoding: UnsafeBufferPointer(start: s.value, count: s.length), as: UTF8.self)
                let plain = s.style == YAML_PLAIN_SCALAR_STYLE && s.tag == nil
                let tag = s.tag.map { String(cString: $0) }
                let value: JSONValue = plain ? YAMLParser.resolvePlain(text) : (tag == "tag:yaml.org,2002:int" || tag == "!!int" ? .number(text) : .string(text))
                try add(value, anchor: s.anchor.map { String(cString: $0) })
            case YAML_ALIAS_EVENT:
                let name = String(cString: event.data.alias.anchor)
                guard let value = anchors[name] else { throw EdgedError(.invalidManifest, "YAML alias *\(name) names no anchor") }
                try add(value, anchor: nil)
            default:
                break
            }
        }

        mutating func add(_ value: JSONValue, anchor: String?) throws(EdgedError) {
            if let anchor { anchors[anchor] = value }
            guard let top = stack.popLast() else {
                current = value
                return
            }
            switch top {
            case .sequence(var items, let a):
                items.append(value)
                stack.append(.sequence(items, anchor: a))
            case .mapping(var members, let key, let a):
                if let key {
                    if key == "<<", case .object(let merged) = value {
                        for (k, v) in merged where !members.contains(where: { $0.0 == k }) { members.append((k, v)) }
                    } else {
                        members.removeAll { $0.0 == key }
                        members.append((key, value))
                    }
                    stack.append(.mapping(members, pendingKey: nil, anchor: a))
                } else {
                    let k: String
                    switch value {
                    case .string(let s): k = s
                    case .number(let n): k = n
                    case .bool(let b): k = b ? "true" : "false"
                    case .null: k = "null"
                    default: throw EdgedError(.invalidManifest, "YAML mapping keys must be scalars")
                    }
                    stack.append(.mapping(members, pendingKey: k, anchor: a))
                }
            }
        }
    }

    /// YAML 1.2 core schema resolution of a plain scalar.
    static func resolvePlain(_ s: String) -> JSONValue {
        switch s {
        case "", "~", "null", "Null", "NULL": return .null
        case "true", "True", "TRUE": return .bool(true)
        case "false", "False", "FALSE": return .bool(false)
        default: break
        }
        if let n = jsonNumber(s) { return .number(n) }
        return .string(s)
    }

    /// The JSON spelling of a YAML core-schema number, or nil if `s` is not one.
    static func jsonNumber(_ s: String) -> String? {
        var body = Substring(s)
        var sign = ""
        if body.first == "-" || body.first == "+" {
            if body.first == "-" { sign = "-" }
            body = body.dropFirst()
        }
        guard let first = body.first else { return nil }
        if body.hasPrefix("0x"), let v = Int64(body.dropFirst(2), radix: 16) { return sign + String(v) }
        if body.hasPrefix("0o"), let v = Int64(body.dropFirst(2), radix: 8) { return sign + String(v) }
        guard first.isASCII, first.isNumber || first == "." else { return nil }
        if body.allSatisfy({ $0.isASCII && $0.isNumber }) {
            let trimmed = body.drop { $0 == "0" }
            return sign + (trimmed.isEmpty ? "0" : String(trimmed))
        }
        guard body.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == "." || $0 == "e" || $0 == "E" || $0 == "-" || $0 == "+") }),
              let d = Double(body), d.isFinite else { return nil }
        var text = String(body)
        if text.hasPrefix(".") { text = "0" + text }
        if text.hasSuffix(".") { text += "0" }
        text = text.replacingDotExponent()
        return sign + text
    }
}

extension String {
    /// "1.e5" is valid YAML but not JSON; insert the missing digit.
    fileprivate func replacingDotExponent() -> String {
        var out = ""
        var prev: Character?
        for c in self {
            if (c == "e" || c == "E"), prev == "." { out.append("0") }
            out.append(c)
            prev = c
        }
        return out
    }
}
