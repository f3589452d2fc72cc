// Pod networking through CNI plugins: ADD when a pod's sandbox is made, DEL when it goes, CHECK on demand.
//
//   setUp:    load config (confDir) → cache {config, no result} → ADD each plugin in order, chaining prevResult
//             → cache {config, result} → pod IPs.   A failed ADD is rolled back with DEL.
//   tearDown: cached config + result (or the current config when nothing is cached) → DEL each plugin in
//             reverse → cache entry removed.   Missing netns and repeated calls are fine.

import EdgedCore
import Glibc
import Logging

/// Where the CNI pieces are.
public struct PodNetworkConfig: Sendable, Equatable {
    /// Network config dir (kubelet's --cni-conf-dir). Default /etc/cni/net.d.
    public var confDir: String
    /// Plugin dirs, searched in order (kubelet's --cni-bin-dir, CNI_PATH). Default /opt/cni/bin, /usr/lib/cni.
    public var binDirs: [String]
    /// edged's per-pod cache of ADD results (crash-safe). Default <stateDir>/cni.
    public var cacheDir: String
    /// The interface inside the pod (CNI_IFNAME).
    public var ifName: String
    /// Time limit for one plugin call.
    public var pluginTimeout: Duration
    /// When there is no network config at all, give pods a netns with only lo (standalone mode) instead of
    /// failing their sandbox (a joined node, like kubelet).
    public var allowNoNetwork: Bool

    public init(confDir: String = "/etc/cni/net.d", binDirs: [String] = ["/opt/cni/bin", "/usr/lib/cni"],
                cacheDir: String, ifName: String = "eth0", pluginTimeout: Duration = .seconds(60), allowNoNetwork: Bool = true) {
        self.confDir = confDir
        self.binDirs = binDirs
        self.cacheDir = cacheDir
        self.ifName = ifName
        self.pluginTimeout = pluginTimeout
        self.allowNoNetwork = allowNoNetwork
    }
}

/// A hostPort of a pod, as CNI's portMappings capability passes it (portmap plugin).
public struct PortMapping: Sendable, Equatable {
    public var hostPort: Int
    public var containerPort: Int
    /// "tcp", "udp" or "sctp" (lower case, like kubelet passes it).
    public var `protocol`: String
    public var hostIP: String?

    public init(hostPort: Int, containerPort: Int, protocol: String = "tcp", hostIP: String? = nil) {
        self.hostPort = hostPort
        self.containerPort = containerPort
        self.protocol = `protocol`.lowercased()
        self.hostIP = hostIP
    }

    var json: JSONValue {
        var m: [(String, JSONValue)] = [("hostPort", .number(String(hostPort))), ("containerPort", .number(String(containerPort))),
                                        ("protocol", .string(`protocol`))]
        if let hostIP, !hostIP.isEmpty { m.append(("hostIP", .string(hostIP))) }
        return .object(m)
    }
}

/// A pod's network as CNI set it up.
public struct PodNetworkStatus: Sendable, Equatable {
    /// Pod IPs without prefix length, IPv4 first (status.podIP is the first).
    public var ips: [String]
    /// The CNI network's name.
    public var network: String
    /// The config file it came from.
    public var configFile: String

    public init(ips: [String], network: String, configFile: String) {
        self.ips = ips
        self.network = network
        self.configFile = configFile
    }
}

/// Whether pods can get a network now, for the node's Ready condition (kubelet: NetworkReady).
public enum NetworkReadiness: Sendable, Equatable {
    case ready(network: String)
    /// The reason, worded for the node condition ("cni config uninitialized: ...").
    case notReady(reason: String)

    public var isReady: Bool {
        if case .ready = self { return true }
        return false
    }
}

/// The pod network manager: runs the CNI plugins of the configured network for each pod and keeps each pod's
/// result. One per node; all methods may be called concurrently for different pods (calls for one pod must not
/// overlap: its pod worker serializes them).
public actor PodNetwork {
    public let config: PodNetworkConfig
    private let executor: PluginExecutor
    private let cache: CNIResultCache
    private let logger: Logger
    private var statuses: [String: PodNetworkStatus] = [:]
    private var loggedNoNetwork = false

    public init(config: PodNetworkConfig, logger: Logger) {
        self.config = config
        executor = PluginExecutor(binDirs: config.binDirs, timeout: config.pluginTimeout)
        cache = CNIResultCache(dir: config.cacheDir)
        self.logger = logger
    }

    /// Loads the current network config. Throws `.notReady` (none) or `.invalidConfig` (naming the file).
    public func currentConfig() throws(NetworkError) -> CNIConfig {
        try CNIConfig.load(confDir: config.confDir)
    }

    /// Config present, valid, and every plugin it names found in the plugin dirs.
    public func readiness() -> NetworkReadiness {
        let net: CNIConfig
        do { net = try currentConfig() } catch {
            return .notReady(reason: error.code == .notReady ? "cni config uninitialized: \(error.message)" : error.message)
        }
        for type in net.pluginTypes where executor.find(type) == nil {
            return .notReady(reason: "CNI plugin \(type) of network \(net.name) (\(net.file)) not found in \(config.binDirs.joined(separator: ", ")): install it (Debian: containernetworking-plugins)")
        }
        return .ready(network: net.name)
    }

    /// Connects a pod's network namespace: CNI ADD through the network's plugin chain.
    ///
    /// Returns the pod's IPs, or nil when there is no network config and `allowNoNetwork` is set (the pod
    /// keeps a netns with only lo; this is logged once). A pod already set up (cached) gets its cached result
    /// without calling the plugins again (after an edged restart, for example).
    /// Throws `.notReady` (no config, when not allowed), `.invalidConfig`, `.pluginNotFound`, `.pluginFailed`,
    /// `.timeout`, `.invalidResult` (each naming the file or the plugin), `.io` (cache). A failed ADD is rolled
    /// back with DEL before the error is thrown.
    public func setUp(podUID: String, namespace: String, name: String, netnsPath: String,
                      portMappings: [PortMapping] = []) async throws(NetworkError) -> PodNetworkStatus? {
        try Self.checkUID(podUID)
        if let entry = try cache.read(podUID), entry.netns == netnsPath, let result = entry.result {
            let status = PodNetworkStatus(ips: result.podIPs, network: entry.config.name, configFile: entry.config.file)
            statuses[podUID] = status
            return status
        }
        let net: CNIConfig
        do { net = try currentConfig() } catch {
            if error.code == .notReady && config.allowNoNetwork {
                if !loggedNoNetwork {
                    loggedNoNetwork = true
                    logger.notice("\(error.message); pods get a network namespace with only lo until a config appears")
                }
                return nil
            }
            throw error
        }
        var runtimeConfig: [(String, JSONValue)] = []
        if !portMappings.isEmpty { runtimeConfig.append(("portMappings", .array(portMappings.map(\.json)))) }
        var entry = CNICacheEntry(podUID: podUID, namespace: namespace, name: name, containerID: podUID, netns: netnsPath,
                                  ifName: config.ifName, config: net, runtimeConfig: runtimeConfig, result: nil)
        try cache.write(entry)
        var prev: CNIResult?
        var started = 0
        do {
            for plugin in net.plugins {
                started += 1
                let out = try await invoke("ADD", plugin: plugin, entry: entry, prevResult: prev?.raw)
                prev = try CNIResult.parse(out, plugin: plugin["type"]?.stringValue ?? "")
            }
        } catch {
            logger.warning("CNI ADD for pod \(namespace)/\(name) failed, rolling back: \(error.message)")
            // DEL only the plugins whose ADD ran (a plugin that was not found never ran).
            if error.code == .pluginNotFound { started -= 1 }
            do {
                try await delete(entry, plugins: Array(net.plugins.prefix(started)))
                cache.remove(podUID)
            } catch {
                logger.warning("CNI DEL after a failed ADD for pod \(namespace)/\(name): \(error.message)")
            }
            throw error
        }
        guard let result = prev else {
            throw NetworkError(.invalidResult, "CNI network \(net.name) (\(net.file)) returned no result for pod \(namespace)/\(name)")
        }
        entry.result = result
        try cache.write(entry)
        let status = PodNetworkStatus(ips: result.podIPs, network: net.name, configFile: net.file)
        statuses[podUID] = status
        logger.info("pod \(namespace)/\(name) on network \(net.name): \(status.ips.joined(separator: ", "))")
        return status
    }

    /// Disconnects a pod: CNI DEL through the plugin chain in reverse, with the config and result cached at
    /// ADD (so it works after a restart and after the config dir changed). Without a cache entry it runs DEL
    /// with the current config, if any (plugins treat DEL of an unknown pod as success). Idempotent; a
    /// vanished netns is fine. Throws the first plugin failure (the cache entry then stays for a retry).
    public func tearDown(podUID: String, namespace: String = "", name: String = "", netnsPath: String = "") async throws(NetworkError) {
        try Self.checkUID(podUID)
        statuses[podUID] = nil
        let entry: CNICacheEntry
        if let cached = try cache.read(podUID) {
            entry = cached
        } else {
            guard let net = try? currentConfig() else { return }
            entry = CNICacheEntry(podUID: podUID, namespace: namespace, name: name, containerID: podUID, netns: netnsPath,
                                  ifName: config.ifName, config: net, runtimeConfig: [], result: nil)
        }
        try await delete(entry)
        cache.remove(podUID)
    }

    /// CNI CHECK of a set-up pod (networks at cniVersion ≥ 0.4.0 without disableCheck; others pass).
    /// Throws `.notFound` when the pod was never set up, or the failing plugin's error.
    public func check(podUID: String) async throws(NetworkError) {
        try Self.checkUID(podUID)
        guard let entry = try cache.read(podUID), let result = entry.result else {
            throw NetworkError(.notFound, "pod \(podUID) has no CNI network set up (no cached ADD result in \(config.cacheDir))")
        }
        guard CNIVersion.hasCheck(entry.config.cniVersion), !entry.config.disableCheck else { return }
        for plugin in entry.config.plugins {
            _ = try await invoke("CHECK", plugin: plugin, entry: entry, prevResult: result.raw)
        }
    }

    /// The pod's network as last set up (from memory, else from the cache), or nil.
    public func status(podUID: String) -> PodNetworkStatus? {
        if let s = statuses[podUID] { return s }
        guard let entry = try? cache.read(podUID), let result = entry.result else { return nil }
        let s = PodNetworkStatus(ips: result.podIPs, network: entry.config.name, configFile: entry.config.file)
        statuses[podUID] = s
        return s
    }

    /// Pods with a cache entry (set up, or left mid-ADD by a crash): to tear down those no longer wanted.
    public func cachedPodUIDs() -> [String] { cache.podUIDs() }

    /// The CNI versions a plugin supports (CNI VERSION). Throws `.pluginNotFound` or `.pluginFailed`.
    public func supportedVersions(pluginType: String) async throws(NetworkError) -> [String] {
        let input = JSONValue.object([("cniVersion", .string("1.0.0"))])
        let out = try await exec(command: "VERSION", type: pluginType, input: input, env: [])
        guard let doc = try? JSONText.parse(out), let list = doc["supportedVersions"]?.arrayValue else {
            throw NetworkError(.invalidResult, "CNI plugin \(pluginType) answered VERSION without supportedVersions", plugin: pluginType)
        }
        return list.compactMap(\.stringValue)
    }

    // MARK: - Plugin calls

    /// DEL through `plugins` (default: the whole chain) in reverse. A plugin whose binary is gone is skipped
    /// with a warning: nothing else could undo its work, and it must not block the rest.
    private func delete(_ entry: CNICacheEntry, plugins: [JSONValue]? = nil) async throws(NetworkError) {
        let prev = CNIVersion.delHasPrevResult(entry.config.cniVersion) ? entry.result?.raw : nil
        var firstError: NetworkError?
        for plugin in (plugins ?? entry.config.plugins).reversed() {
            do { _ = try await invoke("DEL", plugin: plugin, entry: entry, prevResult: prev) } catch {
                if error.code == .pluginNotFound {
                    logger.warning("skipping CNI DEL of a missing plugin: \(error.message)")
                    continue
                }
                // Keep going: the other plugins' state must go too; report the first failure.
                if firstError == nil { firstError = error }
            }
        }
        if let firstError { throw firstError }
    }

    private func invoke(_ command: String, plugin: JSONValue, entry: CNICacheEntry, prevResult: JSONValue?) async throws(NetworkError) -> [UInt8] {
        let type = plugin["type"]?.stringValue ?? ""
        let input = CNIConfig.pluginInput(plugin, name: entry.config.name, cniVersion: entry.config.cniVersion,
                                          prevResult: prevResult, runtimeConfig: entry.runtimeConfig)
        let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=\(entry.namespace);K8S_POD_NAME=\(entry.name);K8S_POD_INFRA_CONTAINER_ID=\(entry.containerID);K8S_POD_UID=\(entry.podUID)"
        let env = [("CNI_CONTAINERID", entry.containerID), ("CNI_NETNS", entry.netns), ("CNI_IFNAME", entry.ifName), ("CNI_ARGS", args)]
        do {
            return try await exec(command: command, type: type, input: input, env: env)
        } catch {
            let pod = entry.name.isEmpty ? "pod \(entry.podUID)" : "pod \(entry.namespace)/\(entry.name)"
            throw NetworkError(error.code, "\(error.message) (\(command) for \(pod), network \(entry.config.name) in \(entry.config.file))", plugin: type)
        }
    }

    private func exec(command: String, type: String, input: JSONValue, env: [(String, String)]) async throws(NetworkError) -> [UInt8] {
        guard let path = executor.find(type) else {
            throw NetworkError(.pluginNotFound, "CNI plugin \(type) not found in \(config.binDirs.joined(separator: ", ")): install it (Debian: containernetworking-plugins) or fix the network config", plugin: type)
        }
        let fullEnv = [("CNI_COMMAND", command), ("CNI_PATH", config.binDirs.joined(separator: ":"))] + env
        let out = try await executor.run(plugin: type, path: path, environment: fullEnv, input: Array(input.jsonText.utf8))
        guard out.status == 0 else {
            let detail: String
            if let e = CNIErrorResult(out.stdout) {
                detail = e.text
            } else {
                let text = String(decoding: out.stderr.isEmpty ? out.stdout : out.stderr, as: UTF8.self)
                detail = "exit status \(out.status)\(text.isEmpty ? "" : ": " + String(text.prefix(2000)))"
            }
            throw NetworkError(.pluginFailed, "CNI plugin \(type) failed: \(detail)", plugin: type)
        }
        return out.stdout
    }

    private static func checkUID(_ uid: String) throws(NetworkError) {
        guard !uid.isEmpty, !uid.contains("/"), uid != ".", uid != ".." else {
            throw NetworkError(.io, "invalid pod UID \"\(uid)\" for the CNI cache")
        }
    }
}
