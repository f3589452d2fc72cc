// Facts about this machine that the Node object reports: addresses, system info, capacity and pressure.

import EdgedCore
import EdgedKube
import Glibc

public enum NodeFacts {
    /// Kubernetes architecture names (GOARCH).
    static var architecture: String {
        var u = utsname()
        uname(&u)
        let machine = withUnsafeBytes(of: &u.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        switch machine {
        case "x86_64": return "amd64"
        case "aarch64", "arm64": return "arm64"
        case let m where m.hasPrefix("armv7"), let m where m.hasPrefix("armv6"): return "arm"
        default: return machine
        }
    }

    static var kernelVersion: String {
        var u = utsname()
        uname(&u)
        return withUnsafeBytes(of: &u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// PRETTY_NAME from /etc/os-release.
    static var osImage: String {
        for line in (Files.readText("/etc/os-release") ?? "").split(separator: "\n") where line.hasPrefix("PRETTY_NAME=") {
            var v = line.dropFirst("PRETTY_NAME=".count)
            if v.hasPrefix("\"") && v.hasSuffix("\"") && v.count >= 2 { v = v.dropFirst().dropLast() }
            return String(v)
        }
        return "Linux"
    }

    static func firstLine(_ path: String) -> String {
        (Files.readText(path, limit: 4096) ?? "").split(separator: "\n").first.map(String.init) ?? ""
    }

    static func systemInfo(kubeletVersion: String, runtimeVersion: String) -> NodeSystemInfo {
        var info = NodeSystemInfo()
        info.machineID = firstLine("/etc/machine-id")
        info.systemUUID = firstLine("/sys/class/dmi/id/product_uuid").lowercased()
        info.bootID = firstLine("/proc/sys/kernel/random/boot_id")
        info.kernelVersion = kernelVersion
        info.osImage = osImage
        info.containerRuntimeVersion = runtimeVersion
        info.kubeletVersion = kubeletVersion
        info.operatingSystem = "linux"
        info.architecture = architecture
        return info
    }

    /// The node's IPv4 addresses: `configured` when set, else every address of interfaces that are up, not
    /// loopback and not pod plumbing (cni*, veth*, flannel*, docker*, podman*), in interface order.
    public static func internalIPs(configured: String?) -> [String] {
        if let configured, !configured.isEmpty { return [configured] }
        var head: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&head) == 0, let first = head else { return [] }
        defer { freeifaddrs(head) }
        var out: [String] = []
        var p: UnsafeMutablePointer<ifaddrs>? = first
        while let cur = p {
            defer { p = cur.pointee.ifa_next }
            let flags = Int32(cur.pointee.ifa_flags)
            guard let addr = cur.pointee.ifa_addr, addr.pointee.sa_family == sa_family_t(AF_INET),
                  flags & Int32(IFF_UP) != 0, flags & Int32(IFF_LOOPBACK) == 0 else { continue }
            let name = String(cString: cur.pointee.ifa_name)
            if ["cni", "veth", "flannel", "docker", "podman", "cbr", "edged"].contains(where: { name.hasPrefix($0) }) { continue }
            var buf = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                var a = sin.pointee.sin_addr
                _ = inet_ntop(AF_INET, &a, &buf, socklen_t(INET_ADDRSTRLEN))
            }
            let ip = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if !out.contains(ip) { out.append(ip) }
        }
        return out
    }

    static var cpuCount: Int { Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    /// Process count and the kernel's pid limit (for PIDPressure).
    static func pids() -> (used: Int, max: Int) {
        let max = Int(firstLine("/proc/sys/kernel/pid_max")) ?? 32768
        let used = (Files.list("/proc") ?? []).filter { $0.first?.isNumber == true }.count
        return (used, max)
    }
}
