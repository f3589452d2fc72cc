// What the node's tunnel agent needs: where the server is, its TLS files, who it is and where it may dial.

/// The tunnel agent's settings.
public struct TunnelAgentConfig: Sendable {
    /// The tunnel server (or Konnectivity server / its load balancer).
    public var serverHost: String
    public var serverPort: Int
    /// CA bundle (PEM) that signed the server's certificate.
    public var caPath: String
    /// The node's client certificate and key (PEM), read again at every (re)connect so a rotated pair is used.
    public var certPath: String
    public var keyPath: String
    /// Name to verify in the server certificate and send as SNI, when it differs from `serverHost`.
    public var serverName: String?
    /// The agent ID sent as `agentID` metadata: the node name (the server checks it against the cert's CN).
    public var agentID: String
    /// Sent as `agentIdentifiers`: the node name(s) and addresses the server may route to this agent.
    public var identifiers: AgentIdentifiers
    /// Decides whether a DIAL_REQ may be dialled: only node-local destinations (the kubelet API, pod ports) should
    /// pass. A refused dial gets a DIAL_RSP with an error and a log line. It is asked about the host actually
    /// dialled: a DIAL_REQ for one of `identifiers.hosts` (the node name) dials the first `identifiers.ipv4`
    /// (127.0.0.1 when there is none).
    public var allowDestination: @Sendable (_ host: String, _ port: Int) -> Bool
    /// Reconnect backoff: jittered, doubling from `backoffInitial` up to `backoffMax`.
    public var backoffInitial: Duration
    public var backoffMax: Duration
    /// gRPC keepalive pings: every `keepaliveInterval`, the connection is dropped when one is not answered within
    /// `keepaliveTimeout`.
    public var keepaliveInterval: Duration
    public var keepaliveTimeout: Duration
    /// How long one TCP dial to a local destination may take.
    public var dialTimeout: Duration
    /// Bytes from the server that may wait for one slow local reader before that stream is closed (see StreamRelay),
    /// and bytes read from one local socket that may wait for gRPC before that socket is no longer read.
    public var streamBufferLimit: Int

    public init(serverHost: String, serverPort: Int, caPath: String, certPath: String, keyPath: String,
                serverName: String? = nil, agentID: String, identifiers: AgentIdentifiers,
                allowDestination: @escaping @Sendable (_ host: String, _ port: Int) -> Bool,
                backoffInitial: Duration = .seconds(1), backoffMax: Duration = .seconds(30),
                keepaliveInterval: Duration = .seconds(30), keepaliveTimeout: Duration = .seconds(15),
                dialTimeout: Duration = .seconds(10), streamBufferLimit: Int = 8 << 20) {
        self.serverHost = serverHost
        self.serverPort = serverPort
        self.caPath = caPath
        self.certPath = certPath
        self.keyPath = keyPath
        self.serverName = serverName
        self.agentID = agentID
        self.identifiers = identifiers
        self.allowDestination = allowDestination
        self.backoffInitial = backoffInitial
        self.backoffMax = backoffMax
        self.keepaliveInterval = keepaliveInterval
        self.keepaliveTimeout = keepaliveTimeout
        self.dialTimeout = dialTimeout
        self.streamBufferLimit = streamBufferLimit
    }
}

/// What `edgectl status` shows about the tunnel agent.
public struct TunnelAgentStatus: Sendable, Equatable {
    /// Server instances this agent has a Connect stream to, and their IDs.
    public var connectedServers: Int
    public var serverIDs: [String]
    /// How many server instances the servers say there are (serverCount metadata).
    public var serverCount: Int
    /// TCP streams open through the tunnel right now.
    public var openStreams: Int
    /// The last connection or dial error, if any.
    public var lastError: String?
}
