// /containerLogs/{namespace}/{pod}/{container} and its query parameters, read the way kubelet reads them.

import EdgedCore

/// A parsed containerLogs request.
///
/// Query parameters (kubelet's, from v1 PodLogOptions): follow, previous, timestamps (booleans: true/false, 1/0,
/// t/f, or the name alone for true), tailLines (>= 0), sinceSeconds (>= 1), sinceTime (RFC 3339; not with
/// sinceSeconds), limitBytes (>= 1), stream (All, Stdout, Stderr). Unknown parameters are ignored, as kubelet does.
struct ContainerLogsRequest: Sendable, Equatable {
    var ref: ContainerRef
    var previous: Bool
    var options: CRILogOptions

    /// - Throws: `KubeletHTTPError` 400 naming the parameter and the values it takes.
    init(target: KubeletTarget) throws(KubeletHTTPError) {
        let segments = target.segments
        guard segments.count == 4, segments[0] == "containerLogs" else {
            throw .badRequest("malformed containerLogs path \(target.path): want /containerLogs/{namespace}/{pod}/{container}")
        }
        ref = ContainerRef(namespace: segments[1], pod: segments[2], container: segments[3])

        func single(_ name: String) -> String? { target.values(name).last }
        func bool(_ name: String) throws(KubeletHTTPError) -> Bool {
            guard let text = single(name) else { return false }
            switch text.lowercased() {
            case "", "1", "t", "true": return true
            case "0", "f", "false": return false
            default: throw .badRequest("invalid value \"\(text)\" for \(name): want true or false")
            }
        }
        func integer(_ name: String, min: Int64) throws(KubeletHTTPError) -> Int64? {
            guard let text = single(name) else { return nil }
            guard let value = Int64(text) else {
                throw .badRequest("invalid value \"\(text)\" for \(name): want a whole number")
            }
            guard value >= min else {
                throw .badRequest("invalid value \(value) for \(name): it must be \(min == 0 ? "0 or more" : "at least \(min)")")
            }
            return value
        }

        previous = try bool("previous")
        var options = CRILogOptions()
        options.follow = try bool("follow")
        options.timestamps = try bool("timestamps")
        if let tail = try integer("tailLines", min: 0) { options.tailLines = Int(clamping: tail) }
        if let limit = try integer("limitBytes", min: 1) { options.limitBytes = Int(clamping: limit) }
        options.sinceSeconds = try integer("sinceSeconds", min: 1)
        if let text = single("sinceTime") {
            guard let time = CRITimestamp(rfc3339: text) else {
                throw .badRequest("invalid value \"\(text)\" for sinceTime: want an RFC 3339 time such as 2026-01-02T15:04:05Z")
            }
            options.sinceTime = time
        }
        if options.sinceSeconds != nil && options.sinceTime != nil {
            throw .badRequest("at most one of sinceTime or sinceSeconds may be given")
        }
        if let text = single("stream") {
            switch text.lowercased() {
            case "", "all": options.stream = nil
            case "stdout": options.stream = .stdout
            case "stderr": options.stream = .stderr
            default: throw .badRequest("invalid value \"\(text)\" for stream: want All, Stdout or Stderr")
            }
        }
        self.options = options
    }
}
