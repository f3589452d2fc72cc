// The edge hub in the daemon: built from the config and the stored credentials once the node has joined, run next
// to the node agent (whose API client it serves in-process), fed the current pod IPs for the offline endpoints
// fix-up, and reported by `edgectl status`.

import EdgedCluster
import EdgedControl
import EdgedCore
import EdgedCredentials
import EdgedHub
import EdgedKube
import EdgedNode
import EdgedRuntime
import Logging
#if canImport(Glibc)
import Glibc
#endif

enum HubWiring {
    /// The hub for a joined node; throws when the credentials or the store are unusable.
    static func make(config: EdgedConfig, agent: ClusterAgent, nodeName: String, logger: Logger) throws -> EdgeHub {
        var clientConfig = try agent.clientConfig()
        clientConfig.connectTimeout = .seconds(max(config.hub.healthCheckTimeoutSeconds, 3))
        let settings = config.hub
        var filters = HubFilterConfig(nodeName: nodeName)
        filters.nodePool = settings.nodePool ?? (try? NodeRegistration.load(dir: config.credentialsDir))?.flatMap { $0.nodePool }
        filters.masterService = settings.masterService
        filters.serviceTopology = settings.serviceTopology
        let https = address(settings.httpsAddress)
        if let https {
            filters.masterServiceHost = https.host
            filters.masterServicePort = https.port
        } else {
            // Without the HTTPS listener pods must keep reaching the real API server.
            filters.masterService = false
        }
        var hubConfig = HubConfig(nodeName: nodeName, filters: filters)
        hubConfig.cacheComponents.formUnion(settings.cacheComponents.map { $0.lowercased() })
        hubConfig.cacheResources.formUnion(settings.cacheResources)
        var listeners = HubListeners()
        listeners.http = address(settings.httpAddress)
        listeners.https = https
        listeners.health = address(settings.healthAddress)
        let store = CredentialStore(dir: config.credentialsDir)
        let maxBytes = (try? Quantity(settings.maxStoreSize).value()).map { Int64($0) } ?? (128 << 20)
        let maxObject = (try? Quantity(settings.maxObjectSize).value()).map { Int($0) } ?? (2 << 20)
        return try EdgeHub(
            config: hubConfig, clientConfig: clientConfig, storePath: "\(config.stateDir)/hub/cache.db", maxStoreBytes: maxBytes,
            maxObjectBytes: maxObject,
            health: CloudHealthConfig(interval: .seconds(settings.healthCheckSeconds), timeout: .seconds(settings.healthCheckTimeoutSeconds)),
            listeners: listeners, leaseDurationSeconds: Int32(config.cluster.leaseDurationSeconds),
            servingTLS: {
                guard let pair = try? store.loadPair(.serving) else { return nil }
                return HubServerTLS(certificateChainPEM: pair.certificatePEM, privateKeyPEM: pair.key.pem)
            },
            logger: logger)
    }

    static func address(_ text: String) -> HubAddress? {
        text.isEmpty ? nil : HubAddress(parsing: text)
    }

    /// Keeps the hub's view of this node's pod IPs current ("namespace/name" → IP).
    static func feedPodIPs(_ hub: EdgeHub, pods: PodManager) async {
        while !Task.isCancelled {
            var ips: [String: String] = [:]
            for p in await pods.summaries() {
                if let ip = p.podIP { ips["\(p.namespace)/\(p.name)"] = ip }
            }
            hub.core.setLocalPodIPs(ips)
            try? await Task.sleep(for: .seconds(2))
        }
    }

    /// The dummy interface that carries the hub's HTTPS address (YurtHub's is yurthub-dummy0).
    static let dummyInterface = "edged-hub0"

    /// Puts the hub's HTTPS address on a dummy interface (like YurtHub's yurthub-dummy0) when no interface has it,
    /// so pods reach the rewritten `kubernetes` Service. Where the kernel has no dummy driver (`ip link add … type
    /// dummy` answers "Unknown device type") the address goes on `lo` with host scope instead: the kernel accepts a
    /// packet for any local address on any interface, so pods reach it through their route to the node all the
    /// same. Loopback and wildcard addresses need nothing. Nothing is removed at shutdown (the address stays for the
    /// next start, as kubelet's and YurtHub's do).
    static func ensureDummyInterface(_ host: String, logger: Logger) async {
        if isLocalOrWildcard(host) { return }
        if let name = interfaceHolding(host) {
            logger.info("hub: the HTTPS address \(host) is on interface \(name)")
            return
        }
        guard let ip = HostCommand.find("ip") else {
            logger.warning("hub: no interface has \(host) and the ip tool is missing: install iproute2, or set hub.httpsAddress to an address of this host")
            return
        }
        let prefix = host.contains(":") ? "\(host)/128" : "\(host)/32"
        let name = dummyInterface
        let link = try? await HostCommand.run(ip, ["link", "add", name, "type", "dummy"])
        let linkProblem = link.map { $0.status == 0 ? "" : $0.output.trimmed } ?? "ip did not run"
        if interfaceExists(name) {
            let add = try? await HostCommand.run(ip, ["addr", "add", prefix, "dev", name])
            let up = try? await HostCommand.run(ip, ["link", "set", name, "up"])
            if interfaceHolding(host) == name {
                logger.info("hub: put \(host) on dummy interface \(name) for the HTTPS listener")
                return
            }
            logger.info("hub: could not put \(host) on dummy interface \(name) (\((add?.output ?? "").trimmed) \((up?.output ?? "").trimmed)); trying lo")
        }
        // No dummy driver (or no usable dummy interface): lo, host scope, so it is never a source address elsewhere.
        let lo = try? await HostCommand.run(ip, ["addr", "add", prefix, "dev", "lo", "scope", "host"])
        if interfaceHolding(host) == "lo" {
            logger.info("hub: put \(host) on lo for the HTTPS listener (no dummy interface: \(linkProblem.isEmpty ? "\(name) unusable" : linkProblem))")
        } else {
            logger.warning("hub: could not put \(host) on a dummy interface (\(linkProblem)) nor on lo (\((lo?.output ?? "ip did not run").trimmed)): pods cannot reach the hub's HTTPS listener; set hub.httpsAddress to an address of this host, or add \(prefix) to an interface yourself")
        }
    }

    /// Loopback and wildcard addresses: every host has them, no interface needs one.
    static func isLocalOrWildcard(_ host: String) -> Bool {
        host.hasPrefix("127.") || host == "0.0.0.0" || host == "::" || host == "::1" || host == "localhost"
    }

    /// The interface that has `host` as one of its addresses; nil when none has.
    static func interfaceHolding(_ host: String) -> String? {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return nil }
        defer { freeifaddrs(list) }
        var cursor = list
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let addr = entry.pointee.ifa_addr else { continue }
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            let length = addr.pointee.sa_family == sa_family_t(AF_INET6) ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size
            guard addr.pointee.sa_family == sa_family_t(AF_INET) || addr.pointee.sa_family == sa_family_t(AF_INET6) else { continue }
            if getnameinfo(addr, socklen_t(length), &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0,
               String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) == host {
                return entry.pointee.ifa_name.map { String(cString: $0) }
            }
        }
        return nil
    }

    static func interfaceExists(_ name: String) -> Bool {
        if_nametoindex(name) != 0
    }

    /// The interface that has the host of the hub's "https HOST:PORT" listening entry (nil without an HTTPS
    /// listener, for a loopback or wildcard address, or when no interface has it).
    static func httpsInterface(_ listening: [String]) -> String? {
        guard let entry = listening.first(where: { $0.hasPrefix("https ") }),
              let parsed = HubAddress(parsing: String(entry.dropFirst("https ".count))),
              !isLocalOrWildcard(parsed.host) else { return nil }
        return interfaceHolding(parsed.host)
    }

    /// What `edgectl status` shows about the hub.
    static func report(_ s: HubSnapshot) -> HubReport {
        let cloud: String
        switch s.cloud.state {
        case .online: cloud = "connected"
        case .offline: cloud = "offline"
        case .unknown: cloud = "starting"
        }
        return HubReport(cloud: cloud, since: s.cloud.since.rfc3339, lastSync: s.cloud.lastSync?.rfc3339,
                         lastSyncAgeSeconds: s.cloud.lastSync.map { Timestamp.now().seconds - $0.seconds },
                         lastError: s.cloud.lastError, cachedObjects: s.cachedObjects, storeBytes: s.storeBytes,
                         queuedWrites: s.queuedWrites, listening: s.listening,
                         httpsInterface: httpsInterface(s.listening))
    }
}
