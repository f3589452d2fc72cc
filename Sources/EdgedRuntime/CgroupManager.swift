// cgroups behind one protocol: CgroupV2 (unified) and CgroupV1 (one directory per controller).

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Resource limits of one container, in Kubernetes units.
public struct CgroupLimits: Sendable, Equatable {
    public var memoryBytes: Int64?
    public var cpuLimitMillis: Int64?
    public var cpuRequestMillis: Int64?
    public var pids: Int64?

    public init(memoryBytes: Int64? = nil, cpuLimitMillis: Int64? = nil, cpuRequestMillis: Int64? = nil,
                pids: Int64? = nil) {
        self.memoryBytes = memoryBytes
        self.cpuLimitMillis = cpuLimitMillis
        self.cpuRequestMillis = cpuRequestMillis
        self.pids = pids
    }

    /// The CFS period kubelet uses (100 ms).
    public static let cpuPeriodMicros: Int64 = 100_000

    /// CFS quota for a cpu limit (kubelet's MilliCPUToQuota, minimum 1 ms).
    public static func cpuQuotaMicros(millis: Int64) -> Int64 {
        max(millis * cpuPeriodMicros / 1000, 1000)
    }

    /// cgroup v1 cpu.shares for a cpu request (kubelet's MilliCPUToShares: 2...262144).
    public static func cpuShares(millis: Int64) -> Int64 {
        min(max(millis * 1024 / 1000, 2), 262_144)
    }

    /// cgroup v2 cpu.weight for a cpu request (shares mapped to 1...10000 like runc/kubelet).
    public static func cpuWeight(millis: Int64) -> Int64 {
        1 + ((cpuShares(millis: millis) - 2) * 9999) / 262_142
    }
}

/// Creates, limits and removes the cgroups of containers. `path` is relative to each hierarchy root,
/// e.g. "edged/pod<uid>/<containerID>".
///
/// Errors: `create` throws `.cgroup` when a directory or control file cannot be written (e.g. a controller
/// a limit needs is not available); `remove` throws `.cgroup` when a cgroup stays busy.
public protocol CgroupManager: Sendable {
    /// Creates the cgroup(s) for `path` and writes `limits`; returns the directories a process must join.
    func create(path: String, limits: CgroupLimits) throws -> [String]
    /// The directories of `path` (whether or not they exist).
    func directories(path: String) -> [String]
    /// True when the kernel OOM-killed a process of this cgroup.
    func oomKilled(path: String) -> Bool
    /// Removes the cgroup(s) of `path`, retrying briefly while they are busy, then empty parents up to the prefix.
    func remove(path: String, keepingAncestors: Int) throws
    /// CPU time and memory of the cgroup `path` (nil figures where this layout has no such file).
    func stats(path: String) -> ResourceStats
}

/// Picks the implementation for the hierarchy mounted at `root`: a cgroup2 root (it has cgroup.controllers)
/// → v2, anything else → v1 controllers below it.
public func makeCgroupManager(root: String) -> any CgroupManager {
    if FileIO.exists("\(root)/cgroup.controllers") { return CgroupV2(root: root) }
    return CgroupV1(root: root)
}

enum CgroupFS {
    /// rmdir with retries: a cgroup stays busy for a moment after its last process exits.
    static func removeDir(_ dir: String) throws {
        for attempt in 0..<50 {
            if rmdir(dir) == 0 || errno == ENOENT { return }
            let e = errno
            if e != EBUSY || attempt == 49 { throw RuntimeError(.cgroup, "remove cgroup \(dir): \(errnoString(e))") }
            usleep(20_000)
        }
    }

    /// Removes now-empty ancestors of `dir`, keeping the top `keep` components of `path` below `root`.
    static func removeEmptyParents(root: String, path: String, keep: Int) {
        var parts = path.split(separator: "/").map(String.init)
        parts.removeLast()
        while parts.count > keep {
            if rmdir(root + "/" + parts.joined(separator: "/")) != 0 { return }
            parts.removeLast()
        }
    }
}
