// Seeding the test API server with many realistic objects at once (benchmarks, cache tests), without HTTP.

import Foundation

extension KubeAPIServer {
    /// Creates `count` pods named "<namePrefix><i>" (i from 0) in `namespace` (created when missing), each about
    /// 3.5 KB of JSON as served, like a Deployment's pod: labels, annotations, an ownerReference, one container
    /// with env, a port, resources, a probe and mounts, two volumes. With a `nodeName` the pods are bound to it and get a
    /// Running status written through the status subresource, as a kubelet would; without one they stay Pending.
    /// Each pod is a normal create (+ status update): resourceVersions, history and watches see them. Returns the
    /// names. Throws like a create would (409 AlreadyExists when a name is taken; earlier pods stay created). The
    /// pods' list serializations are cached at once, so the first LIST is as fast as later ones.
    @discardableResult
    public func createPods(namespace: String, count: Int, nodeName: String? = nil, namePrefix: String = "pod-",
                           labels: [String: String] = [:]) throws -> [String] {
        try direct {
            if core.store.get(KubeAPIServerCore.namespaces, namespace: nil, name: namespace) == nil {
                _ = try core.create(KubeAPIServerCore.namespaces, namespace: nil,
                                    body: .object(["metadata": .object(["name": .string(namespace)])]), user: .internalAdmin)
            }
            var names: [String] = []
            names.reserveCapacity(count)
            for i in 0..<count {
                let name = "\(namePrefix)\(i)"
                let body = Self.seedPod(name: name, namespace: namespace, index: i, nodeName: nodeName, labels: labels)
                var stored = try core.create(KubeAPIServerCore.pods, namespace: namespace, body: body, user: .internalAdmin)
                if let nodeName {
                    stored["status"] = Self.seedRunningStatus(index: i, nodeName: nodeName, name: name)
                    _ = try core.update(APITarget(resource: KubeAPIServerCore.pods, namespace: namespace, name: name,
                                                  subresource: "status", legacyWatch: false), body: stored)
                }
                names.append(name)
            }
            // Serialize them now, so the first LIST is as fast as the next ones.
            for (key, obj) in core.store.all(KubeAPIServerCore.pods, namespace: namespace) {
                _ = core.store.listItemBytes(KubeAPIServerCore.pods, key: key, obj)
            }
            return names
        }
    }

    private static func seedPod(name: String, namespace: String, index i: Int, nodeName: String?,
                                labels extra: [String: String]) -> KJSON {
        var labels: [String: KJSON] = [
            "app.kubernetes.io/name": .string("edge-app"), "app.kubernetes.io/instance": .string("edge-app-\(i % 10)"),
            "app.kubernetes.io/component": .string("worker"), "pod-template-hash": .string("7d9f8c6b5d"),
        ]
        for (k, v) in extra { labels[k] = .string(v) }
        let env: [KJSON] = [
            .object(["name": .string("LOG_LEVEL"), "value": .string("info")]),
            .object(["name": .string("SITE"), "value": .string("plant-\(i % 7)")]),
            .object(["name": .string("POD_NAME"), "valueFrom": .object(["fieldRef": .object([
                "apiVersion": .string("v1"), "fieldPath": .string("metadata.name")])])]),
            .object(["name": .string("POD_IP"), "valueFrom": .object(["fieldRef": .object([
                "apiVersion": .string("v1"), "fieldPath": .string("status.podIP")])])]),
        ]
        let probe: KJSON = .object([
            "httpGet": .object(["path": .string("/healthz"), "port": .int(8080), "scheme": .string("HTTP")]),
            "periodSeconds": .int(10), "timeoutSeconds": .int(1), "successThreshold": .int(1), "failureThreshold": .int(3),
        ])
        let container: KJSON = .object([
            "name": .string("app"), "image": .string("registry.example.com/edge/app:1.4.\(i % 3)"),
            "args": .array([.string("--listen=:8080"), .string("--config=/etc/app/config.yaml")]),
            "ports": .array([.object(["name": .string("http"), "containerPort": .int(8080)])]),
            "env": .array(env),
            "resources": .object([
                "requests": .object(["cpu": .string("50m"), "memory": .string("64Mi")]),
                "limits": .object(["cpu": .string("500m"), "memory": .string("256Mi")]),
            ]),
            "readinessProbe": probe,
            "volumeMounts": .array([
                .object(["name": .string("config"), "mountPath": .string("/etc/app"), "readOnly": .bool(true)]),
                .object(["name": .string("kube-api-access"), "mountPath": .string("/var/run/secrets/kubernetes.io/serviceaccount"),
                         "readOnly": .bool(true)]),
            ]),
        ])
        let projected: KJSON = .object(["defaultMode": .int(420), "sources": .array([
            .object(["serviceAccountToken": .object(["expirationSeconds": .int(3607), "path": .string("token")])]),
            .object(["configMap": .object(["name": .string("kube-root-ca.crt"), "items": .array([
                .object(["key": .string("ca.crt"), "path": .string("ca.crt")])])])]),
            .object(["downwardAPI": .object(["items": .array([.object(["path": .string("namespace"), "fieldRef": .object([
                "apiVersion": .string("v1"), "fieldPath": .string("metadata.namespace")])])])])]),
        ])])
        var spec: [String: KJSON] = [
            "containers": .array([container]),
            "volumes": .array([
                .object(["name": .string("config"), "configMap": .object(["name": .string("edge-app-config"), "defaultMode": .int(420)])]),
                .object(["name": .string("kube-api-access"), "projected": projected]),
            ]),
        ]
        if let nodeName { spec["nodeName"] = .string(nodeName) }
        return .object([
            "metadata": .object([
                "name": .string(name), "namespace": .string(namespace), "labels": .object(labels),
                "annotations": .object([
                    "prometheus.io/scrape": .string("true"), "prometheus.io/port": .string("9090"),
                    "checksum/config": .string("5f0c6b1e8a9d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b"),
                ]),
                "ownerReferences": .array([.object([
                    "apiVersion": .string("apps/v1"), "kind": .string("ReplicaSet"), "name": .string("edge-app-7d9f8c6b5d"),
                    "uid": .string("0b7c5a52-3f5e-4c1f-9a43-6d2b8e1f0a11"), "controller": .bool(true),
                    "blockOwnerDeletion": .bool(true),
                ])]),
            ]),
            "spec": .object(spec),
        ])
    }

    private static func seedRunningStatus(index i: Int, nodeName: String, name: String) -> KJSON {
        let now = KubeAPIServerCore.timestamp()
        let ip = "10.244.\(i / 250 % 250).\(i % 250 + 2)"
        let conditions: [KJSON] = ["Initialized", "Ready", "ContainersReady", "PodScheduled"].map {
            .object(["type": .string($0), "status": .string("True"), "lastProbeTime": .null,
                     "lastTransitionTime": .string(now)])
        }
        return .object([
            "phase": .string("Running"), "conditions": .array(conditions), "hostIP": .string("192.168.1.10"),
            "hostIPs": .array([.object(["ip": .string("192.168.1.10")])]), "podIP": .string(ip),
            "podIPs": .array([.object(["ip": .string(ip)])]), "startTime": .string(now), "qosClass": .string("Burstable"),
            "containerStatuses": .array([.object([
                "name": .string("app"), "ready": .bool(true), "started": .bool(true), "restartCount": .int(0),
                "image": .string("registry.example.com/edge/app:1.4.\(i % 3)"),
                "imageID": .string("registry.example.com/edge/app@sha256:9c3f1e0d7b6a5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d"),
                "containerID": .string("edged://\(nodeName)-\(name)-app"),
                "state": .object(["running": .object(["startedAt": .string(now)])]),
                "lastState": .object([:]),
            ])]),
        ])
    }
}
