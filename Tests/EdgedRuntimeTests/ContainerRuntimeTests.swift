// Real containers from a busybox rootfs: logs, process setup, isolation, security, limits, lifecycle.

import EdgedCore
import EdgedTestSupport
@testable import EdgedRuntime
import Foundation
import Testing

@Suite(.enabled(if: isRoot, "needs root"))
struct ContainerRuntimeTests {
    @Test func echoWritesCRILogLines() async throws {
        try await withRuntime { f in
            let (info, recs) = try await f.run(f.spec("echo", ["sh", "-c", "echo hello; echo oops >&2"]))
            #expect(exitCode(info) == 0)
            #expect(info.status.reason == "Completed")
            let all = try f.logRecords(f.spec("echo", []).logPath)
            #expect(all.allSatisfy { $0.tag == "F" })
            #expect(recs.contains { $0 == ("stdout", "hello") })
            #expect(recs.contains { $0 == ("stderr", "oops") })
        }
    }

    @Test func exitCodeIsPropagated() async throws {
        try await withRuntime { f in
            let (info, _) = try await f.run(f.spec("exit", ["sh", "-c", "exit 3"]))
            #expect(exitCode(info) == 3)
            #expect(info.status.reason == "Error")
        }
    }

    @Test func envCwdArgvAndPid1() async throws {
        try await withRuntime { f in
            let spec = f.spec("env", ["sh", "-c", "echo $FOO; pwd; echo $0 $1; echo $$; hostname", "zero", "one"]) {
                $0.env = ["FOO=bar baz"]
                $0.workingDir = "/work/dir"
            }
            let (info, recs) = try await f.run(spec)
            #expect(exitCode(info) == 0)
            #expect(recs.map(\.1) == ["bar baz", "/work/dir", "zero one", "1", "pod"])
        }
    }

    @Test func userFromNumbersAndFromPasswd() async throws {
        try await withRuntime { f in
            let (i1, r1) = try await f.run(f.spec("num", ["sh", "-c", "id -u; id -g"]) { $0.user = "1234:2345" })
            #expect(exitCode(i1) == 0)
            #expect(r1.map(\.1) == ["1234", "2345"])
            let (i2, r2) = try await f.run(f.spec("name", ["sh", "-c", "id -u; id -g; id -G; echo $HOME"]) { $0.user = "app" })
            #expect(exitCode(i2) == 0)
            #expect(r2.map(\.1) == ["1000", "1000", "1000 2000", "/home/app"])
            let (i3, r3) = try await f.run(f.spec("runas", ["sh", "-c", "id -u; id -g"]) {
                $0.user = "app"
                $0.runAsUser = 4000
                $0.runAsGroup = 5000
            })
            #expect(exitCode(i3) == 0)
            #expect(r3.map(\.1) == ["4000", "5000"])
        }
    }

    @Test func unknownUserFailsClearly() async throws {
        try await withRuntime { f in
            let sb = try await f.sandbox()
            await #expect(throws: RuntimeError.self) {
                try await f.runtime.start(f.spec("nouser", ["true"]) { $0.user = "ghost" }, sandbox: sb)
            }
        }
    }

    @Test func networkNamespaceIsolation() async throws {
        try await withRuntime { f in
            let (_, recs) = try await f.run(f.spec("net", ["sh", "-c", "cat /proc/net/dev"]))
            let ifaces = recs.dropFirst(2).map { $0.1.split(separator: ":")[0].trimmingCharacters(in: .whitespaces) }
            #expect(ifaces == ["lo"])
        }
        try await withRuntime { f in
            let (_, recs) = try await f.run(f.spec("hostnet", ["sh", "-c", "cat /proc/net/dev"]), hostNetwork: true)
            #expect(recs.count > 3)
        }
    }

    @Test func readOnlyRootfs() async throws {
        try await withRuntime { f in
            let (info, recs) = try await f.run(f.spec("ro", ["sh", "-c", "touch /x"]) { $0.readOnlyRootfs = true })
            #expect(exitCode(info) != 0)
            #expect(f.output(recs).contains("Read-only file system"))
            let (rw, _) = try await f.run(f.spec("rw", ["sh", "-c", "touch /x"]))
            #expect(exitCode(rw) == 0)
            #expect(!FileManager.default.fileExists(atPath: "\(f.rootfs)/x"), "writes go to the upper dir")
        }
    }

    @Test func volumesReadWriteAndReadOnly() async throws {
        try await withRuntime { f in
            let vol = f.tmp.sub("vol")
            try FileManager.default.createDirectory(atPath: vol, withIntermediateDirectories: true)
            try "data\n".write(toFile: "\(vol)/in", atomically: true, encoding: .utf8)
            let (i1, r1) = try await f.run(f.spec("volrw", ["sh", "-c", "cat /data/in && echo out > /data/out"]) {
                $0.mounts = [MountSpec(source: vol, destination: "/data", readOnly: false)]
            })
            #expect(exitCode(i1) == 0)
            #expect(r1.map(\.1) == ["data"])
            #expect((try? String(contentsOfFile: "\(vol)/out", encoding: .utf8)) == "out\n")
            let (i2, r2) = try await f.run(f.spec("volro", ["sh", "-c", "cat /data/in && echo x > /data/out2"]) {
                $0.mounts = [MountSpec(source: vol, destination: "/data", readOnly: true)]
            })
            #expect(exitCode(i2) != 0)
            #expect(f.output(r2).contains("Read-only file system"))
        }
    }

    private func capEff(_ f: RuntimeFixture, _ name: String, _ configure: @escaping (inout ContainerSpec) -> Void) async throws -> String {
        let (_, recs) = try await f.run(f.spec(name, ["sh", "-c", "grep -E 'CapEff|NoNewPrivs' /proc/self/status"], configure: configure))
        return f.output(recs)
    }

    @Test func capabilitiesDefaultDropAdd() async throws {
        try await withRuntime { f in
            let def = try await capEff(f, "capdef") { _ in }
            #expect(def.contains("CapEff:\t00000000a80425fb"))
            let none = try await capEff(f, "capnone") { $0.capDrop = ["ALL"] }
            #expect(none.contains("CapEff:\t0000000000000000"))
            let added = try await capEff(f, "capadd") {
                $0.capAdd = ["NET_ADMIN"]
                $0.capDrop = ["CAP_KILL"]
            }
            #expect(added.contains("CapEff:\t00000000a80435db"))
        }
    }

    @Test func noNewPrivileges() async throws {
        try await withRuntime { f in
            let on = try await capEff(f, "nnp") { $0.noNewPrivileges = true }
            #expect(on.contains("NoNewPrivs:\t1"))
            let off = try await capEff(f, "nonnp") { _ in }
            #expect(off.contains("NoNewPrivs:\t0"))
        }
    }

    /// RuntimeDefault blocks unshare(2) (CAP_SYS_ADMIN-only in the profile; creating a user namespace needs no
    /// capability, so only seccomp stops it); Unconfined lets it through.
    @Test func seccompRuntimeDefaultBlocksUnshare() async throws {
        try await withRuntime { f in
            let (blocked, recs) = try await f.run(f.spec("sc", ["/bin/busybox", "unshare", "-U", "true"]))
            #expect(exitCode(blocked) != 0)
            #expect(f.output(recs).contains("Operation not permitted"))
            let (allowed, r2) = try await f.run(f.spec("unconf", ["/bin/busybox", "unshare", "-U", "true"]) {
                $0.seccomp = .unconfined
            })
            #expect(exitCode(allowed) == 0, "\(f.output(r2))")
        }
    }

    @Test func privilegedCanMount() async throws {
        try await withRuntime { f in
            let (info, recs) = try await f.run(f.spec("priv", ["sh", "-c", "mount -t tmpfs t /tmp && echo ok"]) {
                $0.privileged = true
            })
            #expect(exitCode(info) == 0, "\(f.output(recs))")
            let (plain, _) = try await f.run(f.spec("unpriv", ["sh", "-c", "mount -t tmpfs t /tmp"]))
            #expect(exitCode(plain) != 0)
        }
    }

    @Test func memoryLimitOOMKilled() async throws {
        try await withRuntime { f in
            let (info, _) = try await f.run(f.spec("oom", ["dd", "if=/dev/zero", "of=/dev/shm/fill", "bs=1M", "count=60"]) {
                $0.memoryLimitBytes = 16 << 20
            })
            guard case let .exited(code, signal, oom, _, _, _) = info.status else { Issue.record("running"); return }
            #expect(code == 137)
            #expect(signal == 9)
            #expect(oom)
            #expect(info.status.reason == "OOMKilled")
        }
    }

    @Test func pidsLimit() async throws {
        try await withRuntime { f in
            let (info, recs) = try await f.run(f.spec("pids", ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait"]) {
                $0.pidsLimit = 4
            })
            #expect(exitCode(info) != nil)
            #expect(f.output(recs).contains("fork"))
        }
    }

    @Test func cpuLimitsWritten() async throws {
        try await withRuntime { f in
            let spec = f.spec("cpu", ["sleep", "30"]) {
                $0.cpuLimitMillis = 250
                $0.cpuRequestMillis = 500
            }
            _ = try await f.runtime.start(spec, sandbox: try await f.sandbox())
            let dir = "/sys/fs/cgroup/cpu/\(f.prefix)/pod\(f.podUID)/\(spec.id)"
            func read(_ n: String) -> String { ((try? String(contentsOfFile: "\(dir)/\(n)", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines) }
            #expect(read("cpu.cfs_quota_us") == "25000")
            #expect(read("cpu.cfs_period_us") == "100000")
            #expect(read("cpu.shares") == "512")
        }
    }

    @Test func execIntoRunningContainer() async throws {
        try await withRuntime { f in
            let spec = f.spec("exec", ["sleep", "30"]) { $0.env = ["GREETING=hi"] }
            let started = try await f.runtime.start(spec, sandbox: try await f.sandbox())
            guard case let .running(pid, _) = started.status else { Issue.record("not running"); return }
            #expect(pid > 1)
            let r = try await f.runtime.exec(id: spec.id, argv: ["sh", "-c", "echo $GREETING; id -u; hostname; cat /proc/1/comm; exit 4"], timeout: .seconds(10))
            #expect(r.exitCode == 4)
            #expect(r.output == "hi\n0\npod\nsleep\n")
            let missing = try await f.runtime.exec(id: spec.id, argv: ["/bin/nope"], timeout: .seconds(10))
            #expect(missing.exitCode == 127)
            #expect(missing.output.contains("exec /bin/nope: No such file or directory"))
            await #expect(throws: RuntimeError.self) {
                try await f.runtime.exec(id: spec.id, argv: ["sleep", "10"], timeout: .milliseconds(300))
            }
        }
    }

    @Test func stopEscalatesToSIGKILLAfterGrace() async throws {
        try await withRuntime { f in
            let sb = try await f.sandbox()
            let trap = f.spec("trap", ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"])
            _ = try await f.runtime.start(trap, sandbox: sb)
            let t0 = ContinuousClock.now
            let info = try await f.runtime.stop(id: trap.id, grace: .seconds(1))
            #expect(ContinuousClock.now - t0 >= .seconds(1))
            guard case let .exited(code, sig, _, _, _, _) = info.status else { Issue.record("running"); return }
            #expect(code == 137 && sig == 9)

            let polite = f.spec("polite", ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"])
            _ = try await f.runtime.start(polite, sandbox: sb)
            try await Task.sleep(for: .milliseconds(200))
            let t1 = ContinuousClock.now
            let p = try await f.runtime.stop(id: polite.id, grace: .seconds(10))
            #expect(ContinuousClock.now - t1 < .seconds(5))
            #expect(exitCode(p) == 0)
        }
    }

    @Test func readoptionAcrossRuntimeInstances() async throws {
        try await withRuntime { f in
            // Exits 7 on SIGTERM, which the test sends itself once no runtime instance is watching.
            let spec = f.spec("readopt", ["sh", "-c", "trap 'exit 7' TERM; while true; do sleep 0.1; done"])
            _ = try await f.runtime.start(spec, sandbox: try await f.sandbox())
            var pid: Int32 = 0
            do {
                let second = try f.newRuntime()
                let seen = try #require(await second.inspect(id: spec.id))
                #expect(seen.status.isRunning)
                #expect(seen.spec == spec)
                if case .running(let p, _) = seen.status { pid = p }
            }
            #expect(pid > 0)
            Glibc.kill(pid, SIGTERM)
            // Let it exit with no new instance watching, then ask a third one.
            let state = ContainerStore(dir: "\(f.config.stateDir)/\(spec.id)")
            while state.readExit() == nil { try await Task.sleep(for: .milliseconds(100)) }
            let third = try f.newRuntime()
            let info = try #require(await third.inspect(id: spec.id))
            #expect(exitCode(info) == 7)
            #expect(info.status.reason == "Error")
        }
    }

    @Test func monitorKilledReportsUnknown() async throws {
        try await withRuntime { f in
            let spec = f.spec("victim", ["sleep", "60"])
            let started = try await f.runtime.start(spec, sandbox: try await f.sandbox())
            guard case let .running(pid, _) = started.status else { Issue.record("not running"); return }
            kill(started.monitorPid, SIGKILL)
            let info = try #require(await f.runtime.waitForExit(id: spec.id))
            #expect(exitCode(info) == 255)
            #expect(info.status.reason == "Unknown")
            try await Task.sleep(for: .milliseconds(200))
            #expect(FileIO.startTicks(pid: pid) == nil, "the container process is gone")
            let again = try #require(await f.newRuntime().inspect(id: spec.id))
            #expect(again.status.reason == "Unknown")
        }
    }

    @Test func missingBinaryFailsToStart() async throws {
        try await withRuntime { f in
            let spec = f.spec("nobin", ["/bin/nope"])
            do {
                _ = try await f.runtime.start(spec, sandbox: try await f.sandbox())
                Issue.record("started")
            } catch let e as RuntimeError {
                #expect(e.code == .startFailed)
                #expect(e.message.contains("exec /bin/nope: No such file or directory"))
                #expect(e.message.contains("test/pod/nobin"))
            }
            let info = try #require(await f.runtime.inspect(id: spec.id))
            #expect(info.status.reason == "StartError")
            do {
                _ = try await f.runtime.start(f.spec("nopath", ["nope"]), sandbox: try await f.sandbox())
                Issue.record("started")
            } catch let e as RuntimeError {
                #expect(e.message.contains("executable file not found in $PATH"))
            }
        }
    }

    @Test func badLayerDirFailsClearly() async throws {
        try await withRuntime { f in
            let spec = f.spec("badlayer", ["true"]) { $0.layers = ["/nonexistent/layer"] }
            do {
                _ = try await f.runtime.start(spec, sandbox: try await f.sandbox())
                Issue.record("started")
            } catch let e as RuntimeError {
                #expect(e.code == .invalidSpec)
                #expect(e.message.contains("/nonexistent/layer is not a directory"))
            }
            #expect(await f.runtime.inspect(id: spec.id) == nil)
        }
    }

    @Test func logRotationAndPartialLines() async throws {
        try await withRuntime { f in
            let spec = f.spec("rot", ["sh", "-c", "seq 1 300; dd if=/dev/zero bs=20000 count=1 2>/dev/null | /bin/busybox tr '\\0' a"]) {
                $0.logMaxBytes = 2000
                $0.logMaxFiles = 3
            }
            let (info, _) = try await f.run(spec)
            #expect(exitCode(info) == 0)
            let fm = FileManager.default
            #expect(fm.fileExists(atPath: spec.logPath + ".1"))
            #expect(fm.fileExists(atPath: spec.logPath + ".2"))
            #expect(!fm.fileExists(atPath: spec.logPath + ".3"))
            var all: [RuntimeFixture.Record] = []
            for p in [spec.logPath + ".2", spec.logPath + ".1", spec.logPath] { all += try f.logRecords(p) }
            let tags = all.filter { $0.message.hasPrefix("aaaa") }.map(\.tag)
            #expect(tags == ["P", "F"])
            #expect(all.filter { $0.message.hasPrefix("aaaa") }.map(\.message.count).reduce(0, +) == 20000)
        }
    }

    @Test func removeLeavesNothingBehind() async throws {
        try await withRuntime { f in
            let spec = f.spec("clean", ["sleep", "60"])
            let started = try await f.runtime.start(spec, sandbox: try await f.sandbox())
            #expect(Files.rssBytes(pid: started.monitorPid) < 512 * 1024, "monitor RSS")
            #expect(await f.runtime.monitorsRSSBytes() > 0)
            await #expect(throws: RuntimeError.self) { try await f.runtime.remove(id: spec.id) }
            _ = try await f.runtime.stop(id: spec.id, grace: .milliseconds(100))
            try await f.runtime.remove(id: spec.id)
            #expect(FileIO.startTicks(pid: started.monitorPid) == nil)
            for c in ["memory", "cpu", "pids"] {
                #expect(!FileManager.default.fileExists(atPath: "/sys/fs/cgroup/\(c)/\(f.prefix)/pod\(f.podUID)"))
            }
            #expect(!FileManager.default.fileExists(atPath: "\(f.config.stateDir)/\(spec.id)"))
            try await f.runtime.removeSandbox(podUID: f.podUID)
            let mounts = (procText("/proc/self/mountinfo") ?? "")
            #expect(!mounts.contains(f.tmp.path + "/run/sandboxes/"))
        }
    }

    /// The kernel charges a namespace's memory to the cgroup of the process that makes it (~250 KB for a network
    /// namespace): the sandbox monitor makes them from a transient cgroup below the pod's, so they count in the
    /// pod's cgroup, not in edged's (20 pods: ~5 MB of edged's share on a gateway).
    @Test func aSandboxIsChargedToThePodCgroup() async throws {
        let memory = "/sys/fs/cgroup/memory"
        guard access("\(memory)/cgroup.procs", W_OK) == 0 else { return }
        try await withRuntime { f in
            let pod = "\(memory)/\(f.prefix)/pod\(f.podUID)"
            let sb = try await f.sandbox()
            #expect(sb.netns != nil)
            #expect(!FileManager.default.fileExists(atPath: "\(pod)/sandbox"), "the transient sandbox cgroup is removed")
            let file = FileManager.default.fileExists(atPath: "\(pod)/memory.kmem.usage_in_bytes")
                ? "memory.kmem.usage_in_bytes" : "memory.usage_in_bytes"
            let charged = Int(procText("\(pod)/\(file)")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
            #expect(charged >= 100 * 1024, "expected the pod's network namespace (~250 KB) charged to \(pod)/\(file), saw \(charged) bytes")
            try await f.runtime.removeSandbox(podUID: f.podUID)
            #expect(!FileManager.default.fileExists(atPath: pod), "a pod without containers: removeSandbox removes its cgroup")
        }
    }

    /// Without a cgroup for it (here: a cgroup root that does not exist) the sandbox is still made, from edged's
    /// own cgroup; only the memory charge stays there.
    @Test func aSandboxWithoutItsCgroupIsStillMade() async throws {
        try await withRuntime(cgroupRoot: "/nonexistent-edged-cgroup-root") { f in
            let sb = try await f.sandbox()
            #expect(sb.netns != nil)
            #expect(!FileManager.default.fileExists(atPath: "/nonexistent-edged-cgroup-root"))
        }
    }

    @Test func aSandboxCgroupThatCannotBeJoinedFailsTheMonitorWithItsName() async throws {
        try await withRuntime { f in
            let dir = f.tmp.sub("run/sandboxes/x")
            let r = try await HostCommand.run(f.runtime.monitorPath, ["sandbox", dir, "h", "1", f.tmp.sub("no-such-cgroup")])
            #expect(r.status == 1)
            #expect(r.output.contains("join cgroup \(f.tmp.sub("no-such-cgroup")): No such file or directory"), "saw \(r.output)")
            #expect(!FileManager.default.fileExists(atPath: dir), "nothing made before the cgroup is joined")
        }
    }

    @Test func cgroupV2PlacementOnUnifiedHierarchy() async throws {
        let unified = "/sys/fs/cgroup/unified"
        guard access("\(unified)/cgroup.procs", W_OK) == 0 else { return }
        try await withRuntime(cgroupRoot: unified) { f in
            let spec = f.spec("v2", ["sleep", "30"])
            let started = try await f.runtime.start(spec, sandbox: try await f.sandbox())
            guard case let .running(pid, _) = started.status else { Issue.record("not running"); return }
            let procs = try String(contentsOfFile: "\(unified)/\(f.prefix)/pod\(f.podUID)/\(spec.id)/cgroup.procs", encoding: .utf8)
            #expect(procs.split(separator: "\n").contains(Substring(String(pid))))
        }
    }
}
