// The hub's background writer: parses what the tees copied and stores it, in arrival order, off the request path.
// A newer list of the same scope replaces an older one still waiting (only the newest matters); a list that comes
// in pages (limit/continue) is stored once its last page arrives. Bad input (not JSON, an object over the size
// limit) is logged with what it was and not cached; the proxy itself is unaffected.

import EdgedCore
import EdgedKube
import Logging
import Synchronization

struct ListJob: Sendable {
    var component: String
    var info: APIRequestInfo
    var body: [UInt8]

    var scope: String {
        "\(component)|\(info.resourceKey)|\(info.namespace ?? "*")|\(info.labelSelector ?? "")|\(info.fieldSelector ?? "")"
    }
}

enum CacheJob: Sendable {
    /// A get's body, stored under that key.
    case object(StoreKey, [UInt8])
    case put(StoredObject)
    case list(ListJob)
    /// One line of a watch stream.
    case event(component: String, info: APIRequestInfo, line: [UInt8])
}

final class CacheWriter: Sendable {
    private struct State {
        var jobs: [CacheJob] = []
        var head = 0
        var pages: [String: [StoredObject]] = [:]
        /// The resourceVersion of the last list stored per scope: the same list again is not re-stored.
        var storedListRV: [String: String] = [:]
        var busy = false
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
    }
    let store: HubStore
    let logger: Logger
    private let state = Mutex(State())
    private let wake: AsyncStream<Void>.Continuation
    private let wakes: AsyncStream<Void>
    let errors = Atomic<Int>(0)

    init(store: HubStore, logger: Logger) {
        self.store = store
        self.logger = logger
        (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    func submit(_ job: CacheJob) {
        state.withLock { s in
            if case .list(let new) = job {
                for i in s.head..<s.jobs.count {
                    if case .list(let old) = s.jobs[i], old.scope == new.scope,
                       old.info.query["continue"] == nil, new.info.query["continue"] == nil {
                        s.jobs[i] = job
                        return
                    }
                }
            }
            s.jobs.append(job)
        }
        wake.yield()
    }

    /// Runs until cancelled.
    func run() async {
        for await _ in wakes {
            while let job = next() {
                process(job)
            }
            let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
                guard s.head >= s.jobs.count else { return [] }
                s.busy = false
                defer { s.idleWaiters = [] }
                return s.idleWaiters
            }
            for w in waiters { w.resume() }
        }
    }

    private func next() -> CacheJob? {
        state.withLock { s in
            guard s.head < s.jobs.count else {
                s.jobs.removeAll(keepingCapacity: true)
                s.head = 0
                return nil
            }
            s.busy = true
            defer { s.head += 1 }
            return s.jobs[s.head]
        }
    }

    /// Whether the last list stored for `scope` had this resourceVersion (a re-list of it need not be copied).
    func isStored(scope: String, resourceVersion: String) -> Bool {
        state.withLock { $0.storedListRV[scope] == resourceVersion }
    }

    /// Returns when every job submitted so far is stored (tests, benchmark).
    func drain() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.head >= s.jobs.count && !s.busy { return true }
                s.idleWaiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    private func fail(_ what: String, _ why: String) {
        errors.add(1, ordering: .relaxed)
        logger.warning("hub: \(what): \(why); not cached (the proxy keeps serving)")
    }

    private func process(_ job: CacheJob) {
        switch job {
        case .object(let key, let body):
            guard let value = try? JSONValue.parse(body) else {
                return fail("get \(key.resource) \(key.namespace)/\(key.name) for \(key.component)", "the API server's answer is not valid JSON")
            }
            let rv = value[path: ["metadata", "resourceVersion"]]?.stringValue ?? ""
            do { try store.put(StoredObject(key: key, resourceVersion: rv, body: body)) } catch {
                fail("get \(key.resource) \(key.namespace)/\(key.name) for \(key.component)", "\(error)")
            }
        case .put(let object):
            do { try store.put(object) } catch { fail("\(object.key.resource) \(object.key.name)", "\(error)") }
        case .list(let job):
            storeList(job)
        case .event(let component, let info, let line):
            storeEvent(component, info, line)
        }
    }

    /// Which stored objects a list with a selector covers (nil: the whole scope). A list of one object by name
    /// (kubelet's `metadata.name=` reflectors) covers that name only; otherwise the selectors are applied to each
    /// stored object. A selector the hub cannot parse covers nothing (the listed objects are still stored).
    static func coverage(_ info: APIRequestInfo) -> (@Sendable (StoredObject) -> Bool)? {
        let labelText = info.labelSelector ?? "", fieldText = info.fieldSelector ?? ""
        if labelText.isEmpty && fieldText.isEmpty { return nil }
        guard let labels = try? LabelSelector(parsing: labelText), let fields = try? FieldSelector(parsing: fieldText) else {
            return { _ in false }
        }
        if labels.isEmpty && fields.isEmpty { return nil }
        if labels.isEmpty, fields.requirements.count == 1, let name = fields.exactMatch("metadata.name") {
            return { $0.key.name == name }
        }
        return { object in
            guard let value = try? JSONValue.parse(object.body) else { return true }
            return labels.matches(object: value) && fields.matches(object: value)
        }
    }

    private func storeList(_ job: ListJob) {
        let what = "list \(job.info.resource)\(job.info.namespace.map { " in \($0)" } ?? "") for \(job.component)"
        let scope = job.scope
        // A client re-listing what the store already holds (same scope, same resourceVersion) costs nothing: lists
        // at an RV already stored can only be as old as, or older than, what watches have applied since.
        if job.info.query["continue"] == nil, job.info.query["limit"] == nil, let rv = CacheWriter.listResourceVersion(job.body),
           state.withLock({ $0.storedListRV[scope] == rv }) {
            return
        }
        defer { if job.body.count > 1 << 20 { CacheWriter.returnFreedMemory() } }
        guard let value = try? JSONValue.parse(job.body), case .array(let raw)? = value["items"] else {
            return fail(what, "the API server's answer is not a valid JSON list")
        }
        let listKind = value["kind"]?.stringValue ?? ""
        let kind = listKind.hasSuffix("List") ? String(listKind.dropLast(4)) : listKind
        let apiVersion = value["apiVersion"]?.stringValue ?? KindTable.apiVersion(job.info)
        let rv = value[path: ["metadata", "resourceVersion"]]?.stringValue ?? ""
        var items: [StoredObject] = []
        items.reserveCapacity(raw.count)
        for item in raw {
            guard let name = item[path: ["metadata", "name"]]?.stringValue else { continue }
            let key = StoreKey(component: job.component, resource: job.info.resourceKey,
                               namespace: item[path: ["metadata", "namespace"]]?.stringValue ?? "", name: name)
            items.append(StoredObject(key: key, resourceVersion: item[path: ["metadata", "resourceVersion"]]?.stringValue ?? "",
                                      body: HubJSON.bytes(HubJSON.withKind(item, kind: kind, apiVersion: apiVersion))))
        }
        let more = !(value[path: ["metadata", "continue"]]?.stringValue ?? "").isEmpty
        let isContinuation = job.info.query["continue"] != nil
        let complete: [StoredObject]? = state.withLock { s in
            if more {
                s.pages[scope] = (isContinuation ? s.pages[scope] ?? [] : []) + items
                return nil
            }
            if isContinuation {
                guard let earlier = s.pages.removeValue(forKey: scope) else { return nil }   // first pages not seen
                return earlier + items
            }
            return items
        }
        guard let complete else { return }
        do {
            try store.replaceList(component: job.component, resource: job.info.resourceKey, namespace: job.info.namespace,
                                  items: complete, resourceVersion: rv, selected: Self.coverage(job.info))
            state.withLock { $0.storedListRV[scope] = (more || isContinuation) ? nil : rv }
            if KindTable.known[job.info.resourceKey] == nil, !kind.isEmpty {
                try store.put(StoredObject(key: StoreKey(component: job.component, resource: "kinds", namespace: "", name: job.info.resourceKey),
                                           resourceVersion: "", body: Array(kind.utf8)))
            }
        } catch {
            fail(what, "\(error)")
        }
    }

    private func storeEvent(_ component: String, _ info: APIRequestInfo, _ line: [UInt8]) {
        let what = "watch \(info.resource) for \(component)"
        guard let event = try? JSONValue.parse(line), let type = event["type"]?.stringValue, let object = event["object"] else {
            return fail(what, "an event from the API server is not valid JSON (\(line.count) bytes)")
        }
        let rv = object[path: ["metadata", "resourceVersion"]]?.stringValue ?? ""
        do {
            switch type {
            case "ADDED", "MODIFIED", "DELETED":
                guard let name = object[path: ["metadata", "name"]]?.stringValue else {
                    return fail(what, "a \(type) event without metadata.name")
                }
                let key = StoreKey(component: component, resource: info.resourceKey,
                                   namespace: object[path: ["metadata", "namespace"]]?.stringValue ?? "", name: name)
                if type == "DELETED" {
                    try store.delete(key)
                } else {
                    let withKind = HubJSON.withKind(object, kind: KindTable.known[info.resourceKey] ?? "", apiVersion: KindTable.apiVersion(info))
                    try store.put(StoredObject(key: key, resourceVersion: rv, body: HubJSON.bytes(withKind)))
                }
            case "BOOKMARK":
                if try store.listResourceVersion(component: component, resource: info.resourceKey, namespace: info.namespace) != nil {
                    try store.setListResourceVersion(component: component, resource: info.resourceKey, namespace: info.namespace, rv)
                }
            default:
                break
            }
        } catch {
            fail(what, "\(error)")
        }
    }
}

extension CacheWriter {
    /// The list's own metadata.resourceVersion, read from the bytes before "items" without parsing the list (the
    /// API server writes kind, apiVersion and metadata first); nil when it is not there.
    static func listResourceVersion(_ body: [UInt8]) -> String? {
        let head = body.prefix(4096)
        guard let items = find(Array("\"items\":".utf8), in: head) else { return nil }
        let key = Array("\"resourceVersion\":\"".utf8)
        guard let at = find(key, in: head[..<items]) else { return nil }
        var end = at + key.count
        var out: [UInt8] = []
        while end < items, head[end] != UInt8(ascii: "\"") {
            out.append(head[end])
            end += 1
        }
        return end < items ? String(decoding: out, as: UTF8.self) : nil
    }

    private static func find(_ needle: [UInt8], in hay: ArraySlice<UInt8>) -> Int? {
        guard needle.count <= hay.count else { return nil }
        var i = hay.startIndex
        while i + needle.count <= hay.endIndex {
            if hay[i] == needle[0], hay[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }

    /// Parsing a big list leaves megabytes freed but kept by malloc; hand them back to the system.
    static func returnFreedMemory() {
        _ = glibcMallocTrim(0)
    }
}

/// glibc's malloc_trim(3) (its header is not part of the Glibc module).
@_silgen_name("malloc_trim")
private func glibcMallocTrim(_ pad: Int) -> Int32
