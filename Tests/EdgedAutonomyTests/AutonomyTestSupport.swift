// Shared helpers of the autonomy controller tests: a test API server with a system:masters token per controller, pods
// and nodes created as a real control plane would have them, a transport that answers some requests itself (to
// stand in for an admission webhook's 422 or a missing RBAC rule's 403), a log capture, and polling.

@testable import EdgedAutonomy
import EdgedCore
import EdgedKube
import EdgedTestSupport
import Foundation
import Logging
import Synchronization
import Testing

struct AutonomyFixture {
    let api: KubeAPIServer

    static func start() async throws -> AutonomyFixture {
        var options = KubeAPIServer.Options()
        options.nodeLifecycle = nil   // no node lifecycle: the nodes here have no kubelet
        options.watchBookmarkInterval = .milliseconds(200)
        return AutonomyFixture(api: try await KubeAPIServer.start(options: options))
    }

    func close() async { try? await api.shutdown() }

    /// A client authenticated as `user` (a system:masters static token), optionally through `intercept`.
    func client(user: String = "controller", intercept: (@Sendable (KubeRequest) async -> KubeResponse?)? = nil) throws -> KubeClient {
        let token = "token-\(user)"
        api.addToken(token, user: user, groups: ["system:masters"])
        let config = KubeClientConfig(server: api.url, caPEM: api.caPEM, credentials: .bearerToken(token),
                                      userAgent: "autonomy-test", requestTimeout: .seconds(10))
        let http = try HTTPKubeTransport(config: config)
        guard let intercept else { return KubeClient(transport: http, requestTimeout: .seconds(10)) }
        return KubeClient(transport: InterceptingTransport(inner: http, intercept: intercept), requestTimeout: .seconds(10))
    }

    func node(_ name: String, annotations: [String: String] = [:]) throws {
        try api.put("/api/v1/nodes/\(name)", ["metadata": ["name": name, "annotations": annotations]])
    }

    func annotate(node name: String, _ annotations: [String: Any]) throws {
        let patch = try JSONSerialization.data(withJSONObject: ["metadata": ["annotations": annotations]])
        let r = api.call("PATCH", "/api/v1/nodes/\(name)", body: patch, contentType: "application/merge-patch+json")
        #expect(r.code == 200, "\(String(decoding: r.body, as: UTF8.self))")
    }

    /// A pod bound to `node` (admission adds the two 300 s tolerations), with extra metadata, tolerations and status.
    @discardableResult
    func pod(_ name: String, node: String?, namespace: String = "default", meta: [String: Any] = [:],
             tolerations: [[String: Any]]? = nil, phase: String? = nil) throws -> [String: Any] {
        var metadata: [String: Any] = ["name": name, "namespace": namespace]
        metadata.merge(meta) { $1 }
        var spec: [String: Any] = ["containers": [["name": "main", "image": "busybox:1.36"]]]
        if let node { spec["nodeName"] = node }
        if let tolerations { spec["tolerations"] = tolerations }
        var body: [String: Any] = ["metadata": metadata, "spec": spec]
        if let phase { body["status"] = ["phase": phase] }
        let data = try api.put("/api/v1/namespaces/\(namespace)/pods/\(name)", body)
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    func podJSON(_ name: String, namespace: String = "default") -> [String: Any]? {
        api.objectJSON("/api/v1/namespaces/\(namespace)/pods/\(name)")
    }

    func podBytes(_ name: String, namespace: String = "default") -> Data? {
        api.object("/api/v1/namespaces/\(namespace)/pods/\(name)")
    }

    /// tolerationSeconds of the pod's NoExecute toleration(s) of `taint` ("unreachable"/"not-ready"): "forever"
    /// without tolerationSeconds, "none" without such a toleration, "a/b" when several.
    func seconds(_ name: String, _ taint: String, namespace: String = "default") -> String {
        let ts = ((podJSON(name, namespace: namespace)?["spec"] as? [String: Any])?["tolerations"] as? [[String: Any]] ?? [])
            .filter { $0["key"] as? String == "node.kubernetes.io/\(taint)" && $0["effect"] as? String == "NoExecute" }
        if ts.isEmpty { return "none" }
        return ts.map { ($0["tolerationSeconds"] as? Int).map(String.init) ?? "forever" }.joined(separator: "/")
    }

    /// Events stored in `namespace` about the object named `name`, optionally of one reason.
    func events(about name: String, namespace: String = "default", reason: String? = nil) -> [[String: Any]] {
        let r = api.call("GET", "/api/v1/namespaces/\(namespace)/events")
        let list = (try? JSONSerialization.jsonObject(with: r.body)) as? [String: Any]
        return ((list?["items"] as? [[String: Any]]) ?? []).filter {
            ($0["involvedObject"] as? [String: Any])?["name"] as? String == name && (reason == nil || $0["reason"] as? String == reason)
        }
    }

    /// Requests `user` made with `method` to paths containing `fragment`.
    func requests(by user: String, _ method: String, _ fragment: String) -> [KubeAPIServer.RequestRecord] {
        api.requests().filter { $0.user == user && $0.method == method && $0.path.contains(fragment) }
    }

    /// The default tolerations of a new pod, 300 s each.
    static let defaultSeconds = "300"
}

/// Controller settings for fast tests.
func testOptions(_ identity: String = "ctl-test", resync: Duration = .seconds(60), election: LeaderElectionConfig? = nil) -> AutonomyControllerOptions {
    AutonomyControllerOptions(identity: identity, resyncInterval: resync, workers: 2, leaderElection: election,
                              retryBackoff: .milliseconds(50), maxRetryBackoff: .milliseconds(400))
}

/// A running controller (its own task), stopped by `stop()`.
final class RunningController: Sendable {
    let controller: AutonomyController
    let logs: LogCapture
    private let task: Task<Void, Never>

    init(_ client: KubeClient, _ options: AutonomyControllerOptions) {
        logs = LogCapture()
        controller = AutonomyController(client: client, options: options, logger: logs.logger(options.identity))
        let c = controller
        task = Task { await c.run() }
    }

    /// Cancels it and waits until it has stopped (and released its Lease, when configured).
    func stop() async {
        task.cancel()
        await task.value
    }

    func waitIdle(_ what: String = "the controller to finish its pass", timeout: Double = 10) async throws {
        try await eventually(what, timeout: timeout) { await self.controller.isIdle() }
    }
}

/// Answers some requests itself, passes the rest to the real transport.
final class InterceptingTransport: KubeTransport {
    let inner: HTTPKubeTransport
    let intercept: @Sendable (KubeRequest) async -> KubeResponse?

    init(inner: HTTPKubeTransport, intercept: @escaping @Sendable (KubeRequest) async -> KubeResponse?) {
        self.inner = inner
        self.intercept = intercept
    }

    var server: String { inner.server }

    func execute(_ request: KubeRequest, timeout: Duration) async throws -> KubeResponse {
        if let r = await intercept(request) { return r }
        return try await inner.execute(request, timeout: timeout)
    }

    func streamResponse<R: Sendable>(_ request: KubeRequest, idleTimeout: Duration?,
                                     _ body: (KubeResponseHead, KubeByteStream) async throws -> R) async throws -> R {
        try await inner.streamResponse(request, idleTimeout: idleTimeout, body)
    }

    func updateCredentials(_ credentials: KubeCredentials) throws { try inner.updateCredentials(credentials) }

    /// A Status answer as the API server sends it.
    static func status(_ code: Int, reason: String, message: String) -> KubeResponse {
        let body: [String: Any] = ["kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                                   "reason": reason, "code": code]
        return KubeResponse(status: code, headers: [("Content-Type", "application/json")],
                            body: Array(try! JSONSerialization.data(withJSONObject: body)))
    }
}

/// Collects log lines ("level: message").
final class LogCapture: Sendable {
    private let lines = Mutex([String]())

    var all: [String] { lines.withLock { $0 } }

    func contains(_ fragment: String) -> Bool { all.contains { $0.contains(fragment) } }

    func logger(_ label: String) -> Logger {
        var l = Logger(label: label) { _ in Handler(capture: self) }
        l.logLevel = .debug
        return l
    }

    fileprivate func append(_ line: String) { lines.withLock { $0.append(line) } }

    struct Handler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            capture.append("\(event.level): \(event.message)")
        }
    }
}

struct TimedOut: Error, CustomStringConvertible {
    let description: String
}

/// Polls `condition` every 20 ms until it holds; throws after `timeout` seconds.
func eventually(_ what: String, timeout: Double = 10, _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    if try await condition() { return }
    throw TimedOut(description: "timed out after \(timeout) s waiting for \(what)")
}

func path(_ object: Any?, _ keys: String...) -> Any? {
    var cur = object
    for k in keys { cur = (cur as? [String: Any])?[k] }
    return cur
}

/// The JSON object without the given top-level paths, for comparing everything else.
func without(_ object: [String: Any], _ paths: [[String]]) -> NSDictionary {
    func remove(_ o: [String: Any], _ p: ArraySlice<String>) -> [String: Any] {
        guard let first = p.first else { return o }
        var o = o
        if p.count == 1 { o[first] = nil } else if let child = o[first] as? [String: Any] { o[first] = remove(child, p.dropFirst()) }
        return o
    }
    var o = object
    for p in paths { o = remove(o, p[...]) }
    return o as NSDictionary
}
