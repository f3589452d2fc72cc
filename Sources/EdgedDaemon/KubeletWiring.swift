// The kubelet API and the tunnel agent in the daemon: both start once the node has joined and run next to the node
// agent. The kubelet API serves a self-signed certificate until the node's kubelet-serving CSR is approved.

import EdgedCluster
import EdgedControl
import EdgedCore
import EdgedCredentials
import EdgedKube
import EdgedKubeletAPI
import EdgedTunnel
import Glibc
import Logging

/// What `edgectl status` shows about remote access to this node (the kubelet API and the tunnel).
actor RemoteAccessState {
    private(set) var kubeletAPI: KubeletAPIReport?
    private(set) var tunnel: TunnelAgent?
    private var tunnelServer = ""
    /// When the tunnel last had a server connected (or started, before any connection).
    private var tunnelLastUp: ContinuousClock.Instant?

    func setKubeletAPI(_ report: KubeletAPIReport?) { kubeletAPI = report }

    /// The kubelet API's report for `edgectl status`, naming `servingCSR` (the node agent's kubelet-serving CSR that
    /// waits for approval) while the certificate is self-signed.
    func kubeletAPIReport(servingCSR: String?) -> KubeletAPIReport? {
        guard var report = kubeletAPI else { return nil }
        if report.selfSigned { report.servingCSR = servingCSR }
        return report
    }

    func setTunnel(_ agent: TunnelAgent?, server: String) {
        tunnel = agent
        tunnelServer = server
        tunnelLastUp = agent == nil ? nil : .now
    }

    /// The tunnel's report, and how long it has been down (nil while connected).
    func tunnelReport() -> (TunnelReport, downFor: Duration?)? {
        guard let tunnel else { return nil }
        let s = tunnel.status()
        if s.connectedServers > 0 { tunnelLastUp = .now }
        let down = s.connectedServers > 0 ? nil : tunnelLastUp.map { ContinuousClock.now - $0 }
        return (TunnelReport(server: tunnelServer, connectedServers: s.connectedServers, serverCount: s.serverCount,
                             openStreams: s.openStreams, lastError: s.lastError), down)
    }
}

enum KubeletWiring {
    /// How often the served certificate is looked at (a local stat, no API request): the switch from the
    /// self-signed certificate to the issued one shows in `edgectl status` within this long.
    static let certificateCheckInterval = Duration.seconds(2)

    /// Runs the kubelet API until cancelled, and starts it again after a failure (port taken, unreadable
    /// certificate), reporting each problem to `state`. Until the node's kubelet-serving CSR is approved it serves a
    /// self-signed certificate (kubelet's default, kubelet.crt/kubelet.key in the credential directory), and
    /// switches to the issued one for new connections as soon as the node agent stores it, without a restart.
    static func runKubeletAPI(config: EdgedConfig, nodeName: String, backend: any KubeletBackend, client: KubeClient,
                              state: RemoteAccessState, logger: Logger) async {
        let store = CredentialStore(dir: config.credentialsDir)
        let serving = store.currentPath(.serving)
        let selfSigned = SelfSignedServing(store: store)
        let k = config.kubelet
        let address = k.address.contains(":") ? "[\(k.address)]:\(k.port)" : "\(k.address):\(k.port)"
        while !Task.isCancelled {
            var fallback = false
            if access(serving, R_OK) != 0 {
                do {
                    if try selfSigned.ensure(hostName: nodeName, ipAddresses: NodeFacts.internalIPs(configured: config.cluster.nodeIP)) {
                        logger.notice("kubelet API on \(address): made a self-signed serving certificate (\(selfSigned.certPath)) to serve until the node's kubelet-serving CSR is approved")
                    }
                    fallback = true
                } catch {
                    logger.error("kubelet API on \(address): \(error); trying again in 10 s")
                    await state.setKubeletAPI(KubeletAPIReport(problem: "\(error)"))
                    try? await Task.sleep(for: .seconds(10))
                    continue
                }
            }
            let server = KubeletServer(
                config: KubeletServerConfig(host: k.address, port: k.port, certPath: serving, keyPath: serving,
                                            clientCAPath: store.caPath, nodeName: nodeName,
                                            authenticationCacheTTL: .seconds(k.authenticationCacheSeconds),
                                            authorizedCacheTTL: .seconds(k.authorizationAllowedCacheSeconds),
                                            unauthorizedCacheTTL: .seconds(k.authorizationDeniedCacheSeconds),
                                            anonymous: k.anonymousAuth,
                                            fallbackCertPath: fallback ? selfSigned.certPath : nil,
                                            fallbackKeyPath: fallback ? selfSigned.keyPath : nil),
                backend: backend, client: client, logger: logger)
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        try await withTaskCancellationHandler {
                            try await server.run()
                        } onCancel: {
                            server.shutdown()
                        }
                    }
                    group.addTask {
                        // Loads the issued certificate as soon as it is stored and keeps the status line current.
                        var bound = false
                        while !Task.isCancelled {
                            if server.boundPort != nil {
                                bound = true
                                let source = server.servingCertificate()
                                await state.setKubeletAPI(KubeletAPIReport(listening: address, servingCertificate: source?.rawValue))
                            }
                            try await Task.sleep(for: bound ? certificateCheckInterval : .milliseconds(100))
                        }
                    }
                    defer { group.cancelAll() }
                    try await group.next()
                }
                if Task.isCancelled { break }
            } catch {
                if Task.isCancelled { break }
                logger.error("kubelet API on \(address) stopped: \(error); starting it again in 10 s")
                await state.setKubeletAPI(KubeletAPIReport(problem: "\(error)"))
                try? await Task.sleep(for: .seconds(10))
            }
        }
        await state.setKubeletAPI(nil)
    }

    /// Runs the tunnel agent (when `tunnel.server` is set) until cancelled.
    static func runTunnel(config: EdgedConfig, nodeName: String, destinations: NodeDestinations, state: RemoteAccessState,
                          logger: Logger) async {
        guard let agent = TunnelWiring.make(config: config, nodeName: nodeName, destinations: destinations, logger: logger) else { return }
        await state.setTunnel(agent, server: config.tunnel.server)
        logger.info("tunnel agent dials \(config.tunnel.server) as \(nodeName)")
        do {
            try await withTaskCancellationHandler {
                try await agent.run()
            } onCancel: {
                agent.drain()
            }
        } catch {
            logger.error("tunnel agent stopped: \(error)")
        }
        await state.setTunnel(nil, server: "")
    }
}
