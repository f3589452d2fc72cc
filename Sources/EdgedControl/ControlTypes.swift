// The JSON documents of the local control API (daemon ⇄ edgectl). Field names are part of the
// `edgectl status --json` contract that scripts rely on: add fields, never rename them.

/// One screen of node health: what `edgectl status` prints.
public struct StatusReport: Codable, Sendable, Equatable {
    /// False when anything needs a person's attention; `reasons` then says what and what to do.
    public var healthy: Bool
    public var reasons: [String]
    /// "standalone" or "joined".
    public var mode: String
    public var version: String
    public var nodeName: String
    public var pid: Int32
    public var startedAt: String
    public var uptimeSeconds: Int64
    public var stateDir: String
    public var manifestDir: String
    public var pods: [PodSummary]
    public var images: [ImageInfo]
    public var node: NodeStats
    public var daemon: DaemonStats
    /// The most recent errors, newest last (bounded).
    public var lastErrors: [ErrorEntry]
    /// The cluster connection, once joined.
    public var cluster: ClusterReport?

    public init(healthy: Bool, reasons: [String], mode: String, version: String, nodeName: String, pid: Int32,
                startedAt: String, uptimeSeconds: Int64, stateDir: String, manifestDir: String, pods: [PodSummary],
                images: [ImageInfo], node: NodeStats, daemon: DaemonStats, lastErrors: [ErrorEntry]) {
        self.healthy = healthy
        self.reasons = reasons
        self.mode = mode
        self.version = version
        self.nodeName = nodeName
        self.pid = pid
        self.startedAt = startedAt
        self.uptimeSeconds = uptimeSeconds
        self.stateDir = stateDir
        self.manifestDir = manifestDir
        self.pods = pods
        self.images = images
        self.node = node
        self.daemon = daemon
        self.lastErrors = lastErrors
    }
}

public struct PodSummary: Codable, Sendable, Equatable {
    public var namespace: String
    public var name: String
    public var uid: String
    /// Pending, Running, Succeeded, Failed, Unknown.
    public var phase: String
    public var ready: Bool
    /// Sum of the containers' restart counts.
    public var restarts: Int
    /// Why the pod is not healthy (e.g. "CrashLoopBackOff", "ImagePullBackOff"), if it is not.
    public var reason: String?
    public var message: String?
    /// The manifest file the pod came from (static pods).
    public var source: String?
    public var podIP: String?
    /// Every pod IP (IPv4 first), like status.podIPs; absent without a CNI network.
    public var podIPs: [String]?
    public var containers: [ContainerSummary]

    public init(namespace: String, name: String, uid: String, phase: String, ready: Bool, restarts: Int,
                reason: String? = nil, message: String? = nil, source: String? = nil, podIP: String? = nil,
                podIPs: [String]? = nil, containers: [ContainerSummary]) {
        self.namespace = namespace
        self.name = name
        self.uid = uid
        self.phase = phase
        self.ready = ready
        self.restarts = restarts
        self.reason = reason
        self.message = message
        self.source = source
        self.podIP = podIP
        self.podIPs = podIPs
        self.containers = containers
    }
}

public struct ContainerSummary: Codable, Sendable, Equatable {
    public var name: String
    /// "waiting", "running" or "terminated".
    public var state: String
    public var reason: String?
    public var message: String?
    public var exitCode: Int32?
    public var restarts: Int
    public var ready: Bool
    public var image: String
    public var containerID: String?
    public var pid: Int32?
    public var startedAt: String?
    public var isInit: Bool

    public init(name: String, state: String, reason: String? = nil, message: String? = nil, exitCode: Int32? = nil,
                restarts: Int, ready: Bool, image: String, containerID: String? = nil, pid: Int32? = nil,
                startedAt: String? = nil, isInit: Bool = false) {
        self.name = name
        self.state = state
        self.reason = reason
        self.message = message
        self.exitCode = exitCode
        self.restarts = restarts
        self.ready = ready
        self.image = image
        self.containerID = containerID
        self.pid = pid
        self.startedAt = startedAt
        self.isInit = isInit
    }
}

public struct ImageInfo: Codable, Sendable, Equatable {
    /// Every name the image is known by ("docker.io/library/busybox:latest").
    public var references: [String]
    /// The manifest digest ("sha256:…").
    public var digest: String
    /// Total size of the compressed layers, bytes.
    public var size: Int64
    public var architecture: String
    public var os: String
    /// Whether a pod uses it now.
    public var inUse: Bool

    public init(references: [String], digest: String, size: Int64, architecture: String, os: String, inUse: Bool) {
        self.references = references
        self.digest = digest
        self.size = size
        self.architecture = architecture
        self.os = os
        self.inUse = inUse
    }
}

public struct NodeStats: Codable, Sendable, Equatable {
    public var memoryTotalBytes: Int64
    public var memoryAvailableBytes: Int64
    /// The filesystem that holds the state dir.
    public var diskTotalBytes: Int64
    public var diskFreeBytes: Int64
    public var load1: Double
    public init(memoryTotalBytes: Int64, memoryAvailableBytes: Int64, diskTotalBytes: Int64, diskFreeBytes: Int64, load1: Double) {
        self.memoryTotalBytes = memoryTotalBytes
        self.memoryAvailableBytes = memoryAvailableBytes
        self.diskTotalBytes = diskTotalBytes
        self.diskFreeBytes = diskFreeBytes
        self.load1 = load1
    }
}

public struct DaemonStats: Codable, Sendable, Equatable {
    /// Resident memory of edged itself, bytes.
    public var rssBytes: Int64
    /// Resident memory of the per-container monitors edged leaves running, bytes.
    public var monitorsRSSBytes: Int64
    public var threads: Int
    public var openFiles: Int
    public init(rssBytes: Int64, monitorsRSSBytes: Int64, threads: Int, openFiles: Int) {
        self.rssBytes = rssBytes
        self.monitorsRSSBytes = monitorsRSSBytes
        self.threads = threads
        self.openFiles = openFiles
    }
}

public struct ErrorEntry: Codable, Sendable, Equatable {
    public var time: String
    /// What it concerns: "pod default/web", "image busybox:latest", "manifest /etc/edged/manifests/x.yaml".
    public var subject: String
    public var message: String
    public init(time: String, subject: String, message: String) {
        self.time = time
        self.subject = subject
        self.message = message
    }
}

/// Body of POST /v1/images/import and /v1/images/pull.
public struct ImageRequest: Codable, Sendable {
    public var path: String?
    public var reference: String?
    public init(path: String? = nil, reference: String? = nil) {
        self.path = path
        self.reference = reference
    }
}

/// Body of every non-2xx answer.
public struct ControlErrorBody: Codable, Sendable {
    public var error: String
    public init(error: String) { self.error = error }
}

/// Answer of POST /v1/images/prune.
public struct PruneResponse: Codable, Sendable, Equatable {
    /// The images removed (references, or digests of unnamed ones).
    public var removed: [String]
    public init(removed: [String]) { self.removed = removed }
}

/// GET /v1/logs: which container's log and how to read it (kubelet containerLogs semantics).
public struct LogRequest: Codable, Sendable, Equatable {
    public var namespace: String
    public var pod: String
    /// nil = the pod's only (or first) container.
    public var container: String?
    /// Only the last N lines.
    public var tail: Int?
    /// Keep streaming until the client goes away.
    public var follow: Bool
    /// The previous (terminated) instance of the container.
    public var previous: Bool
    /// Prefix each line with its RFC3339Nano time.
    public var timestamps: Bool
    public var sinceSeconds: Int64?
    public var limitBytes: Int?

    public init(namespace: String = "default", pod: String, container: String? = nil, tail: Int? = nil,
                follow: Bool = false, previous: Bool = false, timestamps: Bool = false, sinceSeconds: Int64? = nil,
                limitBytes: Int? = nil) {
        self.namespace = namespace
        self.pod = pod
        self.container = container
        self.tail = tail
        self.follow = follow
        self.previous = previous
        self.timestamps = timestamps
        self.sinceSeconds = sinceSeconds
        self.limitBytes = limitBytes
    }

    /// The request URI, `/v1/logs?namespace=…&pod=…`.
    public var uri: String {
        var q = ["namespace=\(RequestTarget.encode(namespace))", "pod=\(RequestTarget.encode(pod))"]
        if let container { q.append("container=\(RequestTarget.encode(container))") }
        if let tail { q.append("tail=\(tail)") }
        if follow { q.append("follow=true") }
        if previous { q.append("previous=true") }
        if timestamps { q.append("timestamps=true") }
        if let sinceSeconds { q.append("sinceSeconds=\(sinceSeconds)") }
        if let limitBytes { q.append("limitBytes=\(limitBytes)") }
        return "/v1/logs?" + q.joined(separator: "&")
    }
}

/// The cluster connection as `edgectl status` shows it.
public struct ClusterReport: Codable, Sendable, Equatable {
    public var server: String
    /// The Node object exists (created or found).
    public var registered: Bool
    public var lastLeaseRenewal: String?
    public var lastNodeStatus: String?
    /// Seconds since the lease was last renewed (a stale lease means the cloud sees the node NotReady soon).
    public var leaseAgeSeconds: Int64?
    public var lastError: String?
    /// Pods bound to this node by the scheduler.
    public var apiPods: Int
    public var certificateNotAfter: String?
    public var eventsSent: Int
    /// The edge hub, when it runs.
    public var hub: HubReport?
    /// The kubelet API on :10250, when enabled.
    public var kubeletAPI: KubeletAPIReport?
    /// The tunnel agent, when `tunnel.server` is set.
    public var tunnel: TunnelReport?
    /// Node autonomy from the Node's annotations as last seen; nil until the Node has been seen.
    public var autonomy: AutonomyReport?

    public init(server: String, registered: Bool, lastLeaseRenewal: String? = nil, lastNodeStatus: String? = nil,
                leaseAgeSeconds: Int64? = nil, lastError: String? = nil, apiPods: Int = 0, certificateNotAfter: String? = nil,
                eventsSent: Int = 0) {
        self.server = server
        self.registered = registered
        self.lastLeaseRenewal = lastLeaseRenewal
        self.lastNodeStatus = lastNodeStatus
        self.leaseAgeSeconds = leaseAgeSeconds
        self.lastError = lastError
        self.apiPods = apiPods
        self.certificateNotAfter = certificateNotAfter
        self.eventsSent = eventsSent
    }
}

/// The edge hub's view of the cloud and its cache.
public struct HubReport: Codable, Sendable, Equatable {
    /// "connected", "offline" or "starting" (not probed yet).
    public var cloud: String
    /// When the cloud entered that state (RFC 3339).
    public var since: String
    /// The last successful exchange with the API server (RFC 3339).
    public var lastSync: String?
    public var lastSyncAgeSeconds: Int64?
    /// Why the last probe failed.
    public var lastError: String?
    public var cachedObjects: Int
    public var storeBytes: Int64
    /// Writes (Events, pod statuses) waiting for the cloud.
    public var queuedWrites: Int
    /// "http 127.0.0.1:10261", ...
    public var listening: [String]
    /// The interface that has the HTTPS listener's address: "edged-hub0" (the dummy interface), "lo" (where the
    /// kernel has no dummy driver) or one of the host's own; nil for a wildcard or loopback address or no listener.
    public var httpsInterface: String?

    public init(cloud: String, since: String, lastSync: String? = nil, lastSyncAgeSeconds: Int64? = nil, lastError: String? = nil,
                cachedObjects: Int = 0, storeBytes: Int64 = 0, queuedWrites: Int = 0, listening: [String] = [],
                httpsInterface: String? = nil) {
        self.cloud = cloud
        self.since = since
        self.lastSync = lastSync
        self.lastSyncAgeSeconds = lastSyncAgeSeconds
        self.lastError = lastError
        self.cachedObjects = cachedObjects
        self.storeBytes = storeBytes
        self.queuedWrites = queuedWrites
        self.listening = listening
        self.httpsInterface = httpsInterface
    }
}

/// The kubelet API (logs, exec, port-forward, stats for the API server).
public struct KubeletAPIReport: Codable, Sendable, Equatable {
    /// "0.0.0.0:10250" once listening; nil before.
    public var listening: String?
    /// Why it is not serving (port in use, unreadable certificate...); nil when it serves.
    public var problem: String?
    /// The certificate it presents: "issued" (by the cluster's kubelet-serving signer) or "self-signed" (made on the
    /// node, kubelet's default, until a kubelet-serving CSR is approved); nil when not serving.
    public var servingCertificate: String?
    /// While self-signed: the kubelet-serving CSR that waits for approval (nil between tries).
    public var servingCSR: String?

    public init(listening: String? = nil, problem: String? = nil, servingCertificate: String? = nil, servingCSR: String? = nil) {
        self.listening = listening
        self.problem = problem
        self.servingCertificate = servingCertificate
        self.servingCSR = servingCSR
    }

    /// True while the self-signed certificate is served.
    public var selfSigned: Bool { servingCertificate == "self-signed" }

    /// "(self-signed serving certificate: the kubelet-serving CSR node-csr-x waits for approval — kubectl certificate
    /// approve node-csr-x)"; nil for an issued certificate.
    public var servingNote: String? {
        guard selfSigned else { return nil }
        guard let csr = servingCSR else {
            return "self-signed serving certificate until a kubelet-serving CSR is approved (kubectl get csr)"
        }
        return "self-signed serving certificate: the kubelet-serving CSR \(csr) waits for approval — kubectl certificate approve \(csr)"
    }
}

/// The tunnel agent's connection to the tunnel server.
public struct TunnelReport: Codable, Sendable, Equatable {
    /// HOST:PORT of the tunnel server.
    public var server: String
    /// Server instances connected, of how many the server says run.
    public var connectedServers: Int
    public var serverCount: Int
    public var openStreams: Int
    public var lastError: String?

    public init(server: String, connectedServers: Int, serverCount: Int, openStreams: Int, lastError: String? = nil) {
        self.server = server
        self.connectedServers = connectedServers
        self.serverCount = serverCount
        self.openStreams = openStreams
        self.lastError = lastError
    }
}

/// `edgectl join`: the arguments, sent to the daemon, which does the TLS bootstrap itself.
public struct JoinRequest: Codable, Sendable, Equatable {
    public var server: String
    public var token: String
    public var caCertHashes: [String]
    public var labels: [String: String]
    public var nodePool: String?
    public var taints: [String]
    public var approvalTimeoutSeconds: Int
    /// The node.openyurt.io/autonomy-duration value the Node is registered with ("0" forever, or a Go duration such
    /// as "72h"); nil: none (`--no-autonomy`). A request without the key asks for the default, "0".
    public var autonomy: String?

    public init(server: String, token: String, caCertHashes: [String] = [], labels: [String: String] = [:],
                nodePool: String? = nil, taints: [String] = [], approvalTimeoutSeconds: Int = 120,
                autonomy: String? = JoinRequest.defaultAutonomy) {
        self.server = server
        self.token = token
        self.caCertHashes = caCertHashes
        self.labels = labels
        self.nodePool = nodePool
        self.taints = taints
        self.approvalTimeoutSeconds = approvalTimeoutSeconds
        self.autonomy = autonomy
    }

    /// An edged node is an edge node: autonomous, forever, unless told otherwise.
    public static let defaultAutonomy = "0"

    enum CodingKeys: String, CodingKey {
        case server, token, caCertHashes, labels, nodePool, taints, approvalTimeoutSeconds, autonomy
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        server = try c.decode(String.self, forKey: .server)
        token = try c.decode(String.self, forKey: .token)
        caCertHashes = try c.decodeIfPresent([String].self, forKey: .caCertHashes) ?? []
        labels = try c.decodeIfPresent([String: String].self, forKey: .labels) ?? [:]
        nodePool = try c.decodeIfPresent(String.self, forKey: .nodePool)
        taints = try c.decodeIfPresent([String].self, forKey: .taints) ?? []
        approvalTimeoutSeconds = try c.decodeIfPresent(Int.self, forKey: .approvalTimeoutSeconds) ?? 120
        // Absent: the default; null: none.
        autonomy = try c.contains(.autonomy) ? c.decodeIfPresent(String.self, forKey: .autonomy) : Self.defaultAutonomy
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(server, forKey: .server)
        try c.encode(token, forKey: .token)
        try c.encode(caCertHashes, forKey: .caCertHashes)
        try c.encode(labels, forKey: .labels)
        try c.encodeIfPresent(nodePool, forKey: .nodePool)
        try c.encode(taints, forKey: .taints)
        try c.encode(approvalTimeoutSeconds, forKey: .approvalTimeoutSeconds)
        if let autonomy { try c.encode(autonomy, forKey: .autonomy) } else { try c.encodeNil(forKey: .autonomy) }
    }
}

public struct JoinResponse: Codable, Sendable, Equatable {
    public var nodeName: String
    public var server: String
    /// False when the node was already joined to this server (join is idempotent).
    public var newlyJoined: Bool
    public var certificateNotAfter: String
    public var csrName: String?

    public init(nodeName: String, server: String, newlyJoined: Bool, certificateNotAfter: String, csrName: String? = nil) {
        self.nodeName = nodeName
        self.server = server
        self.newlyJoined = newlyJoined
        self.certificateNotAfter = certificateNotAfter
        self.csrName = csrName
    }
}
