// An informer whose task is cancelled while it lists (or by its own handler, for a one-shot read of an immutable
// object) opens no watch: a watch started by a cancelled task would stay open on the API server until it times out.

import EdgedCore
@testable import EdgedKube
import EdgedTestSupport
import Synchronization
import Testing

@Suite struct InformerCancelTests {
    @Test func handlerThatCancelsOnTheListOpensNoWatch() async throws {
        let f = try await KubeFixture.start()
        defer { Task { await f.close() } }
        let name = KubeFixture.uniqueName("once")
        _ = try await f.client.create(.configMaps, namespace: "default", ConfigMap(metadata: ObjectMeta(name: name), data: ["v": "1"]))
        let informer = Informer(client: f.client, resource: .configMaps, namespace: "default",
                                options: .init(fieldSelector: FieldSelector.name(name), pageSize: nil))
        let log = InformerLog()
        let task = Task {
            await informer.run { event in
                log.record(event)
                withUnsafeCurrentTask { $0?.cancel() }
            }
        }
        await task.value   // returns: the informer did not go on to watch
        #expect(log.all == ["replaced 1"])
        #expect(informer.counts.lists == 1 && informer.counts.watches == 0)
        let watches = f.server.requests().filter { $0.path.contains("watch=true") && $0.path.contains(name) }
        #expect(watches.isEmpty, "\(watches)")
        #expect(f.server.openWatches("configmaps", namespace: "default", name: name) == 0)
    }
}
