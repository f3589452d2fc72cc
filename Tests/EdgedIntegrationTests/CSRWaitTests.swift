// How edged waits for a CSR's certificate (CSRFlow), against the test API server: one list and one watch of that one
// CSR instead of a GET every 500 ms, polling with back-off only where the watch is refused, a dropped watch resumed,
// and a denied, deleted or unanswered CSR reported with what to do. No root, no daemon: the flow itself, with the
// credentials edged uses (the bootstrap token at join, the node's client certificate for the serving CSR).

import EdgedCluster
import EdgedCore
import EdgedCredentials
import EdgedKube
import EdgedTestSupport
import Foundation
import Logging
import Testing

private let csrPath = "/apis/certificates.k8s.io/v1/certificatesigningrequests"

/// A test API server that approves nothing by itself, and a client as the join's bootstrap token.
private struct CSRFixture {
    let api: KubeAPIServer
    let client: KubeClient
    let logger = Logger(label: "test.csr")

    static func start() async throws -> CSRFixture {
        let api = try await KubeAPIServer.start(options: .init(autoApproveCSRs: false))
        try api.addBootstrapToken(id: "abcdef", secret: "0123456789abcdef")
        let client = try KubeClient(config: KubeClientConfig(server: api.url, caPEM: api.caPEM,
                                                             credentials: .bearerToken("abcdef.0123456789abcdef"),
                                                             requestTimeout: .seconds(10)))
        return CSRFixture(api: api, client: client)
    }

    /// Creates a client-certificate CSR for node `node` as the join does. Returns (name, uid, key).
    func create(node: String = "edge-1") async throws -> (String, String?, NodeKey) {
        let key = NodeKey.generate()
        let csr = try NodeCSR.client(nodeName: node, key: key)
        let (name, uid) = try await CSRFlow.create(client, csr: csr, what: "client certificate", logger: logger)
        return (name, uid, key)
    }

    /// Starts waiting for `name` in the background.
    func wait(_ name: String, uid: String?, options: CSRWaitOptions) -> Task<String, any Error> {
        Task { [client, logger] in
            try await CSRFlow.waitForCertificate(client, name: name, uid: uid, options: options, what: "client certificate",
                                                 nextStep: "then run join again", logger: logger)
        }
    }

    /// Requests about CSR `name` (its own path, or the collection with its field selector), by verb.
    func requests(about name: String) -> [KubeAPIServer.RequestRecord] {
        api.requests().filter { r in
            r.path.hasPrefix("\(csrPath)/\(name)") || (r.path.hasPrefix("\(csrPath)?") && r.path.contains(name))
        }
    }

    func watches(about name: String) -> Int { requests(about: name).filter { $0.path.contains("watch=true") }.count }
    func lists(about name: String) -> Int {
        requests(about: name).filter { $0.path.hasPrefix("\(csrPath)?") && !$0.path.contains("watch=true") }.count
    }
    func gets(about name: String) -> Int { requests(about: name).filter { $0.method == "GET" && $0.path.hasPrefix("\(csrPath)/\(name)") }.count }

    func close() async { try? await api.shutdown() }
}

/// What obtainServingCertificate reported: the CSRs it made, the one pending now, each try's error.
private final class Seen: @unchecked Sendable {
    private let lock = NSLock()
    private var _names: [String] = []
    private var _current: String?
    private var _errors: [any Error] = []
    var names: [String] { lock.withLock { _names } }
    var current: String? { lock.withLock { _current } }
    var errors: [any Error] { lock.withLock { _errors } }
    func pending(_ name: String?) async {
        lock.withLock {
            _current = name
            if let name { _names.append(name) }
        }
    }
    func failed(_ error: any Error) async { lock.withLock { _errors.append(error) } }
}

/// Waits up to `seconds` for `condition`.
private func eventually(_ seconds: Double, _ condition: () -> Bool) async throws -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        try await Task.sleep(for: .milliseconds(50))
    }
    return condition()
}

@Suite struct CSRWaitTests {
    /// The old loop sent a GET every 500 ms: 12 in 6 s. Now: one list, one watch, and the certificate arrives with
    /// the approval's event, not with the next poll.
    @Test func waitsWithOneWatchOfThatCSR() async throws {
        let f = try await CSRFixture.start()
        defer { Task { await f.close() } }
        let (name, uid, key) = try await f.create()
        let waiting = f.wait(name, uid: uid, options: CSRWaitOptions(timeout: .seconds(60)))
        #expect(try await eventually(5) { f.api.openWatches("certificatesigningrequests", namespace: nil, name: name) == 1 })
        try await Task.sleep(for: .seconds(6))
        let during = f.requests(about: name)
        #expect(during.count == 2, "one list and one watch, no polling: \(during)")
        #expect(f.lists(about: name) == 1 && f.watches(about: name) == 1, "\(during)")
        #expect(during.allSatisfy { $0.path.contains("fieldSelector=metadata.name%3D\(name)") }, "\(during)")
        #expect(during.allSatisfy { $0.code == 200 && $0.user == "system:bootstrap:abcdef" }, "\(during)")

        let approved = Date()
        try f.api.approveCSR(name)
        let pem = try await waiting.value
        #expect(Date().timeIntervalSince(approved) < 2, "the certificate came with the watch event")
        let info = try CertificateInfo(pem: pem, source: "issued")
        #expect(info.matches(key))
        #expect(info.commonName == "system:node:edge-1")
        #expect(f.requests(about: name).count == 2, "\(f.requests(about: name))")
        #expect(try await eventually(5) { f.api.openWatches("certificatesigningrequests", namespace: nil, name: name) == 0 })
    }

    /// A CSR approved before the wait starts is answered by the list alone.
    @Test func anIssuedCSRNeedsNoWatch() async throws {
        let f = try await CSRFixture.start()
        defer { Task { await f.close() } }
        let (name, uid, _) = try await f.create()
        try f.api.approveCSR(name)
        let pem = try await f.wait(name, uid: uid, options: CSRWaitOptions(timeout: .seconds(10))).value
        #expect(pem.contains("BEGIN CERTIFICATE"))
        #expect(f.watches(about: name) == 0 && f.lists(about: name) == 1, "\(f.requests(about: name))")
    }

    /// Where the watch is refused (a proxy without watches: 405), the CSR is polled with GETs whose pauses double
    /// (here 200 ms up to 800 ms; edged's default is 1 s up to 64 s), never faster.
    @Test func aRefusedWatchFallsBackToPollingWithBackOff() async throws {
        let f = try await CSRFixture.start()
        defer { Task { await f.close() } }
        let (name, uid, _) = try await f.create()
        f.api.injectFault(path: csrPath, .refusedWatch(code: 405))
        let options = CSRWaitOptions(timeout: .seconds(60), pollInitial: .milliseconds(200), pollMax: .milliseconds(800))
        let waiting = f.wait(name, uid: uid, options: options)
        try await Task.sleep(for: .seconds(4))
        #expect(f.api.pendingFaults == 0)
        let refused = f.requests(about: name).filter { $0.path.contains("watch=true") }
        #expect(refused.count == 1 && refused.first?.code == 405, "\(f.requests(about: name))")
        #expect(f.api.openWatches("certificatesigningrequests", namespace: nil, name: name) == 0)
        // Pauses 0.2, 0.4, 0.8, 0.8, ... s (±10 %): about 6 GETs in 4 s; 500 ms polling would have sent 8.
        let gets = f.gets(about: name)
        #expect((4...7).contains(gets), "GETs in 4 s: \(gets)")
        try f.api.approveCSR(name)
        let pem = try await waiting.value
        #expect(pem.contains("BEGIN CERTIFICATE"))
        #expect(f.watches(about: name) == 1, "no second watch once polling")
    }

    /// A watch cut off mid-stream (the connection drops) is opened again from the last resourceVersion, without a
    /// new list, and the approval still arrives.
    @Test func aDroppedWatchIsResumed() async throws {
        let f = try await CSRFixture.start()
        defer { Task { await f.close() } }
        let (name, uid, _) = try await f.create()
        f.api.injectFault(path: csrPath, .truncatedWatch(afterEvents: 0), count: 2)
        let options = CSRWaitOptions(timeout: .seconds(60), pollMax: .seconds(2), retryInitial: .milliseconds(200))
        let waiting = f.wait(name, uid: uid, options: options)
        #expect(try await eventually(10) { f.api.openWatches("certificatesigningrequests", namespace: nil, name: name) == 1 })
        #expect(f.api.pendingFaults == 0)
        #expect(f.watches(about: name) == 3, "two cut watches, then one that stays: \(f.requests(about: name))")
        #expect(f.lists(about: name) == 1, "resumed from the resourceVersion, not listed again")
        #expect(f.requests(about: name).filter { $0.path.contains("watch=true") }.allSatisfy { $0.path.contains("resourceVersion=") })
        try f.api.approveCSR(name)
        #expect(try await waiting.value.contains("BEGIN CERTIFICATE"))
    }

    /// A watch that cannot resume because its resourceVersion was compacted away meanwhile (410 Gone) lists again.
    @Test func anExpiredResourceVersionIsListedAgain() async throws {
        let f = try await CSRFixture.start()
        defer { Task { await f.close() } }
        let (name, uid, _) = try await f.create()
        f.api.injectFault(path: csrPath, .truncatedWatch(afterEvents: 0))
        let options = CSRWaitOptions(timeout: .seconds(60), pollMax: .seconds(2), retryInitial: .seconds(1))
        let waiting = f.wait(name, uid: uid, options: options)
        #expect(try await eventually(5) { f.api.pendingFaults == 0 })
        _ = try await f.create(node: "edge-other")   // a newer resourceVersion, then history forgotten
        f.api.compact()
        #expect(try await eventually(10) { f.api.openWatches("certificatesigningrequests", namespace: nil, name: name) == 1 })
        let requests = f.requests(about: name)
        #expect(f.lists(about: name) == 2, "listed again after the 410: \(requests)")
        #expect(f.watches(about: name) == 3, "the cut one, the expired one (an ERROR event 410), the new one: \(requests)")
        try f.api.approveCSR(name)
        #expect(try await waiting.value.contains("BEGIN CERTIFICATE"))

        // The same answered as an HTTP 410 at the watch's start (what a proxy or an older server may send).
        let (second, secondUID, _) = try await f.create()
        f.api.injectFault(path: csrPath, .refusedWatch(code: 410))
        let again = f.wait(second, uid: secondUID, options: options)
        #expect(try await eventually(10) { f.api.openWatches("certificatesigningrequests", namespace: nil, name: second) == 1 })
        #expect(f.lists(about: second) == 2 && f.watches(about: second) == 2, "\(f.requests(about: second))")
        #expect(f.requests(about: second).contains { $0.code == 410 }, "\(f.requests(about: second))")
        try f.api.approveCSR(second)
        #expect(try await again.value.contains("BEGIN CERTIFICATE"))

        // A server that keeps answering 410 to fresh versions is not hammered: the second 410 in a row waits 1 s,
        // the third 2 s (±10 %) before the next list.
        let (third, thirdUID, _) = try await f.create()
        f.api.injectFault(path: csrPath, .refusedWatch(code: 410), count: 3)
        let started = Date()
        let third410 = f.wait(third, uid: thirdUID, options: options)
        #expect(try await eventually(10) { f.api.openWatches("certificatesigningrequests", namespace: nil, name: third) == 1 })
        let took = Date().timeIntervalSince(started)
        #expect(took > 2.6 && took < 5, "\(took) s")
        #expect(f.lists(about: third) == 4 && f.watches(about: third) == 4, "\(f.requests(about: third))")
        try f.api.approveCSR(third)
        #expect(try await third410.value.contains("BEGIN CERTIFICATE"))
    }

    /// A watch that ends at once, cleanly and without an event (something in between closes streams), is opened
    /// again after a back-off (200 ms, 400 ms, 800 ms here), not in a tight loop.
    @Test func aWatchClosedAtOnceIsRetriedWithBackOff() async throws {
        let f = try await CSRFixture.start()
        defer { Task { await f.close() } }
        let (name, uid, _) = try await f.create()
        f.api.injectFault(path: csrPath, .closedWatch, count: 3)
        let started = Date()
        let options = CSRWaitOptions(timeout: .seconds(60), pollMax: .seconds(2), retryInitial: .milliseconds(200))
        let waiting = f.wait(name, uid: uid, options: options)
        #expect(try await eventually(10) { f.api.openWatches("certificatesigningrequests", namespace: nil, name: name) == 1 })
        let took = Date().timeIntervalSince(started)
        #expect(took > 1.2 && took < 4, "\(took) s")
        #expect(f.watches(about: name) == 4 && f.lists(about: name) == 1, "\(f.requests(about: name))")
        try f.api.approveCSR(name)
        #expect(try await waiting.value.contains("BEGIN CERTIFICATE"))
    }

    /// The API server going away and coming back: the wait retries with back-off and gets the certificate.
    @Test func anAPIServerOutageIsWaitedOut() async throws {
        let f = try await CSRFixture.start()
        defer { Task { await f.close() } }
        let (name, uid, _) = try await f.create()
        let options = CSRWaitOptions(timeout: .seconds(60), pollMax: .seconds(1), retryInitial: .milliseconds(200))
        let waiting = f.wait(name, uid: uid, options: options)
        #expect(try await eventually(5) { f.api.openWatches("certificatesigningrequests", namespace: nil, name: name) == 1 })
        try await f.api.stop()
        try await Task.sleep(for: .seconds(2))
        try f.api.approveCSR(name)
        try await f.api.resume()
        let pem = try await waiting.value
        #expect(pem.contains("BEGIN CERTIFICATE"))
    }

    @Test func deniedDeletedAndUnansweredCSRsSayWhatToDo() async throws {
        let f = try await CSRFixture.start()
        defer { Task { await f.close() } }

        let (denied, deniedUID, _) = try await f.create()
        let deniedWait = f.wait(denied, uid: deniedUID, options: CSRWaitOptions(timeout: .seconds(30)))
        #expect(try await eventually(5) { f.api.openWatches("certificatesigningrequests", namespace: nil, name: denied) == 1 })
        try f.api.denyCSR(denied)
        let d = await #expect(throws: CSRWaitFailure.self) { try await deniedWait.value }
        #expect(d?.reason == .denied)
        #expect(d?.message.contains("CSR \(denied) for the client certificate was denied: denied by the test: ask the cluster admin, then run join again") == true, "\(String(describing: d))")

        let (deleted, deletedUID, _) = try await f.create()
        let deletedWait = f.wait(deleted, uid: deletedUID, options: CSRWaitOptions(timeout: .seconds(30)))
        #expect(try await eventually(5) { f.api.openWatches("certificatesigningrequests", namespace: nil, name: deleted) == 1 })
        try f.api.delete("\(csrPath)/\(deleted)")
        let e = await #expect(throws: CSRWaitFailure.self) { try await deletedWait.value }
        #expect(e?.reason == .deleted && e?.message.contains("was deleted before it was approved") == true, "\(String(describing: e))")

        let (pending, pendingUID, _) = try await f.create()
        let started = ContinuousClock.now
        let t = await #expect(throws: CSRWaitFailure.self) {
            try await f.wait(pending, uid: pendingUID, options: CSRWaitOptions(timeout: .seconds(2))).value
        }
        let took = ContinuousClock.now - started
        #expect(t?.reason == .timedOut)
        #expect(t?.message.contains("was not approved within 2 s: approve it with `kubectl certificate approve \(pending)`") == true, "\(String(describing: t))")
        #expect(took >= .seconds(2) && took < .seconds(5), "\(took)")
        #expect(f.requests(about: pending).count == 2, "a list and one watch for the whole wait: \(f.requests(about: pending))")
    }

    /// A CSR the signer refuses (a kubelet-serving request without a DNS or IP name) fails with the signer's reason;
    /// an object of the same name with another UID (deleted and made again meanwhile) is not taken for ours.
    @Test func failedAndReplacedCSRsAreNotWaitedFor() async throws {
        let f = try await CSRFixture.start()
        defer { Task { await f.close() } }
        let key = NodeKey.generate()
        let pem = try NodeCSR.client(nodeName: "edge-3", key: key).pem
        var meta = ObjectMeta()
        meta.generateName = "node-csr-"
        let created = try await f.client.create(.certificateSigningRequests, CertificateSigningRequest(
            metadata: meta, spec: .init(request: Data(pem.utf8), signerName: NodeCSR.servingSignerName,
                                        usages: ["digital signature", "server auth"])))
        let name = try #require(created.metadata.name)
        let waiting = f.wait(name, uid: created.metadata.uid, options: CSRWaitOptions(timeout: .seconds(30)))
        #expect(try await eventually(5) { f.api.openWatches("certificatesigningrequests", namespace: nil, name: name) == 1 })
        try f.api.approveCSR(name)
        let failed = await #expect(throws: CSRWaitFailure.self) { try await waiting.value }
        #expect(failed?.reason == .failed, "\(String(describing: failed))")
        #expect(failed?.message.contains("CSR \(name) for the client certificate failed: kubernetes.io/kubelet-serving certificates need at least one DNS or IP SAN (the signer refused it)") == true,
                "\(String(describing: failed))")

        let (other, _, _) = try await f.create()
        let replaced = await #expect(throws: CSRWaitFailure.self) {
            try await f.wait(other, uid: "not-its-uid", options: CSRWaitOptions(timeout: .seconds(30))).value
        }
        #expect(replaced?.reason == .replaced && replaced?.message.contains("replaced by another object of the same name") == true,
                "\(String(describing: replaced))")
    }

    /// The serving certificate, as kubelet asks for it: a CSR nobody approves in time is given up and a new one (new
    /// key) made after a short pause, likewise after a denial; the approved one's certificate is stored with its key.
    @Test func theServingCertificateIsAskedForAgainAfterATimeoutOrADenial() async throws {
        let f = try await CSRFixture.start()
        defer { Task { await f.close() } }
        let dir = try TempDir("edged-serving-csr")
        defer { dir.remove() }
        let store = CredentialStore(dir: dir.sub("pki"))
        let seen = Seen()
        let started = Date()
        let run = Task { [client = f.client, logger = f.logger] in
            await CSRFlow.obtainServingCertificate(
                client, store: store, nodeName: "edge-4", ipAddresses: ["10.0.0.4"],
                options: CSRWaitOptions(timeout: .milliseconds(1500)), retryInitial: .milliseconds(200),
                retryMax: .milliseconds(400), logger: logger,
                pending: { await seen.pending($0) }, failed: { await seen.failed($0) })
        }
        // The first CSR times out after 1.5 s; the second comes about 0.2 s later.
        // #require: the lines below index the names (a crash would end every other test of the run).
        try #require(try await eventually(10) { seen.names.count == 2 }, "\(seen.names), \(seen.errors)")
        let elapsed = Date().timeIntervalSince(started)
        // Not before the 1.5 s timeout; the upper bound leaves room for a loaded 2-core machine (it took 4.5 s
        // while other suites ran).
        #expect(elapsed > 1.5 && elapsed < 9, "\(elapsed) s")
        #expect((seen.errors.first as? CSRWaitFailure)?.reason == .timedOut, "\(seen.errors)")
        #expect(seen.current == seen.names[1])
        // Denied: a third.
        try f.api.denyCSR(seen.names[1])
        try #require(try await eventually(10) { seen.names.count == 3 }, "\(seen.names), \(seen.errors)")
        #expect((seen.errors.last as? CSRWaitFailure)?.reason == .denied, "\(seen.errors)")
        // Approved: stored, and nothing pending any more.
        try f.api.approveCSR(seen.names[2])
        await run.value
        #expect(seen.current == nil)
        let pair = try #require(try store.loadPair(.serving))
        #expect(pair.info.commonName == "system:node:edge-4" && pair.info.ipAddresses == ["10.0.0.4"] && pair.info.dnsNames == ["edge-4"])
        #expect(Set(seen.names).count == 3)
        let serving = f.api.requests().filter { $0.method == "POST" && $0.path == csrPath }
        #expect(serving.count == 3, "one CSR per try: \(serving)")
        // A stored certificate: nothing asked.
        let before = f.api.requests().count
        await CSRFlow.obtainServingCertificate(f.client, store: store, nodeName: "edge-4", ipAddresses: [], logger: f.logger,
                                               pending: { _ in }, failed: { _ in })
        #expect(f.api.requests().count == before)
    }

    /// The join path (CSRFlow.request) with the same waiting: the error for a CSR nobody approves.
    @Test func joinRequestTimesOutWithTheCSRName() async throws {
        let f = try await CSRFixture.start()
        defer { Task { await f.close() } }
        let key = NodeKey.generate()
        do {
            _ = try await CSRFlow.request(f.client, csr: try NodeCSR.client(nodeName: "edge-2", key: key), timeoutSeconds: 2,
                                          what: "client certificate", logger: f.logger)
            Issue.record("the request did not time out")
        } catch let error as EdgedError {
            #expect(error.code == .io)
            #expect(error.message.contains("kubectl certificate approve node-csr-") && error.message.contains("then run join again"), "\(error)")
        }
        let all = f.api.requests().filter { $0.path.hasPrefix(csrPath) }
        #expect(all.count == 3, "create, list, watch: \(all)")
    }
}
