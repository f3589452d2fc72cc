// coordination.k8s.io/v1 Lease: the node heartbeat in kube-node-lease.

import EdgedCore

public struct Lease: KubeObject, Equatable {
    public var apiVersion: String?
    public var kind: String?
    public var metadata: ObjectMeta
    public var spec: LeaseSpec?

    public init(metadata: ObjectMeta, spec: LeaseSpec? = nil) {
        self.apiVersion = "coordination.k8s.io/v1"
        self.kind = "Lease"
        self.metadata = metadata
        self.spec = spec
    }
}

public struct LeaseSpec: Codable, Sendable, Equatable {
    public var holderIdentity: String?
    public var leaseDurationSeconds: Int32?
    /// MicroTime text (`KubeTime.micro`).
    public var acquireTime: String?
    /// MicroTime text (`KubeTime.micro`).
    public var renewTime: String?
    public var leaseTransitions: Int32?

    public init(holderIdentity: String? = nil, leaseDurationSeconds: Int32? = nil, acquireTime: String? = nil,
                renewTime: String? = nil, leaseTransitions: Int32? = nil) {
        self.holderIdentity = holderIdentity
        self.leaseDurationSeconds = leaseDurationSeconds
        self.acquireTime = acquireTime
        self.renewTime = renewTime
        self.leaseTransitions = leaseTransitions
    }
}

/// Time formats of the Kubernetes API.
public enum KubeTime {
    /// metav1.Time: "2026-01-02T15:04:05Z".
    public static func time(_ t: Timestamp) -> String { t.rfc3339 }

    /// metav1.MicroTime: "2026-01-02T15:04:05.123456Z" (exactly six fraction digits, as the API server parses it).
    public static func micro(_ t: Timestamp) -> String {
        let nano = t.rfc3339Nano  // ...:05.123456789Z
        return String(nano.dropLast(4)) + "Z"
    }
}
