// A test stand-in for kube-apiserver: enough of its REST API, auth and semantics for edged's client, join flow and
// node agent to be tested end to end, and for the real `kubectl` to drive it. It is NOT kube-apiserver.
//
// Copied from kube-apiserver (and the controllers a kubeadm cluster runs next to it):
// - HTTPS on 127.0.0.1 with a serving certificate for 127.0.0.1/localhost from a per-server CA (TestPKI).
// - Authentication: client certificates signed by the CA (CN → user, O → groups), bootstrap tokens "id.secret"
//   stored as kube-system/bootstrap-token-<id> Secrets (user system:bootstrap:<id>, groups system:bootstrappers +
//   auth-extra-groups, expiration honoured), ServiceAccount tokens from the TokenRequest API (a HS256 JWT, valid while
//   unexpired and while its ServiceAccount and bound pod exist), anonymous requests as system:anonymous.
//   Bad credentials answer 401 Status reason Unauthorized; a request the policy refuses answers 403 Forbidden with
//   the real message shape.
// - Discovery: /version, /api, /apis, /api/v1, /apis/<group>, /apis/<group>/<version> (the legacy, non-aggregated
//   documents: kubectl falls back to them).
// - Resources: namespaces (default, kube-system, kube-public, kube-node-lease exist; a "default" ServiceAccount and
//   the kube-root-ca.crt ConfigMap are created in each), nodes (+status), pods (+status, +eviction), configmaps, secrets (stringData folded into data),
//   services (default/kubernetes = 10.96.0.1:443; clusterIPs allocated from 10.96.0.0/16), serviceaccounts
//   (+token), events, endpoints, discovery.k8s.io/v1 endpointslices (addressType required, IPv4/IPv6/FQDN,
//   immutable; nothing else checked), coordination.k8s.io/v1 leases, certificates.k8s.io/v1
//   certificatesigningrequests (+approval, +status), rbac.authorization.k8s.io/v1 clusterroles, clusterrolebindings,
//   roles, rolebindings (+RBAC.swift), and apps/v1 deployments, replicasets, daemonsets (+status) as INERT objects
//   with their defaults and selector validation (+Apps.swift: no controller runs for them, nothing creates pods).
// - Object metadata: uid, creationTimestamp, one global resourceVersion counter (like an etcd revision),
//   generation (1 on create, +1 when spec changes — for every resource), name or generateName, 404 NotFound,
//   409 AlreadyExists, 409 Conflict for a stale metadata.resourceVersion on PUT/PATCH, 422 Invalid (missing/invalid
//   name, pod without containers/images, bad CSR; message "<Kind>[.<group>] "<name>" is invalid: …", a repeated
//   cause shown once as ErrorList.ToAggregate does) with details.causes, 400 BadRequest for a body that is not JSON
//   (as the real server; it is 400, not 422), creating in a missing namespace is 404. A no-op update keeps the RV.
// - Status subresource (nodes, pods, services, namespaces, CSRs, apps/v1 workloads): the main resource ignores status changes, /status
//   changes only status, /approval only status.conditions.
// - Pod defaults that matter to a kubelet: restartPolicy, dnsPolicy, terminationGracePeriodSeconds,
//   schedulerName, enableServiceLinks, imagePullPolicy (Always for :latest/untagged), terminationMessagePath/Policy,
//   port protocol, requests defaulted from limits; at create and update (admission, not on subresources): the two
//   300 s not-ready/unreachable tolerations when missing (DefaultTolerationSeconds; Options.defaultTolerationSeconds:
//   an update that removes one gets it back); at create only: priority 0, status.phase Pending and qosClass
//   (pkg/apis/core/helper/qos: cpu and memory only). Pod spec updates may change only images, activeDeadlineSeconds, tolerations and
//   terminationGracePeriodSeconds (422 otherwise); tolerations are validated at create and update as
//   ValidateTolerations and validateOnlyAddedTolerations do (+Tolerations.swift: existing ones may change only their
//   tolerationSeconds, to any value or none; new ones may be added), through PUT and every PATCH type.
// - Node identities (Options.nodeAuthorizer, .nodeRestriction; KubeAPIServer+NodeAuthorizer.swift): the node
//   authorizer and the NodeRules of a --authorization-mode=Node,RBAC server and the NodeRestriction admission plugin,
//   from plugin/pkg/auth/authorizer/node/node_authorizer.go, plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go
//   and plugin/pkg/admission/noderestriction/admission.go (system:node:<name> in group system:nodes reads only the
//   secrets/configmaps/pods/node/lease that are its own or its pods', writes only its own Node, Lease, mirror pods
//   and pod statuses), plus kubeadm's Roles that let nodes get kube-system/kubelet-config and kubeadm-config.
// - ServiceAccount admission and root-ca-cert-publisher (Options.serviceAccounts; +ServiceAccounts.swift), from
//   plugin/pkg/admission/serviceaccount/admission.go and pkg/controller/certificates/rootcacertpublisher: pods get
//   serviceAccountName default (403 when the account is missing) and the kube-api-access-<5> projected volume
//   mounted at /var/run/secrets/kubernetes.io/serviceaccount; mirror pods get nothing and may reference no service
//   account or secret. TokenRequest (Options.extendServiceAccountTokenExpiration), from
//   pkg/registry/core/serviceaccount/storage/token.go: a pod-bound 3607 s request gets a token valid for a year with
//   a warnafter claim, while status.expirationTimestamp says 3607 s; pod-bound tokens carry the pod's node.
//   serviceAccountToken(namespace:name:expirationSeconds:) mints one for an existing ServiceAccount without HTTP and
//   writeKubeconfig(to:token:) writes a kubeconfig using it, so a test can run a controller as that ServiceAccount.
// - RBAC (+RBAC.swift), from plugin/pkg/auth/authorizer/rbac and pkg/apis/rbac/v1: what the fixed policy below and
//   the node authorizer do not allow, the stored Roles/ClusterRoles and their bindings may (verbs, apiGroups,
//   resources with "res/sub" and "*/sub", resourceNames with a list's metadata.name field selector counting as the
//   name; User, Group and ServiceAccount subjects), as with --authorization-mode=Node,RBAC; also for
//   SubjectAccessReviews. RBAC objects are defaulted and validated (roleRef immutable).
// - Pod status validation (Options.podStatusValidation; +PodStatus.swift), from pkg/apis/core/validation
//   ValidatePodStatusUpdate: qosClass immutable, terminated containers may not run again unless the restart policy
//   restarts them, pod/host IPs valid (422 Invalid with causes), through PUT and PATCH of pods/status.
// - Node lifecycle controller (Options.nodeLifecycle; +NodeLifecycle.swift), from
//   pkg/controller/nodelifecycle/node_lifecycle_controller.go: a node neither posting status nor renewing its Lease
//   for the grace period (50 s: the v1.36 default of --node-monitor-grace-period, older releases had 40 s) gets
//   Ready/MemoryPressure/DiskPressure/PIDPressure Unknown and the unreachable NoSchedule/NoExecute taints (not-ready ones while it says Ready=False), removed when it posts Ready=True; a
//   Lease alone does not make it Ready; when it goes Unknown its pods' Ready condition is set to False.
//   Runs every 5 s on a timer, also while stop()ped.
// - Taint-eviction controller (Options.taintEviction; +TaintEviction.swift), from
//   pkg/controller/tainteviction/taint_eviction.go, run at the end of each node lifecycle pass: a pod bound to a node
//   with NoExecute taints it does not all tolerate is deleted at once; else after the smallest tolerationSeconds of
//   the matching tolerations (none: never), counted from when the controller noticed the taints; a scheduled deletion
//   is cancelled when the taints go or the pod tolerates them forever, and is not moved when tolerationSeconds
//   changes. Deleting = status condition DisruptionTarget (reason DeletionByTaintManager), then a graceful DELETE,
//   plus TaintManagerEviction Events. Up to a monitorPeriod late (no timers of its own).
// - DELETE: a pod bound to a node and not Succeeded/Failed gets deletionTimestamp + deletionGracePeriodSeconds
//   (body/query gracePeriodSeconds, else spec.terminationGracePeriodSeconds, else 30; a later delete may only
//   shorten it) and 200 with the object; grace 0, an unbound or terminal pod is removed at once. Preconditions (uid,
//   resourceVersion) → 409. Finalizers hold an object until the last one is removed. Deleting a namespace removes
//   everything in it at once (the real one goes Terminating and a controller empties it).
// - PATCH: merge-patch (RFC 7386), json-patch (RFC 6902 add/remove/replace/test/move/copy; failing test or missing
//   path = 422), strategic-merge-patch APPROXIMATED: merge keys are looked up by field name (conditions and
//   addresses by type, *containerStatuses/containers/volumes/env by name, podIPs/hostIPs by ip, volumeMounts by
//   mountPath, taints by key, ownerReferences by uid, ports by containerPort, or by port under a service spec),
//   finalizers merge as a set, every other list is replaced (so images is replaced); `$patch: replace|delete`,
//   `$deleteFromPrimitiveList/` honoured, `$setElementOrder/` and `$retainKeys` ignored (new items are appended).
//   apply-patch (server-side apply) is 415. No managedFields.
// - LIST: list resourceVersion, labelSelector (=, ==, !=, in, notin, exists, !exists), fieldSelector
//   (metadata.name/namespace and the per-resource fields in KubeResource.all, else 400 "field label not supported"),
//   limit + opaque continue tokens that read a consistent snapshot at the first page's RV (rebuilt from history);
//   a continue token older than the kept history answers 410 Expired. Items carry no kind/apiVersion, as the real one.
// - WATCH (?watch=1 and the legacy /watch/ paths): chunked JSON lines {"type","object"}; RV "0" or none → synthetic
//   ADDED for the current objects, RV N → replay of every change after N; allowWatchBookmarks → periodic BOOKMARK
//   with only metadata.resourceVersion (every Options.watchBookmarkInterval, the real one ~1 min); an RV older than
//   the history (see compact()) → HTTP 200 then one ERROR event with a 410 Expired Status; timeoutSeconds ends the
//   stream cleanly; selectors apply and an object that stops matching is sent as DELETED (old content, new RV).
// - CSRs: spec.request must be a signed PEM CSR; spec.username/groups are set from the creator; with
//   autoApproveCSRs (or after an Approved condition through /approval or approveCSR) the two kubelet signers
//   (kube-apiserver-client-kubelet, kubelet-serving) check the request (CN system:node:*, O system:nodes, usages,
//   SANs) and the CA signs it with the CSR's subject and SANs for min(certificateLifetime, spec.expirationSeconds);
//   approval and certificate are two separate MODIFIED changes; a Denied CSR gets no certificate; a request that
//   breaks a signer rule gets a Failed condition (SignerValidationFailure).
// - Outages for tests (not kube-apiserver behaviour, but what a client sees): stop() closes the listener and every
//   connection abruptly and keeps all state; resume() listens again on the same port with the same certificates.
//   setBlackhole(true) makes every connection, open or new, silently drop all bytes both ways (TLS handshakes hang);
//   setBlackhole(false) closes those connections so clients reconnect.
// - kube-public/cluster-info: data.kubeconfig (server + certificate-authority-data) and jws-kubeconfig-<id> per
//   signing bootstrap token, a detached HS256 JWS "<header>..<signature>" exactly like the bootstrapsigner.
//
// NOT copied (do not rely on these):
// - A fixed policy in front of RBAC: system:masters may do anything; bootstrappers may create/get/list/watch CSRs
//   and get kube-public/configmaps/cluster-info; anonymous may only get that ConfigMap plus /version and health;
//   everyone authenticated may read discovery (plus the grants of KubeAPIServer+Reviews.swift for reviews). Other
//   permissions come only from RBAC objects a test creates: no bootstrap roles or bindings (cluster-admin, view,
//   system:*), no aggregated ClusterRoles, nonResourceURLs never evaluated, and NO escalation checks (whoever may
//   create a Role or binding may grant anything in it).
// - No controllers for apps/v1 objects: Deployments, ReplicaSets and DaemonSets are stored, defaulted and validated,
//   nothing more (no ReplicaSets, no pods, no status, no scale subresource, no garbage collection).
//   Admission plugins: only NamespaceLifecycle's namespace-exists check, ServiceAccount, NodeRestriction,
//   DefaultTolerationSeconds and Priority's defaults above. No persistent volumes.
// - kubelet-serving CSRs are auto-approved when autoApproveCSRs is on (a real cluster needs an approver for them).
// - JSON only: a protobuf (or YAML) request body is 415 UnsupportedMediaType, so kubectl commands built on typed
//   clients (`kubectl create configmap/secret …`, `kubectl certificate approve`) fail; use `kubectl create -f`,
//   apply, patch, label, get, delete (responses are always JSON, which kubectl accepts). No OpenAPI: pass
//   `--validate=false` to `kubectl create -f` / `apply`.
// - No Table output (kubectl prints its default NAME/AGE columns), no server-side apply,
//   no dry-run, no field validation, no sendInitialEvents/watch-list, no aggregated discovery, no pods/binding,
//   log/exec/attach/port-forward, no resourceVersionMatch, no schema validation beyond the few checks above.
// - Lists with resourceVersion=0 and a limit still page (the real watch cache may ignore the limit).
// - Fault injection for tests (KubeAPIServer+Faults.swift): injectFault(path:_:count:) damages the next answers
//   to a path (a body that is not JSON, a watch cut off mid-event, an object padded to a huge size).
// - Watches do not time out on their own (the real server ends them after 30-60 min); history is kept in memory
//   (100 000 changes) until compact().
// - One global lock: requests are served one at a time, which makes every request atomic. LIST bodies are built
//   from each object's cached serialization (keys sorted; dropped when the object changes), so a LIST of 1000
//   3 KB pods costs a few ms; createPods(namespace:count:nodeName:) seeds many realistic pods without HTTP.

import Crypto
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import SwiftASN1
import Synchronization
import X509

/// A kube-apiserver stand-in for tests (see the file comment for what it copies and what it does not).
public final class KubeAPIServer: Sendable {
    /// Server settings.
    public struct Options: Sendable {
        /// Approve CSRs of the two kubelet signers as soon as they are created.
        public var autoApproveCSRs: Bool = true
        /// Lifetime of certificates signed for CSRs (spec.expirationSeconds may shorten it).
        public var certificateLifetime: Duration = .seconds(3600)
        /// How often watches with allowWatchBookmarks get a BOOKMARK (the real server: about a minute).
        public var watchBookmarkInterval: Duration = .seconds(1)
        /// Print one line per request to stdout.
        public var requestLog: Bool = false
        /// Node authorizer + the node's RBAC rules for system:node:<name> in system:nodes (off: nodes may do anything,
        /// as this server allowed before). KubeAPIServer+NodeAuthorizer.swift.
        public var nodeAuthorizer: Bool = true
        /// NodeRestriction admission for nodes. KubeAPIServer+NodeAuthorizer.swift.
        public var nodeRestriction: Bool = true
        /// ServiceAccount admission (default service account, kube-api-access-* volume) and the root-ca-cert-publisher
        /// (kube-root-ca.crt in every namespace). Off: serviceAccountName is only defaulted. +ServiceAccounts.swift.
        public var serviceAccounts: Bool = true
        /// --service-account-extend-token-expiration: pod-bound 3607 s tokens are valid for a year (warnafter set).
        public var extendServiceAccountTokenExpiration: Bool = true
        /// ValidatePodStatusUpdate on pods/status PUT and PATCH (qosClass immutable, container state transitions,
        /// pod/host IPs). KubeAPIServer+PodStatus.swift.
        public var podStatusValidation: Bool = true
        /// The node lifecycle controller (nil: off). KubeAPIServer+NodeLifecycle.swift.
        public var nodeLifecycle: NodeLifecycleOptions? = NodeLifecycleOptions()
        /// The taint-eviction controller (on by default, as in kube-controller-manager): pods on a node with NoExecute
        /// taints are deleted once their tolerations run out. It runs with the node lifecycle controller's passes
        /// (so not at all when nodeLifecycle is nil). KubeAPIServer+TaintEviction.swift.
        public var taintEviction: Bool = true
        /// tolerationSeconds of the not-ready and unreachable tolerations the DefaultTolerationSeconds admission adds
        /// to new pods (kube-apiserver's --default-not-ready-toleration-seconds and
        /// --default-unreachable-toleration-seconds, both 300).
        public var defaultTolerationSeconds: Int = 300
        /// The address to listen on (an IPv4 or IPv6 address; "0.0.0.0" for every interface) and its port (0: an
        /// ephemeral one). `url` uses 127.0.0.1 when listening on every interface.
        public var listenHost: String = "127.0.0.1"
        public var listenPort: Int = 0
        /// More names (IP addresses or DNS names) for the serving certificate, besides 127.0.0.1, 10.96.0.1,
        /// localhost and kubernetes.default…: the addresses clients outside this host use, e.g. 10.0.2.2 for a qemu
        /// guest on user-mode networking. The first one is the host kube-public/cluster-info and discovery's
        /// serverAddressByClientCIDRs advertise (as kubeadm's controlPlaneEndpoint); none: the listen address.
        public var extraServingNames: [String] = []

        public init(autoApproveCSRs: Bool = true, certificateLifetime: Duration = .seconds(3600),
                    watchBookmarkInterval: Duration = .seconds(1), requestLog: Bool = false,
                    nodeAuthorizer: Bool = true, nodeRestriction: Bool = true, serviceAccounts: Bool = true,
                    extendServiceAccountTokenExpiration: Bool = true, podStatusValidation: Bool = true,
                    nodeLifecycle: NodeLifecycleOptions? = NodeLifecycleOptions(), taintEviction: Bool = true,
                    defaultTolerationSeconds: Int = 300, listenHost: String = "127.0.0.1", listenPort: Int = 0,
                    extraServingNames: [String] = []) {
            self.autoApproveCSRs = autoApproveCSRs
            self.certificateLifetime = certificateLifetime
            self.watchBookmarkInterval = watchBookmarkInterval
            self.requestLog = requestLog
            self.nodeAuthorizer = nodeAuthorizer
            self.nodeRestriction = nodeRestriction
            self.serviceAccounts = serviceAccounts
            self.extendServiceAccountTokenExpiration = extendServiceAccountTokenExpiration
            self.podStatusValidation = podStatusValidation
            self.nodeLifecycle = nodeLifecycle
            self.taintEviction = taintEviction
            self.defaultTolerationSeconds = defaultTolerationSeconds
            self.listenHost = listenHost
            self.listenPort = listenPort
            self.extraServingNames = extraServingNames
        }
    }

    /// One served request, for assertions.
    public struct RequestRecord: Sendable, CustomStringConvertible {
        public let method: String
        /// Path and query as sent.
        public let path: String
        public let code: Int
        /// The authenticated user ("system:anonymous"; "" when the credentials were refused).
        public let user: String
        public var description: String { "\(method) \(path) \(code) \(user)" }
    }

    /// A failed direct (non-HTTP) call: the HTTP code and Status message the same request would get.
    public struct Failure: Error, CustomStringConvertible {
        public let code: Int
        public let reason: String
        public let message: String
        public var description: String { "\(code) \(reason): \(message)" }
    }

    /// "https://127.0.0.1:PORT" (the listen address when Options.listenHost is a specific one).
    public let url: String
    public let port: Int
    /// Where the server listens (Options.listenHost).
    public let host: String
    /// The serving certificate's IP and DNS names.
    let servingIPs: [String], servingDNS: [String]
    /// The cluster CA (it also signs CSRs).
    public let pki: TestPKI
    public var caPEM: String { pki.caPEM }
    /// "sha256:<hex>" of the CA's SubjectPublicKeyInfo, as kubeadm's --discovery-token-ca-cert-hash.
    public var caCertHash: String { pki.caCertHash }
    /// CN=kubernetes-admin, O=system:masters.
    public let adminCertPEM: String
    public let adminKeyPEM: String

    let core: KubeAPIServerCore
    private let group: MultiThreadedEventLoopGroup
    private let sslContext: NIOSSLContext
    let connections: KubeConnections
    /// The listening socket; nil while stopped.
    private let listener: Mutex<Channel?>
    /// The node lifecycle controller's timer (runs while stopped, ends with shutdown()).
    private let controllers: Mutex<Task<Void, Never>?>

    private init(url: String, port: Int, host: String, servingIPs: [String], servingDNS: [String], pki: TestPKI, admin: TestKeyPair, core: KubeAPIServerCore,
                 group: MultiThreadedEventLoopGroup, sslContext: NIOSSLContext, connections: KubeConnections,
                 channel: Channel) {
        self.url = url
        self.port = port
        self.host = host
        self.servingIPs = servingIPs
        self.servingDNS = servingDNS
        self.pki = pki
        self.adminCertPEM = admin.certPEM
        self.adminKeyPEM = admin.keyPEM
        self.core = core
        self.group = group
        self.sslContext = sslContext
        self.connections = connections
        self.listener = Mutex(channel)
        self.controllers = Mutex(core.startNodeLifecycle())
    }

    /// Binds the listening socket on `host`:`port` (0: an ephemeral one). Each connection goes through the
    /// blackhole gate, then TLS, then HTTP/1.1.
    private static func listen(group: MultiThreadedEventLoopGroup, host: String, port: Int, sslContext: NIOSSLContext,
                               core: KubeAPIServerCore, connections: KubeConnections) async throws -> Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    let connection = connections.register(ch)
                    try ch.pipeline.syncOperations.addHandler(KubeConnectionGate(connection), name: KubeConnectionGate.name)
                    try ch.pipeline.syncOperations.addHandler(KubeAPITLS.handler(connections.servingOverride.withLock { $0 } ?? sslContext))
                    try ch.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try ch.pipeline.syncOperations.addHandler(KubeAPIHTTPHandler(core: core))
                }
            }
            .bind(host: host, port: port).get()
    }

    /// Starts a server with a fresh CA and the default objects, on 127.0.0.1 with an ephemeral port unless
    /// `options` name another listen address or port.
    public static func start(options: Options = .init()) async throws -> KubeAPIServer {
        let pki = try TestPKI.makeCA(commonName: "kubernetes")
        var ips = ["127.0.0.1", "10.96.0.1"]
        var dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"]
        let wildcard = options.listenHost == "0.0.0.0" || options.listenHost == "::"
        for name in (wildcard ? [] : [options.listenHost]) + options.extraServingNames {
            guard !name.isEmpty else { throw Failure(code: 400, reason: "BadRequest", message: "an empty serving certificate name: give an IP address or a DNS name") }
            if (try? TestPKI.ipBytes(name)) != nil {
                if !ips.contains(name) { ips.append(name) }
            } else if !dns.contains(name) {
                dns.append(name)
            }
        }
        let serving = try pki.issue(serverFor: "kube-apiserver", ips: ips, dns: dns)
        let admin = try pki.issueClient(cn: "kubernetes-admin", orgs: ["system:masters"])
        let sslContext = try KubeAPITLS.context(serving: serving, ca: pki)
        let core = KubeAPIServerCore(pki: pki, options: options)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let connections = KubeConnections()
        let channel: Channel
        do {
            channel = try await listen(group: group, host: options.listenHost, port: options.listenPort, sslContext: sslContext,
                                       core: core, connections: connections)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        let port = channel.localAddress?.port ?? 0
        func hostPort(_ host: String) -> String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
        let local = wildcard ? "127.0.0.1" : options.listenHost
        core.serverAddress = hostPort(options.extraServingNames.first ?? local)
        try core.store.lock.withLock { try core.bootstrap() }
        return KubeAPIServer(url: "https://\(hostPort(local))", port: port, host: options.listenHost, servingIPs: ips,
                             servingDNS: dns, pki: pki, admin: admin, core: core,
                             group: group, sslContext: sslContext, connections: connections, channel: channel)
    }

    /// Stops listening and closes every connection (watch streams end without a final chunk). Final: the server
    /// cannot be resumed after this.
    public func shutdown() async throws {
        let channel = listener.withLock { c in defer { c = nil }; return c }
        controllers.withLock { t in t?.cancel(); t = nil }
        try? await channel?.close()
        try await group.shutdownGracefully()
    }

    /// Cuts the server off like a killed process, keeping everything it knows (objects, resourceVersions, history,
    /// tokens, PKI) for `resume()`: stops listening (new connections are refused) and closes every open connection
    /// abruptly (watch streams end without a final chunk, no TLS close_notify). Does nothing when already stopped.
    public func stop() async throws {
        let channel = listener.withLock { c in defer { c = nil }; return c }
        guard let channel else { return }
        try? await channel.close()
        await connections.closeAll()
    }

    /// Listens again after `stop()`, on the same port with the same CA and serving certificate, so clients
    /// reconnect with the URL and kubeconfig they have; a watch from an older resourceVersion replays the history
    /// as usual. Retries for up to 2 s while the port is still in use. Does nothing when already listening.
    public func resume() async throws {
        guard listener.withLock({ $0 == nil }) else { return }
        let deadline = ContinuousClock.now + .seconds(2)
        while true {
            do {
                let channel = try await Self.listen(group: group, host: host, port: port, sslContext: sslContext, core: core,
                                                    connections: connections)
                listener.withLock { $0 = channel }
                return
            } catch {
                if (error as? IOError)?.errnoCode == EADDRINUSE, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(10))
                    continue
                }
                throw Failure(code: 503, reason: "ServiceUnavailable",
                              message: "the test API server could not listen on \(host):\(port) again: \(error)")
            }
        }
    }

    /// True between `stop()` and `resume()` (and after `shutdown()`).
    public var isStopped: Bool { listener.withLock { $0 == nil } }

    /// A blackhole between clients and the server, as when a route silently drops packets. On: connections are
    /// still accepted but never get a byte (the TLS handshake is never answered), open connections get nothing
    /// further (responses and watch events are dropped, no bookmarks) and what clients send is ignored. Off: the
    /// stalled connections are closed, so their clients notice and reconnect; new ones are served normally. The
    /// server's state keeps changing through the direct calls (`put`, `delete`, ...) meanwhile.
    public func setBlackhole(_ on: Bool) {
        connections.setBlackhole(on)
    }

    /// A slow link: every connection, open or new, gets at most `bytesPerSecond` bytes per second from the server
    /// (requests still arrive at full speed). 0 turns it off and closes the slowed connections, so clients reconnect.
    public func setSlowLink(bytesPerSecond: Int) {
        connections.setSlow(bytesPerSecond: bytesPerSecond)
    }

    /// A link that ends in something that does not speak TLS: open connections are cut and new ones get a plain
    /// HTTP answer instead of a server hello, so every TLS handshake fails. Off: served normally again.
    public func setGarbageLink(_ on: Bool) async {
        await connections.setGarbage(on)
    }

    /// Serves new connections a certificate (same CA, names and key usage) that is valid only from `notBefore`,
    /// which is what a node whose clock is behind sees: the TLS handshake fails with "certificate is not yet valid".
    /// Open connections are closed so clients reconnect. nil goes back to the normal certificate.
    public func setServingCertificate(validFrom notBefore: Date?) async throws {
        if let notBefore {
            let key = P256.Signing.PrivateKey()
            var sans: [GeneralName] = servingDNS.map { .dnsName($0) }
            for ip in servingIPs { sans.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(try TestPKI.ipBytes(ip))))) }
            let cert = try pki.sign(publicKey: .init(key.publicKey), subject: DistinguishedName { CommonName("kube-apiserver") },
                                    sans: sans, keyUsage: KeyUsage(digitalSignature: true, keyEncipherment: true),
                                    extendedKeyUsages: [.serverAuth], lifetime: 86400, notBefore: notBefore)
            let pair = TestKeyPair(certPEM: try cert.serializeAsPEM().pemString, keyPEM: key.pemRepresentation)
            let context = try KubeAPITLS.context(serving: pair, ca: pki)
            connections.servingOverride.withLock { $0 = context }
        } else {
            connections.servingOverride.withLock { $0 = nil }
        }
        await connections.closeAll()
    }

    /// Whether the blackhole is on.
    public var isBlackholed: Bool { connections.blackhole }

    /// The number of open client connections (stalled ones included).
    public var openConnections: Int { connections.count }

    /// Writes a kubeconfig with the admin client certificate, for the real `kubectl --kubeconfig`.
    public func writeAdminKubeconfig(to path: String) throws {
        func b64(_ s: String) -> String { Data(s.utf8).base64EncodedString() }
        try writeKubeconfig(to: path, user: "kubernetes-admin",
                            credentials: ["client-certificate-data: \(b64(adminCertPEM))", "client-key-data: \(b64(adminKeyPEM))"])
    }

    /// Writes a kubeconfig for this server (URL and CA) that authenticates with a bearer token, e.g. one from
    /// `serviceAccountToken(namespace:name:)`, so a process (a controller under test, kubectl) acts as that user.
    public func writeKubeconfig(to path: String, token: String) throws {
        try writeKubeconfig(to: path, user: "token-user", credentials: ["token: \(token)"])
    }

    private func writeKubeconfig(to path: String, user: String, credentials: [String]) throws {
        let text = """
        apiVersion: v1
        kind: Config
        clusters:
        - name: test
          cluster:
            server: \(url)
            certificate-authority-data: \(Data(caPEM.utf8).base64EncodedString())
        users:
        - name: \(user)
          user:
        \(credentials.map { "    " + $0 }.joined(separator: "\n"))
        contexts:
        - name: test
          context:
            cluster: test
            user: \(user)
        current-context: test

        """
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// A token of ServiceAccount `namespace`/`name`, minted as the TokenRequest API (POST
    /// serviceaccounts/<name>/token) would for a client outside any pod: an HS256 JWT for the API server's audience,
    /// valid for `expirationSeconds` (600 at least, as the API requires) and while the ServiceAccount exists. The
    /// requests it makes are authorized by RBAC (KubeAPIServer+RBAC.swift). The ServiceAccount is not created here:
    /// create it first (kubectl apply of the manifest that declares it, or `put`); a missing one throws NotFound.
    public func serviceAccountToken(namespace: String, name: String, expirationSeconds: Int = 3600) throws -> String {
        let r = KubeAPIServerCore.serviceAccounts
        return try direct {
            guard core.store.get(r, namespace: namespace, name: name) != nil else {
                throw APIError(code: 404, reason: "NotFound",
                               message: "serviceaccounts \"\(name)\" not found in namespace \"\(namespace)\": create the ServiceAccount before asking for its token (apply the manifest that declares it)")
            }
            let target = APITarget(resource: r, namespace: namespace, name: name, subresource: "token", legacyWatch: false)
            let body = KJSON.object(["spec": .object(["expirationSeconds": .int(expirationSeconds)])])
            let req = APIRequest(method: "POST", uri: r.path(namespace: namespace, name: name) + "/token",
                                 headers: ["content-type": "application/json"], body: body.data)
            guard let token = try core.tokenRequest(target, req)[path: ["status", "token"]]?.string else {
                throw APIError(code: 500, reason: "InternalError", message: "the TokenRequest answer has no token")
            }
            return token
        }
    }

    /// Adds (or replaces) bootstrap token "<id>.<secret>" (id: 6 chars [a-z0-9], secret: 16), like
    /// `kubeadm token create`, and signs cluster-info with it.
    public func addBootstrapToken(id: String, secret: String, expires: Date? = nil) throws {
        try direct { try core.addBootstrapToken(id: id, secret: secret, expires: expires) }
    }

    /// Forgets the change history: watches from an older resourceVersion and older continue tokens then get 410.
    public func compact() { core.store.lock.withLock { core.store.compact() } }

    /// The current global resourceVersion.
    public var resourceVersion: Int { core.store.lock.withLock { core.store.resourceVersion } }

    /// Every request served so far (method, path, code, user).
    public func requests() -> [RequestRecord] { core.requests }

    /// Approves a CSR through its /approval subresource, as `kubectl certificate approve` does.
    public func approveCSR(_ name: String) throws {
        try direct { try core.setCSRDecision(name: name, approve: true) }
    }

    /// Denies a CSR (it will get no certificate).
    public func denyCSR(_ name: String) throws {
        try direct { try core.setCSRDecision(name: name, approve: false) }
    }

    // MARK: Direct store access (no HTTP, no auth)

    /// The stored object at an API path such as "/api/v1/namespaces/default/pods/p1", as JSON.
    public func object(_ path: String) -> Data? {
        guard let t = KubeAPIServerCore.target(path), let name = t.name else { return nil }
        return core.store.lock.withLock { core.store.get(t.resource, namespace: t.namespace, name: name)?.data }
    }

    /// The stored object as a Foundation JSON dictionary.
    public func objectJSON(_ path: String) -> [String: Any]? {
        object(path).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
    }

    /// Creates or replaces the object at an API path ("…/pods/p1"; a collection path creates), ignoring its
    /// resourceVersion; for resources with a status subresource the given status is written too. A pod replaced this
    /// way keeps what admission added at create (service account, kube-api-access volume and mounts, priority,
    /// default tolerations) when the new body leaves it out, and its qosClass. Returns the stored object.
    @discardableResult
    public func put(_ path: String, _ json: Data) throws -> Data {
        guard let t = KubeAPIServerCore.target(path) else { throw Failure(code: 404, reason: "NotFound", message: "no resource at \(path)") }
        return try direct {
            var body = try core.parseBody(json)
            body[path: ["metadata", "resourceVersion"]] = nil
            let r = t.resource
            let name = t.name ?? body[path: ["metadata", "name"]]?.string ?? ""
            var stored: KJSON
            if !name.isEmpty, let old = core.store.get(r, namespace: t.namespace, name: name) {
                if r.kind == "Pod" { body = KubeAPIServerCore.carryAdmissionDefaults(from: old, into: body) }
                stored = try core.update(APITarget(resource: r, namespace: t.namespace, name: name, subresource: nil, legacyWatch: false), body: body)
            } else {
                if !name.isEmpty { body[path: ["metadata", "name"]] = .string(name) }
                stored = try core.create(r, namespace: t.namespace, body: body, user: .internalAdmin)
            }
            if r.hasStatusSubresource, var status = body["status"] {
                var withStatus = stored
                // A test's status need not repeat the immutable qosClass the server set.
                if r.kind == "Pod", status["qosClass"] == nil { status["qosClass"] = stored[path: ["status", "qosClass"]] }
                withStatus["status"] = status
                let sname = stored[path: ["metadata", "name"]]?.string ?? name
                stored = try core.update(APITarget(resource: r, namespace: t.namespace, name: sname, subresource: "status", legacyWatch: false), body: withStatus)
            }
            return stored.data
        }
    }

    /// `put` with a Foundation JSON dictionary.
    @discardableResult
    public func put(_ path: String, _ json: [String: Any]) throws -> Data {
        try put(path, try KJSON(any: json).data)
    }

    /// Removes the object at an API path at once (no grace period, finalizers ignored).
    public func delete(_ path: String) throws {
        guard let t = KubeAPIServerCore.target(path), let name = t.name else {
            throw Failure(code: 404, reason: "NotFound", message: "no object at \(path)")
        }
        try direct {
            guard let obj = core.store.get(t.resource, namespace: t.namespace, name: name) else {
                throw APIError.notFound(t.resource, name)
            }
            core.store.commit(.deleted, t.resource, namespace: t.namespace, name: name, object: obj)
        }
    }

    /// Serves a request as the internal admin without HTTP (handy for setting up state); returns code and body.
    public func call(_ method: String, _ uri: String, body: Data = Data(), contentType: String = "application/json") -> (code: Int, body: Data) {
        let req = APIRequest(method: method, uri: uri, headers: ["content-type": contentType], body: body)
        switch core.serve(req, user: .internalAdmin, watchSink: nil) {
        case .object(let code, let json): return (code, json.data)
        case .json(let code, let bytes): return (code, Data(bytes))
        case .watch: return (400, Data())
        }
    }

    func direct<T>(_ body: () throws -> T) throws -> T {
        core.store.lock.lock()
        defer { core.store.lock.unlock() }
        do { return try body() } catch let e as APIError {
            throw Failure(code: e.code, reason: e.reason, message: e.message)
        }
    }
}
