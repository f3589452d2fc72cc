// Computes a pod's phase and the kubectl-style status from its containers, following kubelet's rules.

import EdgedControl
import EdgedCore
import EdgedRuntime

enum PodStatusBuilder {
    static func summary(_ input: PodSummaryInput) -> PodSummary {
        let pod = input.pod
        let containers = input.containers.map(containerSummary)
        let regular = containers.filter { !$0.isInit }
        let phase = phaseOf(input, regular: regular)
        let restarts = containers.reduce(0) { $0 + $1.restarts }
        let ready = phase == .running && !regular.isEmpty && regular.allSatisfy { $0.ready && $0.state == "running" }
        return PodSummary(namespace: pod.namespace, name: pod.name, uid: pod.metadata.uid ?? "", phase: phase.rawValue,
                          ready: ready, restarts: restarts, reason: displayReason(input, phase: phase, containers: containers),
                          message: input.podMessage, source: input.source, podIP: input.podIPs.first,
                          podIPs: input.podIPs.isEmpty ? nil : input.podIPs, containers: containers)
    }

    /// kubelet's getPhase: Pending until every container started once; Running while any runs or will restart;
    /// Succeeded/Failed once all terminated and none will restart.
    static func phaseOf(_ input: PodSummaryInput, regular: [ContainerSummary]) -> PodPhase {
        if input.podFailed { return .failed }
        if !input.initDone { return .pending }
        let policy = input.pod.spec.restartPolicy ?? .always
        var running = 0, waiting = 0, succeeded = 0, failed = 0
        for c in regular {
            switch c.state {
            case "running": running += 1
            case "terminated": if c.exitCode == 0 { succeeded += 1 } else { failed += 1 }
            default:
                // Waiting after a run (back-off) counts as failed, like kubelet; never started counts as waiting.
                if c.restarts > 0 || c.exitCode != nil { failed += 1 } else { waiting += 1 }
            }
        }
        if waiting > 0 { return .pending }
        if running > 0 { return .running }
        switch policy {
        case .always: return .running
        case .onFailure: return failed > 0 ? .running : .succeeded
        case .never: return failed > 0 ? .failed : .succeeded
        }
    }

    static func containerSummary(_ v: ContainerView) -> ContainerSummary {
        var s = ContainerSummary(name: v.name, state: "waiting", restarts: v.restartCount, ready: v.ready, image: v.image,
                                 containerID: v.current.map { "edged://\($0.spec.id)" }, isInit: v.isInit)
        if let w = v.waiting, !(v.current.map { if case .running = $0.status { return true } else { return false } } ?? false) {
            s.state = "waiting"
            s.reason = w.reason
            s.message = w.message
            if let last = lastTerminated(v) { s.exitCode = last.exitCode }
            return s
        }
        guard let cur = v.current else {
            s.reason = v.isInit ? "PodInitializing" : "ContainerCreating"
            return s
        }
        switch cur.status {
        case .running(let pid, let startedAt):
            s.state = "running"
            s.pid = pid
            s.startedAt = startedAt.rfc3339
        case .exited(let code, _, let oom, _, _, let message):
            s.state = "terminated"
            s.exitCode = code
            s.reason = ContainerInfo.exitReason(code: code, oomKilled: oom)
            s.message = message
            s.ready = false
        }
        return s
    }

    static func lastTerminated(_ v: ContainerView) -> ContainerState.Terminated? {
        if let f = v.lastStartFailure { return f }
        return v.current?.terminatedState
    }

    /// What `kubectl get pods` shows in STATUS when it is not just the phase.
    static func displayReason(_ input: PodSummaryInput, phase: PodPhase, containers: [ContainerSummary]) -> String? {
        if input.terminating { return "Terminating" }
        if let reason = input.podReason { return reason }   // Evicted, as kubectl's STATUS column shows it
        let inits = containers.filter(\.isInit)
        if !input.initDone && !inits.isEmpty {
            if let w = inits.first(where: { $0.state == "waiting" && ($0.reason ?? "") != "PodInitializing" }), let r = w.reason { return "Init:\(r)" }
            if let t = inits.first(where: { $0.state == "terminated" && $0.exitCode != 0 }) { return "Init:\(t.reason ?? "Error")" }
            let done = inits.filter { $0.state == "terminated" && $0.exitCode == 0 }.count
            return "Init:\(done)/\(inits.count)"
        }
        for c in containers where !c.isInit {
            if c.state == "waiting", let r = c.reason { return r }
            if c.state == "terminated", let r = c.reason { return r }
        }
        return nil
    }
}
