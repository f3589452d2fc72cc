// The QoS class as kube-apiserver computes it (pkg/apis/core/helper/qos: only cpu and memory count, requests
// default to limits), and a refused status write reduced to what the API accepts.

import EdgedCore
import EdgedNode
import Testing

private func pod(_ containers: [String], initContainers: [String] = []) throws -> Pod {
    func block(_ list: [String], _ prefix: String) -> String {
        list.enumerated().map { i, resources in
            "  - name: \(prefix)\(i)\n    image: busybox\n    resources: \(resources)"
        }.joined(separator: "\n")
    }
    var yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: q, namespace: default}\nspec:\n  containers:\n"
    yaml += block(containers, "c") + "\n"
    if !initContainers.isEmpty { yaml += "  initContainers:\n" + block(initContainers, "i") + "\n" }
    return try Manifest.decodePods(yaml, source: "q.yaml")[0]
}

struct APIPodStatusTests {
    @Test(arguments: [
        // (containers' resources, init containers' resources, expected)
        (["{}"], [], "BestEffort"),
        (["{limits: {nvidia.com/gpu: \"1\"}}"], [], "BestEffort"),                         // only an extended resource
        (["{requests: {nvidia.com/gpu: \"1\"}, limits: {nvidia.com/gpu: \"1\"}}"], [], "BestEffort"),
        (["{requests: {cpu: \"0\", memory: \"0\"}}"], [], "BestEffort"),                     // zero quantities are ignored
        (["{limits: {cpu: 100m, memory: 64Mi}}"], [], "Guaranteed"),                          // requests default to limits
        (["{limits: {cpu: 100m, memory: 64Mi, nvidia.com/gpu: \"1\"}}"], [], "Guaranteed"),  // the GPU does not count
        (["{requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: \"0.1\", memory: 67108864}}"], [], "Guaranteed"),
        (["{requests: {cpu: 50m}, limits: {cpu: 100m, memory: 64Mi}}"], [], "Burstable"),
        (["{limits: {cpu: 100m}}"], [], "Burstable"),                                         // memory limit missing
        (["{limits: {cpu: 100m, memory: 64Mi}}", "{}"], [], "Burstable"),                    // one container without
        (["{limits: {cpu: 100m, memory: 64Mi}}"], ["{requests: {cpu: 10m}}"], "Burstable"),  // init containers count
        (["{limits: {cpu: 100m, memory: 64Mi}}"], ["{limits: {cpu: 100m, memory: 64Mi}}"], "Guaranteed"),
        (["{requests: {memory: 10Mi}}"], [], "Burstable"),
    ])
    func qosClassCountsOnlyCPUAndMemory(containers: [String], initContainers: [String], expected: String) throws {
        #expect(APIPodStatus.qosClass(try pod(containers, initContainers: initContainers)) == expected)
    }

    @Test func refusedFieldsAreSentAsTheAPIHoldsThem() {
        var api = PodStatus(phase: .pending)
        api.qosClass = "BestEffort"
        api.message = "from the API"
        var ours = PodStatus(phase: .running)
        ours.qosClass = "Burstable"
        ours.podIP = "10.0.0.5"
        ours.message = "ours"
        let reduced = APIPodStatus.keepingAPIValues(ours, api: api, fields: ["status.qosClass", "metadata.labels", "spec.x"])
        #expect(reduced.qosClass == "BestEffort")
        #expect(reduced.phase == .running)
        #expect(reduced.podIP == "10.0.0.5")
        #expect(reduced.message == "ours")
        // Nested field paths name their top-level field; a field the API does not hold is dropped.
        let nested = APIPodStatus.keepingAPIValues(ours, api: api, fields: ["status.podIP", "status.message"])
        #expect(nested.podIP == nil)
        #expect(nested.message == "from the API")
        // Nothing the writer can change: the same status (the caller then records the refusal, no retry).
        #expect(APIPodStatus.keepingAPIValues(ours, api: api, fields: ["metadata.name"]) == ours)
    }
}
