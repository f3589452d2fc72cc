// The configMaps and secrets that the pods bound to this node refer to, each kept current by its own watch, as
// kubelet's watch-based configMap and secret managers do. A node may read only the objects its pods refer to (the
// Node authorizer builds that graph from the same pod fields), so edged never lists them cluster-wide: per object
// it lists and watches /api/v1/namespaces/<ns>/<configmaps|secrets>?fieldSelector=metadata.name=<name>, which the
// API server authorizes as a read of that one object. The watch starts when the first pod that refers to the object
// is seen and stops when the last such pod is gone; an immutable object is not watched after its first read.

import EdgedCore
import EdgedKube
import Logging
import Synchronization

/// A configMap or secret that a pod refers to.
struct PodObjectRef: Hashable, Sendable, CustomStringConvertible {
    enum Kind: String, Sendable {
        case configMap = "configmap"
        case secret = "secret"
    }
    var kind: Kind
    var namespace: String
    var name: String

    var description: String { "\(kind.rawValue) \(namespace)/\(name)" }
}

extension Pod {
    /// Every configMap and secret the pod refers to: volumes (configMap, secret, projected configMap/secret
    /// sources), env valueFrom configMapKeyRef/secretKeyRef and envFrom of every container (init containers too),
    /// and imagePullSecrets. These are the references the Node authorizer records for a pod.
    var referencedObjects: Set<PodObjectRef> {
        var refs: Set<PodObjectRef> = []
        func add(_ kind: PodObjectRef.Kind, _ name: String?) {
            guard let name, !name.isEmpty else { return }
            refs.insert(PodObjectRef(kind: kind, namespace: namespace, name: name))
        }
        for v in spec.volumes ?? [] {
            add(.configMap, v.configMap?.name)
            add(.secret, v.secret?.secretName)
            for source in v.projected?.sources ?? [] {
                add(.configMap, source.configMap?.name)
                add(.secret, source.secret?.name)
            }
        }
        for c in spec.containers + (spec.initContainers ?? []) {
            for e in c.env ?? [] {
                add(.configMap, e.valueFrom?.configMapKeyRef?.name)
                add(.secret, e.valueFrom?.secretKeyRef?.name)
            }
            for e in c.envFrom ?? [] {
                add(.configMap, e.configMapRef?.name)
                add(.secret, e.secretRef?.name)
            }
        }
        for s in spec.imagePullSecrets ?? [] { add(.secret, s.name) }
        return refs
    }
}

/// One list+watch per referenced object, feeding `APIObjectSource`'s cache; `changed` is told when an object's
/// content changed (so pods that mount it rewrite their files).
final class ReferencedObjectWatches: Sendable {
    private enum Watch {
        case running(id: Int, task: Task<Void, Never>)
        /// An immutable object: read once, its watch ended; kept until no pod refers to it.
        case done
    }
    private struct State {
        var watches: [PodObjectRef: Watch] = [:]
        var nextID = 0
    }

    private let client: KubeClient
    private let objects: APIObjectSource
    private let changed: @Sendable (PodObjectRef) async -> Void
    private let options: Informer<ConfigMap>.Options
    private let logger: Logger
    private let state = Mutex(State())

    init(client: KubeClient, objects: APIObjectSource, options: Informer<ConfigMap>.Options = .init(pageSize: nil),
         logger: Logger, changed: @escaping @Sendable (PodObjectRef) async -> Void) {
        self.client = client
        self.objects = objects
        self.options = options
        self.logger = logger
        self.changed = changed
    }

    /// Makes the watched set `wanted`: starts a watch for each new object, stops the watches of objects no longer
    /// wanted and forgets their cached copy.
    func update(_ wanted: Set<PodObjectRef>) {
        var stopped: [Task<Void, Never>] = []
        var started: [PodObjectRef] = []
        state.withLock { s in
            for (ref, watch) in s.watches where !wanted.contains(ref) {
                if case .running(_, let task) = watch { stopped.append(task) }
                s.watches[ref] = nil
                objects.invalidate(kind: ref.kind.rawValue, namespace: ref.namespace, name: ref.name)
            }
            for ref in wanted where s.watches[ref] == nil {
                s.nextID += 1
                let id = s.nextID
                let task = Task { await self.watch(ref, id: id) }
                s.watches[ref] = .running(id: id, task: task)
                started.append(ref)
            }
        }
        for task in stopped { task.cancel() }
        if !started.isEmpty || !stopped.isEmpty {
            logger.debug("watching the configMaps and secrets of this node's pods",
                         metadata: ["started": "\(started.map(\.description).sorted())", "stopped": "\(stopped.count)"])
        }
    }

    /// Stops every watch (the node agent stops).
    func stopAll() { update([]) }

    private func watch(_ ref: PodObjectRef, id: Int) async {
        switch ref.kind {
        case .configMap:
            await run(ref, id: id, .configMaps, contents: APIObjectSource.contents, immutable: { $0.immutable == true })
        case .secret:
            await run(ref, id: id, .secrets, contents: APIObjectSource.contents, immutable: { $0.immutable == true })
        }
    }

    private func run<T: KubeObject>(_ ref: PodObjectRef, id: Int, _ resource: KubeResource<T>,
                                    contents: @escaping @Sendable (T) -> [String: [UInt8]],
                                    immutable: @escaping @Sendable (T) -> Bool) async {
        let o = options
        let informer = Informer(client: client, resource: resource, namespace: ref.namespace,
                                options: .init(fieldSelector: FieldSelector.name(ref.name), pageSize: nil,
                                               watchTimeoutSeconds: o.watchTimeoutSeconds,
                                               initialBackoff: o.initialBackoff, maxBackoff: o.maxBackoff),
                                logger: logger)
        await informer.run { @Sendable event in
            let object: T?
            switch event {
            case .replaced(let list): object = list.first { $0.metadata.name == ref.name }
            case .added(let o), .modified(let o): object = o
            case .deleted: object = nil
            }
            await self.deliver(ref, id: id, data: object.map(contents), final: object.map(immutable) ?? false)
        }
    }

    /// Stores what the watch of `ref` saw, unless that watch was stopped meanwhile, and tells `changed`.
    private func deliver(_ ref: PodObjectRef, id: Int, data: [String: [UInt8]]?, final: Bool) async {
        var ended: Task<Void, Never>?
        let differs: Bool? = state.withLock { s in
            guard case .running(let current, let task) = s.watches[ref], current == id else { return nil }
            if final {
                s.watches[ref] = .done
                ended = task
            }
            return objects.watched(kind: ref.kind.rawValue, namespace: ref.namespace, name: ref.name, data: data)
        }
        if differs == true { await changed(ref) }
        if let ended {
            logger.debug("\(ref) is immutable: read once, not watched")
            ended.cancel()
        }
    }
}
