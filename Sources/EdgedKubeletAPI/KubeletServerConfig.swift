// The settings of the kubelet API server (:10250), with kubelet's defaults.

/// Where the kubelet API listens, which files hold its TLS identity and trust, and how long review answers are kept.
///
/// The certificate, key and client CA are read from their files when the server starts and again whenever one of
/// them changes on disk (checked as connections are accepted), so a rotated serving certificate is used by new
/// connections without a restart.
public struct KubeletServerConfig: Sendable {
    /// The address to bind ("0.0.0.0" for every interface, like kubelet's --address).
    public var host: String
    /// 10250 on a node; 0 picks a free port (tests: read `KubeletServer.boundPort`).
    public var port: Int
    /// The serving certificate (PEM chain, leaf first).
    public var certPath: String
    /// Its private key (unencrypted PEM).
    public var keyPath: String
    /// The cluster CA that client certificates must chain to (PEM, one or more certificates).
    public var clientCAPath: String
    /// A self-signed certificate chain and key served while `certPath` does not exist yet (kubelet's kubelet.crt and
    /// kubelet.key while the kubelet-serving CSR waits for approval); nil: nothing is served until `certPath` exists.
    /// As soon as `certPath` appears, new connections get it, without a restart.
    public var fallbackCertPath: String?
    public var fallbackKeyPath: String?
    /// This node's name: the `name` of every SubjectAccessReview (resource nodes).
    public var nodeName: String
    /// How long a TokenReview answer is kept (kubelet's authentication.webhook.cacheTTL, 2 min). A refused token is
    /// kept at most 10 s, so a token created just after a failed try works soon.
    public var authenticationCacheTTL: Duration
    /// How long an allowed SubjectAccessReview is kept (kubelet's authorization.webhook.cacheAuthorizedTTL, 5 min).
    public var authorizedCacheTTL: Duration
    /// How long a denied one is kept (cacheUnauthorizedTTL, 30 s).
    public var unauthorizedCacheTTL: Duration
    /// Callers with neither a client certificate nor a bearer token are served as system:anonymous (still subject
    /// to authorization) when true; refused with 401 when false (the default, like kubelet's --anonymous-auth=false).
    public var anonymous: Bool
    /// Most entries kept in each review cache; the oldest go first.
    public var cacheSize: Int
    /// How often a followed log looks for new lines.
    public var logPollInterval: Duration

    public init(host: String = "0.0.0.0", port: Int = 10250, certPath: String, keyPath: String, clientCAPath: String,
                nodeName: String, authenticationCacheTTL: Duration = .seconds(120),
                authorizedCacheTTL: Duration = .seconds(300), unauthorizedCacheTTL: Duration = .seconds(30),
                anonymous: Bool = false, cacheSize: Int = 1024, logPollInterval: Duration = .milliseconds(150),
                fallbackCertPath: String? = nil, fallbackKeyPath: String? = nil) {
        self.host = host
        self.port = port
        self.certPath = certPath
        self.keyPath = keyPath
        self.clientCAPath = clientCAPath
        self.fallbackCertPath = fallbackCertPath
        self.fallbackKeyPath = fallbackKeyPath
        self.nodeName = nodeName
        self.authenticationCacheTTL = authenticationCacheTTL
        self.authorizedCacheTTL = authorizedCacheTTL
        self.unauthorizedCacheTTL = unauthorizedCacheTTL
        self.anonymous = anonymous
        self.cacheSize = cacheSize
        self.logPollInterval = logPollInterval
    }
}
