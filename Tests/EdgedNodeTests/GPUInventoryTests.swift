import EdgedCore
@testable import EdgedNode
import EdgedTestSupport
import Foundation
import Testing

@Suite struct GPUInventoryTests {
    @Test func scansTheFakeTree() throws {
        let host = try FakeGPUHost("scan", gpus: 2)
        defer { host.remove() }
        // Not GPUs: a regular file with a GPU-like name, and a node with a non-numeric suffix.
        try "x".write(toFile: "\(host.root)/dev/nvidia7", atomically: true, encoding: .utf8)
        try host.mknod("\(host.root)/dev/nvidia-caps")
        try host.mknod("\(host.root)/dev/nvidia10")
        let inv = GPUInventory.scan(root: host.root)
        #expect(inv.devices.map(\.index) == [0, 1, 10])
        #expect(inv.devices.map(\.path) == ["\(host.root)/dev/nvidia0", "\(host.root)/dev/nvidia1", "\(host.root)/dev/nvidia10"])
        #expect(inv.controlNodes == ["\(host.root)/dev/nvidiactl", "\(host.root)/dev/nvidia-uvm"])
        #expect(inv.driverVersion == "535.104.05")
        let lib = "\(host.root)/usr/lib/x86_64-linux-gnu"
        #expect(inv.libraries == ["\(lib)/libcuda.so", "\(lib)/libcuda.so.1", "\(lib)/libnvidia-ml.so.1"])
        #expect(inv.binaries == ["\(host.root)/usr/bin/nvidia-smi"])
        #expect(inv.containerPath("\(lib)/libcuda.so.1") == "/usr/lib/x86_64-linux-gnu/libcuda.so.1")
        #expect(inv.containerPath("\(host.root)/dev/nvidia0") == "/dev/nvidia0")
    }

    @Test func capacityCountsDeviceNodes() throws {
        let host = try FakeGPUHost("capacity", gpus: 2, driver: false)
        defer { host.remove() }
        let gpus = try GPUDevices(root: host.root, stateDir: host.stateDir)
        #expect(gpus.capacity() == ["nvidia.com/gpu": "2"])
        try host.mknod("\(host.root)/dev/nvidia2")
        #expect(gpus.capacity() == ["nvidia.com/gpu": "3"], "a re-scan sees a new device")
        let inv = gpus.inventory()
        #expect(inv.driverVersion == nil && inv.libraries.isEmpty && inv.binaries.isEmpty)
    }

    @Test func noGPUsNoCapacity() throws {
        let tmp = try TempDir("edged-gpu-none")
        defer { tmp.remove() }
        try FileManager.default.createDirectory(atPath: tmp.sub("root/dev"), withIntermediateDirectories: true)
        #expect(try GPUDevices(root: tmp.sub("root"), stateDir: tmp.sub("state")).capacity() == [:])
        #expect(try GPUDevices(root: tmp.sub("missing"), stateDir: tmp.sub("state")).capacity() == [:])
    }

    @Test func driverVersionOfTheOpenKernelModule() throws {
        let tmp = try TempDir("edged-gpu-version")
        defer { tmp.remove() }
        let dir = tmp.sub("proc/driver/nvidia")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.15  Release Build  (dvs-builder@U16)\n"
            .write(toFile: "\(dir)/version", atomically: true, encoding: .utf8)
        #expect(GPUInventory.driverVersion(root: tmp.path) == "550.54.15")
        try "garbage\n".write(toFile: "\(dir)/version", atomically: true, encoding: .utf8)
        #expect(GPUInventory.driverVersion(root: tmp.path) == nil)
    }

    @Test func realRootIsUsedAsIs() {
        let inv = GPUInventory(root: "/", devices: [], controlNodes: [], driverVersion: nil, libraries: [], binaries: [])
        #expect(inv.containerPath("/usr/lib64/libcuda.so.1") == "/usr/lib64/libcuda.so.1")
        #expect(GPUInventory.normalized("/") == "")
        #expect(GPUInventory.normalized("/x/root/") == "/x/root")
    }
}
