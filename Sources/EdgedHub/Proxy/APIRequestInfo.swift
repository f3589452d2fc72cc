// What a request to the API server asks for, worked out from its method and target the way kube-apiserver's
// RequestInfo resolver does: the hub keys its cache on it, serves it offline and picks response filters with it.

/// A resource request: verb, group/version/resource, namespace, name, subresource and the query.
///
/// Differences from kube-apiserver's RequestInfo, all for the cache's sake: a Namespace object itself
/// (`/api/v1/namespaces/foo`) has `namespace` nil, since it is cluster-scoped; `name` comes only from the path (a list
/// with `fieldSelector=metadata.name=x` stays a list without a name, the hub applies the selector itself); and the
/// streaming subresources (exec, attach, portforward, proxy) and the legacy `/proxy/` prefix have the verb `connect`,
/// as they are passed through, never cached.
public struct APIRequestInfo: Sendable, Equatable {
    public enum Verb: String, Sendable { case get, list, watch, create, update, patch, delete, deleteCollection, connect }

    public var verb: Verb
    /// "" for the core group (/api/v1).
    public var group: String
    public var version: String
    /// The plural resource name, e.g. "pods".
    public var resource: String
    /// "status", "log", "exec", ...
    public var subresource: String?
    public var namespace: String?
    public var name: String?
    /// The query parameters, percent-decoded ("+" is a space); the first of repeated keys wins, like Go's Get.
    public var query: [String: String]
    /// Set when the query says allowWatchBookmarks=true (or 1).
    public var allowWatchBookmarks: Bool
    /// The query's timeoutSeconds when it is a whole number.
    public var timeoutSeconds: Int?

    /// The resource as the store names it (StoreKey.resource): "/v1/pods", "discovery.k8s.io/v1/endpointslices".
    public var resourceKey: String { "\(group)/\(version)/\(resource)" }
    public var labelSelector: String? { query["labelSelector"] }
    public var fieldSelector: String? { query["fieldSelector"] }
    public var resourceVersion: String? { query["resourceVersion"] }

    /// Subresources that are streams to a pod, node or service rather than objects.
    static let connectSubresources: Set<String> = ["exec", "attach", "portforward", "proxy"]
    /// Subresources of a Namespace object: /api/v1/namespaces/foo/status is the namespace's status, not a
    /// resource named "status" in namespace foo.
    static let namespaceSubresources: Set<String> = ["status", "finalize"]

    /// Parses `method` and `target` (origin-form path and query; an absolute URL is accepted too).
    ///
    /// Returns nil for non-resource paths (/version, /api, /api/v1, /apis/g/v, /healthz, /openapi/v2, ...), for
    /// methods that name no verb (OPTIONS), and for targets kube-apiserver would refuse (bad percent-encoding, an
    /// empty path segment, /api/v1/watch with nothing after it). The verb comes from the method and whether the path
    /// names an object: GET/HEAD → get, or list / watch (?watch=1|true, or the legacy /watch/ prefix) without a name;
    /// POST → create; PUT → update; PATCH → patch; DELETE → delete, or deleteCollection without a name.
    public init?(method: String, target: String) {
        var rawPath = Substring(target)
        if !rawPath.hasPrefix("/"), let colon = rawPath.firstIndex(of: ":"), rawPath[colon...].hasPrefix("://") {
            // Absolute form: drop scheme and authority.
            let rest = rawPath[rawPath.index(colon, offsetBy: 3)...]
            rawPath = rest.firstIndex(where: { $0 == "/" || $0 == "?" }).map { rest[$0...] } ?? ""
        }
        if let hash = rawPath.firstIndex(of: "#") { rawPath = rawPath[..<hash] }
        var rawQuery: Substring = ""
        if let q = rawPath.firstIndex(of: "?") {
            rawQuery = rawPath[rawPath.index(after: q)...]
            rawPath = rawPath[..<q]
        }
        guard let path = PercentDecoding.decode(rawPath, plusIsSpace: false) else { return nil }
        var parts = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        // Like Go's strings.Trim(path, "/"): leading and trailing slashes do not make segments.
        while parts.first == "" { parts.removeFirst() }
        while parts.last == "" { parts.removeLast() }
        guard parts.count >= 3, !parts.contains("") else { return nil }

        // /api/<version>/... or /apis/<group>/<version>/...
        var rest = parts[...]
        switch rest.removeFirst() {
        case "api":
            group = ""
        case "apis":
            guard rest.count >= 3 else { return nil }
            group = rest.removeFirst()
        default:
            return nil
        }
        version = rest.removeFirst()

        let query = PercentDecoding.query(rawQuery)
        self.query = query
        allowWatchBookmarks = query["allowWatchBookmarks"].map(Self.queryBool) ?? false
        timeoutSeconds = query["timeoutSeconds"].flatMap { Int($0) }

        // The special verbs of the path: /watch/... (legacy watch) and /proxy/... (legacy proxy).
        var verb: Verb
        var verbFromMethod = false
        switch rest.first {
        case "watch", "proxy":
            guard rest.count >= 2 else { return nil }
            verb = rest.removeFirst() == "watch" ? .watch : .connect
        default:
            verbFromMethod = true
            switch method.uppercased() {
            case "GET", "HEAD": verb = .get
            case "POST": verb = .create
            case "PUT": verb = .update
            case "PATCH": verb = .patch
            case "DELETE": verb = .delete
            default: return nil
            }
        }

        // /namespaces/<ns>/<resource>/...: the namespace, then parts relative to the resource. A namespace alone, or
        // one of its own subresources, is the Namespace object (cluster-scoped).
        var namespace: String?
        if rest.first == "namespaces", rest.count > 1 {
            let ns = rest[rest.startIndex + 1]
            if rest.count > 2, !Self.namespaceSubresources.contains(rest[rest.startIndex + 2]) {
                namespace = ns
                rest = rest.dropFirst(2)
            }
        }
        self.namespace = namespace

        // resource/name/subresource/anything-else
        let p = Array(rest)
        resource = p[0]
        name = p.count >= 2 ? p[1] : nil
        subresource = p.count >= 3 && verb != .connect ? p[2] : nil

        if verbFromMethod {
            if let sub = subresource, Self.connectSubresources.contains(sub) {
                verb = .connect
            } else if name == nil, verb == .get {
                verb = query["watch"].map(Self.queryBool) == true ? .watch : .list
            } else if name == nil, verb == .delete {
                verb = .deleteCollection
            }
        }
        self.verb = verb
    }

    /// A boolean query parameter the way the API server converts it: false only for "0", "f" and "false" (any case).
    static func queryBool(_ value: String) -> Bool {
        let v = value.lowercased()
        return !(v == "0" || v == "f" || v == "false")
    }
}

/// The client's identity for the cache: the User-Agent's product name, lower-cased.
///
/// "kube-proxy/v1.31.0 (linux/amd64) kubernetes/abc" → "kube-proxy"; "edged/0.1.0 (linux/amd64) kubelet/v1.31.0" →
/// "edged"; "curl" → "curl"; nil, empty or starting with "/" → "unknown". Keyed by this name, a client that changes
/// its version or build keeps its cache (OpenYurt #1400).
public func hubComponent(userAgent: String?) -> String {
    guard let ua = userAgent else { return "unknown" }
    let trimmed = ua.drop(while: { $0 == " " || $0 == "\t" })
    let name = trimmed.prefix(while: { $0 != "/" && $0 != " " && $0 != "\t" }).prefix(128)
    return name.isEmpty ? "unknown" : name.lowercased()
}

/// Percent-decoding of URL paths and queries (Go's url.PathUnescape / url.ParseQuery), without Foundation.
enum PercentDecoding {
    /// Decodes %XX escapes (and "+" as a space when `plusIsSpace`); nil on a malformed escape or invalid UTF-8.
    static func decode(_ s: Substring, plusIsSpace: Bool) -> String? {
        guard s.utf8.contains(where: { $0 == UInt8(ascii: "%") || (plusIsSpace && $0 == UInt8(ascii: "+")) }) else {
            return String(s)
        }
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count)
        var it = s.utf8.makeIterator()
        while let b = it.next() {
            switch b {
            case UInt8(ascii: "%"):
                guard let h = it.next().flatMap(hexValue), let l = it.next().flatMap(hexValue) else { return nil }
                out.append(h << 4 | l)
            case UInt8(ascii: "+") where plusIsSpace:
                out.append(UInt8(ascii: " "))
            default:
                out.append(b)
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    private static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// "a=1&b=x%20y&c" → ["a": "1", "b": "x y", "c": ""]. Pairs that do not decode are skipped (as Go's
    /// URL.Query() does); the first of repeated keys wins.
    static func query(_ raw: Substring) -> [String: String] {
        var out: [String: String] = [:]
        for pair in raw.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let key = decode(kv[0], plusIsSpace: true),
                  let value = kv.count > 1 ? decode(kv[1], plusIsSpace: true) : "" else { continue }
            if out[key] == nil { out[key] = value }
        }
        return out
    }
}
