import Testing
import EdgedKubeletAPI

/// kubelet's path → nodes/<subresource> and method → verb mapping (pkg/kubelet/server/auth.go): what a
/// SubjectAccessReview asks for decides who may read logs, exec into pods or read stats.
@Suite struct KubeletRequestAttributesTests {
    @Test(arguments: [
        ("GET", "/stats/summary", "get", "stats"),
        ("GET", "/stats", "get", "stats"),
        ("GET", "/statsfoo", "get", "proxy"),
        ("GET", "/metrics", "get", "metrics"),
        ("GET", "/metrics/resource", "get", "metrics"),
        ("GET", "/logs/syslog", "get", "log"),
        ("GET", "/spec/", "get", "spec"),
        ("HEAD", "/healthz", "get", "proxy"),
        ("GET", "/containerLogs/default/web/c", "get", "proxy"),
        ("POST", "/exec/default/web/c", "create", "proxy"),
        ("GET", "/exec/default/web/c", "get", "proxy"),
        ("POST", "/portForward/default/web", "create", "proxy"),
        ("PUT", "/pods", "update", "proxy"),
        ("PATCH", "/pods", "patch", "proxy"),
        ("DELETE", "/pods", "delete", "proxy"),
        ("post", "/run/default/web/c", "create", "proxy"),
    ])
    func mapsLikeKubelet(method: String, path: String, verb: String, subresource: String) {
        let a = KubeletRequestAttributes(method: method, path: path)
        #expect(a.verb == verb && a.subresource == subresource, "\(method) \(path) → \(a.verb) nodes/\(a.subresource)")
    }
}
