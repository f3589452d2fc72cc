// The kubelet API and the tunnel agent in the daemon: both start once the node has joined and run next to the node
// agent. The kubelet API waits for its serving certificate (the kubelet-serving CSR must be approved first).

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
    /// Runs the kubelet API until cancelled: waits for the serving certificate, serves, and starts again after a
    /// failure (port taken, unreadable certificate), reporting each problem to `state`.
    static func runKubeletAPI(config: EdgedConfig, nodeName: String, backend: any KubeletBackend, client: KubeClient,
                              state: RemoteAccessState, logger: Logger) async {
        let store = CredentialStore(dir: config.credentialsDir)
        let serving = store.currentPath(.serving)
        let k = config.kubelet
        let address = k.address.contains(":") ? "[\(k.address)]:\(k.port)" : "\(k.address):\(k.port)"
        var waitingLogged = false
        while !Task.isCancelled {
            guard access(serving, R_OK) == 0 else {
                let problem = "no serving certificate yet: the node's kubernetes.io/kubelet-serving CSR waits for approval (kubectl get csr; kubectl certificate approve NAME)"
                await state.setKubeletAPI(KubeletAPIReport(problem: problem))
                if !waitingLogged { logger.notice("kubelet API on \(address) waits: \(problem)") }
                waitingLogged = true
                try? await Task.sleep(for: .seconds(2))
                continue
            }
            let server = KubeletServer(
                config: KubeletServerConfig(host: k.address, port: k.port, certPath: serving, keyPath: serving,
                                            clientCAPath: store.caPath, nodeName: nodeName,
                                            authenticationCacheTTL: .seconds(k.authenticationCacheSeconds),
                                            authorizedCacheTTL: .seconds(k.authorizationAllowedCacheSeconds),
                                            unauthorizedCacheTTL: .seconds(k.authorizationDeniedCacheSeconds),
                                            anonymous: k.anonymousAuth),
                backend: backend, client: client, logger: logger)
            await state.setKubeletAPI(KubeletAPIReport(listening: address))
            do {
                try await withTaskCancellationHandler {
                    try await server.run()
                } onCancel: {
                    server.shutdown()
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
