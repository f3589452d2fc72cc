// The hub's request path, shared by its HTTP listeners and the in-process transport of edged's own node agent.
//
// Online, a request goes to the API server and its answer streams back to the caller as it arrives; reads of
// cached resources by cached clients are copied into the store on the way (lists after they end, watch events as
// they pass). When the cloud is away (or unknown at start and the store has the answer) reads are answered from
// the store, watches stay open with bookmarks until the cloud returns, Event writes and edged's pod status writes
// are queued durably, and everything else gets a 503 that says why.

import EdgedCore
import EdgedKube
import Logging
import Synchronization

/// What the hub caches and for whom.
public struct HubConfig: Sendable {
    public var nodeName: String
    /// Clients (the User-Agent's first word, see `hubComponent`) whose reads are cached.
    public var cacheComponents: Set<String> = HubConfig.defaultComponents
    /// Resources cached, as "<group>/<version>/<resource>" ("/v1/pods"); CRDs are added by configuration.
    public var cacheResources: Set<String> = HubConfig.defaultResources
    public var filters: HubFilterConfig
    /// Limit of one forwarded request other than a watch (connect, then each wait for a byte).
    public var forwardTimeout: Duration = .seconds(10)
    /// A forwarded watch with no byte for this long is ended (the client re-watches).
    public var watchIdleTimeout: Duration = .seconds(330)
    /// BOOKMARK interval of watches served from the store.
    public var offlineBookmarkInterval: Duration = .seconds(10)
    /// A list response bigger than this is forwarded but not cached.
    public var maxCachedListBytes = 64 << 20

    public static let defaultComponents: Set<String> = ["edged", "kubelet", "kube-proxy", "flanneld", "flannel", "coredns"]
    public static let defaultResources: Set<String> = [
        "/v1/pods", "/v1/nodes", "/v1/services", "/v1/endpoints", "/v1/configmaps", "/v1/secrets", "/v1/namespaces",
        "/v1/events", "/v1/serviceaccounts", "discovery.k8s.io/v1/endpointslices", "coordination.k8s.io/v1/leases",
        "apiextensions.k8s.io/v1/customresourcedefinitions",
    ]

    public init(nodeName: String, filters: HubFilterConfig? = nil) {
        self.nodeName = nodeName
        self.filters = filters ?? HubFilterConfig(nodeName: nodeName)
    }
}

/// Counters for /metrics and `edgectl status`.
public struct HubCounters: Sendable, Equatable {
    public var forwarded = 0
    public var servedFromCache = 0
    public var queuedWrites = 0
    public var replayedWrites = 0
    public var droppedWrites = 0
    public var rejectedOffline = 0
    public var cacheErrors = 0
}

public final class HubCore: Sendable {
    public let config: HubConfig
    let store: HubStore
    let health: CloudHealth
    let logger: Logger
    let cacheWriter: CacheWriter
    private let upstreams: Mutex<Upstreams>
    private let counters = Mutex(HubCounters())
    private let localPodIPs = Mutex<[String: String]>([:])
    private let filterConfig: HubFilterConfig
    private let replayWanted = Atomic<Bool>(false)

    struct Upstreams {
        /// With the node's credentials.
        var node: any KubeTransport
        /// Without credentials: requests that carry the caller's own Authorization header.
        var caller: any KubeTransport
        var clientConfig: KubeClientConfig
    }

    public init(config: HubConfig, clientConfig: KubeClientConfig, store: HubStore, health: CloudHealth, logger: Logger) throws {
        self.config = config
        self.store = store
        self.health = health
        self.logger = logger
        self.filterConfig = config.filters
        var anonymous = clientConfig
        anonymous.credentials = .none
        upstreams = Mutex(Upstreams(node: try HTTPKubeTransport(config: clientConfig),
                                    caller: try HTTPKubeTransport(config: anonymous), clientConfig: clientConfig))
        cacheWriter = CacheWriter(store: store, logger: logger)
    }

    /// A write was queued: the replayer looks at the queue (it sends only while online).
    func replayWake() { replayWanted.store(true, ordering: .relaxed) }
    func takeReplayWake() -> Bool { replayWanted.exchange(false, ordering: .relaxed) }

    public var server: String { upstreams.withLock { $0.clientConfig.server } }
    public var counters_: HubCounters {
        var c = counters.withLock { $0 }
        c.cacheErrors = cacheWriter.errors.load(ordering: .relaxed)
        return c
    }
    var clientConfig: KubeClientConfig { upstreams.withLock { $0.clientConfig } }
    var nodeTransport: any KubeTransport { upstreams.withLock { $0.node } }

    func count(_ update: (inout HubCounters) -> Void) { counters.withLock { update(&$0) } }

    /// The node's rotated client certificate, for requests from now on.
    public func updateCredentials(_ credentials: KubeCredentials) throws {
        let node = upstreams.withLock { $0.node }
        try node.updateCredentials(credentials)
        upstreams.withLock { $0.clientConfig.credentials = credentials }
    }

    /// Current IPs of the pods on this node by "namespace/name", for the offline endpoints fix-up.
    public func setLocalPodIPs(_ ips: [String: String]) { localPodIPs.withLock { $0 = ips } }

    func filters(offline: Bool) -> ResponseFilters {
        var podIPs: (@Sendable () -> [String: String])?
        if offline {
            let ips: [String: String] = localPodIPs.withLock { $0 }
            podIPs = { ips }
        }
        let context = FilterContext(serviceAnnotations: serviceAnnotationsLookup(), nodePool: nodePoolLookup(),
                                    localPodIPs: podIPs)
        return ResponseFilters(config: filterConfig, context: context)
    }

    /// A Service's annotations from whichever client's cache has it.
    private func serviceAnnotationsLookup() -> @Sendable (String, String) -> [String: String]? {
        let store = self.store
        let components = Array(config.cacheComponents)
        return { namespace, name in
            for c in components {
                let key = StoreKey(component: c, resource: "/v1/services", namespace: namespace, name: name)
                if let s = try? store.get(key), let v = try? JSONValue.parse(s.body) {
                    return HubJSON.stringMap(v[path: ["metadata", "annotations"]]) ?? [:]
                }
            }
            return nil
        }
    }

    /// A node's pool (label apps.openyurt.io/nodepool) from whichever client's cache has the Node.
    private func nodePoolLookup() -> @Sendable (String) -> String? {
        let store = self.store
        let components = Array(config.cacheComponents)
        return { node in
            for c in components {
                let key = StoreKey(component: c, resource: "/v1/nodes", namespace: "", name: node)
                if let n = try? store.get(key), let v = try? JSONValue.parse(n.body) {
                    return HubJSON.stringMap(v[path: ["metadata", "labels"]])?["apps.openyurt.io/nodepool"]
                }
            }
            return nil
        }
    }

    // MARK: - Entry point

    /// Serves one request. Never throws: every failure becomes a kube-style Status response.
    public func serve(_ request: HubHTTPRequest, _ callerWriter: any HubResponseWriter) async {
        let component = hubComponent(userAgent: request.header("User-Agent"))
        let info = APIRequestInfo(method: request.method, target: request.target)
        let call = HubCall(request: request, info: info, component: component,
                           cacheable: isCacheable(info, component: component))
        let writer = HeadTrackingWriter(callerWriter)
        do {
            if let info, info.verb == .get || info.verb == .list || info.verb == .watch {
                try await read(call, info, writer)
            } else if info == nil, request.method == "GET" {
                try await nonResourceRead(call, writer)
            } else {
                try await write(call, writer)
            }
        } catch {
            if writer.clientClosed { return }
            if writer.headWritten {
                // Mid-body: nothing better to do than end what was sent (the client sees it cut short).
                logger.info("hub: \(request.method) \(request.target) for \(component) broke off: \(error)")
                try? await writer.finish()
                return
            }
            logger.warning("hub: \(request.method) \(request.target) for \(component): \(error)")
            try? await HubStatus.write(writer, code: 503, reason: "ServiceUnavailable",
                                       message: "edged's edge hub could not serve \(request.method) \(HubCall.pathOnly(request.target)): \(error); retry")
        }
    }

    func isCacheable(_ info: APIRequestInfo?, component: String) -> Bool {
        guard let info, info.subresource == nil else { return false }
        return config.cacheComponents.contains(component) && config.cacheResources.contains(info.resourceKey)
    }

    /// Whether reads should come from the store: offline, or not probed yet while the store has the answer.
    func serveFromStore(_ call: HubCall, _ info: APIRequestInfo) -> Bool {
        guard call.cacheable else { return false }
        switch health.current {
        case .online: return false
        case .offline: return true
        case .unknown: return hasCached(call, info)
        }
    }

    func hasCached(_ call: HubCall, _ info: APIRequestInfo) -> Bool {
        if info.verb == .get, let name = info.name {
            return (try? store.get(call.key(info, name: name))) != nil
        }
        return (try? store.listResourceVersion(component: call.component, resource: info.resourceKey,
                                               namespace: info.namespace)) != nil
    }

    // MARK: - Reads

    private func read(_ call: HubCall, _ info: APIRequestInfo, _ writer: any HubResponseWriter) async throws {
        if serveFromStore(call, info) {
            try await serveCached(call, info, writer, reason: health.current == .unknown ? "starting" : "offline")
            return
        }
        do {
            try await forward(call, writer, tee: call.cacheable ? info : nil)
        } catch {
            guard let failure = error as? ForwardError, !failure.responseStarted else { throw error }
            // A read that failed before any answer while the cloud is up (a pooled connection the server had just
            // closed, say) is tried once more; then the store answers, if it can.
            logger.info("hub: \(call.request.method) \(call.path) for \(call.component): \(failure.underlying)")
            if health.current == .online, !Task.isCancelled {
                do {
                    try await forward(call, writer, tee: call.cacheable ? info : nil)
                    return
                } catch {
                    guard let again = error as? ForwardError, !again.responseStarted else { throw error }
                    logger.info("hub: \(call.request.method) \(call.path) for \(call.component), second try: \(again.underlying)")
                }
            }
            guard call.cacheable else { throw failure }
            try await serveCached(call, info, writer, reason: "unreachable")
        }
    }

    private func serveCached(_ call: HubCall, _ info: APIRequestInfo, _ writer: any HubResponseWriter, reason: String) async throws {
        guard Self.mayUseStore(call.request) else {
            try await refuseAnonymousOffline(call, writer, "answer from its store")
            return
        }
        count { $0.servedFromCache += 1 }
        switch info.verb {
        case .get:
            try await OfflineReads.get(self, call, info, writer)
        case .list:
            try await OfflineReads.list(self, call, info, writer)
        default:
            try await OfflineReads.watch(self, call, info, writer)
        }
    }

    /// /version, /api, /apis... (kubectl's discovery): cached per client like objects, so kubectl works offline.
    private func nonResourceRead(_ call: HubCall, _ writer: any HubResponseWriter) async throws {
        let cacheable = config.cacheComponents.contains(call.component) && HubCall.isDiscovery(call.path)
        let key = StoreKey(component: call.component, resource: "nonresource", namespace: "", name: call.request.target)
        if cacheable, health.current != .online, let hit = try? store.get(key) {
            count { $0.servedFromCache += 1 }
            try await HubStatus.writeJSON(writer, status: 200, body: hit.body)
            return
        }
        do {
            try await forward(call, writer, discoveryKey: cacheable ? key : nil)
        } catch let error as ForwardError where !error.responseStarted {
            if cacheable, let hit = try? store.get(key) {
                count { $0.servedFromCache += 1 }
                try await HubStatus.writeJSON(writer, status: 200, body: hit.body)
                return
            }
            throw error
        }
    }

    // MARK: - Writes

    private func write(_ call: HubCall, _ writer: any HubResponseWriter) async throws {
        let queueable = call.info.map { WriteQueueing.isQueueable($0, component: call.component) } ?? false
        // Once writes are queued, later ones queue behind them so the API server sees them in order.
        let mustQueue = queueable && (health.current == .offline || ((try? store.stats().queued) ?? 0) > 0)
        if mustQueue, let info = call.info {
            try await WriteQueueing.enqueue(self, call, info, writer)
            return
        }
        if health.current == .offline {
            try await rejectOffline(call, writer)
            return
        }
        do {
            try await forward(call, writer, tee: nil)
        } catch let error as ForwardError where !error.responseStarted {
            if queueable, let info = call.info {
                try await WriteQueueing.enqueue(self, call, info, writer)
            } else {
                _ = error
                try await rejectOffline(call, writer)
            }
        }
    }

    private func rejectOffline(_ call: HubCall, _ writer: any HubResponseWriter) async throws {
        count { $0.rejectedOffline += 1 }
        let since = health.snapshot.since
        let what = call.info.map { i in "\(i.verb.rawValue) \(i.resource)\(i.name.map { " \($0)" } ?? "")" } ?? "\(call.request.method) \(call.path)"
        try await HubStatus.write(writer, code: 503, reason: "ServiceUnavailable",
                                  message: "the API server \(server) is unreachable from node \(config.nodeName) (offline since \(since.rfc3339)); " +
                                      "edged's edge hub cannot \(what) while offline: retry when the cloud is back")
    }

    // MARK: - Forwarding

    /// A forwarding failure; `responseStarted` tells whether the caller already got a response head.
    struct ForwardError: Error, CustomStringConvertible {
        var underlying: any Error
        var responseStarted: Bool
        var description: String { "\(underlying)" }
    }

    /// Sends the request upstream and streams the answer back, copying cacheable reads into the store.
    func forward(_ call: HubCall, _ callerWriter: any HubResponseWriter, tee: APIRequestInfo? = nil,
                 discoveryKey: StoreKey? = nil) async throws {
        let (transport, request) = upstreamRequest(call, jsonOnly: tee != nil || discoveryKey != nil)
        let isWatch = tee?.verb == .watch || call.info?.verb == .watch
        let writer = HeadTrackingWriter(callerWriter)
        let progress = WatchProgress()
        let outagesAtStart = health.outages
        do {
            try await Self.endingAtAnOutage(isWatch ? health : nil, after: outagesAtStart) {
                try await transport.streamResponse(request, idleTimeout: isWatch ? self.config.watchIdleTimeout : self.config.forwardTimeout) { head, chunks in
                    self.health.noteSync()
                    self.count { $0.forwarded += 1 }
                    let headers = HubCall.responseHeaders(head.headers)
                    if let info = tee, head.status == 200 {
                        if info.verb == .watch {
                            try await WatchTee(core: self, call: call, info: info, progress: progress).run(headers: headers, chunks: chunks, writer: writer)
                            try await self.afterWatchEnded(call, info, writer, progress)
                        } else {
                            try await ReadTee(core: self, call: call, info: info).run(headers: headers, chunks: chunks, writer: writer)
                        }
                        return
                    }
                    try await writer.writeHead(status: head.status, headers: headers)
                    var body: [UInt8] = []
                    for try await chunk in chunks {
                        if discoveryKey != nil, head.status == 200, body.count < 4 << 20 { body += chunk }
                        try await writer.writeBody(chunk)
                    }
                    try await writer.finish()
                    if let key = discoveryKey, head.status == 200, (try? JSONValue.parse(body)) != nil {
                        self.cacheWriter.submit(.put(StoredObject(key: key, resourceVersion: "", body: body)))
                    }
                }
            }
        } catch {
            // A cancellation that is not ours (the upstream client gave up on a pooled connection) is a forwarding
            // failure like any other: the store or a 503 answers.
            if error is CancellationError, Task.isCancelled { throw error }
            // Started = the caller already has a response head; otherwise the store or a 503 can still answer.
            let responseStarted = writer.headWritten
            if !responseStarted, let e = error as? KubeError, e.isTransport {
                throw ForwardError(underlying: error, responseStarted: false)
            }
            if responseStarted {
                logger.info("hub: \(call.request.method) \(call.path) for \(call.component) ended early: \(error)")
                if let info = tee, info.verb == .watch, !writer.clientClosed {
                    // The cloud went away under a watch: it stays open with bookmarks until the cloud is back.
                    try? await afterWatchEnded(call, info, writer, progress)
                    return
                }
                // Any other stream that broke mid-way (truncated): end the response; the client retries.
                try? await writer.finish()
                return
            }
            throw ForwardError(underlying: error, responseStarted: false)
        }
    }

    /// The cloud went offline while a forwarded watch was open.
    struct UpstreamOutage: Error, CustomStringConvertible {
        var description: String { "the API server became unreachable while the watch was open; its connection may be dead" }
    }

    /// Runs `body` (a forwarded watch); when `health` is given and the cloud goes offline meanwhile, `body` is
    /// cancelled (closing its upstream connection) and this throws `UpstreamOutage`. A link that drops packets
    /// without a reset leaves the watch's TCP connection silent: without this the watch would deliver nothing until
    /// TCP retransmits or the idle timeout (minutes) ends it, and the node would see the Node the node controller
    /// changed during the outage that much later. Ended here, the watch continues from the store and ends when the
    /// cloud is back, and the client watches again on a new connection.
    static func endingAtAnOutage(_ health: CloudHealth?, after outages: Int,
                                 _ body: @escaping @Sendable () async throws -> Void) async throws {
        guard let health else { return try await body() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await body() }
            group.addTask {
                await health.waitForOutage(after: outages)
                if !Task.isCancelled { throw UpstreamOutage() }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// A forwarded watch ended (the server closed it, or the link broke): unless the caller's own timeoutSeconds
    /// ran out, the response stays open in the store's bookmark mode until the API server answers again, so a
    /// client whose link to the cloud broke keeps its watch (it re-lists once the cloud is back).
    /// The resourceVersion bookmarks of a watch served from the store carry: the stored list's, else the one the
    /// client asked for.
    func bookmarkVersion(_ call: HubCall, _ info: APIRequestInfo) -> String {
        (try? store.listResourceVersion(component: call.component, resource: info.resourceKey, namespace: info.namespace))
            .flatMap { $0 } ?? info.resourceVersion ?? "0"
    }

    func afterWatchEnded(_ call: HubCall, _ info: APIRequestInfo, _ writer: any HubResponseWriter,
                         _ progress: WatchProgress) async throws {
        if writer.clientClosed { return }
        if info.timeoutSeconds != nil || progress.broken {
            try await writer.finish()
            return
        }
        // Bookmarks carry the newest resourceVersion the client has seen, never an older one.
        let rv = progress.resourceVersion ?? bookmarkVersion(call, info)
        try await OfflineReads.watchBody(self, call, info, writer, resourceVersion: rv)
    }

    /// Whether a request goes upstream as the node: only one without its own Authorization that came in on the
    /// node-local HTTP listener. On the HTTPS listener (what pods reach as the `kubernetes` Service) a request
    /// without a token goes upstream without credentials, as system:anonymous, exactly as it would reach the API
    /// server directly: a pod must never borrow the node's identity.
    static func usesNodeCredentials(_ request: HubHTTPRequest) -> Bool {
        request.header("Authorization") == nil && !request.isTLS
    }

    /// Whether the store may answer this caller, or queue its write for the node to replay. Not for a request that
    /// would reach the API server as system:anonymous (no token on the pods' HTTPS listener): offline nothing
    /// checks it, and the store holds what node-local clients cached (a pod could read the node's secrets, or
    /// queue writes the node replays, just by sending their User-Agent). Such a caller gets 401.
    static func mayUseStore(_ request: HubHTTPRequest) -> Bool {
        !(request.isTLS && request.header("Authorization") == nil)
    }

    func refuseAnonymousOffline(_ call: HubCall, _ writer: any HubResponseWriter, _ what: String) async throws {
        count { $0.rejectedOffline += 1 }
        try await HubStatus.write(writer, code: 401, reason: "Unauthorized",
                                  message: "the API server is unreachable from node \(config.nodeName), and edged's edge hub does not " +
                                      "\(what) for a caller without a token: send the pod's service account token " +
                                      "(automountServiceAccountToken), or retry when the cloud is back")
    }

    /// The upstream request: the caller's own Authorization when it sent one (then without the node's certificate),
    /// else the node's credentials for node-local callers (see usesNodeCredentials); hop-by-hop headers dropped;
    /// cached reads ask for JSON (client-go accepts JSON whatever it asked for), uncompressed.
    func upstreamRequest(_ call: HubCall, jsonOnly: Bool) -> (any KubeTransport, KubeRequest) {
        let hopByHop: Set<String> = ["connection", "keep-alive", "transfer-encoding", "upgrade", "host", "content-length",
                                     "proxy-connection", "te", "trailer", "accept-encoding"]
        var headers: [(String, String)] = []
        for (k, v) in call.request.headers {
            let lower = k.lowercased()
            if hopByHop.contains(lower) { continue }
            if jsonOnly, lower == "accept" { continue }
            headers.append((k, v))
        }
        if jsonOnly { headers.append(("Accept", "application/json")) }
        let transport = upstreams.withLock { Self.usesNodeCredentials(call.request) ? $0.node : $0.caller }
        let body = call.request.body.isEmpty && ["GET", "HEAD", "DELETE"].contains(call.request.method) ? nil : call.request.body
        return (transport, KubeRequest(method: call.request.method, path: call.request.target, headers: headers, body: body))
    }
}

/// One request as the core sees it.
struct HubCall: Sendable {
    var request: HubHTTPRequest
    var info: APIRequestInfo?
    var component: String
    var cacheable: Bool

    var path: String { HubCall.pathOnly(request.target) }

    static func pathOnly(_ target: String) -> String {
        target.firstIndex(of: "?").map { String(target[..<$0]) } ?? target
    }

    func key(_ info: APIRequestInfo, name: String) -> StoreKey {
        StoreKey(component: component, resource: info.resourceKey, namespace: info.namespace ?? "", name: name)
    }

    static func isDiscovery(_ path: String) -> Bool {
        let p = pathOnly(path)
        return p == "/version" || p == "/api" || p == "/apis" || p.hasPrefix("/api/") || p.hasPrefix("/apis/")
    }

    /// Response headers passed back: not the framing ones (the hub's listener frames its own response).
    static func responseHeaders(_ headers: [(String, String)]) -> [(String, String)] {
        let drop: Set<String> = ["connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"]
        return headers.filter { !drop.contains($0.0.lowercased()) }
    }
}

/// Remembers whether a response head went out, so a failure before it can still be answered another way.
final class HeadTrackingWriter: HubResponseWriter {
    let inner: any HubResponseWriter
    private let written = Atomic<Bool>(false)

    init(_ inner: any HubResponseWriter) { self.inner = inner }

    var headWritten: Bool { written.load(ordering: .acquiring) }
    var clientClosed: Bool { inner.clientClosed }

    func writeHead(status: Int, headers: [(String, String)]) async throws {
        written.store(true, ordering: .releasing)
        try await inner.writeHead(status: status, headers: headers)
    }
    func writeBody(_ bytes: [UInt8]) async throws { try await inner.writeBody(bytes) }
    func finish() async throws { try await inner.finish() }
}
