// v1 Endpoints and discovery.k8s.io/v1 EndpointSlices: discovery, CRUD, list/watch with selectors, the
// addressType rules, and the real kubectl finding them.

import Foundation
import Testing
@testable import EdgedTestSupport

private func endpoints(_ name: String, ip: String, node: String) -> [String: Any] {
    ["metadata": ["name": name, "labels": ["app": name]],
     "subsets": [["addresses": [["ip": ip, "nodeName": node,
                                 "targetRef": ["kind": "Pod", "namespace": "default", "name": "\(name)-pod"]]],
                  "ports": [["name": "http", "port": 8080, "protocol": "TCP"]]]]]
}

private func slice(_ name: String, service: String, ip: String, node: String, addressType: String? = "IPv4") -> [String: Any] {
    var s: [String: Any] = [
        "metadata": ["name": name, "labels": ["kubernetes.io/service-name": service,
                                              "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"]],
        "endpoints": [["addresses": [ip], "nodeName": node, "conditions": ["ready": true, "serving": true, "terminating": false],
                       "targetRef": ["kind": "Pod", "namespace": "default", "name": "\(service)-pod"]]],
        "ports": [["name": "http", "port": 8080, "protocol": "TCP"]],
    ]
    if let addressType { s["addressType"] = addressType }
    return s
}

private func names(_ list: [String: Any]) -> [String] {
    (value(list, "items") as? [[String: Any]] ?? []).compactMap { str($0, "metadata.name") }
}

private let kubectlPath = ["/usr/bin/kubectl", "/usr/local/bin/kubectl"].first { FileManager.default.isExecutableFile(atPath: $0) }

@Suite struct KubeAPIServerEndpointsTests {
    @Test func discoveryListsEndpointsAndEndpointSlices() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let core = try f.request("GET", "/api/v1")
        let ep = (value(core.json, "resources") as? [[String: Any]] ?? []).first { $0["name"] as? String == "endpoints" }
        #expect(ep?["kind"] as? String == "Endpoints" && ep?["namespaced"] as? Bool == true)
        #expect(ep?["shortNames"] as? [String] == ["ep"])
        let groups = try f.request("GET", "/apis")
        let names = (value(groups.json, "groups") as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        #expect(names.contains("discovery.k8s.io"))
        let group = try f.request("GET", "/apis/discovery.k8s.io")
        #expect(group.code == 200 && str(group.json, "kind") == "APIGroup")
        #expect(str(group.json, "preferredVersion.groupVersion") == "discovery.k8s.io/v1")
        let v1 = try f.request("GET", "/apis/discovery.k8s.io/v1")
        #expect(str(v1.json, "groupVersion") == "discovery.k8s.io/v1")
        let es = (value(v1.json, "resources") as? [[String: Any]] ?? []).first { $0["name"] as? String == "endpointslices" }
        #expect(es?["kind"] as? String == "EndpointSlice" && es?["namespaced"] as? Bool == true)
        #expect(try f.request("GET", "/apis/discovery.k8s.io/v1beta1").code == 404)
    }

    @Test func endpointsCRUDListAndWatch() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let a = try f.request("POST", "/api/v1/namespaces/default/endpoints", endpoints("web", ip: "10.244.0.5", node: "edge-1"))
        #expect(a.code == 201 && str(a.json, "kind") == "Endpoints" && str(a.json, "apiVersion") == "v1")
        #expect(str(a.json, "subsets.0.addresses.0.targetRef.name") == "web-pod")
        let rv = try #require(str(a.json, "metadata.resourceVersion"))
        try f.request("POST", "/api/v1/namespaces/default/endpoints", endpoints("db", ip: "10.244.0.6", node: "edge-2"))
        try f.request("POST", "/api/v1/namespaces/kube-system/endpoints", endpoints("dns", ip: "10.244.0.7", node: "edge-1"))
        #expect(try f.request("POST", "/api/v1/namespaces/default/endpoints", endpoints("web", ip: "1.1.1.1", node: "x")).code == 409)
        #expect(names(try f.request("GET", "/api/v1/endpoints").json) == ["db", "web", "dns"])
        #expect(names(try f.request("GET", "/api/v1/namespaces/default/endpoints").json) == ["db", "web"])
        #expect(names(try f.request("GET", "/api/v1/endpoints?fieldSelector=metadata.name%3Dweb").json) == ["web"])
        #expect(names(try f.request("GET", "/api/v1/endpoints?fieldSelector=metadata.namespace%3Dkube-system").json) == ["dns"])
        #expect(names(try f.request("GET", "/api/v1/endpoints?labelSelector=app%20in%20(db,dns)").json) == ["db", "dns"])
        #expect(try f.request("GET", "/api/v1/endpoints?fieldSelector=subsets.addresses%3Dx").code == 400)

        let w = try f.watch("/api/v1/namespaces/default/endpoints?watch=1&resourceVersion=\(rv)&fieldSelector=metadata.name%3Dweb")
        defer { w.stop() }
        try f.request("PATCH", "/api/v1/namespaces/default/endpoints/web",
                      ["subsets": [["addresses": [["ip": "10.244.0.9", "nodeName": "edge-1"]]]]],
                      contentType: "application/merge-patch+json")
        let e = try await w.nextChange()
        #expect(e["type"] as? String == "MODIFIED" && str(e, "object.kind") == "Endpoints")
        #expect(str(e, "object.subsets.0.addresses.0.ip") == "10.244.0.9")
        #expect(try f.request("DELETE", "/api/v1/namespaces/default/endpoints/web").code == 200)
        #expect(try await w.nextChange()["type"] as? String == "DELETED")
        #expect(try f.request("GET", "/api/v1/namespaces/default/endpoints/web").code == 404)
    }

    @Test func endpointSlicesCRUDSelectorsAndAddressType() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let base = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
        let a = try f.request("POST", base, slice("web-abc12", service: "web", ip: "10.244.0.5", node: "edge-1"))
        #expect(a.code == 201 && str(a.json, "kind") == "EndpointSlice" && str(a.json, "apiVersion") == "discovery.k8s.io/v1")
        #expect(str(a.json, "endpoints.0.nodeName") == "edge-1" && str(a.json, "endpoints.0.addresses.0") == "10.244.0.5")
        let rv = try #require(str(a.json, "metadata.resourceVersion"))
        try f.request("POST", base, slice("web-def34", service: "web", ip: "10.244.1.5", node: "edge-2"))
        try f.request("POST", base, slice("db-xyz98", service: "db", ip: "10.244.0.6", node: "edge-1"))
        let all = try f.request("GET", "/apis/discovery.k8s.io/v1/endpointslices")
        #expect(str(all.json, "kind") == "EndpointSliceList" && names(all.json) == ["db-xyz98", "web-abc12", "web-def34"])
        #expect(names(try f.request("GET", "\(base)?labelSelector=kubernetes.io%2Fservice-name%3Dweb").json) == ["web-abc12", "web-def34"])
        #expect(names(try f.request("GET", "\(base)?fieldSelector=metadata.name%3Ddb-xyz98").json) == ["db-xyz98"])

        // addressType: required, one of IPv4/IPv6/FQDN, immutable.
        let missing = try f.request("POST", base, slice("bad", service: "web", ip: "1.2.3.4", node: "n", addressType: nil))
        #expect(missing.code == 422 && str(missing.json, "details.causes.0.field") == "addressType")
        #expect(str(missing.json, "details.group") == "discovery.k8s.io")
        let wrong = try f.request("POST", base, slice("bad", service: "web", ip: "1.2.3.4", node: "n", addressType: "IPX"))
        #expect(wrong.code == 422 && str(wrong.json, "message")?.contains("Unsupported value") == true)
        let change = try f.request("PATCH", "\(base)/web-abc12", ["addressType": "IPv6"], contentType: "application/merge-patch+json")
        #expect(change.code == 422 && str(change.json, "message")?.contains("field is immutable") == true)

        let w = try f.watch("/apis/discovery.k8s.io/v1/watch/namespaces/default/endpointslices?resourceVersion=\(rv)&labelSelector=kubernetes.io%2Fservice-name%3Dweb")
        defer { w.stop() }
        #expect(str(try await w.nextChange(), "object.metadata.name") == "web-def34")
        var updated = try #require(f.server.objectJSON("\(base)/web-abc12"))
        updated["endpoints"] = [["addresses": ["10.244.0.50"], "nodeName": "edge-1", "conditions": ["ready": false]]]
        let put = try f.request("PUT", "\(base)/web-abc12", updated)
        #expect(put.code == 200 && str(put.json, "endpoints.0.addresses.0") == "10.244.0.50")
        let e = try await w.nextChange()
        #expect(e["type"] as? String == "MODIFIED" && str(e, "object.kind") == "EndpointSlice")
        #expect(str(e, "object.endpoints.0.addresses.0") == "10.244.0.50")
        // Deleting the namespace takes its slices with it.
        try f.request("POST", "/api/v1/namespaces", ["metadata": ["name": "gone"]])
        try f.request("POST", "/apis/discovery.k8s.io/v1/namespaces/gone/endpointslices", slice("s1", service: "x", ip: "1.2.3.4", node: "n"))
        try f.request("DELETE", "/api/v1/namespaces/gone")
        #expect(try f.request("GET", "/apis/discovery.k8s.io/v1/namespaces/gone/endpointslices/s1").code == 404)
    }

    @Test(.enabled(if: kubectlPath != nil, "kubectl is not installed"))
    func kubectlFindsEndpointsAndEndpointSlices() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let kubeconfig = f.dir.sub("admin.conf")
        try f.server.writeAdminKubeconfig(to: kubeconfig)
        func kubectl(_ args: [String]) throws -> String {
            try runCommand([kubectlPath!, "--kubeconfig", kubeconfig, "--request-timeout=20s"] + args).stdout
        }
        try f.server.put("/api/v1/namespaces/default/endpoints", endpoints("web", ip: "10.244.0.5", node: "edge-1"))
        try f.server.put("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
                         slice("web-abc12", service: "web", ip: "10.244.0.5", node: "edge-1"))
        #expect(try kubectl(["get", "endpoints", "-o", "name"]).contains("endpoints/web"))
        #expect(try kubectl(["get", "ep", "web", "-o", "jsonpath={.subsets[0].addresses[0].ip}"]) == "10.244.0.5")
        #expect(try kubectl(["get", "endpointslices", "-A", "-o", "name"]) == "endpointslice.discovery.k8s.io/web-abc12\n")
        #expect(try kubectl(["get", "endpointslices.discovery.k8s.io", "-l", "kubernetes.io/service-name=web",
                             "-o", "jsonpath={.items[0].endpoints[0].nodeName}"]) == "edge-1")
        let raw = try kubectl(["get", "--raw", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/web-abc12"])
        #expect(raw.contains("\"addressType\":\"IPv4\""))
        let resources = try kubectl(["api-resources", "--api-group=discovery.k8s.io", "-o", "name"])
        #expect(resources.contains("endpointslices.discovery.k8s.io"))
    }
}
