// The controller's cache of Nodes and bound Pods (only the facts it needs: see AutonomyObjects.swift) and what each
// change means for the work queue: a pod that changed is reconciled again, and so is every pod of a node whose
// autonomy annotations changed. Level-triggered: the worker always decides from the newest cached state.

import EdgedCore
import EdgedKube

/// What the worker should do with one pod.
enum PodPlan: Sendable, Equatable {
    case nothing
    case patch(PodFacts, TolerationChange, NodeAutonomy, source: String)
}

actor ControllerState {
    private(set) var pods: [String: PodFacts] = [:]
    private var podsByNode: [String: Set<String>] = [:]
    private(set) var nodes: [String: NodeFacts] = [:]
    /// The queue of the current leadership term; nil while not leading (changes are only cached).
    private var queue: WorkQueue?
    /// Nodes whose bad annotation value was reported (node → value), so it is reported once, not every resync.
    private var reportedInvalid: [String: String] = [:]
    /// Pods whose change the API refused (422), with the resourceVersion refused: not retried until it changes.
    private var refused: [String: String] = [:]
    /// Set once the term's first full pass is queued.
    private(set) var initialPassQueued = false

    static func podKey(_ key: String) -> String { "pod:\(key)" }
    static func nodeKey(_ name: String) -> String { "node:\(name)" }

    // MARK: Informer events

    func handle(_ event: InformerEvent<AutonomyNode>) async {
        var keys: [String] = []
        switch event {
        case .replaced(let items):
            var fresh: [String: NodeFacts] = [:]
            for n in items {
                let f = NodeFacts(n)
                if !f.name.isEmpty { fresh[f.name] = f }
            }
            for name in Set(fresh.keys).union(nodes.keys) where fresh[name] != nodes[name] {
                keys += keysOfNode(name)
            }
            for name in reportedInvalid.keys where fresh[name] == nil { reportedInvalid[name] = nil }
            nodes = fresh
        case .added(let n), .modified(let n):
            let f = NodeFacts(n)
            guard !f.name.isEmpty, nodes[f.name] != f else { return }
            nodes[f.name] = f
            keys = keysOfNode(f.name)
        case .deleted(let n):
            guard let name = n.metadata.name, nodes.removeValue(forKey: name) != nil else { return }
            reportedInvalid[name] = nil
        }
        if let queue, !keys.isEmpty { await queue.add(contentsOf: keys) }
    }

    func handle(_ event: InformerEvent<AutonomyPod>) async {
        var keys: [String] = []
        switch event {
        case .replaced(let items):
            var fresh: [String: PodFacts] = [:]
            for p in items {
                if let f = PodFacts(p) { fresh[f.key] = f }
            }
            for (k, f) in fresh where pods[k] != f { keys.append(Self.podKey(k)) }
            for k in pods.keys where fresh[k] == nil { refused[k] = nil }
            pods = fresh
            podsByNode = [:]
            for (k, f) in fresh { podsByNode[f.nodeName, default: []].insert(k) }
        case .added(let p), .modified(let p):
            let key = "\(p.metadata.namespace ?? "default")/\(p.metadata.name ?? "")"
            guard let f = PodFacts(p) else {
                remove(key)
                return
            }
            guard pods[key] != f else { return }
            set(key, f)
            keys = [Self.podKey(key)]
        case .deleted(let p):
            remove("\(p.metadata.namespace ?? "default")/\(p.metadata.name ?? "")")
        }
        if let queue, !keys.isEmpty { await queue.add(contentsOf: keys) }
    }

    private func set(_ key: String, _ f: PodFacts) {
        if let old = pods[key], old.nodeName != f.nodeName { podsByNode[old.nodeName]?.remove(key) }
        pods[key] = f
        podsByNode[f.nodeName, default: []].insert(key)
    }

    private func remove(_ key: String) {
        guard let old = pods.removeValue(forKey: key) else { return }
        podsByNode[old.nodeName]?.remove(key)
        if podsByNode[old.nodeName]?.isEmpty == true { podsByNode[old.nodeName] = nil }
        refused[key] = nil
    }

    private func keysOfNode(_ name: String) -> [String] {
        [Self.nodeKey(name)] + (podsByNode[name] ?? []).map(Self.podKey)
    }

    // MARK: Leadership terms

    /// Starts a term with `queue` (nil ends it).
    func setQueue(_ queue: WorkQueue?) {
        self.queue = queue
        initialPassQueued = false
    }

    /// Queues every node and pod (the start of a term, and each resync).
    func enqueueAll() async {
        guard let queue else { return }
        let keys = nodes.keys.map(Self.nodeKey) + pods.keys.map(Self.podKey)
        await queue.add(contentsOf: keys)
        initialPassQueued = true
    }

    func isIdle() async -> Bool {
        guard initialPassQueued, let queue else { return false }
        return await queue.isIdle
    }

    // MARK: Decisions

    func plan(pod key: String) -> PodPlan {
        guard let f = pods[key], !f.leftAlone, let node = nodes[f.nodeName], let autonomy = node.autonomy else { return .nothing }
        if refused[key] == f.resourceVersion { return .nothing }
        guard let change = TolerationChange.compute(tolerations: f.tolerations, autonomy: autonomy) else { return .nothing }
        return .patch(f, change, autonomy, source: node.source)
    }

    /// The patch went through: cache the answer unless the informer already has something newer.
    func patched(_ key: String, from resourceVersion: String, _ pod: AutonomyPod) {
        guard pods[key]?.resourceVersion == resourceVersion, let f = PodFacts(pod) else { return }
        set(key, f)
    }

    func refuse(_ key: String, resourceVersion: String) {
        refused[key] = resourceVersion
    }

    /// A bad annotation on the node not reported yet, or nil.
    func unreportedInvalid(node name: String) -> NodeAutonomy.InvalidAnnotation? {
        guard let bad = nodes[name]?.invalid else {
            reportedInvalid[name] = nil
            return nil
        }
        return reportedInvalid[name] == bad.value ? nil : bad
    }

    func reported(node name: String, value: String) {
        reportedInvalid[name] = value
    }
}
