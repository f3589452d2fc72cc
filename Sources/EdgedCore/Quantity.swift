// Kubernetes resource quantities ("100m", "0.5", "128Mi", "1G", "2e3").

/// A resource quantity as written in a manifest. Keeps the original text for round-trips and
/// parses it on demand; an invalid quantity is reported by `value`/`milliValue` throwing, so one bad
/// pod fails with a message naming the quantity instead of the whole manifest failing to decode.
public struct Quantity: Codable, Sendable, Equatable, Hashable, CustomStringConvertible, ExpressibleByStringLiteral {
    public let text: String

    public init(_ text: String) { self.text = text }
    public init(stringLiteral value: String) { self.text = value }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) {
            text = s
        } else if let i = try? c.decode(Int64.self) {
            text = String(i)
        } else {
            let d = try c.decode(Double.self)
            text = String(d)
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(text)
    }

    public var description: String { text }

    /// The value in thousandths (cpu "100m" → 100, "1" → 1000), rounded up like Kubernetes.
    public func milliValue() throws(EdgedError) -> Int64 {
        let (mantissa, scale) = try parse()
        let v = mantissa * scale * 1000
        return Int64(v.rounded(.up))
    }

    /// The integer value (memory "128Mi" → 134217728), rounded up like Kubernetes.
    public func value() throws(EdgedError) -> Int64 {
        let (mantissa, scale) = try parse()
        return Int64((mantissa * scale).rounded(.up))
    }

    private static let suffixes: [(String, Double)] = [
        ("Ki", 1024), ("Mi", 1_048_576), ("Gi", 1_073_741_824), ("Ti", 1_099_511_627_776),
        ("Pi", 1_125_899_906_842_624), ("Ei", 1_152_921_504_606_846_976),
        ("n", 1e-9), ("u", 1e-6), ("m", 1e-3), ("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12), ("P", 1e15), ("E", 1e18),
    ]

    private func parse() throws(EdgedError) -> (Double, Double) {
        let s = text.trimmingSpaces()
        guard !s.isEmpty else { throw EdgedError(.invalidQuantity, "empty quantity") }
        var number = Substring(s)
        var scale = 1.0
        for (suffix, factor) in Self.suffixes where s.hasSuffix(suffix) {
            number = s.dropLast(suffix.count)
            scale = factor
            break
        }
        if scale == 1.0, let e = number.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            guard let exp = Int(number[number.index(after: e)...]) else {
                throw EdgedError(.invalidQuantity, "invalid quantity \"\(text)\"")
            }
            var p = 1.0
            for _ in 0..<abs(exp) { p *= 10 }
            scale = exp >= 0 ? p : 1 / p
            number = number[..<e]
        }
        guard let m = Double(number), m.isFinite, m >= 0,
              number.allSatisfy({ $0.isNumber || $0 == "." || $0 == "+" })
        else {
            throw EdgedError(.invalidQuantity, "invalid quantity \"\(text)\": want a number with an optional suffix (m, Ki, Mi, Gi, k, M, G)")
        }
        return (m, scale)
    }
}

extension String {
    /// The string without leading and trailing spaces, tabs and newlines (no Foundation needed).
    public func trimmingSpaces() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(self[first...last])
    }
}
