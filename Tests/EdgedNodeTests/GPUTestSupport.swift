// A fake NVIDIA host tree for GPU tests: real character devices (made with mknod using /dev/zero's 1:5, so
// reading them works inside containers), a fake driver version file, fake libraries and nvidia-smi.

import EdgedTestSupport
import Foundation

struct FakeGPUHost {
    let tmp: TempDir
    var root: String { tmp.sub("root") }
    var stateDir: String { tmp.sub("state") }
    static let version = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\nGCC version:  gcc version 12.2.0\n"

    /// `gpus` device nodes /dev/nvidia0..., nvidiactl and nvidia-uvm, the version file, libcuda.so.1 (and the
    /// libcuda.so link to it), libnvidia-ml.so.1 and nvidia-smi; `driver: false` leaves the driver files out.
    init(_ name: String, gpus: Int, driver: Bool = true) throws {
        tmp = try TempDir("edged-gpu-\(name)")
        let fm = FileManager.default
        try fm.createDirectory(atPath: "\(root)/dev", withIntermediateDirectories: true)
        for i in 0..<gpus { try mknod("\(root)/dev/nvidia\(i)") }
        try mknod("\(root)/dev/nvidiactl")
        try mknod("\(root)/dev/nvidia-uvm")
        guard driver else { return }
        let lib = "\(root)/usr/lib/x86_64-linux-gnu"
        try fm.createDirectory(atPath: lib, withIntermediateDirectories: true)
        try fm.createDirectory(atPath: "\(root)/usr/bin", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: "\(root)/proc/driver/nvidia", withIntermediateDirectories: true)
        try FakeGPUHost.version.write(toFile: "\(root)/proc/driver/nvidia/version", atomically: true, encoding: .utf8)
        try "fake libcuda\n".write(toFile: "\(lib)/libcuda.so.1", atomically: true, encoding: .utf8)
        try fm.createSymbolicLink(atPath: "\(lib)/libcuda.so", withDestinationPath: "libcuda.so.1")
        try "fake nvml\n".write(toFile: "\(lib)/libnvidia-ml.so.1", atomically: true, encoding: .utf8)
        try "not a driver library\n".write(toFile: "\(lib)/libc.so.6", atomically: true, encoding: .utf8)
        try "#!/bin/sh\necho fake nvidia-smi\n".write(toFile: "\(root)/usr/bin/nvidia-smi", atomically: true, encoding: .utf8)
        chmod("\(root)/usr/bin/nvidia-smi", 0o755)
    }

    func mknod(_ path: String) throws {
        try runTool(["mknod", "-m", "666", path, "c", "1", "5"])
    }

    func remove() { tmp.remove() }
}
