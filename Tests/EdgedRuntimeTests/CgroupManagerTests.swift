// cgroup limit writing on a fake v2 tree, kubelet's cpu formulas, v1 for real, and implementation choice.

import EdgedTestSupport
@testable import EdgedRuntime
import Foundation
import Testing

struct CgroupManagerTests {
    private func read(_ path: String) -> String? {
        (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func v2WritesLimitsAndEnablesControllersOnFakeTree() throws {
        let tmp = try TempDir("cg2")
        defer { tmp.remove() }
        try "cpuset cpu io memory pids\n".write(toFile: tmp.sub("cgroup.controllers"), atomically: true, encoding: .utf8)
        let v2 = CgroupV2(root: tmp.path)
        let dirs = try v2.create(path: "edged/podU/c1", limits: CgroupLimits(memoryBytes: 64 << 20, cpuLimitMillis: 1500,
                                                                            cpuRequestMillis: 250, pids: 100))
        #expect(dirs == [tmp.sub("edged/podU/c1")])
        #expect(read(tmp.sub("cgroup.subtree_control")) == "+cpu +memory +pids")
        #expect(read(tmp.sub("edged/podU/cgroup.subtree_control")) == "+cpu +memory +pids")
        #expect(read(tmp.sub("edged/podU/c1/memory.max")) == "67108864")
        #expect(read(tmp.sub("edged/podU/c1/cpu.max")) == "150000 100000")
        #expect(read(tmp.sub("edged/podU/c1/cpu.weight")) == "10")
        #expect(read(tmp.sub("edged/podU/c1/pids.max")) == "100")
        #expect(!v2.oomKilled(path: "edged/podU/c1"))
        try "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n".write(toFile: tmp.sub("edged/podU/c1/memory.events"), atomically: true, encoding: .utf8)
        #expect(v2.oomKilled(path: "edged/podU/c1"))
    }

    @Test func v2MissingControllerIsAnError() throws {
        let tmp = try TempDir("cg2")
        defer { tmp.remove() }
        try "cpu\n".write(toFile: tmp.sub("cgroup.controllers"), atomically: true, encoding: .utf8)
        #expect(throws: RuntimeError.self) {
            try CgroupV2(root: tmp.path).create(path: "edged/podU/c1", limits: CgroupLimits(memoryBytes: 1 << 20))
        }
        // No limits: no controller needed.
        #expect(throws: Never.self) { try CgroupV2(root: tmp.path).create(path: "edged/podU/c2", limits: CgroupLimits()) }
    }

    @Test func kubeletCPUFormulas() {
        #expect(CgroupLimits.cpuQuotaMicros(millis: 250) == 25000)
        #expect(CgroupLimits.cpuQuotaMicros(millis: 1) == 1000)
        #expect(CgroupLimits.cpuShares(millis: 1000) == 1024)
        #expect(CgroupLimits.cpuShares(millis: 1) == 2)
        #expect(CgroupLimits.cpuWeight(millis: 1) == 1)
        #expect(CgroupLimits.cpuWeight(millis: 1000) == 39)
        #expect(CgroupLimits.cpuWeight(millis: 256_000) == 10000)
    }

    @Test func implementationChoice() throws {
        #expect(makeCgroupManager(root: "/sys/fs/cgroup/unified") is CgroupV2 == FileManager.default.fileExists(atPath: "/sys/fs/cgroup/unified/cgroup.controllers"))
        #expect(makeCgroupManager(root: "/sys/fs/cgroup") is CgroupV1 == !FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cgroup.controllers"))
    }

    @Test(.enabled(if: isRoot && FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory/memory.limit_in_bytes")))
    func v1ForReal() throws {
        let prefix = "edged-test-\(UInt32.random(in: 0...UInt32.max))"
        let v1 = CgroupV1(root: "/sys/fs/cgroup")
        let path = "\(prefix)/podX/c1"
        let dirs = try v1.create(path: path, limits: CgroupLimits(memoryBytes: 32 << 20, cpuLimitMillis: 500,
                                                                  cpuRequestMillis: 100, pids: 20))
        defer { try? v1.remove(path: path, keepingAncestors: 0) }
        #expect(dirs.count == v1.hierarchies.count)
        #expect(read("/sys/fs/cgroup/memory/\(path)/memory.limit_in_bytes") == "33554432")
        #expect(read("/sys/fs/cgroup/cpu/\(path)/cpu.cfs_quota_us") == "50000")
        #expect(read("/sys/fs/cgroup/cpu/\(path)/cpu.shares") == "102")
        #expect(read("/sys/fs/cgroup/pids/\(path)/pids.max") == "20")
        #expect(!v1.oomKilled(path: path))
        try v1.remove(path: path, keepingAncestors: 0)
        #expect(!FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory/\(prefix)"))
    }
}
