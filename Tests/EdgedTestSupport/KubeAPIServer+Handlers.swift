// Request routing and the REST verbs (get, list, watch, create, update, patch, delete) of the test API server.

import Foundation
import X509

/// An authenticated caller.
struct KubeUser: Sendable {
    let name: String
    let groups: [String]

    static let anonymous = KubeUser(name: "system:anonymous", groups: ["system:unauthenticated"])
    static let internalAdmin = KubeUser(name: "system:apiserver", groups: ["system:masters", "system:authenticated"])
}

/// One HTTP request as the server core sees it.
struct APIRequest: Sendable {
    var method: String
    var path: String
    var query: [String: String]
    var headers: [String: String]     // lower-cased names
    var body: Data

    /// Splits "path?query" and decodes the query like Go's url.ParseQuery.
    init(method: String, uri: String, headers: [String: String], body: Data) {
        self.method = method
        self.headers = headers
        self.body = body
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        path = String(parts[0])
        var q: [String: String] = [:]
        if parts.count > 1 {
            for item in parts[1].split(separator: "&") {
                let kv = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                func dec(_ s: Substring) -> String {
                    String(s).split(separator: "+", omittingEmptySubsequences: false).joined(separator: " ")
                        .removingPercentEncoding ?? String(s)
                }
                q[dec(kv[0])] = kv.count > 1 ? dec(kv[1]) : ""
            }
        }
        query = q
    }
}

/// What the core answers: a JSON body, or "this connection is now watch stream `id`".
enum APIReply: Sendable {
    case object(code: Int, KJSON)
    /// A JSON body already serialized (large lists).
    case json(code: Int, [UInt8])
    /// `id` nil: the stream ends right after what was already sent (an ERROR event).
    case watch(id: Int?, bookmarks: Bool, timeoutSeconds: Int?)
}

/// Where a resource path points.
struct APITarget: Sendable {
    let resource: KubeResource
    let namespace: String?
    let name: String?
    let subresource: String?
    let legacyWatch: Bool
}

extension KubeAPIServerCore {
    /// Parses /api/v1/... and /apis/<g>/<v>/... resource paths; nil when the path names no served resource.
    static func target(_ path: String) -> APITarget? {
        let segs = path.split(separator: "/").map(String.init)
        var rest: ArraySlice<String>
        let group: String, version: String
        if segs.count >= 3, segs[0] == "api" { group = ""; version = segs[1]; rest = segs[2...] }
        else if segs.count >= 4, segs[0] == "apis" { group = segs[1]; version = segs[2]; rest = segs[3...] }
        else { return nil }
        var legacyWatch = false
        if rest.first == "watch" { legacyWatch = true; rest = rest.dropFirst() }
        var namespace: String? = nil
        if rest.count >= 3, rest.first == "namespaces",
           let r = KubeResource.find(group: group, version: version, plural: rest[rest.startIndex + 2]), r.namespaced {
            namespace = rest[rest.startIndex + 1]
            rest = rest.dropFirst(2)
        }
        let items = Array(rest)
        guard !items.isEmpty, items.count <= 3,
              let r = KubeResource.find(group: group, version: version, plural: items[0]) else { return nil }
        let name = items.count > 1 ? items[1] : nil
        let sub = items.count > 2 ? items[2] : nil
        if r.namespaced && namespace == nil && name != nil { return nil }
        if let sub, !r.subresources.contains(sub) { return nil }
        if legacyWatch && sub != nil { return nil }
        return APITarget(resource: r, namespace: namespace, name: name, subresource: sub, legacyWatch: legacyWatch)
    }

    /// Serves one request for `user`; the lock is held for the whole request so each is atomic.
    func serve(_ req: APIRequest, user: KubeUser?, watchSink: (@Sendable (Data) -> Void)?) -> APIReply {
        store.lock.lock()
        defer { store.lock.unlock() }
        do {
            return try route(req, user: user, watchSink: watchSink)
        } catch let e as APIError {
            return .object(code: e.code, e.status)
        } catch {
            return .object(code: 500, APIError(code: 500, reason: "InternalError", message: "\(error)").status)
        }
    }

    private func route(_ req: APIRequest, user: KubeUser?, watchSink: (@Sendable (Data) -> Void)?) throws -> APIReply {
        guard let user else { throw APIError.unauthorized }
        let path = req.path.count > 1 && req.path.hasSuffix("/") ? String(req.path.dropLast()) : req.path
        let segs = path.split(separator: "/").map(String.init)

        // Non-resource paths: health, version and discovery.
        if let doc = try nonResource(segs, path: path, method: req.method, user: user) { return .object(code: 200, doc) }
        if let reply = try reviewRoute(req, path: path, user: user) { return reply }   // KubeAPIServer+Reviews.swift
        guard let t = Self.target(path) else { throw APIError.pathNotFound(path) }
        let r = t.resource

        let verb: String
        switch (req.method, t.name, t.subresource) {
        case ("GET", nil, _): verb = t.legacyWatch || isWatch(req) ? "watch" : "list"
        case ("GET", _, _): verb = t.legacyWatch || isWatch(req) ? "watch" : "get"
        case ("POST", nil, nil): verb = "create"
        case ("POST", _, "token"), ("POST", _, "eviction"): verb = "create"
        case ("PUT", .some, _): verb = "update"
        case ("PATCH", .some, _): verb = "patch"
        case ("DELETE", .some, nil): verb = "delete"
        case ("DELETE", nil, nil): verb = "deletecollection"
        default: throw APIError.methodNotAllowed(req.method)
        }
        try authorize(user, verb: verb, target: t, query: req.query)
        if ["create", "update"].contains(verb), !req.body.isEmpty,
           let ct = req.headers["content-type"], !ct.hasPrefix("application/json") {
            // No protobuf (or YAML) bodies: kubectl's typed clients send protobuf and get this 415.
            throw APIError(code: 415, reason: "UnsupportedMediaType",
                           message: "the body of the request was in an unknown format - accepted media types include: application/json (this test API server has no protobuf; content type \"\(ct)\")")
        }
        if let ns = t.namespace, verb == "create" || t.subresource == "token", store.get(Self.namespaces, namespace: nil, name: ns) == nil {
            throw APIError.notFound(Self.namespaces, ns)
        }

        switch verb {
        case "get":
            guard let name = t.name, let obj = store.get(r, namespace: t.namespace, name: name) else {
                throw APIError.notFound(r, t.name ?? "")
            }
            return .object(code: 200, obj)
        case "list": return .json(code: 200, try listBytes(t, req))
        case "watch": return try watch(t, req, sink: watchSink)
        case "create":
            if t.subresource == "token" || t.subresource == "eviction" {
                let body = req.body.isEmpty ? KJSON.object([:]) : try parseBody(req.body)
                try nodeRestrictionWrite(t, verb: verb, old: nil, new: body, user: user)
            }
            if t.subresource == "token" { return .object(code: 201, try tokenRequest(t, req)) }
            if t.subresource == "eviction" { return .object(code: 201, try evict(t, req)) }
            return .object(code: 201, try create(r, namespace: t.namespace, body: try parseBody(req.body), user: user))
        case "update":
            let body = try parseBody(req.body)
            try nodeRestrictionWrite(t, verb: verb, old: store.get(r, namespace: t.namespace, name: t.name!), new: body, user: user)
            return .object(code: 200, try update(t, body: body))
        case "patch":
            guard let old = store.get(r, namespace: t.namespace, name: t.name!) else { throw APIError.notFound(r, t.name!) }
            let patched = try applyPatch(old, contentType: req.headers["content-type"] ?? "", patch: req.body, resource: r)
            try nodeRestrictionWrite(t, verb: verb, old: old, new: patched, user: user)
            return .object(code: 200, try update(t, body: patched))
        case "delete":
            if store.get(r, namespace: t.namespace, name: t.name!) == nil { throw APIError.notFound(r, t.name!) }
            try nodeRestrictionWrite(t, verb: verb, old: nil, new: nil, user: user)
            let options = req.body.isEmpty ? KJSON.object([:]) : try parseBody(req.body)
            return .object(code: 200, try delete(r, namespace: t.namespace, name: t.name!, options: options, query: req.query))
        default:
            let options = req.body.isEmpty ? KJSON.object([:]) : try parseBody(req.body)
            let selected = try list(APITarget(resource: r, namespace: t.namespace, name: nil, subresource: nil, legacyWatch: false), req)
            var deleted: [KJSON] = []
            for item in selected["items"]?.array ?? [] {
                let name = item[path: ["metadata", "name"]]?.string ?? ""
                let ns = item[path: ["metadata", "namespace"]]?.string
                deleted.append(try delete(r, namespace: ns, name: name, options: options, query: req.query))
            }
            var out = selected
            out["items"] = .array(deleted.map(stripTypeMeta))
            return .object(code: 200, out)
        }
    }

    private func isWatch(_ req: APIRequest) -> Bool {
        let w = req.query["watch"]
        return w == "1" || w == "true"
    }

    private func nonResource(_ segs: [String], path: String, method: String, user: KubeUser) throws -> KJSON? {
        var doc: KJSON? = nil
        let joined = segs.joined(separator: "/")
        if ["version"].contains(joined) { doc = KubeDiscovery.version }
        else if ["healthz", "livez", "readyz"].contains(joined) { doc = .string("ok") }
        else if joined == "api" { doc = KubeDiscovery.apiVersions(serverAddress: serverAddress) }
        else if joined == "apis" { doc = KubeDiscovery.groupList }
        else if segs.count == 2, segs[0] == "api" {
            guard let d = KubeDiscovery.resourceList(group: "", version: segs[1]) else { throw APIError.pathNotFound(path) }
            doc = d
        } else if segs.count == 2, segs[0] == "apis" {
            guard KubeDiscovery.groups.contains(segs[1]) else { throw APIError.pathNotFound(path) }
            var d = KubeDiscovery.group(segs[1])
            d["kind"] = .string("APIGroup")
            d["apiVersion"] = .string("v1")
            doc = d
        } else if segs.count == 3, segs[0] == "apis" {
            guard let d = KubeDiscovery.resourceList(group: segs[1], version: segs[2]) else { throw APIError.pathNotFound(path) }
            doc = d
        }
        guard let doc else { return nil }
        guard method == "GET" else { throw APIError.methodNotAllowed(method) }
        try authorizeNonResource(user, path: path)
        return doc
    }

    func parseBody(_ data: Data) throws -> KJSON {
        let v: KJSON
        do { v = try KJSON.parse(data) } catch {
            throw APIError.badRequest("the body of the request was in an unknown format - accepted media types include: application/json; json parse error: \(error)")
        }
        guard v.object != nil else { throw APIError.badRequest("the body of the request is not a JSON object") }
        return v
    }

    func stripTypeMeta(_ o: KJSON) -> KJSON {
        var o = o
        o["kind"] = nil
        o["apiVersion"] = nil
        return o
    }

    // MARK: list and watch

    /// A list as a KJSON tree (deletecollection works on it).
    private func list(_ t: APITarget, _ req: APIRequest) throws -> KJSON {
        let (r, rows, meta) = try select(t, req)
        return .object([
            "kind": .string(r.kind + "List"), "apiVersion": .string(r.apiVersion), "metadata": meta,
            "items": .array(rows.map { stripTypeMeta($0.1) }),
        ])
    }

    /// A list as served: the same bytes `list(...).bytes` would give, built from each object's cached
    /// serialization when the list reads the current state.
    private func listBytes(_ t: APITarget, _ req: APIRequest) throws -> [UInt8] {
        let (r, rows, meta) = try select(t, req)
        let current = meta["resourceVersion"]?.string == String(store.resourceVersion)
        var out: [UInt8] = []
        out.reserveCapacity(64 + rows.count * 3200)
        out.append(contentsOf: "{\"apiVersion\":".utf8)
        KJSON.writeString(r.apiVersion, to: &out)
        out.append(contentsOf: ",\"items\":[".utf8)
        for (i, (key, obj)) in rows.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            if current { out.append(contentsOf: store.listItemBytes(r, key: key, obj)) }
            else { stripTypeMeta(obj).write(to: &out) }
        }
        out.append(contentsOf: "],\"kind\":".utf8)
        KJSON.writeString(r.kind + "List", to: &out)
        out.append(contentsOf: ",\"metadata\":".utf8)
        meta.write(to: &out)
        out.append(UInt8(ascii: "}"))
        return out
    }

    /// The objects a list request selects (key order, one page) and the list's metadata.
    private func select(_ t: APITarget, _ req: APIRequest) throws -> (KubeResource, [(String, KJSON)], KJSON) {
        let r = t.resource
        let labels: LabelSelector, fields: FieldSelector
        do {
            labels = try LabelSelector.parse(req.query["labelSelector"] ?? "")
            fields = try FieldSelector.parse(req.query["fieldSelector"] ?? "", for: r)
        } catch let e as SelectorError { throw APIError.badRequest(e.message) }
        let limit = Int(req.query["limit"] ?? "") ?? 0
        var listRV = store.resourceVersion
        var startAfter: String? = nil
        if let c = req.query["continue"], !c.isEmpty {
            guard let data = Data(base64Encoded: c), let tok = try? KJSON.parse(data),
                  let rv = tok["rv"]?.int, let start = tok["start"]?.string else {
                throw APIError.badRequest("continue key is not valid: the continue token could not be decoded")
            }
            guard rv >= store.compactedRV else {
                throw APIError.expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")
            }
            listRV = rv
            startAfter = start
        }
        let scope = r.namespaced ? t.namespace : nil
        let rows = listRV == store.resourceVersion ? store.all(r, namespace: scope) : store.snapshot(r, namespace: scope, at: listRV)
        var matched: [(String, KJSON)] = []
        matched.reserveCapacity(rows.count)
        let selectsAll = labels.requirements.isEmpty && fields.requirements.isEmpty
        for (key, obj) in rows {
            if let startAfter, key <= startAfter { continue }
            if selectsAll || (labels.matches(labelsOf(obj)) && fields.matches(obj)) { matched.append((key, obj)) }
        }
        var meta: KJSON = .object(["resourceVersion": .string(String(listRV))])
        if limit > 0, matched.count > limit {
            let last = matched[limit - 1].0
            let token: KJSON = .object(["v": .string("meta.k8s.io/v1"), "rv": .int(listRV), "start": .string(last)])
            meta["continue"] = .string(token.data.base64EncodedString())
            if labels.requirements.isEmpty && fields.requirements.isEmpty {
                meta["remainingItemCount"] = .int(matched.count - limit)
            }
            matched = Array(matched.prefix(limit))
        }
        return (r, matched, meta)
    }

    private func watch(_ t: APITarget, _ req: APIRequest, sink: (@Sendable (Data) -> Void)?) throws -> APIReply {
        guard let sink else { throw APIError.badRequest("watch needs a streaming connection") }
        let labels: LabelSelector, fields: FieldSelector
        do {
            labels = try LabelSelector.parse(req.query["labelSelector"] ?? "")
            fields = try FieldSelector.parse(req.query["fieldSelector"] ?? "", for: t.resource)
        } catch let e as SelectorError { throw APIError.badRequest(e.message) }
        let rvText = req.query["resourceVersion"] ?? ""
        var since: Int? = nil
        if !rvText.isEmpty && rvText != "0" {
            guard let v = Int(rvText) else { throw APIError.badRequest("invalid resource version: \(rvText)") }
            since = v
        }
        let w = Watcher(resource: t.resource, namespace: t.resource.namespaced ? t.namespace : nil,
                        name: t.name ?? fields.pinnedName, labels: labels, fields: fields, send: sink)
        let id: Int
        do { id = try store.addWatcher(w, since: since) } catch let e as APIError where e.code == 410 {
            // Like the real server: 200 OK, then one ERROR event carrying the 410 Status, then the end.
            sink(Data((KJSON.object(["type": .string("ERROR"), "object": e.status]).text + "\n").utf8))
            return .watch(id: nil, bookmarks: false, timeoutSeconds: nil)
        }
        let b = req.query["allowWatchBookmarks"]
        return .watch(id: id, bookmarks: b == "true" || b == "1", timeoutSeconds: Int(req.query["timeoutSeconds"] ?? "").flatMap { $0 > 0 ? $0 : nil })
    }
}
