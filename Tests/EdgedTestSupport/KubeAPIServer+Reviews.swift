// Webhook authentication and authorization for kubelets: the TokenReview (authentication.k8s.io/v1) and
// SubjectAccessReview (authorization.k8s.io/v1) APIs a kubelet in webhook mode posts to, with the real request and
// response shapes, plus static tokens (like --token-auth-file) and a grant list standing in for RBAC rules.
//
// Copied from kube-apiserver: POST only (201 Created with the review echoed back and its status filled in);
// TokenReview answers with every authenticator the server has (static tokens, bootstrap tokens, ServiceAccount
// tokens), groups include system:authenticated, status.audiences is the request's audiences (or the API server's);
// an unknown token is status.authenticated false with an error, not an HTTP error. SubjectAccessReview needs
// spec.user or spec.groups and exactly one of resourceAttributes / nonResourceAttributes (422 otherwise), allows
// system:masters everything, and otherwise matches the grant list and RBAC (KubeAPIServer+RBAC.swift); a refusal is allowed:false with no reason (RBAC
// has no opinion), never denied:true.
// NOT copied: the callers' own permission is simplified: anyone authenticated except anonymous users, bootstrap
// tokens and ServiceAccounts may create reviews (the real one: RBAC, e.g. system:node or system:auth-delegator),
// the others only with a grant (create tokenreviews / subjectaccessreviews); no extra, no uid checks, no
// selfsubjectaccessreviews or localsubjectaccessreviews.

import Foundation
import NIOSSL
import Synchronization

/// One permission of the grant list: who (a user, a group, or both nil for everyone authenticated) may do what.
/// "*" matches any verb, resource or subresource; a nil subresource matches only requests without one.
public struct KubeGrant: Sendable, Equatable {
    public var user: String?
    public var group: String?
    public var verb: String
    public var resource: String
    public var subresource: String?
}

/// A SubjectAccessReview the server answered, for assertions.
public struct SubjectAccessReviewRecord: Sendable, Equatable, CustomStringConvertible {
    public let user: String
    public let groups: [String]
    public let verb: String
    public let resource: String
    public let subresource: String
    public let name: String
    public let namespace: String
    /// For non-resource requests.
    public let path: String
    public let allowed: Bool
    public var description: String {
        "\(user) \(verb) \(resource)\(subresource.isEmpty ? "" : "/" + subresource) \(name)\(path) → \(allowed)"
    }
}

/// The mutable kubelet-side state of the server: tokens, grants, review counters and the egress/kubelet-client
/// settings of the proxy (KubeAPIServer+Kubelet*.swift).
final class KubeletSideState: Sendable {
    struct State {
        var tokens: [String: (user: String, groups: [String], uid: String)] = [:]
        var grants: [KubeGrant] = []
        var tokenReviews = 0
        var subjectAccessReviews: [SubjectAccessReviewRecord] = []
        var egress: KubeAPIServer.Egress = .direct
        var kubeletTLS: NIOSSLContext?
    }
    let state = Mutex(State())
}

extension KubeAPIServer {
    /// Adds (or replaces) a static bearer token, like a line of --token-auth-file: it authenticates requests to this
    /// server and TokenReviews. `groups` get system:authenticated added.
    public func addToken(_ token: String, user: String, groups: [String] = [], uid: String = "") {
        core.kubeletSide.state.withLock { $0.tokens[token] = (user, groups, uid) }
    }

    /// Grants `verb` on `resource` (and `subresource`; nil: the resource itself) to a user, a group, or (both nil)
    /// everyone authenticated. Checked by SubjectAccessReviews (and by this server for creating reviews).
    public func grant(user: String? = nil, group: String? = nil, verb: String, resource: String, subresource: String? = nil) {
        let g = KubeGrant(user: user, group: group, verb: verb, resource: resource, subresource: subresource)
        core.kubeletSide.state.withLock { $0.grants.append(g) }
    }

    /// Removes every grant.
    public func revokeAllGrants() { core.kubeletSide.state.withLock { $0.grants.removeAll() } }

    /// TokenReviews answered so far (valid requests only).
    public var tokenReviewCount: Int { core.kubeletSide.state.withLock { $0.tokenReviews } }

    /// SubjectAccessReviews answered so far (valid requests only).
    public var subjectAccessReviewCount: Int { core.kubeletSide.state.withLock { $0.subjectAccessReviews.count } }

    /// Every SubjectAccessReview answered so far, in order.
    public func subjectAccessReviews() -> [SubjectAccessReviewRecord] {
        core.kubeletSide.state.withLock { $0.subjectAccessReviews }
    }
}

extension KubeAPIServerCore {
    /// The user of a static token (addToken).
    func staticTokenUser(_ token: String) -> KubeUser? {
        guard let t = kubeletSide.state.withLock({ $0.tokens[token] }) else { return nil }
        return KubeUser(name: t.user, groups: t.groups + ["system:authenticated"])
    }

    /// Whether the grant list (or system:masters) allows it.
    func granted(user: String, groups: [String], verb: String, resource: String, subresource: String?) -> Bool {
        if groups.contains("system:masters") { return true }
        let grants = kubeletSide.state.withLock { $0.grants }
        return grants.contains { g in
            if let u = g.user, u != user { return false }
            if let gr = g.group, !groups.contains(gr) { return false }
            if g.user == nil && g.group == nil && !groups.contains("system:authenticated") { return false }
            guard g.verb == "*" || g.verb == verb, g.resource == "*" || g.resource == resource else { return false }
            switch (g.subresource, subresource) {
            case (nil, nil): return true
            case ("*", _): return true
            case let (a?, b?): return a == b
            default: return false
            }
        }
    }

    /// Serves POST /apis/authentication.k8s.io/v1/tokenreviews and /apis/authorization.k8s.io/v1/subjectaccessreviews
    /// (the store lock is held); nil for any other path.
    func reviewRoute(_ req: APIRequest, path: String, user: KubeUser) throws -> APIReply? {
        let kind: String, resource: String, group: String
        switch path {
        case "/apis/authentication.k8s.io/v1/tokenreviews":
            (kind, resource, group) = ("TokenReview", "tokenreviews", "authentication.k8s.io")
        case "/apis/authorization.k8s.io/v1/subjectaccessreviews":
            (kind, resource, group) = ("SubjectAccessReview", "subjectaccessreviews", "authorization.k8s.io")
        default: return nil
        }
        guard req.method == "POST" else { throw APIError.methodNotAllowed(req.method) }
        let plainCaller = user.name != KubeUser.anonymous.name && !user.groups.contains("system:bootstrappers")
            && !user.name.hasPrefix("system:serviceaccount:")
        guard plainCaller || granted(user: user.name, groups: user.groups, verb: "create", resource: resource, subresource: nil) else {
            throw APIError(code: 403, reason: "Forbidden",
                           message: "\(resource).\(group) is forbidden: User \"\(user.name)\" cannot create resource \"\(resource)\" in API group \"\(group)\" at the cluster scope",
                           details: .object(["group": .string(group), "kind": .string(resource)]))
        }
        var body = try parseBody(req.body)
        if let k = body["kind"]?.string, k != kind {
            throw APIError.badRequest("the kind in the data (\(k)) does not match the expected kind (\(kind))")
        }
        body["kind"] = .string(kind)
        body["apiVersion"] = .string("\(group)/v1")
        var meta = body["metadata"]?.object ?? [:]
        meta["creationTimestamp"] = .null
        body["metadata"] = .object(meta)
        body["status"] = kind == "TokenReview" ? try tokenReviewStatus(body) : try subjectAccessReviewStatus(body)
        return .object(code: 201, body)
    }

    private func tokenReviewStatus(_ body: KJSON) throws -> KJSON {
        guard let token = body[path: ["spec", "token"]]?.string, !token.isEmpty else {
            throw APIError.invalid(kind: "TokenReview", name: "", group: "authentication.k8s.io",
                                   [.init(reason: "FieldValueRequired", field: "spec.token", message: "Required value")])
        }
        kubeletSide.state.withLock { $0.tokenReviews += 1 }
        guard let u = tokenUser(token) else {
            return .object(["authenticated": .bool(false), "user": .object([:]),
                            "error": .string("[invalid bearer token, token lookup failed]")])
        }
        let uid = kubeletSide.state.withLock { $0.tokens[token]?.uid } ?? ""
        var userDoc: KJSON = .object(["username": .string(u.name), "groups": .array(u.groups.map(KJSON.string))])
        if !uid.isEmpty { userDoc["uid"] = .string(uid) }
        let audiences = body[path: ["spec", "audiences"]]?.array.flatMap { $0.isEmpty ? nil : $0 }
            ?? [.string("https://kubernetes.default.svc.cluster.local")]
        return .object(["authenticated": .bool(true), "user": userDoc, "audiences": .array(audiences)])
    }

    private func subjectAccessReviewStatus(_ body: KJSON) throws -> KJSON {
        let spec = body["spec"] ?? .object([:])
        let user = spec["user"]?.string ?? ""
        let groups = (spec["groups"]?.array ?? []).compactMap(\.string)
        let ra = spec["resourceAttributes"], nra = spec["nonResourceAttributes"]
        var causes: [APIError.Cause] = []
        if user.isEmpty && groups.isEmpty {
            causes.append(.init(reason: "FieldValueRequired", field: "spec.user", message: "Required value: at least one of user or group must be specified"))
        }
        if ra != nil && nra != nil {
            causes.append(.init(reason: "FieldValueInvalid", field: "spec.nonResourceAttributes",
                                message: "Invalid value: \"null\": cannot be specified in combination with resourceAttributes"))
        }
        if ra == nil && nra == nil {
            causes.append(.init(reason: "FieldValueRequired", field: "spec.resourceAttributes",
                                message: "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified"))
        }
        if !causes.isEmpty { throw APIError.invalid(kind: "SubjectAccessReview", name: "", group: "authorization.k8s.io", causes) }
        func s(_ v: KJSON?, _ k: String) -> String { v?[k]?.string ?? "" }
        let allowed: Bool
        let record: SubjectAccessReviewRecord
        if let ra {
            let sub = s(ra, "subresource")
            allowed = granted(user: user, groups: groups, verb: s(ra, "verb"), resource: s(ra, "resource"),
                              subresource: sub.isEmpty ? nil : sub)
                || rbacAllows(user: user, groups: groups, verb: s(ra, "verb"), group: s(ra, "group"), resource: s(ra, "resource"),
                              subresource: sub.isEmpty ? nil : sub, name: s(ra, "name"), namespace: s(ra, "namespace"))
            record = SubjectAccessReviewRecord(user: user, groups: groups, verb: s(ra, "verb"), resource: s(ra, "resource"),
                                               subresource: sub, name: s(ra, "name"), namespace: s(ra, "namespace"),
                                               path: "", allowed: allowed)
        } else {
            allowed = groups.contains("system:masters")
            record = SubjectAccessReviewRecord(user: user, groups: groups, verb: s(nra, "verb"), resource: "", subresource: "",
                                               name: "", namespace: "", path: s(nra, "path"), allowed: allowed)
        }
        kubeletSide.state.withLock { $0.subjectAccessReviews.append(record) }
        guard allowed else { return .object(["allowed": .bool(false)]) }
        let who = groups.contains("system:masters") ? "Group \"system:masters\"" : "User \"\(user)\""
        return .object(["allowed": .bool(true),
                        "reason": .string("RBAC: allowed by ClusterRoleBinding \"edged-test-grant\" of ClusterRole \"edged-test-grant\" to \(who)")])
    }
}
