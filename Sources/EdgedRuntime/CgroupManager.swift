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
/// → v2, anything else → v1 controllers below it. Pure choice, no side effects (tests on fake trees).
public func makeCgroupManager(root: String) -> any CgroupManager {
    if FileIO.exists("\(root)/cgroup.controllers") { return CgroupV2(root: root) }
    return CgroupV1(root: root)
}

/// The manager edged itself uses: on a cgroup2 host where edged runs as a systemd service (`Delegate=yes`),
/// its cgroups go below the unit's own cgroup, and edged's processes are first moved into the unit's
/// `supervisor` leaf (cgroup v2's no-internal-processes rule: controllers can be enabled for the children of
/// a cgroup only while it holds no process). Elsewhere (edged run by hand, cgroup v1): `makeCgroupManager`.
/// Throws `.cgroup` when the move into the leaf fails.
public func makeHostCgroupManager(root: String, procSelfCgroup: String = "/proc/self/cgroup",
                                  environment: [String: String] = ProcessEnvironment.current()) throws -> any CgroupManager {
    guard FileIO.exists("\(root)/cgroup.controllers") else { return CgroupV1(root: root) }
    guard CgroupDelegation.isCgroup2Mount(root),
          let delegation = CgroupDelegation.find(procSelfCgroup: FileIO.readString(procSelfCgroup) ?? "",
                                                 environment: environment) else { return CgroupV2(root: root) }
    try delegation.settle(fsRoot: root)
    return CgroupV2(root: root + delegation.unit, delegation: delegation)
}

/// The process environment as a dictionary (a parameter of `makeHostCgroupManager` so tests can pass their own).
public enum ProcessEnvironment {
    public static func current() -> [String: String] {
        var out: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") { out[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            p += 1
        }
        return out
    }
}

/// edged's place in a cgroup2 tree that systemd delegated to it (the unit has `Delegate=yes`, and
/// `DelegateSubgroup=supervisor` where systemd ≥ 254 knows it): `unit` is the unit's cgroup (e.g.
/// `/system.slice/edged.service`), pods go below it, and edged and its per-container monitors live in the leaf
/// `unit/supervisor`. A restarted edged finds the same `unit` whether systemd started it in the unit's cgroup
/// or already in the leaf, so re-adopted containers keep their cgroup paths.
public struct CgroupDelegation: Sendable, Equatable {
    /// The leaf for edged and the monitors; the unit file's DelegateSubgroup= names the same.
    public static let supervisorLeaf = "supervisor"

    public let unit: String
    public var supervisor: String { unit + "/" + CgroupDelegation.supervisorLeaf }

    public init(unit: String) { self.unit = unit }

    /// From /proc/self/cgroup's v2 line ("0::/system.slice/edged.service/supervisor"): the unit's cgroup when
    /// systemd started this process as a service (INVOCATION_ID is set) in the unit's supervisor leaf, which only
    /// systemd >= 254 does (`DelegateSubgroup=supervisor`); nil otherwise (a login session's scope, a container,
    /// the root, and a service started in the unit's own cgroup). The last is older systemd (Debian 12 has 252):
    /// there a restarted edged would be put into the unit's cgroup, which the kernel refuses (EBUSY) once pods with
    /// controllers exist below it, so edged keeps its pods in its own tree at the hierarchy's root instead, as
    /// kubelet's cgroupfs driver does.
    public static func find(procSelfCgroup: String, environment: [String: String]) -> CgroupDelegation? {
        guard environment["INVOCATION_ID"].map({ !$0.isEmpty }) == true else { return nil }
        guard let line = procSelfCgroup.split(separator: "\n").first(where: { $0.hasPrefix("0::/") }) else { return nil }
        var parts = line.dropFirst(3).split(separator: "/").map(String.init)
        guard parts.last == supervisorLeaf else { return nil }
        parts.removeLast()
        guard let last = parts.last, last.hasSuffix(".service") else { return nil }
        return CgroupDelegation(unit: "/" + parts.joined(separator: "/"))
    }

    /// True when `path` is a mounted cgroup2 file system (not a fake tree in a temporary directory).
    public static func isCgroup2Mount(_ path: String, mounts: String = "/proc/self/mounts") -> Bool {
        let want = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        for line in (FileIO.readString(mounts) ?? "").split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count > 2, f[2] == "cgroup2", f[1] == want { return true }
        }
        return false
    }

    /// Moves every process still in the unit's own cgroup (this edged; the monitors an edged that did not know
    /// the leaf left there) into the supervisor leaf, creating it. Idempotent. Throws `.cgroup` naming the cgroup
    /// and what to check when the leaf cannot be made or a process cannot be moved.
    public func settle(fsRoot: String) throws {
        let unitDir = fsRoot + unit
        let leaf = fsRoot + supervisor
        if mkdir(leaf, 0o755) != 0 && errno != EEXIST {
            throw RuntimeError(.cgroup, "create cgroup \(leaf): \(errnoString(errno)); edged's unit must have Delegate=yes "
                                     + "(systemctl cat edged)")
        }
        guard let procs = FileIO.readString("\(unitDir)/cgroup.procs") else {
            throw RuntimeError(.cgroup, "read \(unitDir)/cgroup.procs: \(errnoString(errno))")
        }
        for pid in procs.split(whereSeparator: \.isWhitespace) {
            do {
                try FileIO.writeExisting("\(leaf)/cgroup.procs", String(pid))
            } catch let e as RuntimeError {
                // A process that exited meanwhile is fine.
                if FileIO.exists("/proc/\(pid)") {
                    throw RuntimeError(.cgroup, "move process \(pid) into \(leaf) (cgroup v2 allows no processes in "
                                             + "a cgroup whose children have controllers): \(e.message)")
                }
            }
        }
    }
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
