import EdgedCore
@testable import EdgedNode
import EdgedRuntime
import EdgedTestSupport
import Foundation
import Testing

/// Expects an EdgedError with `code` whose message is exactly `message` (or contains `containing`).
func expectEdgedError(_ code: EdgedError.Code, message: String? = nil, containing: String? = nil,
                      _ body: () async throws -> Void) async {
    do {
        try await body()
        Issue.record("expected an EdgedError \(code)")
    } catch let e as EdgedError {
        #expect(e.code == code, "\(e.message)")
        if let message { #expect(e.message == message) }
        if let containing { #expect(e.message.contains(containing), "\"\(e.message)\" lacks \"\(containing)\"") }
    } catch {
        Issue.record("expected an EdgedError, got \(error)")
    }
}

@Suite struct GPUDevicesTests {
    @Test func allocatesLowestFreeFirstAndNeverTwice() async throws {
        let host = try FakeGPUHost("alloc", gpus: 2)
        defer { host.remove() }
        let gpus = try GPUDevices(root: host.root, stateDir: host.stateDir)
        let a = try await gpus.allocate(podUID: "a", pod: "ns/a", container: "c", isInit: false, count: 1)
        #expect(a.indices == [0])
        #expect(a.visibleDevices == "0")
        let again = try await gpus.allocate(podUID: "a", pod: "ns/a", container: "c", isInit: false, count: 1)
        #expect(again.indices == [0], "a restarted container keeps its device")
        let b = try await gpus.allocate(podUID: "b", pod: "ns/b", container: "c", isInit: false, count: 1)
        #expect(b.indices == [1])
        await expectEdgedError(.notFound, message: "pod ns/c needs 1 nvidia.com/gpu, 0 free (device 0 held by ns/a; device 1 held by ns/b)") {
            _ = try await gpus.allocate(podUID: "c", pod: "ns/c", container: "c", isInit: false, count: 1)
        }
        try await gpus.release(podUID: "a")
        #expect(try await gpus.allocate(podUID: "c", pod: "ns/c", container: "c", isInit: false, count: 1).indices == [0])
        #expect(await gpus.allocations() == ["b": [1], "c": [0]])
    }

    @Test func shortageNamesEveryHolder() async throws {
        let host = try FakeGPUHost("short", gpus: 3)
        defer { host.remove() }
        let gpus = try GPUDevices(root: host.root, stateDir: host.stateDir)
        _ = try await gpus.allocate(podUID: "o", pod: "ns/other", container: "c", isInit: false, count: 2)
        await expectEdgedError(.notFound, message: "pod ns/name needs 2 nvidia.com/gpu, 1 free (devices 0,1 held by ns/other)") {
            _ = try await gpus.allocate(podUID: "n", pod: "ns/name", container: "c", isInit: false, count: 2)
        }
        #expect(await gpus.allocations() == ["o": [0, 1]], "a failed allocation holds nothing")
        await expectEdgedError(.notFound, message: "pod ns/big needs 4 nvidia.com/gpu, 1 free (devices 0,1 held by ns/other)") {
            _ = try await gpus.allocate(podUID: "big", pod: "ns/big", container: "c", isInit: false, count: 4)
        }
    }

    @Test func vanishedDeviceIsReported() async throws {
        let host = try FakeGPUHost("gone", gpus: 2, driver: false)
        defer { host.remove() }
        let gpus = try GPUDevices(root: host.root, stateDir: host.stateDir)
        #expect(try await gpus.allocate(podUID: "a", pod: "ns/a", container: "c", isInit: false, count: 2).indices == [0, 1])
        try FileManager.default.removeItem(atPath: "\(host.root)/dev/nvidia1")
        await expectEdgedError(.notFound, message: "pod ns/a container c: its /dev/nvidia1 no longer exists under \(host.root) (driver unloaded?); delete the pod to give it other GPUs") {
            _ = try await gpus.allocate(podUID: "a", pod: "ns/a", container: "c", isInit: false, count: 2)
        }
    }

    @Test func noDevicesAtAll() async throws {
        let tmp = try TempDir("edged-gpu-nodev")
        defer { tmp.remove() }
        let gpus = try GPUDevices(root: tmp.sub("root"), stateDir: tmp.sub("state"))
        await expectEdgedError(.notFound, message: "pod ns/a needs 1 nvidia.com/gpu, 0 free (no NVIDIA GPU on this node: no /dev/nvidia[0-9]* under \(tmp.sub("root")))") {
            _ = try await gpus.allocate(podUID: "a", pod: "ns/a", container: "c", isInit: false, count: 1)
        }
    }

    @Test func containersOfOnePodGetDistinctDevicesAndInitDevicesAreReused() async throws {
        let host = try FakeGPUHost("pod", gpus: 3)
        defer { host.remove() }
        let gpus = try GPUDevices(root: host.root, stateDir: host.stateDir)
        #expect(try await gpus.allocate(podUID: "p", pod: "ns/p", container: "init", isInit: true, count: 2).indices == [0, 1])
        #expect(try await gpus.allocate(podUID: "p", pod: "ns/p", container: "app1", isInit: false, count: 1).indices == [0])
        #expect(try await gpus.allocate(podUID: "p", pod: "ns/p", container: "app2", isInit: false, count: 2).indices == [1, 2])
        await expectEdgedError(.notFound, message: "pod ns/p needs 1 nvidia.com/gpu, 0 free (devices 0,1,2 held by ns/p (container of the same pod))") {
            _ = try await gpus.allocate(podUID: "p", pod: "ns/p", container: "app3", isInit: false, count: 1)
        }
        #expect(await gpus.allocations() == ["p": [0, 1, 2]])
    }

    @Test func allocationsSurviveARestart() async throws {
        let host = try FakeGPUHost("restart", gpus: 2)
        defer { host.remove() }
        do {
            let gpus = try GPUDevices(root: host.root, stateDir: host.stateDir)
            _ = try await gpus.allocate(podUID: "a", pod: "ns/a", container: "c", isInit: false, count: 1)
            _ = try await gpus.allocate(podUID: "b", pod: "ns/b", container: "c", isInit: false, count: 1)
        }
        let mode = try FileManager.default.attributesOfItem(atPath: "\(host.stateDir)/gpu.json")[.posixPermissions] as? Int
        #expect(mode == 0o600)
        #expect(!FileManager.default.fileExists(atPath: "\(host.stateDir)/gpu.json.tmp"))
        let restarted = try GPUDevices(root: host.root, stateDir: host.stateDir)
        #expect(await restarted.allocations() == ["a": [0], "b": [1]])
        await expectEdgedError(.notFound, message: "pod ns/c needs 1 nvidia.com/gpu, 0 free (device 0 held by ns/a; device 1 held by ns/b)") {
            _ = try await restarted.allocate(podUID: "c", pod: "ns/c", container: "c", isInit: false, count: 1)
        }
        #expect(try await restarted.allocate(podUID: "b", pod: "ns/b", container: "c", isInit: false, count: 1).indices == [1])
        // Pods removed while edged was down are pruned once every source has reported.
        #expect(try await restarted.prune(keeping: ["b"]) == ["a"])
        let third = try GPUDevices(root: host.root, stateDir: host.stateDir)
        #expect(await third.allocations() == ["b": [1]])
    }

    @Test func unreadableStateFileIsAnError() async throws {
        let host = try FakeGPUHost("corrupt", gpus: 1, driver: false)
        defer { host.remove() }
        try FileManager.default.createDirectory(atPath: host.stateDir, withIntermediateDirectories: true)
        try "{not json".write(toFile: "\(host.stateDir)/gpu.json", atomically: true, encoding: .utf8)
        await expectEdgedError(.io, containing: "the GPU allocations \(host.stateDir)/gpu.json cannot be parsed") {
            _ = try GPUDevices(root: host.root, stateDir: host.stateDir)
        }
        try FileManager.default.removeItem(atPath: "\(host.stateDir)/gpu.json")
        try FileManager.default.createDirectory(atPath: "\(host.stateDir)/gpu.json", withIntermediateDirectories: true)
        await expectEdgedError(.io, containing: "cannot read the GPU allocations \(host.stateDir)/gpu.json") {
            _ = try GPUDevices(root: host.root, stateDir: host.stateDir)
        }
    }

    @Test func unwritableStateFileAllocatesNothing() async throws {
        let host = try FakeGPUHost("rofs", gpus: 1, driver: false)
        defer { host.remove() }
        let gpus = try GPUDevices(root: host.root, stateDir: host.stateDir)
        // The temp file cannot be created: a directory is in its way.
        try FileManager.default.createDirectory(atPath: "\(host.stateDir)/gpu.json.tmp", withIntermediateDirectories: true)
        await expectEdgedError(.io, containing: "cannot write \(host.stateDir)/gpu.json.tmp") {
            _ = try await gpus.allocate(podUID: "a", pod: "ns/a", container: "c", isInit: false, count: 1)
        }
        #expect(await gpus.allocations().isEmpty)
    }

    @Test func requestedCountFromLimitsOrRequests() throws {
        func container(limits: [String: Quantity]? = nil, requests: [String: Quantity]? = nil) -> Container {
            var c = Container(name: "c", image: "x")
            c.resources = ResourceRequirements(limits: limits, requests: requests)
            return c
        }
        #expect(try GPUDevices.requestedCount(Container(name: "c", image: "x")) == 0)
        #expect(try GPUDevices.requestedCount(container(limits: ["nvidia.com/gpu": "2"])) == 2)
        #expect(try GPUDevices.requestedCount(container(requests: ["nvidia.com/gpu": "1"])) == 1)
        #expect(try GPUDevices.requestedCount(container(limits: ["cpu": "1"])) == 0)
        #expect(throws: EdgedError.self) { try GPUDevices.requestedCount(container(limits: ["nvidia.com/gpu": "500m"])) }
        #expect(throws: EdgedError.self) { try GPUDevices.requestedCount(container(limits: ["nvidia.com/gpu": "two"])) }
    }

    @Test func attachAddsDevicesDriverFilesAndEnv() async throws {
        let host = try FakeGPUHost("attach", gpus: 2)
        defer { host.remove() }
        let gpus = try GPUDevices(root: host.root, stateDir: host.stateDir)
        let pod = Pod(metadata: ObjectMeta(name: "p", namespace: "ns", uid: "uid-p"), spec: PodSpec(containers: []))
        var c = Container(name: "c", image: "x")
        c.resources = ResourceRequirements(limits: ["nvidia.com/gpu": "1"])
        var spec = ContainerSpec(id: "i", podUID: "uid-p", podName: "p", containerName: "c", layers: [], argv: ["sh"],
                                 env: ["NVIDIA_VISIBLE_DEVICES=all", "A=1"], logPath: "/x")
        _ = try await gpus.allocate(podUID: "other", pod: "ns/other", container: "c", isInit: false, count: 1)
        try await GPUDevices.attach(gpus, to: &spec, pod: pod, container: c, isInit: false)
        #expect(spec.devices == [
            DeviceSpec(source: "\(host.root)/dev/nvidia1", destination: "/dev/nvidia1"),
            DeviceSpec(source: "\(host.root)/dev/nvidiactl", destination: "/dev/nvidiactl"),
            DeviceSpec(source: "\(host.root)/dev/nvidia-uvm", destination: "/dev/nvidia-uvm"),
        ])
        #expect(spec.mounts.map(\.destination) == ["/usr/lib/x86_64-linux-gnu/libcuda.so", "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
                                                   "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1", "/usr/bin/nvidia-smi"])
        #expect(spec.mounts.allSatisfy { $0.readOnly })
        #expect(spec.env == ["A=1", "NVIDIA_VISIBLE_DEVICES=1"])

        var plain = spec
        plain.devices = []
        let before = plain
        try await GPUDevices.attach(gpus, to: &plain, pod: pod, container: Container(name: "d", image: "x"), isInit: false)
        #expect(plain == before, "a container without nvidia.com/gpu gets nothing")
        await expectEdgedError(.notFound, message: "pod ns/p needs 1 nvidia.com/gpu, 0 free (GPU support is not set up on this node)") {
            try await GPUDevices.attach(nil, to: &plain, pod: pod, container: c, isInit: false)
        }
    }

    @Test func specsWithoutDevicesStillDecode() throws {
        let spec = ContainerSpec(id: "i", podUID: "u", podName: "p", containerName: "c", layers: ["/l"], argv: ["sh"], logPath: "/x")
        var json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(spec)) as! [String: Any]
        #expect(json["devices"] != nil)
        json["devices"] = nil
        let old = try JSONDecoder().decode(ContainerSpec.self, from: JSONSerialization.data(withJSONObject: json))
        #expect(old == spec)
    }
}
