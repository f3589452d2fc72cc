// The `hub:` section of the config: the edge hub's listeners, what it caches, its store and its cloud probe.

import EdgedCore
import EdgedHub

extension EdgedConfig {
    public struct HubSettings: Codable, Sendable, Equatable {
        /// Run the edge hub when the node has joined a cluster. Default true.
        public var enabled = true
        /// Plain HTTP for node-local clients (kube-proxy, flannel, coredns, kubectl on the node); "" disables.
        public var httpAddress = "127.0.0.1:10261"
        /// HTTPS for pods: the `kubernetes` Service is rewritten to this address (YurtHub's 169.254.2.1:10268),
        /// served with the node's serving certificate; "" disables.
        public var httpsAddress = "169.254.2.1:10268"
        /// /healthz, /readyz and /metrics; "" disables.
        public var healthAddress = "127.0.0.1:10267"
        /// Put the HTTPS address on a dummy interface (edged-hub0) when no interface has it, or on `lo` (host scope)
        /// where the kernel has no dummy driver; `edgectl status` says which. Default true.
        public var createDummyInterface = true
        /// Clients whose reads are cached, besides edged, kubelet, kube-proxy, flanneld, flannel and coredns.
        public var cacheComponents: [String] = []
        /// Resources cached besides the built-in ones, as "<group>/<version>/<resource>" (CRDs), e.g.
        /// "apps.openyurt.io/v1beta1/nodepools".
        public var cacheResources: [String] = []
        /// Upper bound of the store's object bytes (a quantity). Default 128Mi.
        public var maxStoreSize = "128Mi"
        /// Largest single object cached (bigger ones are forwarded, not cached). Default 2Mi (etcd's limit is 1.5Mi).
        public var maxObjectSize = "2Mi"
        /// Seconds between cloud probes (the node Lease renewal). Default 10.
        public var healthCheckSeconds = 10
        /// Seconds a probe may take. Default 2.
        public var healthCheckTimeoutSeconds = 2
        /// YurtHub's masterservice filter (the `kubernetes` Service points pods at the hub). Default true.
        public var masterService = true
        /// YurtHub's servicetopology filter (openyurt.io/topologyKeys). Default true.
        public var serviceTopology = true
        /// This node's pool, for service topology by node pool (default: the node's apps.openyurt.io/nodepool label).
        public var nodePool: String?

        public init() {}

        enum CodingKeys: String, CodingKey, CaseIterable {
            case enabled, httpAddress, httpsAddress, healthAddress, createDummyInterface, cacheComponents, cacheResources,
                 maxStoreSize, maxObjectSize, healthCheckSeconds, healthCheckTimeoutSeconds, masterService, serviceTopology, nodePool
        }

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let d = HubSettings()
            enabled = try c.decodeIfPresent(Bool.self, forKey: .enabled) ?? d.enabled
            httpAddress = try c.decodeIfPresent(String.self, forKey: .httpAddress) ?? d.httpAddress
            httpsAddress = try c.decodeIfPresent(String.self, forKey: .httpsAddress) ?? d.httpsAddress
            healthAddress = try c.decodeIfPresent(String.self, forKey: .healthAddress) ?? d.healthAddress
            createDummyInterface = try c.decodeIfPresent(Bool.self, forKey: .createDummyInterface) ?? d.createDummyInterface
            cacheComponents = try c.decodeIfPresent([String].self, forKey: .cacheComponents) ?? d.cacheComponents
            cacheResources = try c.decodeIfPresent([String].self, forKey: .cacheResources) ?? d.cacheResources
            maxStoreSize = try c.decodeIfPresent(String.self, forKey: .maxStoreSize) ?? d.maxStoreSize
            maxObjectSize = try c.decodeIfPresent(String.self, forKey: .maxObjectSize) ?? d.maxObjectSize
            healthCheckSeconds = try c.decodeIfPresent(Int.self, forKey: .healthCheckSeconds) ?? d.healthCheckSeconds
            healthCheckTimeoutSeconds = try c.decodeIfPresent(Int.self, forKey: .healthCheckTimeoutSeconds) ?? d.healthCheckTimeoutSeconds
            masterService = try c.decodeIfPresent(Bool.self, forKey: .masterService) ?? d.masterService
            serviceTopology = try c.decodeIfPresent(Bool.self, forKey: .serviceTopology) ?? d.serviceTopology
            nodePool = try c.decodeIfPresent(String.self, forKey: .nodePool)
        }

        func validate(source: String) throws(EdgedError) {
            for (key, value) in [("httpAddress", httpAddress), ("httpsAddress", httpsAddress), ("healthAddress", healthAddress)]
            where !value.isEmpty && HubAddress(parsing: value) == nil {
                throw EdgedError(.invalidConfig, "\(source): hub.\(key) \"\(value)\" is not HOST:PORT (use \"\" to disable it)")
            }
            do { _ = try Quantity(maxStoreSize).value() } catch {
                throw EdgedError(.invalidConfig, "\(source): hub.maxStoreSize: \(error.message)")
            }
            do { _ = try Quantity(maxObjectSize).value() } catch {
                throw EdgedError(.invalidConfig, "\(source): hub.maxObjectSize: \(error.message)")
            }
            guard healthCheckSeconds > 0, healthCheckTimeoutSeconds > 0 else {
                throw EdgedError(.invalidConfig, "\(source): hub.healthCheckSeconds and hub.healthCheckTimeoutSeconds must be at least 1")
            }
            for r in cacheResources where r.split(separator: "/", omittingEmptySubsequences: false).count != 3 {
                throw EdgedError(.invalidConfig, "\(source): hub.cacheResources entry \"\(r)\" must be <group>/<version>/<resource> (core group empty: \"/v1/pods\")")
            }
        }
    }
}
