// Structure-aware mutation for JSON inputs: byte mutations almost always break the syntax, so the checks behind the
// parser (manifest validation, Codable decoding, CNI result fields) are reached by changing one node of a valid
// document instead: another type, an odd number or string, a removed or duplicated member, deep nesting.

import EdgedCore
import EdgedTestSupport

enum JSONMutator {
    static let oddValues: [JSONValue] = [
        .null, .bool(true), .number("0"), .number("-1"), .number("1e999"), .number("9223372036854775808"),
        .number("-0.0000001"), .string(""), .string("../../etc/passwd"), .string(String(repeating: "a", count: 5000)),
        .string("\u{0}\u{FFFF}é"), .string("-1"), .string("1Ei"), .string("999999999999m"), .array([]), .object([]),
    ]

    /// `input` with one node changed, or nil when it is not JSON.
    static func mutate(_ input: [UInt8], rng: inout SeededRNG) -> [UInt8]? {
        guard let doc = try? JSONValue.parse(input) else { return nil }
        var count = 0
        countNodes(doc, &count)
        let target = Int(rng.next() % UInt64(max(count, 1)))
        var index = 0
        let mutated = rewrite(doc, target: target, index: &index, rng: &rng)
        return Array(mutated.jsonText.utf8)
    }

    private static func countNodes(_ v: JSONValue, _ n: inout Int) {
        n += 1
        switch v {
        case .array(let items): for i in items { countNodes(i, &n) }
        case .object(let members): for (_, m) in members { countNodes(m, &n) }
        default: break
        }
    }

    private static func rewrite(_ v: JSONValue, target: Int, index: inout Int, rng: inout SeededRNG) -> JSONValue {
        let me = index
        index += 1
        if me == target { return change(v, rng: &rng) }
        switch v {
        case .array(let items):
            return .array(items.map { rewrite($0, target: target, index: &index, rng: &rng) })
        case .object(let members):
            return .object(members.map { ($0.0, rewrite($0.1, target: target, index: &index, rng: &rng)) })
        default:
            return v
        }
    }

    private static func change(_ v: JSONValue, rng: inout SeededRNG) -> JSONValue {
        switch rng.next() % 5 {
        case 0:
            return oddValues[Int(rng.next() % UInt64(oddValues.count))]
        case 1:
            // Deep nesting.
            var nested = v
            for _ in 0..<(1 + Int(rng.next() % 300)) { nested = .array([nested]) }
            return nested
        case 2:
            if case .object(var members) = v, !members.isEmpty {
                let i = Int(rng.next() % UInt64(members.count))
                if rng.next() % 2 == 0 { members.remove(at: i) } else { members.append(members[i]) }
                return .object(members)
            }
            if case .array(var items) = v, !items.isEmpty {
                let i = Int(rng.next() % UInt64(items.count))
                if rng.next() % 2 == 0 { items.remove(at: i) } else { items += Array(repeating: items[i], count: 1 + Int(rng.next() % 100)) }
                return .array(items)
            }
            return .array([v, v])
        case 3:
            if case .string(let s) = v, !s.isEmpty {
                var scalars = Array(s.unicodeScalars)
                scalars[Int(rng.next() % UInt64(scalars.count))] = ["/", ":", " ", "\u{0}", "%", "\n"].randomElement(using: &rng)!
                return .string(String(String.UnicodeScalarView(scalars)))
            }
            return .object([("unexpected", v)])
        default:
            return .string(v.jsonText)
        }
    }
}
