// Pod status as kubelet reports it (core/v1 PodStatus), written by the status manager.

public struct PodStatus: Codable, Sendable, Equatable {
    public var phase: PodPhase?
    public var conditions: [PodCondition]?
    public var message: String?
    public var reason: String?
    public var hostIP: String?
    public var podIP: String?
    public var podIPs: [PodIP]?
    public var hostIPs: [PodIP]?
    public var startTime: String?
    public var initContainerStatuses: [ContainerStatus]?
    public var containerStatuses: [ContainerStatus]?
    public var qosClass: String?
    public init(phase: PodPhase? = nil) { self.phase = phase }
}

/// An entry of status.podIPs / status.hostIPs.
public struct PodIP: Codable, Sendable, Equatable {
    public var ip: String
    public init(ip: String) { self.ip = ip }
}

public enum PodPhase: String, Codable, Sendable {
    case pending = "Pending"
    case running = "Running"
    case succeeded = "Succeeded"
    case failed = "Failed"
    case unknown = "Unknown"
}

public struct PodCondition: Codable, Sendable, Equatable {
    public var type: String
    public var status: String
    public var lastTransitionTime: String?
    public var reason: String?
    public var message: String?
    public init(type: String, status: String, lastTransitionTime: String? = nil, reason: String? = nil, message: String? = nil) {
        self.type = type
        self.status = status
        self.lastTransitionTime = lastTransitionTime
        self.reason = reason
        self.message = message
    }
}

public struct ContainerStatus: Codable, Sendable, Equatable {
    public var name: String
    public var state: ContainerState
    public var lastState: ContainerState?
    public var ready: Bool
    public var started: Bool?
    public var restartCount: Int32
    public var image: String
    public var imageID: String
    public var containerID: String?
    public init(name: String, state: ContainerState, lastState: ContainerState? = nil, ready: Bool = false,
                started: Bool? = nil, restartCount: Int32 = 0, image: String, imageID: String = "", containerID: String? = nil) {
        self.name = name
        self.state = state
        self.lastState = lastState
        self.ready = ready
        self.started = started
        self.restartCount = restartCount
        self.image = image
        self.imageID = imageID
        self.containerID = containerID
    }
}

/// Exactly one of waiting/running/terminated is set, like the API.
public struct ContainerState: Codable, Sendable, Equatable {
    public var waiting: Waiting?
    public var running: Running?
    public var terminated: Terminated?

    public init(waiting: Waiting? = nil, running: Running? = nil, terminated: Terminated? = nil) {
        self.waiting = waiting
        self.running = running
        self.terminated = terminated
    }

    public struct Waiting: Codable, Sendable, Equatable {
        public var reason: String?
        public var message: String?
        public init(reason: String?, message: String? = nil) { self.reason = reason; self.message = message }
    }

    public struct Running: Codable, Sendable, Equatable {
        public var startedAt: String?
        public init(startedAt: String?) { self.startedAt = startedAt }
    }

    public struct Terminated: Codable, Sendable, Equatable {
        public var exitCode: Int32
        public var signal: Int32?
        public var reason: String?
        public var message: String?
        public var startedAt: String?
        public var finishedAt: String?
        public var containerID: String?
        public init(exitCode: Int32, signal: Int32? = nil, reason: String? = nil, message: String? = nil,
                    startedAt: String? = nil, finishedAt: String? = nil, containerID: String? = nil) {
            self.exitCode = exitCode
            self.signal = signal
            self.reason = reason
            self.message = message
            self.startedAt = startedAt
            self.finishedAt = finishedAt
            self.containerID = containerID
        }
    }

    /// "Waiting", "Running" or "Terminated", as `kubectl describe` prints it.
    public var summary: String {
        if running != nil { return "Running" }
        if terminated != nil { return "Terminated" }
        return "Waiting"
    }
}
