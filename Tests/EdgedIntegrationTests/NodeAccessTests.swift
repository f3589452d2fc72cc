// A joined node reads only the configMaps and secrets its pods refer to, one object at a time, as kubelet does
// under the Node authorizer: single-object GETs and list/watch with fieldSelector metadata.name=<name> in the
// pod's namespace, never a cluster-wide list; each watch starts with the first pod that refers to its object and
// stops when the last one is gone; an immutable object is read once and not watched.

import EdgedCore
import EdgedDaemon
import EdgedTestSupport
import Foundation
import Testing

@Suite(.serialized, .enabled(if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge")
                                && findExecutable("kubectl") != nil, "needs root, CNI plugins and kubectl"))
struct NodeAccessTests {
    /// A request for a configMap or secret, as the API server logged it.
    struct ObjectRequest: CustomStringConvertible {
        let record: KubeAPIServer.RequestRecord
        /// "configmaps" or "secrets".
        let resource: String
        /// nil for a cluster-wide request.
        let namespace: String?
        /// The path's name (a single-object request).
        let name: String?
        let query: [String: String]

        var isWatch: Bool { query["watch"] == "true" || query["watch"] == "1" }
        /// The object a list/watch is narrowed to with metadata.name=<name>.
        var selectedName: String? {
            guard let selector = query["fieldSelector"], selector.hasPrefix("metadata.name="),
                  !selector.contains(",") else { return nil }
            return String(selector.dropFirst("metadata.name=".count))
        }
        var description: String { record.description }

        /// Parses "/api/v1[/namespaces/NS]/(configmaps|secrets)[/NAME][?query]"; nil for other requests.
        init?(_ record: KubeAPIServer.RequestRecord) {
            let parts = record.path.split(separator: "?", maxSplits: 1).map(String.init)
            let segs = parts[0].split(separator: "/").map(String.init)
            guard segs.count >= 3, segs[0] == "api", segs[1] == "v1" else { return nil }
            var rest = Array(segs.dropFirst(2))
            var ns: String?
            if rest.first == "namespaces", rest.count >= 3 {
                ns = rest[1]
                rest = Array(rest.dropFirst(2))
            }
            guard let res = rest.first, res == "configmaps" || res == "secrets" else { return nil }
            self.record = record
            resource = res
            namespace = ns
            name = rest.count > 1 ? rest[1] : nil
            var q: [String: String] = [:]
            for pair in (parts.count > 1 ? parts[1] : "").split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1).map(String.init)
                q[kv[0].removingPercentEncoding ?? kv[0]] = kv.count > 1 ? (kv[1].removingPercentEncoding ?? kv[1]) : ""
            }
            query = q
        }
    }

    @Test func nodeReadsOnlyTheObjectsItsPodsReferToAndWatchesEachWhileNeeded() async throws {
      try await withCluster(name: "access", subnet: "10.250.67.0/24") { f in
        try f.edged.start()
        try f.join()
        _ = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }

        func base64(_ s: String) -> String { Data(s.utf8).base64EncodedString() }
        func configMap(_ name: String, _ data: String, namespace: String = "default", immutable: Bool = false) throws {
            try f.kubectl.run(["apply", "-f", "-"], stdin: """
                apiVersion: v1
                kind: ConfigMap
                metadata: {name: \(name), namespace: \(namespace)}
                data: {\(data)}
                \(immutable ? "immutable: true" : "")
                """)
        }
        func secret(_ name: String, _ key: String, _ value: String, namespace: String = "default") throws {
            try f.kubectl.run(["apply", "-f", "-"], stdin: """
                apiVersion: v1
                kind: Secret
                metadata: {name: \(name), namespace: \(namespace)}
                data: {\(key): \(base64(value))}
                """)
        }
        try configMap("settings", "mode: fast")
        try secret("app", "password", "one")
        try configMap("proj", "level: high")
        try secret("projsec", "token", "t0k3n")
        try configMap("envcm", "color: blue")
        try configMap("frozen", "shape: round", immutable: true)
        // Objects no pod refers to: the node must never read them.
        try configMap("unrelated", "x: y")
        try secret("unrelated", "k", "v")
        try f.kubectl.run(["apply", "-f", "-"], stdin: "apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n")
        try secret("app", "password", "elsewhere", namespace: "other")

        /// A pod that mounts settings (configMap), app (secret) and proj + projsec (projected) and takes COLOR from
        /// envcm (and SHAPE from the immutable frozen, when asked).
        func referencingPod(_ name: String, command: String, shape: Bool) -> String {
            """
            apiVersion: v1
            kind: Pod
            metadata: {name: \(name), namespace: default}
            spec:
              nodeName: \(f.node)
              terminationGracePeriodSeconds: 1
              volumes:
              - name: cm
                configMap: {name: settings}
              - name: sec
                secret: {secretName: app}
              - name: proj
                projected:
                  sources:
                  - configMap: {name: proj, items: [{key: level, path: level}]}
                  - secret: {name: projsec, items: [{key: token, path: token}]}
              containers:
              - name: main
                image: \(Demo.imageReference)
                imagePullPolicy: IfNotPresent
                command: [sh, -c, \(jsonString(command))]
                env:
                - name: COLOR
                  valueFrom: {configMapKeyRef: {name: envcm, key: color}}
            \(shape ? "    - name: SHAPE\n      valueFrom: {configMapKeyRef: {name: frozen, key: shape}}" : "")
                volumeMounts: [{name: cm, mountPath: /cm}, {name: sec, mountPath: /sec}, {name: proj, mountPath: /proj}]
            """
        }
        try f.kubectl.run(["apply", "-f", "-"], stdin: referencingPod("reader", command: "echo env=$COLOR/$SHAPE; while true; do echo mode=$(cat /cm/mode) pass=$(cat /sec/password) level=$(cat /proj/level) token=$(cat /proj/token); sleep 0.3; done", shape: true))
        _ = try await f.kubectl.wait(["get", "pod", "reader"], "reader Running") { path($0, "status", "phase") as? String == "Running" }
        func logs() -> String { (try? f.edged.edgectl(["logs", "reader"], check: false).stdout) ?? "" }
        func waitForLog(_ text: String, seconds: Double) async throws -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if logs().contains(text) { return true }
                try await Task.sleep(for: .milliseconds(200))
            }
            return logs().contains(text)
        }
        #expect(try await waitForLog("mode=fast pass=one level=high token=t0k3n", seconds: 15), "\(logs().suffix(500))")
        #expect(logs().contains("env=blue/round"), "\(logs().suffix(500))")

        // One watch per mutable object, none for the immutable one once it was read.
        let watched = [("configmaps", "settings"), ("secrets", "app"), ("configmaps", "proj"), ("secrets", "projsec"),
                       ("configmaps", "envcm")]
        func openWatches() -> [String: Int] {
            var out: [String: Int] = [:]
            for (res, name) in watched + [("configmaps", "frozen")] {
                out["\(res)/\(name)"] = f.api.openWatches(res, namespace: "default", name: name)
            }
            return out
        }
        var deadline = Date().addingTimeInterval(10)
        while Date() < deadline && openWatches().values.filter({ $0 == 1 }).count < watched.count {
            try await Task.sleep(for: .milliseconds(200))
        }
        var open = openWatches()
        for (res, name) in watched { #expect(open["\(res)/\(name)"] == 1, "\(open)") }
        #expect(open["configmaps/frozen"] == 0, "an immutable configMap is read once, not watched: \(open)")

        // An update of the configMap reaches the file within seconds, through the watch: from now on the node
        // reads no configMap or secret again (its cache follows the watches; the 2 s volume refresh reads it).
        func objectGets() -> [ObjectRequest] {
            f.api.requests().filter { $0.user == f.nodeUser }.compactMap(ObjectRequest.init).filter { $0.name != nil }
        }
        let getsBefore = objectGets().count
        try configMap("settings", "mode: slow")
        let updated = Date()
        #expect(try await waitForLog("mode=slow", seconds: 10), "configMap update did not reach the volume: \(logs().suffix(500))")
        let took = Date().timeIntervalSince(updated)
        #expect(took < 5, "the update took \(took) s to reach the file")
        try await Task.sleep(for: .seconds(7))   // longer than the 5 s cache lifetime of a read without a watch
        let later = Array(objectGets().dropFirst(getsBefore))
        #expect(later.isEmpty, "the node read objects again although it watches them: \(later)")

        // Everything the node asked for configMaps and secrets: single-object GETs and metadata.name= list/watch
        // of the pod's objects in its namespace; never a cluster-wide list, never another object.
        // (kube-root-ca.crt: the configMap of the service-account volume that admission adds to every pod.)
        let referenced: Set<String> = ["configmaps/settings", "secrets/app", "configmaps/proj", "secrets/projsec",
                                       "configmaps/envcm", "configmaps/frozen", "configmaps/kube-root-ca.crt"]
        let requests = f.api.requests().filter { $0.user == f.nodeUser }.compactMap(ObjectRequest.init)
        #expect(!requests.isEmpty)
        for r in requests {
            #expect(r.record.method == "GET", "\(r)")
            #expect(r.namespace == "default", "not in the pod's namespace (a cluster-wide request?): \(r)")
            let object = r.name ?? r.selectedName
            #expect(object != nil, "a list or watch not narrowed to one object: \(r)")
            if let object { #expect(referenced.contains("\(r.resource)/\(object)"), "an object no pod refers to: \(r)") }
            if r.name != nil { #expect(r.query["watch"] == nil && r.query["fieldSelector"] == nil, "\(r)") }
        }
        for (res, name) in watched {
            #expect(requests.contains { $0.isWatch && $0.resource == res && $0.selectedName == name },
                    "no watch of \(res)/\(name): \(requests)")
        }
        #expect(!requests.contains { $0.isWatch && $0.selectedName == "frozen" }, "the immutable configMap was watched")

        // Deleting the pod stops its watches.
        try f.kubectl.run(["delete", "pod", "reader", "--wait=false"])
        _ = try await f.kubectl.wait(["get", "pods"], "reader deleted") { (($0["items"] as? [Any]) ?? []).isEmpty }
        deadline = Date().addingTimeInterval(10)
        while Date() < deadline && openWatches().values.contains(where: { $0 > 0 }) {
            try await Task.sleep(for: .milliseconds(200))
        }
        open = openWatches()
        #expect(open.values.allSatisfy { $0 == 0 }, "watches left after the pod was deleted: \(open)")

        // A new pod that refers to one of them starts its watch again.
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("again", node: f.node, command: "cat /cm/mode; sleep 3600",
            volumes: "  volumes:\n  - name: cm\n    configMap: {name: settings}", mounts: "    volumeMounts: [{name: cm, mountPath: /cm}]"))
        _ = try await f.kubectl.wait(["get", "pod", "again"], "again Running") { path($0, "status", "phase") as? String == "Running" }
        deadline = Date().addingTimeInterval(10)
        while Date() < deadline && f.api.openWatches("configmaps", namespace: "default", name: "settings") != 1 {
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(f.api.openWatches("configmaps", namespace: "default", name: "settings") == 1)
        #expect(f.api.openWatches("secrets", namespace: "default", name: "app") == 0)

        // edged restarted: a new pod that refers to several configMaps and secrets of the namespace gets every one
        // of them. (The hub's cache once kept only the last object listed by name in a namespace, and after a
        // restart the list answered from it hid the others for good: seen on a real cluster.)
        f.edged.stop()
        try f.edged.start()
        try f.kubectl.run(["apply", "-f", "-"], stdin: referencingPod("third", command: "echo third mode=$(cat /cm/mode) pass=$(cat /sec/password) level=$(cat /proj/level) token=$(cat /proj/token) color=$COLOR; sleep 3600", shape: false))
        _ = try await f.kubectl.wait(["get", "pod", "third"], timeout: 30, "third Running after edged's restart") {
            path($0, "status", "phase") as? String == "Running"
        }
        var third = ""
        deadline = Date().addingTimeInterval(10)
        while Date() < deadline && !third.contains("third mode") {
            third = (try? f.edged.edgectl(["logs", "third"], check: false).stdout) ?? ""
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(third.contains("third mode=slow pass=one level=high token=t0k3n color=blue"), "\(third)")
        try f.kubectl.run(["delete", "pod", "again", "third", "--wait=false"])
      }
    }
}
