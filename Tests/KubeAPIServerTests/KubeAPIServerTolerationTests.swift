// Pod toleration validation of the test API server (KubeAPIServer+Tolerations.swift), over real HTTPS: an update may
// change an existing toleration's tolerationSeconds (raise, lower, remove, add) and add tolerations, through PUT and
// every PATCH type; any other change to an existing toleration, or an invalid toleration, is 422 Invalid with the
// real field paths and messages.

import Foundation
import Testing
@testable import EdgedTestSupport

private let unreachable = "node.kubernetes.io/unreachable"
private let notReady = "node.kubernetes.io/not-ready"
private let podPath = "/api/v1/namespaces/default/pods/web"
private let forbiddenMessage = "Forbidden: existing toleration can not be modified except its tolerationSeconds"

/// A pod bound to n1 with the two default tolerations (300 s) plus one of its own.
private func startWithPod() async throws -> APIFixture {
    let f = try await APIFixture()
    let r = try f.request("POST", "/api/v1/namespaces/default/pods", [
        "metadata": ["name": "web"],
        "spec": ["nodeName": "n1", "containers": [["name": "c", "image": "busybox:1.36"]],
                 "tolerations": [["key": "example.com/dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"]]],
    ])
    #expect(r.code == 201)
    return f
}

private func tolerations(_ f: APIFixture) -> [[String: Any]] {
    value(f.server.objectJSON(podPath) ?? [:], "spec.tolerations") as? [[String: Any]] ?? []
}

/// The tolerationSeconds of the toleration of `key` ("forever" without one, "none" without the toleration).
private func seconds(_ f: APIFixture, _ key: String) -> String {
    guard let t = tolerations(f).first(where: { $0["key"] as? String == key }) else { return "none" }
    return (t["tolerationSeconds"] as? Int).map(String.init) ?? "forever"
}

/// The stored tolerations with `change` applied to the one of `key`.
private func edited(_ f: APIFixture, _ key: String, _ change: (inout [String: Any]) -> Void) -> [[String: Any]] {
    tolerations(f).map { t in
        var t = t
        if t["key"] as? String == key { change(&t) }
        return t
    }
}

private func causes(_ json: [String: Any]) -> [[String: String]] {
    (value(json, "details.causes") as? [[String: Any]] ?? []).map { c in
        c.compactMapValues { $0 as? String }
    }
}

@Suite struct KubeAPIServerTolerationTests {
    @Test func tolerationSecondsMayChangeThroughEveryWrite() async throws {
        let f = try await startWithPod()
        defer { Task { await f.close() } }
        #expect(seconds(f, unreachable) == "300")

        // PUT of the whole pod: raised.
        var pod = try #require(f.server.objectJSON(podPath))
        pod["spec"] = (pod["spec"] as? [String: Any] ?? [:]).merging(["tolerations": edited(f, unreachable) { $0["tolerationSeconds"] = 86400 }]) { $1 }
        #expect(try f.request("PUT", podPath, pod).code == 200)
        #expect(seconds(f, unreachable) == "86400")

        // Merge patch (the list is replaced): removed, so the pod tolerates the taint forever.
        let merge = try f.request("PATCH", podPath, ["spec": ["tolerations": edited(f, unreachable) { $0["tolerationSeconds"] = nil }]],
                                  contentType: "application/merge-patch+json")
        #expect(merge.code == 200)
        #expect(seconds(f, unreachable) == "forever")

        // Strategic merge patch (tolerations have no merge key: replaced too): set again, lower than before.
        let strategic = try f.request("PATCH", podPath, ["spec": ["tolerations": edited(f, unreachable) { $0["tolerationSeconds"] = 10 }]],
                                      contentType: "application/strategic-merge-patch+json")
        #expect(strategic.code == 200)
        #expect(seconds(f, unreachable) == "10")

        // JSON patch on the one field; the validation has no lower bound (0 and below mean "evict at once").
        let i = try #require(tolerations(f).firstIndex { $0["key"] as? String == notReady })
        let json = try f.request("PATCH", podPath, [["op": "replace", "path": "/spec/tolerations/\(i)/tolerationSeconds", "value": 0]],
                                 contentType: "application/json-patch+json")
        #expect(json.code == 200)
        #expect(seconds(f, notReady) == "0")

        // Adding a toleration is allowed; the old ones stay as they were.
        let added = try f.request("PATCH", podPath, [["op": "add", "path": "/spec/tolerations/-",
                                                      "value": ["key": "example.com/maintenance", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60]]],
                                  contentType: "application/json-patch+json")
        #expect(added.code == 200)
        #expect(seconds(f, "example.com/maintenance") == "60")
        #expect(tolerations(f).count == 4)
        #expect(int(f.server.objectJSON(podPath) ?? [:], "metadata.generation") == 6)
    }

    @Test func changingOrRemovingAnExistingTolerationIsForbidden() async throws {
        let f = try await startWithPod()
        defer { Task { await f.close() } }
        let before = tolerations(f)
        let rv = str(f.server.objectJSON(podPath) ?? [:], "metadata.resourceVersion")
        func expectForbidden(_ r: (code: Int, json: [String: Any]), _ what: String) {
            #expect(r.code == 422, "\(what)")
            #expect(str(r.json, "reason") == "Invalid", "\(what)")
            #expect(str(r.json, "message") == "Pod \"web\" is invalid: spec.tolerations: \(forbiddenMessage)", "\(what)")
            #expect(causes(r.json) == [["reason": "FieldValueForbidden", "field": "spec.tolerations", "message": forbiddenMessage]], "\(what)")
        }
        // PUT changing the value of the pod's own toleration.
        var pod = try #require(f.server.objectJSON(podPath))
        pod["spec"] = (pod["spec"] as? [String: Any] ?? [:]).merging(["tolerations": edited(f, "example.com/dedicated") {
            $0["value"] = "cloud"
        }]) { $1 }
        expectForbidden(try f.request("PUT", podPath, pod), "PUT with a changed value")
        // Merge patch that leaves the pod's own toleration out (DefaultTolerationSeconds brings back only its two).
        expectForbidden(try f.request("PATCH", podPath, ["spec": ["tolerations": before.filter { $0["key"] as? String != "example.com/dedicated" }]],
                                      contentType: "application/merge-patch+json"), "merge patch without one")
        // Strategic merge patch changing a value.
        expectForbidden(try f.request("PATCH", podPath, ["spec": ["tolerations": edited(f, "example.com/dedicated") { $0["value"] = "cloud" }]],
                                      contentType: "application/strategic-merge-patch+json"), "strategic patch with a changed value")
        // JSON patch: the operator (Exists → Equal with the same empty value) and a removal.
        let i = try #require(before.firstIndex { $0["key"] as? String == unreachable })
        expectForbidden(try f.request("PATCH", podPath, [["op": "replace", "path": "/spec/tolerations/\(i)/operator", "value": "Equal"]],
                                      contentType: "application/json-patch+json"), "json patch of the operator")
        let own = try #require(before.firstIndex { $0["key"] as? String == "example.com/dedicated" })
        expectForbidden(try f.request("PATCH", podPath, [["op": "remove", "path": "/spec/tolerations/\(own)"]],
                                      contentType: "application/json-patch+json"), "json patch removing one")
        // Replacing the whole list with a forever toleration of everything does not keep the old ones either.
        expectForbidden(try f.request("PATCH", podPath, ["spec": ["tolerations": [["operator": "Exists"]]]],
                                      contentType: "application/merge-patch+json"), "a catch-all instead")
        #expect(tolerations(f).count == before.count)
        #expect(str(f.server.objectJSON(podPath) ?? [:], "metadata.resourceVersion") == rv)
    }

    /// DefaultTolerationSeconds runs on updates too (admission.NewHandler(Create, Update)): an update that drops one
    /// of the two default tolerations, or turns it into another, gets it back with the default seconds, so the old
    /// toleration is still there and the update is accepted — as the real server answered (checked on v1.36).
    @Test func anUpdateThatDropsADefaultTolerationGetsItBack() async throws {
        let f = try await startWithPod()
        defer { Task { await f.close() } }
        let merge = try f.request("PATCH", podPath, ["spec": ["tolerations": tolerations(f).filter { $0["key"] as? String != notReady }]],
                                  contentType: "application/merge-patch+json")
        #expect(merge.code == 200)
        #expect(seconds(f, notReady) == "300")
        #expect(tolerations(f).last?["key"] as? String == notReady, "appended again at the end")
        // The effect of the unreachable one changed to NoSchedule: a NoExecute one is added back beside it.
        let changed = try f.request("PATCH", podPath, ["spec": ["tolerations": edited(f, unreachable) {
            $0["effect"] = "NoSchedule"; $0["tolerationSeconds"] = nil
        }]], contentType: "application/merge-patch+json")
        #expect(changed.code == 200)
        let unreachables = tolerations(f).filter { $0["key"] as? String == unreachable }
        #expect(unreachables.map { $0["effect"] as? String ?? "" }.sorted() == ["NoExecute", "NoSchedule"], "\(unreachables)")
        // Not on subresources: a status write leaves the spec alone.
        #expect(try f.request("PATCH", podPath + "/status", ["status": ["phase": "Running"]],
                              contentType: "application/merge-patch+json").code == 200)
        #expect(tolerations(f).count == 4)
    }

    @Test func invalidTolerationsAreRefusedAtCreate() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        func create(_ tolerations: [[String: Any]]) throws -> (code: Int, json: [String: Any]) {
            try f.request("POST", "/api/v1/namespaces/default/pods", [
                "metadata": ["name": "bad"],
                "spec": ["containers": [["name": "c", "image": "busybox:1.36"]], "tolerations": tolerations],
            ])
        }
        let cases: [([String: Any], String, String, String)] = [
            (["key": "example.com/x", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 30],
             "FieldValueInvalid", "spec.tolerations[0].effect", "Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set"),
            (["key": "example.com/x", "operator": "Exists", "value": "yes"],
             "FieldValueInvalid", "spec.tolerations[0].operator", "Invalid value: \"yes\": value must be empty when `operator` is 'Exists'"),
            (["operator": "Equal", "value": "x"],
             "FieldValueInvalid", "spec.tolerations[0].operator", "Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\""),
            (["key": "example.com/x", "operator": "Gt", "value": "3"],
             "FieldValueNotSupported", "spec.tolerations[0].operator", "Unsupported value: \"Gt\": supported values: \"Equal\", \"Exists\""),
            (["key": "example.com/x", "operator": "Exists", "effect": "NoEvict"],
             "FieldValueNotSupported", "spec.tolerations[0].effect", "Unsupported value: \"NoEvict\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""),
            (["key": "example.com/x", "operator": "Equal", "value": "not ok"],
             "FieldValueInvalid", "spec.tolerations[0].operator", "Invalid value: \"not ok\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"),
            (["key": "Example.com/x", "operator": "Exists"],
             "FieldValueInvalid", "spec.tolerations[0].key", "Invalid value: \"Example.com/x\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
            (["key": "a/b/c", "operator": "Exists"],
             "FieldValueInvalid", "spec.tolerations[0].key", "Invalid value: \"a/b/c\": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"),
        ]
        for (toleration, reason, field, message) in cases {
            let r = try create([toleration])
            #expect(r.code == 422, "\(toleration)")
            #expect(causes(r.json) == [["reason": reason, "field": field, "message": message]], "\(toleration)")
            #expect(str(r.json, "message") == "Pod \"bad\" is invalid: \(field): \(message)")
        }
        #expect(f.server.objectJSON("/api/v1/namespaces/default/pods/bad") == nil)
        // Valid forms: catch-all, Exists with a key, Equal with an empty operator, NoExecute with seconds.
        let ok = try create([["operator": "Exists"], ["key": "a", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5],
                             ["key": "example.com/b", "value": "v"]])
        #expect(ok.code == 201)
    }

    @Test func anInvalidTolerationInAnUpdateIsListedTwiceAsTheRealValidation() async throws {
        let f = try await startWithPod()
        defer { Task { await f.close() } }
        // Added with tolerationSeconds on a NoSchedule toleration: ValidatePodSpec and validateOnlyAddedTolerations both
        // report it; the message shows it once.
        var list = tolerations(f)
        list.append(["key": "example.com/x", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5])
        let r = try f.request("PATCH", podPath, ["spec": ["tolerations": list]], contentType: "application/merge-patch+json")
        #expect(r.code == 422)
        let message = "Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set"
        let cause = ["reason": "FieldValueInvalid", "field": "spec.tolerations[3].effect", "message": message]
        #expect(causes(r.json) == [cause, cause])
        #expect(str(r.json, "message") == "Pod \"web\" is invalid: spec.tolerations[3].effect: \(message)")

        // A toleration change together with another forbidden spec change: both are reported, tolerations first.
        var pod = try #require(f.server.objectJSON(podPath))
        var spec = pod["spec"] as? [String: Any] ?? [:]
        spec["tolerations"] = Array(tolerations(f).dropFirst())
        spec["restartPolicy"] = "Never"
        pod["spec"] = spec
        let both = try f.request("PUT", podPath, pod)
        #expect(both.code == 422)
        #expect(causes(both.json).map { $0["field"] ?? "" } == ["spec.tolerations", "spec"])
        #expect(str(both.json, "message")?.hasPrefix("Pod \"web\" is invalid: [spec.tolerations: \(forbiddenMessage), spec: Forbidden: pod updates may not change fields other than") == true)
    }
}
