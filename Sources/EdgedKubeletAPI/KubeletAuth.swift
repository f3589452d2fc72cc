// Who is calling and whether they may: kubelet's webhook authentication (x509 client certificates, then bearer
// tokens through TokenReview) and webhook authorization (SubjectAccessReview on nodes/<subresource>).

import EdgedCore
import EdgedKube

/// An authenticated caller.
public struct KubeletUser: Sendable, Hashable {
    public var name: String
    public var groups: [String]
    public var uid: String

    public init(name: String, groups: [String], uid: String = "") {
        self.name = name
        self.groups = groups
        self.uid = uid
    }

    /// What unauthenticated callers are, when anonymous requests are allowed.
    public static let anonymous = KubeletUser(name: "system:anonymous", groups: ["system:unauthenticated"])

    /// The same user with system:authenticated among its groups, as kubelet's authenticator adds it.
    func authenticated() -> KubeletUser {
        var user = self
        if !user.groups.contains("system:authenticated") { user.groups.append("system:authenticated") }
        return user
    }
}

/// The attributes kubelet checks for a request: the verb from the HTTP method, resource nodes, name = the node,
/// subresource from the path (stats, metrics, log, spec; proxy for everything else).
public struct KubeletRequestAttributes: Sendable, Hashable {
    public var verb: String
    public var subresource: String

    public init(verb: String, subresource: String) {
        self.verb = verb
        self.subresource = subresource
    }

    /// kubelet's mapping (pkg/kubelet/server/auth.go): GET/HEAD get, POST create, PUT update, PATCH patch,
    /// DELETE delete; /stats/* stats, /metrics/* metrics, /logs/* log, /spec/* spec, anything else proxy.
    public init(method: String, path: String) {
        switch method.uppercased() {
        case "POST": verb = "create"
        case "PUT": verb = "update"
        case "PATCH": verb = "patch"
        case "DELETE": verb = "delete"
        default: verb = "get"
        }
        func under(_ prefix: String) -> Bool { path == prefix || path.hasPrefix(prefix + "/") }
        if under("/stats") {
            subresource = "stats"
        } else if under("/metrics") {
            subresource = "metrics"
        } else if under("/logs") {
            subresource = "log"
        } else if under("/spec") {
            subresource = "spec"
        } else {
            subresource = "proxy"
        }
    }
}

/// Why a request was not served: the HTTP status and a message for the Status body.
struct KubeletAuthFailure: Error, Sendable {
    var code: Int
    var message: String
}

/// TokenReview and SubjectAccessReview through the API server, with their answers cached.
final class KubeletAuthenticator: Sendable {
    private struct AccessKey: Hashable, Sendable {
        var user: KubeletUser
        var attributes: KubeletRequestAttributes
    }

    private let client: KubeClient
    private let nodeName: String
    private let authenticationTTL: Duration
    private let authorizedTTL: Duration
    private let unauthorizedTTL: Duration
    /// Token → the user, or nil when the API server said the token is not valid.
    private let tokens: ReviewCache<String, KubeletUser?>
    private let decisions: ReviewCache<AccessKey, Bool>

    init(client: KubeClient, config: KubeletServerConfig) {
        self.client = client
        self.nodeName = config.nodeName
        self.authenticationTTL = config.authenticationCacheTTL
        self.authorizedTTL = config.authorizedCacheTTL
        self.unauthorizedTTL = config.unauthorizedCacheTTL
        self.tokens = ReviewCache(capacity: config.cacheSize)
        self.decisions = ReviewCache(capacity: config.cacheSize)
    }

    /// The user a bearer token belongs to; nil when the API server does not accept the token.
    /// - Throws: `KubeletAuthFailure` 503 when the API server cannot be reached, 500 when it refuses the review.
    func authenticate(token: String) async throws(KubeletAuthFailure) -> KubeletUser? {
        if let cached = tokens.value(for: token) { return cached }
        let review = JSONValue.object([
            ("apiVersion", .string("authentication.k8s.io/v1")),
            ("kind", .string("TokenReview")),
            ("spec", .object([("token", .string(token))])),
        ])
        let resource = KubeResource.raw(group: "authentication.k8s.io", version: "v1", plural: "tokenreviews", namespaced: false)
        let answer = try await post(resource, review, what: "TokenReview", purpose: "check the bearer token")
        let user: KubeletUser?
        if answer[path: ["status", "authenticated"]] == .bool(true),
           let name = answer[path: ["status", "user", "username"]]?.stringValue, !name.isEmpty {
            var groups: [String] = []
            if case .array(let items)? = answer[path: ["status", "user", "groups"]] {
                groups = items.compactMap(\.stringValue)
            }
            let uid = answer[path: ["status", "user", "uid"]]?.stringValue ?? ""
            user = KubeletUser(name: name, groups: groups, uid: uid).authenticated()
        } else {
            user = nil
        }
        // A refused token is remembered only briefly: it may be about to become valid.
        let ttl = user == nil ? min(authenticationTTL, .seconds(10)) : authenticationTTL
        tokens.store(user, for: token, ttl: ttl)
        return user
    }

    /// Whether `user` may do `attributes` on this node (nodes/<subresource>, name = the node).
    /// - Throws: `KubeletAuthFailure` 503 when the API server cannot be reached, 500 when it refuses the review.
    func authorize(_ user: KubeletUser, _ attributes: KubeletRequestAttributes) async throws(KubeletAuthFailure) -> Bool {
        let key = AccessKey(user: user, attributes: attributes)
        if let cached = decisions.value(for: key) { return cached }
        var spec: [(String, JSONValue)] = [
            ("user", .string(user.name)),
            ("groups", .array(user.groups.map { .string($0) })),
            ("resourceAttributes", .object([
                ("verb", .string(attributes.verb)),
                ("resource", .string("nodes")),
                ("name", .string(nodeName)),
                ("subresource", .string(attributes.subresource)),
            ])),
        ]
        if !user.uid.isEmpty { spec.append(("uid", .string(user.uid))) }
        let review = JSONValue.object([
            ("apiVersion", .string("authorization.k8s.io/v1")),
            ("kind", .string("SubjectAccessReview")),
            ("spec", .object(spec)),
        ])
        let resource = KubeResource.raw(group: "authorization.k8s.io", version: "v1", plural: "subjectaccessreviews",
                                        namespaced: false)
        let answer = try await post(resource, review, what: "SubjectAccessReview", purpose: "authorize the request")
        let allowed = answer[path: ["status", "allowed"]] == .bool(true) && answer[path: ["status", "denied"]] != .bool(true)
        decisions.store(allowed, for: key, ttl: allowed ? authorizedTTL : unauthorizedTTL)
        return allowed
    }

    private func post(_ resource: KubeResource<JSONObject>, _ body: JSONValue, what: String,
                      purpose: String) async throws(KubeletAuthFailure) -> JSONValue {
        do {
            return try await client.create(resource, JSONObject(body)).value
        } catch {
            if let e = error as? KubeError, e.kind == .api {
                throw KubeletAuthFailure(code: 500, message: "cannot \(purpose): the API server at \(client.server) refused the \(what) (\(e.message)); the node's credentials need permission to create \(resource.plural).\(resource.group)")
            }
            throw KubeletAuthFailure(code: 503, message: "cannot \(purpose): the \(what) to the API server at \(client.server) failed (\(error)); try again when the API server is reachable")
        }
    }
}
