// What a GPU container gets, like the NVIDIA container toolkit: its /dev/nvidiaN nodes plus the control nodes,
// the driver libraries and nvidia-smi bind-mounted read-only at their host paths, and NVIDIA_VISIBLE_DEVICES.

import EdgedCore
import EdgedRuntime

extension GPUDevices {
    /// The nvidia.com/gpu a container asks for: its limit, else its request (Kubernetes requires them equal for
    /// extended resources). Throws `.invalidManifest` for a value that is not a whole number.
    static func requestedCount(_ c: Container) throws(EdgedError) -> Int {
        guard let q = c.resources?.limits?[resourceName] ?? c.resources?.requests?[resourceName] else { return 0 }
        let milli: Int64
        do { milli = try q.milliValue() } catch {
            throw EdgedError(.invalidManifest, "container \(c.name): \(resourceName) \"\(q)\": \(error.message)")
        }
        guard milli >= 0, milli % 1000 == 0 else {
            throw EdgedError(.invalidManifest, "container \(c.name): \(resourceName) must be a whole number of GPUs, not \"\(q)\"")
        }
        return Int(milli / 1000)
    }

    /// Allocates the GPUs `container` asks for (none: nothing changes) and adds them to `spec`. Throws like
    /// `allocate`, and `.notFound` when the node has no GPU support configured at all.
    static func attach(_ gpus: GPUDevices?, to spec: inout ContainerSpec, pod: Pod, container: Container,
                       isInit: Bool) async throws(EdgedError) {
        let count = try requestedCount(container)
        guard count > 0 else { return }
        guard let gpus else {
            throw EdgedError(.notFound, "pod \(pod.fullName) needs \(count) \(resourceName), 0 free (GPU support is not set up on this node)")
        }
        let a = try await gpus.allocate(podUID: pod.metadata.uid ?? "", pod: pod.fullName, container: container.name,
                                        isInit: isInit, count: count)
        spec.add(a)
    }
}

extension ContainerSpec {
    /// Adds the devices, driver files and NVIDIA_VISIBLE_DEVICES of an allocation.
    mutating func add(_ a: GPUAllocation) {
        let inv = a.inventory
        let chosen = inv.devices.filter { a.indices.contains($0.index) }.map(\.path)
        for path in chosen + inv.controlNodes {
            devices.append(DeviceSpec(source: path, destination: inv.containerPath(path)))
        }
        for path in inv.libraries + inv.binaries {
            mounts.append(MountSpec(source: path, destination: inv.containerPath(path), readOnly: true))
        }
        // CUDA images set NVIDIA_VISIBLE_DEVICES=all; the container gets exactly its devices instead.
        env.removeAll { $0.hasPrefix("NVIDIA_VISIBLE_DEVICES=") }
        env.append("NVIDIA_VISIBLE_DEVICES=\(a.visibleDevices)")
    }
}
