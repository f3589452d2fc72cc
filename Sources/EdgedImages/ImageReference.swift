// Image references, normalised like docker does: "busybox" is docker.io/library/busybox:latest.

/// A parsed image reference: registry host (with port), repository path, and a tag and/or a digest.
public struct ImageReference: Sendable, Hashable, CustomStringConvertible {
    /// The registry host as written in names, "docker.io" for Docker Hub.
    public var registry: String
    /// The repository path, "library/busybox" for official Docker Hub images.
    public var repository: String
    public var tag: String?
    /// "sha256:<64 hex>".
    public var digest: String?

    /// Parses `text` with docker's rules: the first path component is a registry if it has a dot or a colon or
    /// is "localhost"; Docker Hub names without a slash get "library/"; no tag and no digest means ":latest".
    ///
    /// - Throws: `ImageError.invalidReference` naming the text and what is wrong with it.
    public init(parsing text: String) throws(ImageError) {
        func invalid(_ why: String) -> ImageError {
            ImageError(.invalidReference, "invalid image reference \"\(text)\": \(why)")
        }
        var rest = Substring(text)
        guard !rest.isEmpty else { throw invalid("it is empty") }
        if let at = rest.firstIndex(of: "@") {
            let d = String(rest[rest.index(after: at)...])
            guard Digest.isValid(d) else { throw invalid("the digest must be sha256:<64 lowercase hex digits>") }
            digest = d
            rest = rest[..<at]
        }
        if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
            let t = String(rest[rest.index(after: colon)...])
            guard Self.isValidTag(t) else { throw invalid("bad tag \"\(t)\"") }
            tag = t
            rest = rest[..<colon]
        }
        var components = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        if components.count > 1,
           components[0].contains(".") || components[0].contains(":") || components[0] == "localhost" {
            registry = components.removeFirst()
        } else {
            registry = "docker.io"
        }
        if registry == "index.docker.io" || registry == "registry-1.docker.io" { registry = "docker.io" }
        if registry == "docker.io" && components.count == 1 { components.insert("library", at: 0) }
        guard !components.isEmpty, components.allSatisfy(Self.isValidPathComponent) else {
            throw invalid("repository names are lowercase letters, digits and . _ - separated by /")
        }
        repository = components.joined(separator: "/")
        if tag == nil && digest == nil { tag = "latest" }
    }

    /// The full name, "docker.io/library/busybox:latest" (with "@sha256:…" when a digest was given).
    public var normalized: String {
        var s = "\(registry)/\(repository)"
        if let tag { s += ":\(tag)" }
        if let digest { s += "@\(digest)" }
        return s
    }

    /// The name without tag or digest, "docker.io/library/busybox".
    public var name: String { "\(registry)/\(repository)" }

    public var description: String { normalized }

    /// The manifest reference to ask the registry for: the digest when there is one, else the tag.
    var manifestReference: String { digest ?? tag ?? "latest" }

    static func isValidTag(_ t: String) -> Bool {
        let u = Array(t.utf8)
        guard !u.isEmpty, u.count <= 128 else { return false }
        func word(_ c: UInt8) -> Bool {
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x5f
        }
        return word(u[0]) && u.allSatisfy { word($0) || $0 == 0x2e || $0 == 0x2d }
    }

    static func isValidPathComponent(_ c: String) -> Bool {
        let u = Array(c.utf8)
        guard let first = u.first, let last = u.last else { return false }
        func alnum(_ c: UInt8) -> Bool { (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x7a) }
        return alnum(first) && alnum(last) && u.allSatisfy { alnum($0) || $0 == 0x2e || $0 == 0x5f || $0 == 0x2d }
    }
}
