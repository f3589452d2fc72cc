// The node's heartbeat: kubelet renews kube-node-lease/<node> every 10 s. The edge hub renews it as its cloud
// health probe (YurtHub does the same); without a hub the node agent renews it itself.

import EdgedCore

/// Renews one node's Lease: creates it when missing (owned by the Node when its UID is known), otherwise PUTs the
/// last copy read with a new renewTime (kubelet's update with the last resourceVersion; a conflict re-reads it).
/// Not thread-safe: one renewer per loop.
public struct NodeLeaseRenewer: Sendable {
    public let nodeName: String
    public var leaseDurationSeconds: Int32
    private var cached: JSONObject?

    public init(nodeName: String, leaseDurationSeconds: Int32 = 40) {
        self.nodeName = nodeName
        self.leaseDurationSeconds = leaseDurationSeconds
    }

    /// One renewal. `nodeUID` makes a newly created Lease owned by the Node (garbage-collected with it).
    /// On failure the cached copy is dropped, so the next call re-reads the Lease.
    public mutating func renew(_ client: KubeClient, nodeUID: String? = nil) async throws {
        do {
            cached = try await renewOnce(client, nodeUID: nodeUID)
        } catch {
            cached = nil
            throw error
        }
    }

    private func renewOnce(_ client: KubeClient, nodeUID: String?) async throws -> JSONObject {
        let now = KubeTime.micro(.now())
        var raw: JSONObject
        if let cached {
            raw = cached
        } else {
            do {
                raw = try await client.getRaw(.leases, namespace: "kube-node-lease", name: nodeName)
            } catch {
                guard let e = error as? KubeError, e.isNotFound else { throw error }
                var meta = ObjectMeta(name: nodeName, namespace: "kube-node-lease")
                if let uid = nodeUID {
                    meta.ownerReferences = [OwnerReference(apiVersion: "v1", kind: "Node", name: nodeName, uid: uid)]
                }
                let lease = Lease(metadata: meta, spec: LeaseSpec(holderIdentity: nodeName,
                                                                  leaseDurationSeconds: leaseDurationSeconds,
                                                                  renewTime: now))
                _ = try await client.create(.leases, namespace: "kube-node-lease", lease)
                return try await client.getRaw(.leases, namespace: "kube-node-lease", name: nodeName)
            }
        }
        raw.set(["spec", "holderIdentity"], to: .string(nodeName))
        raw.set(["spec", "leaseDurationSeconds"], to: .number(String(leaseDurationSeconds)))
        raw.set(["spec", "renewTime"], to: .string(now))
        return try await client.updateRaw(.leases, namespace: "kube-node-lease", raw)
    }
}
