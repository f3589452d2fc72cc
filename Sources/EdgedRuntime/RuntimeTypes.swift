// The value types of the container executor: configuration, container specs, sandboxes and statuses.

import EdgedCore

/// Where the runtime keeps its state and how it finds its helpers.
public struct RuntimeConfig: Sendable {
    /// One directory per container (`<stateDir>/<containerID>/`): spec, monitor config, state, exit, rootfs.
    public var stateDir: String
    /// Volatile run files: pinned pod namespaces under `<runDir>/sandboxes/<podUID>/`.
    public var runDir: String
    /// The cgroup path prefix under each hierarchy root (`<prefix>/pod<uid>/<containerID>`).
    public var cgroupPrefix: String
    /// The cgroup filesystem root: cgroup2 there means v2, otherwise v1 controllers below it.
    public var cgroupFSRoot: String
    /// The edged-monitor binary; nil means the one next to the running executable.
    public var monitorPath: String?

    public init(stateDir: String, runDir: String, cgroupPrefix: String = "edged", cgroupFSRoot: String = "/sys/fs/cgroup",
                monitorPath: String? = nil) {
        self.stateDir = stateDir
        self.runDir = runDir
        self.cgroupPrefix = cgroupPrefix
        self.cgroupFSRoot = cgroupFSRoot
        self.monitorPath = monitorPath
    }
}

/// A bind mount from the host into the container.
public struct MountSpec: Sendable, Codable, Equatable {
    public var source: String
    public var destination: String
    public var readOnly: Bool

    public init(source: String, destination: String, readOnly: Bool = false) {
        self.source = source
        self.destination = destination
        self.readOnly = readOnly
    }
}

/// A host device node made available in the container: the host's node is bind-mounted onto an empty file at
/// `destination` (under the container's fresh /dev), so it keeps the host's major/minor numbers and permissions.
/// edged puts containers in no device cgroup and installs no device BPF filter, so the kernel lets them open it;
/// other device nodes do not open in a non-privileged container because everything else is mounted nodev.
public struct DeviceSpec: Sendable, Codable, Equatable {
    /// The character device on the host, e.g. /dev/nvidia0.
    public var source: String
    /// Where it appears in the container, e.g. /dev/nvidia0.
    public var destination: String

    public init(source: String, destination: String) {
        self.source = source
        self.destination = destination
    }
}

extension KeyedDecodingContainer {
    /// spec.json files written before `devices` existed have no such key: decode them as "no devices", so a new
    /// edged still re-adopts their containers.
    func decode(_ type: [DeviceSpec].Type, forKey key: Key) throws -> [DeviceSpec] {
        try decodeIfPresent(type, forKey: key) ?? []
    }
}

/// The seccomp profile of a container.
public enum SeccompMode: String, Sendable, Codable {
    /// The common container default profile (moby/containerd default.json equivalent).
    case runtimeDefault
    /// No filter.
    case unconfined
}

/// Everything the runtime needs to run one container; image config and pod spec already merged by the caller.
public struct ContainerSpec: Sendable, Codable, Equatable {
    public var id: String
    public var podUID: String
    public var podNamespace: String
    public var podName: String
    public var containerName: String
    /// Unpacked image layer directories, lowest first.
    public var layers: [String]
    public var argv: [String]
    /// "K=V" entries.
    public var env: [String]
    public var workingDir: String
    /// The image config's User ("1000", "app", "1000:2000", "app:extra"), resolved against the image's
    /// /etc/passwd and /etc/group.
    public var user: String?
    public var runAsUser: Int64?
    public var runAsGroup: Int64?
    public var supplementalGroups: [Int64]
    public var mounts: [MountSpec]
    /// Host device nodes to expose (GPUs); none by default.
    public var devices: [DeviceSpec]
    public var hostname: String
    public var privileged: Bool
    public var readOnlyRootfs: Bool
    public var noNewPrivileges: Bool
    /// Kubernetes capability names ("NET_ADMIN", "ALL"), applied to the default set.
    public var capAdd: [String]
    public var capDrop: [String]
    public var seccomp: SeccompMode
    public var memoryLimitBytes: Int64?
    public var cpuLimitMillis: Int64?
    public var cpuRequestMillis: Int64?
    public var pidsLimit: Int64?
    public var logPath: String
    public var logMaxBytes: Int
    public var logMaxFiles: Int

    public init(id: String, podUID: String, podNamespace: String = "default", podName: String, containerName: String,
                layers: [String], argv: [String], env: [String] = [], workingDir: String = "/", user: String? = nil,
                runAsUser: Int64? = nil, runAsGroup: Int64? = nil, supplementalGroups: [Int64] = [],
                mounts: [MountSpec] = [], hostname: String = "", privileged: Bool = false,
                readOnlyRootfs: Bool = false, noNewPrivileges: Bool = false, capAdd: [String] = [],
                capDrop: [String] = [], seccomp: SeccompMode = .runtimeDefault, memoryLimitBytes: Int64? = nil,
                cpuLimitMillis: Int64? = nil, cpuRequestMillis: Int64? = nil, pidsLimit: Int64? = nil,
                logPath: String, logMaxBytes: Int = 10 << 20, logMaxFiles: Int = 5, devices: [DeviceSpec] = []) {
        self.id = id
        self.podUID = podUID
        self.podNamespace = podNamespace
        self.podName = podName
        self.containerName = containerName
        self.layers = layers
        self.argv = argv
        self.env = env
        self.workingDir = workingDir
        self.user = user
        self.runAsUser = runAsUser
        self.runAsGroup = runAsGroup
        self.supplementalGroups = supplementalGroups
        self.mounts = mounts
        self.devices = devices
        self.hostname = hostname
        self.privileged = privileged
        self.readOnlyRootfs = readOnlyRootfs
        self.noNewPrivileges = noNewPrivileges
        self.capAdd = capAdd
        self.capDrop = capDrop
        self.seccomp = seccomp
        self.memoryLimitBytes = memoryLimitBytes
        self.cpuLimitMillis = cpuLimitMillis
        self.cpuRequestMillis = cpuRequestMillis
        self.pidsLimit = pidsLimit
        self.logPath = logPath
        self.logMaxBytes = logMaxBytes
        self.logMaxFiles = logMaxFiles
    }

    /// "namespace/pod/container", how messages name the container.
    public var displayName: String { "\(podNamespace)/\(podName)/\(containerName)" }
}

/// A pod's shared namespaces, pinned as files so containers can join them.
public struct Sandbox: Sendable, Equatable {
    public var podUID: String
    public var hostNetwork: Bool
    /// nil with host networking.
    public var netns: String?
    public var ipcns: String
    public var utsns: String
}

/// Whether a container runs, and how it ended.
public enum ContainerStatus: Sendable, Equatable {
    case running(pid: Int32, startedAt: Timestamp)
    /// `message` is set when the container failed to start (exit code 128) or its monitor vanished (255).
    case exited(exitCode: Int32, signal: Int32?, oomKilled: Bool, startedAt: Timestamp, finishedAt: Timestamp,
                message: String?)

    public var isRunning: Bool {
        if case .running = self { return true }
        return false
    }

    /// The Kubernetes-style reason of a terminated container: Completed, Error, OOMKilled, StartError, Unknown.
    public var reason: String? {
        guard case let .exited(code, _, oom, _, _, message) = self else { return nil }
        if oom { return "OOMKilled" }
        if message != nil { return code == ContainerStatus.unknownExitCode ? "Unknown" : "StartError" }
        return code == 0 ? "Completed" : "Error"
    }

    /// The exit code reported when the monitor died without recording one.
    public static let unknownExitCode: Int32 = 255
    /// The exit code reported when the container could not be started.
    public static let startErrorExitCode: Int32 = 128
}

/// A container as the runtime knows it.
public struct ContainerInfo: Sendable {
    public var spec: ContainerSpec
    public var status: ContainerStatus
    public var monitorPid: Int32
}
