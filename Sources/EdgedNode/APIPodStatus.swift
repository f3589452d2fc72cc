// The core/v1 PodStatus kubelet writes for a pod (what `kubectl get pod -o wide` and `kubectl describe pod` show),
// built from the pod worker's view of its containers.

import EdgedCore
import EdgedRuntime

public enum APIPodStatus {
    /// `previous`: the status last written, so condition transition times only move when a condition changes.
    static func build(_ input: PodSummaryInput, hostIPs: [String], previous: PodStatus?) -> PodStatus {
        let pod = input.pod
        let regularViews = input.containers.filter { !$0.isInit }
        let summaries = input.containers.map(PodStatusBuilder.containerSummary)
        let phase = PodStatusBuilder.phaseOf(input, regular: summaries.filter { !$0.isInit })
        var st = PodStatus(phase: phase)
        let now = Timestamp.now().rfc3339
        let containersReady = !regularViews.isEmpty && regularViews.allSatisfy { v in
            v.ready && v.current?.status.isRunning == true
        }
        func condition(_ type: String, _ ok: Bool, reason: String? = nil) -> PodCondition {
            let before = previous?.conditions?.first { $0.type == type }
            let status = ok ? "True" : "False"
            let time = before?.status == status ? (before?.lastTransitionTime ?? now) : now
            return PodCondition(type: type, status: status, lastTransitionTime: time, reason: ok ? nil : reason)
        }
        let terminal = phase == .succeeded || phase == .failed
        let notReady = terminal ? "PodCompleted" : "ContainersNotReady"
        st.conditions = [
            condition("PodReadyToStartContainers", input.sandboxReady),
            condition("Initialized", input.initDone, reason: terminal ? "PodCompleted" : "ContainersNotInitialized"),
            condition("Ready", containersReady, reason: notReady),
            condition("ContainersReady", containersReady, reason: notReady),
            condition("PodScheduled", true),
        ]
        if input.podFailed {
            st.message = input.podMessage
            st.reason = input.podReason
        }
        if pod.spec.hostNetwork == true {
            st.podIP = hostIPs.first
            st.podIPs = hostIPs.isEmpty ? nil : hostIPs.map(PodIP.init)
        } else {
            st.podIP = input.podIPs.first
            st.podIPs = input.podIPs.isEmpty ? nil : input.podIPs.map(PodIP.init)
        }
        st.hostIP = hostIPs.first
        st.hostIPs = hostIPs.isEmpty ? nil : hostIPs.map(PodIP.init)
        st.startTime = input.startTime?.rfc3339
        let inits = input.containers.filter(\.isInit).map(containerStatus)
        st.initContainerStatuses = inits.isEmpty ? nil : inits
        st.containerStatuses = regularViews.map(containerStatus)
        st.qosClass = pod.status?.qosClass ?? qosClass(pod)
        return st
    }

    static func containerStatus(_ v: ContainerView) -> EdgedCore.ContainerStatus {
        var state = ContainerState(waiting: .init(reason: v.isInit ? "PodInitializing" : "ContainerCreating"))
        var running = false
        if let cur = v.current {
            if case .running(_, let startedAt) = cur.status {
                state = ContainerState(running: .init(startedAt: startedAt.rfc3339))
                running = true
            } else {
                state = ContainerState(terminated: cur.terminatedState)
            }
        }
        if let w = v.waiting, !running {
            state = ContainerState(waiting: .init(reason: w.reason, message: w.message))
        }
        var last: ContainerState?
        if let f = v.lastStartFailure, !running {
            last = ContainerState(terminated: f)
        } else if let cur = v.current, !running, state.waiting != nil, let exited = cur.terminatedState {
            // Waiting to restart: the exited instance is the last state.
            last = ContainerState(terminated: exited)
        } else if let exited = v.previous?.terminatedState {
            last = ContainerState(terminated: exited)
        }
        let imageID = v.imageID.isEmpty ? "" : "\(repository(of: v.image))@\(v.imageID)"
        return EdgedCore.ContainerStatus(name: v.name, state: state, lastState: last ?? ContainerState(), ready: v.ready && running,
                               started: running ? v.started : false, restartCount: Int32(v.restartCount), image: v.image,
                               imageID: imageID, containerID: v.current.map { "edged://\($0.spec.id)" })
    }

    /// "registry/repo" of an image reference, without tag or digest (kubelet's imageID is repo@digest).
    public static func repository(of ref: String) -> String {
        var r = ref
        if let at = r.firstIndex(of: "@") { r = String(r[..<at]) }
        if let colon = r.lastIndex(of: ":"), !r[colon...].contains("/") { r = String(r[..<colon]) }
        return r
    }

    /// The pod's QoS class as kube-apiserver computes it at creation (pkg/apis/core/helper/qos ComputePodQOS): only
    /// cpu and memory count (a pod with nothing but `nvidia.com/gpu` limits is BestEffort), zero quantities are
    /// ignored, requests and limits are summed over containers and init containers; Guaranteed when every
    /// container has cpu and memory limits and the summed requests equal the summed limits for the same resources.
    /// The API server sets status.qosClass once and refuses any other value later (the field is immutable), so the
    /// status writer sends the API's own value when it has one; this is for pods the API has not classed (static).
    public static func qosClass(_ pod: Pod) -> String {
        let all = pod.spec.containers + (pod.spec.initContainers ?? [])
        var requests: [String: Int64] = [:]
        var limits: [String: Int64] = [:]
        var guaranteed = true
        for c in all {
            // API defaulting (SetDefaults_Pod, also applied to static pods) makes a missing request equal its limit.
            var containerRequests = c.resources?.requests ?? [:]
            for (name, q) in c.resources?.limits ?? [:] where containerRequests[name] == nil { containerRequests[name] = q }
            for (name, q) in containerRequests where name == "cpu" || name == "memory" {
                let v = (try? q.milliValue()) ?? 0
                if v > 0 { requests[name, default: 0] += v }
            }
            var found: Set<String> = []
            for (name, q) in c.resources?.limits ?? [:] where name == "cpu" || name == "memory" {
                let v = (try? q.milliValue()) ?? 0
                if v > 0 {
                    found.insert(name)
                    limits[name, default: 0] += v
                }
            }
            if found.count < 2 { guaranteed = false }
        }
        if requests.isEmpty && limits.isEmpty { return "BestEffort" }
        if guaranteed {
            for (name, r) in requests where limits[name] != r { guaranteed = false }
        }
        return guaranteed && requests.count == limits.count ? "Guaranteed" : "Burstable"
    }
}

extension APIPodStatus {
    /// `status` with the fields a 422 answer named (`status.qosClass`, `status.containerStatuses[0].state`, ...)
    /// put back to what the API holds (`api`), so the rest of the status can still be written. Fields outside
    /// status, or that name nothing this writer sends, are left alone.
    public static func keepingAPIValues(_ status: PodStatus, api: PodStatus?, fields: [String]) -> PodStatus {
        var out = status
        for field in fields {
            guard field.hasPrefix("status.") else { continue }
            let key = field.dropFirst("status.".count).prefix { $0 != "." && $0 != "[" }
            switch key {
            case "phase": out.phase = api?.phase
            case "conditions": out.conditions = api?.conditions
            case "message": out.message = api?.message
            case "reason": out.reason = api?.reason
            case "hostIP": out.hostIP = api?.hostIP
            case "hostIPs": out.hostIPs = api?.hostIPs
            case "podIP": out.podIP = api?.podIP
            case "podIPs": out.podIPs = api?.podIPs
            case "startTime": out.startTime = api?.startTime
            case "initContainerStatuses": out.initContainerStatuses = api?.initContainerStatuses
            case "containerStatuses": out.containerStatuses = api?.containerStatuses
            case "qosClass": out.qosClass = api?.qosClass
            default: continue
            }
        }
        return out
    }
}

extension PodManager {
    /// The API status of every running pod of `origin` (API-bound pods, or static pods for their mirror pods), by UID.
    public func apiStatuses(hostIPs: [String], previous: [String: PodStatus], origin: Origin = .api) async -> [String: PodStatus] {
        var out: [String: PodStatus] = [:]
        for (uid, input) in await podInputs(origin) {
            out[uid] = APIPodStatus.build(input, hostIPs: hostIPs, previous: previous[uid])
        }
        return out
    }
}
