// edged: the edge node daemon. Thin entry point: parse flags, load the config, run the daemon.

import ArgumentParser
import EdgedCore
import EdgedDaemon
import EdgedSystemd
import Glibc
import Logging

@main
struct Edged: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edged",
        abstract: "Turns this machine into a Kubernetes edge node: runs pods from static manifests, with edgectl for on-site checks.",
        version: EdgedVersion.string,
        subcommands: [Run.self, DemoCommand.self, TunnelServerCommand.self, AutonomyControllerCommand.self],
        defaultSubcommand: Run.self)
}

/// Flags shared by `run` and `demo`; each overrides the config file.
struct DaemonOptions: ParsableArguments {
    @Option(help: "Config file (YAML). A missing default file means all defaults.")
    var config: String = "/etc/edged/config.yaml"
    @Option(help: "Persistent state: images, containers, pods (default /var/lib/edged).")
    var stateDir: String?
    @Option(help: "Runtime state cleared at reboot (default /run/edged).")
    var runDir: String?
    @Option(help: "Static pod manifests directory (default /etc/edged/manifests).")
    var manifestDir: String?
    @Option(help: "edgectl socket (default <run-dir>/edged.sock).")
    var socket: String?
    @Option(help: "Container logs directory (default /var/log/pods).")
    var logDir: String?
    @Option(help: "Node name (default: host name).")
    var nodeName: String?
    @Option(help: "cgroup prefix under each hierarchy (default edged).")
    var cgroupRoot: String?
    @Option(help: "trace, debug, info, notice, warning, error, critical.")
    var logLevel: String?
    @Flag(help: "Stop every pod when edged exits (default: pods keep running across restarts).")
    var stopPodsOnExit = false

    func load(configRequired: Bool) throws -> EdgedConfig {
        var c = try EdgedConfig.load(path: config, required: configRequired)
        if let v = stateDir { c.stateDir = v }
        if let v = runDir { c.runDir = v }
        if let v = manifestDir { c.manifestDir = v }
        if let v = socket { c.socket = v }
        if let v = logDir { c.logDir = v }
        if let v = nodeName { c.nodeName = v }
        if let v = cgroupRoot { c.cgroupRoot = v }
        if let v = logLevel { c.logLevel = v }
        if stopPodsOnExit { c.stopPodsOnExit = true }
        return c
    }
}

func startDaemon(_ config: EdgedConfig) async throws {
    MallocTuning.limitArenas()
    guard let level = Logger.Level(rawValue: config.logLevel) else {
        throw ValidationError("log level \"\(config.logLevel)\" is not one of trace, debug, info, notice, warning, error, critical")
    }
    LoggingSetup.bootstrap(level: level)
    var logger = Logger(label: "edged")
    logger.logLevel = level
    guard getuid() == 0 else {
        throw ValidationError("edged must run as root (it creates namespaces, mounts and cgroups): run it with sudo or from systemd")
    }
    do {
        try await Daemon(config: config, logger: logger).run()
    } catch let e as EdgedError {
        logger.critical("\(e.message)")
        throw ExitCode(1)
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the daemon (the default).")
    @OptionGroup var options: DaemonOptions

    func run() async throws {
        let explicit = CommandLine.arguments.contains { $0 == "--config" || $0.hasPrefix("--config=") }
        let config: EdgedConfig
        do { config = try options.load(configRequired: explicit) } catch {
            throw ValidationError("\(error)")
        }
        try await startDaemon(config)
    }
}

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run edged standalone with a demo pod (busybox from this host's busybox-static; no registry needed).")
    @OptionGroup var options: DaemonOptions
    @Flag(help: "Leave the demo pod running when the demo exits (default: Ctrl-C stops it, as a newcomer expects).")
    var keepPods = false

    func run() async throws {
        var config = try options.load(configRequired: false)
        if options.manifestDir == nil { config.manifestDir = "\(config.stateDir)/demo-manifests" }
        // A demo cleans up after itself; `edged run` keeps its rule (pods outlive edged) for restarts and upgrades.
        if !keepPods { config.stopPodsOnExit = true }
        do {
            try Demo.writeImageArchive(to: "\(config.stateDir)/images/import/edged-demo-busybox.tar")
            try Demo.write("\(config.manifestDir)/demo.yaml", Array(Demo.manifest.utf8))
        } catch {
            throw ValidationError(error.message)
        }
        let ctl = config.socket.map { " --socket \($0)" } ?? (config.runDir == "/run/edged" ? "" : " --socket \(config.socketPath)")
        print("""
            edged demo: pod manifest at \(config.manifestDir)/demo.yaml, image \(Demo.imageReference).
            In another terminal:
              sudo edgectl\(ctl) status              # one-screen health
              sudo edgectl\(ctl) logs demo -c ticker -f
              curl http://127.0.0.1:8080/            # the demo web container
            Stop with Ctrl-C: the demo pod stops too\(keepPods ? " — not this time: --keep-pods leaves it running" : " (--keep-pods leaves it running)").
            """)
        fflush(nil)  // all streams: the how-to goes out before the daemon's log lines, not at exit
        try await startDaemon(config)
    }
}
