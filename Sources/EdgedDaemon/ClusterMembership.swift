// Joining a cluster at run time: `edgectl join` reaches the daemon, which does the TLS bootstrap and then starts
// the node agent; a node that joined before starts its agent at boot, with or without the cloud.

import EdgedCluster
import EdgedControl
import EdgedCore
import EdgedHub
import EdgedKube
import EdgedKubeletAPI
import EdgedNode
import Logging
import ServiceLifecycle

actor ClusterMembership {
    let agent: ClusterAgent
    let bootstrapper: Bootstrapper
    private let joined: AsyncStream<Void>.Continuation
    private let joinedSignal: AsyncStream<Void>
    private var joining = false
    /// Why the node agent stopped (unusable credentials), for `edgectl status`; nil while it runs.
    private(set) var agentError: String?

    func agentFailed(_ message: String?) { agentError = message }

    /// The edge hub while it runs.
    private(set) var hub: EdgeHub?
    func setHub(_ hub: EdgeHub?) { self.hub = hub }

    init(agent: ClusterAgent, bootstrapper: Bootstrapper) {
        self.agent = agent
        self.bootstrapper = bootstrapper
        (joinedSignal, joined) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        if agent.isJoined { joined.yield() }
        agentError = agent.credentialsProblem()
    }

    nonisolated var signal: AsyncStream<Void> { joinedSignal }

    func join(_ request: JoinRequest) async throws -> JoinResponse {
        guard !joining else { throw ControlError.conflict("a join is already in progress") }
        joining = true
        defer { joining = false }
        let wasJoined = agent.isJoined
        do {
            let outcome = try await bootstrapper.join(request)
            if !wasJoined { joined.yield() }
            return JoinResponse(nodeName: outcome.nodeName, server: outcome.server, newlyJoined: outcome.newlyJoined,
                                certificateNotAfter: outcome.certificateNotAfter, csrName: outcome.csrName)
        } catch {
            let status: Int
            switch error.code {
            case .invalidConfig: status = 400
            case .notFound: status = 404
            default: status = error.message.contains("not approved within") ? 504 : 502
            }
            throw ControlError(status: status, message: error.message)
        }
    }
}

/// Starts the node agent once the node is joined, and runs it until shutdown. If the stored credentials are
/// unusable the agent stops, standalone pods carry on, `edgectl status` says why, and a new join starts it again.
struct ClusterService: ServiceLifecycle.Service {
    let membership: ClusterMembership
    let config: EdgedConfig
    let nodeName: String
    let pods: PodManager
    let logger: Logger
    /// The node side of the kubelet API (nil: no kubelet API).
    var kubelet: (any KubeletBackend)? = nil
    var remote = RemoteAccessState()

    func run() async throws {
        await cancelWhenGracefulShutdown {
            for await _ in membership.signal {
                do {
                    await membership.agentFailed(nil)
                    if config.hub.enabled {
                        try await runWithHub()
                    } else {
                        try await runDirect()
                    }
                    return
                } catch is CancellationError where Task.isCancelled {
                    return   // a graceful shutdown, not a failure
                } catch {
                    logger.error("the node agent stopped: \(error)")
                    await membership.agentFailed("\(error)")
                }
            }
        }
    }
}

extension ClusterService {
    /// The node agent over the edge hub's in-process transport, next to the hub's own loops and listeners.
    private func runWithHub() async throws {
        let agent = membership.agent
        let hub = try HubWiring.make(config: config, agent: agent, nodeName: nodeName, logger: logger)
        if let https = HubWiring.address(config.hub.httpsAddress), config.hub.createDummyInterface {
            await HubWiring.ensureDummyInterface(https.host, logger: logger)
        }
        await membership.setHub(hub)
        defer { Task { [membership] in await membership.setHub(nil) } }
        let userAgent = try agent.clientConfig().userAgent
        let reviews = KubeClient(transport: hub.transport(userAgent: userAgent), logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await hub.run() }
            group.addTask { await HubWiring.feedPodIPs(hub, pods: pods) }
            group.addTask {
                // A registration or status write that failed while the cloud was away is retried as soon as it is
                // back, not after the rest of its back-off (up to 30 s).
                while !Task.isCancelled {
                    await hub.waitForTheCloudToReturn()
                    if Task.isCancelled { return }
                    await agent.cloudIsReachableAgain()
                }
            }
            group.addTask { try await agent.run(transport: hub.transport(userAgent: userAgent)) }
            addRemoteAccess(to: &group, client: reviews)
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// The node agent straight to the API server (no hub).
    private func runDirect() async throws {
        let agent = membership.agent
        let reviews = try KubeClient(config: agent.clientConfig(), logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await agent.run() }
            addRemoteAccess(to: &group, client: reviews)
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// The kubelet API (its TokenReviews and SubjectAccessReviews go through `client`) and the tunnel agent; both
    /// run until the group is cancelled and never end it themselves.
    private func addRemoteAccess(to group: inout ThrowingTaskGroup<Void, any Error>, client: KubeClient) {
        let (config, nodeName, kubelet, remote, logger, pods) = (config, nodeName, kubelet, remote, logger, pods)
        if config.kubelet.enabled, let kubelet {
            group.addTask {
                await KubeletWiring.runKubeletAPI(config: config, nodeName: nodeName, backend: kubelet, client: client,
                                                  state: remote, logger: logger)
                try await Task.sleep(for: .seconds(1 << 40))
            }
        }
        if config.tunnel.serverHostPort != nil {
            let hubPort = config.hub.enabled ? HubWiring.address(config.hub.httpAddress)?.port : nil
            let destinations = NodeDestinations(nodeName: nodeName, refusedLocalPorts: Set([hubPort].compactMap { $0 }))
            group.addTask { await destinations.follow(pods) }
            group.addTask {
                await KubeletWiring.runTunnel(config: config, nodeName: nodeName, destinations: destinations, state: remote,
                                              logger: logger)
                try await Task.sleep(for: .seconds(1 << 40))
            }
        }
    }
}
