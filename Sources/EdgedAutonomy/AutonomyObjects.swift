// The slices of Pods and Nodes the autonomy controller reads. A cluster may have many pods, so the informers decode
// only these fields (everything else in the JSON is skipped) and the cache keeps less still (`PodFacts`).
// Tolerations are kept as raw JSON: the controller writes the whole list back (a merge patch replaces a list), and
// every field of every toleration must go back as the API server sent it, including fields newer servers may add.

import EdgedCore
import EdgedKube

/// A pod as the controller decodes it.
struct AutonomyPod: KubeObject {
    struct Spec: Codable, Sendable {
        var nodeName: String?
        var tolerations: [JSONObject]?
    }

    struct Status: Codable, Sendable {
        var phase: String?
    }

    var metadata: ObjectMeta
    var spec: Spec?
    var status: Status?
}

/// A node as the controller decodes it: only its metadata (name, uid, annotations).
struct AutonomyNode: KubeObject {
    var metadata: ObjectMeta
}

extension KubeResource where Object == AutonomyPod {
    static var autonomyPods: KubeResource<AutonomyPod> { .init(group: "", version: "v1", plural: "pods", namespaced: true) }
}

extension KubeResource where Object == AutonomyNode {
    static var autonomyNodes: KubeResource<AutonomyNode> { .init(group: "", version: "v1", plural: "nodes", namespaced: false) }
}

/// What the controller keeps per bound pod.
struct PodFacts: Sendable, Equatable {
    var namespace: String
    var name: String
    var uid: String
    var nodeName: String
    var resourceVersion: String
    /// spec.tolerations as the API server sent them.
    var tolerations: [JSONValue]
    /// `NodeAutonomy.leavesAlone`: a DaemonSet or mirror pod, being deleted, or finished.
    var leftAlone: Bool

    /// nil for a pod that is not bound to a node (nothing to do until the scheduler binds it).
    init?(_ pod: AutonomyPod) {
        guard let node = pod.spec?.nodeName, !node.isEmpty, let name = pod.metadata.name else { return nil }
        namespace = pod.metadata.namespace ?? "default"
        self.name = name
        uid = pod.metadata.uid ?? ""
        nodeName = node
        resourceVersion = pod.metadata.resourceVersion ?? ""
        tolerations = (pod.spec?.tolerations ?? []).map(\.value)
        leftAlone = NodeAutonomy.leavesAlone(pod.metadata, phase: pod.status?.phase)
    }

    var key: String { "\(namespace)/\(name)" }
}

/// What the controller keeps per node: its autonomy setting (or why the annotation is bad) and where it came from.
struct NodeFacts: Sendable, Equatable {
    var name: String
    /// The two annotations' values, to notice a change.
    var annotationValues: [String?]
    var setting: Result<NodeAutonomy, NodeAutonomy.InvalidAnnotation>

    init(_ node: AutonomyNode) {
        name = node.metadata.name ?? ""
        let a = node.metadata.annotations ?? [:]
        annotationValues = [a[NodeAutonomy.durationAnnotation], a[NodeAutonomy.legacyAnnotation]]
        do { setting = .success(try NodeAutonomy(annotations: a)) } catch { setting = .failure(error) }
    }

    /// The annotation that decides, as `name="value"`, for messages.
    var source: String {
        if let v = annotationValues[0] { return "\(NodeAutonomy.durationAnnotation)=\"\(v)\"" }
        if let v = annotationValues[1] { return "\(NodeAutonomy.legacyAnnotation)=\"\(v)\"" }
        return "no autonomy annotation"
    }

    /// The setting when it is valid and autonomous.
    var autonomy: NodeAutonomy? {
        guard case .success(let s) = setting, s.isAutonomous else { return nil }
        return s
    }

    var invalid: NodeAutonomy.InvalidAnnotation? {
        if case .failure(let e) = setting { return e }
        return nil
    }
}

/// The change the controller makes to one pod.
struct TolerationChange: Sendable, Equatable {
    /// The whole new spec.tolerations list: entries that do not change are the raw JSON as read.
    var tolerations: [JSONValue]
    /// `NodeAutonomy.describeTolerations` before and after.
    var before: String
    var after: String

    /// The change that gives `tolerations` (raw, as read) the setting `autonomy`; nil when they already carry it.
    /// A toleration that does not decode (not an object) fails the pod: nothing is written.
    static func compute(tolerations raw: [JSONValue], autonomy: NodeAutonomy) -> TolerationChange? {
        var decoded: [Toleration] = []
        for item in raw {
            guard let t = try? JSONObject(item).decode(as: Toleration.self) else { return nil }
            decoded.append(t)
        }
        guard let applied = autonomy.applied(to: decoded) else { return nil }
        var out: [JSONValue] = []
        // Each entry goes back as read (it may have moved: see NodeAutonomy.applied), with only its seconds changed.
        for a in applied {
            if let i = a.from {
                let t = a.toleration
                out.append(t == decoded[i] ? raw[i]
                           : raw[i].setting(["tolerationSeconds"], to: t.tolerationSeconds.map { .number(String($0)) }))
            } else {
                guard let v = try? KubeJSON.value(of: a.toleration) else { return nil }
                out.append(v)
            }
        }
        return TolerationChange(tolerations: out, before: NodeAutonomy.describeTolerations(decoded),
                                after: NodeAutonomy.describeTolerations(applied.map(\.toleration)))
    }
}
