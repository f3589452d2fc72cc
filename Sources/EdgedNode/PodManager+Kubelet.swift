// What the kubelet API (/pods, exec, port-forward, stats) reads of the pods being run.

import EdgedCore
import EdgedRuntime

/// One pod as the kubelet API sees it: the pod with its current v1 status, and its containers' runtime instances.
public struct KubeletPodView: Sendable {
    public struct Container: Sendable {
        public var name: String
        public var isInit: Bool
        /// The current instance (running or exited), nil before the first start.
        public var current: ContainerInfo?
    }

    /// The pod with `status` filled in as kubelet would report it.
    public var pod: Pod
    public var uid: String
    public var origin: PodManager.Origin
    public var containers: [Container]
}

extension PodManager {
    /// Every pod this node runs (static and API-bound), with its status, sorted by namespace/name.
    public func kubeletPods(hostIPs: [String]) async -> [KubeletPodView] {
        var out: [KubeletPodView] = []
        for origin in [Origin.file, .api] {
            for (uid, input) in await podInputs(origin) {
                var pod = input.pod
                pod.status = APIPodStatus.build(input, hostIPs: hostIPs, previous: nil)
                let containers = input.containers.map { KubeletPodView.Container(name: $0.name, isInit: $0.isInit, current: $0.current) }
                out.append(KubeletPodView(pod: pod, uid: uid, origin: origin, containers: containers))
            }
        }
        return out.sorted { ($0.pod.namespace, $0.pod.name) < ($1.pod.namespace, $1.pod.name) }
    }
}
