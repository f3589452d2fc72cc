// The agentIdentifiers metadata: what a Konnectivity agent says it can reach ("host=node-1&ipv4=10.0.0.5").

/// The names an agent answers to: its node name(s) and addresses. Sent by the agent as the `agentIdentifiers`
/// metadata, URL-query encoded like the Go agent (`host=NODE&ipv4=IP&ipv6=IP`); the server routes a CONNECT to
/// the agent whose identifiers contain the destination host.
public struct AgentIdentifiers: Sendable, Equatable {
    public var hosts: [String]
    public var ipv4: [String]
    public var ipv6: [String]

    public init(hosts: [String] = [], ipv4: [String] = [], ipv6: [String] = []) {
        self.hosts = hosts
        self.ipv4 = ipv4
        self.ipv6 = ipv6
    }

    /// True when `host` (a name or an address, IPv6 with or without brackets) is one of these identifiers.
    public func contains(_ host: String) -> Bool {
        var h = host.lowercased()
        if h.hasPrefix("["), h.hasSuffix("]") { h = String(h.dropFirst().dropLast()) }
        return hosts.contains { $0.lowercased() == h } || ipv4.contains(h) || ipv6.contains { $0.lowercased() == h }
    }

    /// The metadata value: `host=a&ipv4=b&ipv6=c`, each value percent-encoded.
    public var encoded: String {
        let pairs = hosts.map { ("host", $0) } + ipv4.map { ("ipv4", $0) } + ipv6.map { ("ipv6", $0) }
        return pairs.map { "\($0.0)=\(Self.percentEncode($0.1))" }.joined(separator: "&")
    }

    /// Parses the metadata value; unknown keys (cidr, default-route...) are ignored, as the Go server does.
    public static func parse(_ text: String) -> AgentIdentifiers {
        var ids = AgentIdentifiers()
        for pair in text.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard kv.count == 2, let value = percentDecode(String(kv[1])), !value.isEmpty else { continue }
            switch percentDecode(String(kv[0])) {
            case "host": ids.hosts.append(value)
            case "ipv4": ids.ipv4.append(value)
            case "ipv6": ids.ipv6.append(value)
            default: continue
            }
        }
        return ids
    }

    static func percentEncode(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            let c = Character(Unicode.Scalar(b))
            if c.isASCII && (c.isLetter || c.isNumber || "-._~".contains(c)) {
                out.append(c)
            } else {
                let hex = String(b, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return out
    }

    static func percentDecode(_ s: String) -> String? {
        var bytes: [UInt8] = []
        var it = Array(s.utf8).makeIterator()
        while let b = it.next() {
            if b == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
            } else if b == UInt8(ascii: "%") {
                guard let h = it.next(), let l = it.next(),
                      let v = UInt8(String(decoding: [h, l], as: UTF8.self), radix: 16) else { return nil }
                bytes.append(v)
            } else {
                bytes.append(b)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }
}

/// Splits "host:port" or "[v6]:port" into a host (brackets removed) and a port; nil when malformed.
func splitHostPort(_ address: String) -> (host: String, port: Int)? {
    let host: Substring, portText: Substring
    if address.hasPrefix("[") {
        guard let close = address.firstIndex(of: "]") else { return nil }
        host = address[address.index(after: address.startIndex)..<close]
        let rest = address[address.index(after: close)...]
        guard rest.hasPrefix(":") else { return nil }
        portText = rest.dropFirst()
    } else {
        guard let colon = address.lastIndex(of: ":") else { return nil }
        host = address[..<colon]
        portText = address[address.index(after: colon)...]
        if host.contains(":") { return nil }
    }
    guard !host.isEmpty, let port = Int(portText), (1...65535).contains(port) else { return nil }
    return (String(host), port)
}
