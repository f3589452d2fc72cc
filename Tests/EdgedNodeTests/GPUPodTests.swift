// GPU pods in real containers: a pod runner (PodManager) on a busybox image, with GPUDevices on a fake device tree.

import EdgedControl
import EdgedCore
import EdgedImages
@testable import EdgedNode
import EdgedRuntime
import EdgedTestSupport
import Foundation
import Logging
import Testing

/// A pod runner with its own state dirs, cgroup prefix and a busybox image; cleans everything up.
struct GPUPodFixture {
    let host: FakeGPUHost
    let runtimeConfig: RuntimeConfig
    let runtime: ContainerRuntime
    let images: ImageStore
    let gpus: GPUDevices
    let pods: PodManager
    let namespace: String
    static let image = "edged.test/busybox:gpu"

    init(_ name: String, gpus count: Int) async throws {
        host = try FakeGPUHost(name, gpus: count)
        let tmp = host.tmp
        let rootfs = tmp.sub("busybox")
        try makeBusyboxRootfs(at: rootfs)
        let layout = try TestImageLayout(at: tmp.sub("layout"))
        try layout.addSimpleImage(fromDirectory: rootfs, name: GPUPodFixture.image)
        images = try ImageStore(root: tmp.sub("images"))
        _ = try await images.importArchive(at: layout.path)
        let unique = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        namespace = "gpu-\(unique)"
        runtimeConfig = RuntimeConfig(stateDir: tmp.sub("containers"), runDir: tmp.sub("run"),
                                      cgroupPrefix: "edged-test-gpu-\(unique)")
        runtime = try ContainerRuntime(config: runtimeConfig, logger: Logger(label: "test"))
        gpus = try GPUDevices(root: host.root, stateDir: host.stateDir)
        var config = NodeConfig(nodeName: "gpu-node", podsDir: tmp.sub("pods"), logDir: tmp.sub("logs"),
                                resyncInterval: .milliseconds(200))
        config.gpus = gpus
        pods = PodManager(runtime: runtime, images: images, config: config, errors: ErrorLog(logger: Logger(label: "test")),
                          logger: Logger(label: "test"))
    }

    /// A pod running `sleep` whose container asks for `gpus` nvidia.com/gpu (none when 0). At start it writes
    /// NVIDIA_VISIBLE_DEVICES to /tmp/visible.
    func pod(_ name: String, gpus: Int) throws -> DesiredPod {
        let limits = gpus > 0 ? "\n      resources:\n        limits:\n          nvidia.com/gpu: \"\(gpus)\"" : ""
        let yaml = """
        apiVersion: v1
        kind: Pod
        metadata:
          name: \(name)
          namespace: \(namespace)
          uid: \(name)-\(namespace)
        spec:
          terminationGracePeriodSeconds: 0
          containers:
            - name: main
              image: \(GPUPodFixture.image)
              command: ["sh", "-c", "echo \\"$NVIDIA_VISIBLE_DEVICES\\" > /tmp/visible; exec sleep 3600"]\(limits)
        """
        return DesiredPod(pod: try Manifest.decodePods(yaml, source: "\(name).yaml")[0], source: "\(name).yaml")
    }

    func summary(_ name: String) async -> PodSummary? {
        await pods.summaries().first { $0.name == name && $0.namespace == namespace }
    }

    /// Polls until `check` holds for the pod's summary (30 s at most).
    @discardableResult
    func waitFor(_ name: String, _ what: String, _ check: (PodSummary) -> Bool) async throws -> PodSummary {
        let deadline = Date().addingTimeInterval(30)
        var last: PodSummary?
        while Date() < deadline {
            last = await summary(name)
            if let last, check(last) { return last }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestFailure("pod \(name) never became \(what); last summary: \(String(describing: last))")
    }

    func running(_ name: String) async throws -> PodSummary {
        try await waitFor(name, "Running") { $0.phase == "Running" && $0.containers.allSatisfy { $0.state == "running" } }
    }

    /// Runs a shell command in the pod's container.
    func exec(_ name: String, _ script: String) async throws -> String {
        let info = try #require(await runtime.list().first { $0.spec.podName == name && $0.spec.podNamespace == namespace && $0.status.isRunning })
        let r = try await runtime.exec(id: info.spec.id, argv: ["sh", "-c", script], timeout: .seconds(10))
        #expect(r.exitCode == 0, "\(script): \(r.output)")
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func cleanup() async {
        await pods.terminateAll()
        for c in await runtime.list() {
            _ = try? await runtime.stop(id: c.spec.id, grace: .milliseconds(100))
            try? await runtime.remove(id: c.spec.id)
        }
        // Sandboxes created at once may each have made <runDir>/sandboxes a bind mount of itself: drop them all.
        while umount2(runtimeConfig.runDir + "/sandboxes", Int32(MNT_DETACH)) == 0 {}
        for base in ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup"] {
            rmdir("\(base)/\(runtimeConfig.cgroupPrefix)")
        }
        try? await images.shutdown()
        host.remove()
    }
}

@Suite(.serialized) struct GPUPodTests {
    @Test(.enabled(if: isRoot, "needs root for containers")) func podsGetDistinctGPUsAndWaitForAFreeOne() async throws {
        let f = try await GPUPodFixture("pods", gpus: 2)
        do {
            try await run(f)
        } catch {
            await f.cleanup()
            throw error
        }
        await f.cleanup()
    }

    private func run(_ f: GPUPodFixture) async throws {
        let a = try f.pod("a", gpus: 1), b = try f.pod("b", gpus: 1), c = try f.pod("c", gpus: 1), plain = try f.pod("plain", gpus: 0)
        await f.pods.apply([a])
        try await f.running("a")
        await f.pods.apply([a, b, plain])
        try await f.running("b")
        try await f.running("plain")

        // a: exactly nvidia0 plus the control nodes, readable; the driver files at their host paths; the env.
        #expect(try await f.exec("a", "ls /dev | grep nvidia | sort | tr '\\n' ' '") == "nvidia-uvm nvidia0 nvidiactl")
        #expect(try await f.exec("a", "head -c 4 /dev/nvidia0 | wc -c") == "4")
        #expect(try await f.exec("a", "test -c /dev/nvidia0 && test -c /dev/nvidiactl && echo chr") == "chr")
        #expect(try await f.exec("a", "cat /usr/lib/x86_64-linux-gnu/libcuda.so.1") == "fake libcuda")
        #expect(try await f.exec("a", "cat /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1") == "fake nvml")
        #expect(try await f.exec("a", "test -e /usr/lib/x86_64-linux-gnu/libc.so.6 || echo absent") == "absent")
        #expect(try await f.exec("a", "/usr/bin/nvidia-smi") == "fake nvidia-smi")
        #expect(try await f.exec("a", "echo x > /usr/lib/x86_64-linux-gnu/libcuda.so.1 2>&1 || echo read-only").hasSuffix("read-only"))
        #expect(try await f.exec("a", "grep ' /usr/lib/x86_64-linux-gnu/libcuda.so.1 ' /proc/mounts").contains(" ro,"))
        #expect(try await f.exec("a", "cat /tmp/visible") == "0")
        // b: the other device.
        #expect(try await f.exec("b", "ls /dev | grep nvidia | sort | tr '\\n' ' '") == "nvidia-uvm nvidia1 nvidiactl")
        #expect(try await f.exec("b", "cat /tmp/visible") == "1")
        // A pod without nvidia.com/gpu sees none of it.
        #expect(try await f.exec("plain", "ls /dev | grep -c nvidia || true") == "0")
        #expect(try await f.exec("plain", "test -e /usr/lib/x86_64-linux-gnu/libcuda.so.1 || echo absent") == "absent")
        #expect(try await f.exec("plain", "cat /tmp/visible") == "")

        // c: no device left; it waits with a message that says who holds them.
        await f.pods.apply([a, b, plain, c])
        let waiting = try await f.waitFor("c", "waiting for a GPU") { $0.containers.first?.reason == "CreateContainerConfigError" }
        #expect(waiting.phase == "Pending")
        #expect(waiting.containers.first?.message == "pod \(f.namespace)/c needs 1 nvidia.com/gpu, 0 free (device 0 held by \(f.namespace)/a; device 1 held by \(f.namespace)/b)")
        #expect(await f.gpus.allocations() == ["a-\(f.namespace)": [0], "b-\(f.namespace)": [1]])

        // A restarted edged reads the same allocations and hands out nothing twice.
        let restarted = try GPUDevices(root: f.host.root, stateDir: f.host.stateDir)
        #expect(await restarted.allocations() == ["a-\(f.namespace)": [0], "b-\(f.namespace)": [1]])

        // a terminates: its device is released and c starts on it.
        await f.pods.apply([b, plain, c])
        try await f.running("c")
        #expect(try await f.exec("c", "cat /tmp/visible") == "0")
        #expect(try await f.exec("c", "ls /dev | grep nvidia | sort | tr '\\n' ' '") == "nvidia-uvm nvidia0 nvidiactl")
        #expect(await f.gpus.allocations() == ["b-\(f.namespace)": [1], "c-\(f.namespace)": [0]])
        let persisted = try GPUDevices(root: f.host.root, stateDir: f.host.stateDir)
        #expect(await persisted.allocations() == ["b-\(f.namespace)": [1], "c-\(f.namespace)": [0]])

        await f.pods.terminateAll()
        #expect(await f.gpus.allocations().isEmpty, "every pod's GPUs are released at termination")
    }
}
