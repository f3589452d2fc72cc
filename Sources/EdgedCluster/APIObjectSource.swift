// The API objects pods refer to (configMaps, secrets, service-account tokens, services), read from the API server
// with a short-lived cache, and kept as last seen so pods restart with their config while the cloud is away
// (the edge hub of issue [4] will persist them across reboots).

import EdgedCore
import EdgedKube
import EdgedNode
import Logging
import Synchronization
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

final class APIObjectSource: PodAPIObjects {
    /// `watched`: kept current by a watch of the object (ReferencedObjectWatches), so it never expires; otherwise
    /// it was read with a GET and is read again after `ttl`.
    private struct Entry { var data: [String: [UInt8]]?; var fetched: ContinuousClock.Instant; var watched = false }
    private let client: KubeClient
    private let ttl: Duration
    private let cache = Mutex<[String: Entry]>([:])
    /// Service-account tokens, in memory and (once the cluster agent opens it) on disk.
    let tokens = ServiceAccountTokens()
    private let addresses = Mutex<[String]>([])
    private let logger: Logger

    init(client: KubeClient, ttl: Duration = .seconds(5), logger: Logger) {
        self.client = client
        self.ttl = ttl
        self.logger = logger
    }

    var hostIPs: [String] { addresses.withLock { $0 } }
    func setHostIPs(_ ips: [String]) { addresses.withLock { $0 = ips } }

    /// Forgets a cached object (no pod refers to it any more, so its watch stopped).
    func invalidate(kind: String, namespace: String, name: String) {
        _ = cache.withLock { $0.removeValue(forKey: "\(kind)/\(namespace)/\(name)") }
    }

    /// Stores what a watch of the object saw (nil: it does not exist). Returns whether that differs from the copy
    /// held before (a pod may have read an older one).
    @discardableResult
    func watched(kind: String, namespace: String, name: String, data: [String: [UInt8]]?) -> Bool {
        let key = "\(kind)/\(namespace)/\(name)"
        return cache.withLock { cache in
            let before = cache[key]
            cache[key] = Entry(data: data, fetched: .now, watched: true)
            return before == nil || before?.data != data
        }
    }

    static func contents(_ cm: ConfigMap) -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        for (k, v) in cm.data ?? [:] { out[k] = Array(v.utf8) }
        for (k, v) in cm.binaryData ?? [:] { out[k] = Array(v) }
        return out
    }

    static func contents(_ s: Secret) -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        for (k, v) in s.data ?? [:] { out[k] = Array(v) }
        for (k, v) in s.stringData ?? [:] { out[k] = Array(v.utf8) }
        return out
    }

    /// A single-object GET (the Node authorizer allows it for objects a pod on this node refers to).
    func configMap(namespace: String, name: String) async throws(EdgedError) -> [String: [UInt8]]? {
        try await cached("configmap", namespace, name) { () async throws -> [String: [UInt8]]? in
            Self.contents(try await self.client.get(.configMaps, namespace: namespace, name: name))
        }
    }

    func secret(namespace: String, name: String) async throws(EdgedError) -> [String: [UInt8]]? {
        try await cached("secret", namespace, name) { () async throws -> [String: [UInt8]]? in
            Self.contents(try await self.client.get(.secrets, namespace: namespace, name: name))
        }
    }

    private func cached(_ kind: String, _ namespace: String, _ name: String,
                        fetch: @Sendable () async throws -> [String: [UInt8]]?) async throws(EdgedError) -> [String: [UInt8]]? {
        let key = "\(kind)/\(namespace)/\(name)"
        let now = ContinuousClock.now
        if let e = cache.withLock({ $0[key] }), e.watched || now - e.fetched < ttl { return e.data }
        do {
            let data = try await fetch()
            // A watch that delivered meanwhile has the newer copy.
            cache.withLock { if $0[key]?.watched != true { $0[key] = Entry(data: data, fetched: now) } }
            return data
        } catch {
            if let e = error as? KubeError, e.isNotFound {
                cache.withLock { if $0[key]?.watched != true { $0[key] = Entry(data: nil, fetched: now) } }
                return nil
            }
            // Offline: the last copy we saw, if any.
            if let e = cache.withLock({ $0[key] }) {
                logger.debug("using the last known \(kind) \(namespace)/\(name): \(error)")
                return e.data
            }
            throw EdgedError(.io, "cannot read \(kind) \(namespace)/\(name) from the API server: \(error)")
        }
    }

    /// A bound token for the pod, kept (on disk too) and renewed like kubelet's token manager does: at 80 % of its
    /// lifetime or after 24 h. While renewing fails (the API server unreachable, say after a reboot with the uplink
    /// down) the kept token is used as long as it is valid; only without a valid one is it an error.
    func serviceAccountToken(pod: Pod, audience: String?, expirationSeconds: Int64) async throws(EdgedError) -> String {
        let sa = pod.spec.serviceAccountName ?? "default"
        let uid = pod.metadata.uid ?? ""
        let key = ServiceAccountTokens.requestKey(serviceAccount: sa, audience: audience, expirationSeconds: expirationSeconds)
        let kept = tokens.get(podUID: uid, key: key)
        let jitter = Double.random(in: 0..<ServiceAccountToken.maxJitter)
        if let kept, !kept.needsRefresh(now: .now(), jitter: jitter) { return kept.token }
        let request = TokenRequest(spec: TokenRequestSpec(
            audiences: audience.map { [$0] } ?? [], expirationSeconds: expirationSeconds,
            boundObjectRef: BoundObjectReference(name: pod.name, uid: pod.metadata.uid)))
        let failure: String
        do {
            let answer = try await client.create(.serviceAccountToken, namespace: pod.namespace, name: sa, request)
            if let token = answer.status?.token, !token.isEmpty {
                let t = ServiceAccountToken(answer: token, expirationTimestamp: answer.status?.expirationTimestamp,
                                            expirationSeconds: answer.spec.expirationSeconds ?? expirationSeconds, now: .now())
                tokens.put(podUID: uid, key: key, t)
                return token
            }
            failure = "the API server returned no token"
        } catch {
            failure = "\(error)"
        }
        if let kept, !kept.isExpired(now: .now()) {
            logger.debug("renewing the token of service account \(pod.namespace)/\(sa) for pod \(pod.fullName) failed (\(failure)); using the one issued at \(kept.issuedAt.rfc3339), valid until \(kept.validUntil.rfc3339)")
            return kept.token
        }
        let expired = kept.map { " (the kept token expired at \($0.validUntil.rfc3339))" } ?? ""
        throw EdgedError(.io, "cannot get a token for service account \(pod.namespace)/\(sa)\(expired): \(failure)")
    }

    /// KUBERNETES_SERVICE_HOST/PORT and the docker-link variables of the namespace's services (and the
    /// `kubernetes` service of "default"), like kubelet's getServiceEnvVarMap.
    func serviceEnvironment(namespace: String, enableServiceLinks: Bool) async -> [(String, String)] {
        var services: [Service] = []
        if let list = try? await cachedServices(namespace: "default") {
            services += list.filter { $0.metadata.name == "kubernetes" || (namespace == "default" && enableServiceLinks) }
        }
        if namespace != "default" && enableServiceLinks, let list = try? await cachedServices(namespace: namespace) {
            services += list
        }
        var env: [(String, String)] = []
        for svc in services.sorted(by: { ($0.metadata.name ?? "") < ($1.metadata.name ?? "") }) {
            guard let ip = svc.spec?.clusterIP, !ip.isEmpty, ip != "None", let ports = svc.spec?.ports, let first = ports.first else { continue }
            let name = (svc.metadata.name ?? "").uppercased().map { $0 == "-" ? "_" : $0 }
            let base = String(name)
            env.append(("\(base)_SERVICE_HOST", ip))
            env.append(("\(base)_SERVICE_PORT", String(first.port)))
            for p in ports where p.name != nil && !(p.name ?? "").isEmpty {
                env.append(("\(base)_SERVICE_PORT_\(String((p.name ?? "").uppercased().map { $0 == "-" ? "_" : $0 }))", String(p.port)))
            }
            let proto = (first.protocol ?? "TCP").lowercased()
            env.append(("\(base)_PORT", "\(proto)://\(ip):\(first.port)"))
            for p in ports {
                let pr = (p.protocol ?? "TCP")
                let prefix = "\(base)_PORT_\(p.port)_\(pr.uppercased())"
                env.append((prefix, "\(pr.lowercased())://\(ip):\(p.port)"))
                env.append(("\(prefix)_PROTO", pr.lowercased()))
                env.append(("\(prefix)_PORT", String(p.port)))
                env.append(("\(prefix)_ADDR", ip))
            }
        }
        return env
    }

    private let serviceCache = Mutex<[String: (list: [Service], fetched: ContinuousClock.Instant)]>([:])

    private func cachedServices(namespace: String) async throws -> [Service] {
        if let e = serviceCache.withLock({ $0[namespace] }), ContinuousClock.now - e.fetched < .seconds(30) { return e.list }
        do {
            let list = try await client.list(.services, namespace: namespace).items
            serviceCache.withLock { $0[namespace] = (list, .now) }
            return list
        } catch {
            if let e = serviceCache.withLock({ $0[namespace] }) { return e.list }
            throw error
        }
    }
}
