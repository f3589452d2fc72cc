// CPU and memory usage for /stats/summary and /metrics/resource: per container from its cgroup (v1 or v2), and
// for the node from /proc/stat and /proc/meminfo.

import EdgedCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Cumulative CPU time and current memory of a cgroup or of the node. A figure the kernel does not expose on this
/// layout (no memory controller in that hierarchy, say) is nil.
public struct ResourceStats: Sendable, Equatable {
    /// Cumulative CPU time used, nanoseconds (cpuacct.usage on v1, cpu.stat usage_usec × 1000 on v2).
    public var cpuUsageNanos: UInt64?
    /// Memory charged, bytes (memory.usage_in_bytes on v1, memory.current on v2; MemTotal − MemFree for the node).
    public var memoryUsageBytes: UInt64?
    /// Usage minus inactive file cache (what kubelet and the OOM killer care about), bytes.
    public var memoryWorkingSetBytes: UInt64?
    /// Node only: MemAvailable.
    public var memoryAvailableBytes: UInt64?

    public init(cpuUsageNanos: UInt64? = nil, memoryUsageBytes: UInt64? = nil, memoryWorkingSetBytes: UInt64? = nil,
                memoryAvailableBytes: UInt64? = nil) {
        self.cpuUsageNanos = cpuUsageNanos
        self.memoryUsageBytes = memoryUsageBytes
        self.memoryWorkingSetBytes = memoryWorkingSetBytes
        self.memoryAvailableBytes = memoryAvailableBytes
    }

    /// kubelet's working set: usage − inactive_file, never below zero.
    static func workingSet(usage: UInt64, inactiveFile: UInt64?) -> UInt64 {
        let inactive = inactiveFile ?? 0
        return usage > inactive ? usage - inactive : 0
    }

    /// The node's figures: CPU from the first line of /proc/stat (every state but idle and iowait, in clock
    /// ticks), memory from /proc/meminfo (working set = MemTotal − MemFree − Inactive(file)).
    public static func node(procRoot: String = "/proc") -> ResourceStats {
        var out = ResourceStats()
        if let text = FileIO.readString("\(procRoot)/stat"), let line = text.split(separator: "\n").first,
           line.hasPrefix("cpu ") {
            let f = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
            // user nice system idle iowait irq softirq steal (guest time is already in user/nice).
            if f.count >= 8 {
                var busy: UInt64 = 0
                for i in [0, 1, 2, 5, 6, 7] { busy += f[i] }
                let hz = UInt64(max(sysconf(Int32(_SC_CLK_TCK)), 1))
                out.cpuUsageNanos = busy * (1_000_000_000 / hz)
            }
        }
        let mem = meminfo(FileIO.readString("\(procRoot)/meminfo") ?? "")
        if let total = mem["MemTotal"], let free = mem["MemFree"] {
            let usage = total > free ? total - free : 0
            out.memoryUsageBytes = usage
            out.memoryWorkingSetBytes = workingSet(usage: usage, inactiveFile: mem["Inactive(file)"])
        }
        out.memoryAvailableBytes = mem["MemAvailable"]
        return out
    }

    static func meminfo(_ text: String) -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count >= 2, parts[0].hasSuffix(":"), let v = UInt64(parts[1]) else { continue }
            out[String(parts[0].dropLast())] = parts.count > 2 ? v * 1024 : v
        }
        return out
    }

    /// "key value" lines (memory.stat, cpu.stat) as a dictionary.
    static func keyedValues(_ path: String) -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for line in (FileIO.readString(path) ?? "").split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 2, let v = UInt64(f[1]) { out[String(f[0])] = v }
        }
        return out
    }

    /// A file holding one number (memory.current, cpuacct.usage).
    static func number(_ path: String) -> UInt64? {
        guard let text = FileIO.readString(path) else { return nil }
        return UInt64(text.trimmingSpaces)
    }
}

extension ContainerRuntime {
    /// The cgroup usage of a container (running or exited while its cgroup is still there); nil for an unknown id.
    public func stats(id: String) -> ResourceStats? {
        guard let info = inspect(id: id) else { return nil }
        return cgroupManager.stats(path: ContainerRuntime.cgroupPath(config, info.spec))
    }
}
