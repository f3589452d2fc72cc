// What the kubelet API needs from the rest of edged. EdgedDaemon implements it over EdgedNode and EdgedRuntime, so
// this module never imports them.
import EdgedCore

/// A process started in a container for `exec`, with its standard streams as file descriptors.
///
/// The receiver owns the descriptors (it closes them, typically by handing them to a NIO pipe channel). With a TTY,
/// `stdout` is the pseudo-terminal's master side and carries both directions (`stdin` and `stderr` are nil).
public struct ContainerProcess: Sendable {
    /// Write end of the process's stdin; nil when stdin was not asked for, or with a TTY.
    public var stdin: Int32?
    /// Read end of its stdout (or the pty master with a TTY).
    public var stdout: Int32
    /// Read end of its stderr; nil with a TTY.
    public var stderr: Int32?
    public var tty: Bool
    /// Sets the terminal size (columns, rows); does nothing without a TTY.
    public var resize: @Sendable (_ width: UInt16, _ height: UInt16) -> Void
    /// Waits for the process to end and returns its exit code (128 + signal when killed).
    public var wait: @Sendable () async -> Int32
    /// Kills the process (the client went away).
    public var terminate: @Sendable () -> Void

    public init(stdin: Int32?, stdout: Int32, stderr: Int32?, tty: Bool,
                resize: @escaping @Sendable (UInt16, UInt16) -> Void,
                wait: @escaping @Sendable () async -> Int32, terminate: @escaping @Sendable () -> Void) {
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.tty = tty
        self.resize = resize
        self.wait = wait
        self.terminate = terminate
    }
}

/// Which pod and container a request names (`/containerLogs/{ns}/{pod}/{container}`, `/exec/{ns}/{pod}[/{uid}]/{container}`).
public struct ContainerRef: Sendable, Hashable, CustomStringConvertible {
    public var namespace: String
    public var pod: String
    /// The pod UID when the path carries one; a mismatch is "not found".
    public var uid: String?
    public var container: String

    public init(namespace: String, pod: String, uid: String? = nil, container: String) {
        self.namespace = namespace
        self.pod = pod
        self.uid = uid
        self.container = container
    }

    public var description: String { "container \(container) of pod \(namespace)/\(pod)" }
}

/// The node side of the kubelet API.
///
/// Errors: `EdgedError(.notFound, …)` for an unknown pod or container (the API answers 404 with that message);
/// any other error is a 500 with its description. Messages name the pod and container.
public protocol KubeletBackend: Sendable {
    /// The pods bound to this node (API and static), as a v1 `PodList` (what kubelet's `/pods` answers).
    func podList() async -> JSONValue
    /// The CRI log file of a container, of its previous instance when `previous` is true.
    func logPath(_ ref: ContainerRef, previous: Bool) async throws -> String
    /// Starts `command` in a running container.
    func exec(_ ref: ContainerRef, command: [String], stdin: Bool, tty: Bool) async throws -> ContainerProcess
    /// Opens a TCP connection to `port` on the pod's loopback, inside its network namespace; returns the connected
    /// socket (the caller owns it).
    func portForward(namespace: String, pod: String, uid: String?, port: UInt16) async throws -> Int32
    /// `/stats/summary` as kubelet writes it (node and pod CPU/memory from cgroups).
    func statsSummary() async throws -> JSONValue
    /// Resource usage samples for `/metrics/resource` and `/metrics`.
    func resourceUsage() async throws -> NodeResourceUsage
}

/// CPU and memory of the node, its pods and containers at one instant (what `/metrics/resource` reports).
public struct NodeResourceUsage: Sendable {
    public struct Sample: Sendable {
        /// Cumulative CPU time, in seconds.
        public var cpuSeconds: Double
        /// Working set (usage minus inactive file cache), bytes.
        public var memoryWorkingSetBytes: UInt64
        public init(cpuSeconds: Double, memoryWorkingSetBytes: UInt64) {
            self.cpuSeconds = cpuSeconds
            self.memoryWorkingSetBytes = memoryWorkingSetBytes
        }
    }
    public struct Container: Sendable {
        public var namespace: String
        public var pod: String
        public var name: String
        public var usage: Sample
        public init(namespace: String, pod: String, name: String, usage: Sample) {
            self.namespace = namespace
            self.pod = pod
            self.name = name
            self.usage = usage
        }
    }
    /// Milliseconds since the epoch when sampled.
    public var timestampMillis: Int64
    public var node: Sample
    public var containers: [Container]
    public init(timestampMillis: Int64, node: Sample, containers: [Container]) {
        self.timestampMillis = timestampMillis
        self.node = node
        self.containers = containers
    }
}
