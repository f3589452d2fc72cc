// The list+watch loop (kubelet's reflector): one resource and selector, kept in sync through timeouts, dropped
// connections and expired resourceVersions.
//
//   list ──▶ .replaced(items) ──▶ watch from list RV ──▶ .added/.modified/.deleted (RV tracked, bookmarks too)
//     ▲                              │ stream ends (server timeout): watch again from the last RV
//     │ 410 Gone / Expired           │ error: jittered exponential backoff (cap 30 s), then watch again from the
//     └──────────────────────────────┘        last RV (or re-list if no list succeeded yet)

import EdgedCore
import Logging
import Synchronization

/// What an informer delivers: a full replacement after each (re-)list, then single changes.
public enum InformerEvent<Object: Sendable>: Sendable {
    /// The complete current set: forget everything not in it.
    case replaced([Object])
    case added(Object)
    case modified(Object)
    case deleted(Object)
}

/// Keeps a handler in sync with one resource collection: list, then watch, re-list on 410, back off on errors.
/// `run` returns when its task is cancelled.
public final class Informer<Object: KubeObject>: Sendable {
    public struct Options: Sendable {
        public var labelSelector: String?
        public var fieldSelector: String?
        /// List page size (continue chunks); nil lists in one response.
        public var pageSize: Int?
        /// Server-side watch timeout range in seconds; each watch picks one at random (kubelet: 5–10 min).
        public var watchTimeoutSeconds: ClosedRange<Int>
        public var initialBackoff: Duration
        public var maxBackoff: Duration

        public init(labelSelector: String? = nil, fieldSelector: String? = nil, pageSize: Int? = 500,
                    watchTimeoutSeconds: ClosedRange<Int> = 300...600,
                    initialBackoff: Duration = .milliseconds(800), maxBackoff: Duration = .seconds(30)) {
            self.labelSelector = labelSelector
            self.fieldSelector = fieldSelector
            self.pageSize = pageSize
            self.watchTimeoutSeconds = watchTimeoutSeconds
            self.initialBackoff = initialBackoff
            self.maxBackoff = maxBackoff
        }
    }

    private struct State {
        var hasSynced = false
        var lastError: Error?
        var resourceVersion: String?
        var lists = 0
        var watches = 0
    }

    public let client: KubeClient
    public let resource: KubeResource<Object>
    public let namespace: String?
    public let options: Options
    private let logger: Logger
    private let state = Mutex(State())

    public init(client: KubeClient, resource: KubeResource<Object>, namespace: String? = nil,
                options: Options = Options(), logger: Logger = Logger(label: "edged.kube.informer")) {
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.options = options
        self.logger = logger
    }

    /// True once a list has been delivered.
    public var hasSynced: Bool { state.withLock { $0.hasSynced } }
    /// The last list/watch error, cleared by the next successful list or watch event.
    public var lastError: Error? { state.withLock { $0.lastError } }
    /// The newest resourceVersion seen (list, event or bookmark).
    public var resourceVersion: String? { state.withLock { $0.resourceVersion } }
    /// How many lists and watches were started (re-list and re-watch counts, for tests and metrics).
    public var counts: (lists: Int, watches: Int) { state.withLock { ($0.lists, $0.watches) } }

    /// Runs the loop until the calling task is cancelled. `handler` is awaited for each event in order.
    public func run(_ handler: (InformerEvent<Object>) async -> Void) async {
        var rv: String?
        var backoff = options.initialBackoff
        let what = "\(resource)\(namespace.map { " in \($0)" } ?? "")"
        while !Task.isCancelled {
            do {
                if rv == nil {
                    state.withLock { $0.lists += 1 }
                    let list = try await client.list(resource, namespace: namespace, options: ListOptions(
                        labelSelector: options.labelSelector, fieldSelector: options.fieldSelector, limit: options.pageSize))
                    rv = list.resourceVersion
                    state.withLock {
                        $0.resourceVersion = rv
                        $0.hasSynced = true
                        $0.lastError = nil
                    }
                    await handler(.replaced(list.items))
                    backoff = options.initialBackoff
                }
                // Cancelled during the list or by the handler (a one-shot read): open no watch.
                if Task.isCancelled { return }
                let started = ContinuousClock.now
                var delivered = false
                state.withLock { $0.watches += 1 }
                let watchOptions = WatchOptions(resourceVersion: rv, labelSelector: options.labelSelector,
                                                fieldSelector: options.fieldSelector, allowWatchBookmarks: true,
                                                timeoutSeconds: Int.random(in: options.watchTimeoutSeconds))
                try await client.watch(resource, namespace: namespace, options: watchOptions) { event in
                    let object: Object?
                    let change: InformerEvent<Object>?
                    switch event {
                    case .added(let o): (object, change) = (o, .added(o))
                    case .modified(let o): (object, change) = (o, .modified(o))
                    case .deleted(let o): (object, change) = (o, .deleted(o))
                    case .bookmark(let v):
                        (object, change) = (nil, nil)
                        if !v.isEmpty { rv = v }
                    case .error(let st):
                        throw KubeError.fromWatchStatus(st, what: "watch \(what) at \(client.server)")
                    }
                    if let newRV = object?.metadata.resourceVersion, !newRV.isEmpty { rv = newRV }
                    delivered = true
                    let current = rv
                    state.withLock {
                        $0.resourceVersion = current
                        $0.lastError = nil
                    }
                    if let change { await handler(change) }
                }
                // The server ended the watch (timeoutSeconds). A watch that ends at once with nothing in it is
                // treated like an error so a misbehaving server is not hammered.
                if !delivered, ContinuousClock.now - started < .seconds(1) {
                    throw KubeError(kind: .transport, message: "watch \(what) at \(client.server) ended at once with no events")
                }
                backoff = options.initialBackoff
            } catch {
                if Task.isCancelled || error is CancellationError { return }
                state.withLock { $0.lastError = error }
                if let ke = error as? KubeError, ke.isGone {
                    logger.debug("resourceVersion expired; re-listing", metadata: ["resource": "\(what)", "error": "\(ke.message)"])
                    rv = nil
                    continue
                }
                logger.warning("list/watch failed; retrying", metadata: ["resource": "\(what)", "error": "\(error)",
                                                                         "retryIn": "\(backoff)"])
                let jitter = Double.random(in: 0.5...1.0)
                do { try await Task.sleep(for: backoff * jitter) } catch { return }
                backoff = min(backoff * 2, options.maxBackoff)
            }
        }
    }
}
