// Answers one kubelet API request: authentication, authorization, then the route.

import EdgedCore
import EdgedKube
import Logging
import NIOCore
import NIOHTTP1

/// The request side of the kubelet API, shared by every connection.
///
/// Order per request, as kubelet's secure port: authenticate (verified client certificate, else bearer token through
/// TokenReview, else anonymous if allowed, else 401), authorize (SubjectAccessReview on nodes/<subresource> of this
/// node, else 403), then route. Every error is a v1 Status body whose message says what is wrong and what to do.
final class KubeletAPIHandler: Sendable {
    let config: KubeletServerConfig
    let backend: any KubeletBackend
    let auth: KubeletAuthenticator
    let metrics: KubeletServerMetrics
    let logger: Logger

    init(config: KubeletServerConfig, backend: any KubeletBackend, client: KubeClient, metrics: KubeletServerMetrics,
         logger: Logger) {
        self.config = config
        self.backend = backend
        self.auth = KubeletAuthenticator(client: client, config: config)
        self.metrics = metrics
        self.logger = logger
    }

    static let pathsServed = "/healthz, /pods, /containerLogs/{namespace}/{pod}/{container}, /exec, /attach, /portForward, "
        + "/metrics, /metrics/resource and /stats/summary"

    func respond(to head: HTTPRequestHead, peer: KubeletPeer, channel: any Channel) async -> KubeletOutcome {
        let target = KubeletTarget(uri: head.uri)
        let writer = KubeletResponseWriter(channel: channel, keepAlive: head.isKeepAlive)
        metrics.requestStarted()
        var outcome = KubeletOutcome.close
        do {
            let user = try await authenticate(head, peer: peer)
            let attributes = KubeletRequestAttributes(method: head.method.rawValue, path: target.path)
            let allowed: Bool
            do { allowed = try await auth.authorize(user, attributes) } catch { throw KubeletHTTPError(error.code, error.message) }
            guard allowed else {
                throw KubeletHTTPError(403, "Forbidden (user=\(user.name), verb=\(attributes.verb), resource=nodes, subresource=\(attributes.subresource)): "
                                       + "grant it \(attributes.verb) on nodes/\(attributes.subresource) through RBAC (e.g. the ClusterRole system:kubelet-api-admin)")
            }
            outcome = try await route(head, target, writer: writer)
        } catch let error as KubeletHTTPError {
            if writer.status == nil {
                do {
                    try await writer.status(error.code, error.message)
                    outcome = head.isKeepAlive ? .keepAlive : .close
                } catch {
                    outcome = .close
                }
            }
        } catch {
            // The client went away mid-answer, or the task was cancelled (connection closed).
            outcome = .close
        }
        let code: Int
        if case .handOver = outcome { code = 101 } else { code = writer.status ?? 0 }
        metrics.requestFinished(method: head.method.rawValue, path: target.path, code: code)
        return outcome
    }

    private func authenticate(_ head: HTTPRequestHead, peer: KubeletPeer) async throws(KubeletHTTPError) -> KubeletUser {
        switch peer {
        case .certificate(let user):
            return user
        case .unreadableCertificate:
            throw KubeletHTTPError(401, "Unauthorized: the client certificate has no common name (CN) to take the user name from; use a certificate with CN set")
        case .none:
            break
        }
        if let header = head.headers.first(name: "authorization") {
            let parts = header.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "bearer", !trimSpaces(parts[1]).isEmpty else {
                throw KubeletHTTPError(401, "Unauthorized: the Authorization header is not \"Bearer TOKEN\"; send a bearer token or a client certificate signed by the cluster CA")
            }
            let token = trimSpaces(parts[1])
            let user: KubeletUser?
            do { user = try await auth.authenticate(token: token) } catch { throw KubeletHTTPError(error.code, error.message) }
            guard let user else {
                throw KubeletHTTPError(401, "Unauthorized: the API server did not accept the bearer token (TokenReview); use a valid token or a client certificate signed by the cluster CA")
            }
            return user
        }
        guard config.anonymous else {
            throw KubeletHTTPError(401, "Unauthorized: anonymous requests are refused; authenticate with a client certificate signed by the cluster CA or a bearer token")
        }
        return .anonymous
    }

    private func route(_ head: HTTPRequestHead, _ target: KubeletTarget,
                       writer: KubeletResponseWriter) async throws -> KubeletOutcome {
        let path = target.path
        let keep: KubeletOutcome = head.isKeepAlive ? .keepAlive : .close
        let streaming: StreamingRequest?
        do { streaming = try StreamingRequest.parse(path: path, query: target.rawQuery) } catch {
            throw KubeletHTTPError.badRequest("\(error)")
        }
        if let streaming { return .handOver(streaming) }
        let segments = target.segments
        let known = ["healthz", "pods", "containerLogs", "metrics", "stats"]
        guard let first = segments.first, known.contains(first) else {
            throw KubeletHTTPError.notFound("no such kubelet API path \(path): edged serves \(Self.pathsServed)")
        }
        guard head.method == .GET else {
            throw KubeletHTTPError(405, "method \(head.method.rawValue) is not allowed on \(path); use GET")
        }
        switch segments {
        case ["healthz"]:
            try await writer.full(200, contentType: "text/plain; charset=utf-8", Array("ok".utf8))
        case ["pods"]:
            let list = await backend.podList()
            try await writer.full(200, contentType: "application/json", Array(list.jsonText.utf8))
        case ["metrics"]:
            try await writer.full(200, contentType: "text/plain; version=0.0.4; charset=utf-8", Array(metrics.render().utf8))
        case ["metrics", "resource"]:
            let usage: NodeResourceUsage?
            do { usage = try await backend.resourceUsage() } catch {
                logger.warning("kubelet API: cannot read resource usage for /metrics/resource", metadata: ["error": "\(error)"])
                usage = nil
            }
            try await writer.full(200, contentType: "text/plain; version=0.0.4; charset=utf-8",
                                  Array(PrometheusText.resourceMetrics(usage).utf8))
        case ["stats", "summary"]:
            let summary: JSONValue
            do { summary = try await backend.statsSummary() } catch {
                throw KubeletHTTPError(500, "cannot read the node's stats summary: \(error)")
            }
            try await writer.full(200, contentType: "application/json", Array(summary.jsonText.utf8))
        default:
            if first == "containerLogs" { return try await streamLogs(target, writer: writer, keep: keep) }
            throw KubeletHTTPError.notFound("no such kubelet API path \(path): edged serves \(Self.pathsServed)")
        }
        return keep
    }

    /// Streams a container's log with chunked encoding; a followed log goes on until the client goes away.
    private func streamLogs(_ target: KubeletTarget, writer: KubeletResponseWriter,
                            keep: KubeletOutcome) async throws -> KubeletOutcome {
        let request = try ContainerLogsRequest(target: target)
        let path: String
        do { path = try await backend.logPath(request.ref, previous: request.previous) } catch {
            if let e = error as? EdgedError, e.code == .notFound { throw KubeletHTTPError.notFound(e.message) }
            throw KubeletHTTPError(500, "cannot find the log of \(request.ref): \(error)")
        }
        let follow = request.options.follow
        let reader = CRILogReader(path: path, options: request.options, pollInterval: config.logPollInterval)
        if follow { metrics.streamOpened("logs") }
        defer { if follow { metrics.streamClosed("logs") } }
        try await writer.head(200, contentType: "text/plain; charset=utf-8", keepAlive: follow ? false : nil)
        // A container that has not written anything yet may have no log file: an empty log, or wait for it.
        while reader.files().isEmpty {
            guard follow else {
                try await writer.end()
                return keep
            }
            try await Task.sleep(for: config.logPollInterval)
        }
        let logger = self.logger
        let ref = request.ref
        do {
            try await reader.read(onMalformed: { line in
                logger.debug("kubelet API: skipped a malformed log line", metadata: ["container": "\(ref)", "line": "\(line)"])
            }, to: { bytes in
                try await writer.body(bytes)
            })
        } catch let error as EdgedError {
            // A file vanished or became unreadable mid-stream: say so in the text itself.
            try await writer.body(Array("\nedged: \(error.message)\n".utf8))
        }
        try await writer.end()
        return follow ? .close : keep
    }
}

/// `text` without leading and trailing spaces.
private func trimSpaces(_ text: Substring) -> String {
    var s = text
    while s.first == " " { s.removeFirst() }
    while s.last == " " { s.removeLast() }
    return String(s)
}
