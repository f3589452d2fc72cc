// What NVIDIA hardware and driver files a host has, found the way the NVIDIA device plugin and container toolkit
// find them: device nodes in /dev, the driver version in /proc, driver libraries and nvidia-smi in the usual places.
// Everything is looked up below a configurable root, so tests (and chroot-style deployments) can use a fake tree.

import EdgedCore
import Glibc

/// A snapshot of the NVIDIA devices and driver files under a device root. Scanning is a few directory listings,
/// cheap enough to repeat whenever it is needed (a driver reload changes the answer).
public struct GPUInventory: Sendable, Equatable {
    /// One GPU: `/dev/nvidiaN` with its index N.
    public struct Device: Sendable, Equatable {
        public var index: Int
        /// The host path of the node (below the root).
        public var path: String
    }

    /// The device root ("/" on a real host).
    public var root: String
    /// GPUs, lowest index first.
    public var devices: [Device]
    /// Host paths of the control nodes present (nvidiactl, nvidia-uvm, nvidia-uvm-tools, nvidia-modeset).
    public var controlNodes: [String]
    /// The kernel module version from /proc/driver/nvidia/version, e.g. "535.104.05".
    public var driverVersion: String?
    /// Host paths of the driver libraries (libcuda.so*, libnvidia-*.so*).
    public var libraries: [String]
    /// Host paths of the driver tools (nvidia-smi).
    public var binaries: [String]

    /// Control nodes every GPU container gets when the host has them, like the container toolkit.
    public static let controlNodeNames = ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"]
    /// Where driver libraries are looked for, relative to the root.
    public static let libraryDirs = ["usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "usr/lib64"]

    /// Scans everything under `root`.
    public static func scan(root: String) -> GPUInventory {
        let base = normalized(root)
        let controls = controlNodeNames.map { "\(base)/dev/\($0)" }.filter(isCharDevice)
        var libs: [String] = []
        for dir in libraryDirs {
            let path = "\(base)/\(dir)"
            for name in (Files.list(path) ?? []).sorted() where isDriverLibrary(name) && isRegularFile("\(path)/\(name)") {
                libs.append("\(path)/\(name)")
            }
        }
        let smi = "\(base)/usr/bin/nvidia-smi"
        return GPUInventory(root: root, devices: scanDevices(root: root), controlNodes: controls,
                            driverVersion: driverVersion(root: root), libraries: libs,
                            binaries: isRegularFile(smi) ? [smi] : [])
    }

    /// Only the GPU nodes `<root>/dev/nvidia[0-9]+` that are character devices, lowest index first.
    public static func scanDevices(root: String) -> [Device] {
        let dev = "\(normalized(root))/dev"
        var out: [Device] = []
        for name in Files.list(dev) ?? [] where name.hasPrefix("nvidia") {
            let digits = name.dropFirst("nvidia".count)
            guard !digits.isEmpty, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber),
                  let index = Int(digits), isCharDevice("\(dev)/\(name)") else { continue }
            out.append(Device(index: index, path: "\(dev)/\(name)"))
        }
        return out.sorted { $0.index < $1.index }
    }

    /// The version in the first line of /proc/driver/nvidia/version ("NVRM version: NVIDIA UNIX x86_64 Kernel
    /// Module  535.104.05  Sat Aug 19 ..."): the first word shaped like a dotted number.
    public static func driverVersion(root: String) -> String? {
        guard let text = Files.readText("\(normalized(root))/proc/driver/nvidia/version", limit: 4096),
              let line = text.split(separator: "\n").first else { return nil }
        for word in line.split(whereSeparator: \.isWhitespace) {
            let parts = word.split(separator: ".", omittingEmptySubsequences: false)
            if parts.count >= 2, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) }) { return String(word) }
        }
        return nil
    }

    /// The path a host file has inside containers: the same path with the root taken off.
    public func containerPath(_ hostPath: String) -> String {
        let base = GPUInventory.normalized(root)
        guard !base.isEmpty, hostPath.hasPrefix(base + "/") else { return hostPath }
        return String(hostPath.dropFirst(base.count))
    }

    /// The root without a trailing slash ("/" becomes "").
    static func normalized(_ root: String) -> String {
        var r = Substring(root)
        while r.hasSuffix("/") { r = r.dropLast() }
        return String(r)
    }

    static func isDriverLibrary(_ name: String) -> Bool {
        name.hasPrefix("libcuda.so") || (name.hasPrefix("libnvidia-") && name.contains(".so"))
    }

    static func isCharDevice(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFCHR
    }

    /// A regular file, or a symlink to one (libcuda.so.1 → libcuda.so.535.104.05).
    static func isRegularFile(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }
}
