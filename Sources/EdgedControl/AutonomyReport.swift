// Node autonomy as `edgectl status` shows it: the setting the node's annotations give (EdgedCore NodeAutonomy),
// how long the cloud keeps the node's pods through an outage, and the pods bound through the API whose two
// NoExecute tolerations do not carry that setting yet (no autonomy controller has reconciled them). The daemon builds
// it from the Node and the pods as it last saw them (offline: the last copies); the wording lives here so that the
// status screen and the DEGRADED reasons say the same thing.

import EdgedCore

/// `cluster.autonomy` of `edgectl status --json`.
public struct AutonomyReport: Codable, Sendable, Equatable {
    /// "on", "off", or "invalid" (a bad annotation value: the cloud side treats the node as not autonomous).
    public var setting: String
    /// The annotation that decides it (node.openyurt.io/autonomy-duration, or the older node.beta.openyurt.io/autonomy
    /// when only that one is set); nil when the Node has neither.
    public var annotation: String?
    /// That annotation's value, as written.
    public var value: String?
    /// "forever" or a duration ("72h"); nil when not on.
    public var duration: String?
    /// How many seconds of outage the cloud keeps the node's pods; nil when forever or not on.
    public var seconds: Int64?
    /// Why the annotation's value is not valid (setting "invalid").
    public var invalidReason: String?
    /// Pods bound to this node through the API that autonomy concerns (not DaemonSet, mirror, terminating or finished
    /// pods) whose unreachable/not-ready NoExecute tolerations do not carry the setting yet. Only while on.
    public var unreconciledPods: [UnreconciledPod]
    /// A pod in `unreconciledPods` makes the node DEGRADED once it has been so for this many seconds
    /// (`cluster.autonomyGraceSeconds`): time for the autonomy controller to reconcile it.
    public var graceSeconds: Int64

    public init(setting: String, annotation: String? = nil, value: String? = nil, duration: String? = nil,
                seconds: Int64? = nil, invalidReason: String? = nil, unreconciledPods: [UnreconciledPod] = [],
                graceSeconds: Int64 = 60) {
        self.setting = setting
        self.annotation = annotation
        self.value = value
        self.duration = duration
        self.seconds = seconds
        self.invalidReason = invalidReason
        self.unreconciledPods = unreconciledPods
        self.graceSeconds = graceSeconds
    }
}

public struct UnreconciledPod: Codable, Sendable, Equatable {
    public var namespace: String
    public var name: String
    /// What the pod tolerates of the two taints now: "unreachable 300 s, not-ready 300 s".
    public var tolerations: String
    /// Seconds after the node becomes unreachable that the cloud deletes the pod with these tolerations
    /// (0: at once); nil: never.
    public var deletedAfterSeconds: Int64?
    /// Seconds since edged first saw the pod without the autonomy tolerations.
    public var forSeconds: Int64

    public init(namespace: String, name: String, tolerations: String, deletedAfterSeconds: Int64?, forSeconds: Int64) {
        self.namespace = namespace
        self.name = name
        self.tolerations = tolerations
        self.deletedAfterSeconds = deletedAfterSeconds
        self.forSeconds = forSeconds
    }
}

extension AutonomyReport {
    /// Where the autonomy controller's manifest is, for the messages.
    public static let controllerManifest = "deploy/autonomy-controller.yaml"

    /// The report for a Node with `annotations` and the pods bound to it through the API. `ages`: seconds since each
    /// unreconciled pod (by UID) was first seen so (0 when absent).
    public init(annotations: [String: String]?, pods: [Pod], ages: [String: Int64] = [:], graceSeconds: Int64) {
        let a = annotations ?? [:]
        let annotation = a[NodeAutonomy.durationAnnotation] != nil ? NodeAutonomy.durationAnnotation
            : a[NodeAutonomy.legacyAnnotation] != nil ? NodeAutonomy.legacyAnnotation : nil
        self.init(setting: "off", annotation: annotation, value: annotation.flatMap { a[$0] }, graceSeconds: graceSeconds)
        let autonomy: NodeAutonomy
        do { autonomy = try NodeAutonomy(annotations: annotations) } catch {
            setting = "invalid"
            invalidReason = error.description
            return
        }
        guard autonomy.isAutonomous else { return }
        setting = "on"
        duration = autonomy.description
        seconds = autonomy.tolerationSeconds
        unreconciledPods = Self.unreconciled(autonomy, pods: pods).map { pod in
            let tolerations = pod.spec.tolerations ?? []
            return UnreconciledPod(namespace: pod.namespace, name: pod.name,
                                   tolerations: NodeAutonomy.describeTolerations(tolerations),
                                   deletedAfterSeconds: NodeAutonomy.deletionDelay(tolerations, taintKey: NodeAutonomy.taintKeys[0]),
                                   forSeconds: pod.metadata.uid.flatMap { ages[$0] } ?? 0)
        }.sorted { ($0.namespace, $0.name) < ($1.namespace, $1.name) }
    }

    /// The pods autonomy concerns whose tolerations do not carry `autonomy` yet.
    public static func unreconciled(_ autonomy: NodeAutonomy, pods: [Pod]) -> [Pod] {
        guard autonomy.isAutonomous else { return [] }
        return pods.filter { pod in
            !NodeAutonomy.leavesAlone(pod.metadata, phase: pod.status?.phase?.rawValue)
                && autonomy.tolerationsApplied(to: pod.spec.tolerations ?? []) != nil
        }
    }

    /// The pods that have been unreconciled for longer than the grace period.
    public var overdue: [UnreconciledPod] { unreconciledPods.filter { $0.forSeconds >= graceSeconds } }

    /// "annotation=value" as kubectl would write it.
    var setBy: String { annotation.map { "\($0)=\(value ?? "")" } ?? "no autonomy annotation" }

    /// The status screen's line (without a newline).
    public func line(nodeName: String) -> String {
        let offText = "the cloud deletes this node's pods once their tolerations run out (300 s by default) after it loses the node"
        switch setting {
        case "on":
            let keeps = seconds.map { "for \(duration ?? NodeAutonomy.format(seconds: $0)) of outage" } ?? "through an outage of any length"
            var text = "Autonomy:  on, \(duration ?? "forever") (\(setBy)): the cloud keeps this node's pods \(keeps)"
            if !unreconciledPods.isEmpty {
                let n = unreconciledPods.count
                text += "; \(n) pod\(n == 1 ? "" : "s") not reconciled by the autonomy controller yet"
            }
            return text
        case "invalid":
            return "Autonomy:  off, \(setBy) is not valid: \(offText); fix with kubectl annotate node \(nodeName) \(NodeAutonomy.durationAnnotation)=0 --overwrite"
        default:
            let why = annotation == nil ? "" : " (\(setBy))"
            let overwrite = annotation == NodeAutonomy.durationAnnotation ? " --overwrite" : ""
            return "Autonomy:  off\(why): \(offText); enable with kubectl annotate node \(nodeName) \(NodeAutonomy.durationAnnotation)=0\(overwrite)"
        }
    }

    /// DEGRADED reasons: a bad annotation value, or pods still without the autonomy tolerations after the grace period.
    public func problems(nodeName: String) -> [String] {
        if setting == "invalid" {
            let why = invalidReason ?? "\(setBy) is not valid"
            return ["\(why) (kubectl annotate node \(nodeName) \(NodeAutonomy.durationAnnotation)=0 --overwrite)"]
        }
        let late = overdue
        guard setting == "on", !late.isEmpty else { return [] }
        let n = late.count
        var listed = late.prefix(3).map { "\($0.namespace)/\($0.name): \($0.tolerations)" }.joined(separator: "; ")
        if n > 3 { listed += "; and \(n - 3) more" }
        var consequence = ""
        let delays = late.map(\.deletedAfterSeconds)
        if let soonest = delays.compactMap({ $0 }).min() {
            let all = delays.allSatisfy { $0 == soonest }
            let subject = n == 1 ? "it" : all ? "them" : "the first of them"
            consequence = soonest == 0 ? ", so the cloud deletes \(subject) as soon as it loses the node"
                : ", so the cloud deletes \(subject) \(soonest) s into an outage"
        }
        return ["node is autonomous (\(setBy)) but \(n) pod\(n == 1 ? " still carries" : "s still carry") tolerations that autonomy has not set (\(listed)): no autonomy controller has reconciled \(n == 1 ? "it" : "them") within \(graceSeconds) s\(consequence); deploy it: kubectl apply -f \(Self.controllerManifest) (README \"Node autonomy\")"]
    }
}

extension JoinRequest {
    /// Why an `--autonomy` value cannot be the annotation's value (what to give instead), or nil when it can.
    public static func autonomyProblem(_ value: String) -> String? {
        do { _ = try NodeAutonomy.parse(durationValue: value) } catch {
            return "--autonomy=\(value) is not valid (\(error.reason)): give --autonomy or --autonomy=0 for forever, a duration such as --autonomy=72h or --autonomy=90m, or --no-autonomy for none"
        }
        return nil
    }
}
