// The daemon's configuration file (/etc/edged/config.yaml). Every key is optional; the defaults are the
// values below, and command-line flags override the file.

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import EdgedCore
import EdgedNode
import Glibc

/// edged's settings. Keys are camelCase like a KubeletConfiguration; unknown keys are an error (a typo
/// must not silently fall back to a default).
public struct EdgedConfig: Codable, Sendable, Equatable {
    /// The node's name. Default: the host name, lower-cased.
    public var nodeName: String?
    /// Persistent state: images, containers, pods. Default /var/lib/edged.
    public var stateDir: String = "/var/lib/edged"
    /// Runtime state that a reboot clears: namespaces, the socket. Default /run/edged.
    public var runDir: String = "/run/edged"
    /// Static pod manifests (YAML or JSON). Default /etc/edged/manifests.
    public var manifestDir: String = "/etc/edged/manifests"
    /// edgectl's Unix socket. Default <runDir>/edged.sock.
    public var socket: String?
    /// A group allowed to use the socket besides root (gid); default none (root only, mode 0600).
    public var socketGroup: UInt32?
    /// Container logs, laid out like kubelet's /var/log/pods. Default /var/log/pods.
    public var logDir: String = "/var/log/pods"
    /// trace, debug, info, notice, warning, error, critical. Default info.
    public var logLevel: String = "info"
    /// Rotate a container's log file at this size (quantity). Default 10Mi, like kubelet.
    public var containerLogMaxSize: String = "10Mi"
    /// Log files kept per container, the current one included. Default 5, like kubelet.
    public var containerLogMaxFiles: Int = 5
    /// Prefix of edged's cgroups under each hierarchy. Default "edged".
    public var cgroupRoot: String = "edged"
    /// Use RuntimeDefault seccomp for containers that set no profile (kubelet's --seccomp-default). Default false.
    public var seccompDefault: Bool = false
    /// Maximum processes per container (the pids cgroup; kubelet's --pod-max-pids limits a pod); -1 for no limit.
    /// Default 1024: kubelet's default is no limit, but on a small gateway one fork bomb must not take every PID.
    public var podPidsLimit: Int64 = 1024
    /// kubelet's evictionHard: evict API pods (BestEffort first) when the node's available memory falls below this
    /// ("100Mi", or a percentage of memory like "5%"). Only memory.available is supported. Default 100Mi, like kubelet.
    public var evictionHard: [String: String] = ["memory.available": "100Mi"]
    /// Registries reached over plain HTTP. Default localhost and 127.0.0.1.
    public var insecureRegistries: [String] = ["localhost", "127.0.0.1"]
    /// Seconds between full rescans of the manifest dir (changes are seen at once via inotify). Default 20.
    public var manifestRescanSeconds: Int = 20
    /// Stop all pods when edged stops. Default false: pods keep running across edged restarts and upgrades.
    public var stopPodsOnExit: Bool = false
    /// Pod networking through CNI plugins (kubelet's --cni-conf-dir / --cni-bin-dir).
    public var cni: CNISettings = CNISettings()

    /// The `cni:` section. Without any network config in confDir, standalone pods get a netns with only lo.
    public struct CNISettings: Codable, Sendable, Equatable {
        /// Network configs (*.conflist, *.conf, *.json; the lexically first is used). Default /etc/cni/net.d.
        public var confDir: String = "/etc/cni/net.d"
        /// Plugin dirs, searched in order. Default /opt/cni/bin, /usr/lib/cni (Debian's containernetworking-plugins).
        public var binDirs: [String] = ["/opt/cni/bin", "/usr/lib/cni"]
        /// Per-pod ADD results, so DEL works after a restart. Default <stateDir>/cni.
        public var cacheDir: String?
        /// Seconds one plugin call may take before it is killed. Default 60.
        public var pluginTimeoutSeconds: Int = 60

        public init() {}

        enum CodingKeys: String, CodingKey, CaseIterable {
            case confDir, binDirs, cacheDir, pluginTimeoutSeconds
        }

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let d = CNISettings()
            confDir = try c.decodeIfPresent(String.self, forKey: .confDir) ?? d.confDir
            binDirs = try c.decodeIfPresent([String].self, forKey: .binDirs) ?? d.binDirs
            cacheDir = try c.decodeIfPresent(String.self, forKey: .cacheDir)
            pluginTimeoutSeconds = try c.decodeIfPresent(Int.self, forKey: .pluginTimeoutSeconds) ?? d.pluginTimeoutSeconds
        }
    }

    /// NVIDIA GPUs advertised as nvidia.com/gpu (like the NVIDIA device plugin).
    public var gpu: GPUSettings = GPUSettings()

    /// The `gpu:` section.
    public struct GPUSettings: Codable, Sendable, Equatable {
        /// Where /dev/nvidia*, /proc/driver/nvidia and the driver libraries are looked up. Default "/".
        public var deviceRoot: String = "/"

        public init() {}

        enum CodingKeys: String, CodingKey, CaseIterable {
            case deviceRoot
        }

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            deviceRoot = try c.decodeIfPresent(String.self, forKey: .deviceRoot) ?? GPUSettings().deviceRoot
        }
    }

    /// Cluster membership, used once `edgectl join` has stored credentials (kubelet's node-related flags).
    public var cluster: ClusterSettings = ClusterSettings()

    /// The edge hub (caching proxy to the API server), used once the node has joined.
    public var hub: HubSettings = HubSettings()

    /// The kubelet API (:10250), served once the node has joined.
    public var kubelet: KubeletSettings = KubeletSettings()

    /// The tunnel agent that lets the API server reach the kubelet API from behind NAT.
    public var tunnel: TunnelSettings = TunnelSettings()

    /// The `cluster:` section.
    public struct ClusterSettings: Codable, Sendable, Equatable {
        /// The node's InternalIP (kubelet's --node-ip). Default: the first IPv4 address of an interface that is up.
        public var nodeIP: String?
        /// Pods this node accepts (kubelet's maxPods). Default 110.
        public var maxPods: Int = 110
        /// Seconds between lease renewals (kubelet renews every 10 s of a 40 s lease). Default 10.
        public var leaseRenewSeconds: Int = 10
        /// The lease duration written to the Lease (kubelet's nodeLeaseDurationSeconds). Default 40.
        public var leaseDurationSeconds: Int = 40
        /// Node status is written on change and at least this often (kubelet's nodeStatusReportFrequency). Default 300.
        public var nodeStatusReportSeconds: Int = 300
        /// Resources held back from pods, e.g. {cpu: 100m, memory: 64Mi} (kubelet's systemReserved). Default none.
        public var systemReserved: [String: String] = [:]
        /// Seconds between re-reads of configMap/secret volumes (watches deliver changes sooner). Default 60.
        public var volumeRefreshSeconds: Int = 60
        /// Seconds a pod bound to an autonomous node may still lack the autonomy tolerations before `edgectl status`
        /// says that no autonomy controller reconciles the node's pods (DEGRADED). Default 60.
        public var autonomyGraceSeconds: Int = 60

        public init() {}

        enum CodingKeys: String, CodingKey, CaseIterable {
            case nodeIP, maxPods, leaseRenewSeconds, leaseDurationSeconds, nodeStatusReportSeconds, systemReserved, volumeRefreshSeconds,
                 autonomyGraceSeconds
        }

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let d = ClusterSettings()
            nodeIP = try c.decodeIfPresent(String.self, forKey: .nodeIP)
            maxPods = try c.decodeIfPresent(Int.self, forKey: .maxPods) ?? d.maxPods
            leaseRenewSeconds = try c.decodeIfPresent(Int.self, forKey: .leaseRenewSeconds) ?? d.leaseRenewSeconds
            leaseDurationSeconds = try c.decodeIfPresent(Int.self, forKey: .leaseDurationSeconds) ?? d.leaseDurationSeconds
            nodeStatusReportSeconds = try c.decodeIfPresent(Int.self, forKey: .nodeStatusReportSeconds) ?? d.nodeStatusReportSeconds
            systemReserved = try c.decodeIfPresent([String: String].self, forKey: .systemReserved) ?? d.systemReserved
            volumeRefreshSeconds = try c.decodeIfPresent(Int.self, forKey: .volumeRefreshSeconds) ?? d.volumeRefreshSeconds
            autonomyGraceSeconds = try c.decodeIfPresent(Int.self, forKey: .autonomyGraceSeconds) ?? d.autonomyGraceSeconds
        }
    }

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case cluster, nodeName, stateDir, runDir, manifestDir, socket, socketGroup, logDir, logLevel, containerLogMaxSize,
             containerLogMaxFiles, cgroupRoot, seccompDefault, podPidsLimit, evictionHard, insecureRegistries, manifestRescanSeconds,
             stopPodsOnExit, cni, gpu, hub, kubelet, tunnel
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = EdgedConfig.defaults
        nodeName = try c.decodeIfPresent(String.self, forKey: .nodeName)
        stateDir = try c.decodeIfPresent(String.self, forKey: .stateDir) ?? d.stateDir
        runDir = try c.decodeIfPresent(String.self, forKey: .runDir) ?? d.runDir
        manifestDir = try c.decodeIfPresent(String.self, forKey: .manifestDir) ?? d.manifestDir
        socket = try c.decodeIfPresent(String.self, forKey: .socket)
        socketGroup = try c.decodeIfPresent(UInt32.self, forKey: .socketGroup)
        logDir = try c.decodeIfPresent(String.self, forKey: .logDir) ?? d.logDir
        logLevel = try c.decodeIfPresent(String.self, forKey: .logLevel) ?? d.logLevel
        containerLogMaxSize = try c.decodeIfPresent(String.self, forKey: .containerLogMaxSize) ?? d.containerLogMaxSize
        containerLogMaxFiles = try c.decodeIfPresent(Int.self, forKey: .containerLogMaxFiles) ?? d.containerLogMaxFiles
        cgroupRoot = try c.decodeIfPresent(String.self, forKey: .cgroupRoot) ?? d.cgroupRoot
        seccompDefault = try c.decodeIfPresent(Bool.self, forKey: .seccompDefault) ?? d.seccompDefault
        podPidsLimit = try c.decodeIfPresent(Int64.self, forKey: .podPidsLimit) ?? d.podPidsLimit
        evictionHard = try c.decodeIfPresent([String: String].self, forKey: .evictionHard) ?? d.evictionHard
        insecureRegistries = try c.decodeIfPresent([String].self, forKey: .insecureRegistries) ?? d.insecureRegistries
        manifestRescanSeconds = try c.decodeIfPresent(Int.self, forKey: .manifestRescanSeconds) ?? d.manifestRescanSeconds
        stopPodsOnExit = try c.decodeIfPresent(Bool.self, forKey: .stopPodsOnExit) ?? d.stopPodsOnExit
        cni = try c.decodeIfPresent(CNISettings.self, forKey: .cni) ?? d.cni
        gpu = try c.decodeIfPresent(GPUSettings.self, forKey: .gpu) ?? d.gpu
        cluster = try c.decodeIfPresent(ClusterSettings.self, forKey: .cluster) ?? d.cluster
        hub = try c.decodeIfPresent(HubSettings.self, forKey: .hub) ?? d.hub
        kubelet = try c.decodeIfPresent(KubeletSettings.self, forKey: .kubelet) ?? d.kubelet
        tunnel = try c.decodeIfPresent(TunnelSettings.self, forKey: .tunnel) ?? d.tunnel
    }

    /// Where `edgectl join` keeps the node's key, certificates and cluster CA (like /var/lib/kubelet/pki).
    public var credentialsDir: String { "\(stateDir)/pki" }

    static let defaults = EdgedConfig()

    public var socketPath: String { socket ?? "\(runDir)/edged.sock" }

    public var cniCacheDir: String { cni.cacheDir ?? "\(stateDir)/cni" }

    public var resolvedNodeName: String {
        if let n = nodeName, !n.isEmpty { return n }
        var buf = [CChar](repeating: 0, count: 256)
        gethostname(&buf, 255)
        return String(cString: buf).lowercased()
    }

    /// Loads the file at `path`. A missing file at the default path means "all defaults"; a missing file the
    /// user named is an error.
    public static func load(path: String, required: Bool) throws(EdgedError) -> EdgedConfig {
        guard let text = Files.readText(path, limit: 1 << 20) else {
            if errno == ENOENT && !required { return EdgedConfig() }
            throw EdgedError(.invalidConfig, "cannot read config \(path): \(String(cString: strerror(errno)))")
        }
        return try parse(text, source: path)
    }

    public static func parse(_ text: String, source: String) throws(EdgedError) -> EdgedConfig {
        let docs: [JSONValue]
        do { docs = try YAMLParser.parse(text) } catch { throw EdgedError(.invalidConfig, "\(source): \(error.message)") }
        guard let doc = docs.first, doc != .null else { return EdgedConfig() }
        guard case .object(let members) = doc else { throw EdgedError(.invalidConfig, "\(source): the config must be a mapping of keys to values") }
        let known = Set(CodingKeys.allCases.map(\.rawValue))
        for (key, _) in members where !known.contains(key) {
            throw EdgedError(.invalidConfig, "\(source): unknown key \"\(key)\" (known keys: \(known.sorted().joined(separator: ", ")))")
        }
        let sections: [(String, [String])] = [
            ("cni", CNISettings.CodingKeys.allCases.map(\.rawValue)),
            ("gpu", GPUSettings.CodingKeys.allCases.map(\.rawValue)),
            ("cluster", ClusterSettings.CodingKeys.allCases.map(\.rawValue)),
            ("hub", HubSettings.CodingKeys.allCases.map(\.rawValue)),
            ("kubelet", KubeletSettings.CodingKeys.allCases.map(\.rawValue)),
            ("tunnel", TunnelSettings.CodingKeys.allCases.map(\.rawValue)),
        ]
        for (section, keys) in sections {
            guard case .object(let sectionMembers)? = doc[section] else { continue }
            let knownKeys = Set(keys)
            for (key, _) in sectionMembers where !knownKeys.contains(key) {
                throw EdgedError(.invalidConfig, "\(source): unknown key \"\(section).\(key)\" (known keys: \(knownKeys.sorted().joined(separator: ", ")))")
            }
        }
        do {
            let config = try JSONDecoder().decode(EdgedConfig.self, from: Data(doc.jsonText.utf8))
            try config.validate(source: source)
            return config
        } catch let e as EdgedError {
            throw e
        } catch let e as DecodingError {
            var path = ""
            if case .typeMismatch(_, let ctx) = e { path = ctx.codingPath.map(\.stringValue).joined(separator: ".") }
            throw EdgedError(.invalidConfig, "\(source): \(path.isEmpty ? "" : "key \(path) ")has the wrong type")
        } catch {
            throw EdgedError(.invalidConfig, "\(source): \(error)")
        }
    }

    func validate(source: String) throws(EdgedError) {
        do { _ = try Quantity(containerLogMaxSize).value() } catch {
            throw EdgedError(.invalidConfig, "\(source): containerLogMaxSize: \(error.message)")
        }
        do { _ = try EvictionThresholds.parse(evictionHard, memoryTotal: 0) } catch {
            throw EdgedError(.invalidConfig, "\(source): \(error.message)")
        }
        guard containerLogMaxFiles >= 2 else {
            throw EdgedError(.invalidConfig, "\(source): containerLogMaxFiles must be at least 2 (like kubelet)")
        }
        var paths = [("stateDir", stateDir), ("runDir", runDir), ("manifestDir", manifestDir), ("logDir", logDir), ("cni.confDir", cni.confDir), ("gpu.deviceRoot", gpu.deviceRoot)]
        paths += cni.binDirs.map { ("cni.binDirs", $0) } + (cni.cacheDir.map { [("cni.cacheDir", $0)] } ?? [])
        guard cni.pluginTimeoutSeconds > 0 else {
            throw EdgedError(.invalidConfig, "\(source): cni.pluginTimeoutSeconds must be at least 1")
        }
        guard cluster.maxPods > 0, cluster.leaseRenewSeconds > 0, cluster.leaseDurationSeconds > cluster.leaseRenewSeconds,
              cluster.nodeStatusReportSeconds > 0, cluster.volumeRefreshSeconds > 0 else {
            throw EdgedError(.invalidConfig, "\(source): cluster: maxPods, leaseRenewSeconds, nodeStatusReportSeconds and volumeRefreshSeconds must be positive, and leaseDurationSeconds longer than leaseRenewSeconds")
        }
        guard cluster.autonomyGraceSeconds >= 0 else {
            throw EdgedError(.invalidConfig, "\(source): cluster.autonomyGraceSeconds must be 0 or more")
        }
        for (key, value) in cluster.systemReserved {
            do { _ = try Quantity(value).milliValue() } catch {
                throw EdgedError(.invalidConfig, "\(source): cluster.systemReserved.\(key): \(error.message)")
            }
        }
        try hub.validate(source: source)
        try kubelet.validate(source: source)
        try tunnel.validate(source: source)
        for (name, path) in paths where !path.hasPrefix("/") {
            throw EdgedError(.invalidConfig, "\(source): \(name) must be an absolute path, not \"\(path)\"")
        }
    }
}
