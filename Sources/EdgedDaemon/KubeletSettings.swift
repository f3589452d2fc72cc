// The `kubelet:` and `tunnel:` sections of the config: the kubelet API on :10250 and the tunnel agent that carries
// the API server's requests to it from behind NAT.

import EdgedCore

extension EdgedConfig {
    /// kubelet's serving and authentication flags, under their config-file names where kubelet has one.
    public struct KubeletSettings: Codable, Sendable, Equatable {
        /// Serve the kubelet API once the node has joined and holds a serving certificate. Default true.
        public var enabled = true
        /// Listen address (kubelet's --address). Default 0.0.0.0.
        public var address = "0.0.0.0"
        /// Port (kubelet's --port), also written to the Node's daemonEndpoints. Default 10250.
        public var port = 10250
        /// Let requests without credentials through as system:anonymous (kubelet's authentication.anonymous.enabled).
        /// Default false.
        public var anonymousAuth = false
        /// How long a TokenReview answer is reused (kubelet's authentication.webhook.cacheTTL). Default 120.
        public var authenticationCacheSeconds = 120
        /// How long an allowed SubjectAccessReview is reused (authorization.webhook.cacheAuthorizedTTL). Default 300.
        public var authorizationAllowedCacheSeconds = 300
        /// How long a denied one is reused (authorization.webhook.cacheUnauthorizedTTL). Default 30.
        public var authorizationDeniedCacheSeconds = 30

        public init() {}

        enum CodingKeys: String, CodingKey, CaseIterable {
            case enabled, address, port, anonymousAuth, authenticationCacheSeconds, authorizationAllowedCacheSeconds,
                 authorizationDeniedCacheSeconds
        }

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let d = KubeletSettings()
            enabled = try c.decodeIfPresent(Bool.self, forKey: .enabled) ?? d.enabled
            address = try c.decodeIfPresent(String.self, forKey: .address) ?? d.address
            port = try c.decodeIfPresent(Int.self, forKey: .port) ?? d.port
            anonymousAuth = try c.decodeIfPresent(Bool.self, forKey: .anonymousAuth) ?? d.anonymousAuth
            authenticationCacheSeconds = try c.decodeIfPresent(Int.self, forKey: .authenticationCacheSeconds) ?? d.authenticationCacheSeconds
            authorizationAllowedCacheSeconds = try c.decodeIfPresent(Int.self, forKey: .authorizationAllowedCacheSeconds) ?? d.authorizationAllowedCacheSeconds
            authorizationDeniedCacheSeconds = try c.decodeIfPresent(Int.self, forKey: .authorizationDeniedCacheSeconds) ?? d.authorizationDeniedCacheSeconds
        }

        func validate(source: String) throws(EdgedError) {
            guard (1...65535).contains(port) else {
                throw EdgedError(.invalidConfig, "\(source): kubelet.port \(port) is not a TCP port (1-65535; kubelet's default is 10250)")
            }
            guard !address.isEmpty, !address.contains(":") || address.hasPrefix("[") || address.contains("::") else {
                throw EdgedError(.invalidConfig, "\(source): kubelet.address \"\(address)\" must be an IP address without a port (put the port in kubelet.port)")
            }
            for (key, value) in [("authenticationCacheSeconds", authenticationCacheSeconds),
                                 ("authorizationAllowedCacheSeconds", authorizationAllowedCacheSeconds),
                                 ("authorizationDeniedCacheSeconds", authorizationDeniedCacheSeconds)] where value < 0 {
                throw EdgedError(.invalidConfig, "\(source): kubelet.\(key) must be 0 (no cache) or more")
            }
        }
    }

    /// The tunnel agent: dials out to a Konnectivity server (or `edged tunnel-server`) so the API server can reach
    /// this node's kubelet API without an inbound connection.
    public struct TunnelSettings: Codable, Sendable, Equatable {
        /// The tunnel server's agent port as HOST:PORT (Konnectivity's default agent port is 8132); "" (the
        /// default) runs no agent, for nodes the API server reaches directly.
        public var server = ""
        /// CA that signs the tunnel server's certificate. Default: the cluster CA from `edgectl join`.
        public var caFile: String?
        /// Name to verify in the server's certificate when it differs from the host in `server`.
        public var serverName: String?

        public init() {}

        enum CodingKeys: String, CodingKey, CaseIterable {
            case server, caFile, serverName
        }

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            server = try c.decodeIfPresent(String.self, forKey: .server) ?? ""
            caFile = try c.decodeIfPresent(String.self, forKey: .caFile)
            serverName = try c.decodeIfPresent(String.self, forKey: .serverName)
        }

        /// `server` split into host and port; nil when empty.
        public var serverHostPort: (host: String, port: Int)? {
            guard let colon = server.lastIndex(of: ":"), let port = Int(server[server.index(after: colon)...]),
                  (1...65535).contains(port) else { return nil }
            var host = String(server[..<colon])
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            return host.isEmpty ? nil : (host, port)
        }

        func validate(source: String) throws(EdgedError) {
            if !server.isEmpty, serverHostPort == nil {
                throw EdgedError(.invalidConfig, "\(source): tunnel.server \"\(server)\" is not HOST:PORT (e.g. konnectivity.example.com:8132; \"\" runs no tunnel agent)")
            }
        }
    }
}
