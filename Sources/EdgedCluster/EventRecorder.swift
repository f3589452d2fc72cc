// core/v1 Events as kubelet sends them (source.component "kubelet", reportingInstance = node), with kubelet's
// aggregation: a repeat of the same event within 10 minutes bumps `count` and `lastTimestamp` of the first one
// instead of creating another object. Events wait in a bounded queue while the API server is away.

import EdgedCore
import EdgedKube
import EdgedNode
import Logging

actor EventRecorder {
    struct Pending: Sendable {
        var involved: ObjectReference
        var kind: String
        var reason: String
        var message: String
        var time: Timestamp
    }

    private let client: KubeClient
    private let nodeName: String
    private let logger: Logger
    private var queue: [Pending] = []
    private var wake: AsyncStream<Void>.Continuation?
    /// (involved uid, fieldPath, reason, message) → (event name, namespace, count, first seen).
    private var seen: [String: (name: String, namespace: String, count: Int32, first: Timestamp)] = [:]
    static let queueLimit = 1000
    private(set) var sent = 0
    private(set) var dropped = 0

    init(client: KubeClient, nodeName: String, logger: Logger) {
        self.client = client
        self.nodeName = nodeName
        self.logger = logger
    }

    nonisolated func sink() -> PodEventSink {
        { [self] e in
            let ref = ObjectReference(kind: "Pod", namespace: e.namespace, name: e.podName, uid: e.podUID,
                                      apiVersion: "v1", fieldPath: e.fieldPath)
            Task { await self.enqueue(Pending(involved: ref, kind: e.kind.rawValue, reason: e.reason, message: e.message, time: .now())) }
        }
    }

    /// An Event about the node; like kubelet, the involved object's uid is the node name.
    func nodeEvent(kind: String = "Normal", reason: String, message: String) {
        enqueue(Pending(involved: ObjectReference(kind: "Node", name: nodeName, uid: nodeName), kind: kind,
                        reason: reason, message: message, time: .now()))
    }

    func enqueue(_ p: Pending) {
        if queue.count >= Self.queueLimit {
            queue.removeFirst()
            dropped += 1
        }
        queue.append(p)
        wake?.yield()
    }

    /// Sends queued events until cancelled; failed sends stay queued and are retried with back-off.
    func run() async {
        let (stream, cont) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        wake = cont
        var delay = Duration.milliseconds(500)
        cont.yield()
        for await _ in stream {
            while let next = queue.first, !Task.isCancelled {
                do {
                    try await send(next)
                    queue.removeFirst()
                    sent += 1
                    delay = .milliseconds(500)
                } catch {
                    logger.debug("event \(next.reason) for \(next.involved.name ?? "") not sent yet: \(error)")
                    try? await Task.sleep(for: delay)
                    delay = min(delay * 2, .seconds(30))
                }
            }
            if Task.isCancelled { break }
        }
    }

    private func send(_ p: Pending) async throws {
        let key = "\(p.involved.uid ?? "")|\(p.involved.fieldPath ?? "")|\(p.reason)|\(p.message)"
        let ns = p.involved.namespace ?? "default"
        if let prior = seen[key], prior.first.seconds(until: p.time) < 600 {
            let count = prior.count + 1
            let patch = Patch.merge(.object([("count", .number(String(count))), ("lastTimestamp", .string(p.time.rfc3339))]))
            do {
                _ = try await client.patch(.events, namespace: prior.namespace, name: prior.name, patch)
                seen[key] = (prior.name, prior.namespace, count, prior.first)
                return
            } catch {
                guard let e = error as? KubeError, e.isNotFound else { throw error }
                seen[key] = nil
            }
        }
        var meta = ObjectMeta(name: "\(p.involved.name ?? nodeName).\(String(UInt64(p.time.nanoseconds), radix: 16))", namespace: ns)
        meta.namespace = ns
        var event = Event(metadata: meta, involvedObject: p.involved, reason: p.reason, message: p.message, type: p.kind)
        event.source = EventSource(component: "kubelet", host: nodeName)
        event.firstTimestamp = p.time.rfc3339
        event.lastTimestamp = p.time.rfc3339
        event.count = 1
        event.reportingComponent = "kubelet"
        event.reportingInstance = nodeName
        let created = try await client.create(.events, namespace: ns, event)
        seen[key] = (created.metadata.name ?? meta.name ?? "", ns, 1, p.time)
        if seen.count > 4096 { seen.removeAll() }
    }
}
