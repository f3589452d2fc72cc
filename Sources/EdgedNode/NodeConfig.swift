// Settings the pod runner needs, filled in by EdgedDaemon from the config file and flags.

import EdgedNetwork

/// What the pod runner needs to know about this node.
public struct NodeConfig: Sendable {
    public var nodeName: String
    /// Per-pod state (emptyDir volumes): `<podsDir>/<uid>/`.
    public var podsDir: String
    /// Container logs: `<logDir>/<ns>_<pod>_<uid>/<container>/<restart>.log`, like kubelet.
    public var logDir: String
    public var containerLogMaxBytes: Int
    public var containerLogMaxFiles: Int
    /// kubelet's --seccomp-default: RuntimeDefault for containers that do not ask for a profile. Off by default, like kubelet.
    public var seccompDefault: Bool
    /// kubelet's --pod-max-pids (nil: unlimited).
    public var podPidsLimit: Int64?
    /// How often each pod worker re-checks its containers when nothing wakes it. Container exits, probe results,
    /// watched volume changes and termination wake it at once, and it wakes itself when a back-off (restart, image
    /// pull, network set-up) or a volume refresh falls due; this periodic sync is only a safety net. (It was 1 s:
    /// 20 pods meant 20 syncs a second, whose code the kernel then had to keep in memory; kubelet resyncs a pod
    /// every minute, --sync-frequency.)
    public var resyncInterval: Duration
    /// Set when the node has joined a cluster: where Events go and where API-backed volumes/env come from.
    public var events: PodEventSink?
    public var apiObjects: (any PodAPIObjects)?
    /// Called after each pod sync, so the status writer reports changes at once instead of at its next tick.
    public var podSynced: (@Sendable () -> Void)?
    /// How often configMap/secret/projected volumes are re-read (kubelet: about a minute; watches speed it up).
    public var volumeRefreshInterval: Duration = .seconds(60)
    /// Pod networking through CNI (nil: pods that are not hostNetwork get a netns with only lo).
    public var network: PodNetwork?
    /// NVIDIA GPUs handed to containers that ask for nvidia.com/gpu (nil: such containers cannot start).
    public var gpus: GPUDevices?

    public init(nodeName: String, podsDir: String, logDir: String, containerLogMaxBytes: Int = 10 << 20,
                containerLogMaxFiles: Int = 5, seccompDefault: Bool = false, podPidsLimit: Int64? = nil,
                resyncInterval: Duration = .seconds(10)) {
        self.nodeName = nodeName
        self.podsDir = podsDir
        self.logDir = logDir
        self.containerLogMaxBytes = containerLogMaxBytes
        self.containerLogMaxFiles = containerLogMaxFiles
        self.seccompDefault = seccompDefault
        self.podPidsLimit = podPidsLimit
        self.resyncInterval = resyncInterval
    }
}
