import EdgedCore
import EdgedHub
import EdgedKube
import Foundation
import Synchronization
import Testing

/// Objects in the shapes kube-apiserver serves them (managedFields and all), and the cluster around them: this node
/// is node-1 in pool "pool-a" with node-2; node-3 is in "pool-b"; node-4 in no pool.
/// Counts calls of a context closure.
final class CallCounter: Sendable {
    let count = Atomic(0)
}

enum FilterFixtures {
    static func parse(_ text: String) -> JSONValue {
        do { return try JSONValue.parse(text) } catch { fatalError("bad fixture: \(error)\n\(text)") }
    }

    static let kubernetesServiceText = """
        {"kind":"Service","apiVersion":"v1","metadata":{"name":"kubernetes","namespace":"default",\
        "uid":"3c2e1a4b-7f1d-4a8e-9b5c-0d1e2f3a4b5c","resourceVersion":"199",\
        "creationTimestamp":"2026-11-20T08:00:00Z","labels":{"component":"apiserver","provider":"kubernetes"},\
        "managedFields":[{"manager":"kube-apiserver","operation":"Update","apiVersion":"v1",\
        "time":"2026-11-20T08:00:00Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},\
        "f:component":{},"f:provider":{}}},"f:spec":{"f:clusterIP":{},"f:ports":{".":{},"k:{\\"port\\":443,\
        \\"protocol\\":\\"TCP\\"}":{".":{},"f:name":{},"f:port":{},"f:protocol":{},"f:targetPort":{}}}}}}]},\
        "spec":{"ports":[{"name":"metrics","protocol":"TCP","port":9000,"targetPort":9000},\
        {"name":"https","protocol":"TCP","port":443,"targetPort":6443}],"clusterIP":"10.96.0.1",\
        "clusterIPs":["10.96.0.1"],"type":"ClusterIP","sessionAffinity":"None","ipFamilies":["IPv4"],\
        "ipFamilyPolicy":"SingleStack","internalTrafficPolicy":"Cluster","x-unknown":{"kept":[1,2.50,true,null]}},\
        "status":{"loadBalancer":{}}}
        """
    /// What the masterservice filter must make of it: only clusterIP, clusterIPs and the https port change.
    static let kubernetesServiceRewritten = kubernetesServiceText
        .replacingOccurrences(of: "\"clusterIP\":\"10.96.0.1\"", with: "\"clusterIP\":\"169.254.2.1\"")
        .replacingOccurrences(of: "\"clusterIPs\":[\"10.96.0.1\"]", with: "\"clusterIPs\":[\"169.254.2.1\"]")
        .replacingOccurrences(of: "\"port\":443,\"targetPort\":6443", with: "\"port\":10268,\"targetPort\":6443")

    static func slice(service: String, addressType: String = "IPv4", endpoints: String? = nil) -> String {
        let eps = endpoints ?? """
            [{"addresses":["10.244.1.5"],"conditions":{"ready":true,"serving":true,"terminating":false},\
            "nodeName":"node-1","targetRef":{"kind":"Pod","namespace":"default","name":"web-1",\
            "uid":"a1"},"zone":"z1"},\
            {"addresses":["10.244.2.7"],"conditions":{"ready":true,"serving":true,"terminating":false},\
            "nodeName":"node-2","targetRef":{"kind":"Pod","namespace":"default","name":"web-2","uid":"a2"}},\
            {"addresses":["10.244.3.9"],"conditions":{"ready":false,"serving":false,"terminating":true},\
            "nodeName":"node-3","targetRef":{"kind":"Pod","namespace":"default","name":"web-3","uid":"a3"}},\
            {"addresses":["10.244.4.2"],"conditions":{"ready":true},"nodeName":"node-4",\
            "targetRef":{"kind":"Pod","namespace":"default","name":"web-4","uid":"a4"}},\
            {"addresses":["192.168.0.10"],"conditions":{"ready":true}}]
            """
        return """
            {"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1","metadata":{"name":"\(service)-abc12",\
            "generateName":"\(service)-","namespace":"default","uid":"5f1e","resourceVersion":"1000",\
            "generation":3,"creationTimestamp":"2026-11-20T08:00:00Z","labels":{\
            "endpointslice.kubernetes.io/managed-by":"endpointslice-controller.k8s.io",\
            "kubernetes.io/service-name":"\(service)"},"annotations":{\
            "endpoints.kubernetes.io/last-change-trigger-time":"2026-11-20T08:00:00Z"},\
            "ownerReferences":[{"apiVersion":"v1","kind":"Service","name":"\(service)","uid":"77",\
            "controller":true,"blockOwnerDeletion":true}]},"addressType":"\(addressType)","endpoints":\(eps),\
            "ports":[{"name":"http","protocol":"TCP","port":80}]}
            """
    }

    static func endpoints(service: String) -> String {
        """
        {"kind":"Endpoints","apiVersion":"v1","metadata":{"name":"\(service)","namespace":"default",\
        "uid":"e1","resourceVersion":"1001","creationTimestamp":"2026-11-20T08:00:00Z",\
        "labels":{"app":"\(service)"},"annotations":{\
        "endpoints.kubernetes.io/last-change-trigger-time":"2026-11-20T08:00:00Z"}},"subsets":[\
        {"addresses":[{"ip":"10.244.1.5","nodeName":"node-1","targetRef":{"kind":"Pod","namespace":"default",\
        "name":"web-1","uid":"a1"}},{"ip":"10.244.2.7","nodeName":"node-2","targetRef":{"kind":"Pod",\
        "namespace":"default","name":"web-2","uid":"a2"}}],"notReadyAddresses":[{"ip":"10.244.3.9",\
        "nodeName":"node-3","targetRef":{"kind":"Pod","namespace":"default","name":"web-3","uid":"a3"}}],\
        "ports":[{"name":"http","port":80,"protocol":"TCP"}]},\
        {"addresses":[{"ip":"10.244.3.10","nodeName":"node-3","targetRef":{"kind":"Pod","namespace":"default",\
        "name":"web-5","uid":"a5"}},{"ip":"192.168.0.10"}],"ports":[{"name":"metrics","port":9090,"protocol":"TCP"}]}]}
        """
    }

    /// The Services the filters look up: name → topologyKeys annotation (nil: a Service without it).
    static let services: [String: String?] = [
        "web": "kubernetes.io/hostname", "pool": "openyurt.io/nodepool", "zone": "kubernetes.io/zone",
        "plain": nil, "bogus": "kubernetes.io/region",
    ]
    static let pools = ["node-1": "pool-a", "node-2": "pool-a", "node-3": "pool-b"]

    static func context(podIPs: [String: String]? = nil, calls: CallCounter? = nil) -> FilterContext {
        var localPodIPs: (@Sendable () -> [String: String])?
        if let podIPs {
            localPodIPs = {
                calls?.count.add(1, ordering: .relaxed)
                return podIPs
            }
        }
        return FilterContext(
            serviceAnnotations: { namespace, name in
                guard namespace == "default", let entry = services[name] else { return nil }
                return entry.map { ["openyurt.io/topologyKeys": $0, "other": "x"] } ?? ["other": "x"]
            },
            nodePool: { pools[$0] },
            localPodIPs: localPodIPs)
    }

    static func filters(pool: String? = "pool-a", podIPs: [String: String]? = nil, masterService: Bool = true,
                        serviceTopology: Bool = true, calls: CallCounter? = nil) -> ResponseFilters {
        ResponseFilters(
            config: HubFilterConfig(nodeName: "node-1", nodePool: pool, masterService: masterService,
                                    serviceTopology: serviceTopology),
            context: context(podIPs: podIPs, calls: calls))
    }

    /// The nodeName of each endpoint of a slice, or of each address (ready first, per subset) of an Endpoints.
    static func nodes(_ object: JSONValue) -> [String] {
        if case .array(let eps)? = object["endpoints"] {
            return eps.map { $0["nodeName"]?.stringValue ?? "-" }
        }
        guard case .array(let subsets)? = object["subsets"] else { return [] }
        var out: [String] = []
        for s in subsets {
            for key in ["addresses", "notReadyAddresses"] {
                if case .array(let a)? = s[key] { out += a.map { $0["nodeName"]?.stringValue ?? "-" } }
            }
        }
        return out
    }

    /// Every IP of a slice's endpoints or an Endpoints' addresses, in order.
    static func ips(_ object: JSONValue) -> [String] {
        if case .array(let eps)? = object["endpoints"] {
            return eps.flatMap { ep -> [String] in
                guard case .array(let a)? = ep["addresses"] else { return [] }
                return a.compactMap(\.stringValue)
            }
        }
        guard case .array(let subsets)? = object["subsets"] else { return [] }
        var out: [String] = []
        for s in subsets {
            for key in ["addresses", "notReadyAddresses"] {
                if case .array(let a)? = s[key] { out += a.compactMap { $0["ip"]?.stringValue } }
            }
        }
        return out
    }
}

@Suite struct FilterTests {
    typealias F = FilterFixtures
    static let sliceKey = "discovery.k8s.io/v1/endpointslices"
    static let endpointsKey = "/v1/endpoints"

    // MARK: masterservice

    @Test(arguments: ["edged", "kubelet"])
    func masterServiceRewritesTheKubernetesService(_ component: String) throws {
        let out = try #require(F.filters().apply(component: component, resourceKey: "/v1/services",
                                                 object: F.parse(F.kubernetesServiceText)))
        // Byte for byte: every unknown field, number text and the key order are kept.
        #expect(out.jsonText == F.parse(F.kubernetesServiceRewritten).jsonText)
        #expect(out.jsonText != F.parse(F.kubernetesServiceText).jsonText)
        #expect(out[path: ["spec", "ports"]] == F.parse("""
            [{"name":"metrics","protocol":"TCP","port":9000,"targetPort":9000},\
            {"name":"https","protocol":"TCP","port":10268,"targetPort":6443}]
            """))
    }

    @Test func masterServiceUsesTheConfiguredAddress() throws {
        let filters = ResponseFilters(
            config: HubFilterConfig(nodeName: "n", masterServiceHost: "10.0.0.9", masterServicePort: 16443),
            context: FilterContext())
        let out = try #require(filters.apply(component: "kubelet", resourceKey: "/v1/services",
                                             object: F.parse(F.kubernetesServiceText)))
        #expect(out[path: ["spec", "clusterIP"]] == .string("10.0.0.9"))
        #expect(out[path: ["spec", "clusterIPs"]] == .array([.string("10.0.0.9")]))
        #expect(out[path: ["spec", "ports"]]?.jsonText.contains("\"port\":16443,\"targetPort\":6443") == true)
    }

    /// (component, resourceKey, the object's namespace/name/kind edits, masterService on) → left unchanged.
    static let masterServiceUntouched: [(String, String, String, Bool)] = [
        ("kube-proxy", "/v1/services", F.kubernetesServiceText, true),
        ("coredns", "/v1/services", F.kubernetesServiceText, true),
        ("unknown", "/v1/services", F.kubernetesServiceText, true),
        ("kubelet", "/v1/services", F.kubernetesServiceText, false),
        ("kubelet", "/v1/endpoints", F.kubernetesServiceText, true),
        ("kubelet", "/v1/configmaps", F.kubernetesServiceText, true),
        ("kubelet", "/v1/services", F.kubernetesServiceText.replacingOccurrences(of: "\"namespace\":\"default\"",
                                                                                 with: "\"namespace\":\"kube-system\""), true),
        ("kubelet", "/v1/services", F.kubernetesServiceText.replacingOccurrences(of: "\"name\":\"kubernetes\"",
                                                                                 with: "\"name\":\"kubernetes-2\""), true),
        ("kubelet", "/v1/services", F.kubernetesServiceText.replacingOccurrences(of: "\"kind\":\"Service\"",
                                                                                 with: "\"kind\":\"Status\""), true),
        ("kubelet", "/v1/services", #"{"metadata":{"name":"kubernetes","namespace":"default"}}"#, true),
        ("kubelet", "/v1/services", #"{"metadata":{"name":"kubernetes","namespace":"default"},"spec":null}"#, true),
        ("kubelet", "/v1/services", #"{"metadata":{"name":"kubernetes","namespace":"default"},"spec":[1]}"#, true),
        ("kubelet", "/v1/services", #"{"metadata":{"name":"kubernetes"},"spec":{"clusterIP":"10.96.0.1"}}"#, true),
        ("kubelet", "/v1/services", #"{"metadata":"default/kubernetes","spec":{}}"#, true),
        ("kubelet", "/v1/services", #"{"metadata":{"name":1,"namespace":"default"},"spec":{}}"#, true),
        ("kubelet", "/v1/services", #"null"#, true),
        ("kubelet", "/v1/services", #"[]"#, true),
        ("kubelet", "/v1/services", #""kubernetes""#, true),
        ("kubelet", "/v1/services", #"{"kind":"Status","status":"Failure","code":410,"reason":"Expired"}"#, true),
    ]

    @Test(arguments: masterServiceUntouched)
    func masterServiceLeavesOthersAlone(_ component: String, _ resourceKey: String, _ text: String, _ on: Bool) throws {
        let object = F.parse(text)
        let out = F.filters(masterService: on).apply(component: component, resourceKey: resourceKey, object: object)
        #expect(out == object)
    }

    @Test func masterServiceOddShapesStillGetTheAddress() throws {
        let filters = F.filters()
        // No ports at all, or none named https: the address changes, nothing else.
        let noPorts = F.parse(#"{"metadata":{"name":"kubernetes","namespace":"default"},"spec":{"type":"ClusterIP"}}"#)
        let a = try #require(filters.apply(component: "kubelet", resourceKey: "/v1/services", object: noPorts))
        #expect(a.jsonText == #"{"metadata":{"name":"kubernetes","namespace":"default"},"spec":{"type":"ClusterIP","clusterIP":"169.254.2.1","clusterIPs":["169.254.2.1"]}}"#)
        let otherPorts = F.parse(#"{"metadata":{"namespace":"default","name":"kubernetes"},"spec":{"ports":[{"name":"http","port":80},"odd",null],"clusterIP":"None"}}"#)
        let b = try #require(filters.apply(component: "kubelet", resourceKey: "/v1/services", object: otherPorts))
        #expect(b.jsonText == #"{"metadata":{"namespace":"default","name":"kubernetes"},"spec":{"ports":[{"name":"http","port":80},"odd",null],"clusterIP":"169.254.2.1","clusterIPs":["169.254.2.1"]}}"#)
    }

    @Test func masterServiceInAServiceList() throws {
        let list = F.parse("""
            {"kind":"ServiceList","apiVersion":"v1","metadata":{"resourceVersion":"300"},"items":[\
            {"metadata":{"name":"web","namespace":"default"},"spec":{"clusterIP":"10.96.0.20"}},\(F.kubernetesServiceText)]}
            """)
        let out = try #require(F.filters().apply(component: "kubelet", resourceKey: "/v1/services", object: list))
        guard case .array(let items)? = out["items"] else { Issue.record("no items"); return }
        #expect(items[0][path: ["spec", "clusterIP"]] == .string("10.96.0.20"))
        #expect(items[1].jsonText == F.parse(F.kubernetesServiceRewritten).jsonText)
        #expect(out["metadata"] == list["metadata"])
    }

    // MARK: servicetopology

    /// (Service, component, our pool, nodes of the endpoints left, nil = object unchanged).
    static let topologyCases: [(String, String, String?, [String]?)] = [
        // Node topology: only this node's endpoints.
        ("web", "kube-proxy", "pool-a", ["node-1"]),
        ("web", "coredns", nil, ["node-1"]),
        ("web", "nginx-ingress-controller", "pool-a", ["node-1"]),
        // Pool topology (and zone, which YurtHub treats as the pool): the pool's endpoints.
        ("pool", "kube-proxy", "pool-a", ["node-1", "node-2"]),
        ("zone", "kube-proxy", "pool-a", ["node-1", "node-2"]),
        ("pool", "kube-proxy", "pool-b", ["node-1", "node-3"]),
        // This node in no pool: node topology, as YurtHub falls back.
        ("pool", "kube-proxy", nil, ["node-1"]),
        ("pool", "kube-proxy", "", ["node-1"]),
        // A pool no endpoint is in: the object stays, with no endpoints besides this node's own.
        ("pool", "kube-proxy", "pool-z", ["node-1"]),
        // No annotation, an unknown value, an unknown Service: unchanged.
        ("plain", "kube-proxy", "pool-a", nil),
        ("bogus", "kube-proxy", "pool-a", nil),
        ("missing", "kube-proxy", "pool-a", nil),
        // Components not in the list: unchanged.
        ("web", "kubelet", "pool-a", nil),
        ("web", "edged", "pool-a", nil),
        ("web", "kubectl", "pool-a", nil),
        ("web", "unknown", "pool-a", nil),
    ]

    @Test(arguments: topologyCases)
    func topologyOfEndpointSlices(_ service: String, _ component: String, _ pool: String?, _ left: [String]?) throws {
        let object = F.parse(F.slice(service: service))
        let out = try #require(F.filters(pool: pool).apply(component: component, resourceKey: Self.sliceKey, object: object))
        if let left {
            #expect(F.nodes(out) == left)
            // Only the endpoints array changed.
            #expect(out.setting(["endpoints"], to: object["endpoints"]) == object)
        } else {
            #expect(out == object)
        }
    }

    @Test(arguments: topologyCases)
    func topologyOfEndpoints(_ service: String, _ component: String, _ pool: String?, _ left: [String]?) throws {
        let object = F.parse(F.endpoints(service: service))
        let out = try #require(F.filters(pool: pool).apply(component: component, resourceKey: Self.endpointsKey, object: object))
        if let left {
            // node-3's not-ready address stays with the pool-b topology; the second subset only has node-3 and an
            // address without a node.
            var expected = left
            if pool == "pool-b", service == "pool" { expected = ["node-1", "node-3", "node-3"] }
            #expect(F.nodes(out) == expected)
            #expect(out.setting(["subsets"], to: object["subsets"]) == object)
        } else {
            #expect(out == object)
        }
    }

    @Test func topologyKeepsSubsetShapes() throws {
        let object = F.parse(F.endpoints(service: "web"))
        let out = try #require(F.filters().apply(component: "kube-proxy", resourceKey: Self.endpointsKey, object: object))
        // The first subset keeps node-1's address, its ports, and an empty notReadyAddresses; the second is gone.
        #expect(out["subsets"]?.jsonText == """
            [{"addresses":[{"ip":"10.244.1.5","nodeName":"node-1","targetRef":{"kind":"Pod","namespace":"default",\
            "name":"web-1","uid":"a1"}}],"notReadyAddresses":[],"ports":[{"name":"http","port":80,"protocol":"TCP"}]}]
            """)
    }

    @Test func topologyWithNothingLeftKeepsTheObject() throws {
        let filters = F.filters()
        let slice = F.parse(F.slice(service: "web", endpoints: """
            [{"addresses":["10.244.2.7"],"nodeName":"node-2"},{"addresses":["10.0.0.1"]}]
            """))
        let a = try #require(filters.apply(component: "kube-proxy", resourceKey: Self.sliceKey, object: slice))
        #expect(a["endpoints"] == .array([]))
        #expect(a.setting(["endpoints"], to: slice["endpoints"]) == slice)
        let ep = F.parse(F.endpoints(service: "web").replacingOccurrences(of: "node-1", with: "node-9"))
        let b = try #require(filters.apply(component: "kube-proxy", resourceKey: Self.endpointsKey, object: ep))
        #expect(b["subsets"] == .array([]))
        #expect(b["metadata"] == ep["metadata"])
    }

    @Test func topologyOffOrEmptyComponentsLeaveEverything() throws {
        let slice = F.parse(F.slice(service: "web"))
        #expect(F.filters(serviceTopology: false).apply(component: "kube-proxy", resourceKey: Self.sliceKey, object: slice) == slice)
        let none = ResponseFilters(config: HubFilterConfig(nodeName: "node-1", serviceTopologyComponents: []),
                                   context: F.context())
        #expect(none.apply(component: "kube-proxy", resourceKey: Self.sliceKey, object: slice) == slice)
        // The configured list is matched case-insensitively (components are lower-cased User-Agent names).
        let custom = ResponseFilters(config: HubFilterConfig(nodeName: "node-1", serviceTopologyComponents: ["My-Proxy"]),
                                     context: F.context())
        #expect(custom.apply(component: "my-proxy", resourceKey: Self.sliceKey, object: slice).map(F.nodes) == ["node-1"])
        // Other versions of the resources are not touched.
        #expect(F.filters().apply(component: "kube-proxy", resourceKey: "discovery.k8s.io/v1beta1/endpointslices",
                                  object: slice) == slice)
    }

    @Test func topologyInListsAndOfOddEndpoints() throws {
        let list = F.parse("""
            {"kind":"EndpointSliceList","apiVersion":"discovery.k8s.io/v1","metadata":{"resourceVersion":"5"},\
            "items":[\(F.slice(service: "web")),\(F.slice(service: "plain"))]}
            """)
        let out = try #require(F.filters().apply(component: "kube-proxy", resourceKey: Self.sliceKey, object: list))
        guard case .array(let items)? = out["items"] else { Issue.record("no items"); return }
        #expect(F.nodes(items[0]) == ["node-1"])
        #expect(items[1] == F.parse(F.slice(service: "plain")))
        // Endpoints that cannot be placed on a node (no nodeName, or not a string) are dropped, as in YurtHub.
        let odd = F.parse(F.slice(service: "pool", endpoints: """
            ["x",5,null,{},{"nodeName":7},{"nodeName":null},{"nodeName":"node-2","addresses":"odd"},{"nodeName":"node-1"}]
            """))
        let o = try #require(F.filters().apply(component: "kube-proxy", resourceKey: Self.sliceKey, object: odd))
        #expect(o["endpoints"]?.jsonText == #"[{"nodeName":"node-2","addresses":"odd"},{"nodeName":"node-1"}]"#)
    }

    // MARK: endpoints fix-up (offline)

    static let newIPs = ["default/web-1": "10.244.1.99", "default/web-2": "10.244.2.99", "default/web-3": "10.244.3.99"]

    @Test(arguments: ["kube-proxy", "coredns", "kubectl", "edged"])
    func fixupRewritesOnlyThisNodesPods(_ component: String) throws {
        // A Service without topology so only the fix-up acts; it works for every client.
        let slice = F.parse(F.slice(service: "plain"))
        let s = try #require(F.filters(podIPs: Self.newIPs).apply(component: component, resourceKey: Self.sliceKey, object: slice))
        #expect(F.ips(s) == ["10.244.1.99", "10.244.2.7", "10.244.3.9", "10.244.4.2", "192.168.0.10"])
        #expect(s.jsonText == slice.jsonText.replacingOccurrences(of: "\"10.244.1.5\"", with: "\"10.244.1.99\""))
        let ep = F.parse(F.endpoints(service: "plain"))
        let e = try #require(F.filters(podIPs: Self.newIPs).apply(component: component, resourceKey: Self.endpointsKey, object: ep))
        #expect(e.jsonText == ep.jsonText.replacingOccurrences(of: "\"10.244.1.5\"", with: "\"10.244.1.99\""))
    }

    @Test func fixupOnlyWhileOffline() throws {
        let slice = F.parse(F.slice(service: "plain"))
        #expect(F.filters(podIPs: nil).apply(component: "kube-proxy", resourceKey: Self.sliceKey, object: slice) == slice)
        // Same IP, unknown pods, an empty map: unchanged.
        for ips in [["default/web-1": "10.244.1.5"], ["default/other": "10.0.0.1"], [:], ["kube-system/web-1": "10.9.9.9"]] {
            #expect(F.filters(podIPs: ips).apply(component: "kube-proxy", resourceKey: Self.sliceKey, object: slice) == slice)
            let ep = F.parse(F.endpoints(service: "plain"))
            #expect(F.filters(podIPs: ips).apply(component: "kube-proxy", resourceKey: Self.endpointsKey, object: ep) == ep)
        }
        // Other resources are never touched.
        let pod = F.parse(#"{"metadata":{"name":"web-1","namespace":"default"},"spec":{"nodeName":"node-1"},"status":{"podIP":"10.244.1.5"}}"#)
        #expect(F.filters(podIPs: Self.newIPs).apply(component: "edged", resourceKey: "/v1/pods", object: pod) == pod)
    }

    @Test func fixupThenTopology() throws {
        let slice = F.parse(F.slice(service: "pool"))
        let out = try #require(F.filters(podIPs: Self.newIPs).apply(component: "kube-proxy", resourceKey: Self.sliceKey, object: slice))
        #expect(F.nodes(out) == ["node-1", "node-2"])
        #expect(F.ips(out) == ["10.244.1.99", "10.244.2.7"])
    }

    /// (addressType, the slice's endpoint, new IP of default/web-1, the addresses after).
    static let fixupFamilies: [(String, String, String, [String])] = [
        ("IPv4", #"{"addresses":["10.244.1.5"],"nodeName":"node-1","targetRef":{"kind":"Pod","namespace":"default","name":"web-1"}}"#, "10.244.1.6", ["10.244.1.6"]),
        ("IPv4", #"{"addresses":["10.244.1.5"],"nodeName":"node-1","targetRef":{"kind":"Pod","namespace":"default","name":"web-1"}}"#, "fd00::6", ["10.244.1.5"]),
        ("IPv6", #"{"addresses":["fd00::5"],"nodeName":"node-1","targetRef":{"kind":"Pod","namespace":"default","name":"web-1"}}"#, "fd00::6", ["fd00::6"]),
        ("IPv6", #"{"addresses":["fd00::5"],"nodeName":"node-1","targetRef":{"kind":"Pod","namespace":"default","name":"web-1"}}"#, "10.0.0.6", ["fd00::5"]),
        ("FQDN", #"{"addresses":["web-1.example.com"],"nodeName":"node-1","targetRef":{"kind":"Pod","namespace":"default","name":"web-1"}}"#, "10.0.0.6", ["web-1.example.com"]),
        // The pod's new IP already among several addresses: unchanged.
        ("IPv4", #"{"addresses":["10.244.1.5","10.244.1.6"],"nodeName":"node-1","targetRef":{"kind":"Pod","namespace":"default","name":"web-1"}}"#, "10.244.1.6", ["10.244.1.5", "10.244.1.6"]),
        // targetRef without namespace: the slice's own.
        ("IPv4", #"{"addresses":["10.244.1.5"],"nodeName":"node-1","targetRef":{"kind":"Pod","name":"web-1"}}"#, "10.244.1.6", ["10.244.1.6"]),
        // Not a pod, another node, no node, no targetRef, odd addresses: unchanged.
        ("IPv4", #"{"addresses":["10.244.1.5"],"nodeName":"node-1","targetRef":{"kind":"Node","namespace":"default","name":"web-1"}}"#, "10.244.1.6", ["10.244.1.5"]),
        ("IPv4", #"{"addresses":["10.244.1.5"],"nodeName":"node-2","targetRef":{"kind":"Pod","namespace":"default","name":"web-1"}}"#, "10.244.1.6", ["10.244.1.5"]),
        ("IPv4", #"{"addresses":["10.244.1.5"],"targetRef":{"kind":"Pod","namespace":"default","name":"web-1"}}"#, "10.244.1.6", ["10.244.1.5"]),
        ("IPv4", #"{"addresses":["10.244.1.5"],"nodeName":"node-1"}"#, "10.244.1.6", ["10.244.1.5"]),
        ("IPv4", #"{"addresses":["10.244.1.5"],"nodeName":"node-1","targetRef":"web-1"}"#, "10.244.1.6", ["10.244.1.5"]),
        // No addresses at all (or not an array): the pod's IP is set.
        ("IPv4", #"{"nodeName":"node-1","targetRef":{"kind":"Pod","namespace":"default","name":"web-1"}}"#, "10.244.1.6", ["10.244.1.6"]),
    ]

    @Test(arguments: fixupFamilies)
    func fixupOfSliceEndpoints(_ type: String, _ endpoint: String, _ ip: String, _ after: [String]) throws {
        let slice = F.parse(F.slice(service: "plain", addressType: type, endpoints: "[\(endpoint)]"))
        let out = try #require(F.filters(podIPs: ["default/web-1": ip]).apply(component: "kube-proxy", resourceKey: Self.sliceKey, object: slice))
        #expect(F.ips(out) == after)
        if F.ips(slice) == after { #expect(out == slice) }
    }

    @Test func fixupOfEndpointsAddresses() throws {
        let ep = F.parse("""
            {"kind":"Endpoints","metadata":{"name":"plain","namespace":"default"},"subsets":[{"addresses":[\
            {"ip":"10.244.1.5","nodeName":"node-1","targetRef":{"kind":"Pod","name":"web-1"}},\
            {"ip":"fd00::5","nodeName":"node-1","targetRef":{"kind":"Pod","namespace":"default","name":"web-2"}},\
            {"ip":"10.244.1.7","nodeName":"node-1","targetRef":{"kind":"Pod","namespace":"other","name":"web-3"}}],\
            "notReadyAddresses":[{"ip":"10.244.1.8","nodeName":"node-1","targetRef":{"kind":"Pod","namespace":"default","name":"web-3"}},\
            {"nodeName":"node-1","targetRef":{"kind":"Pod","namespace":"default","name":"web-3"}}]},"odd",null,{"addresses":"x"}]}
            """)
        let out = try #require(F.filters(podIPs: Self.newIPs).apply(component: "coredns", resourceKey: Self.endpointsKey, object: ep))
        // web-1 (namespace from the object) and the not-ready web-3 change; the IPv6 address of web-2 does not get
        // web-2's IPv4 address; other/web-3 is another pod; an address without ip is left alone.
        #expect(out.jsonText == ep.jsonText
            .replacingOccurrences(of: "\"10.244.1.5\"", with: "\"10.244.1.99\"")
            .replacingOccurrences(of: "\"10.244.1.8\"", with: "\"10.244.3.99\""))
    }

    @Test func fixupAsksForPodIPsOnlyWhenNeeded() throws {
        let calls = CallCounter()
        let filters = F.filters(podIPs: Self.newIPs, calls: calls)
        // No endpoint on this node: the pod IPs are not asked for.
        let far = F.parse(F.slice(service: "plain", endpoints: #"[{"addresses":["10.0.0.1"],"nodeName":"node-2","targetRef":{"kind":"Pod","namespace":"default","name":"web-2"}}]"#))
        _ = filters.apply(component: "kube-proxy", resourceKey: Self.sliceKey, object: far)
        #expect(calls.count.load(ordering: .relaxed) == 0)
        // Several endpoints on this node: asked once per object.
        _ = filters.apply(component: "kube-proxy", resourceKey: Self.endpointsKey, object: F.parse(F.endpoints(service: "plain")))
        #expect(calls.count.load(ordering: .relaxed) == 1)
        let two = F.parse(F.slice(service: "plain", endpoints: """
            [{"addresses":["10.0.0.1"],"nodeName":"node-1","targetRef":{"kind":"Pod","namespace":"default","name":"web-1"}},\
            {"addresses":["10.0.0.2"],"nodeName":"node-1","targetRef":{"kind":"Pod","namespace":"default","name":"web-2"}}]
            """))
        let out = try #require(filters.apply(component: "kube-proxy", resourceKey: Self.sliceKey, object: two))
        #expect(calls.count.load(ordering: .relaxed) == 2)
        #expect(F.ips(out) == ["10.244.1.99", "10.244.2.99"])
    }

    // MARK: malformed input

    static let oddObjects: [String] = [
        "null", "true", "1", #""x""#, "[]", "[1,{}]", "{}",
        #"{"metadata":null}"#, #"{"metadata":"x"}"#, #"{"metadata":{"labels":"x"}}"#,
        #"{"metadata":{"name":"web","namespace":"default","labels":{"kubernetes.io/service-name":"web"}}}"#,
        #"{"metadata":{"name":"web","namespace":"default","labels":{"kubernetes.io/service-name":"web"}},"endpoints":null,"subsets":null}"#,
        #"{"metadata":{"name":"web","namespace":"default","labels":{"kubernetes.io/service-name":"web"}},"endpoints":"x","subsets":{"a":1}}"#,
        #"{"metadata":{"name":"web","namespace":"default","labels":{"kubernetes.io/service-name":"web"}},"endpoints":[],"subsets":[]}"#,
        #"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version","reason":"Expired","code":410}"#,
        #"{"kind":"EndpointSliceList","items":"x"}"#, #"{"kind":"EndpointsList","items":null}"#, #"{"kind":"List","items":[]}"#,
    ]

    @Test(arguments: oddObjects)
    func oddObjectsPassUnchanged(_ text: String) {
        let object = F.parse(text)
        let filters = F.filters(podIPs: Self.newIPs)
        for component in ["kube-proxy", "coredns", "kubelet", "edged", "unknown"] {
            for key in ["/v1/services", Self.endpointsKey, Self.sliceKey, "/v1/pods", "", "//", "x"] {
                #expect(filters.apply(component: component, resourceKey: key, object: object) == object, "\(component) \(key)")
            }
        }
    }

    /// A thousand list items through every filter stays cheap (the hub filters each item of large lists).
    @Test func manyItemsAreFilteredQuickly() throws {
        let slice = F.parse(F.slice(service: "pool"))
        let items = JSONValue.array(Array(repeating: slice, count: 1000))
        let list = JSONValue.object([("kind", .string("EndpointSliceList")), ("items", items)])
        let clock = ContinuousClock()
        let start = clock.now
        let out = try #require(F.filters(podIPs: Self.newIPs).apply(component: "kube-proxy", resourceKey: Self.sliceKey, object: list))
        let elapsed = clock.now - start
        print("filtered 1000 endpointslices in \(elapsed)")
        guard case .array(let filtered)? = out["items"] else { Issue.record("no items"); return }
        #expect(filtered.count == 1000)
        #expect(filtered.allSatisfy { F.nodes($0) == ["node-1", "node-2"] })
        #expect(elapsed < .seconds(5))
    }
}
