import EdgedCore
@testable import EdgedKube
import Testing

@Suite struct KubeResourceTests {
    @Test func paths() {
        #expect(KubeResource.pods.path(namespace: "default", name: "p1") == "/api/v1/namespaces/default/pods/p1")
        #expect(KubeResource.pods.path(namespace: nil, name: nil) == "/api/v1/pods")
        #expect(KubeResource.podStatus.path(namespace: "ns", name: "p") == "/api/v1/namespaces/ns/pods/p/status")
        #expect(KubeResource.nodes.path(namespace: "ignored", name: "n1") == "/api/v1/nodes/n1")
        #expect(KubeResource.leases.path(namespace: "kube-node-lease", name: "n1")
                == "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1")
        #expect(KubeResource.certificateSigningRequestApproval.path(namespace: nil, name: "csr-1")
                == "/apis/certificates.k8s.io/v1/certificatesigningrequests/csr-1/approval")
        #expect(KubeResource.serviceAccountToken.path(namespace: "ns", name: "default")
                == "/api/v1/namespaces/ns/serviceaccounts/default/token")
        #expect(KubeResource.leases.description == "leases.coordination.k8s.io")
        #expect(KubeResource.podStatus.description == "pods/status")
        #expect(KubeResource.pods.path(namespace: "a b", name: "x/y") == "/api/v1/namespaces/a%20b/pods/x%2Fy")
    }

    @Test func queryEscapingAndSelectors() {
        var q = Query()
        q.add("labelSelector", "env in (a,b),!legacy")
        q.add("fieldSelector", FieldSelector.podsOnNode("n1"))
        q.add("skipped", nil)
        #expect(q.text == "?labelSelector=env%20in%20%28a%2Cb%29%2C%21legacy&fieldSelector=spec.nodeName%3Dn1")
        #expect(LabelSelector.matching(["b": "2", "a": "1"]) == "a=1,b=2")
    }

    @Test func patchBodies() throws {
        var status = PodStatus()
        status.phase = .running
        let p = try Patch.status(status)
        #expect(p.contentType == "application/strategic-merge-patch+json")
        #expect(p.body.jsonText == #"{"status":{"phase":"Running"}}"#)

        // What an earlier status had and this one has not is sent as null (a strategic merge keeps unmentioned
        // keys): a container gone from waiting to running, a pod reason cleared, paired by container name.
        var waiting = PodStatus(phase: .pending)
        waiting.reason = "Evicted"
        waiting.containerStatuses = [
            ContainerStatus(name: "a", state: ContainerState(waiting: .init(reason: "CrashLoopBackOff", message: "back-off 10s")), image: "i"),
            ContainerStatus(name: "b", state: ContainerState(waiting: .init(reason: "ContainerCreating")), image: "i"),
        ]
        var running = PodStatus(phase: .running)
        running.containerStatuses = [
            ContainerStatus(name: "b", state: ContainerState(running: .init(startedAt: "t")), image: "i"),
            ContainerStatus(name: "a", state: ContainerState(waiting: .init(reason: "ContainerCreating")), image: "i"),
        ]
        let cleared = try Patch.status(running, replacing: [waiting, nil])
        #expect(cleared.contentType == "application/strategic-merge-patch+json")
        #expect(cleared.body[path: ["status", "reason"]] == .null)
        func container(_ body: JSONValue, _ name: String) -> JSONValue? {
            guard case .array(let items)? = body[path: ["status", "containerStatuses"]] else { return nil }
            return items.first { $0["name"] == .string(name) }
        }
        #expect(container(cleared.body, "b")?[path: ["state", "waiting"]] == .null)
        #expect(container(cleared.body, "b")?[path: ["state", "running", "startedAt"]] == .string("t"))
        #expect(container(cleared.body, "a")?[path: ["state", "waiting", "message"]] == .null)
        #expect(container(cleared.body, "a")?[path: ["state", "waiting", "reason"]] == .string("ContainerCreating"))
        // Nothing went away: no null anywhere.
        #expect(!(try Patch.status(running, replacing: [running]).body.jsonText.contains("null")))

        let j = Patch.json([.test("/metadata/resourceVersion", .string("5")),
                            .replace(JSONPatchOperation.pointer(["metadata", "labels", "a/b~c"]), .string("v")),
                            .remove("/spec/x")])
        #expect(j.contentType == "application/json-patch+json")
        #expect(j.body.jsonText == #"[{"op":"test","path":"/metadata/resourceVersion","value":"5"},{"op":"replace","path":"/metadata/labels/a~1b~0c","value":"v"},{"op":"remove","path":"/spec/x"}]"#)

        let old = ConfigMap(metadata: ObjectMeta(name: "c"), data: ["a": "1", "b": "2"])
        var new = old
        new.data = ["a": "1", "c": "3"]
        let m = try #require(try Patch.mergeDiff(from: old, to: new))
        #expect(m.contentType == "application/merge-patch+json")
        #expect(m.body[path: ["data", "b"]] == .null)
        #expect(m.body[path: ["data", "c"]] == .string("3"))
        #expect(m.body[path: ["data", "a"]] == nil)
        #expect(try Patch.mergeDiff(from: old, to: old) == nil)
    }

    @Test func deleteOptionsBody() {
        let d = DeleteOptions(gracePeriodSeconds: 0, preconditionUID: "u1")
        #expect(d.json.jsonText == #"{"kind":"DeleteOptions","apiVersion":"v1","gracePeriodSeconds":0,"preconditions":{"uid":"u1"}}"#)
    }
}
