// Resource descriptions: which URL path serves a kind, typed by the object the path returns.

import EdgedCore

/// An object with Kubernetes metadata (everything a client or informer handles).
public protocol KubeObject: Codable, Sendable {
    var metadata: ObjectMeta { get }
}

extension Pod: KubeObject {}

/// Where a resource lives in the API, and the type its objects decode to.
///
/// `KubeResource<Pod>.pods`, `.nodes`, ... cover what edged uses; `subresource(_:)` gives "pods/status",
/// "certificatesigningrequests/approval" and the like (same object type).
public struct KubeResource<Object: Codable & Sendable>: Sendable, Hashable, CustomStringConvertible {
    /// "" for the core group.
    public var group: String
    public var version: String
    public var plural: String
    public var namespaced: Bool
    public var subresourceName: String?

    public init(group: String, version: String, plural: String, namespaced: Bool, subresource: String? = nil) {
        self.group = group
        self.version = version
        self.plural = plural
        self.namespaced = namespaced
        self.subresourceName = subresource
    }

    /// The same resource's subresource ("status", "approval", "token", ...).
    public func subresource(_ name: String) -> KubeResource<Object> {
        KubeResource(group: group, version: version, plural: plural, namespaced: namespaced, subresource: name)
    }

    /// "/api/v1" or "/apis/<group>/<version>".
    public var groupVersionPath: String { group.isEmpty ? "/api/\(version)" : "/apis/\(group)/\(version)" }

    /// "pods", "pods/status", "leases.coordination.k8s.io".
    public var description: String {
        let base = group.isEmpty ? plural : "\(plural).\(group)"
        return subresourceName.map { "\(base)/\($0)" } ?? base
    }

    /// The URL path for a collection (`name` nil) or one object. Cluster-scoped resources ignore `namespace`;
    /// a nil namespace on a namespaced collection means all namespaces.
    public func path(namespace: String?, name: String?) -> String {
        var p = groupVersionPath
        if namespaced, let namespace { p += "/namespaces/\(PathEscape.segment(namespace))" }
        p += "/\(plural)"
        if let name {
            p += "/\(PathEscape.segment(name))"
            if let subresourceName { p += "/\(subresourceName)" }
        }
        return p
    }
}

extension KubeResource where Object == Pod {
    public static var pods: KubeResource<Pod> { .init(group: "", version: "v1", plural: "pods", namespaced: true) }
    public static var podStatus: KubeResource<Pod> { pods.subresource("status") }
}

extension KubeResource where Object == Node {
    public static var nodes: KubeResource<Node> { .init(group: "", version: "v1", plural: "nodes", namespaced: false) }
    public static var nodeStatus: KubeResource<Node> { nodes.subresource("status") }
}

extension KubeResource where Object == ConfigMap {
    public static var configMaps: KubeResource<ConfigMap> { .init(group: "", version: "v1", plural: "configmaps", namespaced: true) }
}

extension KubeResource where Object == Secret {
    public static var secrets: KubeResource<Secret> { .init(group: "", version: "v1", plural: "secrets", namespaced: true) }
}

extension KubeResource where Object == Service {
    public static var services: KubeResource<Service> { .init(group: "", version: "v1", plural: "services", namespaced: true) }
}

extension KubeResource where Object == Event {
    public static var events: KubeResource<Event> { .init(group: "", version: "v1", plural: "events", namespaced: true) }
}

extension KubeResource where Object == Lease {
    public static var leases: KubeResource<Lease> {
        .init(group: "coordination.k8s.io", version: "v1", plural: "leases", namespaced: true)
    }
}

extension KubeResource where Object == CertificateSigningRequest {
    public static var certificateSigningRequests: KubeResource<CertificateSigningRequest> {
        .init(group: "certificates.k8s.io", version: "v1", plural: "certificatesigningrequests", namespaced: false)
    }
    public static var certificateSigningRequestApproval: KubeResource<CertificateSigningRequest> {
        certificateSigningRequests.subresource("approval")
    }
}

extension KubeResource where Object == TokenRequest {
    /// POST serviceaccounts/NAME/token with a TokenRequest; the answer carries status.token.
    public static var serviceAccountToken: KubeResource<TokenRequest> {
        .init(group: "", version: "v1", plural: "serviceaccounts", namespaced: true, subresource: "token")
    }
}

extension KubeResource where Object == JSONObject {
    /// Any resource, read and written as raw JSON (fields edged does not model are kept).
    public static func raw(group: String, version: String, plural: String, namespaced: Bool) -> KubeResource<JSONObject> {
        .init(group: group, version: version, plural: plural, namespaced: namespaced)
    }
}

/// Percent-escaping for path segments and query values.
enum PathEscape {
    static func isUnreserved(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
            || b == UInt8(ascii: "-") || b == UInt8(ascii: ".") || b == UInt8(ascii: "_") || b == UInt8(ascii: "~")
    }

    static func escape(_ s: String, keep: (UInt8) -> Bool) -> String {
        var out = ""
        let hex = Array("0123456789ABCDEF".utf8)
        for b in s.utf8 {
            if keep(b) {
                out.unicodeScalars.append(Unicode.Scalar(b))
            } else {
                out += "%"
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(b >> 4)]))
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(b & 0x0F)]))
            }
        }
        return out
    }

    static func segment(_ s: String) -> String {
        escape(s) { isUnreserved($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: "@") }
    }

    static func query(_ s: String) -> String {
        escape(s) { isUnreserved($0) }
    }
}
