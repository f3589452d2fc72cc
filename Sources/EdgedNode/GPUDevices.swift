// NVIDIA GPUs as the extended resource nvidia.com/gpu, like the NVIDIA device plugin: capacity is the number of
// /dev/nvidiaN nodes, and containers that ask for N GPUs get N devices no other pod holds. Allocations are kept
// per pod in <stateDir>/gpu.json (replaced atomically), so an edged restart never hands a device out twice.

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import EdgedCore
import Glibc

/// The devices handed to one container.
public struct GPUAllocation: Sendable, Equatable {
    /// GPU indices (N of /dev/nvidiaN), lowest first.
    public var indices: [Int]
    /// What the host has: device paths, control nodes, driver files.
    public var inventory: GPUInventory

    /// NVIDIA_VISIBLE_DEVICES as the container toolkit reads it: "0,1".
    public var visibleDevices: String { indices.map(String.init).joined(separator: ",") }
}

/// Hands out the node's GPUs to pods. Every method that changes an allocation writes the state file before it
/// returns.
public actor GPUDevices {
    /// The Kubernetes extended resource name.
    public static let resourceName = "nvidia.com/gpu"

    /// One pod's devices, by container.
    struct PodEntry: Codable, Equatable {
        /// "namespace/name", for messages.
        var pod: String
        var containers: [String: ContainerEntry]

        var indices: Set<Int> { Set(containers.values.flatMap(\.indices)) }
    }

    struct ContainerEntry: Codable, Equatable {
        var indices: [Int]
        /// Init containers run one at a time before the app containers, so their devices can be reused.
        var isInit: Bool
    }

    struct StateFile: Codable {
        var version: Int
        var pods: [String: PodEntry]
    }

    /// The device root ("/" on a real host).
    public nonisolated let root: String
    /// The allocation file, `<stateDir>/gpu.json`.
    public nonisolated let stateFile: String
    private var pods: [String: PodEntry] = [:]

    /// Loads the allocations of a previous edged. Throws `.io` when the state file exists but cannot be read:
    /// guessing would risk giving a device to two pods.
    public init(root: String = "/", stateDir: String) throws(EdgedError) {
        self.root = root
        stateFile = "\(stateDir)/gpu.json"
        guard let bytes = Files.read(stateFile) else {
            guard errno == ENOENT else {
                throw EdgedError(.io, "cannot read the GPU allocations \(stateFile): \(String(cString: strerror(errno)))")
            }
            return
        }
        do {
            pods = try JSONDecoder().decode(StateFile.self, from: Data(bytes)).pods
        } catch {
            throw EdgedError(.io, "the GPU allocations \(stateFile) cannot be parsed (\(error)): remove it only once no pod uses a GPU")
        }
    }

    /// What the node advertises: ["nvidia.com/gpu": "N"] with N device nodes, or [:] without any.
    public nonisolated func capacity() -> [String: Quantity] {
        let n = GPUInventory.scanDevices(root: root).count
        return n == 0 ? [:] : [GPUDevices.resourceName: Quantity(String(n))]
    }

    /// A fresh scan of the device root.
    public nonisolated func inventory() -> GPUInventory { GPUInventory.scan(root: root) }

    /// Pod UID → the GPU indices it holds.
    public func allocations() -> [String: [Int]] { pods.mapValues { $0.indices.sorted() } }

    /// Gives `count` GPUs to a container of a pod, or the ones it already has (a restarted container keeps its
    /// devices). Devices of the pod's init containers are reused first, then free ones, lowest index first.
    /// Throws `.notFound` naming what holds the devices when too few are free or when a device the container had
    /// is gone, `.io` when the state file cannot be written (then nothing is allocated).
    public func allocate(podUID: String, pod: String, container: String, isInit: Bool,
                         count: Int) throws(EdgedError) -> GPUAllocation {
        let inventory = GPUInventory.scan(root: root)
        if let have = pods[podUID]?.containers[container], have.indices.count == count {
            let gone = have.indices.filter { i in !inventory.devices.contains { $0.index == i } }
            guard gone.isEmpty else {
                let list = gone.map { "/dev/nvidia\($0)" }.joined(separator: ", ")
                throw EdgedError(.notFound, "pod \(pod) container \(container): its \(list) no longer exists under \(root) (driver unloaded?); delete the pod to give it other GPUs")
            }
            return GPUAllocation(indices: have.indices, inventory: inventory)
        }
        var entry = pods[podUID] ?? PodEntry(pod: pod, containers: [:])
        entry.containers[container] = nil
        let present = inventory.devices.map(\.index)
        // Devices this container may share with its pod: everything for an init container; for an app container
        // what the init containers had, minus what the other app containers use.
        let busyInPod = isInit ? [] : Set(entry.containers.values.filter { !$0.isInit }.flatMap(\.indices))
        let reusable = entry.indices.subtracting(busyInPod)
        var heldBy: [Int: String] = [:]
        for (uid, other) in pods where uid != podUID {
            for i in other.indices { heldBy[i] = other.pod }
        }
        for i in busyInPod { heldBy[i] = "\(pod) (container of the same pod)" }
        let candidates = present.filter { reusable.contains($0) } + present.filter { heldBy[$0] == nil && !reusable.contains($0) }
        guard candidates.count >= count else {
            throw EdgedError(.notFound, shortageMessage(pod: pod, count: count, free: candidates.count,
                                                        present: present, heldBy: heldBy))
        }
        let chosen = candidates.prefix(count).sorted()
        entry.containers[container] = ContainerEntry(indices: chosen, isInit: isInit)
        var next = pods
        next[podUID] = entry
        try save(next)
        pods = next
        return GPUAllocation(indices: chosen, inventory: inventory)
    }

    /// Frees every device of a pod (at pod termination). Throws `.io` when the state file cannot be written.
    public func release(podUID: String) throws(EdgedError) {
        guard pods[podUID] != nil else { return }
        var next = pods
        next[podUID] = nil
        try save(next)
        pods = next
    }

    /// Frees the devices of every pod not in `keeping` (pods removed while edged was down). Returns the UIDs freed.
    @discardableResult
    public func prune(keeping: Set<String>) throws(EdgedError) -> [String] {
        let gone = pods.keys.filter { !keeping.contains($0) }.sorted()
        guard !gone.isEmpty else { return [] }
        var next = pods
        for uid in gone { next[uid] = nil }
        try save(next)
        pods = next
        return gone
    }

    /// "pod ns/name needs 2 nvidia.com/gpu, 1 free (devices 0,1 held by ns/other)".
    private func shortageMessage(pod: String, count: Int, free: Int, present: [Int], heldBy: [Int: String]) -> String {
        let head = "pod \(pod) needs \(count) \(GPUDevices.resourceName), \(free) free"
        guard !present.isEmpty else {
            return "\(head) (no NVIDIA GPU on this node: no /dev/nvidia[0-9]* under \(root))"
        }
        var byHolder: [String: [Int]] = [:]
        for i in present { if let h = heldBy[i] { byHolder[h, default: []].append(i) } }
        let parts = byHolder.sorted { $0.value[0] < $1.value[0] }.map { holder, idx in
            "\(idx.count == 1 ? "device" : "devices") \(idx.map(String.init).joined(separator: ",")) held by \(holder)"
        }
        if parts.isEmpty { return "\(head) (the node has \(present.count))" }
        return "\(head) (\(parts.joined(separator: "; ")))"
    }

    /// Writes the allocations to a temp file, fsyncs it, renames it over the state file and fsyncs the directory.
    private func save(_ state: [String: PodEntry]) throws(EdgedError) {
        let data: Data
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            data = try encoder.encode(StateFile(version: 1, pods: state))
        } catch {
            throw EdgedError(.io, "cannot encode the GPU allocations: \(error)")
        }
        let dir = stateFile.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        guard Files.makeDirectories(dir.isEmpty ? "/" : dir, mode: 0o700) else {
            throw EdgedError(.io, "cannot create \(dir) for the GPU allocations: \(String(cString: strerror(errno)))")
        }
        try Files.writeAtomically(stateFile, Array(data), mode: 0o600)
    }
}
