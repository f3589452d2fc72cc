// End to end against the test API server (real TLS, client certificates, tokens, watch streams).

import EdgedCore
import EdgedHTTP
@testable import EdgedKube
import EdgedTestSupport
import Foundation
import Testing

/// A started test API server and an admin client; `close()` stops both.
struct KubeFixture {
    let server: KubeAPIServer
    let client: KubeClient

    static func start(options: KubeAPIServer.Options = .init()) async throws -> KubeFixture {
        let server = try await KubeAPIServer.start(options: options)
        let client = try KubeClient(config: KubeClientConfig(
            server: server.url, caPEM: server.caPEM,
            credentials: .clientCertificate(certificatePEM: server.adminCertPEM, privateKeyPEM: server.adminKeyPEM),
            userAgent: "edged/test", requestTimeout: .seconds(10)))
        return KubeFixture(server: server, client: client)
    }

    func client(_ credentials: KubeCredentials, caPEM: String? = nil) throws -> KubeClient {
        try KubeClient(config: KubeClientConfig(server: server.url, caPEM: caPEM ?? server.caPEM, credentials: credentials,
                                                requestTimeout: .seconds(10)))
    }

    func close() async {
        try? await server.shutdown()
    }

    static func uniqueName(_ prefix: String) -> String {
        "\(prefix)-\(UInt32.random(in: 0...UInt32.max))"
    }
}

@Suite struct KubeClientTests {
    @Test func crudAndErrorMapping() async throws {
        let f = try await KubeFixture.start()
        defer { Task { await f.close() } }
        let c = f.client
        let name = KubeFixture.uniqueName("cm")

        let created = try await c.create(.configMaps, namespace: "default",
                                         ConfigMap(metadata: ObjectMeta(name: name), data: ["a": "1"]))
        #expect(created.metadata.uid?.isEmpty == false)
        #expect(created.metadata.resourceVersion != nil)

        let got = try await c.get(.configMaps, namespace: "default", name: name)
        #expect(got.data == ["a": "1"])

        // 409 AlreadyExists on a second create.
        do {
            _ = try await c.create(.configMaps, namespace: "default", ConfigMap(metadata: ObjectMeta(name: name)))
            Issue.record("second create succeeded")
        } catch let e as KubeError {
            #expect(e.isAlreadyExists)
            #expect(e.statusCode == 409)
        }

        // PUT with the current RV works; with the old one it is a 409 Conflict.
        var changed = got
        changed.data = ["a": "2"]
        let updated = try await c.update(.configMaps, namespace: "default", changed)
        #expect(updated.data == ["a": "2"])
        do {
            _ = try await c.update(.configMaps, namespace: "default", changed)
            Issue.record("stale update succeeded")
        } catch let e as KubeError {
            #expect(e.isConflict, "\(e)")
        }

        // 404 with the server's message.
        do {
            _ = try await c.get(.configMaps, namespace: "default", name: name + "-missing")
            Issue.record("get of a missing object succeeded")
        } catch let e as KubeError {
            #expect(e.isNotFound)
            #expect(e.message.contains("404 NotFound"))
            #expect(e.message.contains(name + "-missing"))
        }

        // Delete with a wrong uid precondition is refused; with the right one it goes.
        do {
            try await c.delete(.configMaps, namespace: "default", name: name, options: DeleteOptions(preconditionUID: "wrong"))
            Issue.record("delete with a wrong uid precondition succeeded")
        } catch let e as KubeError {
            #expect(e.statusCode == 409)
        }
        try await c.delete(.configMaps, namespace: "default", name: name, options: DeleteOptions(preconditionUID: created.metadata.uid))
        await #expect(throws: KubeError.self) { _ = try await c.get(.configMaps, namespace: "default", name: name) }
    }

    @Test func patchTypes() async throws {
        let f = try await KubeFixture.start()
        defer { Task { await f.close() } }
        let c = f.client
        let name = KubeFixture.uniqueName("node")
        _ = try await c.create(.nodes, Node(metadata: ObjectMeta(name: name, labels: ["keep": "yes", "drop": "x"])))

        // Strategic merge of status: conditions merge by type.
        let now = KubeTime.time(Timestamp.now())
        var status = NodeStatus(conditions: [NodeCondition(type: "Ready", status: "False", lastHeartbeatTime: now),
                                             NodeCondition(type: "MemoryPressure", status: "False", lastHeartbeatTime: now)])
        _ = try await c.patch(.nodeStatus, name: name, try Patch.status(status))
        status = NodeStatus(conditions: [NodeCondition(type: "Ready", status: "True", lastHeartbeatTime: now)])
        let patched = try await c.patch(.nodeStatus, name: name, try Patch.status(status))
        let conditions = patched.status?.conditions ?? []
        #expect(conditions.count == 2)
        #expect(conditions.first { $0.type == "Ready" }?.status == "True")
        #expect(conditions.first { $0.type == "MemoryPressure" }?.status == "False")

        // JSON merge patch: null removes a label.
        let merged = try await c.patch(.nodes, name: name, .merge(try JSONValue.parse(#"{"metadata":{"labels":{"drop":null,"new":"1"}}}"#)))
        #expect(merged.metadata.labels == ["keep": "yes", "new": "1"])

        // JSON patch, with a failing test op → 422 and nothing changed.
        let jp = try await c.patch(.nodes, name: name, .json([.add(JSONPatchOperation.pointer(["metadata", "labels", "example.com/x"]), .string("v"))]))
        #expect(jp.metadata.labels?["example.com/x"] == "v")
        do {
            _ = try await c.patch(.nodes, name: name, .json([.test("/metadata/labels/keep", .string("no")),
                                                             .remove("/metadata/labels/keep")]))
            Issue.record("failing JSON patch test op applied")
        } catch let e as KubeError {
            #expect(e.statusCode == 422, "\(e)")
        }
        #expect(try await c.get(.nodes, name: name).metadata.labels?["keep"] == "yes")
    }

    @Test func rawReadModifyWriteKeepsUnknownFields() async throws {
        let f = try await KubeFixture.start()
        defer { Task { await f.close() } }
        let c = f.client
        let name = KubeFixture.uniqueName("lease")
        let lease = Lease(metadata: ObjectMeta(name: name, annotations: ["other.io/owner": "someone"]),
                          spec: LeaseSpec(holderIdentity: name, leaseDurationSeconds: 40))
        _ = try await c.create(.leases, namespace: "kube-node-lease", lease)

        var raw = try await c.getRaw(.leases, namespace: "kube-node-lease", name: name)
        raw.set(["spec", "renewTime"], to: .string(KubeTime.micro(Timestamp.now())))
        let written = try await c.updateRaw(.leases, namespace: "kube-node-lease", raw)
        #expect(written[path: ["spec", "renewTime"]] != nil)
        #expect(written[path: ["metadata", "annotations", "other.io/owner"]] == .string("someone"))
        #expect(written[path: ["spec", "leaseDurationSeconds"]] == .number("40"))
        let typed = try written.decode(as: Lease.self)
        #expect(typed.spec?.holderIdentity == name)
        #expect(typed.metadata.resourceVersion != raw.metadata.resourceVersion)
    }

    @Test func listFollowsContinueChunks() async throws {
        let f = try await KubeFixture.start()
        defer { Task { await f.close() } }
        let c = f.client
        let label = KubeFixture.uniqueName("batch")
        for i in 0..<7 {
            _ = try await c.create(.configMaps, namespace: "default",
                                   ConfigMap(metadata: ObjectMeta(name: "\(label)-\(i)", labels: ["batch": label])))
        }
        _ = try await c.create(.configMaps, namespace: "default", ConfigMap(metadata: ObjectMeta(name: "\(label)-other")))
        let list = try await c.list(.configMaps, namespace: "default", options: ListOptions(labelSelector: "batch=\(label)", limit: 3))
        #expect(list.items.count == 7)
        #expect(Set(list.items.compactMap(\.metadata.name)) == Set((0..<7).map { "\(label)-\($0)" }))
        #expect(list.resourceVersion != nil)
        let pages = f.server.requests().filter { $0.path.contains("limit=3") }
        #expect(pages.count == 3, "\(pages)")
        #expect(pages.filter { $0.path.contains("continue=") }.count == 2)

        let byField = try await c.list(.configMaps, namespace: "default", options: ListOptions(fieldSelector: FieldSelector.name("\(label)-3")))
        #expect(byField.items.map(\.metadata.name) == ["\(label)-3"])
    }

    @Test func expiredContinueTokenIsGone() async throws {
        let f = try await KubeFixture.start()
        defer { Task { await f.close() } }
        for i in 0..<4 {
            _ = try await f.client.create(.configMaps, namespace: "default", ConfigMap(metadata: ObjectMeta(name: "gone-\(i)")))
        }
        // Read the first page by hand, compact, then continue: 410.
        let first = try await f.client.send("GET", "/api/v1/namespaces/default/configmaps?limit=2")
        let page = try KubeJSON.decode(ObjectList<ConfigMap>.self, from: first.body)
        let token = try #require(page.metadata.continue)
        _ = try await f.client.create(.configMaps, namespace: "default", ConfigMap(metadata: ObjectMeta(name: "gone-new")))
        f.server.compact()
        do {
            _ = try await f.client.send("GET", "/api/v1/namespaces/default/configmaps?limit=2&continue=\(PathEscape.query(token))")
            Issue.record("expired continue token accepted")
        } catch let e as KubeError {
            #expect(e.isGone, "\(e)")
        }
    }

    @Test func watchWithBookmarksAndEvents() async throws {
        let f = try await KubeFixture.start(options: .init(watchBookmarkInterval: .milliseconds(200)))
        defer { Task { await f.close() } }
        let c = f.client
        let name = KubeFixture.uniqueName("w")
        let list = try await c.list(.configMaps, namespace: "default")
        let rv = try #require(list.resourceVersion)

        let stream: AsyncThrowingStream<WatchEvent<ConfigMap>, Error> = c.watch(.configMaps, namespace: "default",
            options: WatchOptions(resourceVersion: rv, fieldSelector: FieldSelector.name(name), timeoutSeconds: 30))
        let writer = Task {
            try await Task.sleep(for: .milliseconds(300))
            _ = try await c.create(.configMaps, namespace: "default", ConfigMap(metadata: ObjectMeta(name: name), data: ["v": "1"]))
            _ = try await c.patch(.configMaps, namespace: "default", name: name, .merge(.object([("data", .object([("v", .string("2"))]))])))
            try await c.delete(.configMaps, namespace: "default", name: name)
        }
        var kinds: [String] = []
        var bookmarks = 0
        for try await event in stream {
            switch event {
            case .added(let o): kinds.append("ADDED \(o.data?["v"] ?? "")")
            case .modified(let o): kinds.append("MODIFIED \(o.data?["v"] ?? "")")
            case .deleted: kinds.append("DELETED")
            case .bookmark(let v):
                bookmarks += 1
                #expect(!v.isEmpty)
            case .error(let st): Issue.record("watch error \(st)")
            }
            if kinds.count == 3 && bookmarks >= 1 { break }
        }
        try await writer.value
        #expect(kinds == ["ADDED 1", "MODIFIED 2", "DELETED"])
        #expect(bookmarks >= 1)
        let watchRequest = f.server.requests().first { $0.path.contains("watch=true") }
        #expect(watchRequest?.path.contains("allowWatchBookmarks=true") == true)
    }

    @Test func watchFromCompactedVersionGetsAnExpiredEvent() async throws {
        let f = try await KubeFixture.start()
        defer { Task { await f.close() } }
        let c = f.client
        let rv = try #require(try await c.list(.configMaps, namespace: "default").resourceVersion)
        _ = try await c.create(.configMaps, namespace: "default", ConfigMap(metadata: ObjectMeta(name: "after")))
        f.server.compact()
        struct Stop: Error {}
        var got: Status?
        do {
            try await c.watch(.configMaps, namespace: "default", options: WatchOptions(resourceVersion: rv, timeoutSeconds: 5)) { event in
                if case .error(let st) = event {
                    got = st
                    throw Stop()
                }
            }
        } catch is Stop {}

        #expect(got?.code == 410)
    }

    @Test func tokenAuthAndRejectedCredentials() async throws {
        let f = try await KubeFixture.start()
        defer { Task { await f.close() } }
        try f.server.addBootstrapToken(id: "abcdef", secret: "0123456789abcdef")

        // A bootstrap token may read cluster-info but not nodes.
        let boot = try f.client(.bearerToken("abcdef.0123456789abcdef"))
        let info = try await boot.get(.configMaps, namespace: "kube-public", name: "cluster-info")
        #expect(info.data?["kubeconfig"]?.contains(f.server.url) == true)
        do {
            _ = try await boot.list(.nodes)
            Issue.record("bootstrap token listed nodes")
        } catch let e as KubeError {
            #expect(e.isForbidden, "\(e)")
        }
        #expect(f.server.requests().contains { $0.user == "system:bootstrap:abcdef" })

        // A wrong token is a 401 whose message says what to do.
        let bad = try f.client(.bearerToken("abcdef.ffffffffffffffff"))
        do {
            _ = try await bad.get(.configMaps, namespace: "kube-public", name: "cluster-info")
            Issue.record("wrong token accepted")
        } catch let e as KubeError {
            #expect(e.isUnauthorized, "\(e)")
            #expect(e.message.contains("credentials rejected by \(f.server.url)"))
            #expect(e.message.contains("re-run edgectl join"))
        }
    }

    @Test func certificateFromAnotherCAIsRefused() async throws {
        let f = try await KubeFixture.start()
        defer { Task { await f.close() } }
        let otherCA = try TestPKI.makeCA(commonName: "not-the-cluster")
        let stranger = try otherCA.issueClient(cn: "system:node:intruder", orgs: ["system:nodes"])
        let c = try f.client(.clientCertificate(certificatePEM: stranger.certPEM, privateKeyPEM: stranger.keyPEM))
        do {
            _ = try await c.get(.nodes, name: "x")
            Issue.record("a certificate from another CA was accepted")
        } catch let e as KubeError {
            // A TLS refusal or a 401, depending on where the server checks; never a NotFound.
            #expect(e.isUnauthorized || e.isTransport, "\(e)")
            #expect(!e.isNotFound)
        }
    }

    @Test func wrongClusterCAIsATransportError() async throws {
        let f = try await KubeFixture.start()
        defer { Task { await f.close() } }
        let otherCA = try TestPKI.makeCA(commonName: "other")
        let c = try f.client(.none, caPEM: otherCA.caPEM)
        do {
            _ = try await c.get(.configMaps, namespace: "kube-public", name: "cluster-info")
            Issue.record("server verified against the wrong CA")
        } catch let e as KubeError {
            #expect(e.isTransport)
            #expect(e.message.contains(f.server.url), "\(e)")
        }
    }

    @Test func closedPortIsAFastTransportError() async throws {
        let f = try await KubeFixture.start()
        defer { Task { await f.close() } }
        let started = ContinuousClock.now
        let closed = try KubeClient(config: KubeClientConfig(server: "https://127.0.0.1:1", caPEM: f.server.caPEM, credentials: .none))
        do {
            _ = try await closed.get(.nodes, name: "x")
            Issue.record("closed port answered")
        } catch let e as KubeError {
            #expect(e.isTransport)
            #expect(e.message.contains("127.0.0.1:1"))
        }
        #expect(ContinuousClock.now - started < .seconds(2))
        #expect(throws: KubeError.self) {
            _ = try KubeClient(config: KubeClientConfig(server: "ftp://x", caPEM: nil, credentials: .none))
        }
    }

    @Test func subresourcesCSRAndTokenRequest() async throws {
        let f = try await KubeFixture.start(options: .init(autoApproveCSRs: false))
        defer { Task { await f.close() } }
        let c = f.client
        let node = KubeFixture.uniqueName("edge")
        let csrPEM = try TestCSR.make(commonName: "system:node:\(node)", organization: "system:nodes").csrPEM
        let name = KubeFixture.uniqueName("csr")
        let csr = CertificateSigningRequest(metadata: ObjectMeta(name: name), spec: CertificateSigningRequestSpec(
            request: Data(csrPEM.utf8), signerName: "kubernetes.io/kube-apiserver-client-kubelet",
            usages: ["digital signature", "client auth"], expirationSeconds: 3600))
        var stored = try await c.create(.certificateSigningRequests, csr)
        #expect(stored.status?.certificate == nil)
        var approval = stored
        approval.status = CertificateSigningRequestStatus(conditions: [
            CertificateSigningRequestCondition(type: "Approved", reason: "Test", message: "approved by the test")])
        stored = try await c.update(.certificateSigningRequestApproval, approval)
        #expect(stored.hasCondition("Approved"))
        var issued: CertificateSigningRequest?
        for _ in 0..<50 {
            let cur = try await c.get(.certificateSigningRequests, name: name)
            if cur.status?.certificate != nil { issued = cur; break }
            try await Task.sleep(for: .milliseconds(100))
        }
        let pem = String(decoding: try #require(issued?.status?.certificate), as: UTF8.self)
        #expect(pem.contains("BEGIN CERTIFICATE"))

        let token = try await c.create(.serviceAccountToken, namespace: "default", name: "default",
                                       TokenRequest(spec: TokenRequestSpec(audiences: [], expirationSeconds: 3600)))
        let jwt = try #require(token.status?.token)
        #expect(jwt.split(separator: ".").count == 3)
        // The token authenticates as the ServiceAccount.
        let sa = try f.client(.bearerToken(jwt))
        _ = try? await sa.get(.configMaps, namespace: "default", name: "x")
        #expect(f.server.requests().contains { $0.user == "system:serviceaccount:default:default" })
    }

    @Test func credentialRotationKeepsOpenWatches() async throws {
        // Node identities writing ConfigMaps: only the rotation matters here, so the node authorizer is off.
        let f = try await KubeFixture.start(options: .init(watchBookmarkInterval: .seconds(30), nodeAuthorizer: false))
        defer { Task { await f.close() } }
        let node = KubeFixture.uniqueName("rot")
        let first = try f.server.pki.issueClient(cn: "system:node:\(node)", orgs: ["system:nodes"])
        let second = try f.server.pki.issueClient(cn: "system:node:\(node)-renewed", orgs: ["system:nodes"])
        let c = try f.client(.clientCertificate(certificatePEM: first.certPEM, privateKeyPEM: first.keyPEM))
        let rv = try #require(try await c.list(.configMaps, namespace: "default").resourceVersion)
        let name = KubeFixture.uniqueName("rot-cm")

        let stream: AsyncThrowingStream<WatchEvent<ConfigMap>, Error> = c.watch(.configMaps, namespace: "default",
            options: WatchOptions(resourceVersion: rv, fieldSelector: FieldSelector.name(name), timeoutSeconds: 30))
        var iterator = stream.makeAsyncIterator()
        _ = try await c.create(.configMaps, namespace: "default", ConfigMap(metadata: ObjectMeta(name: name)))
        guard case .added = try await iterator.next() else { Issue.record("want ADDED"); return }

        try c.updateCredentials(.clientCertificate(certificatePEM: second.certPEM, privateKeyPEM: second.keyPEM))
        _ = try await c.patch(.configMaps, namespace: "default", name: name, .merge(.object([("data", .object([("k", .string("v"))]))])))
        guard case .modified(let m) = try await iterator.next() else { Issue.record("the open watch did not survive rotation"); return }
        #expect(m.data?["k"] == "v")
        let users = f.server.requests().filter { $0.method == "PATCH" }.map(\.user)
        #expect(users == ["system:node:\(node)-renewed"])
    }
}
