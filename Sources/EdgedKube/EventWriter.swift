// Writes core/v1 Events with client-go's (and kubelet's) aggregation: the same event (involved object, field path,
// reason, message) within 10 minutes of the first one bumps that one's `count` and `lastTimestamp` with a merge
// patch instead of creating another object; when that Event is gone (expired, deleted) a new one is created.
// Shared by the node agent's EventRecorder (source "kubelet") and the autonomy controller.

import EdgedCore

public actor EventWriter {
    private let client: KubeClient
    private let source: EventSource
    private let reportingComponent: String
    private let reportingInstance: String
    /// (kind, uid, fieldPath, reason, message) → the Event created for it.
    private var seen: [String: (name: String, namespace: String, count: Int32, first: Timestamp)] = [:]

    public init(client: KubeClient, source: EventSource, reportingComponent: String, reportingInstance: String) {
        self.client = client
        self.source = source
        self.reportingComponent = reportingComponent
        self.reportingInstance = reportingInstance
    }

    /// Creates the Event in `namespace`, or counts it on the first one like it. Named `<object>.<time in hex>`
    /// (`fallbackName` when the reference has no name).
    public func send(involved ref: ObjectReference, namespace: String, type: String, reason: String, message: String,
                     time: Timestamp = .now(), fallbackName: String) async throws {
        let key = "\(ref.kind ?? "")|\(ref.uid ?? "")|\(ref.fieldPath ?? "")|\(reason)|\(message)"
        if let prior = seen[key], prior.first.seconds(until: time) < 600 {
            let count = prior.count + 1
            let patch = Patch.merge(.object([("count", .number(String(count))), ("lastTimestamp", .string(time.rfc3339))]))
            do {
                _ = try await client.patch(.events, namespace: prior.namespace, name: prior.name, patch)
                seen[key] = (prior.name, prior.namespace, count, prior.first)
                return
            } catch let e as KubeError where e.isNotFound {
                seen[key] = nil
            }
        }
        let meta = ObjectMeta(name: "\(ref.name ?? fallbackName).\(String(UInt64(time.nanoseconds), radix: 16))", namespace: namespace)
        var event = Event(metadata: meta, involvedObject: ref, reason: reason, message: message, type: type)
        event.source = source
        event.firstTimestamp = time.rfc3339
        event.lastTimestamp = time.rfc3339
        event.count = 1
        event.reportingComponent = reportingComponent
        event.reportingInstance = reportingInstance
        let created = try await client.create(.events, namespace: namespace, event)
        if seen.count >= 4096 { seen.removeAll() }
        seen[key] = (created.metadata.name ?? meta.name ?? "", namespace, 1, time)
    }
}
