// The real kubectl against the test API server, through the admin kubeconfig it writes.

import Foundation
import Testing
@testable import EdgedTestSupport

private let kubectlPath = ["/usr/bin/kubectl", "/usr/local/bin/kubectl"].first { FileManager.default.isExecutableFile(atPath: $0) }

@Suite(.enabled(if: kubectlPath != nil, "kubectl is not installed"))
struct KubeAPIServerKubectlTests {
    @Test func kubectlDrivesTheServer() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        let kubeconfig = f.dir.sub("admin.conf")
        try f.server.writeAdminKubeconfig(to: kubeconfig)
        func kubectl(_ args: [String], check: Bool = true) throws -> CommandResult {
            try runCommand([kubectlPath!, "--kubeconfig", kubeconfig, "--request-timeout=20s"] + args, check: check)
        }
        let ns = try kubectl(["get", "namespaces", "-o", "name"])
        #expect(ns.stdout.split(separator: "\n").sorted() == ["namespace/default", "namespace/kube-node-lease",
                                                              "namespace/kube-public", "namespace/kube-system"])
        #expect(try kubectl(["get", "ns"]).stdout.contains("kube-system"))
        // Typed-client commands (create configmap, certificate approve) send protobuf, which this server refuses.
        let proto = try kubectl(["create", "configmap", "settings", "--from-literal=mode=fast"], check: false)
        #expect(proto.status != 0 && proto.stderr.contains("protobuf"))
        let cmFile = f.dir.sub("cm.yaml")
        try "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: fast\n"
            .write(toFile: cmFile, atomically: true, encoding: .utf8)
        try kubectl(["create", "-f", cmFile, "--validate=false"])
        #expect(try kubectl(["get", "configmap", "settings", "-o", "jsonpath={.data.mode}"]).stdout == "fast")
        try kubectl(["label", "configmap", "settings", "tier=edge"])
        #expect(try kubectl(["get", "cm", "-l", "tier=edge", "-o", "name"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
                == "configmap/settings")
        try kubectl(["patch", "configmap", "settings", "-p", #"{"data":{"mode":"slow"}}"#])
        #expect(try kubectl(["get", "configmap", "settings", "-o", "jsonpath={.data.mode}"]).stdout == "slow")

        // A pod bound to a node, deleted gracefully without waiting.
        let manifest = f.dir.sub("pod.yaml")
        try """
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
          labels: {app: web}
        spec:
          nodeName: edge-1
          containers:
          - name: main
            image: busybox:1.36
        """.write(toFile: manifest, atomically: true, encoding: .utf8)
        try kubectl(["create", "-f", manifest, "--validate=false"])
        let wide = try kubectl(["get", "pods", "-o", "wide"])
        #expect(wide.stdout.contains("web"))
        #expect(try kubectl(["get", "pod", "web", "-o", "jsonpath={.spec.nodeName}"]).stdout == "edge-1")
        try kubectl(["delete", "pod", "web", "--wait=false"])
        #expect(try kubectl(["get", "pod", "web", "-o", "jsonpath={.metadata.deletionGracePeriodSeconds}"]).stdout == "30")
        try kubectl(["delete", "pod", "web", "--grace-period=0", "--force"])
        let gone = try kubectl(["get", "pod", "web"], check: false)
        #expect(gone.status != 0 && gone.stderr.contains("NotFound"))

        // kubectl apply (client-side) creates, then patches with a strategic merge patch.
        try kubectl(["apply", "-f", cmFile, "--validate=false"])
        try "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: turbo\n"
            .write(toFile: cmFile, atomically: true, encoding: .utf8)
        try kubectl(["apply", "-f", cmFile, "--validate=false"])
        #expect(try kubectl(["get", "configmap", "settings", "-o", "jsonpath={.data.mode}"]).stdout == "turbo")
        #expect(f.server.requests().contains { $0.method == "PATCH" && $0.path.contains("/configmaps/settings") && $0.code == 200 })
    }
}
