// The routes of the control API as a value: parsing a method + URI into what to do, or a 400/404/405.

/// A parsed request target: the path and its decoded query parameters.
public struct RequestTarget: Sendable, Equatable {
    public var path: String
    public var query: [String: String]

    /// Splits `/v1/logs?pod=web&tail=10` and percent-decodes the query (`+` is a space).
    public init(uri: String) {
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        path = String(parts[0])
        var query: [String: String] = [:]
        if parts.count == 2 {
            for pair in parts[1].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                query[RequestTarget.decode(kv[0])] = kv.count == 2 ? RequestTarget.decode(kv[1]) : ""
            }
        }
        self.query = query
    }

    static func decode(_ s: Substring) -> String {
        var out: [UInt8] = []
        var bytes = Array(s.utf8)[...]
        while let b = bytes.popFirst() {
            if b == UInt8(ascii: "+") {
                out.append(32)
            } else if b == UInt8(ascii: "%"), bytes.count >= 2,
                      let v = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16) {
                out.append(v)
                bytes = bytes.dropFirst(2)
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Percent-encodes a query value (everything but unreserved characters).
    public static func encode(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                 UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                let hex = String(b, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return out
    }
}

/// One request of the control API, decoded and validated.
public enum ControlRoute: Sendable, Equatable {
    case status
    case pods
    case images
    case importImage
    case pullImage
    case removeImage(reference: String)
    case pruneImages
    case logs(LogRequest)
    case join

    /// Maps a method and URI to a route.
    /// - Throws: `ControlError` 404 for an unknown path, 405 for a known path with another method, 400 for bad
    ///   query parameters (the message names the parameter).
    public static func parse(method: String, uri: String) throws(ControlError) -> ControlRoute {
        let target = RequestTarget(uri: uri)
        let routes: [String: [String: ControlRouteKind]] = [
            "/v1/status": ["GET": .status],
            "/v1/pods": ["GET": .pods],
            "/v1/images": ["GET": .images, "DELETE": .removeImage],
            "/v1/images/import": ["POST": .importImage],
            "/v1/images/pull": ["POST": .pullImage],
            "/v1/images/prune": ["POST": .pruneImages],
            "/v1/logs": ["GET": .logs],
            "/v1/join": ["POST": .join],
        ]
        var path = target.path
        while path.count > 1, path.hasSuffix("/") { path.removeLast() }
        guard let methods = routes[path] else {
            throw ControlError(status: 404, message: "no such endpoint: \(method) \(target.path) (edgectl and edged versions differ?)")
        }
        guard let kind = methods[method] else {
            throw ControlError(status: 405, message: "\(target.path) does not accept \(method) (allowed: \(methods.keys.sorted().joined(separator: ", ")))")
        }
        let q = target.query
        switch kind {
        case .status: return .status
        case .pods: return .pods
        case .images: return .images
        case .importImage: return .importImage
        case .pullImage: return .pullImage
        case .pruneImages: return .pruneImages
        case .join: return .join
        case .removeImage:
            guard let ref = q["reference"], !ref.isEmpty else { throw ControlError(status: 400, message: "missing query parameter \"reference\" (the image to remove)") }
            return .removeImage(reference: ref)
        case .logs:
            guard let pod = q["pod"], !pod.isEmpty else { throw ControlError(status: 400, message: "missing query parameter \"pod\"") }
            var request = LogRequest(namespace: q["namespace"].flatMap { $0.isEmpty ? nil : $0 } ?? "default", pod: pod)
            request.container = q["container"].flatMap { $0.isEmpty ? nil : $0 }
            request.follow = try bool(q, "follow")
            request.previous = try bool(q, "previous")
            request.timestamps = try bool(q, "timestamps")
            request.tail = try int(q, "tail")
            request.sinceSeconds = try int(q, "sinceSeconds").map(Int64.init)
            request.limitBytes = try int(q, "limitBytes")
            if request.limitBytes == 0 { throw ControlError(status: 400, message: "limitBytes must be at least 1") }
            if request.sinceSeconds == 0 { throw ControlError(status: 400, message: "sinceSeconds must be at least 1") }
            return .logs(request)
        }
    }

    private static func bool(_ q: [String: String], _ name: String) throws(ControlError) -> Bool {
        switch q[name] {
        case nil, "false", "0": return false
        case "", "true", "1": return true
        case let v?: throw ControlError(status: 400, message: "query parameter \"\(name)\" must be true or false, not \"\(v)\"")
        }
    }

    private static func int(_ q: [String: String], _ name: String) throws(ControlError) -> Int? {
        guard let v = q[name] else { return nil }
        guard let n = Int(v), n >= 0 else {
            throw ControlError(status: 400, message: "query parameter \"\(name)\" must be a whole number ≥ 0, not \"\(v)\"")
        }
        return n
    }
}

private enum ControlRouteKind {
    case status, pods, images, importImage, pullImage, removeImage, pruneImages, logs, join
}
