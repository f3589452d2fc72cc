// PATCH: merge patch, JSON patch and the strategic merge patch approximation, over HTTP and on the JSON trees.

import Foundation
import Testing
@testable import EdgedTestSupport

private func j(_ s: String) throws -> KJSON { try KJSON.parse(s) }

@Suite struct KubeAPIServerPatchTests {
    @Test func mergePatchFollowsRFC7386() throws {
        let doc = try j(#"{"a":{"b":1,"c":2},"l":[1,2],"k":"v"}"#)
        let out = KubeAPIServerCore.mergePatch(doc, try j(#"{"a":{"b":null,"d":3},"l":[3],"k":null}"#))
        #expect(out == (try j(#"{"a":{"c":2,"d":3},"l":[3]}"#)))
    }

    @Test func jsonPatchOperations() throws {
        let doc = try j(#"{"metadata":{"labels":{"a":"1"}},"list":[1,2,3]}"#)
        let ops = try j(#"""
        [{"op":"test","path":"/metadata/labels/a","value":"1"},
         {"op":"add","path":"/metadata/labels/b~1c","value":"2"},
         {"op":"replace","path":"/list/0","value":9},
         {"op":"remove","path":"/list/1"},
         {"op":"add","path":"/list/-","value":4}]
        """#).array!
        let out = try KubeAPIServerCore.jsonPatch(doc, ops)
        #expect(out == (try j(#"{"metadata":{"labels":{"a":"1","b/c":"2"}},"list":[9,3,4]}"#)))
        #expect(throws: APIError.self) { try KubeAPIServerCore.jsonPatch(doc, [try j(#"{"op":"test","path":"/list/0","value":5}"#)]) }
        #expect(throws: APIError.self) { try KubeAPIServerCore.jsonPatch(doc, [try j(#"{"op":"replace","path":"/nope","value":5}"#)]) }
        #expect(throws: APIError.self) { try KubeAPIServerCore.jsonPatch(doc, [try j(#"{"op":"remove","path":"/list/7"}"#)]) }
    }

    @Test func strategicMergeUsesMergeKeys() throws {
        let status = try j(#"""
        {"status":{"conditions":[{"type":"Ready","status":"False"},{"type":"MemoryPressure","status":"False"}],
          "addresses":[{"type":"InternalIP","address":"10.0.0.1"}],
          "images":[{"names":["a"]}],
          "containerStatuses":[{"name":"c1","ready":false},{"name":"c2","ready":false}],
          "podIPs":[{"ip":"10.1.0.5"}]},
         "metadata":{"finalizers":["x"],"labels":{"keep":"1","drop":"1"}}}
        """#)
        let patch = try j(#"""
        {"status":{"$setElementOrder/conditions":[{"type":"MemoryPressure"},{"type":"Ready"}],
          "conditions":[{"type":"Ready","status":"True"}],
          "addresses":[{"type":"Hostname","address":"edge-1"}],
          "images":[{"names":["b"]}],
          "containerStatuses":[{"name":"c2","ready":true},{"name":"c1","$patch":"delete"}],
          "podIPs":[{"ip":"fd00::5"}]},
         "metadata":{"finalizers":["y"],"labels":{"drop":null}}}
        """#)
        let out = try KubeAPIServerCore.strategicMerge(status, patch, field: "", parent: "")
        let conds = out[path: ["status", "conditions"]]!.array!
        #expect(conds.count == 2)
        #expect(conds.first { $0["type"]?.string == "Ready" }?["status"]?.string == "True")
        #expect(out[path: ["status", "addresses"]]!.array!.count == 2)
        #expect(out[path: ["status", "images"]] == (try j(#"[{"names":["b"]}]"#)))
        #expect(out[path: ["status", "containerStatuses"]] == (try j(#"[{"name":"c2","ready":true}]"#)))
        #expect(out[path: ["status", "podIPs"]]!.array!.count == 2)
        #expect(out[path: ["metadata", "finalizers"]] == (try j(#"["x","y"]"#)))
        #expect(out[path: ["metadata", "labels"]] == (try j(#"{"keep":"1"}"#)))
        #expect(out[path: ["status", "$setElementOrder/conditions"]] == nil)
        // $patch: replace on a map and in a list; $deleteFromPrimitiveList.
        let rep = try KubeAPIServerCore.strategicMerge(status, try j(#"""
        {"metadata":{"labels":{"$patch":"replace","new":"1"},"$deleteFromPrimitiveList/finalizers":["x"]},
         "status":{"conditions":[{"$patch":"replace"},{"type":"PIDPressure","status":"False"}]}}
        """#), field: "", parent: "")
        #expect(rep[path: ["metadata", "labels"]] == (try j(#"{"new":"1"}"#)))
        #expect(rep[path: ["metadata", "finalizers"]] == (try j(#"[]"#)))
        #expect(rep[path: ["status", "conditions"]] == (try j(#"[{"type":"PIDPressure","status":"False"}]"#)))
        // A list item without its merge key is an error.
        #expect(throws: APIError.self) {
            try KubeAPIServerCore.strategicMerge(status, try j(#"{"status":{"conditions":[{"status":"True"}]}}"#), field: "", parent: "")
        }
    }

    @Test func patchOverHTTP() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        try f.server.put("/api/v1/nodes/n1", ["metadata": ["name": "n1"],
            "status": ["conditions": [["type": "Ready", "status": "False"], ["type": "DiskPressure", "status": "False"]]]])
        // The node's status patch goes through /status with a strategic merge patch, as a kubelet sends it.
        let sp = try f.request("PATCH", "/api/v1/nodes/n1/status",
                               ["status": ["conditions": [["type": "Ready", "status": "True", "reason": "KubeletReady"]]]],
                               contentType: "application/strategic-merge-patch+json")
        #expect(sp.code == 200)
        let conds = value(sp.json, "status.conditions") as? [[String: Any]] ?? []
        #expect(conds.count == 2)
        #expect(conds.first { $0["type"] as? String == "Ready" }?["status"] as? String == "True")
        // A status change through the main resource is ignored.
        let main = try f.request("PATCH", "/api/v1/nodes/n1", ["status": ["conditions": NSNull()], "metadata": ["labels": ["l": "1"]]],
                                 contentType: "application/merge-patch+json")
        #expect(str(main.json, "metadata.labels.l") == "1")
        #expect((value(main.json, "status.conditions") as? [Any])?.count == 2)
        // JSON patch with a failing test: 422; unknown media type: 415; stale RV inside a patch: 409.
        let jp = try f.request("PATCH", "/api/v1/nodes/n1", [["op": "test", "path": "/metadata/labels/l", "value": "2"]],
                               contentType: "application/json-patch+json")
        #expect(jp.code == 422)
        let ok = try f.request("PATCH", "/api/v1/nodes/n1", [["op": "replace", "path": "/metadata/labels/l", "value": "2"]],
                               contentType: "application/json-patch+json")
        #expect(str(ok.json, "metadata.labels.l") == "2")
        #expect(try f.request("PATCH", "/api/v1/nodes/n1", ["a": 1], contentType: "application/apply-patch+yaml").code == 415)
        let stale = try f.request("PATCH", "/api/v1/nodes/n1", ["metadata": ["resourceVersion": "1", "labels": ["x": "y"]]],
                                  contentType: "application/merge-patch+json")
        #expect(stale.code == 409)
        #expect(try f.request("PATCH", "/api/v1/nodes/missing", ["a": 1], contentType: "application/merge-patch+json").code == 404)
        #expect(try f.request("PATCH", "/api/v1/nodes/n1", "{bad", contentType: "application/merge-patch+json").code == 400)
    }

    @Test func jsonRoundTripsAndBridges() throws {
        let text = #"{"a":[1,2.5,-3e2,true,false,null,"é\n\u00e9\ud83d\ude00"],"b":{}}"#
        let v = try j(text)
        #expect(try j(v.text) == v)
        #expect(v["a"]?.array?[6].string == "é\né😀")
        #expect(throws: KJSONError.self) { try j("{\"a\":}") }
        #expect(throws: KJSONError.self) { try j("[1,2") }
        #expect(throws: KJSONError.self) { try j("{} x") }
        let bridged = try KJSON(any: ["n": 1, "d": 1.5, "b": true, "s": "x", "l": [NSNull()]] as [String: Any])
        #expect(bridged == (try j(#"{"n":1,"d":1.5,"b":true,"s":"x","l":[null]}"#)))
    }
}
