// `edged autonomy-controller` as operators run it: the built binary, with the ServiceAccount and RBAC of
// deploy/autonomy-controller.yaml (applied to the test API server, whose RBAC evaluates them) and a kubeconfig with
// that ServiceAccount's token. The permissions are enough for everything it does (no 403 in its log) and no more.

import EdgedCore
import EdgedKube
import EdgedTestSupport
import Foundation
import Testing

/// The repository's deploy/ folder.
private let deployDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("deploy").path

/// Creates the manifest's objects except the Deployment (the test API server runs no Deployment controller).
private func applyRBAC(_ api: KubeAPIServer) throws {
    let text = try String(contentsOfFile: "\(deployDir)/autonomy-controller.yaml", encoding: .utf8)
    var kinds: [String] = []
    for doc in try YAMLParser.parse(text) {
        let kind = doc["kind"]?.stringValue ?? ""
        let ns = doc["metadata"]?["namespace"]?.stringValue
        let rbac = "/apis/rbac.authorization.k8s.io/v1"
        let collection: String
        switch kind {
        case "ServiceAccount": collection = "/api/v1/namespaces/\(ns ?? "")/serviceaccounts"
        case "ClusterRole": collection = "\(rbac)/clusterroles"
        case "ClusterRoleBinding": collection = "\(rbac)/clusterrolebindings"
        case "Role": collection = "\(rbac)/namespaces/\(ns ?? "")/roles"
        case "RoleBinding": collection = "\(rbac)/namespaces/\(ns ?? "")/rolebindings"
        case "Deployment": continue
        default: Issue.record("unexpected kind \(kind) in the manifest"); continue
        }
        let r = api.call("POST", collection, body: Data(doc.jsonText.utf8))
        #expect(r.code == 201, "\(kind): \(String(decoding: r.body, as: UTF8.self))")
        kinds.append(kind)
    }
    #expect(kinds == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"])
}

@Suite(.serialized) struct AutonomyControllerCommandTests {
    @Test func theBinaryWithTheManifestsServiceAccountReconcilesAndReleasesItsLeaseOnSIGTERM() async throws {
        let f = try await AutonomyFixture.start()
        defer { Task { await f.close() } }
        let dir = try TempDir("autonomy-cmd")
        defer { dir.remove() }
        try applyRBAC(f.api)
        let token = try f.api.serviceAccountToken(namespace: "kube-system", name: "edged-autonomy-controller")
        try f.api.writeKubeconfig(to: dir.sub("kubeconfig"), token: token)
        try f.node("edge-1", annotations: [NodeAutonomy.durationAnnotation: "0"])
        try f.pod("app", node: "edge-1")

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "\(buildBinDir)/edged")
        process.arguments = ["autonomy-controller", "--kubeconfig", dir.sub("kubeconfig"), "--identity", "ctl-x",
                             "--resync-seconds", "2", "--leader-elect-lease-duration", "3s",
                             "--leader-elect-renew-deadline", "2s", "--leader-elect-retry-period", "500ms"]
        FileManager.default.createFile(atPath: dir.sub("log"), contents: nil)
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: dir.sub("log")))
        process.standardOutput = out
        process.standardError = out
        try process.run()
        defer { if process.isRunning { process.terminate(); process.waitUntilExit() } }
        let log = { (try? String(contentsOfFile: dir.sub("log"), encoding: .utf8)) ?? "" }

        try await eventually("app reconciled by the process", timeout: 15) { f.seconds("app", "unreachable") == "forever" }
        try await eventually("the Event") { !f.events(about: "app", reason: "AutonomyTolerationsSet").isEmpty }
        #expect(log().contains("edged autonomy-controller") && log().contains("starting: identity ctl-x, lease kube-system/edged-autonomy-controller (duration 3s, renew deadline 2s, retry period 500ms), resync every 2s"), "\(log())")
        #expect(log().contains("became leader: lease kube-system/edged-autonomy-controller is held by ctl-x"))
        #expect(log().contains("pod default/app on node edge-1: NoExecute tolerations of unreachable/not-ready set to forever"))
        let lease = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/edged-autonomy-controller"
        #expect(path(f.api.objectJSON(lease), "spec", "holderIdentity") as? String == "ctl-x")
        try await Task.sleep(for: .seconds(2.5))   // a resync and several renewals
        #expect(!log().lowercased().contains("forbidden"), "\(log())")
        #expect(f.api.requests().filter { $0.code == 403 }.isEmpty, "\(f.api.requests().filter { $0.code == 403 })")

        process.terminate()   // SIGTERM
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(log())")
        #expect(path(f.api.objectJSON(lease), "spec", "holderIdentity") as? String == "")
        #expect(log().contains("released leader lease kube-system/edged-autonomy-controller"))
        print("edged autonomy-controller log:\n\(log())")

        // Least privilege: what it does not need, it may not do.
        let sa = try KubeClient(config: KubeClientConfig(server: f.api.url, caPEM: f.api.caPEM, credentials: .bearerToken(token)))
        func forbidden(_ what: String, _ call: () async throws -> Void) async {
            do {
                try await call()
                Issue.record("\(what) was allowed")
            } catch {
                #expect((error as? KubeError)?.isForbidden == true, "\(what): \(error)")
            }
        }
        await forbidden("delete a pod") { try await sa.delete(.pods, namespace: "default", name: "app") }
        await forbidden("list secrets") { _ = try await sa.list(.secrets) }
        await forbidden("patch a node") {
            _ = try await sa.patch(.nodes, name: "edge-1", .merge(.object([("metadata", .object([("labels", .object([("x", .string("y"))]))]))])))
        }
        await forbidden("read another Lease") { _ = try await sa.get(.leases, namespace: "kube-system", name: "kube-controller-manager") }
        await forbidden("create a Lease elsewhere") {
            _ = try await sa.create(.leases, namespace: "default", Lease(metadata: ObjectMeta(name: "x", namespace: "default")))
        }
    }
}
