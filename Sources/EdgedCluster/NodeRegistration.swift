// The node's registration choices from `edgectl join` (labels, node pool, taints, autonomy), kept beside the
// credentials so a reboot (with or without the cloud) comes back as the same node.

import EdgedControl
import EdgedCore
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The node's registration choices, stored as `<credentialsDir>/node.json` (0600, written atomically).
public struct NodeRegistration: Codable, Sendable, Equatable {
    public var labels: [String: String]
    public var nodePool: String?
    /// "key=value:Effect" or "key:Effect", like kubelet's --register-with-taints.
    public var taints: [String]
    /// The node.openyurt.io/autonomy-duration annotation the Node is created with ("0" forever, or a Go duration);
    /// nil: none (`--no-autonomy`). Only when edged creates the Node: once it exists the annotation is the
    /// operator's (`kubectl annotate node`), and edged never rewrites or removes it. A file from before this setting
    /// has the default, "0".
    public var autonomy: String?

    public init(labels: [String: String] = [:], nodePool: String? = nil, taints: [String] = [],
                autonomy: String? = JoinRequest.defaultAutonomy) {
        self.labels = labels
        self.nodePool = nodePool
        self.taints = taints
        self.autonomy = autonomy
    }

    enum CodingKeys: String, CodingKey {
        case labels, nodePool, taints, autonomy
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        labels = try c.decodeIfPresent([String: String].self, forKey: .labels) ?? [:]
        nodePool = try c.decodeIfPresent(String.self, forKey: .nodePool)
        taints = try c.decodeIfPresent([String].self, forKey: .taints) ?? []
        // Absent (a file written before autonomy existed): the default; null: none.
        autonomy = try c.contains(.autonomy) ? c.decodeIfPresent(String.self, forKey: .autonomy) : JoinRequest.defaultAutonomy
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(labels, forKey: .labels)
        try c.encodeIfPresent(nodePool, forKey: .nodePool)
        try c.encode(taints, forKey: .taints)
        if let autonomy { try c.encode(autonomy, forKey: .autonomy) } else { try c.encodeNil(forKey: .autonomy) }
    }

    public static let fileName = "node.json"

    public static func load(dir: String) throws(EdgedError) -> NodeRegistration? {
        let path = "\(dir)/\(fileName)"
        guard let bytes = Files.read(path) else { return nil }
        do { return try JSONDecoder().decode(NodeRegistration.self, from: Data(bytes)) } catch {
            throw EdgedError(.invalidConfig, "\(path) is not valid (\(error)): run `edgectl join` again")
        }
    }

    public func save(dir: String) throws(EdgedError) {
        let bytes: [UInt8]
        do { bytes = Array(try JSONEncoder().encode(self)) } catch {
            throw EdgedError(.io, "encoding the node registration: \(error)")
        }
        _ = Files.makeDirectories(dir, mode: 0o700)
        try Files.writeAtomically("\(dir)/\(Self.fileName)", bytes, mode: 0o600)
    }

    /// The labels a node may set on itself in the kubernetes.io and k8s.io namespaces (kubelet's
    /// KubeletLabels/KubeletLabelNamespaces, which NodeRestriction admission enforces); any other label there is
    /// refused by a cluster with NodeRestriction, so kubelet refuses it at start and so does `edgectl join`.
    static let allowedKubernetesLabels: Set<String> = [
        "kubernetes.io/hostname", "kubernetes.io/os", "kubernetes.io/arch", "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch", "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type",
        "topology.kubernetes.io/zone", "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region",
    ]
    static let allowedKubernetesLabelPrefixes = ["kubelet.kubernetes.io/", "node.kubernetes.io/"]

    /// Throws for a label in the kubernetes.io / k8s.io namespaces that a node may not set on itself
    /// (e.g. node-role.kubernetes.io/edge): the API server would refuse the node's registration every time.
    public static func checkLabel(_ key: String) throws(EdgedError) {
        guard let slash = key.firstIndex(of: "/") else { return }
        let namespace = key[..<slash].lowercased()
        let restricted = ["kubernetes.io", "k8s.io"].contains { namespace == $0 || namespace.hasSuffix(".\($0)") }
        guard restricted, !allowedKubernetesLabels.contains(key),
              !allowedKubernetesLabelPrefixes.contains(where: { key.hasPrefix($0) }) else { return }
        throw EdgedError(.invalidConfig, "label \(key) cannot be set by the node itself (NodeRestriction refuses kubernetes.io and k8s.io labels outside kubelet's set: kubelet.kubernetes.io/*, node.kubernetes.io/*, topology.kubernetes.io/zone|region, ...): leave it out of --labels and set it from the cloud with `kubectl label node NODE \(key)=...`")
    }

    /// Parses "key=value:Effect" / "key:Effect"; the effect must be NoSchedule, PreferNoSchedule or NoExecute.
    public static func parseTaint(_ text: String) throws(EdgedError) -> (key: String, value: String?, effect: String) {
        guard let colon = text.lastIndex(of: ":") else {
            throw EdgedError(.invalidConfig, "taint \"\(text)\" must look like key=value:NoSchedule")
        }
        let effect = String(text[text.index(after: colon)...])
        guard ["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(effect) else {
            throw EdgedError(.invalidConfig, "taint \"\(text)\": effect must be NoSchedule, PreferNoSchedule or NoExecute")
        }
        let kv = text[..<colon].split(separator: "=", maxSplits: 1).map(String.init)
        guard let key = kv.first, !key.isEmpty else {
            throw EdgedError(.invalidConfig, "taint \"\(text)\" has no key")
        }
        return (key, kv.count > 1 ? kv[1] : nil, effect)
    }
}
