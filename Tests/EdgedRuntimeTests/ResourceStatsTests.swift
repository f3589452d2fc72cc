// CPU and memory figures: a busy container on the real (hybrid v1) layout, a real cgroup2 child of the unified
// hierarchy for cpu.stat, sample trees in the kernel's v1/v2 file formats for the memory arithmetic, and the node.

import EdgedCore
import EdgedTestSupport
@testable import EdgedRuntime
import Foundation
import Testing

struct ResourceStatsTests {
    private func write(_ path: String, _ text: String) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    @Test(.enabled(if: isRoot, "needs root")) func busyContainerShowsGrowingCPUAndMemory() async throws {
        try await withRuntime { f in
            let spec = f.spec("busy", ["sh", "-c", "while :; do :; done"])
            _ = try await f.runtime.start(spec, sandbox: try await f.sandbox())
            try await Task.sleep(for: .milliseconds(200))
            let a = try #require(await f.runtime.stats(id: spec.id))
            try await Task.sleep(for: .milliseconds(500))
            let b = try #require(await f.runtime.stats(id: spec.id))
            let cpuA = try #require(a.cpuUsageNanos)
            let cpuB = try #require(b.cpuUsageNanos)
            #expect(cpuB > cpuA + 100_000_000, "a busy loop used \(cpuB - cpuA) ns in 0.5 s")
            #expect((b.memoryUsageBytes ?? 0) > 0)
            #expect((b.memoryWorkingSetBytes ?? 0) > 0)
            #expect(b.memoryWorkingSetBytes! <= b.memoryUsageBytes!)
            #expect(await f.runtime.stats(id: "nope") == nil)
        }
    }

    /// A real child of the cgroup2 hierarchy (the empty unified one on this hybrid host, or the root on a pure
    /// v2 host): cpu.stat is there without any controller enabled.
    @Test(.enabled(if: isRoot && FileManager.default.fileExists(atPath: "/sys/fs/cgroup/unified/cgroup.procs"), "needs the unified hierarchy"))
    func v2CPUFromARealCgroup() async throws {
        let root = "/sys/fs/cgroup/unified"
        let path = "edged-test-stats-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: "\(root)/\(path)", withIntermediateDirectories: false)
        let busy = Process()
        busy.executableURL = URL(fileURLWithPath: "/bin/sh")
        busy.arguments = ["-c", "while :; do :; done"]
        try busy.run()
        defer {
            kill(busy.processIdentifier, SIGKILL)  // a shell busy loop may not take SIGTERM
            busy.waitUntilExit()
            try? "\(busy.processIdentifier)".write(toFile: "\(root)/cgroup.procs", atomically: false, encoding: .utf8)
            rmdir("\(root)/\(path)")
        }
        try "\(busy.processIdentifier)".write(toFile: "\(root)/\(path)/cgroup.procs", atomically: false, encoding: .utf8)
        let v2 = CgroupV2(root: root)
        let a = v2.stats(path: path).cpuUsageNanos ?? 0
        try await Task.sleep(for: .milliseconds(400))
        let s = v2.stats(path: path)
        let b = try #require(s.cpuUsageNanos)
        #expect(b > a + 50_000_000, "busy loop: \(b - a) ns")
        // Memory only with the memory controller enabled there.
        let controllers = (try? String(contentsOfFile: "\(root)/cgroup.subtree_control", encoding: .utf8)) ?? ""
        #expect((s.memoryUsageBytes != nil) == controllers.contains("memory"))
    }

    /// The kernel's v2 file formats (copied from a cgroup2 host), so the memory arithmetic is checked too.
    @Test func v2SampleTree() throws {
        let tmp = try TempDir("cg2stats")
        defer { tmp.remove() }
        let dir = tmp.sub("kubepods/podU/c1")
        try write("\(dir)/cpu.stat", "usage_usec 2345678\nuser_usec 2000000\nsystem_usec 345678\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\nnr_bursts 0\nburst_usec 0\n")
        try write("\(dir)/memory.current", "10485760\n")
        try write("\(dir)/memory.stat", "anon 4194304\nfile 6291456\nkernel 0\nactive_anon 4194304\ninactive_anon 0\nactive_file 2097152\ninactive_file 4194304\nunevictable 0\n")
        let s = CgroupV2(root: tmp.path).stats(path: "kubepods/podU/c1")
        #expect(s == ResourceStats(cpuUsageNanos: 2_345_678_000, memoryUsageBytes: 10_485_760, memoryWorkingSetBytes: 6_291_456))
        #expect(CgroupV2(root: tmp.path).stats(path: "missing") == ResourceStats())
    }

    /// v1 files, cpuacct mounted apart from cpu (as on this host) and co-mounted (cpu,cpuacct).
    @Test func v1SampleTrees() throws {
        let tmp = try TempDir("cg1stats")
        defer { tmp.remove() }
        let path = "edged/podU/c1"
        try FileManager.default.createDirectory(atPath: tmp.sub("cpu/\(path)"), withIntermediateDirectories: true)
        try write(tmp.sub("cpuacct/\(path)/cpuacct.usage"), "987654321\n")
        try write(tmp.sub("memory/\(path)/memory.usage_in_bytes"), "8388608\n")
        try write(tmp.sub("memory/\(path)/memory.stat"), "cache 4096\nrss 1048576\ninactive_file 100\ntotal_cache 4096\ntotal_rss 1048576\ntotal_inactive_file 2097152\ntotal_active_file 0\n")
        let v1 = CgroupV1(root: tmp.path)
        #expect(v1.hierarchies == ["memory", "cpu", "pids", "cpuacct"])
        #expect(v1.stats(path: path) == ResourceStats(cpuUsageNanos: 987_654_321, memoryUsageBytes: 8_388_608,
                                                      memoryWorkingSetBytes: 6_291_456))

        let co = try TempDir("cg1co")
        defer { co.remove() }
        try write(co.sub("cpu,cpuacct/\(path)/cpuacct.usage"), "5\n")
        try FileManager.default.createSymbolicLink(atPath: co.sub("cpu"), withDestinationPath: "cpu,cpuacct")
        try FileManager.default.createSymbolicLink(atPath: co.sub("cpuacct"), withDestinationPath: "cpu,cpuacct")
        let v1co = CgroupV1(root: co.path)
        #expect(v1co.hierarchies == ["memory", "cpu", "pids"])
        #expect(v1co.stats(path: path).cpuUsageNanos == 5)
        #expect(v1co.stats(path: path).memoryUsageBytes == nil)
        // Usage below inactive_file (a racy read) is a working set of 0, not a wrap-around.
        #expect(ResourceStats.workingSet(usage: 10, inactiveFile: 20) == 0)
    }

    @Test func nodeFromProc() throws {
        let tmp = try TempDir("procstats")
        defer { tmp.remove() }
        try write(tmp.sub("stat"), "cpu  100 20 30 5000 40 5 6 7 0 0\ncpu0 50 10 15 2500 20 2 3 3 0 0\nintr 1\n")
        try write(tmp.sub("meminfo"), "MemTotal:        1000 kB\nMemFree:          200 kB\nMemAvailable:     600 kB\nInactive(file):   300 kB\nHugePages_Total:       0\n")
        let s = ResourceStats.node(procRoot: tmp.path)
        let hz = UInt64(sysconf(Int32(_SC_CLK_TCK)))
        #expect(s.cpuUsageNanos == (100 + 20 + 30 + 5 + 6 + 7) * (1_000_000_000 / hz))
        #expect(s.memoryUsageBytes == 800 * 1024)
        #expect(s.memoryWorkingSetBytes == 500 * 1024)
        #expect(s.memoryAvailableBytes == 600 * 1024)

        let real = ResourceStats.node()
        #expect((real.cpuUsageNanos ?? 0) > 0)
        #expect((real.memoryWorkingSetBytes ?? 0) > 0)
        #expect((real.memoryAvailableBytes ?? 0) > 0)
    }
}
