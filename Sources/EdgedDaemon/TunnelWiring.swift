// The tunnel agent in the daemon: its config from `tunnel:` and the node's credentials, and the rule for what it
// may dial (this node's own addresses and its pods, nothing else).

import EdgedCluster
import EdgedCore
import EdgedCredentials
import EdgedNode
import EdgedTunnel
import Glibc
import Logging
import Synchronization

enum TunnelWiring {
    /// The agent for `config.tunnel`, or nil when no tunnel server is configured.
    static func make(config: EdgedConfig, nodeName: String, destinations: NodeDestinations, logger: Logger) -> TunnelAgent? {
        guard let server = config.tunnel.serverHostPort else { return nil }
        let store = CredentialStore(dir: config.credentialsDir)
        let client = store.currentPath(.client)
        let ips = NodeFacts.internalIPs(configured: config.cluster.nodeIP)
        let agentConfig = TunnelAgentConfig(
            serverHost: server.host, serverPort: server.port, caPath: config.tunnel.caFile ?? store.caPath,
            certPath: client, keyPath: client, serverName: config.tunnel.serverName, agentID: nodeName,
            identifiers: AgentIdentifiers(hosts: [nodeName], ipv4: ips.filter { !$0.contains(":") }, ipv6: ips.filter { $0.contains(":") }),
            allowDestination: { host, port in destinations.allows(host, port: port) })
        return TunnelAgent(config: agentConfig, logger: logger)
    }
}

/// What the tunnel agent may dial: the node's name, the addresses of its interfaces (the kubelet API, host-network
/// pods) and the IPs of its pods (port-forward and proxy to pods). Anything else is refused and logged by the agent.
/// On the node itself the hub's HTTP port is refused too: a token-less caller there acts with the node's
/// credentials, which is for node-local clients only, never for whoever can ask the API server for a node proxy.
final class NodeDestinations: Sendable {
    private let nodeName: String
    private let refusedLocalPorts: Set<Int>
    private let podIPs = Mutex<Set<String>>([])

    init(nodeName: String, refusedLocalPorts: Set<Int> = []) {
        self.nodeName = nodeName.lowercased()
        self.refusedLocalPorts = refusedLocalPorts
    }

    func allows(_ host: String, port: Int) -> Bool {
        var h = host.lowercased()
        if h.hasPrefix("["), h.hasSuffix("]") { h = String(h.dropFirst().dropLast()) }
        if podIPs.withLock({ $0.contains(h) }) { return true }
        guard h == nodeName || h == "localhost" || Self.isLocalAddress(h) else { return false }
        return !refusedLocalPorts.contains(port)
    }

    /// Keeps the pod IPs current (every 2 s, like the hub's endpoints fix-up) until cancelled.
    func follow(_ pods: PodManager) async {
        while !Task.isCancelled {
            let ips = Set(await pods.summaries().compactMap(\.podIP))
            podIPs.withLock { $0 = ips }
            try? await Task.sleep(for: .seconds(2))
        }
    }

    /// True when an interface of this host (loopback included) has the address `text`.
    static func isLocalAddress(_ text: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        let isV4 = inet_pton(AF_INET, text, &v4) == 1
        let isV6 = !isV4 && inet_pton(AF_INET6, text, &v6) == 1
        guard isV4 || isV6 else { return false }
        if isV4, (v4.s_addr & 0xff) == 127 { return true }  // 127.0.0.0/8 (network byte order: first octet lowest)
        var head: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&head) == 0, let first = head else { return false }
        defer { freeifaddrs(head) }
        var p: UnsafeMutablePointer<ifaddrs>? = first
        while let cur = p {
            defer { p = cur.pointee.ifa_next }
            guard let addr = cur.pointee.ifa_addr else { continue }
            if isV4, addr.pointee.sa_family == sa_family_t(AF_INET) {
                let match = addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr.s_addr == v4.s_addr }
                if match { return true }
            } else if isV6, addr.pointee.sa_family == sa_family_t(AF_INET6) {
                let match = addr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    withUnsafeBytes(of: sin6.pointee.sin6_addr) { a in withUnsafeBytes(of: v6) { b in a.elementsEqual(b) } }
                }
                if match { return true }
            }
        }
        return false
    }
}
