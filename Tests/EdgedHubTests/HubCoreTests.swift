// The hub core in-process (EdgeHub with its probe, replayer and cache writer running; no listeners) against the
// real test API server and a real SQLite store in a temp dir: caching per client, offline reads, offline watches,
// the write queue, bad input from upstream (fault injection in the test API server), and edged's in-process
// transport online and right after an offline start.

import EdgedCore
@testable import EdgedHub
import EdgedKube
import EdgedTestSupport
import Foundation
import Logging
import Synchronization
import Testing

let kubeProxyUA = "kube-proxy/v1.31.0 (linux/amd64) kubernetes/abc1234"
let edgedUA = "edged/0.1.0 (linux/amd64) kubelet/v1.31.0"

/// A test API server, a temp dir with the hub's store, and an EdgeHub running on them (probe every 100 ms, one
/// failure or success flips the state, so cutting the cloud is noticed at once).
final class HubFixture: Sendable {
    let api: KubeAPIServer
    let dir: TempDir
    let logs = LogSink()
    let clientConfig: KubeClientConfig
    private let running = Mutex<(hub: EdgeHub, task: Task<Void, Never>)?>(nil)

    static let fastHealth = CloudHealthConfig(interval: .milliseconds(100), timeout: .seconds(1), failureThreshold: 1,
                                              successThreshold: 1)

    var storePath: String { dir.sub("hub/cache.db") }

    private init(api: KubeAPIServer, dir: TempDir) {
        self.api = api
        self.dir = dir
        clientConfig = KubeClientConfig(server: api.url, caPEM: api.caPEM,
                                        credentials: .clientCertificate(certificatePEM: api.adminCertPEM, privateKeyPEM: api.adminKeyPEM),
                                        userAgent: edgedUA, requestTimeout: .seconds(5), connectTimeout: .seconds(2))
    }

    static func run(health: CloudHealthConfig = fastHealth, waitOnline: Bool = true,
                    _ body: (HubFixture) async throws -> Void) async throws {
        let api = try await KubeAPIServer.start()
        let f = HubFixture(api: api, dir: try TempDir("hubcore"))
        do {
            try await f.startHub(health: health)
            if waitOnline { try await f.waitFor(.online) }
            try await body(f)
        } catch {
            await f.close()
            throw error
        }
        await f.close()
    }

    var hub: EdgeHub { running.withLock { $0!.hub } }

    /// Starts an EdgeHub on the fixture's store (stopping the one running, if any).
    @discardableResult
    func startHub(health: CloudHealthConfig = fastHealth) async throws -> EdgeHub {
        await stopHub()
        var config = HubConfig(nodeName: "edge-1")
        config.offlineBookmarkInterval = .milliseconds(300)
        config.forwardTimeout = .seconds(5)
        var listeners = HubListeners()
        listeners.http = nil
        listeners.https = nil
        listeners.health = nil
        let hub = try EdgeHub(config: config, clientConfig: clientConfig, storePath: storePath, maxStoreBytes: 256 << 20,
                              health: health, listeners: listeners, logger: logs.logger)
        let task = Task { await hub.run() }
        running.withLock { $0 = (hub, task) }
        return hub
    }

    func stopHub() async {
        guard let r = running.withLock({ r in defer { r = nil }; return r }) else { return }
        r.task.cancel()
        await r.task.value
    }

    func close() async {
        await stopHub()
        api.setBlackhole(false)
        try? await api.shutdown()
        dir.remove()
    }

    func waitFor(_ state: CloudState, timeout: Duration = .seconds(10)) async throws {
        try await eventually("the hub sees the cloud \(state) (now \(hub.health.current))", timeout: timeout) {
            hub.health.current == state
        }
    }

    /// Stops the API server and waits until the hub's probe noticed.
    func cutCloud() async throws {
        try await api.stop()
        try await waitFor(.offline)
    }

    func restoreCloud() async throws {
        try await api.resume()
        try await waitFor(.online)
    }

    /// One request through the hub's in-process transport, as client `userAgent`.
    func call(_ userAgent: String, _ method: String, _ path: String, body: String? = nil,
              contentType: String = "application/json") async throws -> KubeResponse {
        var headers = [("Accept", "application/json")]
        if body != nil { headers.append(("Content-Type", contentType)) }
        let request = KubeRequest(method: method, path: path, headers: headers, body: body.map { Array($0.utf8) })
        return try await hub.transport(userAgent: userAgent).execute(request, timeout: .seconds(15))
    }

    /// A GET that must answer 200 with JSON.
    func getJSON(_ userAgent: String, _ path: String) async throws -> JSONValue {
        let r = try await call(userAgent, "GET", path)
        guard r.status == 200 else { throw TestFailure("GET \(path) as \(userAgent): \(r.status) \(text(r.body).prefix(300))") }
        return try JSONValue.parse(r.body)
    }

    func stored(_ component: String, _ resource: String = "/v1/pods", namespace: String? = nil) throws -> [StoredObject] {
        try hub.store.list(component: component, resource: resource, namespace: namespace)
    }

    func storedNames(_ component: String, _ resource: String = "/v1/pods", namespace: String? = nil) throws -> [String] {
        try stored(component, resource, namespace: namespace).map { "\($0.key.namespace)/\($0.key.name)" }
    }
}

func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

func items(_ list: JSONValue) -> [JSONValue] {
    if case .array(let a)? = list["items"] { return a }
    return []
}

/// "namespace/name" of a list's items, sorted.
func itemNames(_ list: JSONValue) -> [String] {
    items(list).map { "\($0[path: ["metadata", "namespace"]]?.stringValue ?? "")/\($0[path: ["metadata", "name"]]?.stringValue ?? "")" }.sorted()
}

func eventually(_ what: String, timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while true {
        if try await condition() { return }
        if ContinuousClock.now >= deadline { throw TestFailure("timed out after \(timeout): \(what)") }
        try await Task.sleep(for: .milliseconds(20))
    }
}

/// A streamed request (a watch) through the hub's transport, its lines recorded as they come.
final class StreamRecorder: Sendable {
    private struct State {
        var status: Int?
        var lines: [String] = []
        var pending: [UInt8] = []
        var ended: ContinuousClock.Instant?
        var error: String?
    }
    private let state = Mutex(State())
    private let task = Mutex<Task<Void, Never>?>(nil)

    static func start(_ transport: HubTransport, _ path: String) -> StreamRecorder {
        let r = StreamRecorder()
        let request = KubeRequest(method: "GET", path: path, headers: [("Accept", "application/json")])
        let t = Task {
            do {
                try await transport.streamResponse(request, idleTimeout: nil) { head, chunks in
                    r.state.withLock { $0.status = head.status }
                    for try await chunk in chunks { r.feed(chunk) }
                }
            } catch {
                r.state.withLock { $0.error = "\(error)" }
            }
            r.state.withLock { $0.ended = .now }
        }
        r.task.withLock { $0 = t }
        return r
    }

    private func feed(_ chunk: [UInt8]) {
        state.withLock { s in
            for b in chunk {
                if b == 0x0A {
                    s.lines.append(text(s.pending))
                    s.pending.removeAll()
                } else {
                    s.pending.append(b)
                }
            }
        }
    }

    var status: Int? { state.withLock { $0.status } }
    var lines: [String] { state.withLock { $0.lines } }
    /// Bytes after the last newline (a partial line).
    var partial: String { state.withLock { text($0.pending) } }
    var ended: ContinuousClock.Instant? { state.withLock { $0.ended } }
    var error: String? { state.withLock { $0.error } }

    func events() throws -> [JSONValue] { try lines.map { try JSONValue.parse($0) } }

    func stop() async {
        let t = task.withLock { $0 }
        t?.cancel()
        await t?.value
    }
}

@Suite struct HubCoreTests {
    // MARK: 1. Online caching per client

    @Test func onlineReadsOfACachedClientAreStoredAndSharedAcrossItsUserAgents() async throws {
        try await HubFixture.run { f in
            try f.api.createPods(namespace: "default", count: 3, nodeName: "edge-1")
            try f.api.createPods(namespace: "other", count: 2, nodeName: "edge-1", namePrefix: "o-")

            // list (all namespaces), get, watch as kube-proxy.
            let list = try await f.getJSON(kubeProxyUA, "/api/v1/pods")
            #expect(itemNames(list).count == 5)
            let listRV = try #require(list[path: ["metadata", "resourceVersion"]]?.stringValue)
            let got = try await f.getJSON(kubeProxyUA, "/api/v1/namespaces/default/pods/pod-0")
            #expect(got[path: ["metadata", "name"]]?.stringValue == "pod-0")
            await f.hub.drainCacheWrites()
            #expect(try f.storedNames("kube-proxy") == ["default/pod-0", "default/pod-1", "default/pod-2", "other/o-0", "other/o-1"])
            #expect(try f.hub.store.listResourceVersion(component: "kube-proxy", resource: "/v1/pods", namespace: nil) == listRV)
            // List items are stored whole, with kind and apiVersion added.
            let item = try JSONValue.parse(try #require(try f.hub.store.get(StoreKey(component: "kube-proxy", resource: "/v1/pods", namespace: "other", name: "o-1"))).body)
            #expect(item["kind"]?.stringValue == "Pod" && item["apiVersion"]?.stringValue == "v1")

            let watch = StreamRecorder.start(f.hub.transport(userAgent: kubeProxyUA),
                                             "/api/v1/namespaces/default/pods?watch=true&resourceVersion=\(listRV)")
            try await eventually("the watch is open") { watch.status == 200 }
            var pod = try #require(f.api.objectJSON("/api/v1/namespaces/default/pods/pod-2"))
            var labels = (pod["metadata"] as? [String: Any])?["labels"] as? [String: Any] ?? [:]
            labels["rollout"] = "blue"
            var meta = pod["metadata"] as? [String: Any] ?? [:]
            meta["labels"] = labels
            pod["metadata"] = meta
            try f.api.put("/api/v1/namespaces/default/pods/pod-2", pod)
            try f.api.createPods(namespace: "default", count: 1, nodeName: "edge-1", namePrefix: "late-")
            try f.api.delete("/api/v1/namespaces/default/pods/pod-0")
            try await eventually("4 watch events through the hub (pod-2 modified, late-0 added and its status set, pod-0 deleted): \(watch.lines.count)") { watch.lines.count >= 4 }
            let types = try watch.events().map { $0["type"]?.stringValue ?? "" }
            #expect(types.contains("MODIFIED") && types.contains("ADDED") && types.contains("DELETED"), "\(types)")
            try await eventually("the watch events reach the store") {
                await f.hub.drainCacheWrites()
                let names = try f.storedNames("kube-proxy", namespace: "default")
                let p2 = try f.hub.store.get(StoreKey(component: "kube-proxy", resource: "/v1/pods", namespace: "default", name: "pod-2"))
                let p2Labels = try p2.map { try JSONValue.parse($0.body)[path: ["metadata", "labels", "rollout"]]?.stringValue }
                return names == ["default/late-0", "default/pod-1", "default/pod-2"] && p2Labels == "blue"
            }
            await watch.stop()

            // The same component under another User-Agent (another version, another arch) shares that cache:
            // offline it is served what the first one cached.
            try await f.cutCloud()
            let other = "kube-proxy/v1.30.2 (linux/arm64) kubernetes/def5678"
            let offline = try await f.getJSON(other, "/api/v1/namespaces/default/pods")
            #expect(itemNames(offline) == ["default/late-0", "default/pod-1", "default/pod-2"])
            let offlineGet = try await f.getJSON(other, "/api/v1/namespaces/other/pods/o-0")
            #expect(offlineGet[path: ["metadata", "name"]]?.stringValue == "o-0")
            try await f.restoreCloud()

            // A client that is not cached: answered, nothing stored for it.
            let before = try f.hub.store.stats().objects
            let curlList = try await f.getJSON("curl/8.5.0", "/api/v1/pods")
            #expect(itemNames(curlList).count == 5)
            _ = try await f.getJSON("curl/8.5.0", "/api/v1/namespaces/default/pods/pod-1")
            await f.hub.drainCacheWrites()
            #expect(try f.stored("curl").isEmpty)
            #expect(try f.hub.store.listResourceVersion(component: "curl", resource: "/v1/pods", namespace: nil) == nil)
            #expect(try f.hub.store.stats().objects == before)
            #expect(f.hub.snapshot.counters.cacheErrors == 0)
        }
    }

    // MARK: 2. Offline reads

    @Test func offlineReadsAreServedFromTheStoreWithSelectorsAppliedLocally() async throws {
        let coredns = "coredns/1.11.1 (linux/amd64) kubernetes/x"
        try await HubFixture.run { f in
            try f.api.createPods(namespace: "default", count: 2, nodeName: "edge-1", namePrefix: "web-", labels: ["tier": "web"])
            try f.api.createPods(namespace: "default", count: 2, nodeName: "edge-2", namePrefix: "db-", labels: ["tier": "db"])
            try f.api.createPods(namespace: "other", count: 1, nodeName: "edge-1", namePrefix: "x-", labels: ["tier": "web"])
            let online = try await f.getJSON(coredns, "/api/v1/pods")
            let onlineRV = try #require(online[path: ["metadata", "resourceVersion"]]?.stringValue)
            await f.hub.drainCacheWrites()
            try await f.cutCloud()
            let servedBefore = f.hub.snapshot.counters.servedFromCache

            func names(_ query: String, namespace: String? = nil) async throws -> [String] {
                let base = namespace.map { "/api/v1/namespaces/\($0)/pods" } ?? "/api/v1/pods"
                return itemNames(try await f.getJSON(coredns, base + query))
            }
            let clock = ContinuousClock()
            let started = clock.now
            let all = try await f.getJSON(coredns, "/api/v1/pods")
            #expect(clock.now - started < .seconds(1), "an offline list must not wait for the network")
            #expect(all["kind"]?.stringValue == "PodList")
            #expect(all[path: ["metadata", "resourceVersion"]]?.stringValue == onlineRV)
            #expect(itemNames(all) == ["default/db-0", "default/db-1", "default/web-0", "default/web-1", "other/x-0"])
            #expect(items(all).allSatisfy { $0["kind"]?.stringValue == "Pod" })

            #expect(try await names("?labelSelector=tier%3Dweb") == ["default/web-0", "default/web-1", "other/x-0"])
            #expect(try await names("?labelSelector=tier%20in%20(web,db)&fieldSelector=spec.nodeName%3Dedge-2") == ["default/db-0", "default/db-1"])
            #expect(try await names("?labelSelector=tier!%3Dweb") == ["default/db-0", "default/db-1"])
            #expect(try await names("?fieldSelector=metadata.name%3Dweb-1") == ["default/web-1"])
            #expect(try await names("?fieldSelector=spec.nodeName%3Dedge-1", namespace: "default") == ["default/web-0", "default/web-1"])
            // A namespaced list from the all-namespaces list.
            let nsList = try await f.getJSON(coredns, "/api/v1/namespaces/default/pods")
            #expect(itemNames(nsList) == ["default/db-0", "default/db-1", "default/web-0", "default/web-1"])
            #expect(nsList[path: ["metadata", "resourceVersion"]]?.stringValue == onlineRV)

            // get: present, missing.
            let web0 = try await f.getJSON(coredns, "/api/v1/namespaces/default/pods/web-0")
            #expect(web0[path: ["spec", "nodeName"]]?.stringValue == "edge-1")
            let missing = try await f.call(coredns, "GET", "/api/v1/namespaces/default/pods/nope")
            #expect(missing.status == 404)
            let status = try JSONValue.parse(missing.body)
            #expect(status["kind"]?.stringValue == "Status" && status["reason"]?.stringValue == "NotFound", "\(text(missing.body))")
            #expect(status["message"]?.stringValue?.contains("nope") == true)

            // A list never cached: 404 naming the resource and the client.
            let neverListed = try await f.call(coredns, "GET", "/api/v1/namespaces/default/configmaps")
            #expect(neverListed.status == 404)
            let neverMessage = try JSONValue.parse(neverListed.body)["message"]?.stringValue ?? ""
            #expect(neverMessage.contains("configmaps") && neverMessage.contains("coredns"), "\(neverMessage)")

            // A delete: 503 that says the cloud is unreachable; the pod stays in the store.
            let deleted = try await f.call(coredns, "DELETE", "/api/v1/namespaces/default/pods/web-0", body: "{}")
            #expect(deleted.status == 503)
            let deleteMessage = try JSONValue.parse(deleted.body)["message"]?.stringValue ?? ""
            #expect(deleteMessage.contains("unreachable"), "\(deleteMessage)")
            #expect(try f.storedNames("coredns", namespace: "default").contains("default/web-0"))

            // A selector that does not parse: 400, as the API server would answer.
            let bad = try await f.call(coredns, "GET", "/api/v1/pods?labelSelector=tier%20in%20(web")
            #expect(bad.status == 400, "\(text(bad.body))")
            #expect(try JSONValue.parse(bad.body)["reason"]?.stringValue == "BadRequest")
            #expect(f.hub.snapshot.counters.servedFromCache > servedBefore)
        }
    }

    // MARK: 3. Offline watch

    @Test func offlineWatchSendsBookmarksAndEndsOnceTheCloudIsBack() async throws {
        try await HubFixture.run { f in
            try f.api.createPods(namespace: "default", count: 2, nodeName: "edge-1")
            let list = try await f.getJSON(edgedUA, "/api/v1/namespaces/default/pods")
            let rv = try #require(list[path: ["metadata", "resourceVersion"]]?.stringValue)
            await f.hub.drainCacheWrites()
            try await f.cutCloud()

            let watch = StreamRecorder.start(f.hub.transport(userAgent: edgedUA),
                                             "/api/v1/namespaces/default/pods?watch=true&allowWatchBookmarks=true&resourceVersion=\(rv)")
            try await eventually("the offline watch answers 200") { watch.status != nil }
            #expect(watch.status == 200)
            try await eventually("bookmarks arrive while offline: \(watch.lines)") { watch.lines.count >= 2 }
            for event in try watch.events() {
                #expect(event["type"]?.stringValue == "BOOKMARK")
                #expect(event[path: ["object", "kind"]]?.stringValue == "Pod")
                #expect(event[path: ["object", "metadata", "resourceVersion"]]?.stringValue == rv)
            }
            #expect(watch.ended == nil, "the watch stays open while offline")
            // A watch with timeoutSeconds ends at its timeout even while offline.
            let short = StreamRecorder.start(f.hub.transport(userAgent: edgedUA),
                                             "/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=1&resourceVersion=\(rv)")
            try await eventually("an offline watch ends at its timeoutSeconds", timeout: .seconds(5)) { short.ended != nil }
            #expect(short.status == 200 && short.error == nil)
            #expect(f.hub.health.current == .offline && watch.ended == nil)

            try await f.api.resume()
            let resumed = ContinuousClock.now
            try await eventually("the watch ends once the cloud is back", timeout: .seconds(10)) { watch.ended != nil }
            let ended = try #require(watch.ended)
            #expect(ended > resumed)
            #expect(f.hub.health.current == .online)
            #expect(watch.error == nil, "\(watch.error ?? "")")
            #expect(watch.partial.isEmpty)
            await watch.stop()
        }
    }

    // MARK: 4. The write queue

    @Test func offlineWritesAreQueuedCoalescedAndReplayedInOrder() async throws {
        try await HubFixture.run { f in
            try f.api.createPods(namespace: "default", count: 2, nodeName: "edge-1", namePrefix: "q-")
            _ = try await f.getJSON(edgedUA, "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1")
            _ = try await f.getJSON(edgedUA, "/api/v1/pods")
            await f.hub.drainCacheWrites()
            try await f.cutCloud()

            let smp = "application/strategic-merge-patch+json"
            func patchStatus(_ pod: String, _ message: String) async throws -> KubeResponse {
                try await f.call(edgedUA, "PATCH", "/api/v1/namespaces/default/pods/\(pod)/status",
                                 body: #"{"status":{"message":"\#(message)"}}"#, contentType: smp)
            }
            // The status of q-1 first (its pod will be gone by the time it is replayed), then three of q-0.
            let q1 = try await patchStatus("q-1", "lost")
            #expect(q1.status == 200)
            for message in ["one", "two", "three"] {
                let r = try await patchStatus("q-0", message)
                #expect(r.status == 200, "\(text(r.body))")
                let patched = try JSONValue.parse(r.body)
                #expect(patched[path: ["metadata", "name"]]?.stringValue == "q-0")
                #expect(patched[path: ["status", "message"]]?.stringValue == message)
                #expect(patched[path: ["spec", "nodeName"]]?.stringValue == "edge-1", "the answer is the whole patched pod")
            }
            var eventNames: [String] = []
            for i in 1...2 {
                let event = #"{"apiVersion":"v1","kind":"Event","metadata":{"name":"q-0.e\#(i)","namespace":"default"},"involvedObject":{"kind":"Pod","namespace":"default","name":"q-0"},"reason":"BackOff","message":"restart \#(i)","type":"Warning","count":1}"#
                let r = try await f.call(edgedUA, "POST", "/api/v1/namespaces/default/events", body: event)
                #expect(r.status == 201, "\(text(r.body))")
                eventNames.append(try JSONValue.parse(r.body)[path: ["metadata", "name"]]?.stringValue ?? "")
            }
            #expect(eventNames == ["q-0.e1", "q-0.e2"])
            // kubelet's event aggregation patches the count of an event it already sent: queued too.
            let counted = try await f.call(edgedUA, "PATCH", "/api/v1/namespaces/default/events/q-0.e1",
                                           body: #"{"count":2,"message":"restart 1 again"}"#, contentType: smp)
            #expect(counted.status == 200, "\(text(counted.body))")
            #expect(try JSONValue.parse(counted.body)["count"] == .number("2"))
            // Answered at once, all durable: 1 (q-1) + 1 (q-0, coalesced) + 2 event creates + 1 event patch.
            #expect(try f.hub.store.stats().queued == 5)
            let queued = try f.hub.store.queued()
            #expect(queued.map { "\($0.method) \($0.path)" } == [
                "PATCH /api/v1/namespaces/default/pods/q-1/status", "PATCH /api/v1/namespaces/default/pods/q-0/status",
                "POST /api/v1/namespaces/default/events", "POST /api/v1/namespaces/default/events",
                "PATCH /api/v1/namespaces/default/events/q-0.e1",
            ])
            // Offline readers see the newest status.
            await f.hub.drainCacheWrites()
            let local = try await f.getJSON(edgedUA, "/api/v1/namespaces/default/pods/q-0")
            #expect(local[path: ["status", "message"]]?.stringValue == "three")

            // q-1 is deleted meanwhile; the cloud comes back.
            try f.api.delete("/api/v1/namespaces/default/pods/q-1")
            let requestsBefore = f.api.requests().count
            try await f.restoreCloud()
            try await eventually("the queue drains") { try f.hub.store.stats().queued == 0 }

            let q0 = try #require(f.api.objectJSON("/api/v1/namespaces/default/pods/q-0"))
            #expect((q0["status"] as? [String: Any])?["message"] as? String == "three")
            let events = try JSONValue.parse(Array(f.api.call("GET", "/api/v1/namespaces/default/events").body))
            let eventSet = Set(items(events).compactMap { $0[path: ["metadata", "name"]]?.stringValue })
            #expect(eventSet.isSuperset(of: ["q-0.e1", "q-0.e2"]), "\(eventSet)")
            // In queue order, one PATCH per pod, the refused one dropped without blocking the rest.
            let writes = f.api.requests().dropFirst(requestsBefore)
                .filter { $0.method != "GET" && !$0.path.contains("/leases") }
                .map { "\($0.method) \($0.path) \($0.code)" }
            #expect(writes == [
                "PATCH /api/v1/namespaces/default/pods/q-1/status 404", "PATCH /api/v1/namespaces/default/pods/q-0/status 200",
                "POST /api/v1/namespaces/default/events 201", "POST /api/v1/namespaces/default/events 201",
                "PATCH /api/v1/namespaces/default/events/q-0.e1 200",
            ])
            let e1 = try #require(f.api.objectJSON("/api/v1/namespaces/default/events/q-0.e1"))
            #expect(e1["count"] as? Int == 2 && e1["message"] as? String == "restart 1 again")
            let counters = f.hub.snapshot.counters
            #expect(counters.replayedWrites == 4 && counters.droppedWrites == 1, "\(counters)")
            #expect(f.logs.all.contains { $0.contains("dropped queued PATCH /api/v1/namespaces/default/pods/q-1/status") && $0.contains("404") },
                    "\(f.logs.all.filter { $0.contains("queued") })")

            // Another client's pod status write while offline is not queued: 503.
            try await f.cutCloud()
            let foreign = try await f.call(kubeProxyUA, "PATCH", "/api/v1/namespaces/default/pods/q-0/status",
                                           body: #"{"status":{"message":"x"}}"#, contentType: smp)
            #expect(foreign.status == 503)
            #expect(try f.hub.store.stats().queued == 0)
        }
    }

    // MARK: 5. Bad input from upstream

    @Test func malformedListFromUpstreamIsPassedOnLoggedAndNotCached() async throws {
        try await HubFixture.run { f in
            try f.api.createPods(namespace: "default", count: 3, nodeName: "edge-1")
            _ = try await f.getJSON(kubeProxyUA, "/api/v1/pods")
            await f.hub.drainCacheWrites()
            let before = try f.stored("kube-proxy")
            let rvBefore = try f.hub.store.listResourceVersion(component: "kube-proxy", resource: "/v1/pods", namespace: nil)
            #expect(before.count == 3)

            try f.api.createPods(namespace: "default", count: 1, nodeName: "edge-1", namePrefix: "new-")
            f.api.injectFault(path: "/api/v1/pods", .malformedBody)
            let bad = try await f.call(kubeProxyUA, "GET", "/api/v1/pods")
            #expect(f.api.pendingFaults == 0)
            #expect(bad.status == 200)
            #expect(text(bad.body).hasSuffix("<<not JSON: damaged by the test API server"), "the caller gets the bytes as sent")
            #expect((try? JSONValue.parse(bad.body)) == nil)
            await f.hub.drainCacheWrites()
            #expect(f.logs.all.contains { $0.contains("list pods") && $0.contains("kube-proxy") && $0.contains("not cached") },
                    "\(f.logs.all.suffix(5))")
            #expect(f.hub.snapshot.counters.cacheErrors == 1)
            #expect(try f.stored("kube-proxy") == before)
            #expect(try f.hub.store.listResourceVersion(component: "kube-proxy", resource: "/v1/pods", namespace: nil) == rvBefore)

            // A malformed get: passed on, not cached.
            f.api.injectFault(path: "/api/v1/namespaces/default/pods/new-0", .malformedBody)
            let badGet = try await f.call(kubeProxyUA, "GET", "/api/v1/namespaces/default/pods/new-0")
            #expect(badGet.status == 200 && (try? JSONValue.parse(badGet.body)) == nil)
            await f.hub.drainCacheWrites()
            #expect(f.hub.snapshot.counters.cacheErrors == 2)
            #expect(try f.hub.store.get(StoreKey(component: "kube-proxy", resource: "/v1/pods", namespace: "default", name: "new-0")) == nil)

            // The hub keeps serving: the next list is whole and cached.
            let good = try await f.getJSON(kubeProxyUA, "/api/v1/pods")
            #expect(itemNames(good).count == 4)
            await f.hub.drainCacheWrites()
            #expect(try f.storedNames("kube-proxy").contains("default/new-0"))
            #expect(f.hub.snapshot.counters.cacheErrors == 2)
        }
    }

    @Test func truncatedWatchFromUpstreamEndsCleanlyAndCachesNoPartialEvent() async throws {
        try await HubFixture.run { f in
            try f.api.createPods(namespace: "default", count: 3, nodeName: "edge-1")
            f.api.injectFault(path: "/api/v1/namespaces/default/pods", .truncatedWatch(afterEvents: 2))
            let watch = StreamRecorder.start(f.hub.transport(userAgent: kubeProxyUA),
                                             "/api/v1/namespaces/default/pods?watch=true&allowWatchBookmarks=true")
            try await eventually("the truncated watch ends", timeout: .seconds(10)) { watch.ended != nil }
            #expect(f.api.pendingFaults == 0)
            #expect(watch.status == 200)
            #expect(watch.error == nil, "\(watch.error ?? "")")
            let lines = watch.lines + (watch.partial.isEmpty ? [] : [watch.partial])
            let added = lines.prefix(2).compactMap { try? JSONValue.parse($0) }.filter { $0["type"]?.stringValue == "ADDED" }
            #expect(added.count == 2, "the two whole events are forwarded: \(lines.map { $0.suffix(150) })")
            // The client must get whole JSON lines only: no half event, and no bookmark glued to one.
            let tails = lines.map { String($0.suffix(150)) }
            #expect(lines.allSatisfy { (try? JSONValue.parse($0)) != nil }, "line ends: \(tails)")
            #expect(!lines.joined().contains("cut-off"), "line ends: \(tails)")
            await f.hub.drainCacheWrites()
            let stored = try f.storedNames("kube-proxy", namespace: "default")
            #expect(stored.count == 2 && !stored.contains { $0.contains("cut-off") }, "\(stored)")
            #expect(f.logs.all.contains { $0.contains("kube-proxy") && $0.contains("pods") && $0.contains("ended early") },
                    "the broken stream is logged: \(f.logs.all.suffix(5))")
            await watch.stop()

            // Later requests work: a list, and a new watch.
            let list = try await f.getJSON(kubeProxyUA, "/api/v1/namespaces/default/pods")
            #expect(itemNames(list).count == 3)
            let again = StreamRecorder.start(f.hub.transport(userAgent: kubeProxyUA),
                                             "/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=1")
            try await eventually("a new watch works and ends at its timeout") { again.ended != nil }
            #expect(try again.events().count == 3 && again.error == nil, "\(again.lines) \(again.error ?? "")")
        }
    }

    @Test func hugeObjectFromUpstreamIsForwardedButNotCached() async throws {
        try await HubFixture.run { f in
            try f.api.createPods(namespace: "default", count: 3, nodeName: "edge-1")
            let tenMB = 10 << 20
            let key = StoreKey(component: "kube-proxy", resource: "/v1/pods", namespace: "default", name: "pod-1")

            f.api.injectFault(path: "/api/v1/namespaces/default/pods/pod-1", .hugeObject(bytes: tenMB))
            let big = try await f.call(kubeProxyUA, "GET", "/api/v1/namespaces/default/pods/pod-1")
            #expect(big.status == 200 && big.body.count > tenMB)
            let padded = try JSONValue.parse(big.body)
            #expect(padded[path: ["metadata", "annotations", "test.edged.io/padding"]]?.stringValue?.utf8.count == tenMB)
            await f.hub.drainCacheWrites()
            #expect(try f.hub.store.get(key) == nil)
            #expect(f.hub.snapshot.counters.cacheErrors == 1)
            #expect(f.logs.all.contains { $0.contains("pod-1") && $0.contains("kube-proxy") && $0.contains("not cached") },
                    "\(f.logs.all.suffix(5))")

            // The same in a list: the whole list is forwarded, none of it cached.
            f.api.injectFault(path: "/api/v1/namespaces/default/pods", .hugeObject(bytes: tenMB))
            let bigList = try await f.call(kubeProxyUA, "GET", "/api/v1/namespaces/default/pods")
            #expect(bigList.status == 200 && bigList.body.count > tenMB)
            #expect(itemNames(try JSONValue.parse(bigList.body)).count == 3)
            await f.hub.drainCacheWrites()
            #expect(try f.stored("kube-proxy").isEmpty)
            #expect(try f.hub.store.listResourceVersion(component: "kube-proxy", resource: "/v1/pods", namespace: "default") == nil)
            #expect(f.hub.snapshot.counters.cacheErrors == 2)
            #expect(f.logs.all.contains { $0.contains("list pods in default for kube-proxy") && $0.contains("not cached") },
                    "\(f.logs.all.suffix(5))")

            // Normal answers are cached again.
            _ = try await f.getJSON(kubeProxyUA, "/api/v1/namespaces/default/pods/pod-1")
            _ = try await f.getJSON(kubeProxyUA, "/api/v1/namespaces/default/pods")
            await f.hub.drainCacheWrites()
            #expect(try f.hub.store.get(key) != nil)
            #expect(try f.stored("kube-proxy").count == 3)
            #expect(f.hub.snapshot.counters.cacheErrors == 2)
        }
    }

    // MARK: 6. edged's in-process transport

    @Test func kubeClientOverTheHubTransportWorksOnline() async throws {
        try await HubFixture.run { f in
            try f.api.createPods(namespace: "default", count: 2, nodeName: "edge-1")
            let client = KubeClient(transport: f.hub.transport(userAgent: edgedUA), requestTimeout: .seconds(10))
            let pod = try await client.get(.pods, namespace: "default", name: "pod-0")
            #expect(pod.metadata.name == "pod-0")
            let list = try await client.list(.pods, namespace: "default")
            #expect(list.items.map(\.name).sorted() == ["pod-0", "pod-1"])

            let informer = Informer(client: client, resource: .pods, namespace: "default")
            let seen = Mutex<[String]>([])
            let task = Task {
                await informer.run { event in
                    let line: String
                    switch event {
                    case .replaced(let pods): line = "replaced \(pods.map { $0.metadata.name ?? "" }.sorted())"
                    case .added(let p): line = "added \(p.metadata.name ?? "")"
                    case .modified(let p): line = "modified \(p.metadata.name ?? "")"
                    case .deleted(let p): line = "deleted \(p.metadata.name ?? "")"
                    }
                    seen.withLock { $0.append(line) }
                }
            }
            try await eventually("the informer syncs through the hub") { informer.hasSynced }
            try f.api.createPods(namespace: "default", count: 1, nodeName: "edge-1", namePrefix: "late-")
            try f.api.delete("/api/v1/namespaces/default/pods/pod-1")
            try await eventually("the informer sees the changes: \(seen.withLock { $0 })") {
                let s = seen.withLock { $0 }
                return s.contains("added late-0") && s.contains("deleted pod-1")
            }
            #expect(seen.withLock { $0.first } == "replaced [\"pod-0\", \"pod-1\"]")
            task.cancel()
            await task.value
            // What edged read is cached for "edged".
            await f.hub.drainCacheWrites()
            #expect(try f.storedNames("edged", namespace: "default") == ["default/late-0", "default/pod-0"])
        }
    }

    @Test func kubeClientOverTheHubTransportListsFromTheStoreRightAfterAnOfflineStart() async throws {
        try await HubFixture.run { f in
            try f.api.createPods(namespace: "default", count: 20, nodeName: "edge-1")
            let first = KubeClient(transport: f.hub.transport(userAgent: edgedUA))
            let online = try await first.list(.pods, options: ListOptions(fieldSelector: "spec.nodeName=edge-1"))
            #expect(online.items.count == 20)
            await f.hub.drainCacheWrites()

            // A reboot with the cloud unreachable (a blackhole: connections hang, nothing answers): the new hub has
            // not probed yet, and edged's list is answered from the store at once.
            await f.stopHub()
            f.api.setBlackhole(true)
            let hub = try await f.startHub(health: CloudHealthConfig())
            let client = KubeClient(transport: hub.transport(userAgent: edgedUA), requestTimeout: .seconds(30))
            let clock = ContinuousClock()
            let started = clock.now
            let list = try await client.list(.pods, options: ListOptions(fieldSelector: "spec.nodeName=edge-1"))
            let elapsed = clock.now - started
            print("hub offline start: edged's list of 20 pods served from the store in \(elapsed)")
            #expect(hub.health.current == .unknown, "served before the first probe decided")
            #expect(list.items.count == 20)
            #expect(list.metadata.resourceVersion == online.metadata.resourceVersion)
            #expect(elapsed < .milliseconds(200), "served from the store in \(elapsed), without waiting for the network")
            let pod = try await client.get(.pods, namespace: "default", name: "pod-7")
            #expect(pod.spec.nodeName == "edge-1")

            // The probe then finds the cloud away; reads keep coming from the store.
            try await f.waitFor(.offline, timeout: .seconds(10))
            #expect(try await client.list(.pods, namespace: "default").items.count == 20)
            f.api.setBlackhole(false)
        }
    }
}
