// kubelet's hard eviction for memory: when the node's available memory falls below the threshold, one pod at a time
// is evicted to give memory back, BestEffort pods first.

import EdgedCore
import EdgedRuntime
import Logging

/// Thresholds below which pods are evicted (kubelet's --eviction-hard). Only memory.available is supported.
public struct EvictionThresholds: Sendable, Equatable {
    /// Evict when MemAvailable falls below this many bytes; nil: never.
    public var memoryAvailableBytes: Int64?
    /// The threshold as configured ("100Mi", "5%"), for messages.
    public var memoryAvailableText: String

    public init(memoryAvailableBytes: Int64?, memoryAvailableText: String) {
        self.memoryAvailableBytes = memoryAvailableBytes
        self.memoryAvailableText = memoryAvailableText
    }

    /// Parses kubelet's evictionHard map: `{"memory.available": "100Mi"}` or a percentage of `memoryTotal`.
    public static func parse(_ settings: [String: String], memoryTotal: Int64) throws(EdgedError) -> EvictionThresholds {
        var out = EvictionThresholds(memoryAvailableBytes: nil, memoryAvailableText: "")
        for (signal, value) in settings {
            guard signal == "memory.available" else {
                throw EdgedError(.invalidConfig, "evictionHard: signal \"\(signal)\" is not supported; edged evicts on memory.available only")
            }
            let text = value.trimmingSpaces()
            if text.hasSuffix("%") {
                guard let percent = Double(text.dropLast()), percent >= 0, percent <= 100 else {
                    throw EdgedError(.invalidConfig, "evictionHard: memory.available \"\(value)\" is not a percentage from 0% to 100%")
                }
                out.memoryAvailableBytes = Int64(Double(memoryTotal) * percent / 100)
            } else {
                do { out.memoryAvailableBytes = try Quantity(text).value() } catch {
                    throw EdgedError(.invalidConfig, "evictionHard: memory.available \"\(value)\": \(error.message)")
                }
            }
            out.memoryAvailableText = text
        }
        return out
    }
}

/// A running pod as eviction sees it.
struct EvictionCandidate: Sendable {
    let uid: String
    let pod: Pod
    /// 0 BestEffort, 1 Burstable, 2 Guaranteed: the lower class goes first.
    let qosRank: Int
    /// Working set of its running containers, bytes.
    let memoryBytes: UInt64
}

/// Checks the node's available memory every `interval` and evicts one pod when it is below the threshold, then
/// waits `cooldown` (for the memory to come back) before it checks again.
///
/// Like kubelet: static pods are critical and never evicted (only pods from the API server are); the victim is the
/// pod in the lowest QoS class (BestEffort, then Burstable, then Guaranteed) using the most memory; its containers
/// are killed without a grace period and it is reported Failed with reason Evicted, and is not restarted.
/// Simplified from kubelet: usage above requests and pod priority are not looked at.
public actor EvictionManager {
    private let thresholds: EvictionThresholds
    private let pods: PodManager
    private let runtime: ContainerRuntime
    private let logger: Logger
    private let interval: Duration
    private let cooldown: Duration

    public init(thresholds: EvictionThresholds, pods: PodManager, runtime: ContainerRuntime, logger: Logger,
                interval: Duration = .seconds(2), cooldown: Duration = .seconds(10)) {
        self.thresholds = thresholds
        self.pods = pods
        self.runtime = runtime
        self.logger = logger
        self.interval = interval
        self.cooldown = cooldown
    }

    public func run() async {
        guard let threshold = thresholds.memoryAvailableBytes else { return }
        while !Task.isCancelled {
            // Only MemAvailable is needed: /proc/meminfo, not the node's whole ResourceStats (CPU from /proc/stat too).
            if let available = Files.meminfo()["MemAvailable"], available < threshold {
                if await evictOne(available: available) {
                    try? await Task.sleep(for: cooldown)
                    continue
                }
            }
            try? await Task.sleep(for: interval)
        }
    }

    /// Evicts the pod that should go first; false when there is none to evict.
    func evictOne(available: Int64) async -> Bool {
        var candidates: [EvictionCandidate] = []
        for c in await pods.evictionCandidates() {
            var bytes: UInt64 = 0
            for id in c.containerIDs { bytes += await runtime.stats(id: id)?.memoryWorkingSetBytes ?? 0 }
            candidates.append(EvictionCandidate(uid: c.uid, pod: c.pod, qosRank: Self.qosRank(c.pod), memoryBytes: bytes))
        }
        guard let victim = Self.choose(candidates) else {
            logger.warning("memory available \(Self.kibibytes(available)) is below the eviction threshold \(thresholds.memoryAvailableText), but no pod can be evicted (static pods are never evicted)")
            return false
        }
        let message = "The node was low on resource: memory. Threshold quantity: \(thresholds.memoryAvailableText), available: \(Self.kibibytes(available)). The pod was using \(Self.kibibytes(Int64(victim.memoryBytes)))."
        logger.warning("evicting pod \(victim.pod.fullName) (\(APIPodStatus.qosClass(victim.pod)), \(Self.kibibytes(Int64(victim.memoryBytes))) of memory): memory available \(Self.kibibytes(available)) < \(thresholds.memoryAvailableText)")
        await pods.evict(uid: victim.uid, message: message)
        return true
    }

    /// Bytes the way kubelet's eviction messages print them: "23456Ki".
    nonisolated static func kibibytes(_ bytes: Int64) -> String { "\(bytes / 1024)Ki" }

    static func qosRank(_ pod: Pod) -> Int {
        switch APIPodStatus.qosClass(pod) {
        case "BestEffort": return 0
        case "Burstable": return 1
        default: return 2
        }
    }

    /// The lowest QoS class first, the biggest memory user within it.
    static func choose(_ candidates: [EvictionCandidate]) -> EvictionCandidate? {
        candidates.min { a, b in
            a.qosRank != b.qosRank ? a.qosRank < b.qosRank : a.memoryBytes > b.memoryBytes
        }
    }
}
