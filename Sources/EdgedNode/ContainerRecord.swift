// What a pod worker knows about one of its containers.

import EdgedCore
import EdgedImages
import EdgedRuntime

/// Kubelet's container restart back-off: the first restart is immediate, then 10 s doubling to 5 min;
/// a container that ran for 10 minutes resets it.
struct Backoff: Sendable {
    static let initial: Duration = .seconds(10)
    static let maximum: Duration = .seconds(300)

    private(set) var delay: Duration?
    private(set) var nextStartAt: ContinuousClock.Instant?
    private(set) var failures = 0

    /// Records an exit (or failed start) now and computes when the next start may happen.
    mutating func exited(ranForSeconds: Double) {
        if ranForSeconds >= 600 { delay = nil }
        failures += 1
        if let d = delay {
            nextStartAt = .now + d
            delay = min(d * 2, Self.maximum)
        } else {
            nextStartAt = nil
            delay = Self.initial
        }
    }

    /// For image pulls: returns the delay before the next try and doubles it.
    mutating func next() -> Duration {
        failures += 1
        let d = delay ?? Self.initial
        delay = min(d * 2, Self.maximum)
        return d
    }

    var currentDelayText: String {
        guard let at = nextStartAt else { return "0s" }
        let remaining = at - .now
        let total = remaining.components.seconds + (remaining.components.attoseconds > 0 ? 1 : 0)
        if total >= 60 { return "\(total / 60)m\(total % 60)s" }
        return "\(max(total, 0))s"
    }
}

struct ContainerRecord: Sendable {
    var container: Container
    let isInit: Bool
    let order: Int
    var image: StoredImage?
    var imagePulledOnce = false
    var imageBackoff = Backoff()
    var imageRetryAt: ContinuousClock.Instant?
    var current: ContainerInfo?
    var previous: ContainerInfo?
    var restartCount = 0
    var exitHandled = false
    var succeeded = false
    var crashBackoff = Backoff()
    var waiting: (reason: String, message: String)?
    var lastStartFailure: ContainerState.Terminated?
    var started = false
    var ready = false
    /// The spec changed in place (a new image): restart this container with the new spec at the next sync.
    var specChanged = false
    /// When the last BackOff event was sent (one per back-off period, not one per sync).
    var backoffEventSent = false

    init(container: Container, isInit: Bool, order: Int) {
        self.container = container
        self.isInit = isInit
        self.order = order
    }

    var view: ContainerView {
        ContainerView(name: container.name, image: container.image ?? "", imageID: image?.manifestDigest ?? "",
                      isInit: isInit, restartCount: restartCount, current: current, previous: previous,
                      waiting: waiting, lastStartFailure: lastStartFailure, ready: ready, started: started)
    }
}

/// A snapshot of one container for status reporting.
struct ContainerView: Sendable {
    var name: String
    var image: String
    var imageID: String
    var isInit: Bool
    var restartCount: Int
    var current: ContainerInfo?
    var previous: ContainerInfo?
    var waiting: (reason: String, message: String)?
    var lastStartFailure: ContainerState.Terminated?
    var ready: Bool
    var started: Bool
}

/// A snapshot of one pod for status reporting.
struct PodSummaryInput: Sendable {
    var pod: Pod
    var source: String
    var initDone: Bool
    var podFailed: Bool
    var podMessage: String?
    /// status.reason of a failed pod (Evicted), nil otherwise.
    var podReason: String? = nil
    var terminating: Bool
    var containers: [ContainerView]
    var startTime: Timestamp?
    /// The pod's IPs (CNI result; empty for hostNetwork pods, which use the host's).
    var podIPs: [String] = []
    /// The sandbox (namespaces, network) exists.
    var sandboxReady = false
}

extension ContainerInfo {
    /// kubelet's reason for an exit: OOMKilled, Completed (exit 0) or Error.
    static func exitReason(code: Int32, oomKilled: Bool) -> String {
        oomKilled ? "OOMKilled" : (code == 0 ? "Completed" : "Error")
    }

    /// This instance as a core/v1 terminated state, or nil while it runs.
    var terminatedState: ContainerState.Terminated? {
        guard case .exited(let code, let signal, let oom, let started, let finished, let message) = status else { return nil }
        return ContainerState.Terminated(exitCode: code, signal: signal, reason: Self.exitReason(code: code, oomKilled: oom),
                                         message: message, startedAt: started.rfc3339, finishedAt: finished.rfc3339,
                                         containerID: "edged://\(spec.id)")
    }

    /// The container's main process while it runs.
    var pid: Int32? {
        if case .running(let pid, _) = status { return pid }
        return nil
    }

    var startedAtTimestamp: Timestamp {
        switch status {
        case .running(_, let t): return t
        case .exited(_, _, _, let t, _, _): return t
        }
    }
}
