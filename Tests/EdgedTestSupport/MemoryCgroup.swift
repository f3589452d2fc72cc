// A memory cgroup with a hard limit, to run edged as on a small gateway: `edged-bench memory` lowers the limit step
// by step, the 48 MiB CI test (MemoryLimitTests) holds it at one. edged is started inside it through `wrap(_:)`,
// so everything it allocates and every page of its binary it touches is charged there from the first instruction;
// the monitors it forks inherit the cgroup, the pods go to their own cgroups under --cgroup-root as always.
//
// cgroup v2 (memory.max, memory.current, memory.peak, memory.events oom_kill, memory.stat anon/pgmajfault) or v1
// (memory.limit_in_bytes, memory.usage_in_bytes, memory.max_usage_in_bytes, memory.oom_control oom_kill,
// memory.stat rss/pgmajfault), whichever has the memory controller; the file names and their meaning are the
// kernel's (Documentation/admin-guide/cgroup-v2.rst and cgroup-v1/memory.rst).

import Foundation

public final class MemoryCgroup: Sendable {
    public enum Version: String, Sendable { case v1, v2 }

    /// The cgroup's directory.
    public let path: String
    public let version: Version

    /// A cgroup directory as it is (tests of the file parsing use a plain directory).
    public init(path: String, version: Version) {
        self.path = path
        self.version = version
    }

    /// Creates (or reuses) `name` at the top of the hierarchy that has the memory controller.
    public init(name: String) throws {
        let fm = FileManager.default
        let v2Controllers = (try? String(contentsOfFile: "/sys/fs/cgroup/cgroup.controllers", encoding: .utf8)) ?? ""
        if v2Controllers.split(whereSeparator: { $0 == " " || $0 == "\n" }).contains("memory") {
            version = .v2
            path = "/sys/fs/cgroup/\(name)"
        } else if fm.fileExists(atPath: "/sys/fs/cgroup/memory/memory.limit_in_bytes") {
            version = .v1
            path = "/sys/fs/cgroup/memory/\(name)"
        } else {
            throw TestFailure("no memory cgroup controller: neither /sys/fs/cgroup/cgroup.controllers lists memory nor is "
                              + "/sys/fs/cgroup/memory mounted")
        }
        if !fm.fileExists(atPath: path) {
            guard mkdir(path, 0o755) == 0 || errno == EEXIST else {
                throw TestFailure("cannot create the memory cgroup \(path): \(String(cString: strerror(errno)))")
            }
        }
    }

    /// The hard limit: memory.max (v2) or memory.limit_in_bytes (v1). Lowering it below what the cgroup uses makes
    /// the kernel reclaim first, in the writer's context: v2 OOM-kills when it cannot, v1 keeps reclaiming while any
    /// page comes free (a process that re-reads its code keeps it going) and refuses (EBUSY) only when none does.
    public func setLimit(bytes: Int?) throws {
        let file = version == .v2 ? "memory.max" : "memory.limit_in_bytes"
        let value = bytes.map(String.init) ?? (version == .v2 ? "max" : "-1")
        try write(file, value)
    }

    /// memory.current (v2) or memory.usage_in_bytes (v1): everything charged, page cache included.
    public var usageBytes: Int { number(version == .v2 ? "memory.current" : "memory.usage_in_bytes") ?? 0 }

    /// The high-water mark since it was last reset (memory.peak needs Linux 5.19 on v2; nil without it).
    public var peakBytes: Int? { number(version == .v2 ? "memory.peak" : "memory.max_usage_in_bytes") }

    /// Resets the high-water mark where the kernel allows it (v1; v2's memory.peak is reset by writing to it on 6.12+).
    public func resetPeak() { try? write(version == .v2 ? "memory.peak" : "memory.max_usage_in_bytes", "0") }

    /// OOM kills in this cgroup so far (memory.events or memory.oom_control, `oom_kill`).
    public var oomKills: Int { keyed(version == .v2 ? "memory.events" : "memory.oom_control")["oom_kill"] ?? 0 }

    /// Anonymous memory of every process in the cgroup (memory.stat `anon` on v2, `rss` on v1), in bytes.
    public var anonymousBytes: Int { stat[version == .v2 ? "anon" : "rss"] ?? 0 }

    /// Page cache charged to the cgroup (memory.stat `file` on v2, `cache` on v1), in bytes: code pages included.
    public var fileBytes: Int { stat[version == .v2 ? "file" : "cache"] ?? 0 }

    /// Of that, the pages mapped into a process (memory.stat `file_mapped` on v2, `mapped_file` on v1).
    public var mappedFileBytes: Int { stat[version == .v2 ? "file_mapped" : "mapped_file"] ?? 0 }

    public var stat: [String: Int] { keyed("memory.stat") }

    /// The processes in the cgroup.
    public var pids: [Int32] {
        ((try? String(contentsOfFile: "\(path)/cgroup.procs", encoding: .utf8)) ?? "").split(separator: "\n").compactMap { Int32($0) }
    }

    /// argv that runs `argv` inside this cgroup: a shell moves itself in, then execs the command (same PID).
    public func wrap(_ argv: [String]) -> [String] {
        ["/bin/sh", "-c", "echo $$ > \"$0\" && exec \"$@\"", "\(path)/cgroup.procs"] + argv
    }

    /// Removes the cgroup; its processes must have exited (SIGKILLs what is left, waits up to 5 s).
    public func remove() {
        for pid in pids { kill(pid, SIGKILL) }
        let deadline = Date().addingTimeInterval(5)
        while !pids.isEmpty && Date() < deadline { usleep(50_000) }
        rmdir(path)
    }

    /// Writes dirty pages back and drops the clean page cache, so that the next process to touch a file's pages
    /// (e.g. edged's code) is charged for them. Pages some process maps stay (and stay charged where they are).
    public static func dropPageCache() throws {
        sync()
        let fd = open("/proc/sys/vm/drop_caches", O_WRONLY)
        guard fd >= 0 else { throw TestFailure("cannot open /proc/sys/vm/drop_caches: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard Glibc.write(fd, "3\n", 2) == 2 else {
            throw TestFailure("writing 3 to /proc/sys/vm/drop_caches: \(String(cString: strerror(errno)))")
        }
    }

    private func write(_ file: String, _ value: String) throws {
        let fd = open("\(path)/\(file)", O_WRONLY)
        guard fd >= 0 else { throw TestFailure("cannot open \(path)/\(file): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = Array(value.utf8)
        guard Glibc.write(fd, bytes, bytes.count) == bytes.count else {
            let e = errno
            throw TestFailure("writing \(value) to \(path)/\(file): \(String(cString: strerror(e)))"
                              + (e == EBUSY ? " (the kernel could not reclaim enough to fit under it)" : ""))
        }
    }

    private func number(_ file: String) -> Int? {
        guard let s = try? String(contentsOfFile: "\(path)/\(file)", encoding: .utf8) else { return nil }
        return Int(s.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    private func keyed(_ file: String) -> [String: Int] {
        var out: [String: Int] = [:]
        for line in ((try? String(contentsOfFile: "\(path)/\(file)", encoding: .utf8)) ?? "").split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 2, let v = Int(f[1]) { out[String(f[0])] = v }
        }
        return out
    }
}

/// Per-process memory figures from /proc (KB, as the kernel prints them).
public struct ProcessMemory: Sendable {
    /// smaps_rollup: proportional set size, anonymous, and resident.
    public var pssKB = 0, anonymousKB = 0, rssKB = 0
    /// /proc/PID/stat field 12: major page faults so far (pages read from disk, e.g. code evicted under pressure).
    public var majorFaults = 0

    public init?(pid: Int32) {
        guard let rollup = try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8),
              let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return nil }
        for line in rollup.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 2, let v = Int(f[1]) else { continue }
            switch f[0] {
            case "Pss:": pssKB = v
            case "Anonymous:": anonymousKB = v
            case "Rss:": rssKB = v
            default: break
            }
        }
        // The command name (field 2) may hold spaces; count the fields after its closing parenthesis.
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let rest = stat[stat.index(after: close)...].split(separator: " ")
        // rest[0] is field 3 (state); majflt is field 12.
        guard rest.count > 9, let maj = Int(rest[9]) else { return nil }
        majorFaults = maj
    }
}

/// read_ahead_kb of the block device a path is on (the whole disk's queue for a partition).
public struct ReadAhead: Sendable {
    public let file: String

    public init?(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        let dev = UInt64(st.st_dev)
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & ~UInt64(0xfff))
        let minor = (dev & 0xff) | ((dev >> 12) & ~UInt64(0xff))
        let base = "/sys/dev/block/\(major):\(minor)"
        for candidate in ["\(base)/queue/read_ahead_kb", "\(base)/../queue/read_ahead_kb"]
        where FileManager.default.fileExists(atPath: candidate) {
            file = candidate
            return
        }
        return nil
    }

    public var kb: Int? { (try? String(contentsOfFile: file, encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } }

    public func set(_ kb: Int) throws {
        do {
            try "\(kb)\n".write(toFile: file, atomically: false, encoding: .utf8)
        } catch {
            throw TestFailure("cannot set \(file) to \(kb): \(error)")
        }
    }
}
