// Reads answered from the store: get (404 when absent), list (selectors applied here, the resourceVersion of the
// last list or bookmark seen), watch (open, bookmarks only, ended when the cloud is back so the client re-lists).

import EdgedCore
import EdgedKube

enum OfflineReads {
    static func get(_ core: HubCore, _ call: HubCall, _ info: APIRequestInfo, _ writer: any HubResponseWriter) async throws {
        guard let name = info.name else { return try await list(core, call, info, writer) }
        guard let stored = try core.store.get(call.key(info, name: name)) else {
            try await HubStatus.write(writer, code: 404, reason: "NotFound",
                                      message: "\(info.resource) \"\(name)\" not found (edged's edge hub has no copy for \(call.component) and the API server is unreachable)",
                                      details: [("name", name), ("group", info.group), ("kind", info.resource)])
            return
        }
        var body = stored.body
        if Filtering.applies(info) {
            if let v = try? JSONValue.parse(body) {
                guard let out = core.filters(offline: true).apply(component: call.component, resourceKey: info.resourceKey, object: v) else {
                    try await HubStatus.write(writer, code: 404, reason: "NotFound", message: "\(info.resource) \"\(name)\" not found")
                    return
                }
                body = HubJSON.bytes(out)
            }
        }
        try await HubStatus.writeJSON(writer, status: 200, body: body)
    }

    static func list(_ core: HubCore, _ call: HubCall, _ info: APIRequestInfo, _ writer: any HubResponseWriter) async throws {
        guard let rv = try core.store.listResourceVersion(component: call.component, resource: info.resourceKey,
                                                         namespace: info.namespace) else {
            try await HubStatus.write(writer, code: 404, reason: "NotFound",
                                      message: "edged's edge hub has no cached list of \(info.resource)\(info.namespace.map { " in namespace \($0)" } ?? "") for \(call.component), and the API server is unreachable; it will be served once the cloud is back")
            return
        }
        let label: LabelSelector?
        let field: FieldSelector?
        do {
            label = try info.labelSelector.flatMap { $0.isEmpty ? nil : try LabelSelector(parsing: $0) }
            field = try info.fieldSelector.flatMap { $0.isEmpty ? nil : try FieldSelector(parsing: $0) }
        } catch {
            try await HubStatus.write(writer, code: 400, reason: "BadRequest", message: "\(error)")
            return
        }
        let items = try core.store.list(component: call.component, resource: info.resourceKey, namespace: info.namespace)
        let envelope = KindTable.envelope(core, call, info)
        let filtering = Filtering.applies(info)
        let filters = filtering ? core.filters(offline: true) : nil
        try await writer.writeHead(status: 200, headers: [("Content-Type", "application/json")])
        var out: [UInt8] = []
        out.reserveCapacity(512 << 10)
        out += Array("{\"kind\":\(HubJSON.quoted(envelope.kind + "List")),\"apiVersion\":\(HubJSON.quoted(envelope.apiVersion)),\"metadata\":{\"resourceVersion\":\(HubJSON.quoted(rv))},\"items\":[".utf8)
        var first = true
        for item in items {
            var bytes = item.body
            if label != nil || field != nil || filtering {
                guard let v = try? JSONValue.parse(bytes) else { continue }
                if let label, !label.matches(object: v) { continue }
                if let field, !field.matches(object: v) { continue }
                if let filters {
                    guard let f = filters.apply(component: call.component, resourceKey: info.resourceKey, object: v) else { continue }
                    bytes = HubJSON.bytes(f)
                }
            }
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            out += bytes
            if out.count >= 512 << 10 {
                try await writer.writeBody(out)
                out.removeAll(keepingCapacity: true)
            }
        }
        out += Array("]}".utf8)
        try await writer.writeBody(out)
        try await writer.finish()
    }

    /// A watch while the cloud is away: 200, then only bookmarks (when asked for) until the cloud is back, the
    /// client leaves or timeoutSeconds passes; ending it makes the client re-list from the cloud.
    static func watch(_ core: HubCore, _ call: HubCall, _ info: APIRequestInfo, _ writer: any HubResponseWriter) async throws {
        let rv = core.bookmarkVersion(call, info)
        try await writer.writeHead(status: 200, headers: [("Content-Type", "application/json")])
        try await watchBody(core, call, info, writer, resourceVersion: rv)
    }

    /// The body of a watch served from the store (also the rest of a forwarded watch whose upstream broke off).
    static func watchBody(_ core: HubCore, _ call: HubCall, _ info: APIRequestInfo, _ writer: any HubResponseWriter,
                          resourceVersion rv: String) async throws {
        let envelope = KindTable.envelope(core, call, info)
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = info.timeoutSeconds.map { start + .seconds($0) }
        var nextBookmark = start + .milliseconds(200)
        while !Task.isCancelled, !writer.clientClosed {
            let now = clock.now
            // Back: online and past this node's return turn (CloudHealth), and the API server answered (a probe or a
            // proxied request) well after this watch lost it — not an exchange that was already under way when the
            // link broke.
            if core.health.isPastReturnTurn, let ok = core.health.lastSuccess, ok > start + .milliseconds(700),
               now - start >= .seconds(1) { break }
            if let deadline, now >= deadline { break }
            if info.allowWatchBookmarks, now >= nextBookmark {
                let line = "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\(HubJSON.quoted(envelope.kind)),\"apiVersion\":\(HubJSON.quoted(envelope.apiVersion)),\"metadata\":{\"resourceVersion\":\(HubJSON.quoted(rv))}}}\n"
                try await writer.writeBody(Array(line.utf8))
                nextBookmark = now + core.config.offlineBookmarkInterval
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        try? await writer.finish()
    }
}

/// Which responses go through the response filters (they are parsed and re-written then).
enum Filtering {
    static let resources: Set<String> = ["/v1/services", "/v1/endpoints", "discovery.k8s.io/v1/endpointslices"]
    static func applies(_ info: APIRequestInfo) -> Bool { resources.contains(info.resourceKey) }
}

/// kind and apiVersion of a resource's objects, for lists and bookmarks assembled by the hub.
enum KindTable {
    static let known: [String: String] = [
        "/v1/pods": "Pod", "/v1/nodes": "Node", "/v1/services": "Service", "/v1/endpoints": "Endpoints",
        "/v1/configmaps": "ConfigMap", "/v1/secrets": "Secret", "/v1/namespaces": "Namespace", "/v1/events": "Event",
        "/v1/serviceaccounts": "ServiceAccount", "/v1/persistentvolumeclaims": "PersistentVolumeClaim",
        "discovery.k8s.io/v1/endpointslices": "EndpointSlice", "coordination.k8s.io/v1/leases": "Lease",
        "apiextensions.k8s.io/v1/customresourcedefinitions": "CustomResourceDefinition",
        "events.k8s.io/v1/events": "Event",
    ]

    static func apiVersion(_ info: APIRequestInfo) -> String {
        info.group.isEmpty ? info.version : "\(info.group)/\(info.version)"
    }

    /// From the table, else from the envelope the hub saw on the last list of that resource, else a guess.
    static func envelope(_ core: HubCore, _ call: HubCall, _ info: APIRequestInfo) -> (kind: String, apiVersion: String) {
        if let kind = known[info.resourceKey] { return (kind, apiVersion(info)) }
        if let stored = try? core.store.get(StoreKey(component: call.component, resource: "kinds", namespace: "", name: info.resourceKey)),
           let kind = String(validating: stored.body, as: UTF8.self), !kind.isEmpty {
            return (kind, apiVersion(info))
        }
        var kind = info.resource
        if kind.hasSuffix("s") { kind.removeLast() }
        return (kind.prefix(1).uppercased() + kind.dropFirst(), apiVersion(info))
    }
}
