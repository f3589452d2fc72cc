// Label and field selectors, parsed like apimachinery's labels.Parse and fields.ParseSelector, so that lists and
// watches served from the store select what kube-apiserver would (and refuse what it would refuse, with its words).

import EdgedCore
import EdgedKube

/// A selector that does not parse. `message` is what kube-apiserver would answer with its 400 BadRequest.
public struct SelectorError: Error, Sendable, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

// MARK: - Label selectors

/// A label selector: every requirement must hold. Syntax: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`,
/// `k`, `!k`, and `k>n` / `k<n` (integers), comma-separated.
public struct LabelSelector: Sendable {
    enum Op: Sendable { case equals, notEquals, inSet, notIn, exists, doesNotExist, greaterThan, lessThan }
    struct Requirement: Sendable {
        var key: String
        var op: Op
        var values: [String]
    }
    var requirements: [Requirement]

    /// Parses a selector; "" (or only spaces) selects everything. Throws SelectorError with the API server's text,
    /// e.g. "unable to parse requirement: found '', expected: ',' or ')'" for "a in (x".
    public init(parsing text: String) throws {
        var parser = LabelSelectorParser(tokens: LabelSelectorLexer.tokens(text))
        requirements = try parser.parse()
    }

    /// True when the selector has no requirement (it selects everything).
    public var isEmpty: Bool { requirements.isEmpty }

    public func matches(_ labels: [String: String]) -> Bool {
        requirements.allSatisfy { r in
            let value = labels[r.key]
            switch r.op {
            case .equals, .inSet: return value.map { r.values.contains($0) } ?? false
            case .notEquals, .notIn: return value.map { !r.values.contains($0) } ?? true
            case .exists: return value != nil
            case .doesNotExist: return value == nil
            case .greaterThan, .lessThan:
                guard let have = value.flatMap({ Int64($0) }), let want = r.values.first.flatMap({ Int64($0) }) else {
                    return false
                }
                return r.op == .greaterThan ? have > want : have < want
            }
        }
    }

    /// Matches the object's metadata.labels (an object without labels has none).
    public func matches(object: JSONValue) -> Bool {
        if requirements.isEmpty { return true }
        var labels: [String: String] = [:]
        if case .object(let members)? = object[path: ["metadata", "labels"]] {
            for (k, v) in members { if case .string(let s) = v { labels[k] = s } }
        }
        return matches(labels)
    }
}

/// The tokens of apimachinery's selector lexer.
enum LabelToken: Equatable {
    case identifier(String)
    case doesNotExist        // !
    case notEquals           // !=
    case equals              // =
    case doubleEquals        // ==
    case greaterThan         // >
    case lessThan            // <
    case inKeyword           // in
    case notInKeyword        // notin
    case openPar, closedPar, comma
    case error(String)
    case end

    /// The text the parser's errors quote.
    var literal: String {
        switch self {
        case .identifier(let s): return s
        case .doesNotExist: return "!"
        case .notEquals: return "!="
        case .equals: return "="
        case .doubleEquals: return "=="
        case .greaterThan: return ">"
        case .lessThan: return "<"
        case .inKeyword: return "in"
        case .notInKeyword: return "notin"
        case .openPar: return "("
        case .closedPar: return ")"
        case .comma: return ","
        case .error(let s): return s
        case .end: return ""
        }
    }
}

enum LabelSelectorLexer {
    static let symbols: [String: LabelToken] = [
        "!": .doesNotExist, "!=": .notEquals, "=": .equals, "==": .doubleEquals, ">": .greaterThan, "<": .lessThan,
        "(": .openPar, ")": .closedPar, ",": .comma,
    ]

    static func isSpace(_ c: Character) -> Bool { c == " " || c == "\t" || c == "\r" || c == "\n" }
    static func isSymbol(_ c: Character) -> Bool { "=!(),><".contains(c) }

    /// Every token of `text`, ending with `.end`.
    static func tokens(_ text: String) -> [LabelToken] {
        var out: [LabelToken] = []
        var i = text.startIndex
        while true {
            while i < text.endIndex, isSpace(text[i]) { i = text.index(after: i) }
            guard i < text.endIndex else { break }
            if isSymbol(text[i]) {
                // The longest run of symbol characters that is a token ("!=" rather than "!" then "=").
                var buffer = ""
                var best: (LabelToken, String.Index)?
                var j = i
                while j < text.endIndex, isSymbol(text[j]) {
                    buffer.append(text[j])
                    j = text.index(after: j)
                    if let t = symbols[buffer] { best = (t, j) } else if best != nil { break }
                }
                guard let (token, end) = best else {
                    out.append(.error("error expected: keyword found '\(buffer)'"))
                    i = j
                    continue
                }
                out.append(token)
                i = end
            } else {
                var j = i
                while j < text.endIndex, !isSpace(text[j]), !isSymbol(text[j]) { j = text.index(after: j) }
                let word = String(text[i..<j])
                out.append(word == "in" ? .inKeyword : word == "notin" ? .notInKeyword : .identifier(word))
                i = j
            }
        }
        out.append(.end)
        return out
    }
}

/// apimachinery's recursive-descent selector parser, with its error messages.
struct LabelSelectorParser {
    let tokens: [LabelToken]
    var position = 0

    /// In value context the keywords are plain identifiers ("a=in" selects the value "in").
    private func asValue(_ t: LabelToken) -> LabelToken {
        switch t {
        case .inKeyword, .notInKeyword: return .identifier(t.literal)
        default: return t
        }
    }
    func lookahead() -> LabelToken { asValue(tokens[min(position, tokens.count - 1)]) }
    mutating func consume() -> LabelToken {
        let t = lookahead()
        position += 1
        return t
    }
    mutating func consumeOperator() -> LabelToken {
        let t = tokens[min(position, tokens.count - 1)]
        position += 1
        return t
    }

    mutating func parse() throws(SelectorError) -> [LabelSelector.Requirement] {
        var requirements: [LabelSelector.Requirement] = []
        while true {
            let t = lookahead()
            switch t {
            case .identifier, .doesNotExist:
                do {
                    requirements.append(try parseRequirement())
                } catch {
                    throw SelectorError("unable to parse requirement: \(error)")
                }
                let next = consume()
                switch next {
                case .end: return requirements
                case .comma:
                    let after = lookahead()
                    switch after {
                    case .identifier, .doesNotExist: break
                    default: throw SelectorError("found '\(after.literal)', expected: identifier after ','")
                    }
                default:
                    throw SelectorError("found '\(next.literal)', expected: ',' or 'end of string'")
                }
            case .end:
                return requirements
            default:
                throw SelectorError("found '\(t.literal)', expected: !, identifier, or 'end of string'")
            }
        }
    }

    mutating func parseRequirement() throws(SelectorError) -> LabelSelector.Requirement {
        var t = consume()
        var op: LabelSelector.Op?
        if t == .doesNotExist {
            op = .doesNotExist
            t = consume()
        }
        guard case .identifier(let key) = t else { throw SelectorError("found '\(t.literal)', expected: identifier") }
        try LabelSyntax.validateKey(key)
        // "!a" takes no value: whatever follows it is the caller's to judge ("!a=b" fails there).
        if op == .doesNotExist { return LabelSelector.Requirement(key: key, op: .doesNotExist, values: []) }
        switch lookahead() {
        case .end, .comma: return LabelSelector.Requirement(key: key, op: .exists, values: [])
        default: break
        }
        let opToken = consumeOperator()
        let values: [String]
        switch opToken {
        case .inKeyword: op = .inSet; values = try parseValueSet()
        case .notInKeyword: op = .notIn; values = try parseValueSet()
        case .equals, .doubleEquals: op = .equals; values = try parseExactValue()
        case .notEquals: op = .notEquals; values = try parseExactValue()
        case .greaterThan: op = .greaterThan; values = try parseExactValue()
        case .lessThan: op = .lessThan; values = try parseExactValue()
        default:
            throw SelectorError("found '\(opToken.literal)', expected: in, notin, =, ==, !=, gt, lt")
        }
        for v in values { try LabelSyntax.validateValue(v) }
        if op == .greaterThan || op == .lessThan, Int64(values[0]) == nil {
            throw SelectorError("for 'Gt', 'Lt' operators, the value must be an integer: \"\(values[0])\"")
        }
        return LabelSelector.Requirement(key: key, op: op ?? .exists, values: values)
    }

    mutating func parseExactValue() throws(SelectorError) -> [String] {
        switch lookahead() {
        case .end, .comma: return [""]
        default: break
        }
        let t = consume()
        guard case .identifier(let v) = t else { throw SelectorError("found '\(t.literal)', expected: identifier") }
        return [v]
    }

    /// "(a, b, c)"; "()" and empty members stand for the empty value.
    mutating func parseValueSet() throws(SelectorError) -> [String] {
        let open = consume()
        guard open == .openPar else { throw SelectorError("found '\(open.literal)' expected: '('") }
        let first = lookahead()
        switch first {
        case .closedPar:
            _ = consume()
            return [""]
        case .identifier, .comma:
            let values = try parseValueList()
            let close = consume()
            guard close == .closedPar else { throw SelectorError("found '\(close.literal)', expected: ')'") }
            return values
        default:
            throw SelectorError("found '\(first.literal)', expected: ',', ')' or identifier")
        }
    }

    /// The members up to (not including) the closing parenthesis.
    mutating func parseValueList() throws(SelectorError) -> [String] {
        var values: [String] = []
        func add(_ v: String) { if !values.contains(v) { values.append(v) } }
        while true {
            let t = consume()
            switch t {
            case .identifier(let v):
                add(v)
                let next = lookahead()
                switch next {
                case .comma: continue
                case .closedPar: return values
                default: throw SelectorError("found '\(next.literal)', expected: ',' or ')'")
                }
            case .comma:
                if values.isEmpty { add("") }  // "(,"
                let next = lookahead()
                if next == .closedPar { add(""); return values }  // ",)"
                if next == .comma { _ = consume(); add("") }      // ",,"
            default:
                throw SelectorError("found '\(t.literal)', expected: ',', or identifier")
            }
        }
    }
}

/// Label key and value syntax (apimachinery's IsQualifiedName and IsValidLabelValue).
enum LabelSyntax {
    /// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters; "" is allowed (as a value).
    static func isLabelName(_ s: Substring) -> Bool {
        guard s.utf8.count <= 63 else { return false }
        guard let first = s.utf8.first, let last = s.utf8.last else { return true }
        func alnum(_ b: UInt8) -> Bool {
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
        }
        return alnum(first) && alnum(last) && s.utf8.allSatisfy { alnum($0) || $0 == 0x2D || $0 == 0x5F || $0 == 0x2E }
    }

    /// A DNS-1123 subdomain: lower-case alphanumerics, '-' and '.', starting and ending alphanumeric, ≤ 253.
    static func isDNSSubdomain(_ s: Substring) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 253 else { return false }
        return s.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            guard let f = label.utf8.first, let l = label.utf8.last else { return false }
            func alnum(_ b: UInt8) -> Bool { (b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x7A) }
            return alnum(f) && alnum(l) && label.utf8.allSatisfy { alnum($0) || $0 == 0x2D }
        }
    }

    static let nameRule = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
        + "alphanumeric character, at most 63 characters"

    static func validateKey(_ key: String) throws(SelectorError) {
        let parts = key.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let name = parts.count == 2 ? parts[1] : parts[0]
        if parts.count == 2, !isDNSSubdomain(parts[0]) {
            throw SelectorError("invalid label key \"\(key)\": prefix part must be a lowercase DNS-1123 subdomain")
        }
        if name.isEmpty || !isLabelName(name) {
            throw SelectorError("invalid label key \"\(key)\": name part \(nameRule)")
        }
    }

    static func validateValue(_ value: String) throws(SelectorError) {
        if !isLabelName(Substring(value)) {
            throw SelectorError("invalid label value: \"\(value)\": a valid label \(nameRule)")
        }
    }
}

// MARK: - Field selectors

/// A field selector: `path=value`, `path==value`, `path!=value`, comma-separated, where path is a dotted path into
/// the object's JSON (metadata.name, spec.nodeName, status.phase, involvedObject.name, type, ...). A field the
/// object lacks compares as "" (as in the API server's field sets), except the few the API server defaults: the
/// booleans spec.hostNetwork and spec.unschedulable ("false") and an Event's "source" (source.component).
/// Values escape ',', '=' and '\' with a backslash.
public struct FieldSelector: Sendable {
    struct Requirement: Sendable {
        var path: [String]
        var field: String
        var equals: Bool
        var value: String
    }
    var requirements: [Requirement]

    /// Parses a selector; "" selects everything. Throws SelectorError with the API server's text, e.g.
    /// "invalid selector: 'a'; can't understand 'a'".
    public init(parsing text: String) throws {
        var reqs: [Requirement] = []
        for term in Self.splitTerms(text) where !term.isEmpty {
            guard let (field, op, raw) = Self.splitTerm(term) else {
                throw SelectorError("invalid selector: '\(text)'; can't understand '\(term)'")
            }
            guard !field.isEmpty else {
                throw SelectorError("invalid selector: '\(text)'; '\(term)' has no field name before '\(op)'")
            }
            let value = try Self.unescape(raw)
            reqs.append(Requirement(path: Self.path(of: field), field: field, equals: op != "!=", value: value))
        }
        requirements = reqs
    }

    /// True when the selector has no requirement (it selects everything).
    public var isEmpty: Bool { requirements.isEmpty }

    /// The value `field` must equal when the selector pins it (fields.Selector.RequiresExactMatch): "n1" for
    /// "metadata.name=n1" or "metadata.name==n1"; nil when the field is absent or only excluded (!=).
    public func exactMatch(_ field: String) -> String? {
        requirements.first { $0.field == field && $0.equals }?.value
    }

    public func matches(object: JSONValue) -> Bool {
        requirements.allSatisfy { r in
            let actual: String
            switch object[path: r.path] {
            case .string(let s)?: actual = s
            case .number(let n)?: actual = n
            case .bool(let b)?: actual = b ? "true" : "false"
            default: actual = Self.defaultValues[r.field] ?? ""
            }
            return (actual == r.value) == r.equals
        }
    }

    static let defaultValues = ["spec.hostNetwork": "false", "spec.unschedulable": "false"]

    /// The JSON path of a field name ("source" of an Event is its source.component).
    static func path(of field: String) -> [String] {
        field == "source" ? ["source", "component"] : field.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
    }

    /// Splits on commas not escaped by a backslash.
    static func splitTerms(_ text: String) -> [Substring] {
        guard !text.isEmpty else { return [] }
        var terms: [Substring] = []
        var start = text.startIndex
        var escaped = false
        var i = text.startIndex
        while i < text.endIndex {
            let c = text[i]
            if escaped {
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else if c == "," {
                terms.append(text[start..<i])
                start = text.index(after: i)
            }
            i = text.index(after: i)
        }
        terms.append(text[start...])
        return terms
    }

    /// The first operator in the term, "!=" before "==" before "=": (field, operator, raw value).
    static func splitTerm(_ term: Substring) -> (String, String, Substring)? {
        var i = term.startIndex
        while i < term.endIndex {
            let rest = term[i...]
            for op in ["!=", "==", "="] where rest.hasPrefix(op) {
                let valueStart = term.index(i, offsetBy: op.count)
                return (String(term[..<i]), op, term[valueStart...])
            }
            i = term.index(after: i)
        }
        return nil
    }

    /// Removes the escapes of `\\`, `\,` and `\=`; anything else after a backslash, or a bare ',' / '=', is an error.
    static func unescape(_ raw: Substring) throws(SelectorError) -> String {
        var out = ""
        var escaped = false
        for c in raw {
            if escaped {
                guard c == "\\" || c == "," || c == "=" else {
                    throw SelectorError("invalid field selector: invalid escape sequence: \\\(c)")
                }
                out.append(c)
                escaped = false
                continue
            }
            switch c {
            case "\\": escaped = true
            case ",", "=": throw SelectorError("invalid field selector: unescaped character in value: '\(c)'")
            default: out.append(c)
            }
        }
        if escaped { throw SelectorError("invalid field selector: invalid escape sequence: \\") }
        return out
    }
}
