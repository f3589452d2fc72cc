// The edge hub as one service: the core (proxy + cache + queue), its store, the cloud health probe (the node Lease
// renewal), the write replayer, the background cache writer and the listeners (HTTP for node-local clients, HTTPS
// for pods through the rewritten `kubernetes` Service, and a health port with /healthz, /readyz and /metrics).

import EdgedCore
import EdgedHTTP
import EdgedKube
import Logging
import Synchronization

/// Where the hub listens; nil disables a listener.
public struct HubListeners: Sendable, Equatable {
    public var http: HubAddress? = HubAddress(host: "127.0.0.1", port: 10261)
    public var https: HubAddress? = HubAddress(host: "169.254.2.1", port: 10268)
    public var health: HubAddress? = HubAddress(host: "127.0.0.1", port: 10267)
    public init() {}
}

public struct HubAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// "HOST:PORT" or "[V6]:PORT".
    public init?(parsing text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// What `edgectl status` and /metrics show.
public struct HubSnapshot: Sendable, Equatable {
    public var cloud: CloudHealthSnapshot
    public var cachedObjects: Int
    public var storeBytes: Int64
    public var queuedWrites: Int
    public var counters: HubCounters
    public var listening: [String]
    public var lastLeaseRenewal: Timestamp?
}

public final class EdgeHub: Sendable {
    public let core: HubCore
    let store: HubStore
    let health: CloudHealth
    let listeners: HubListeners
    let logger: Logger
    let servingTLS: @Sendable () -> HubServerTLS?
    private let listening = Mutex<[String]>([])
    private let lastLease = Mutex<Timestamp?>(nil)
    private let leaseDurationSeconds: Int32

    /// Opens the store at `storePath` (created 0600). `servingTLS` gives the HTTPS listener's certificate (the
    /// node's serving certificate) when there is one.
    public init(config: HubConfig, clientConfig: KubeClientConfig, storePath: String, maxStoreBytes: Int64,
                maxObjectBytes: Int = 2 << 20, health: CloudHealthConfig, listeners: HubListeners, leaseDurationSeconds: Int32 = 40,
                servingTLS: @escaping @Sendable () -> HubServerTLS? = { nil }, logger: Logger) throws {
        let store = try HubStore(path: storePath, maxBytes: maxStoreBytes, maxObjectBytes: maxObjectBytes, logger: logger)
        let healthState = CloudHealth(config: health) { old, new in
            switch new {
            case .offline: logger.warning("hub: the API server \(clientConfig.server) is unreachable; serving node-local clients from the cache")
            case .online: logger.info("hub: the API server \(clientConfig.server) is reachable\(old == .offline ? " again; replaying queued writes" : "")")
            case .unknown: break
            }
        }
        self.store = store
        self.health = healthState
        self.listeners = listeners
        self.logger = logger
        self.servingTLS = servingTLS
        self.leaseDurationSeconds = leaseDurationSeconds
        self.core = try HubCore(config: config, clientConfig: clientConfig, store: store, health: healthState, logger: logger)
    }

    /// The in-process transport for edged's own API client.
    public func transport(userAgent: String) -> HubTransport { HubTransport(core: core, userAgent: userAgent) }

    public var snapshot: HubSnapshot {
        let stats = (try? store.stats()) ?? (objects: 0, bytes: 0, queued: 0)
        return HubSnapshot(cloud: health.snapshot, cachedObjects: stats.objects, storeBytes: stats.bytes,
                           queuedWrites: stats.queued, counters: core.counters_, listening: listening.withLock { $0 },
                           lastLeaseRenewal: lastLease.withLock { $0 })
    }

    /// Returns when the cloud is reachable again after an outage and this node's return turn has come (see
    /// CloudHealth): the current outage when it is offline now, else the next (or when the task is cancelled).
    public func waitForTheCloudToReturn() async {
        if health.current != .offline {
            await health.waitForOutage(after: health.outages)
        }
        await health.waitForReturnTurn()
    }

    /// Waits until every cache write submitted so far is stored (tests and the benchmark).
    public func drainCacheWrites() async { await core.cacheWriter.drain() }

    /// Runs until cancelled. A listener that cannot bind is logged and skipped; the rest keeps working.
    public func run() async {
        let core = self.core
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await core.cacheWriter.run() }
            group.addTask { await self.probeLoop() }
            group.addTask { await WriteReplayer(core: core).run() }
            if let a = listeners.http { group.addTask { await self.listen("http", a, tls: nil, handler: core) } }
            if let a = listeners.https {
                group.addTask {
                    guard let tls = await self.waitForServingTLS() else { return }
                    await self.listen("https", a, tls: tls, handler: core)
                }
            }
            if let a = listeners.health { group.addTask { await self.listen("health", a, tls: nil, handler: HealthHandler(hub: self)) } }
            await group.waitForAll()
        }
    }

    private func waitForServingTLS() async -> HubServerTLS? {
        var logged = false
        while !Task.isCancelled {
            if let tls = servingTLS() { return tls }
            if !logged {
                logger.info("hub: the HTTPS listener waits for the node's serving certificate")
                logged = true
            }
            try? await Task.sleep(for: .seconds(2))
        }
        return nil
    }

    private func listen(_ name: String, _ address: HubAddress, tls: HubServerTLS?, handler: any HubHandler) async {
        let server = HubServer(name: "hub-\(name)", host: address.host, port: address.port, tls: tls, handler: handler, logger: logger)
        do {
            listening.withLock { $0.append("\(name) \(address)") }
            try await server.run()
        } catch {
            listening.withLock { $0.removeAll { $0 == "\(name) \(address)" } }
            if !Task.isCancelled {
                logger.error("hub: cannot serve \(name) on \(address): \(error); set hub.\(name)Address in the config, or leave it empty to disable it")
            }
        }
    }

    /// The cloud health probe: renews the node Lease (kubelet's heartbeat) every interval, bounded by the timeout.
    private func probeLoop() async {
        let probe = LeaseProbe(nodeName: core.config.nodeName, leaseDurationSeconds: leaseDurationSeconds)
        let core = self.core
        let timeout = health.config.timeout
        await health.run { [self] in
            let client = KubeClient(transport: core.nodeTransport, requestTimeout: timeout, logger: core.logger)
            try await probe.renew(client)
            self.lastLease.withLock { $0 = .now() }
        }
    }
}

/// The Lease renewer and the Node's UID (for the Lease's owner reference), across probes.
actor LeaseProbe {
    private var renewer: NodeLeaseRenewer
    private var nodeUID: String?
    let nodeName: String

    init(nodeName: String, leaseDurationSeconds: Int32) {
        self.nodeName = nodeName
        renewer = NodeLeaseRenewer(nodeName: nodeName, leaseDurationSeconds: leaseDurationSeconds)
    }

    func renew(_ client: KubeClient) async throws {
        if nodeUID == nil { nodeUID = try? await client.get(.nodes, name: nodeName).metadata.uid }
        var r = renewer
        defer { renewer = r }
        try await r.renew(client, nodeUID: nodeUID)
    }
}

/// The health port: /healthz (the hub runs), /readyz (its store answers), /metrics (Prometheus text).
struct HealthHandler: HubHandler {
    let hub: EdgeHub

    func handle(_ request: HubHTTPRequest, _ writer: any HubResponseWriter) async {
        let path = HubCall.pathOnly(request.target)
        let (status, type, body): (Int, String, String)
        switch path {
        case "/healthz", "/livez":
            (status, type, body) = (200, "text/plain", "ok")
        case "/readyz":
            let ok = (try? hub.store.stats()) != nil
            (status, type, body) = ok ? (200, "text/plain", "ok") : (503, "text/plain", "the hub's store cannot be read")
        case "/metrics":
            (status, type, body) = (200, "text/plain; version=0.0.4", HubMetrics.text(hub.snapshot))
        default:
            (status, type, body) = (404, "text/plain", "not found: try /healthz, /readyz or /metrics")
        }
        let bytes = Array(body.utf8)
        try? await writer.writeHead(status: status, headers: [("Content-Type", type), ("Content-Length", String(bytes.count))])
        try? await writer.writeBody(bytes)
        try? await writer.finish()
    }

    func upgradeTarget(for request: HubHTTPRequest) async -> HubUpstream? { nil }
}

enum HubMetrics {
    static func text(_ s: HubSnapshot) -> String {
        var out = ""
        func metric(_ name: String, _ type: String, _ help: String, _ value: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(value)\n"
        }
        metric("edged_hub_cloud_online", "gauge", "1 when the API server is reachable, 0 when the hub serves from its cache.",
               s.cloud.state == .online ? "1" : "0")
        metric("edged_hub_cached_objects", "gauge", "Objects in the hub's store.", String(s.cachedObjects))
        metric("edged_hub_store_bytes", "gauge", "Bytes of objects in the hub's store.", String(s.storeBytes))
        metric("edged_hub_queued_writes", "gauge", "Writes waiting for the cloud.", String(s.queuedWrites))
        metric("edged_hub_forwarded_requests_total", "counter", "Requests answered by the API server.", String(s.counters.forwarded))
        metric("edged_hub_cache_served_requests_total", "counter", "Requests answered from the store.", String(s.counters.servedFromCache))
        metric("edged_hub_replayed_writes_total", "counter", "Queued writes delivered.", String(s.counters.replayedWrites))
        metric("edged_hub_dropped_writes_total", "counter", "Queued writes the API server refused.", String(s.counters.droppedWrites))
        metric("edged_hub_offline_rejected_requests_total", "counter", "Requests refused while offline.", String(s.counters.rejectedOffline))
        metric("edged_hub_cache_errors_total", "counter", "Answers not cached (malformed, too big, store full).", String(s.counters.cacheErrors))
        return out
    }
}

extension HubCore: HubHandler {
    public func handle(_ request: HubHTTPRequest, _ writer: any HubResponseWriter) async {
        await serve(request, writer)
    }

    /// exec/attach/port-forward through the hub: spliced to the API server with the node's certificate for a
    /// node-local caller without a token, else with the caller's own Authorization header (or none).
    public func upgradeTarget(for request: HubHTTPRequest) async -> HubUpstream? {
        let config = clientConfig
        guard let url = try? HubUpstreamURL(config.server) else { return nil }
        var tls: TLSOptions?
        if url.tls {
            var t = TLSOptions()
            if config.insecureSkipTLSVerify { t.trust = .noVerification } else if let ca = config.caPEM { t.trust = .certificates(pem: ca) }
            if HubCore.usesNodeCredentials(request), case let .clientCertificate(cert, key) = config.credentials {
                t.clientCertificateChainPEM = cert
                t.clientPrivateKeyPEM = key
            }
            tls = t
        }
        return HubUpstream(host: url.host, port: url.port, tls: tls, extraHeaders: [])
    }
}

struct HubUpstreamURL {
    var tls: Bool
    var host: String
    var port: Int

    struct Invalid: Error {}

    init(_ server: String) throws {
        let rest: Substring
        if server.hasPrefix("https://") { tls = true; rest = server.dropFirst(8) } else if server.hasPrefix("http://") { tls = false; rest = server.dropFirst(7) } else { throw Invalid() }
        let authority = rest.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        guard let address = HubAddress(parsing: authority.contains(":") && !authority.hasSuffix("]") ? authority : authority + ":" + (tls ? "443" : "80")) else { throw Invalid() }
        host = address.host
        port = address.port
    }
}
