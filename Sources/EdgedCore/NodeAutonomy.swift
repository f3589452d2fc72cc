// Node autonomy: how long the cloud side keeps an edge node's pods bound while the node is unreachable.
//
// The setting is an annotation on the Node, OpenYurt-compatible:
//   node.openyurt.io/autonomy-duration: "0"      forever (pods are never evicted for an unreachable/not-ready node)
//   node.openyurt.io/autonomy-duration: "72h"    a Go duration (time.ParseDuration: "90m", "1h30m", "3600s", "1.5h")
//   node.beta.openyurt.io/autonomy: "true"       the older OpenYurt annotation: forever ("false": off)
// autonomy-duration wins when both are set. Neither: not autonomous.
//
// What autonomy does to a pod (the autonomy controller writes it, `edgectl status` checks it): the NoExecute
// tolerations of node.kubernetes.io/unreachable and node.kubernetes.io/not-ready get tolerationSeconds = the duration
// (none = forever), the way OpenYurt's yurt-manager does. Pod update validation (validateOnlyAddedTolerations in
// pkg/apis/core/validation) lets an update change an existing toleration's tolerationSeconds and add tolerations,
// nothing else, so that is all this changes. Pods that the cloud keeps anyway are left alone: DaemonSet pods (the
// DaemonSet controller gives them forever tolerations of both taints), mirror pods (the node re-creates them),
// terminating and finished pods.

/// A node's autonomy, from its annotations.
public enum NodeAutonomy: Sendable, Equatable, CustomStringConvertible {
    /// Not autonomous: pods keep the tolerations they were created with (DefaultTolerationSeconds: 300 s).
    case off
    /// Pods are kept bound for as long as the node is away.
    case forever
    /// Pods are kept bound for this many seconds of NotReady/unreachable (at least 1).
    case seconds(Int64)

    public static let durationAnnotation = "node.openyurt.io/autonomy-duration"
    public static let legacyAnnotation = "node.beta.openyurt.io/autonomy"
    /// The two taints whose NoExecute tolerations autonomy sets (node lifecycle controller).
    public static let taintKeys = ["node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"]

    /// A bad annotation value: what it is and what to write instead.
    public struct InvalidAnnotation: Error, Sendable, Equatable, CustomStringConvertible {
        public let annotation: String
        public let value: String
        public let reason: String
        public var description: String {
            "\(annotation)=\"\(value)\" is not valid (\(reason)): write \"0\" for forever or a duration such as \"72h\" or \"90m\"; the node is treated as not autonomous until then"
        }
    }

    /// The setting the annotations give. A bad value throws (the node then counts as not autonomous).
    public init(annotations: [String: String]?) throws(InvalidAnnotation) {
        let a = annotations ?? [:]
        if let value = a[Self.durationAnnotation] {
            self = try Self.parse(durationValue: value)
        } else if let value = a[Self.legacyAnnotation] {
            switch value.trimmed.lowercased() {
            case "true": self = .forever
            case "false": self = .off
            default: throw InvalidAnnotation(annotation: Self.legacyAnnotation, value: value, reason: "it must be \"true\" or \"false\"")
            }
        } else {
            self = .off
        }
    }

    /// "0" → forever; a Go duration → whole seconds (rounded up), at least 1 s.
    public static func parse(durationValue value: String) throws(InvalidAnnotation) -> NodeAutonomy {
        func invalid(_ reason: String) -> InvalidAnnotation {
            InvalidAnnotation(annotation: durationAnnotation, value: value, reason: reason)
        }
        guard let seconds = parseGoDuration(value.trimmed) else { throw invalid("not a duration") }
        if seconds == 0 { return .forever }
        guard seconds > 0 else { throw invalid("a duration cannot be negative") }
        guard seconds < Double(Int64.max / 2) else { throw invalid("too long: use \"0\" for forever") }
        return .seconds(max(1, Int64(seconds.rounded(.up))))
    }

    /// Go's time.ParseDuration, in seconds: [-+]?([0-9]*(\.[0-9]*)?[a-z]+)+ with units ns us µs ms s m h, or "0".
    public static func parseGoDuration(_ s: String) -> Double? {
        var rest = Substring(s)
        var sign = 1.0
        if let c = rest.first, c == "-" || c == "+" { sign = c == "-" ? -1 : 1; rest = rest.dropFirst() }
        if rest == "0" { return 0 }
        guard !rest.isEmpty else { return nil }
        let units: [(String, Double)] = [("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("μs", 1e-6), ("ms", 1e-3),
                                         ("s", 1), ("m", 60), ("h", 3600)]
        var total = 0.0
        while !rest.isEmpty {
            let number = rest.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
            guard !number.isEmpty, number != ".", number.filter({ $0 == "." }).count <= 1,
                  let n = Double(number.hasPrefix(".") ? "0" + number : String(number)) else { return nil }
            rest = rest.dropFirst(number.count)
            let unitText = rest.prefix { !($0.isASCII && ($0.isNumber || $0 == ".")) }
            guard let unit = units.first(where: { $0.0 == unitText }) else { return nil }
            rest = rest.dropFirst(unitText.count)
            total += n * unit.1
        }
        return sign * total
    }

    public var isAutonomous: Bool { self != .off }

    /// The tolerationSeconds autonomy gives both tolerations: nil = forever. Only for an autonomous setting.
    public var tolerationSeconds: Int64? {
        if case .seconds(let s) = self { return s }
        return nil
    }

    /// "forever", "72h", "90m", "45s", "off".
    public var description: String {
        switch self {
        case .off: return "off"
        case .forever: return "forever"
        case .seconds(let s): return Self.format(seconds: s)
        }
    }

    /// 259200 → "72h", 5400 → "90m", 45 → "45s", 3661 → "3661s".
    public static func format(seconds s: Int64) -> String {
        if s % 3600 == 0 { return "\(s / 3600)h" }
        if s % 60 == 0 { return "\(s / 60)m" }
        return "\(s)s"
    }

    // MARK: Pods

    /// Whether the autonomy controller leaves this pod alone whatever the node's setting: DaemonSet pods, mirror
    /// pods, pods being deleted, finished pods. `phase` is status.phase.
    public static func leavesAlone(_ meta: ObjectMeta, phase: String?) -> Bool {
        if meta.deletionTimestamp != nil { return true }
        if phase == "Succeeded" || phase == "Failed" { return true }
        if meta.annotations?["kubernetes.io/config.mirror"] != nil { return true }
        return meta.ownerReferences?.contains { $0.controller == true && $0.kind == "DaemonSet" } ?? false
    }

    /// Whether `toleration` is one autonomy sets for `key`: that key, effect NoExecute, and it matches the taint
    /// (operator Exists, or Equal with an empty value: the node lifecycle taints have no value).
    static func isAutonomyToleration(_ t: Toleration, key: String) -> Bool {
        guard t.key == key, t.effect == "NoExecute" else { return false }
        switch t.operator ?? "Equal" {
        case "Exists": return true
        case "Equal": return (t.value ?? "").isEmpty
        default: return false
        }
    }

    /// One entry of a toleration list with autonomy applied: the toleration as it should be, and the index in the
    /// original list it comes from (nil: added), so a writer can send back the original entry as it was read.
    public struct AppliedToleration: Sendable, Equatable {
        public var from: Int?
        public var toleration: Toleration
    }

    /// The pod's tolerations with autonomy applied, or nil when they already carry it: every NoExecute toleration
    /// of the two taints gets `tolerationSeconds` (nil = forever); a taint with none gets one appended
    /// (operator Exists). The taint-eviction controller goes by the first toleration that matches a taint
    /// (GetMatchingTolerations), so when another one that also matches comes earlier (a wildcard `operator: Exists`
    /// with `effect: NoExecute`) and would have the pod deleted sooner, the autonomy toleration is moved in front of
    /// it (pod update validation allows any order); an earlier one that keeps the pod longer stays first. Nothing
    /// else changes. Only for an autonomous setting.
    public func applied(to tolerations: [Toleration]) -> [AppliedToleration]? {
        guard isAutonomous else { return nil }
        var result = tolerations.enumerated().map { AppliedToleration(from: $0.offset, toleration: $0.element) }
        for key in Self.taintKeys {
            var found = false
            for i in result.indices where Self.isAutonomyToleration(result[i].toleration, key: key) {
                found = true
                result[i].toleration.tolerationSeconds = tolerationSeconds
            }
            if !found {
                result.append(AppliedToleration(from: nil, toleration: Toleration(
                    key: key, operator: "Exists", effect: "NoExecute", tolerationSeconds: tolerationSeconds)))
            }
            if let first = result.firstIndex(where: { Self.toleratesNoExecute($0.toleration, taintKey: key) }),
               let ours = result.firstIndex(where: { Self.isAutonomyToleration($0.toleration, key: key) }), first < ours,
               let sooner = result[first].toleration.tolerationSeconds, tolerationSeconds.map({ sooner < $0 }) ?? true {
                result.insert(result.remove(at: ours), at: first)
            }
        }
        return result.map(\.toleration) == tolerations ? nil : result
    }

    /// `applied(to:)` as a plain list.
    public func tolerationsApplied(to tolerations: [Toleration]) -> [Toleration]? {
        applied(to: tolerations)?.map(\.toleration)
    }

    /// Whether `t` tolerates the NoExecute taint `taintKey` (no value), as v1.Toleration.ToleratesTaint: an empty
    /// effect matches every effect, `Exists` with an empty key every key, `Equal` (the default) needs the key and
    /// an empty value.
    public static func toleratesNoExecute(_ t: Toleration, taintKey: String) -> Bool {
        let effect = t.effect ?? ""
        guard effect.isEmpty || effect == "NoExecute" else { return false }
        switch t.operator ?? "" {
        case "Exists": return (t.key ?? "").isEmpty || t.key == taintKey
        case "Equal", "": return t.key == taintKey && (t.value ?? "").isEmpty
        default: return false
        }
    }

    /// The seconds after which the taint-eviction controller deletes a pod with these tolerations once the node has
    /// the NoExecute taint `taintKey`: 0 when nothing tolerates it, nil when the first matching toleration has no
    /// tolerationSeconds (forever).
    public static func deletionDelay(_ tolerations: [Toleration], taintKey: String) -> Int64? {
        guard let match = tolerations.first(where: { toleratesNoExecute($0, taintKey: taintKey) }) else { return 0 }
        return match.tolerationSeconds.map { max($0, 0) }
    }

    /// What the pod tolerates of `key`'s NoExecute taint through the tolerations autonomy sets: nil when it has
    /// none, else the seconds (nil inside = forever). For messages: "unreachable 300 s".
    public static func describeTolerations(_ tolerations: [Toleration]) -> String {
        taintKeys.map { key in
            let short = key.split(separator: "/").last.map(String.init) ?? key
            let ts = tolerations.filter { isAutonomyToleration($0, key: key) }
            guard !ts.isEmpty else { return "\(short): none" }
            let seconds = ts.map { $0.tolerationSeconds.map { "\($0) s" } ?? "forever" }
            return "\(short) \(Set(seconds).sorted().joined(separator: "/"))"
        }.joined(separator: ", ")
    }
}
