// `edged autonomy-controller`: the cloud side of node autonomy. Keeps the pods of autonomous edge nodes (Node
// annotation node.openyurt.io/autonomy-duration) bound through outages longer than their default 300 s
// tolerations. Runs as a Deployment with leader election (deploy/autonomy-controller.yaml) or under systemd on a
// control-plane host (systemd/edged-autonomy-controller.service). Flag names follow kube-controller-manager's
// where it has them (--kubeconfig, --leader-elect*, durations in Go syntax).

import ArgumentParser
import EdgedAutonomy
import EdgedCore
import EdgedDaemon
import EdgedKube
import EdgedSystemd
import Glibc
import Logging
import ServiceLifecycle

struct AutonomyControllerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "autonomy-controller",
        abstract: "Run the node autonomy controller: pods on autonomous edge nodes keep running through long outages.",
        discussion: "For every pod bound to a node annotated node.openyurt.io/autonomy-duration (\"0\" = forever, or a duration such as \"72h\"; or the older node.beta.openyurt.io/autonomy: \"true\"), sets the NoExecute tolerations of node.kubernetes.io/unreachable and node.kubernetes.io/not-ready to that duration, so the taint-eviction controller does not delete the pods while the node is away. Nothing else is changed. Deploy it with deploy/autonomy-controller.yaml (in-cluster credentials, 2 replicas with leader election) or systemd/edged-autonomy-controller.service (--kubeconfig).")

    @Option(help: "Kubeconfig to use (default: the pod's in-cluster ServiceAccount).")
    var kubeconfig: String?
    @Option(help: "Every pod is checked again this often, in seconds (and at each start and leadership change).")
    var resyncSeconds = 300
    @Option(help: "Pods written at once.")
    var workers = 4
    @Option(help: "Elect a leader among replicas with a Lease (true/false; only the leader writes).")
    var leaderElect = true
    @Option(help: "Namespace of the Lease (default: $POD_NAMESPACE, else the in-cluster namespace, else kube-system).")
    var leaderElectNamespace: String?
    @Option(help: "Name of the Lease.")
    var leaderElectLeaseName = "edged-autonomy-controller"
    @Option(help: "How long other replicas wait after the leader's last renewal they saw before taking over (Go duration).")
    var leaderElectLeaseDuration = "15s"
    @Option(help: "How long the leader keeps trying to renew before it stops leading (Go duration).")
    var leaderElectRenewDeadline = "10s"
    @Option(help: "How often the leader renews and candidates try (Go duration).")
    var leaderElectRetryPeriod = "2s"
    @Option(help: "This replica's name in the Lease and in Events (default: $POD_NAME, else hostname_<random>).")
    var identity: String?
    @Option(help: "trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    static func duration(_ flag: String, _ text: String) throws -> Duration {
        guard let seconds = NodeAutonomy.parseGoDuration(text), seconds > 0 else {
            throw ValidationError("\(flag) \"\(text)\" is not a positive Go duration (e.g. 15s, 500ms, 1m30s)")
        }
        return .milliseconds(Int64((seconds * 1000).rounded()))
    }

    func validate() throws {
        guard resyncSeconds >= 1 else { throw ValidationError("--resync-seconds must be at least 1") }
        guard (1...64).contains(workers) else { throw ValidationError("--workers must be 1 to 64") }
        if leaderElect {
            _ = try electionConfig(namespace: "x", identity: "x")
        }
    }

    func electionConfig(namespace: String, identity: String) throws -> LeaderElectionConfig {
        let config = LeaderElectionConfig(
            namespace: namespace, name: leaderElectLeaseName, identity: identity,
            leaseDuration: try Self.duration("--leader-elect-lease-duration", leaderElectLeaseDuration),
            renewDeadline: try Self.duration("--leader-elect-renew-deadline", leaderElectRenewDeadline),
            retryPeriod: try Self.duration("--leader-elect-retry-period", leaderElectRetryPeriod))
        do { try config.validate() } catch { throw ValidationError("--leader-elect-*: \(error.message)") }
        return config
    }

    func run() async throws {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("log level \"\(logLevel)\" is not one of trace, debug, info, notice, warning, error, critical")
        }
        LoggingSetup.bootstrap(level: level)
        var logger = Logger(label: AutonomyControllerOptions.component)
        logger.logLevel = level
        let userAgent = "edged-autonomy-controller/\(EdgedVersion.string)"
        let access: ClusterAccess
        do throws(EdgedError) {
            if let kubeconfig {
                access = try ClusterAccess.kubeconfig(path: kubeconfig, userAgent: userAgent)
            } else {
                access = try ClusterAccess.inCluster(userAgent: userAgent)
            }
        } catch {
            logger.critical("\(error.message)")
            throw ExitCode(1)
        }
        let client: KubeClient
        do {
            client = try KubeClient(config: access.config, logger: logger)
        } catch {
            logger.critical("\(access.source): \(error)")
            throw ExitCode(1)
        }
        let env = { (name: String) in getenv(name).map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } }
        let id = identity ?? env("POD_NAME") ?? "\(TunnelServerCommand.hostName())_\(String(UInt64.random(in: 0...UInt64.max), radix: 16))"
        var election: LeaderElectionConfig?
        if leaderElect {
            let namespace = leaderElectNamespace ?? env("POD_NAMESPACE") ?? ClusterAccess.inClusterNamespace() ?? "kube-system"
            election = try electionConfig(namespace: namespace, identity: id)
        }
        let options = AutonomyControllerOptions(identity: id, resyncInterval: .seconds(resyncSeconds), workers: workers,
                                                leaderElection: election)
        let controller = AutonomyController(client: client, options: options, logger: logger)
        let leaseText = election.map { "lease \($0.namespace)/\($0.name) (duration \(leaderElectLeaseDuration), renew deadline \(leaderElectRenewDeadline), retry period \(leaderElectRetryPeriod))" } ?? "no leader election"
        logger.info("edged autonomy-controller \(EdgedVersion.string) starting: identity \(id), \(leaseText), resync every \(resyncSeconds)s, API server \(client.server) (\(access.source))")

        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: ControllerService(controller: controller))]
        if let file = access.tokenFile {
            var current: String?
            if case .bearerToken(let t) = access.config.credentials { current = t }
            services.append(.init(service: TokenRefreshService(file: file, client: client, current: current, logger: logger)))
        }
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            logger.critical("\(error)")
            throw ExitCode(1)
        }
        logger.info("edged autonomy-controller stopped")
    }
}

/// The controller until graceful shutdown (SIGTERM/SIGINT), which releases the Lease.
private struct ControllerService: ServiceLifecycle.Service {
    let controller: AutonomyController
    func run() async throws {
        await cancelWhenGracefulShutdown { await controller.run() }
    }
}

/// Re-reads a rotating token file every minute.
private struct TokenRefreshService: ServiceLifecycle.Service {
    let file: String
    let client: KubeClient
    let current: String?
    let logger: Logger
    func run() async throws {
        await cancelWhenGracefulShutdown {
            await ClusterAccess.refreshToken(file: file, client: client, current: current) { [logger] message in
                logger.warning("\(message)")
            }
        }
    }
}
