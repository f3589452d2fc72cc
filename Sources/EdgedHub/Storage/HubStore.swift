// The hub's store: cached API objects, the resourceVersion of each cached list, and the durable queue of writes
// made while the cloud was away. One SQLite file.
//
// Crash safety: SQLite in WAL mode with synchronous=FULL. A commit appends the transaction's pages to the -wal file
// and, with FULL, fsyncs it before COMMIT returns; the main file is changed only by checkpoints, which copy pages
// from the already synced WAL and fsync the main file before the WAL is reused. Every WAL frame carries a checksum
// chained from the WAL header, so the next open keeps the committed prefix and drops a torn tail. A power cut or a
// kill -9 therefore loses at most the transaction in flight: never a committed one, never half an object, never
// the file. synchronous=NORMAL (the usual WAL pairing) skips the fsync at commit: the file still never corrupts, but
// the last commits before a power cut roll back, and for the write queue that means a pod status or Event the hub
// already accepted from its client is silently lost (for the cache, a list resourceVersion that no longer matches
// its objects). FULL costs one fsync per commit; a whole list is one transaction, so one fsync for 1000 objects.
// WAL rather than the rollback journal: one fsync per commit instead of several, and readers never block the writer.
// A whole list is replaced in one transaction, which one-file-per-object stores (YurtHub's disk storage) cannot do.
// As with any database, this holds only when the storage honours fsync (an SD card that acknowledges writes it
// still holds in a volatile cache can lose them).
//
// Secrets are cached like any other object, so the file and its -wal/-shm are 0600 (SQLite gives the -wal and
// -shm files the mode of the database file) in a 0700 directory. Bodies are never logged.

import CSQLite
import EdgedCore
import Glibc
import Logging
import Synchronization

/// One cached object's identity: objects are stored once per (component, resource, namespace, name).
public struct StoreKey: Hashable, Sendable, CustomStringConvertible {
    /// Client identity, e.g. "edged", "kube-proxy", "coredns".
    public var component: String
    /// "<group>/<version>/<resource>", core group empty: "/v1/pods", "discovery.k8s.io/v1/endpointslices".
    public var resource: String
    /// "" for cluster-scoped objects.
    public var namespace: String
    public var name: String

    public init(component: String, resource: String, namespace: String, name: String) {
        self.component = component
        self.resource = resource
        self.namespace = namespace
        self.name = name
    }

    /// "kube-proxy /v1/services default/kubernetes" (no namespace part for cluster-scoped objects).
    public var description: String {
        namespace.isEmpty ? "\(component) \(resource) \(name)" : "\(component) \(resource) \(namespace)/\(name)"
    }
}

public struct StoredObject: Sendable, Equatable {
    public var key: StoreKey
    public var resourceVersion: String
    /// The object's JSON exactly as served (items of a list get kind/apiVersion added by the caller).
    public var body: [UInt8]

    public init(key: StoreKey, resourceVersion: String, body: [UInt8]) {
        self.key = key
        self.resourceVersion = resourceVersion
        self.body = body
    }
}

/// A write made while the cloud was away, replayed in `id` order when it comes back.
public struct QueuedWrite: Sendable, Equatable {
    /// Assigned by `enqueue`, increasing (never reused): replay order. Ignored by `enqueue`.
    public var id: Int64
    public var component: String
    /// POST / PATCH / PUT.
    public var method: String
    /// API path with query.
    public var path: String
    public var contentType: String
    public var body: [UInt8]
    /// When set, a newer write with the same key replaces the older one (pod status patches of the same pod: only
    /// the newest matters); nil = always appended (Events).
    public var coalesceKey: String?
    public var enqueuedAt: Timestamp

    public init(id: Int64 = 0, component: String, method: String, path: String, contentType: String, body: [UInt8],
                coalesceKey: String? = nil, enqueuedAt: Timestamp = .now()) {
        self.id = id
        self.component = component
        self.method = method
        self.path = path
        self.contentType = contentType
        self.body = body
        self.coalesceKey = coalesceKey
        self.enqueuedAt = enqueuedAt
    }
}

/// A failed store operation. The message names the file or object, the limit and its config key, and what to do.
public struct HubStoreError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// One object is over maxObjectBytes: it was not stored.
        case objectTooLarge
        /// Storing it would take the objects over maxBytes: nothing was stored (no eviction).
        case storeFull
        /// A replaceList item whose key is outside the list's scope: nothing was stored.
        case invalidItem
        /// SQLite failed (disk full, I/O error, permissions, a file damaged while open).
        case database
    }

    public var kind: Kind
    /// The store's file.
    public var path: String
    public var message: String

    public init(kind: Kind, path: String, message: String) {
        self.kind = kind
        self.path = path
        self.message = message
    }

    public var description: String { message }
}

/// The hub's crash-safe store (see the top of this file). Thread-safe: one connection behind a Mutex.
public final class HubStore: Sendable {
    /// The bound of SQLite's page cache for the store's connection (PRAGMA cache_size), in KiB.
    static let pageCacheKiB = 512
    /// The config keys the limit errors name.
    static let maxBytesKey = "hub.maxStoreSize"
    static let maxObjectBytesKey = "hub.maxObjectSize"
    static let schemaVersion = 1

    public let path: String
    public let maxBytes: Int64
    public let maxObjectBytes: Int
    private let logger: Logger
    private let connection: Mutex<Connection>

    /// The connection and what is derived from its contents.
    private final class Connection {
        let db: Database
        /// Sum of the stored object bodies, kept in step with each commit.
        var bytes: Int64

        init(db: Database, bytes: Int64) {
            self.db = db
            self.bytes = bytes
        }
    }

    /// Opens or creates <path> (parent dir created 0700, file 0600, -wal/-shm too), journal_mode=WAL,
    /// synchronous=FULL, busy_timeout; runs `PRAGMA quick_check` on open: a corrupt file is moved aside to
    /// <path>.corrupt-<unix time> with an error log and a fresh store is created (the cache is only a cache; the
    /// queue is lost then — the log says so). maxBytes bounds the total stored object bytes; maxObjectBytes
    /// bounds one object.
    public init(path: String, maxBytes: Int64 = 128 << 20, maxObjectBytes: Int = 2 << 20, logger: Logger) throws {
        self.path = path
        self.maxBytes = maxBytes
        self.maxObjectBytes = maxObjectBytes
        self.logger = logger
        let db = try Self.open(path: path, logger: logger)
        let bytes: Int64
        do {
            let s = try db.prepare("SELECT total(length(body)) FROM objects")
            try s.step()
            bytes = s.int64(0)
        } catch {
            throw HubStoreError(kind: .database, path: path, message: Self.databaseMessage(path, "reading its size", error))
        }
        connection = Mutex(Connection(db: db, bytes: bytes))
    }

    // MARK: objects

    public func get(_ key: StoreKey) throws -> StoredObject? {
        try locked("reading \(key)") { c in
            let s = try c.db.cached("SELECT resource_version, body FROM objects WHERE component = ? AND resource = ? AND namespace = ? AND name = ?")
            try s.bind(key.component, key.resource, key.namespace, key.name)
            guard try s.step() else { return nil }
            return StoredObject(key: key, resourceVersion: s.text(0), body: s.blob(1))
        }
    }

    /// namespace nil: every namespace. Sorted by (namespace, name).
    public func list(component: String, resource: String, namespace: String?) throws -> [StoredObject] {
        try locked("listing \(component) \(resource)") { c in try Self.objects(c.db, component, resource, namespace) }
    }

    /// The stored objects of (component, resource, namespace-or-all), sorted by (namespace, name); the caller holds
    /// the lock.
    private static func objects(_ db: Database, _ component: String, _ resource: String, _ namespace: String?) throws -> [StoredObject] {
        let s: Statement
        if let namespace {
            s = try db.cached("SELECT namespace, name, resource_version, body FROM objects WHERE component = ? AND resource = ? AND namespace = ? ORDER BY namespace, name")
            try s.bind(component, resource, namespace)
        } else {
            s = try db.cached("SELECT namespace, name, resource_version, body FROM objects WHERE component = ? AND resource = ? ORDER BY namespace, name")
            try s.bind(component, resource)
        }
        var out: [StoredObject] = []
        while try s.step() {
            let key = StoreKey(component: component, resource: resource, namespace: s.text(0), name: s.text(1))
            out.append(StoredObject(key: key, resourceVersion: s.text(2), body: s.blob(3)))
        }
        return out
    }

    /// The resourceVersion of the last complete list (or watch bookmark) of that scope; nil when the scope was
    /// never listed (a get-only cache cannot answer a list). A namespace's scope is also covered by a list of every
    /// namespace: the more recently recorded of the two answers.
    public func listResourceVersion(component: String, resource: String, namespace: String?) throws -> String? {
        try locked("reading the list resourceVersion of \(component) \(resource)") { c in
            let s = try c.db.cached("SELECT resource_version FROM list_versions WHERE component = ? AND resource = ? AND scope IN (?, ?) ORDER BY seq DESC LIMIT 1")
            try s.bind(component, resource, Self.scope(namespace), Self.allNamespaces)
            return try s.step() ? s.text(0) : nil
        }
    }

    /// Upsert. Throws (and stores nothing) when the object is over maxObjectBytes or the store is full (eviction:
    /// none; the error names the limit and the config key).
    public func put(_ object: StoredObject) throws {
        try checkSize(object)
        try locked("storing \(object.key)") { c in
            let total: Int64 = try c.db.transaction {
                let old = try Self.storedLength(c.db, object.key)
                let total = c.bytes - old + Int64(object.body.count)
                if total > maxBytes, object.body.count > old { throw fullError(object.key.description, total) }
                try Self.insert(c.db, object)
                return total
            }
            c.bytes = total
        }
    }

    public func delete(_ key: StoreKey) throws {
        try locked("deleting \(key)") { c in
            let total: Int64 = try c.db.transaction {
                let old = try Self.storedLength(c.db, key)
                let s = try c.db.cached("DELETE FROM objects WHERE component = ? AND resource = ? AND namespace = ? AND name = ?")
                try s.bind(key.component, key.resource, key.namespace, key.name)
                try s.step()
                return c.bytes - old
            }
            c.bytes = total
        }
    }

    /// One transaction: removes every object of (component, resource, namespace-or-all) and inserts `items`, and
    /// records the list resourceVersion. A list of namespace nil also covers later namespaced reads (it supersedes
    /// the namespaces' own recorded versions). Throws, storing nothing, when an item is over maxObjectBytes, the
    /// store would be full, or an item's key is outside the scope.
    ///
    /// `selected`: for a list that asked for part of the scope (a label or field selector: kubelet's per-object
    /// `metadata.name=` lists), which stored objects it covers; only those are replaced (removed unless listed
    /// again), and the other objects of the scope stay. nil: the list covers the whole scope.
    public func replaceList(component: String, resource: String, namespace: String?, items: [StoredObject],
                            resourceVersion: String, selected: (@Sendable (StoredObject) -> Bool)? = nil) throws {
        // Last one wins for a name listed twice, so the byte count matches what is stored.
        var byKey: [StoreKey: Int] = [:]
        var unique: [StoredObject] = []
        unique.reserveCapacity(items.count)
        var added: Int64 = 0
        for item in items {
            guard item.key.component == component, item.key.resource == resource,
                  namespace == nil || item.key.namespace == namespace else {
                let scope = "\(component) \(resource)" + (namespace.map { " in namespace \($0)" } ?? "")
                throw HubStoreError(kind: .invalidItem, path: path,
                                    message: "hub store \(path): the list of \(scope) has an item for \(item.key); nothing stored")
            }
            try checkSize(item)
            if let i = byKey[item.key] {
                added -= Int64(unique[i].body.count)
                unique[i] = item
            } else {
                byKey[item.key] = unique.count
                unique.append(item)
            }
            added += Int64(item.body.count)
        }
        let scopeName = "\(component) \(resource)" + (namespace.map { " in namespace \($0)" } ?? "")
        try locked("replacing the list of \(scopeName)") { c in
            let total: Int64 = try c.db.transaction {
                if let selected {
                    // Only what the selector covers: the selected stored objects go, the listed ones come in.
                    let covered = try Self.objects(c.db, component, resource, namespace)
                        .filter { byKey[$0.key] != nil || selected($0) }.map { ($0.key, Int64($0.body.count)) }
                    let removed = covered.reduce(Int64(0)) { $0 + $1.1 }
                    let total = c.bytes - removed + added
                    if total > maxBytes, added > removed { throw fullError("the list of \(scopeName)", total) }
                    for (key, _) in covered {
                        let d = try c.db.cached("DELETE FROM objects WHERE component = ? AND resource = ? AND namespace = ? AND name = ?")
                        try d.bind(key.component, key.resource, key.namespace, key.name)
                        try d.step()
                    }
                    for item in unique { try Self.insert(c.db, item) }
                    try Self.recordListVersion(c.db, component, resource, namespace, resourceVersion)
                    return total
                }
                let removed: Int64
                if let namespace {
                    let s = try c.db.cached("SELECT total(length(body)) FROM objects WHERE component = ? AND resource = ? AND namespace = ?")
                    try s.bind(component, resource, namespace)
                    try s.step()
                    removed = s.int64(0)
                } else {
                    let s = try c.db.cached("SELECT total(length(body)) FROM objects WHERE component = ? AND resource = ?")
                    try s.bind(component, resource)
                    try s.step()
                    removed = s.int64(0)
                }
                let total = c.bytes - removed + added
                if total > maxBytes, added > removed { throw fullError("the list of \(scopeName)", total) }
                if let namespace {
                    let d = try c.db.cached("DELETE FROM objects WHERE component = ? AND resource = ? AND namespace = ?")
                    try d.bind(component, resource, namespace)
                    try d.step()
                } else {
                    let d = try c.db.cached("DELETE FROM objects WHERE component = ? AND resource = ?")
                    try d.bind(component, resource)
                    try d.step()
                    // The list of every namespace supersedes what was recorded for single namespaces.
                    let v = try c.db.cached("DELETE FROM list_versions WHERE component = ? AND resource = ?")
                    try v.bind(component, resource)
                    try v.step()
                }
                for item in unique { try Self.insert(c.db, item) }
                try Self.recordListVersion(c.db, component, resource, namespace, resourceVersion)
                return total
            }
            c.bytes = total
        }
    }

    /// Updates only the recorded list resourceVersion (watch bookmark / event).
    public func setListResourceVersion(component: String, resource: String, namespace: String?, _ rv: String) throws {
        try locked("recording the list resourceVersion of \(component) \(resource)") { c in
            try Self.recordListVersion(c.db, component, resource, namespace, rv)
        }
    }

    // MARK: write queue

    /// Appends `write` (its `id` is ignored) and returns the id it got. When the write has a coalesceKey, the queued
    /// writes with the same key are removed in the same transaction: the newest write takes a new id at the end of
    /// the queue, so a replay that has already sent an older one (and then removes it by id) cannot remove it.
    public func enqueue(_ write: QueuedWrite) throws -> Int64 {
        try locked("queueing \(write.method) \(write.path)") { c in
            try c.db.transaction {
                if let key = write.coalesceKey {
                    let d = try c.db.cached("DELETE FROM queue WHERE coalesce_key = ?")
                    try d.bind(key)
                    try d.step()
                }
                let s = try c.db.cached("INSERT INTO queue (component, method, path, content_type, body, coalesce_key, enqueued_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
                try s.bind(write.component, write.method, write.path, write.contentType)
                try s.bind(5, write.body)
                try s.bind(6, write.coalesceKey)
                try s.bind(7, write.enqueuedAt.nanoseconds)
                try s.step()
                return c.db.lastInsertRowID
            }
        }
    }

    /// The oldest `limit` queued writes, in id order.
    public func queued(limit: Int = 1000) throws -> [QueuedWrite] {
        try locked("reading the write queue") { c in
            let s = try c.db.cached("SELECT id, component, method, path, content_type, body, coalesce_key, enqueued_at FROM queue ORDER BY id LIMIT ?")
            try s.bind(1, Int64(limit))
            var out: [QueuedWrite] = []
            while try s.step() {
                out.append(QueuedWrite(id: s.int64(0), component: s.text(1), method: s.text(2), path: s.text(3),
                                       contentType: s.text(4), body: s.blob(5), coalesceKey: s.optionalText(6),
                                       enqueuedAt: Timestamp(nanoseconds: s.int64(7))))
            }
            return out
        }
    }

    /// Removes a replayed write (no error when it is already gone, e.g. coalesced away).
    public func removeQueued(id: Int64) throws {
        try locked("removing queued write \(id)") { c in
            let s = try c.db.cached("DELETE FROM queue WHERE id = ?")
            try s.bind(1, id)
            try s.step()
        }
    }

    public func stats() throws -> (objects: Int, bytes: Int64, queued: Int) {
        try locked("reading its statistics") { c in
            let o = try c.db.cached("SELECT count(*) FROM objects")
            try o.step()
            let q = try c.db.cached("SELECT count(*) FROM queue")
            try q.step()
            return (Int(o.int64(0)), c.bytes, Int(q.int64(0)))
        }
    }

    // MARK: helpers

    /// The scope column of list_versions: a namespace, or "*" (not a valid namespace name) for every namespace.
    private static let allNamespaces = "*"
    private static func scope(_ namespace: String?) -> String { namespace ?? allNamespaces }

    /// Runs `body` on the connection under the lock; SQLite errors become HubStoreErrors that say what was being done.
    private func locked<R: Sendable>(_ what: @autoclosure () -> String, _ body: (Connection) throws -> R) throws -> R {
        do {
            return try connection.withLock { c throws -> R in
                defer { c.db.resetStatements() }
                return try body(c)
            }
        } catch {
            if error is HubStoreError { throw error }
            throw HubStoreError(kind: .database, path: path, message: Self.databaseMessage(path, what(), error))
        }
    }

    private static func databaseMessage(_ path: String, _ what: String, _ error: any Error) -> String {
        let detail = (error as? SQLiteError).map { "\($0.message) (SQLite code \($0.code))" } ?? "\(error)"
        return "hub store \(path): \(what) failed: \(detail); check free disk space and the file's permissions, "
            + "or remove the file to start with an empty cache (its queued writes are lost then)"
    }

    private func checkSize(_ object: StoredObject) throws {
        guard object.body.count > maxObjectBytes else { return }
        throw HubStoreError(kind: .objectTooLarge, path: path, message:
            "\(object.key) is \(object.body.count) bytes, over the hub cache's limit of \(maxObjectBytes) bytes per object "
            + "(\(Self.maxObjectBytesKey)): not cached; raise \(Self.maxObjectBytesKey) to cache it")
    }

    private func fullError(_ what: String, _ total: Int64) -> HubStoreError {
        HubStoreError(kind: .storeFull, path: path, message:
            "hub store \(path) is full: storing \(what) would make \(total) bytes of cached objects, over the limit of "
            + "\(maxBytes) (\(Self.maxBytesKey)): not cached; raise \(Self.maxBytesKey) or cache fewer resources")
    }

    private static func storedLength(_ db: Database, _ key: StoreKey) throws -> Int64 {
        let s = try db.cached("SELECT length(body) FROM objects WHERE component = ? AND resource = ? AND namespace = ? AND name = ?")
        try s.bind(key.component, key.resource, key.namespace, key.name)
        return try s.step() ? s.int64(0) : 0
    }

    private static func insert(_ db: Database, _ object: StoredObject) throws {
        let s = try db.cached("INSERT OR REPLACE INTO objects (component, resource, namespace, name, resource_version, body) VALUES (?, ?, ?, ?, ?, ?)")
        try s.bind(object.key.component, object.key.resource, object.key.namespace, object.key.name, object.resourceVersion)
        try s.bind(6, object.body)
        try s.step()
    }

    private static func recordListVersion(_ db: Database, _ component: String, _ resource: String, _ namespace: String?,
                                          _ rv: String) throws {
        let s = try db.cached("""
            INSERT INTO list_versions (component, resource, scope, resource_version, seq)
            VALUES (?, ?, ?, ?, (SELECT coalesce(max(seq), 0) + 1 FROM list_versions))
            ON CONFLICT (component, resource, scope) DO UPDATE SET resource_version = excluded.resource_version, seq = excluded.seq
            """)
        try s.bind(component, resource, scope(namespace), rv)
        try s.step()
    }
}
