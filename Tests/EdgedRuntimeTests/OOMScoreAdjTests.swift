// Containers do not inherit edged's OOM score adjustment: systemd starts edged with OOMScoreAdjust=-999 (the unit
// file), its monitors inherit it (like containerd's shims), but a container and a process exec'd into it start at 0.

import EdgedCore
import EdgedTestSupport
@testable import EdgedRuntime
import Foundation
import Testing

private func readAdj(_ pid: String = "self") -> String {
    ((try? String(contentsOfFile: "/proc/\(pid)/oom_score_adj", encoding: .utf8)) ?? "?")
        .trimmingCharacters(in: .whitespacesAndNewlines)
}

private func writeAdj(_ value: String) throws {
    let fd = open("/proc/self/oom_score_adj", O_WRONLY)
    defer { if fd >= 0 { close(fd) } }
    guard fd >= 0, write(fd, value, value.utf8.count) == value.utf8.count else {
        throw TestFailure("write \(value) to /proc/self/oom_score_adj: \(String(cString: strerror(errno)))")
    }
}

@Suite(.enabled(if: isRoot, "needs root"), .serialized)
struct OOMScoreAdjTests {
    @Test func containerAndExecDoNotInheritEdgedsOOMProtection() async throws {
        // systemd gives edged -999; lowering needs CAP_SYS_RESOURCE, which a CI container may lack, so the test
        // raises it instead (the gateway VM checks -999: cross/gateway-vm.sh step 2). Either way the container must
        // not inherit it.
        let saved = readAdj()
        try writeAdj("500")
        defer { try? writeAdj(saved) }
        try await withRuntime { f in
            let spec = f.spec("main", ["sh", "-c", "cat /proc/self/oom_score_adj; sleep 60"])
            let info = try await f.runtime.start(spec, sandbox: try await f.sandbox())
            // The monitor keeps edged's value.
            #expect(readAdj(String(info.monitorPid)) == "500")
            var out = ""
            for _ in 0..<100 {
                out = (try? f.logRecords(spec.logPath).map(\.message).joined()) ?? ""
                if !out.isEmpty { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(out == "0")
            let p = try await f.runtime.startExec(id: spec.id, argv: ["cat", "/proc/self/oom_score_adj"], stdin: false, tty: false)
            #expect(await readToEnd(p.stdout) == "0\n")
            #expect(await p.wait() == 0)
        }
    }
}
