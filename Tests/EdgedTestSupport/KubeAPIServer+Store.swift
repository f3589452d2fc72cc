// The test API server's storage: objects per resource, one global resourceVersion counter (like an etcd revision),
// the change history that watches replay and lists read snapshots from, and the registered watchers.

import Foundation


/// The kind of a watch event.
enum WatchEventType: String, Sendable {
    case added = "ADDED", modified = "MODIFIED", deleted = "DELETED"
}

/// One committed change. `object` is the new state (for DELETED: the last state, stamped with the deletion's RV).
struct StoredEvent: Sendable {
    let rv: Int
    let type: WatchEventType
    let resourceKey: String
    let objectKey: String
    let object: KJSON
    let old: KJSON?
}

/// A registered watch: what it selects and where its lines go.
struct Watcher: Sendable {
    let resource: KubeResource
    let namespace: String?
    let name: String?
    let labels: LabelSelector
    let fields: FieldSelector
    /// Receives one complete JSON line (event + "\n"); must not call back into the server.
    let send: @Sendable (Data) -> Void

    func selects(_ object: KJSON) -> Bool {
        if let namespace, object[path: ["metadata", "namespace"]]?.string != namespace { return false }
        if let name, object[path: ["metadata", "name"]]?.string != name { return false }
        return labels.matches(labelsOf(object)) && fields.matches(object)
    }
}

func labelsOf(_ object: KJSON) -> [String: String] {
    (object[path: ["metadata", "labels"]]?.object ?? [:]).compactMapValues { $0.string }
}

/// All mutable server state. Every method expects `lock` to be held (the request handler holds it per request).
final class KubeStore: @unchecked Sendable {
    let lock = NSLock()
    private(set) var resourceVersion = 0
    /// Oldest resourceVersion a watch may start from / a continue token may carry; older ones answer 410 Expired.
    private(set) var compactedRV = 0
    /// resource key → "namespace/name" → object.
    private var objects: [String: [String: KJSON]] = [:]
    /// resource key → object key → the object as a list item serializes (no kind/apiVersion); filled by the first
    /// list that needs it, dropped when the object changes, so a LIST of unchanged objects only copies bytes.
    private var encoded: [String: [String: [UInt8]]] = [:]
    /// resource key → object keys in order; dropped when an object is added or removed.
    private var sortedKeys: [String: [String]] = [:]
    private var history: [StoredEvent] = []
    private var watchers: [Int: Watcher] = [:]
    private var nextWatcherID = 1
    /// Keep at most this many events; older ones are compacted away like etcd's auto-compaction.
    var historyLimit = 100_000

    static func objectKey(namespace: String?, name: String) -> String { "\(namespace ?? "")/\(name)" }

    func get(_ r: KubeResource, namespace: String?, name: String) -> KJSON? {
        objects[r.key]?[Self.objectKey(namespace: r.namespaced ? namespace : nil, name: name)]
    }

    /// Current objects of a type in key order (namespace, then name), optionally in one namespace.
    func all(_ r: KubeResource, namespace: String?) -> [(String, KJSON)] {
        let prefix = namespace.map { "\($0)/" }
        let current = objects[r.key] ?? [:]
        let keys: [String]
        if let cached = sortedKeys[r.key] { keys = cached } else {
            keys = current.keys.sorted()
            sortedKeys[r.key] = keys
        }
        var out: [(String, KJSON)] = []
        out.reserveCapacity(keys.count)
        for k in keys where prefix == nil || k.hasPrefix(prefix!) { out.append((k, current[k]!)) }
        return out
    }

    /// The current object stored under `key`, serialized as a list item (without kind and apiVersion).
    func listItemBytes(_ r: KubeResource, key: String, _ object: KJSON) -> [UInt8] {
        if let cached = encoded[r.key]?[key] { return cached }
        var item = object
        item["kind"] = nil
        item["apiVersion"] = nil
        let bytes = item.bytes
        encoded[r.key, default: [:]][key] = bytes
        return bytes
    }

    /// The objects of a type as they were at `rv` (rv ≥ compactedRV), rebuilt by undoing later history.
    func snapshot(_ r: KubeResource, namespace: String?, at rv: Int) -> [(String, KJSON)] {
        var state: [String: KJSON] = [:]
        for (k, v) in all(r, namespace: namespace) { state[k] = v }
        let prefix = namespace.map { "\($0)/" }
        for e in history.reversed() where e.rv > rv {
            guard e.resourceKey == r.key, prefix == nil || e.objectKey.hasPrefix(prefix!) else { continue }
            switch e.type {
            case .added: state[e.objectKey] = nil
            case .modified, .deleted: state[e.objectKey] = e.old
            }
        }
        return state.sorted { $0.key < $1.key }
    }

    /// Stores a change under the next resourceVersion, records it and tells the watchers. Returns the stored object.
    @discardableResult
    func commit(_ type: WatchEventType, _ r: KubeResource, namespace: String?, name: String, object: KJSON) -> KJSON {
        resourceVersion += 1
        var obj = object
        obj[path: ["metadata", "resourceVersion"]] = .string(String(resourceVersion))
        let key = Self.objectKey(namespace: r.namespaced ? namespace : nil, name: name)
        let old = objects[r.key]?[key]
        if type == .deleted { objects[r.key]?[key] = nil } else { objects[r.key, default: [:]][key] = obj }
        encoded[r.key]?[key] = nil
        if old == nil || type == .deleted { sortedKeys[r.key] = nil }
        let event = StoredEvent(rv: resourceVersion, type: type, resourceKey: r.key, objectKey: key, object: obj, old: old)
        history.append(event)
        if history.count > historyLimit {
            let drop = history.count - historyLimit
            compactedRV = history[drop - 1].rv
            history.removeFirst(drop)
        }
        for w in watchers.values where w.resource.key == r.key { deliver(event, to: w) }
        return obj
    }

    /// Forgets all history: watches and continue tokens from before now answer 410 Expired.
    func compact() {
        history.removeAll()
        compactedRV = resourceVersion
    }

    // MARK: Watch

    /// Registers a watch and sends what it must see first: synthetic ADDED events for the current objects when
    /// `since` is nil (resourceVersion "" or "0"), otherwise every change after `since`. Throws 410 Expired when
    /// `since` is older than the kept history.
    func addWatcher(_ w: Watcher, since: Int?) throws -> Int {
        if let since {
            guard since >= compactedRV else {
                throw APIError.expired("too old resource version: \(since) (\(compactedRV))")
            }
            for e in history where e.rv > since && e.resourceKey == w.resource.key { deliver(e, to: w) }
        } else {
            for (_, obj) in all(w.resource, namespace: w.namespace) where w.selects(obj) {
                w.send(Self.line(.added, obj, w.resource))
            }
        }
        let id = nextWatcherID
        nextWatcherID += 1
        watchers[id] = w
        return id
    }

    func removeWatcher(_ id: Int) { watchers[id] = nil }

    var watcherCount: Int { watchers.count }

    /// How many registered watches `predicate` accepts (KubeAPIServer+Watches.swift).
    func watcherCount(where predicate: (Watcher) -> Bool) -> Int { watchers.values.filter(predicate).count }

    /// Sends a BOOKMARK carrying the current resourceVersion (every earlier change has already been sent).
    func bookmark(_ id: Int) {
        guard let w = watchers[id] else { return }
        let obj: KJSON = .object([
            "kind": .string(w.resource.kind), "apiVersion": .string(w.resource.apiVersion),
            "metadata": .object(["resourceVersion": .string(String(resourceVersion)), "creationTimestamp": .null]),
        ])
        w.send(Data((KJSON.object(["type": .string("BOOKMARK"), "object": obj]).text + "\n").utf8))
    }

    /// Sends an event as the watcher sees it: an object that starts matching is ADDED, one that stops is DELETED
    /// (with its previous content and the new resourceVersion, like the watch cache).
    private func deliver(_ e: StoredEvent, to w: Watcher) {
        let nowMatches = w.selects(e.object)
        let oldMatches = e.old.map { w.selects($0) } ?? false
        switch e.type {
        case .added: if nowMatches { w.send(Self.line(.added, e.object, w.resource)) }
        case .deleted: if nowMatches { w.send(Self.line(.deleted, e.object, w.resource)) }
        case .modified:
            if nowMatches && oldMatches { w.send(Self.line(.modified, e.object, w.resource)) }
            else if nowMatches { w.send(Self.line(.added, e.object, w.resource)) }
            else if oldMatches, var old = e.old {
                old[path: ["metadata", "resourceVersion"]] = .string(String(e.rv))
                w.send(Self.line(.deleted, old, w.resource))
            }
        }
    }

    static func line(_ type: WatchEventType, _ object: KJSON, _ r: KubeResource) -> Data {
        var obj = object
        obj["kind"] = .string(r.kind)
        obj["apiVersion"] = .string(r.apiVersion)
        var bytes = KJSON.object(["type": .string(type.rawValue), "object": obj]).bytes
        bytes.append(0x0A)
        return Data(bytes)
    }
}
