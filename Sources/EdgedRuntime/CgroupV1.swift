// cgroup v1: one hierarchy per controller (memory, cpu, pids) under the root, e.g. /sys/fs/cgroup/memory.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Legacy per-controller hierarchies under `root`. The container joins each controller's cgroup.
public struct CgroupV1: CgroupManager {
    public let root: String
    /// Controller directory names in use; "cpu" is also found as "cpu,cpuacct" (usually symlinked).
    public static let controllers = ["memory", "cpu", "pids"]

    public init(root: String) { self.root = root }

    /// The hierarchies a container joins: the controllers, plus cpuacct (CPU usage) where it is mounted apart
    /// from cpu (where it is co-mounted, "cpu" already is that hierarchy).
    public var hierarchies: [String] {
        CgroupV1.controllers + (separateCpuacct ? ["cpuacct"] : [])
    }

    private var separateCpuacct: Bool {
        var a = stat()
        var b = stat()
        guard stat("\(root)/cpuacct", &a) == 0, (a.st_mode & S_IFMT) == S_IFDIR else { return false }
        guard stat("\(root)/cpu", &b) == 0 else { return true }
        return a.st_dev != b.st_dev || a.st_ino != b.st_ino
    }

    public func directories(path: String) -> [String] {
        hierarchies.map { "\(root)/\($0)/\(path)" }
    }

    public func create(path: String, limits: CgroupLimits) throws -> [String] {
        var dirs: [String] = []
        for controller in hierarchies {
            let base = "\(root)/\(controller)"
            guard FileIO.isDirectory(base) else {
                throw RuntimeError(.cgroup, "cgroup v1 controller \(controller) is not mounted at \(base)")
            }
            let dir = "\(base)/\(path)"
            do { try FileIO.mkdirP(dir) } catch let e as RuntimeError { throw RuntimeError(.cgroup, e.message) }
            dirs.append(dir)
        }
        let (mem, cpu, pids) = (dirs[0], dirs[1], dirs[2])
        if let m = limits.memoryBytes { try write(mem, "memory.limit_in_bytes", String(m)) }
        if let c = limits.cpuLimitMillis {
            try write(cpu, "cpu.cfs_period_us", String(CgroupLimits.cpuPeriodMicros))
            try write(cpu, "cpu.cfs_quota_us", String(CgroupLimits.cpuQuotaMicros(millis: c)))
        }
        if let r = limits.cpuRequestMillis { try write(cpu, "cpu.shares", String(CgroupLimits.cpuShares(millis: r))) }
        if let p = limits.pids { try write(pids, "pids.max", String(p)) }
        return dirs
    }

    public func oomKilled(path: String) -> Bool {
        guard let text = FileIO.readString("\(root)/memory/\(path)/memory.oom_control") else { return false }
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 2, f[0] == "oom_kill", let n = Int(f[1]), n > 0 { return true }
        }
        return false
    }

    public func remove(path: String, keepingAncestors: Int) throws {
        var firstError: Error?
        for controller in hierarchies {
            let base = "\(root)/\(controller)"
            do { try CgroupFS.removeDir("\(base)/\(path)") } catch { firstError = firstError ?? error }
            CgroupFS.removeEmptyParents(root: base, path: path, keep: keepingAncestors)
        }
        if let firstError { throw firstError }
    }

    /// cpuacct.usage, memory.usage_in_bytes and memory.stat total_inactive_file (inactive_file without
    /// hierarchy accounting).
    public func stats(path: String) -> ResourceStats {
        var out = ResourceStats()
        let acct = separateCpuacct ? "cpuacct" : "cpu"
        out.cpuUsageNanos = ResourceStats.number("\(root)/\(acct)/\(path)/cpuacct.usage")
        let mem = "\(root)/memory/\(path)"
        if let usage = ResourceStats.number("\(mem)/memory.usage_in_bytes") {
            out.memoryUsageBytes = usage
            let stat = ResourceStats.keyedValues("\(mem)/memory.stat")
            out.memoryWorkingSetBytes = ResourceStats.workingSet(usage: usage,
                                                                 inactiveFile: stat["total_inactive_file"] ?? stat["inactive_file"])
        }
        return out
    }

    private func write(_ dir: String, _ file: String, _ value: String) throws {
        do { try FileIO.writeExisting("\(dir)/\(file)", value) } catch let e as RuntimeError {
            throw RuntimeError(.cgroup, e.message)
        }
    }
}
