// TokenReview and SubjectAccessReview, the webhook APIs a kubelet authenticates and authorizes its callers with,
// over real HTTPS: answers, the callers' own permission, validation and the counters tests use to check caching.

import Foundation
import Testing
@testable import EdgedTestSupport

private func tokenReview(_ token: String, audiences: [String]? = nil) -> [String: Any] {
    var spec: [String: Any] = ["token": token]
    if let audiences { spec["audiences"] = audiences }
    return ["apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec]
}

private func sar(user: String, groups: [String] = [], verb: String, resource: String, subresource: String? = nil,
                 name: String = "edge-1") -> [String: Any] {
    var attrs: [String: Any] = ["verb": verb, "resource": resource, "name": name, "group": "", "version": "v1"]
    if let subresource { attrs["subresource"] = subresource }
    return ["apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": ["user": user, "groups": groups, "resourceAttributes": attrs]]
}

private let tokenReviews = "/apis/authentication.k8s.io/v1/tokenreviews"
private let accessReviews = "/apis/authorization.k8s.io/v1/subjectaccessreviews"

@Suite struct KubeletReviewTests {
    @Test func tokenReviewAuthenticatesKnownTokensOnly() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        f.server.addToken("s3cr3t-token", user: "alice", groups: ["dev"], uid: "u-1")
        let node = try f.server.pki.issueClient(cn: "system:node:edge-1", orgs: ["system:nodes"])

        let ok = try f.request("POST", tokenReviews, tokenReview("s3cr3t-token", audiences: ["https://kubernetes.default.svc"]),
                               as: .cert(node))
        #expect(ok.code == 201)
        #expect(str(ok.json, "kind") == "TokenReview" && str(ok.json, "apiVersion") == "authentication.k8s.io/v1")
        #expect(value(ok.json, "status.authenticated") as? Bool == true)
        #expect(str(ok.json, "status.user.username") == "alice")
        #expect(str(ok.json, "status.user.uid") == "u-1")
        #expect(value(ok.json, "status.user.groups") as? [String] == ["dev", "system:authenticated"])
        #expect(value(ok.json, "status.audiences") as? [String] == ["https://kubernetes.default.svc"])

        let bad = try f.request("POST", tokenReviews, tokenReview("not-a-token"), as: .cert(node))
        #expect(bad.code == 201)
        #expect(value(bad.json, "status.authenticated") as? Bool == false)
        #expect(str(bad.json, "status.error")?.isEmpty == false)
        #expect(str(bad.json, "status.user.username") == nil)

        // Bootstrap tokens are reviewed like any other token the server knows.
        try f.server.addBootstrapToken(id: "abcdef", secret: "0123456789abcdef")
        let boot = try f.request("POST", tokenReviews, tokenReview("abcdef.0123456789abcdef"), as: .admin)
        #expect(str(boot.json, "status.user.username") == "system:bootstrap:abcdef")

        // Empty token: 422 like the real validation, and not counted.
        let empty = try f.request("POST", tokenReviews, tokenReview(""), as: .admin)
        #expect(empty.code == 422)
        #expect(f.server.tokenReviewCount == 3)
        #expect(f.server.subjectAccessReviewCount == 0)
    }

    @Test func staticTokensAuthenticateRequests() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        f.server.addToken("admin-token", user: "ops", groups: ["system:masters"])
        #expect(try f.request("GET", "/api/v1/namespaces", as: .token("admin-token")).code == 200)
        #expect(try f.request("GET", "/api/v1/namespaces", as: .token("other-token")).code == 401)
    }

    @Test func subjectAccessReviewFollowsGrants() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        f.server.grant(user: "alice", verb: "get", resource: "nodes", subresource: "proxy")
        f.server.grant(group: "monitoring", verb: "*", resource: "nodes", subresource: "stats")
        let caller = try f.server.pki.issueClient(cn: "system:node:edge-1", orgs: ["system:nodes"])

        func allowed(_ body: [String: Any]) throws -> Bool? {
            let r = try f.request("POST", accessReviews, body, as: .cert(caller))
            #expect(r.code == 201)
            #expect(str(r.json, "kind") == "SubjectAccessReview")
            return value(r.json, "status.allowed") as? Bool
        }
        #expect(try allowed(sar(user: "alice", verb: "get", resource: "nodes", subresource: "proxy")) == true)
        #expect(try allowed(sar(user: "alice", verb: "create", resource: "nodes", subresource: "proxy")) == false)
        #expect(try allowed(sar(user: "alice", verb: "get", resource: "nodes", subresource: "log")) == false)
        #expect(try allowed(sar(user: "alice", verb: "get", resource: "nodes")) == false)
        #expect(try allowed(sar(user: "bob", verb: "get", resource: "nodes", subresource: "proxy")) == false)
        #expect(try allowed(sar(user: "bob", groups: ["monitoring"], verb: "get", resource: "nodes", subresource: "stats")) == true)
        #expect(try allowed(sar(user: "root", groups: ["system:masters"], verb: "create", resource: "nodes", subresource: "proxy")) == true)

        // A refusal is "no opinion": allowed false, no denied flag.
        let no = try f.request("POST", accessReviews, sar(user: "bob", verb: "get", resource: "nodes", subresource: "proxy"), as: .admin)
        #expect(value(no.json, "status.denied") == nil)
        #expect(str(no.json, "status.reason") == nil)
        let yes = try f.request("POST", accessReviews, sar(user: "alice", verb: "get", resource: "nodes", subresource: "proxy"), as: .admin)
        #expect(str(yes.json, "status.reason")?.contains("alice") == true)
        #expect(str(yes.json, "spec.user") == "alice")

        // Non-resource paths: only system:masters.
        let nonResource: [String: Any] = ["kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                                          "spec": ["user": "alice", "nonResourceAttributes": ["path": "/healthz", "verb": "get"]]]
        #expect(try allowed(nonResource) == false)

        let records = f.server.subjectAccessReviews()
        #expect(f.server.subjectAccessReviewCount == 10)
        #expect(records.first == SubjectAccessReviewRecord(user: "alice", groups: [], verb: "get", resource: "nodes",
                                                           subresource: "proxy", name: "edge-1", namespace: "", path: "",
                                                           allowed: true))
        #expect(records.last?.path == "/healthz")
    }

    @Test func invalidSubjectAccessReviewsAre422() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let noUser: [String: Any] = ["kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                                     "spec": ["resourceAttributes": ["verb": "get", "resource": "nodes"]]]
        let r1 = try f.request("POST", accessReviews, noUser)
        #expect(r1.code == 422)
        #expect(str(r1.json, "reason") == "Invalid")
        let noAttrs: [String: Any] = ["kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                                      "spec": ["user": "alice"]]
        #expect(try f.request("POST", accessReviews, noAttrs).code == 422)
        #expect(try f.request("POST", accessReviews, "not json").code == 400)
        #expect(try f.request("GET", accessReviews).code == 405)
        #expect(f.server.subjectAccessReviewCount == 0)
    }

    @Test func onlyPermittedCallersMayCreateReviews() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let anon = try f.request("POST", tokenReviews, tokenReview("x"), as: .anonymous)
        #expect(anon.code == 403)
        #expect(str(anon.json, "message")?.contains("User \"system:anonymous\" cannot create resource \"tokenreviews\"") == true)
        #expect(try f.request("POST", accessReviews, sar(user: "a", verb: "get", resource: "nodes"), as: .anonymous).code == 403)
        // A client certificate of the cluster CA may (like a node's credentials); a bad certificate is 401.
        let someone = try f.server.pki.issueClient(cn: "kubelet-webhook", orgs: [])
        #expect(try f.request("POST", tokenReviews, tokenReview("x"), as: .cert(someone)).code == 201)
        let foreign = try TestPKI.makeCA().issueClient(cn: "intruder")
        #expect(try f.request("POST", tokenReviews, tokenReview("x"), as: .cert(foreign)).code == 401)
        // ServiceAccounts and other token users need a grant (like system:auth-delegator).
        try f.server.addBootstrapToken(id: "abcdef", secret: "0123456789abcdef")
        #expect(try f.request("POST", tokenReviews, tokenReview("x"), as: .token("abcdef.0123456789abcdef")).code == 403)
        f.server.grant(group: "system:bootstrappers", verb: "create", resource: "tokenreviews")
        #expect(try f.request("POST", tokenReviews, tokenReview("x"), as: .token("abcdef.0123456789abcdef")).code == 201)
        #expect(f.server.tokenReviewCount == 2)
    }
}
