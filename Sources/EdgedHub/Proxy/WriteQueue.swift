// Writes that must not be lost while the cloud is away: Events (created or their counts patched) and the status
// of edged's own pods. They go to the store's durable queue, answered at once with the object as the API server
// would return it, and are replayed in order when the cloud is back. The newest status of a pod replaces an older
// one still queued (only the newest matters). On replay: success removes the entry; NotFound (the pod or event is
// gone), AlreadyExists (sent before the link dropped) and other refusals are logged and dropped; an unreachable
// server, 429 or 5xx stop the replay until the next try.

import EdgedCore
import EdgedKube
import Logging

enum WriteQueueing {
    static func isQueueable(_ info: APIRequestInfo, component: String) -> Bool {
        if info.resource == "events", info.group.isEmpty || info.group == "events.k8s.io", info.subresource == nil,
           info.verb == .create || info.verb == .patch {
            return true
        }
        return component == "edged" && info.group.isEmpty && info.resource == "pods" && info.subresource == "status"
            && (info.verb == .patch || info.verb == .update)
    }

    static func enqueue(_ core: HubCore, _ call: HubCall, _ info: APIRequestInfo, _ writer: any HubResponseWriter) async throws {
        guard HubCore.mayUseStore(call.request) else {
            try await core.refuseAnonymousOffline(call, writer, "queue writes")
            return
        }
        let contentType = call.request.header("Content-Type") ?? "application/json"
        guard let patchOrObject = try? JSONValue.parse(call.request.body) else {
            try await HubStatus.write(writer, code: 400, reason: "BadRequest", message: "the request body is not valid JSON")
            return
        }
        var body = call.request.body
        var response: JSONValue
        var status = 200
        var coalesceKey: String?
        let namespace = info.namespace ?? "default"
        if info.resource == "events" {
            if info.verb == .create {
                var event = patchOrObject
                if event[path: ["metadata", "name"]]?.stringValue == nil {
                    let prefix = event[path: ["metadata", "generateName"]]?.stringValue ?? "event-"
                    event.set(["metadata", "name"], to: .string(prefix + randomSuffix()))
                }
                event.set(["metadata", "namespace"], to: .string(namespace))
                body = HubJSON.bytes(event)
                response = event
                status = 201
            } else {
                let key = StoreKey(component: call.component, resource: info.resourceKey, namespace: namespace, name: info.name ?? "")
                let base = (try? core.store.get(key)).flatMap { try? JSONValue.parse($0.body) }
                    ?? .object([("kind", .string("Event")), ("apiVersion", .string(KindTable.apiVersion(info))),
                                ("metadata", .object([("name", .string(info.name ?? "")), ("namespace", .string(namespace))]))])
                response = HubJSON.applyStrategicPatch(base, patchOrObject)
            }
        } else {
            let name = info.name ?? ""
            coalesceKey = "pods/status:\(namespace)/\(name)"
            let key = StoreKey(component: call.component, resource: "/v1/pods", namespace: namespace, name: name)
            let cached = (try? core.store.get(key)).flatMap { try? JSONValue.parse($0.body) }
            if info.verb == .update {
                response = patchOrObject
            } else if let cached, !contentType.contains("json-patch") {
                response = HubJSON.applyStrategicPatch(cached, patchOrObject)
            } else {
                response = cached ?? HubJSON.applyStrategicPatch(
                    .object([("kind", .string("Pod")), ("apiVersion", .string("v1")),
                             ("metadata", .object([("name", .string(name)), ("namespace", .string(namespace))]))]),
                    patchOrObject)
            }
            // The local copy shows the newest status to offline readers (and after an offline reboot).
            if cached != nil {
                core.cacheWriter.submit(.put(StoredObject(key: key, resourceVersion: response[path: ["metadata", "resourceVersion"]]?.stringValue ?? "",
                                                          body: HubJSON.bytes(response))))
            }
        }
        do {
            _ = try core.store.enqueue(QueuedWrite(id: 0, component: call.component, method: call.request.method,
                                                   path: call.request.target, contentType: contentType, body: body,
                                                   coalesceKey: coalesceKey, enqueuedAt: .now()))
        } catch {
            core.logger.error("hub: cannot queue \(call.request.method) \(call.path) while offline: \(error)")
            try await HubStatus.write(writer, code: 503, reason: "ServiceUnavailable",
                                      message: "the API server is unreachable and edged's edge hub could not queue this write: \(error)")
            return
        }
        core.count { $0.queuedWrites += 1 }
        core.replayWake()
        try await HubStatus.writeJSON(writer, status: status, body: HubJSON.bytes(response))
    }

    static func randomSuffix() -> String {
        let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
        return String((0..<5).map { _ in alphabet.randomElement()! })
    }
}

/// Replays the queue whenever the cloud is online and the queue is not empty.
struct WriteReplayer {
    let core: HubCore

    func run() async {
        while !Task.isCancelled {
            await core.health.waitForReturnTurn()
            if Task.isCancelled { return }
            let drained = await replayBatch()
            if drained {
                // Look again when a write is queued, or every 5 s in case one was missed.
                for _ in 0..<20 where !core.takeReplayWake() {
                    try? await Task.sleep(for: .milliseconds(250))
                }
            } else {
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Sends queued writes in order; true when the queue is empty afterwards.
    func replayBatch() async -> Bool {
        guard let batch = try? core.store.queued(limit: 200) else { return false }
        if batch.isEmpty { return true }
        for write in batch {
            if Task.isCancelled || core.health.current != .online { return false }
            let request = KubeRequest(method: write.method, path: write.path,
                                      headers: [("Content-Type", write.contentType), ("Accept", "application/json")],
                                      body: write.body)
            let response: KubeResponse
            do {
                response = try await core.nodeTransport.execute(request, timeout: core.config.forwardTimeout)
            } catch {
                core.logger.info("hub: replaying queued writes paused: \(error)")
                return false
            }
            switch response.status {
            case 200..<300:
                core.count { $0.replayedWrites += 1 }
            case 429, 500...:
                core.logger.info("hub: replaying \(write.method) \(HubCall.pathOnly(write.path)) got \(response.status); retrying later")
                return false
            default:
                let message = (try? JSONValue.parse(response.body))?["message"]?.stringValue ?? ""
                core.logger.warning("hub: dropped queued \(write.method) \(HubCall.pathOnly(write.path)) from \(write.component): the API server answered \(response.status) \(message)")
                core.count { $0.droppedWrites += 1 }
            }
            do { try core.store.removeQueued(id: write.id) } catch {
                core.logger.error("hub: cannot remove replayed write \(write.id) from the queue: \(error)")
                return false
            }
        }
        return (try? core.store.stats().queued) == 0
    }
}
