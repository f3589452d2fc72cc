// An OOM kill stays OOMKilled after the container's cgroup is gone: under systemd, the empty cgroups below
// edged.service are removed when edged stops or restarts, and a reboot removes them all, so the monitor records
// the verdict in the exit file when it reaps the container.

import EdgedCore
import EdgedTestSupport
@testable import EdgedRuntime
import Foundation
import Testing

@Suite(.enabled(if: isRoot, "needs root"))
struct OOMVerdictTests {
    @Test func oomKilledSurvivesTheRemovalOfTheCgroupAndARestart() async throws {
        try await withRuntime { f in
            let spec = f.spec("oom", ["dd", "if=/dev/zero", "of=/dev/shm/fill", "bs=1M", "count=60"]) {
                $0.memoryLimitBytes = 16 << 20
            }
            let (info, _) = try await f.run(spec)
            #expect(info.status.reason == "OOMKilled")
            let exit = try String(contentsOfFile: f.config.stateDir + "/\(spec.id)/exit", encoding: .utf8)
            #expect(exit.split(separator: "\n").contains("oomKilled=1"))
            // What systemd does to the empty cgroups of a stopped edged.service.
            let dirs = await f.runtime.cgroupManager.directories(path: ContainerRuntime.cgroupPath(f.config, spec))
            for d in dirs where FileManager.default.fileExists(atPath: d) { #expect(rmdir(d) == 0, "rmdir \(d)") }
            let again = try f.newRuntime()
            let adopted = try #require(await again.inspect(id: spec.id))
            #expect(adopted.status.reason == "OOMKilled")
        }
    }

    @Test func aPlainSIGKILLIsNotAnOOMKill() async throws {
        try await withRuntime { f in
            // PID 1 of the container ignores SIGTERM; stop() ends it with SIGKILL after the grace period.
            let spec = f.spec("killed", ["sleep", "60"]) { $0.memoryLimitBytes = 16 << 20 }
            _ = try await f.runtime.start(spec, sandbox: try await f.sandbox())
            let info = try await f.runtime.stop(id: spec.id, grace: .milliseconds(100))
            guard case let .exited(code, signal, oom, _, _, _) = info.status else { Issue.record("running"); return }
            #expect(code == 137)
            #expect(signal == 9)
            #expect(!oom)
            let exit = try String(contentsOfFile: f.config.stateDir + "/\(spec.id)/exit", encoding: .utf8)
            #expect(!exit.contains("oomKilled"))
        }
    }
}
