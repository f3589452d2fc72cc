// The Kubernetes API client: typed get/list/watch/create/update/patch/delete over a `KubeTransport`.
//
// Writing back without losing fields (the rule every caller follows):
// edged's models cover only the fields it reads, so a PUT of a decoded-then-encoded model would erase the rest
// (fields added by newer servers, other controllers' annotations). Therefore:
//   - status is written with PATCH (a strategic merge patch of `{"status": ...}`; `Patch.status(_:)`), and
//     metadata/spec changes with a merge or JSON patch carrying only the changed fields;
//   - the one read-modify-write with PUT, the node Lease renewal, reads the object as raw JSON
//     (`getRaw`/`KubeResource.raw()`), changes only the fields edged owns (`JSONObject.set`), and PUTs the result
//     (`updateRaw`), so the resourceVersion check guards the update and every other field is returned as read;
//   - objects edged creates itself (Node, Lease, Event, CSR) are created from the typed models.

import EdgedCore
import Logging

/// Options of a DELETE.
public struct DeleteOptions: Sendable, Equatable {
    /// Seconds the object has to terminate (pods); 0 deletes now.
    public var gracePeriodSeconds: Int64?
    /// Delete only if the object still has this uid (not a re-created namesake).
    public var preconditionUID: String?
    public var preconditionResourceVersion: String?
    /// Orphan, Background or Foreground.
    public var propagationPolicy: String?

    public init(gracePeriodSeconds: Int64? = nil, preconditionUID: String? = nil,
                preconditionResourceVersion: String? = nil, propagationPolicy: String? = nil) {
        self.gracePeriodSeconds = gracePeriodSeconds
        self.preconditionUID = preconditionUID
        self.preconditionResourceVersion = preconditionResourceVersion
        self.propagationPolicy = propagationPolicy
    }

    var json: JSONValue {
        var m: [(String, JSONValue)] = [("kind", .string("DeleteOptions")), ("apiVersion", .string("v1"))]
        if let g = gracePeriodSeconds { m.append(("gracePeriodSeconds", .number(String(g)))) }
        var pre: [(String, JSONValue)] = []
        if let u = preconditionUID { pre.append(("uid", .string(u))) }
        if let rv = preconditionResourceVersion { pre.append(("resourceVersion", .string(rv))) }
        if !pre.isEmpty { m.append(("preconditions", .object(pre))) }
        if let p = propagationPolicy { m.append(("propagationPolicy", .string(p))) }
        return .object(m)
    }
}

/// A client for one API server. Safe to share between tasks; every call is independent.
public final class KubeClient: Sendable {
    public let transport: any KubeTransport
    public let requestTimeout: Duration
    public let watchIdleTimeout: Duration
    let logger: Logger

    /// A client over HTTPS (`HTTPKubeTransport`). Throws if the URL or credentials are unusable.
    public convenience init(config: KubeClientConfig, logger: Logger = Logger(label: "edged.kube")) throws {
        self.init(transport: try HTTPKubeTransport(config: config), requestTimeout: config.requestTimeout,
                  watchIdleTimeout: config.watchIdleTimeout, logger: logger)
    }

    /// A client over any transport (the edge hub, tests).
    public init(transport: any KubeTransport, requestTimeout: Duration = .seconds(30),
                watchIdleTimeout: Duration = .seconds(330), logger: Logger = Logger(label: "edged.kube")) {
        self.transport = transport
        self.requestTimeout = requestTimeout
        self.watchIdleTimeout = watchIdleTimeout
        self.logger = logger
    }

    public var server: String { transport.server }

    /// New credentials for requests from now on (rotated certificate); open watches finish on the old connection.
    public func updateCredentials(_ credentials: KubeCredentials) throws {
        try transport.updateCredentials(credentials)
    }

    // MARK: Reads

    public func get<T>(_ resource: KubeResource<T>, namespace: String? = nil, name: String) async throws -> T {
        let path = resource.path(namespace: namespace, name: name)
        return try decode(T.self, try await send("GET", path))
    }

    /// The object as raw JSON (see the rule at the top of this file).
    public func getRaw<T>(_ resource: KubeResource<T>, namespace: String? = nil, name: String) async throws -> JSONObject {
        try await get(resource.raw(), namespace: namespace, name: name)
    }

    /// Lists objects, following `continue` tokens when `options.limit` pages the list. The result's
    /// `resourceVersion` is the one to watch from. A page token that expired meanwhile fails with `isGone`.
    public func list<T>(_ resource: KubeResource<T>, namespace: String? = nil,
                        options: ListOptions = ListOptions()) async throws -> ObjectList<T> {
        var result = ObjectList<T>()
        var token: String?
        repeat {
            var q = Query()
            q.add("labelSelector", options.labelSelector)
            q.add("fieldSelector", options.fieldSelector)
            q.add("limit", options.limit.map(String.init))
            q.add("continue", token)
            if token == nil { q.add("resourceVersion", options.resourceVersion) }
            let path = resource.path(namespace: namespace, name: nil) + q.text
            let page = try decode(ObjectList<T>.self, try await send("GET", path))
            if token == nil {
                result.apiVersion = page.apiVersion
                result.kind = page.kind
                result.metadata.resourceVersion = page.metadata.resourceVersion
            }
            result.items.append(contentsOf: page.items)
            token = page.metadata.continue.flatMap { $0.isEmpty ? nil : $0 }
        } while token != nil
        return result
    }

    /// Watches a collection and calls `onEvent` for each event, in order, until the server ends the stream
    /// (timeoutSeconds), which returns normally. Errors before the stream starts throw `KubeError` (e.g. 403);
    /// a 410 after it started arrives as a `.error(Status)` event.
    public func watch<T>(_ resource: KubeResource<T>, namespace: String? = nil, options: WatchOptions,
                         onEvent: (WatchEvent<T>) async throws -> Void) async throws {
        var q = Query()
        q.add("watch", "true")
        q.add("resourceVersion", options.resourceVersion)
        q.add("labelSelector", options.labelSelector)
        q.add("fieldSelector", options.fieldSelector)
        if options.allowWatchBookmarks { q.add("allowWatchBookmarks", "true") }
        q.add("timeoutSeconds", options.timeoutSeconds.map(String.init))
        let path = resource.path(namespace: namespace, name: nil) + q.text
        let request = KubeRequest(method: "GET", path: path, headers: [("Accept", "application/json")])
        let idle = options.timeoutSeconds.map { Duration.seconds($0 + 30) } ?? watchIdleTimeout
        let what = "watch \(resource) at \(server)\(path)"
        try await transport.stream(request, idleTimeout: idle) { status, chunks in
            guard (200..<300).contains(status) else {
                var body: [UInt8] = []
                for try await chunk in chunks where body.count < 1 << 16 { body += chunk }
                throw KubeError.fromResponse(status: status, body: body, what: what, server: server)
            }
            var decoder = WatchStreamDecoder<T>()
            for try await chunk in chunks {
                for event in try decoder.feed(chunk) { try await onEvent(event) }
            }
            if let last = try decoder.finish() { try await onEvent(last) }
        }
    }

    /// The same watch as an async sequence (buffered without bound: prefer the callback form for big streams).
    /// Cancelling the consuming task, or dropping the sequence, closes the stream.
    public func watch<T>(_ resource: KubeResource<T>, namespace: String? = nil,
                         options: WatchOptions) -> AsyncThrowingStream<WatchEvent<T>, Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: WatchEvent<T>.self, throwing: Error.self)
        let task = Task {
            do {
                try await self.watch(resource, namespace: namespace, options: options) { event in
                    continuation.yield(event)
                }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    // MARK: Writes

    /// POST: creates an object. For subresources (serviceaccounts/NAME/token, pods/NAME/eviction) pass `name`.
    public func create<T>(_ resource: KubeResource<T>, namespace: String? = nil, name: String? = nil,
                          _ object: T) async throws -> T {
        let path = resource.path(namespace: namespace, name: name)
        return try decode(T.self, try await send("POST", path, body: try encodeObject(object)))
    }

    /// PUT: replaces an object (its metadata.resourceVersion must be current, or this fails with `isConflict`).
    /// `name` defaults to the object's metadata.name.
    public func update<T>(_ resource: KubeResource<T>, namespace: String? = nil, name: String? = nil,
                          _ object: T) async throws -> T {
        guard let name = name ?? (object as? any KubeObject)?.metadata.name else {
            throw KubeError(kind: .invalidRequest, message: "update \(resource): the object has no metadata.name and no name was given")
        }
        let path = resource.path(namespace: namespace, name: name)
        return try decode(T.self, try await send("PUT", path, body: try encodeObject(object)))
    }

    /// PUT of a raw object read with `getRaw` (only the fields you changed differ from what the server has).
    public func updateRaw<T>(_ resource: KubeResource<T>, namespace: String? = nil, _ object: JSONObject) async throws -> JSONObject {
        try await update(resource.raw(), namespace: namespace, object)
    }

    /// PATCH with a strategic merge, JSON merge or JSON patch body.
    public func patch<T>(_ resource: KubeResource<T>, namespace: String? = nil, name: String,
                         _ patch: Patch) async throws -> T {
        let path = resource.path(namespace: namespace, name: name)
        let body = Array(patch.body.jsonText.utf8)
        return try decode(T.self, try await send("PATCH", path, body: body, contentType: patch.contentType))
    }

    /// DELETE. Returns the object when the server keeps it for graceful termination (pods get a
    /// deletionTimestamp), nil when it answers with a Status (deleted at once).
    @discardableResult
    public func delete<T>(_ resource: KubeResource<T>, namespace: String? = nil, name: String,
                          options: DeleteOptions = DeleteOptions()) async throws -> T? {
        let path = resource.path(namespace: namespace, name: name)
        let response = try await send("DELETE", path, body: Array(options.json.jsonText.utf8))
        if response.body.isEmpty { return nil }
        if let v = try? JSONValue.parse(response.body), v["kind"]?.stringValue == "Status" { return nil }
        return try decode(T.self, response)
    }

    // MARK: Plumbing

    /// Sends one request; non-2xx answers throw `KubeError` built from the Status body.
    func send(_ method: String, _ path: String, body: [UInt8]? = nil,
              contentType: String = "application/json") async throws -> KubeResponse {
        var headers = [("Accept", "application/json")]
        if body != nil { headers.append(("Content-Type", contentType)) }
        let request = KubeRequest(method: method, path: path, headers: headers, body: body)
        let response = try await transport.execute(request, timeout: requestTimeout)
        guard (200..<300).contains(response.status) else {
            let error = KubeError.fromResponse(status: response.status, body: response.body,
                                               what: "\(method) \(server)\(path)", server: server)
            logger.debug("kube request failed", metadata: ["error": "\(error.message)"])
            throw error
        }
        return response
    }

    func decode<T: Decodable>(_ type: T.Type, _ response: KubeResponse) throws -> T {
        if T.self == JSONObject.self {
            do {
                return JSONObject(try JSONValue.parse(response.body)) as! T
            } catch {
                throw KubeError(kind: .decoding, message: "\(server): the API server sent invalid JSON: \(error)")
            }
        }
        do {
            return try KubeJSON.decode(type, from: response.body)
        } catch {
            let preview = String(decoding: response.body.prefix(200), as: UTF8.self)
            throw KubeError(kind: .decoding, message: "\(server): cannot decode \(T.self) from the response (\(error)): \(preview)")
        }
    }

    func encodeObject<T: Encodable>(_ object: T) throws -> [UInt8] {
        if let raw = object as? JSONObject { return Array(raw.value.jsonText.utf8) }
        do {
            return try KubeJSON.encode(object)
        } catch {
            throw KubeError(kind: .invalidRequest, message: "cannot encode \(T.self): \(error)")
        }
    }
}

extension KubeResource {
    /// The same resource read and written as raw JSON.
    public func raw() -> KubeResource<JSONObject> {
        KubeResource<JSONObject>(group: group, version: version, plural: plural, namespaced: namespaced, subresource: subresourceName)
    }
}
