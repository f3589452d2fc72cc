// `edged-bench store-writer --path P` (hidden): writes the edge hub's store as fast as it can, forever, for the
// kill -9 test (EdgedHubTests): the test SIGKILLs it in the middle of its writes and checks that the store opens
// clean and consistent. Every write carries what the test checks it against:
// - a list replace of namespace nsK writes 200 pods all with resourceVersion = the list's resourceVersion;
// - appended queue writes (no coalesce key) have bodies "seq N", N counting up across runs with no gap.

import ArgumentParser
import EdgedCore
import EdgedHub
import Foundation
import Logging

struct StoreWriter: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store-writer",
        abstract: "Write the edge hub's store in a loop until killed (for the crash test).",
        shouldDisplay: false)

    @Option(help: "The store file.")
    var path: String

    static let namespaces = 3
    static let podsPerList = 200

    func run() throws {
        var logger = Logger(label: "edged-bench.store-writer")
        logger.logLevel = .error
        let store = try HubStore(path: path, logger: logger)
        // Continue the appended sequence where the last (killed) run stopped.
        var seq = 0
        var round = 0
        for w in try store.queued(limit: Int.max) {
            let text = String(decoding: w.body, as: UTF8.self)
            if w.coalesceKey == nil, text.hasPrefix("seq "), let n = Int(text.dropFirst(4)) { seq = max(seq, n + 1) }
            if w.coalesceKey != nil, text.hasPrefix("status "), let n = Int(text.dropFirst(7)) { round = max(round, n + 1) }
        }
        let padding = String(repeating: "x", count: 3000)
        print("writing")
        fflush(nil)
        while true {
            let ns = "ns\(round % Self.namespaces)"
            let rv = String(round)
            let items = (0..<Self.podsPerList).map { i in
                let key = StoreKey(component: "edged", resource: "/v1/pods", namespace: ns, name: "pod-\(i)")
                let body = #"{"metadata":{"name":"pod-\#(i)","namespace":"\#(ns)","resourceVersion":"\#(rv)"},"pad":"\#(padding)"}"#
                return StoredObject(key: key, resourceVersion: rv, body: Array(body.utf8))
            }
            try store.replaceList(component: "edged", resource: "/v1/pods", namespace: ns, items: items, resourceVersion: rv)
            let cm = StoreKey(component: "edged", resource: "/v1/configmaps", namespace: ns, name: "cm-\(round % 50)")
            try store.put(StoredObject(key: cm, resourceVersion: rv, body: Array(padding.utf8)))
            _ = try store.enqueue(QueuedWrite(component: "edged", method: "POST", path: "/api/v1/namespaces/\(ns)/events",
                                              contentType: "application/json", body: Array("seq \(seq)".utf8)))
            seq += 1
            _ = try store.enqueue(QueuedWrite(component: "edged", method: "PATCH", path: "/api/v1/namespaces/\(ns)/pods/p\(round % 5)/status",
                                              contentType: "application/merge-patch+json", body: Array("status \(round)".utf8),
                                              coalesceKey: "\(ns)/p\(round % 5)"))
            // Replay the oldest now and then, as the hub does when the cloud is back: the queue stays bounded.
            if round % 20 == 19 {
                for w in try store.queued(limit: 25) { try store.removeQueued(id: w.id) }
            }
            round += 1
        }
    }
}
