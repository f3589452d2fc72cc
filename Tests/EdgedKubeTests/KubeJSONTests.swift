import EdgedCore
@testable import EdgedKube
import Testing

@Suite struct KubeJSONTests {
    @Test func parseKeepsOrderNumbersAndEscapes() throws {
        let text = #"{"b":1,"a":[true,false,null,-0.5e+10,"x\"\\\/\u0041\ud83d\ude00"],"c":{}}"#
        let v = try JSONValue.parse(text)
        #expect(v["b"] == .number("1"))
        #expect(v["a"] == .array([.bool(true), .bool(false), .null, .number("-0.5e+10"), .string("x\"\\/A😀")]))
        #expect(v.jsonText == #"{"b":1,"a":[true,false,null,-0.5e+10,"x\"\\/A😀"],"c":{}}"#)
        #expect(try JSONValue.parse("  [ ]  ") == .array([]))
    }

    @Test func parseErrorsNameTheOffset() {
        for bad in ["", "{", "{\"a\" 1}", "[1,]", "tru", "\"abc", "{\"a\":1} x", "01x", "\"\u{01}\""] {
            do {
                _ = try JSONValue.parse(bad)
                Issue.record("parsed invalid JSON \(bad)")
            } catch {
                #expect(error.description.contains("invalid JSON at byte"))
            }
        }
    }

    @Test func setAndRemoveByPath() throws {
        var v = try JSONValue.parse(#"{"metadata":{"name":"n","x":1},"spec":{"holderIdentity":"old","other":true}}"#)
        v.set(["spec", "holderIdentity"], to: .string("node1"))
        v.set(["spec", "renewTime"], to: .string("t"))
        v.set(["status", "a", "b"], to: .number("2"))
        v.set(["metadata", "x"], to: nil)
        v.set(["missing", "path"], to: nil)
        #expect(v.jsonText == #"{"metadata":{"name":"n"},"spec":{"holderIdentity":"node1","other":true,"renewTime":"t"},"status":{"a":{"b":2}}}"#)
        #expect(v[path: ["status", "a", "b"]] == .number("2"))
        #expect(v[path: ["spec", "nope"]] == nil)
    }

    @Test func mergePatchDiff() throws {
        let old = try JSONValue.parse(#"{"a":1,"b":{"c":2,"d":3},"e":[1,2],"f":"same"}"#)
        let new = try JSONValue.parse(#"{"a":1,"b":{"c":5},"e":[1],"f":"same","g":true}"#)
        let patch = try #require(JSONValue.mergePatch(from: old, to: new))
        #expect(patch.jsonText == #"{"b":{"c":5,"d":null},"e":[1],"g":true}"#)
        #expect(JSONValue.mergePatch(from: old, to: old) == nil)
    }

    @Test func modelsRoundTripWithAPIFieldNames() throws {
        let node = Node(metadata: ObjectMeta(name: "n1"), status: NodeStatus(
            capacity: ["cpu": "4", "memory": "8Gi"],
            daemonEndpoints: NodeDaemonEndpoints(kubeletEndpoint: DaemonEndpoint(port: 10250)),
            nodeInfo: NodeSystemInfo(kubeletVersion: "v1.31.0", architecture: "amd64")))
        let v = try KubeJSON.value(of: node)
        #expect(v[path: ["status", "daemonEndpoints", "kubeletEndpoint", "Port"]] == .number("10250"))
        #expect(v[path: ["status", "capacity", "memory"]] == .string("8Gi"))
        #expect(v["spec"] == nil)
        let back = try KubeJSON.decode(Node.self, from: Array(v.jsonText.utf8))
        #expect(back == node)

        let secret = try KubeJSON.decode(Secret.self, from: Array(#"{"metadata":{"name":"s"},"data":{"k":"aGVsbG8="},"type":"Opaque"}"#.utf8))
        #expect(secret.data?["k"].map { Array($0) } == Array("hello".utf8))

        let list = try KubeJSON.decode(ObjectList<ConfigMap>.self, from: Array(#"{"kind":"ConfigMapList","metadata":{"resourceVersion":"7"},"items":null}"#.utf8))
        #expect(list.items.isEmpty)
        #expect(list.resourceVersion == "7")
    }

    @Test func microTimeHasSixFractionDigits() {
        let t = Timestamp(nanoseconds: 1_700_000_000_123_456_789)
        #expect(KubeTime.micro(t) == "2023-11-14T22:13:20.123456Z")
        #expect(KubeTime.time(t) == "2023-11-14T22:13:20Z")
    }
}
