// Builds every service from the configuration and runs them in one ServiceGroup.

import EdgedCluster
import EdgedControl
import EdgedCore
import EdgedImages
import EdgedNetwork
import EdgedNode
import EdgedRuntime
import EdgedSystemd
import Glibc
import Logging
import ServiceLifecycle

/// The edged daemon in standalone mode: static pods from the manifest dir, images from the local store (and
/// registries), edgectl over the control socket, systemd notify + watchdog.
///
/// Service order (shutdown runs in reverse): control server first so edgectl answers as soon as possible,
/// then the pod source. On SIGTERM edged stops serving and exits, leaving pods running (their monitors are
/// not its children, and systemd's KillMode=process spares them); the next edged re-adopts them.
public struct Daemon {
    public let config: EdgedConfig
    public let logger: Logger

    public init(config: EdgedConfig, logger: Logger) {
        self.config = config
        self.logger = logger
    }

    public func run() async throws {
        let started = Timestamp.now()
        let startedClock = ContinuousClock.now
        let notifier: SystemdNotifier? = SystemdNotifier()
        // edged.socket holds the control socket across restarts; without it (edged run by hand) edged binds it itself.
        let passedSockets = SystemdSockets.take()
        for dir in [config.stateDir, config.runDir, config.manifestDir, config.logDir, "\(config.stateDir)/images/import"] {
            guard Files.makeDirectories(dir) else {
                throw EdgedError(.io, "cannot create \(dir): \(String(cString: strerror(errno))) — check the path and that edged runs as root")
            }
        }
        chmod(config.stateDir, 0o700)
        let lock = try StateLock(path: "\(config.stateDir)/edged.lock")
        defer { lock.release() }
        let nodeName = config.resolvedNodeName
        let errors = ErrorLog(logger: logger)

        let runtime = try ContainerRuntime(
            config: RuntimeConfig(stateDir: "\(config.stateDir)/containers", runDir: config.runDir, cgroupPrefix: config.cgroupRoot),
            logger: logger)
        let images = try ImageStore(root: "\(config.stateDir)/images", insecureRegistries: config.insecureRegistries, logger: logger)
        for (file, result) in await images.importDirectory("\(config.stateDir)/images/import") {
            switch result {
            case .success(let list): logger.info("imported \(list.flatMap(\.references).joined(separator: ", ")) from \(file)")
            case .failure(let error): errors.record("image archive \(file)", "\(error)")
            }
        }
        var nodeConfig = NodeConfig(
            nodeName: nodeName, podsDir: "\(config.stateDir)/pods", logDir: config.logDir,
            containerLogMaxBytes: Int((try? Quantity(config.containerLogMaxSize).value()) ?? 10 << 20),
            containerLogMaxFiles: config.containerLogMaxFiles, seccompDefault: config.seccompDefault,
            podPidsLimit: config.podPidsLimit > 0 ? config.podPidsLimit : nil)
        nodeConfig.network = PodNetwork(
            config: PodNetworkConfig(confDir: config.cni.confDir, binDirs: config.cni.binDirs, cacheDir: config.cniCacheDir,
                                     pluginTimeout: .seconds(config.cni.pluginTimeoutSeconds), allowNoNetwork: true),
            logger: logger)
        let gpus = try GPUDevices(root: config.gpu.deviceRoot, stateDir: config.stateDir)
        nodeConfig.gpus = gpus
        if let gpuCount = gpus.capacity()[GPUDevices.resourceName] {
            logger.info("found \(gpuCount) NVIDIA GPU(s), driver \(gpus.inventory().driverVersion ?? "unknown"): advertised as \(GPUDevices.resourceName)")
        }
        var agentConfig = ClusterAgentConfig(nodeName: nodeName, credentialsDir: config.credentialsDir, stateDir: config.stateDir,
                                             version: EdgedVersion.string)
        agentConfig.nodeIP = config.cluster.nodeIP
        agentConfig.maxPods = config.cluster.maxPods
        agentConfig.leaseRenewInterval = .seconds(config.cluster.leaseRenewSeconds)
        agentConfig.leaseDurationSeconds = Int32(config.cluster.leaseDurationSeconds)
        agentConfig.nodeStatusReportInterval = .seconds(config.cluster.nodeStatusReportSeconds)
        agentConfig.volumeRefreshInterval = .seconds(config.cluster.volumeRefreshSeconds)
        agentConfig.autonomyGraceSeconds = Int64(config.cluster.autonomyGraceSeconds)
        agentConfig.systemReserved = config.cluster.systemReserved.mapValues { Quantity($0) }
        agentConfig.extendedResources = { [gpus] in gpus.capacity() }
        let thresholds = try EvictionThresholds.parse(config.evictionHard, memoryTotal: Files.meminfo()["MemTotal"] ?? 0)
        agentConfig.memoryEvictionThreshold = thresholds.memoryAvailableBytes
        agentConfig.renewsLease = !config.hub.enabled
        agentConfig.kubeletPort = Int32(config.kubelet.port)
        if config.hub.enabled, let https = HubWiring.address(config.hub.httpsAddress), https.host != "0.0.0.0", https.host != "::" {
            agentConfig.extraServingIPs = [https.host]
        }
        let joinedAtStart = ClusterAgent.hasCredentials(dir: config.credentialsDir)
        let pods = PodManager(runtime: runtime, images: images, config: nodeConfig, errors: errors, logger: logger,
                              origins: joinedAtStart ? [.file, .api] : [.file])
        let network = nodeConfig.network
        let agent = ClusterAgent(config: agentConfig, pods: pods, images: images,
                                 networkProblem: {
            if case .notReady(let reason)? = await network?.readiness() { return reason }
            return nil
        }, logger: logger)
        let membership = ClusterMembership(agent: agent, bootstrapper: Bootstrapper(
            store: .init(dir: config.credentialsDir), nodeName: nodeName,
            userAgent: "edged/\(EdgedVersion.string)", logger: logger))
        let remote = RemoteAccessState()
        let backend = DaemonBackend(config: config, nodeName: nodeName, pods: pods, images: images, runtime: runtime,
                                    errors: errors, startedAt: started, startedClock: startedClock, membership: membership,
                                    remote: remote)
        var controlConfig = ControlServer.Configuration(socketPath: config.socketPath, groupID: config.socketGroup)
        if let passed = SystemdSockets.unixListener(passedSockets, path: config.socketPath, name: "control") {
            controlConfig.inheritedListener = passed.fd
            let path = SystemdSockets.boundPath(passed.fd) ?? "an unnamed socket"
            if path != config.socketPath {
                logger.warning("edged.socket listens on \(path), not on socketPath \(config.socketPath) of the config: edgectl needs --socket \(path); make ListenStream= and socketPath the same")
            }
            controlConfig.socketPath = path
            logger.info("control socket \(path) from systemd (edged.socket, fd \(passed.fd))")
        }
        for unused in passedSockets where unused.fd != controlConfig.inheritedListener {
            logger.warning("systemd passed socket fd \(unused.fd) (\(unused.name)) that edged does not use: only a Unix stream socket (ListenStream=) for the control API is; closing it")
            close(unused.fd)
        }
        let control = ControlServer(configuration: controlConfig, backend: backend)
        let source = ManifestSource(directory: config.manifestDir, nodeName: nodeName, rescanInterval: .seconds(max(config.manifestRescanSeconds, 1)))

        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: ControlService(server: control)),
            .init(service: StaticPodService(source: source, manager: pods)),
            .init(service: StatusNotifier(notifier: notifier, backend: backend)),
            .init(service: ClusterService(membership: membership, config: config, nodeName: nodeName, pods: pods, logger: logger,
                                          kubelet: KubeletNode(nodeName: nodeName, pods: pods, runtime: runtime, hostIPs: { [nodeIP = config.cluster.nodeIP] in
                                              NodeFacts.internalIPs(configured: nodeIP)
                                          }),
                                          remote: remote)),
        ]
        services.append(.init(service: EvictionService(manager: EvictionManager(thresholds: thresholds, pods: pods,
                                                                                  runtime: runtime, logger: logger))))
        if let notifier, notifier.watchdogInterval != nil {
            services.append(.init(service: SystemdWatchdog(notifier: notifier)))
        }
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        logger.info("edged \(EdgedVersion.string) starting in standalone mode: node \(nodeName), manifests \(config.manifestDir), socket \(config.socketPath)")
        try? notifier?.ready(status: "starting pods from \(config.manifestDir)")
        let trimmer = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: MallocTuning.trimInterval)
                MallocTuning.trim()
            }
        }
        defer { trimmer.cancel() }
        var failure: (any Error)?
        do { try await group.run() } catch { failure = error }
        try? notifier?.stopping(status: config.stopPodsOnExit ? "stopping pods" : "exiting; pods keep running")
        if config.stopPodsOnExit {
            await pods.terminateAll()
        }
        try? await images.shutdown()
        if let failure { throw failure }
        logger.info("edged stopped")
    }
}

/// Runs memory eviction until shutdown.
struct EvictionService: Service {
    let manager: EvictionManager
    func run() async throws {
        await cancelWhenGracefulShutdown { await manager.run() }
    }
}

/// Runs the control server as a service.
struct ControlService: Service {
    let server: ControlServer
    func run() async throws {
        try await withGracefulShutdownHandler {
            try await server.run()
        } onGracefulShutdown: {
            server.shutdown()
        }
    }
}

/// Keeps systemd's STATUS= line current ("3 pods running, 1 degraded").
struct StatusNotifier: Service {
    let notifier: SystemdNotifier?
    let backend: DaemonBackend

    func run() async throws {
        guard let notifier, notifier.isEnabled else {
            try? await gracefulShutdown()
            return
        }
        try? await cancelWhenGracefulShutdown {
            var last = ""
            while !Task.isCancelled {
                let pods = await backend.pods()
                let running = pods.filter { $0.phase == "Running" }.count
                let text = "\(running)/\(pods.count) pods running"
                if text != last {
                    try? notifier.status(text)
                    last = text
                }
                try await Task.sleep(for: .seconds(5))
            }
        }
    }
}
