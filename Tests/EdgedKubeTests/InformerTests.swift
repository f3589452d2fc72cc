import EdgedCore
@testable import EdgedKube
import EdgedTestSupport
import Synchronization
import Testing

/// Collects what an informer delivers, for polling from the test.
final class InformerLog: Sendable {
    private let events = Mutex<[String]>([])
    private let objects = Mutex<[String: String]>([:])  // name → data["v"]

    func record(_ event: InformerEvent<ConfigMap>) {
        switch event {
        case .replaced(let items):
            events.withLock { $0.append("replaced \(items.count)") }
            objects.withLock { o in
                o = [:]
                for i in items { o[i.metadata.name ?? ""] = i.data?["v"] ?? "" }
            }
        case .added(let c):
            events.withLock { $0.append("added \(c.metadata.name ?? "")") }
            objects.withLock { $0[c.metadata.name ?? ""] = c.data?["v"] ?? "" }
        case .modified(let c):
            events.withLock { $0.append("modified \(c.metadata.name ?? "")") }
            objects.withLock { $0[c.metadata.name ?? ""] = c.data?["v"] ?? "" }
        case .deleted(let c):
            events.withLock { $0.append("deleted \(c.metadata.name ?? "")") }
            objects.withLock { $0[c.metadata.name ?? ""] = nil }
        }
    }

    var all: [String] { events.withLock { $0 } }
    var state: [String: String] { objects.withLock { $0 } }

    /// Waits up to `seconds` for `condition`.
    func wait(_ seconds: Double = 10, _ condition: (InformerLog) -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            if condition(self) { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return condition(self)
    }
}

@Suite struct InformerTests {
    @Test func listThenAddModifyDelete() async throws {
        let f = try await KubeFixture.start()
        defer { Task { await f.close() } }
        let c = f.client
        let label = KubeFixture.uniqueName("inf")
        let labels = ["informer": label]
        _ = try await c.create(.configMaps, namespace: "default", ConfigMap(metadata: ObjectMeta(name: "\(label)-a", labels: labels), data: ["v": "a1"]))

        let informer = Informer(client: c, resource: .configMaps, namespace: "default",
                                options: .init(labelSelector: LabelSelector.matching(labels), pageSize: 1))
        let log = InformerLog()
        let task = Task { await informer.run { log.record($0) } }
        defer { task.cancel() }

        #expect(try await log.wait { $0.state == ["\(label)-a": "a1"] })
        #expect(informer.hasSynced)
        #expect(log.all.first == "replaced 1")

        _ = try await c.create(.configMaps, namespace: "default", ConfigMap(metadata: ObjectMeta(name: "\(label)-b", labels: labels), data: ["v": "b1"]))
        _ = try await c.patch(.configMaps, namespace: "default", name: "\(label)-a", .merge(try JSONValue.parse(#"{"data":{"v":"a2"}}"#)))
        try await c.delete(.configMaps, namespace: "default", name: "\(label)-b")
        // Not matching the selector: never seen.
        _ = try await c.create(.configMaps, namespace: "default", ConfigMap(metadata: ObjectMeta(name: "\(label)-other"), data: ["v": "x"]))

        #expect(try await log.wait { $0.all.contains("deleted \(label)-b") })
        #expect(log.state == ["\(label)-a": "a2"])
        #expect(Array(log.all.dropFirst()) == ["added \(label)-b", "modified \(label)-a", "deleted \(label)-b"])
        #expect(informer.resourceVersion != nil)
        task.cancel()
        await task.value
    }

    @Test func relistsAfterGoneAndRewatchesAfterTimeout() async throws {
        let f = try await KubeFixture.start(options: .init(watchBookmarkInterval: .seconds(60)))
        defer { Task { await f.close() } }
        let c = f.client
        let label = KubeFixture.uniqueName("gone")
        let labels = ["informer": label]
        _ = try await c.create(.configMaps, namespace: "default", ConfigMap(metadata: ObjectMeta(name: "\(label)-a", labels: labels), data: ["v": "1"]))

        // Watches end after 1–2 s (server timeout): the informer watches again from its last RV without a re-list.
        let informer = Informer(client: c, resource: .configMaps, namespace: "default",
                                options: .init(labelSelector: LabelSelector.matching(labels), watchTimeoutSeconds: 1...2,
                                               initialBackoff: .milliseconds(50)))
        let log = InformerLog()
        let task = Task { await informer.run { log.record($0) } }
        defer { task.cancel() }
        #expect(try await log.wait { $0.all == ["replaced 1"] })
        #expect(try await log.wait(6) { _ in informer.counts.watches >= 2 })
        #expect(informer.counts.lists == 1)

        // Changes made while the informer's RV is compacted away: its next watch gets 410 and it re-lists.
        let watchesBefore = informer.counts.watches
        #expect(try await log.wait(6) { _ in informer.counts.watches > watchesBefore })  // a fresh watch is open
        _ = try await c.create(.configMaps, namespace: "default", ConfigMap(metadata: ObjectMeta(name: "\(label)-b", labels: labels), data: ["v": "2"]))
        #expect(try await log.wait { $0.state["\(label)-b"] == "2" })
        // A change outside the selector moves the global RV past the informer's; compacting then makes the
        // informer's RV older than the history, so its next (timeout-driven) watch gets 410 and it re-lists.
        _ = try await c.create(.configMaps, namespace: "default", ConfigMap(metadata: ObjectMeta(name: "\(label)-unrelated")))
        f.server.compact()
        #expect(try await log.wait(8) { $0.all.filter { $0.hasPrefix("replaced") }.count >= 2 })
        #expect(informer.counts.lists >= 2)
        #expect(log.state == ["\(label)-a": "1", "\(label)-b": "2"])
        task.cancel()
        await task.value
    }

    @Test func backsOffOnErrorsAndRecordsThem() async throws {
        let f = try await KubeFixture.start()
        defer { Task { await f.close() } }
        // A bootstrap token may not list pods: every list is 403.
        try f.server.addBootstrapToken(id: "infbad", secret: "0123456789abcdef")
        let c = try f.client(.bearerToken("infbad.0123456789abcdef"))
        let informer = Informer(client: c, resource: .pods, options: .init(initialBackoff: .milliseconds(100), maxBackoff: .milliseconds(400)))
        let task = Task { await informer.run { _ in } }
        try await Task.sleep(for: .seconds(1.5))
        let lists = informer.counts.lists
        #expect(!informer.hasSynced)
        #expect((informer.lastError as? KubeError)?.isForbidden == true)
        // 100, 200, 400, 400 ms (×0.5–1 jitter): a handful, not hundreds.
        #expect(lists >= 3 && lists <= 12, "lists: \(lists)")
        task.cancel()
        await task.value
    }
}
