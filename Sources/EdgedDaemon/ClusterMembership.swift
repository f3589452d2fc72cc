// Joining a cluster at run time: `edgectl join` reaches the daemon, which does the TLS bootstrap and then starts
// the node agent; a node that joined before starts its agent at boot, with or without the cloud.

import EdgedCluster
import EdgedControl
import EdgedCore
import EdgedHub
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
struct ClusterService: Service {
    let membership: ClusterMembership
    let config: EdgedConfig
    let nodeName: String
    let pods: PodManager
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            for await _ in membership.signal {
                do {
                    await membership.agentFailed(nil)
                    if config.hub.enabled {
                        try await runWithHub()
                    } else {
                        try await membership.agent.run()
                    }
                    return
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
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await hub.run() }
            group.addTask { await HubWiring.feedPodIPs(hub, pods: pods) }
            group.addTask { try await agent.run(transport: hub.transport(userAgent: userAgent)) }
            defer { group.cancelAll() }
            try await group.next()
        }
    }
}
