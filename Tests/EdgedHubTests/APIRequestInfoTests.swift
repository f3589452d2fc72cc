import EdgedHub
import Testing

/// One expected parse: method + target → the fields that matter (nil info = not a resource request).
struct RequestCase: Sendable, CustomStringConvertible {
    var method: String
    var target: String
    var verb: APIRequestInfo.Verb?
    var group = ""
    var version = "v1"
    var resource = ""
    var namespace: String?
    var name: String?
    var subresource: String?
    var description: String { "\(method) \(target)" }
}

@Suite struct APIRequestInfoTests {
    static let resourceCases: [RequestCase] = [
        // Core group, namespaced: list / get / watch by method, name presence and query.
        RequestCase(method: "GET", target: "/api/v1/namespaces/default/pods", verb: .list, resource: "pods", namespace: "default"),
        RequestCase(method: "GET", target: "/api/v1/namespaces/default/pods/p1", verb: .get, resource: "pods", namespace: "default", name: "p1"),
        RequestCase(method: "HEAD", target: "/api/v1/namespaces/default/pods/p1", verb: .get, resource: "pods", namespace: "default", name: "p1"),
        RequestCase(method: "GET", target: "/api/v1/namespaces/default/pods?watch=1", verb: .watch, resource: "pods", namespace: "default"),
        RequestCase(method: "GET", target: "/api/v1/namespaces/default/pods?watch=true&resourceVersion=10", verb: .watch, resource: "pods", namespace: "default"),
        RequestCase(method: "GET", target: "/api/v1/namespaces/default/pods?watch=TRUE", verb: .watch, resource: "pods", namespace: "default"),
        RequestCase(method: "GET", target: "/api/v1/namespaces/default/pods?watch=false", verb: .list, resource: "pods", namespace: "default"),
        RequestCase(method: "GET", target: "/api/v1/namespaces/default/pods?watch=0", verb: .list, resource: "pods", namespace: "default"),
        RequestCase(method: "GET", target: "/api/v1/namespaces/default/pods?watch=F", verb: .list, resource: "pods", namespace: "default"),
        // A get of one object stays a get even with ?watch (kube-apiserver decides watch only for collections).
        RequestCase(method: "GET", target: "/api/v1/namespaces/default/pods/p1?watch=true", verb: .get, resource: "pods", namespace: "default", name: "p1"),
        // All namespaces, cluster-scoped.
        RequestCase(method: "GET", target: "/api/v1/pods", verb: .list, resource: "pods"),
        RequestCase(method: "GET", target: "/api/v1/pods?watch=1&allowWatchBookmarks=true", verb: .watch, resource: "pods"),
        RequestCase(method: "GET", target: "/api/v1/nodes/n1", verb: .get, resource: "nodes", name: "n1"),
        RequestCase(method: "GET", target: "/api/v1/nodes", verb: .list, resource: "nodes"),
        // Write verbs.
        RequestCase(method: "POST", target: "/api/v1/namespaces/default/events", verb: .create, resource: "events", namespace: "default"),
        RequestCase(method: "PUT", target: "/api/v1/namespaces/default/configmaps/c", verb: .update, resource: "configmaps", namespace: "default", name: "c"),
        RequestCase(method: "PATCH", target: "/api/v1/namespaces/default/pods/p1/status", verb: .patch, resource: "pods", namespace: "default", name: "p1", subresource: "status"),
        RequestCase(method: "PUT", target: "/api/v1/nodes/n1/status", verb: .update, resource: "nodes", name: "n1", subresource: "status"),
        RequestCase(method: "DELETE", target: "/api/v1/namespaces/default/pods/p1", verb: .delete, resource: "pods", namespace: "default", name: "p1"),
        RequestCase(method: "DELETE", target: "/api/v1/namespaces/default/pods", verb: .deleteCollection, resource: "pods", namespace: "default"),
        RequestCase(method: "delete", target: "/api/v1/namespaces/default/pods", verb: .deleteCollection, resource: "pods", namespace: "default"),
        // Subresources.
        RequestCase(method: "GET", target: "/api/v1/namespaces/default/pods/p1/log?container=c&follow=true", verb: .get, resource: "pods", namespace: "default", name: "p1", subresource: "log"),
        RequestCase(method: "POST", target: "/api/v1/namespaces/default/pods/p1/eviction", verb: .create, resource: "pods", namespace: "default", name: "p1", subresource: "eviction"),
        RequestCase(method: "POST", target: "/api/v1/namespaces/default/serviceaccounts/default/token", verb: .create, resource: "serviceaccounts", namespace: "default", name: "default", subresource: "token"),
        RequestCase(method: "POST", target: "/api/v1/namespaces/default/pods/p1/exec?command=sh&stdin=true", verb: .connect, resource: "pods", namespace: "default", name: "p1", subresource: "exec"),
        RequestCase(method: "GET", target: "/api/v1/namespaces/default/pods/p1/exec?command=ls", verb: .connect, resource: "pods", namespace: "default", name: "p1", subresource: "exec"),
        RequestCase(method: "POST", target: "/api/v1/namespaces/default/pods/p1/attach", verb: .connect, resource: "pods", namespace: "default", name: "p1", subresource: "attach"),
        RequestCase(method: "POST", target: "/api/v1/namespaces/default/pods/p1/portforward", verb: .connect, resource: "pods", namespace: "default", name: "p1", subresource: "portforward"),
        RequestCase(method: "GET", target: "/api/v1/namespaces/default/services/s:http/proxy/metrics", verb: .connect, resource: "services", namespace: "default", name: "s:http", subresource: "proxy"),
        RequestCase(method: "GET", target: "/api/v1/nodes/n1/proxy/stats/summary", verb: .connect, resource: "nodes", name: "n1", subresource: "proxy"),
        // Namespaces as a resource: the Namespace object is cluster-scoped; its own subresources stay on it.
        RequestCase(method: "GET", target: "/api/v1/namespaces", verb: .list, resource: "namespaces"),
        RequestCase(method: "GET", target: "/api/v1/namespaces?watch=1", verb: .watch, resource: "namespaces"),
        RequestCase(method: "GET", target: "/api/v1/namespaces/foo", verb: .get, resource: "namespaces", name: "foo"),
        RequestCase(method: "DELETE", target: "/api/v1/namespaces/foo", verb: .delete, resource: "namespaces", name: "foo"),
        RequestCase(method: "PUT", target: "/api/v1/namespaces/foo/status", verb: .update, resource: "namespaces", name: "foo", subresource: "status"),
        RequestCase(method: "PUT", target: "/api/v1/namespaces/foo/finalize", verb: .update, resource: "namespaces", name: "foo", subresource: "finalize"),
        RequestCase(method: "GET", target: "/api/v1/namespaces/foo/pods", verb: .list, resource: "pods", namespace: "foo"),
        RequestCase(method: "GET", target: "/api/v1/namespaces/foo/pods/bar", verb: .get, resource: "pods", namespace: "foo", name: "bar"),
        // Named groups.
        RequestCase(method: "GET", target: "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", verb: .list, group: "discovery.k8s.io", resource: "endpointslices", namespace: "default"),
        RequestCase(method: "GET", target: "/apis/discovery.k8s.io/v1/endpointslices?watch=true", verb: .watch, group: "discovery.k8s.io", resource: "endpointslices"),
        RequestCase(method: "PUT", target: "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1", verb: .update, group: "coordination.k8s.io", resource: "leases", namespace: "kube-node-lease", name: "n1"),
        RequestCase(method: "GET", target: "/apis/apps/v1beta2/deployments", verb: .list, group: "apps", version: "v1beta2", resource: "deployments"),
        RequestCase(method: "PUT", target: "/apis/certificates.k8s.io/v1/certificatesigningrequests/csr-1/approval", verb: .update, group: "certificates.k8s.io", resource: "certificatesigningrequests", name: "csr-1", subresource: "approval"),
        // Legacy /watch/ prefix: a watch with or without a name.
        RequestCase(method: "GET", target: "/api/v1/watch/pods", verb: .watch, resource: "pods"),
        RequestCase(method: "GET", target: "/api/v1/watch/namespaces/default/pods", verb: .watch, resource: "pods", namespace: "default"),
        RequestCase(method: "GET", target: "/api/v1/watch/namespaces/default/pods/p1", verb: .watch, resource: "pods", namespace: "default", name: "p1"),
        RequestCase(method: "GET", target: "/api/v1/watch/namespaces/foo", verb: .watch, resource: "namespaces", name: "foo"),
        RequestCase(method: "GET", target: "/apis/apps/v1/watch/namespaces/x/deployments", verb: .watch, group: "apps", resource: "deployments", namespace: "x"),
        // Legacy /proxy/ prefix: never a subresource.
        RequestCase(method: "GET", target: "/api/v1/proxy/namespaces/default/pods/p1/status", verb: .connect, resource: "pods", namespace: "default", name: "p1"),
        // Extra parts after the subresource are the subresource's own business.
        RequestCase(method: "GET", target: "/api/v1/namespaces/default/pods/p1/status/extra/stuff", verb: .get, resource: "pods", namespace: "default", name: "p1", subresource: "status"),
        // Trailing and doubled leading slashes, percent-encoding, absolute form, fragments.
        RequestCase(method: "GET", target: "/api/v1/namespaces/default/pods/", verb: .list, resource: "pods", namespace: "default"),
        RequestCase(method: "GET", target: "//api/v1/nodes/n1", verb: .get, resource: "nodes", name: "n1"),
        RequestCase(method: "GET", target: "/api/v1/namespaces/default/configmaps/a%2Eb", verb: .get, resource: "configmaps", namespace: "default", name: "a.b"),
        RequestCase(method: "GET", target: "https://10.0.0.1:6443/api/v1/nodes/n1?watch=0", verb: .get, resource: "nodes", name: "n1"),
        RequestCase(method: "GET", target: "/api/v1/nodes#frag", verb: .list, resource: "nodes"),
        // A namespace named like a namespace subresource name is a namespace only at the top.
        RequestCase(method: "GET", target: "/api/v1/namespaces/status/pods", verb: .list, resource: "pods", namespace: "status"),
    ]

    @Test(arguments: resourceCases)
    func resourceRequests(_ c: RequestCase) throws {
        let info = try #require(APIRequestInfo(method: c.method, target: c.target), "\(c) should be a resource request")
        #expect(info.verb == c.verb)
        #expect(info.group == c.group)
        #expect(info.version == c.version)
        #expect(info.resource == c.resource)
        #expect(info.namespace == c.namespace)
        #expect(info.name == c.name)
        #expect(info.subresource == c.subresource)
    }

    static let nonResourceTargets: [(String, String)] = [
        ("GET", "/"), ("GET", "/version"), ("GET", "/api"), ("GET", "/api/v1"), ("GET", "/apis"),
        ("GET", "/apis/apps"), ("GET", "/apis/apps/v1"), ("GET", "/healthz"), ("GET", "/readyz?verbose"),
        ("GET", "/openapi/v2"), ("GET", "/openapi/v3/apis/apps/v1"), ("GET", "/metrics"), ("GET", "/livez/ping"),
        ("GET", "/.well-known/openid-configuration"), ("GET", ""),
        // A special verb with nothing after it.
        ("GET", "/api/v1/watch"), ("GET", "/apis/apps/v1/watch"), ("GET", "/api/v1/proxy"),
        // Methods that name no verb.
        ("OPTIONS", "/api/v1/pods"), ("CONNECT", "/api/v1/pods"), ("BREW", "/api/v1/pods"),
        // Targets the API server refuses: bad percent-encoding, empty segments.
        ("GET", "/api/v1/namespaces/default/pods/%zz"), ("GET", "/api/v1/namespaces/default/pods/%4"),
        ("GET", "/api/v1/namespaces//pods"), ("GET", "/api/v1/nodes/%ff"),
    ]

    @Test(arguments: nonResourceTargets)
    func nonResourceRequests(_ method: String, _ target: String) {
        #expect(APIRequestInfo(method: method, target: target) == nil)
    }

    @Test func resourceKeyNamesTheStoreResource() throws {
        let pods = try #require(APIRequestInfo(method: "GET", target: "/api/v1/namespaces/default/pods"))
        #expect(pods.resourceKey == "/v1/pods")
        let slices = try #require(APIRequestInfo(method: "GET", target: "/apis/discovery.k8s.io/v1/endpointslices"))
        #expect(slices.resourceKey == "discovery.k8s.io/v1/endpointslices")
    }

    @Test func queryIsDecodedLikeGo() throws {
        let target = "/api/v1/namespaces/kube-system/pods?labelSelector=app%3Dweb%2Ctier+in+%28a%2Cb%29"
            + "&fieldSelector=spec.nodeName%3Dnode-1&resourceVersion=123&timeoutSeconds=300&allowWatchBookmarks=true"
            + "&watch=1&limit=500&limit=7&flag&bad=%zz&empty="
        let info = try #require(APIRequestInfo(method: "GET", target: target))
        #expect(info.verb == .watch)
        #expect(info.labelSelector == "app=web,tier in (a,b)")
        #expect(info.fieldSelector == "spec.nodeName=node-1")
        #expect(info.resourceVersion == "123")
        #expect(info.timeoutSeconds == 300)
        #expect(info.allowWatchBookmarks)
        #expect(info.query["limit"] == "500")  // the first of repeated keys, like url.Values.Get
        #expect(info.query["flag"] == "")
        #expect(info.query["empty"] == "")
        #expect(info.query["bad"] == nil)       // a pair that does not decode is dropped
    }

    @Test func queryDefaultsAndOddValues() throws {
        let plain = try #require(APIRequestInfo(method: "GET", target: "/api/v1/pods"))
        #expect(plain.query.isEmpty)
        #expect(plain.labelSelector == nil && plain.fieldSelector == nil && plain.resourceVersion == nil)
        #expect(!plain.allowWatchBookmarks)
        #expect(plain.timeoutSeconds == nil)
        let odd = try #require(APIRequestInfo(method: "GET", target: "/api/v1/pods?watch=1&timeoutSeconds=abc&allowWatchBookmarks=false"))
        #expect(odd.timeoutSeconds == nil)
        #expect(!odd.allowWatchBookmarks)
        let utf8 = try #require(APIRequestInfo(method: "GET", target: "/api/v1/pods?labelSelector=k%3D%C3%A9t%C3%A9"))
        #expect(utf8.labelSelector == "k=été")
        // Percent-encoded invalid UTF-8 in the query is dropped, not mangled.
        let badUTF8 = try #require(APIRequestInfo(method: "GET", target: "/api/v1/pods?labelSelector=%ff"))
        #expect(badUTF8.labelSelector == nil)
    }

    static let userAgents: [(String?, String)] = [
        ("kube-proxy/v1.31.0 (linux/amd64) kubernetes/abc", "kube-proxy"),
        ("kubectl/v1.31.1 (linux/amd64) kubernetes/948afe5", "kubectl"),
        ("edged/0.1.0 (linux/amd64) kubelet/v1.31.0", "edged"),
        ("CoreDNS/1.11.1 (linux/arm64)", "coredns"),
        ("flanneld/v0.25.1", "flanneld"),
        ("curl", "curl"),
        ("curl 8.5", "curl"),
        ("  kubelet/v1.31.0", "kubelet"),
        (nil, "unknown"),
        ("", "unknown"),
        ("   ", "unknown"),
        ("/v1.0", "unknown"),
    ]

    @Test(arguments: userAgents)
    func componentFromUserAgent(_ ua: String?, _ component: String) {
        #expect(hubComponent(userAgent: ua) == component)
    }

    @Test func componentIsBounded() {
        let long = String(repeating: "x", count: 10_000) + "/1.0"
        #expect(hubComponent(userAgent: long).count == 128)
    }
}
