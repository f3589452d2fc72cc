// core/v1 Events as kubelet sends them (source.component "kubelet", reportingInstance = node), with kubelet's
// aggregation (EdgedKube's EventWriter): a repeat of the same event within 10 minutes bumps `count` and
// `lastTimestamp` of the first one instead of creating another object. Events wait in a bounded queue while the
// API server is away.

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

    private let nodeName: String
    private let logger: Logger
    private var queue: [Pending] = []
    private var wake: AsyncStream<Void>.Continuation?
    /// Creates or counts each Event (kubelet's aggregation).
    private let writer: EventWriter
    static let queueLimit = 1000
    private(set) var sent = 0
    private(set) var dropped = 0

    init(client: KubeClient, nodeName: String, logger: Logger) {
        self.nodeName = nodeName
        self.logger = logger
        writer = EventWriter(client: client, source: EventSource(component: "kubelet", host: nodeName),
                             reportingComponent: "kubelet", reportingInstance: nodeName)
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

    /// Per involved object: tokens left and when they were counted (client-go's EventSourceObjectSpamFilter).
    private var spamBuckets: [String: (tokens: Double, at: ContinuousClock.Instant)] = [:]
    static let spamBurst = 25.0
    static let spamRefillSeconds = 300.0
    /// Events not sent because their object had used up its budget.
    private(set) var spamDropped = 0

    /// client-go's event spam filter, which kubelet's recorder applies: each involved object (kind, namespace, name,
    /// uid) may have 25 events at once and one more every 5 minutes; the rest are dropped. Without it a pod whose
    /// volume cannot be mounted sent an Event patch every second (500 in 2 minutes for 4 such pods on a real cluster).
    func allowed(_ p: Pending, now: ContinuousClock.Instant = .now) -> Bool {
        let r = p.involved
        let key = "\(r.kind ?? "")|\(r.namespace ?? "")|\(r.name ?? "")|\(r.uid ?? "")"
        var bucket = spamBuckets[key] ?? (Self.spamBurst, now)
        let elapsed = now - bucket.at
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        bucket.tokens = min(Self.spamBurst, bucket.tokens + seconds / Self.spamRefillSeconds)
        bucket.at = now
        let ok = bucket.tokens >= 1
        if ok { bucket.tokens -= 1 }
        if spamBuckets.count > 4096, spamBuckets[key] == nil { spamBuckets.removeAll() }
        spamBuckets[key] = bucket
        return ok
    }

    func enqueue(_ p: Pending) {
        guard allowed(p) else {
            spamDropped += 1
            if spamDropped == 1 || spamDropped % 100 == 0 {
                logger.debug("event \(p.reason) for \(p.involved.name ?? "") dropped: more than 25 events for that object (1 more every 5 min, like kubelet); \(spamDropped) dropped so far")
            }
            return
        }
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
        try await writer.send(involved: p.involved, namespace: p.involved.namespace ?? "default", type: p.kind,
                              reason: p.reason, message: p.message, time: p.time, fallbackName: nodeName)
    }
}
