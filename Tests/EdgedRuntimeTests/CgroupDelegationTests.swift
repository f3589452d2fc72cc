// edged under systemd with cgroup v2: finding the delegated unit cgroup from /proc/self/cgroup, moving processes
// into the supervisor leaf (for real, on the host's cgroup2 mount), and the unit file naming the same leaf.

import EdgedTestSupport
@testable import EdgedRuntime
import Foundation
import Testing

/// The host's cgroup2 mount: /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a hybrid one.
private let cgroup2Mount: String? = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"].first { CgroupDelegation.isCgroup2Mount($0) }

struct CgroupDelegationTests {
    private let systemd = ["INVOCATION_ID": "0123456789abcdef0123456789abcdef"]

    @Test func findsTheUnitCgroupOfASystemdService() {
        // Started by systemd >= 254 in DelegateSubgroup=supervisor.
        #expect(CgroupDelegation.find(procSelfCgroup: "0::/system.slice/edged.service/supervisor\n", environment: systemd)
                == CgroupDelegation(unit: "/system.slice/edged.service"))
        // Hybrid hosts list the v1 hierarchies first.
        #expect(CgroupDelegation.find(procSelfCgroup: "4:memory:/system.slice/edged.service\n1:name=systemd:/system.slice/edged.service\n0::/system.slice/edged.service/supervisor\n",
                                      environment: systemd)?.unit == "/system.slice/edged.service")
        // systemd < 254 ignores DelegateSubgroup= and starts edged in the unit's own cgroup: no delegation (a
        // restarted edged could not be put back into a cgroup with pods below it), pods in edged's own tree.
        #expect(CgroupDelegation.find(procSelfCgroup: "0::/system.slice/edged.service\n", environment: systemd) == nil)
        #expect(CgroupDelegation(unit: "/system.slice/edged.service").supervisor == "/system.slice/edged.service/supervisor")
    }

    @Test func noDelegationOutsideASystemdService() {
        // Run by hand from an ssh login: a session scope, no INVOCATION_ID.
        #expect(CgroupDelegation.find(procSelfCgroup: "0::/user.slice/user-0.slice/session-3.scope\n", environment: [:]) == nil)
        #expect(CgroupDelegation.find(procSelfCgroup: "0::/user.slice/user-0.slice/session-3.scope\n", environment: systemd) == nil)
        #expect(CgroupDelegation.find(procSelfCgroup: "0::/system.slice/edged.service\n", environment: [:]) == nil)
        #expect(CgroupDelegation.find(procSelfCgroup: "0::/system.slice/edged.service\n", environment: ["INVOCATION_ID": ""]) == nil)
        // The root (a container, or no systemd) and a v1-only file.
        #expect(CgroupDelegation.find(procSelfCgroup: "0::/\n", environment: systemd) == nil)
        #expect(CgroupDelegation.find(procSelfCgroup: "4:memory:/system.slice/edged.service\n", environment: systemd) == nil)
        #expect(CgroupDelegation.find(procSelfCgroup: "", environment: systemd) == nil)
    }

    @Test func aFakeTreeIsNeverTreatedAsDelegated() throws {
        let tmp = try TempDir("cgdeleg")
        defer { tmp.remove() }
        try "cpu memory pids\n".write(toFile: tmp.sub("cgroup.controllers"), atomically: true, encoding: .utf8)
        try "0::/system.slice/edged.service\n".write(toFile: tmp.sub("self-cgroup"), atomically: true, encoding: .utf8)
        #expect(!CgroupDelegation.isCgroup2Mount(tmp.path))
        let m = try makeHostCgroupManager(root: tmp.path, procSelfCgroup: tmp.sub("self-cgroup"), environment: systemd)
        let v2 = try #require(m as? CgroupV2)
        #expect(v2.root == tmp.path)
        #expect(v2.delegation == nil)
        #expect(!FileManager.default.fileExists(atPath: tmp.sub("system.slice")))
    }

    /// The real kernel: a process in a fake "unit" cgroup is moved into its supervisor leaf, and pod cgroups are
    /// created below the unit (the hybrid host's cgroup2 has no controllers, so the no-internal-processes rule
    /// itself is checked in the gateway VM: cross/gateway-vm.sh step 2).
    @Test(.enabled(if: isRoot && cgroup2Mount != nil, "needs root and a cgroup2 mount"))
    func movesTheUnitsProcessesIntoTheSupervisorLeafForReal() throws {
        let fsRoot = try #require(cgroup2Mount)
        let unit = "/edged-test-\(UInt32.random(in: 0...UInt32.max)).service"
        try FileManager.default.createDirectory(atPath: fsRoot + unit, withIntermediateDirectories: false)
        let sleeper = Process()
        sleeper.executableURL = URL(fileURLWithPath: "/bin/sleep")
        sleeper.arguments = ["60"]
        try sleeper.run()
        let pid = sleeper.processIdentifier
        defer {
            kill(pid, SIGKILL)  // SIGTERM may be blocked in the test runner's threads, and so in the child
            sleeper.waitUntilExit()
            for dir in ["/supervisor", "/edged/podU/c1", "/edged/podU", "/edged", "/supervisor", ""] { rmdir(fsRoot + unit + dir) }
        }
        try "\(pid)".write(toFile: fsRoot + unit + "/cgroup.procs", atomically: false, encoding: .utf8)
        let tmp = try TempDir("cgdeleg")
        defer { tmp.remove() }
        // systemd < 254 starts edged in the unit's own cgroup: nothing is moved, pods go to edged's tree at the root.
        try "0::\(unit)\n".write(toFile: tmp.sub("self-cgroup"), atomically: true, encoding: .utf8)
        let old = try #require(try makeHostCgroupManager(root: fsRoot, procSelfCgroup: tmp.sub("self-cgroup"), environment: systemd) as? CgroupV2)
        #expect(old.root == fsRoot && old.delegation == nil)
        #expect(!FileManager.default.fileExists(atPath: fsRoot + unit + "/supervisor"))
        // systemd >= 254 starts edged in the supervisor leaf; a process an older edged left in the unit's own
        // cgroup (the sleeper, standing in for a monitor) is moved into the leaf.
        try "0::\(unit)/supervisor\n".write(toFile: tmp.sub("self-cgroup"), atomically: true, encoding: .utf8)

        let m = try makeHostCgroupManager(root: fsRoot, procSelfCgroup: tmp.sub("self-cgroup"), environment: systemd)
        let v2 = try #require(m as? CgroupV2)
        #expect(v2.root == fsRoot + unit)
        #expect(v2.delegation == CgroupDelegation(unit: unit))
        let own = try String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8)
        #expect(own.split(separator: "\n").contains("0::\(unit)/supervisor"))
        #expect((try String(contentsOfFile: fsRoot + unit + "/cgroup.procs", encoding: .utf8)).isEmpty)
        // Idempotent: the restarted edged (already in the leaf) settles again without error.
        try CgroupDelegation(unit: unit).settle(fsRoot: fsRoot)
        #expect(try String(contentsOfFile: fsRoot + unit + "/supervisor/cgroup.procs", encoding: .utf8)
                .split(separator: "\n").contains("\(pid)"))
        // Pods go below the unit; a container process can join its leaf.
        let dirs = try v2.create(path: "edged/podU/c1", limits: CgroupLimits())
        #expect(dirs == [fsRoot + unit + "/edged/podU/c1"])
        try "\(pid)".write(toFile: dirs[0] + "/cgroup.procs", atomically: false, encoding: .utf8)
        #expect(try String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8).contains("0::\(unit)/edged/podU/c1"))
    }

    @Test(.enabled(if: isRoot && cgroup2Mount != nil, "needs root and a cgroup2 mount"))
    func aMissingUnitCgroupIsReportedWithWhatToCheck() throws {
        let fsRoot = try #require(cgroup2Mount)
        let unit = "/edged-missing-\(UInt32.random(in: 0...UInt32.max)).slice/edged.service"
        let error = try #require(throws: RuntimeError.self) { try CgroupDelegation(unit: unit).settle(fsRoot: fsRoot) }
        #expect(error.code == .cgroup)
        #expect(error.message.contains(fsRoot + unit + "/supervisor"))
        #expect(error.message.contains("Delegate=yes"))
    }

    /// The unit file starts edged in the leaf edged moves itself into (DelegateSubgroup=, systemd >= 254).
    @Test func unitFileNamesTheSameSupervisorLeaf() throws {
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOf: repo.appendingPathComponent("systemd/edged.service"), encoding: .utf8)
        let settings = text.split(separator: "\n").filter { !$0.hasPrefix("#") }
        #expect(settings.contains("Delegate=yes"))
        #expect(settings.contains("DelegateSubgroup=\(CgroupDelegation.supervisorLeaf)"))
    }
}
