// `edged tunnel-server`: the cloud side of the reverse tunnel, for clusters without a Konnectivity server. Flags
// follow Konnectivity's proxy-server (--agent-port, --cluster-cert, --uds-name, --server-id, ...) so that
// operators' manifests and habits carry over; only its http-connect mode exists.

import ArgumentParser
import EdgedSystemd
import EdgedTunnel
import Glibc
import Logging
import ServiceLifecycle

struct TunnelServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tunnel-server",
        abstract: "Run the tunnel server: edge nodes dial in, kube-apiserver reaches their kubelet API through its HTTP CONNECT frontend.",
        discussion: "Point kube-apiserver's --egress-selector-config-file at the frontend (deploy/egress-selector.yaml: cluster egress, HTTPConnect over the Unix socket of --uds-name, or over TCP with --server-port). Agents authenticate with their node client certificate (CN system:node:NAME), checked against --cluster-ca-cert.")

    @Option(help: "Address agents connect to.")
    var agentBindAddress = "0.0.0.0"
    @Option(help: "Port agents connect to (gRPC over mutual TLS).")
    var agentPort = 8132
    @Option(help: "Certificate (PEM) offered to agents.")
    var clusterCert: String
    @Option(help: "Private key (PEM) of --cluster-cert.")
    var clusterKey: String
    @Option(help: "CA (PEM) that agents' client certificates must chain to (the cluster CA).")
    var clusterCACert: String
    @Option(help: "HTTP CONNECT frontend on this Unix socket (for kube-apiserver on the same host).")
    var udsName: String?
    @Option(help: "HTTP CONNECT frontend on this TCP port (0: none).")
    var serverPort = 0
    @Option(help: "Address of the TCP frontend.")
    var serverBindAddress = "127.0.0.1"
    @Option(help: "Certificate (PEM) of the TCP frontend (plain TCP without it).")
    var serverCert: String?
    @Option(help: "Private key (PEM) of --server-cert.")
    var serverKey: String?
    @Option(help: "CA (PEM) that the TCP frontend's callers must present a client certificate from.")
    var serverCACert: String?
    @Option(help: "This instance's ID (default: the host name).")
    var serverID: String?
    @Option(help: "How many tunnel server instances run behind the agents' address.")
    var serverCount = 1
    @Option(help: "Seconds a CONNECT waits for the node's agent to dial.")
    var dialTimeoutSeconds = 10
    @Option(help: "trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    func validate() throws {
        guard udsName != nil || serverPort > 0 else {
            throw ValidationError("give --uds-name PATH or --server-port PORT: without a frontend kube-apiserver cannot use the tunnel")
        }
        guard (serverCert == nil) == (serverKey == nil) else {
            throw ValidationError("--server-cert and --server-key go together")
        }
        guard serverCACert == nil || serverCert != nil else {
            throw ValidationError("--server-ca-cert needs --server-cert and --server-key (client certificates need TLS)")
        }
        guard serverCount >= 1, (0...65535).contains(agentPort), (0...65535).contains(serverPort), dialTimeoutSeconds >= 1 else {
            throw ValidationError("--server-count and --dial-timeout-seconds must be at least 1, ports 0-65535")
        }
        for (flag, path) in [("--cluster-cert", clusterCert), ("--cluster-key", clusterKey), ("--cluster-ca-cert", clusterCACert)]
        where access(path, R_OK) != 0 {
            throw ValidationError("\(flag) \(path): \(String(cString: strerror(errno)))")
        }
    }

    func run() async throws {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("log level \"\(logLevel)\" is not one of trace, debug, info, notice, warning, error, critical")
        }
        LoggingSetup.bootstrap(level: level)
        var logger = Logger(label: "edged-tunnel-server")
        logger.logLevel = level
        var frontendTLS: TunnelServerConfig.FrontendTLS?
        if let cert = serverCert, let key = serverKey {
            frontendTLS = .init(certPath: cert, keyPath: key, clientCAPath: serverCACert)
        }
        let config = TunnelServerConfig(
            agentHost: agentBindAddress, agentPort: agentPort, certPath: clusterCert, keyPath: clusterKey,
            agentCAPath: clusterCACert, frontendHost: serverPort > 0 ? serverBindAddress : nil,
            frontendPort: serverPort > 0 ? serverPort : nil, frontendTLS: frontendTLS, unixSocketPath: udsName,
            serverID: serverID ?? Self.hostName(), serverCount: serverCount, dialTimeout: .seconds(dialTimeoutSeconds))
        let server = TunnelServer(config: config, logger: logger)
        let group = ServiceGroup(configuration: .init(services: [.init(service: server)],
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            logger.critical("\(error)")
            throw ExitCode(1)
        }
    }

    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "edged-tunnel-server" }
        return String(cString: buffer)
    }
}
