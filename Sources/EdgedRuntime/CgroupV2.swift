// cgroup v2: one unified tree; controllers enabled top-down through cgroup.subtree_control.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The unified hierarchy rooted at `root` (normally /sys/fs/cgroup). `root` may be a plain directory tree in
/// tests: in a directory without cgroup.procs (not cgroupfs) control files are created as regular files.
public struct CgroupV2: CgroupManager {
    public let root: String
    /// Set when `root` is a systemd unit's delegated cgroup (see `makeHostCgroupManager`).
    public let delegation: CgroupDelegation?

    public init(root: String, delegation: CgroupDelegation? = nil) {
        self.root = root
        self.delegation = delegation
    }

    public func directories(path: String) -> [String] { ["\(root)/\(path)"] }

    public func create(path: String, limits: CgroupLimits) throws -> [String] {
        let wanted = neededControllers(limits)
        let available = Set((FileIO.readString("\(root)/cgroup.controllers") ?? "").split(whereSeparator: \.isWhitespace).map(String.init))
        for c in wanted where !available.contains(c) {
            throw RuntimeError(.cgroup, "cgroup v2 controller \(c) is not available in \(root)")
        }
        var dir = root
        let parts = path.split(separator: "/")
        for part in parts {
            if !wanted.isEmpty {
                // Enable the controllers for the children of every ancestor (the leaf holds the processes).
                let line = wanted.map { "+" + $0 }.joined(separator: " ")
                try write(dir, "cgroup.subtree_control", line)
            }
            dir += "/" + part
            if mkdir(dir, 0o755) != 0 && errno != EEXIST {
                throw RuntimeError(.cgroup, "create cgroup \(dir): \(errnoString(errno))")
            }
        }
        if let m = limits.memoryBytes { try write(dir, "memory.max", String(m)) }
        if let c = limits.cpuLimitMillis {
            try write(dir, "cpu.max", "\(CgroupLimits.cpuQuotaMicros(millis: c)) \(CgroupLimits.cpuPeriodMicros)")
        }
        if let r = limits.cpuRequestMillis { try write(dir, "cpu.weight", String(CgroupLimits.cpuWeight(millis: r))) }
        if let p = limits.pids { try write(dir, "pids.max", String(p)) }
        return [dir]
    }

    public func oomKilled(path: String) -> Bool {
        guard let events = FileIO.readString("\(root)/\(path)/memory.events") else { return false }
        for line in events.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 2, f[0] == "oom_kill", let n = Int(f[1]), n > 0 { return true }
        }
        return false
    }

    public func remove(path: String, keepingAncestors: Int) throws {
        try CgroupFS.removeDir("\(root)/\(path)")
        CgroupFS.removeEmptyParents(root: root, path: path, keep: keepingAncestors)
    }

    /// cpu.stat usage_usec (always there on cgroup2), memory.current and memory.stat inactive_file (with the
    /// memory controller enabled for this cgroup).
    public func stats(path: String) -> ResourceStats {
        let dir = "\(root)/\(path)"
        var out = ResourceStats()
        if let usec = ResourceStats.keyedValues("\(dir)/cpu.stat")["usage_usec"] { out.cpuUsageNanos = usec * 1000 }
        if let usage = ResourceStats.number("\(dir)/memory.current") {
            out.memoryUsageBytes = usage
            let inactive = ResourceStats.keyedValues("\(dir)/memory.stat")["inactive_file"]
            out.memoryWorkingSetBytes = ResourceStats.workingSet(usage: usage, inactiveFile: inactive)
        }
        return out
    }

    private func neededControllers(_ l: CgroupLimits) -> [String] {
        var c: [String] = []
        if l.cpuLimitMillis != nil || l.cpuRequestMillis != nil { c.append("cpu") }
        if l.memoryBytes != nil { c.append("memory") }
        if l.pids != nil { c.append("pids") }
        return c
    }

    /// On cgroupfs the control files exist; on a plain test tree they are created.
    private func write(_ dir: String, _ file: String, _ value: String) throws {
        let path = "\(dir)/\(file)"
        do {
            try FileIO.writeExisting(path, value, create: !FileIO.exists("\(dir)/cgroup.procs"))
        } catch let e as RuntimeError {
            throw RuntimeError(.cgroup, e.message)
        }
    }
}
