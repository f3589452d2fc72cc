@testable import EdgedKube
import Testing

@Suite struct KubeErrorTests {
    static func status(_ code: Int, _ reason: String, _ message: String) -> [UInt8] {
        Array(#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"\#(message)","reason":"\#(reason)","code":\#(code)}"#.utf8)
    }

    @Test func mapsStatusReasons() {
        let nf = KubeError.fromResponse(status: 404, body: Self.status(404, "NotFound", "pods \\\"p\\\" not found"),
                                        what: "GET https://s/api/v1/namespaces/d/pods/p", server: "https://s")
        #expect(nf.isNotFound && !nf.isConflict && !nf.isGone)
        #expect(nf.message == "GET https://s/api/v1/namespaces/d/pods/p: 404 NotFound: pods \"p\" not found")

        let exists = KubeError.fromResponse(status: 409, body: Self.status(409, "AlreadyExists", "exists"), what: "POST x", server: "s")
        #expect(exists.isAlreadyExists && !exists.isConflict)
        let conflict = KubeError.fromResponse(status: 409, body: Self.status(409, "Conflict", "modified"), what: "PUT x", server: "s")
        #expect(conflict.isConflict && !conflict.isAlreadyExists)

        let gone = KubeError.fromResponse(status: 410, body: Self.status(410, "Expired", "too old"), what: "GET x", server: "s")
        #expect(gone.isGone)
        #expect(KubeError.fromWatchStatus(Status(message: "too old", reason: "Expired", code: 410), what: "watch pods").isGone)

        let unauthorized = KubeError.fromResponse(status: 401, body: Self.status(401, "Unauthorized", "Unauthorized"),
                                                  what: "GET https://s/api/v1/nodes/n", server: "https://s")
        #expect(unauthorized.isUnauthorized)
        #expect(unauthorized.message.contains("credentials rejected by https://s"))
        #expect(unauthorized.message.contains("re-run edgectl join"))

        let forbidden = KubeError.fromResponse(status: 403, body: Self.status(403, "Forbidden", "nope"), what: "GET x", server: "s")
        #expect(forbidden.isForbidden)
        #expect(forbidden.message.contains("lacks permission"))

        let throttled = KubeError.fromResponse(status: 429, body: Array(#"{"kind":"Status","code":429,"reason":"TooManyRequests","details":{"retryAfterSeconds":3}}"#.utf8),
                                               what: "GET x", server: "s")
        #expect(throttled.isTooManyRequests)
        #expect(throttled.retryAfterSeconds == 3)
    }

    @Test func nonStatusBodyKeepsTheTextAndADefaultReason() {
        let e = KubeError.fromResponse(status: 503, body: Array("upstream down".utf8), what: "GET x", server: "s")
        #expect(e.reason == "ServiceUnavailable")
        #expect(e.status == nil)
        #expect(e.message == "GET x: 503 ServiceUnavailable: upstream down")
        #expect(!e.isTransport)
    }
}
