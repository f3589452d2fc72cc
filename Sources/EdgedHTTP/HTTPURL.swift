// The parts of an http(s) URL the client needs: scheme, host, port and request target.

/// A parsed `http(s)://host[:port]/path?query` (no user info; a fragment is dropped).
struct HTTPURL: Sendable, Hashable {
    var tls: Bool
    /// The host without brackets: "example.com", "10.0.0.1", "::1".
    var host: String
    var port: Int
    /// Path and query, never empty: "/v2/" or "/api/v1/pods?watch=1".
    var target: String

    /// "host:port" with IPv6 hosts in brackets; used in the Host header (without a default port) and in messages.
    var authority: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return "\(h):\(port)"
    }

    var hostHeader: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return port == (tls ? 443 : 80) ? h : "\(h):\(port)"
    }

    /// Parses `url`.
    ///
    /// - Throws: `HTTPError.invalidURL` naming the URL and what is wrong with it.
    init(_ url: String) throws(HTTPError) {
        func bad(_ why: String) -> HTTPError { HTTPError(.invalidURL, "invalid URL \"\(url)\": \(why)") }
        var rest = Substring(url)
        if rest.lowercased().hasPrefix("https://") {
            tls = true
            rest = rest.dropFirst(8)
        } else if rest.lowercased().hasPrefix("http://") {
            tls = false
            rest = rest.dropFirst(7)
        } else {
            throw bad("the scheme must be http:// or https://")
        }
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
        var authority = rest[..<authorityEnd]
        var target = rest[authorityEnd...]
        if let hash = target.firstIndex(of: "#") { target = target[..<hash] }
        guard !authority.contains("@") else { throw bad("user info in URLs is not supported; send an Authorization header") }
        var portText: Substring?
        if authority.first == "[" {
            guard let close = authority.firstIndex(of: "]") else { throw bad("unclosed [ in the IPv6 host") }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.first == ":" else { throw bad("unexpected text after the IPv6 host") }
                portText = after.dropFirst()
            }
        } else {
            if let colon = authority.lastIndex(of: ":") {
                portText = authority[authority.index(after: colon)...]
                authority = authority[..<colon]
            }
            host = String(authority).lowercased()
        }
        guard !host.isEmpty else { throw bad("no host") }
        guard !host.contains(where: { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" }) else { throw bad("space in the host") }
        if let portText {
            guard let p = Int(portText), (1...65535).contains(p) else { throw bad("port \"\(portText)\" is not a number in 1...65535") }
            port = p
        } else {
            port = tls ? 443 : 80
        }
        if target.isEmpty { self.target = "/" }
        else if target.first == "?" { self.target = "/" + target }
        else { self.target = String(target) }
        guard !self.target.contains(where: { $0 == " " || $0 == "\r" || $0 == "\n" }) else {
            throw bad("unencoded space or line break in the path")
        }
    }
}
