// edged's memory does not grow with the requests on its control socket. Each connection used to leave its finished
// task in the accept loop's task group (~8 KB) for the life of the daemon: a monitoring script running
// `edgectl status` once a second grew edged by ~30 MB a day, and the memory benchmark's churn runs showed it as
// ~0.15 MB per pod create/delete cycle (issue 17). Real edged, real socket; curl opens one connection per request.

import EdgedTestSupport
import Foundation
import Testing

@Suite(.enabled(if: isRoot && findExecutable("curl") != nil, "needs root and curl"))
struct ControlSocketMemoryTests {
    @Test func thousandsOfControlRequestsDoNotGrowEdged() async throws {
        let edged = try EdgedInstance(name: "ctlmem")
        defer { edged.cleanUp() }
        try edged.start(extraArgs: ["--log-level", "warning"])
        let pid = try #require(edged.process?.processIdentifier)

        /// `count` GETs of /v1/pods, each on a connection of its own (Connection: close), in one curl run.
        func requests(_ count: Int) throws {
            let urls = (0..<count).flatMap { _ in ["-o", "/dev/null", "http://edged/v1/pods"] }
            let r = try runCommand(["curl", "-sS", "-w", "%{http_code} %{num_connects}\n",
                                    "-H", "Connection: close", "--unix-socket", edged.socket] + urls, check: false)
            let lines = r.stdout.split(separator: "\n")
            #expect(r.status == 0 && lines.count == count, "curl: \(r.status) \(r.stderr)")
            // Each answered 200 on a new connection: the server closed the previous one as asked.
            #expect(lines.allSatisfy { $0 == "200 1" }, "\(Set(lines))")
        }
        func anonymousKB() throws -> Int { try #require(ProcessMemory(pid: pid)).anonymousKB }

        try requests(300)  // warm-up: the allocator's arenas and caches reach their working size
        try await Task.sleep(for: .seconds(1))
        let before = try anonymousKB()
        try requests(3000)
        try await Task.sleep(for: .seconds(1))
        let after = try anonymousKB()
        print("control socket: 3000 requests took edged's anonymous memory from \(before) KB to \(after) KB")
        // With the leak: ~8 KB a request, +24 MB. Without: allocator noise of a few hundred KB.
        #expect(after - before < 3 * 1024, "edged's anonymous memory grew by \(after - before) KB over 3000 control requests (\(before) → \(after) KB)")
    }
}
