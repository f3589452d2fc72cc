// What the tunnel server needs: its listeners, its TLS files and which instance of how many it is.

/// The tunnel server's settings.
public struct TunnelServerConfig: Sendable {
    /// TLS for the HTTP CONNECT frontend on TCP: the server's own pair, and optionally a CA that callers' client
    /// certificates must chain to (nil: no client certificate asked for).
    public struct FrontendTLS: Sendable {
        public var certPath: String
        public var keyPath: String
        public var clientCAPath: String?

        public init(certPath: String, keyPath: String, clientCAPath: String? = nil) {
            self.certPath = certPath
            self.keyPath = keyPath
            self.clientCAPath = clientCAPath
        }
    }

    /// Where agents connect (gRPC over mutual TLS); port 0 picks a free one (see `TunnelServer.addresses()`).
    public var agentHost: String
    public var agentPort: Int
    /// The server certificate and key (PEM) offered to agents.
    public var certPath: String
    public var keyPath: String
    /// The CA (PEM) that agents' client certificates must chain to; their CN must be `system:node:<agentID>`.
    public var agentCAPath: String
    /// The HTTP CONNECT frontend on TCP (nil: none), optionally with TLS.
    public var frontendHost: String?
    public var frontendPort: Int?
    public var frontendTLS: FrontendTLS?
    /// The HTTP CONNECT frontend on a Unix socket (nil: none); a stale socket file there is replaced.
    public var unixSocketPath: String?
    /// This instance's ID and how many instances run behind the agents' address (serverID / serverCount headers).
    public var serverID: String
    public var serverCount: Int
    /// How long a CONNECT waits for the agent's DIAL_RSP.
    public var dialTimeout: Duration
    /// Bytes from an agent that may wait for one slow frontend reader before that stream is closed (see
    /// StreamRelay), and bytes read from one frontend connection that may wait for gRPC before it is no longer read.
    public var streamBufferLimit: Int
    /// gRPC keepalive pings to agents.
    public var keepaliveInterval: Duration
    public var keepaliveTimeout: Duration

    public init(agentHost: String = "0.0.0.0", agentPort: Int = 8091, certPath: String, keyPath: String,
                agentCAPath: String, frontendHost: String? = nil, frontendPort: Int? = nil,
                frontendTLS: FrontendTLS? = nil, unixSocketPath: String? = nil, serverID: String,
                serverCount: Int = 1, dialTimeout: Duration = .seconds(10), streamBufferLimit: Int = 8 << 20,
                keepaliveInterval: Duration = .seconds(30), keepaliveTimeout: Duration = .seconds(15)) {
        self.agentHost = agentHost
        self.agentPort = agentPort
        self.certPath = certPath
        self.keyPath = keyPath
        self.agentCAPath = agentCAPath
        self.frontendHost = frontendHost
        self.frontendPort = frontendPort
        self.frontendTLS = frontendTLS
        self.unixSocketPath = unixSocketPath
        self.serverID = serverID
        self.serverCount = serverCount
        self.dialTimeout = dialTimeout
        self.streamBufferLimit = streamBufferLimit
        self.keepaliveInterval = keepaliveInterval
        self.keepaliveTimeout = keepaliveTimeout
    }
}

/// Where a running tunnel server listens (ports as bound, so port 0 in the config shows the real one).
public struct TunnelServerAddresses: Sendable, Equatable {
    public var agentPort: Int
    public var frontendPort: Int?
    public var unixSocketPath: String?
}

/// One agent connected to this server, for status and tests.
public struct TunnelServerAgent: Sendable, Equatable {
    public var agentID: String
    public var identifiers: AgentIdentifiers
    /// The client certificate's subject CN and serial number (hex) as presented on this connection.
    public var certificateCommonName: String
    public var certificateSerial: String
    public var openStreams: Int
    /// The agent sent DRAIN: new dials go to other agents for the same host when there are any.
    public var draining: Bool
}
