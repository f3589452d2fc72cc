// A runtime on a temp state dir with a busybox rootfs, unique cgroup prefix and sandbox; cleans everything.

import EdgedCore
import EdgedTestSupport
@testable import EdgedRuntime
import Foundation
import Logging
import Testing

struct RuntimeFixture {
    let tmp: TempDir
    let rootfs: String
    let prefix: String
    let config: RuntimeConfig
    let runtime: ContainerRuntime
    let podUID: String

    static func make(cgroupRoot: String = "/sys/fs/cgroup") throws -> RuntimeFixture {
        let tmp = try TempDir("edged-rt")
        let rootfs = tmp.sub("layer0")
        try makeBusyboxRootfs(at: rootfs)
        let unique = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        let prefix = "edged-test-\(unique)"
        let config = RuntimeConfig(stateDir: tmp.sub("state"), runDir: tmp.sub("run"), cgroupPrefix: prefix,
                                   cgroupFSRoot: cgroupRoot)
        let runtime = try ContainerRuntime(config: config, logger: Logger(label: "test"))
        return RuntimeFixture(tmp: tmp, rootfs: rootfs, prefix: prefix, config: config, runtime: runtime,
                              podUID: "uid-\(unique)")
    }

    func newRuntime() throws -> ContainerRuntime {
        try ContainerRuntime(config: config, logger: Logger(label: "test"))
    }

    func spec(_ name: String, _ argv: [String], configure: (inout ContainerSpec) -> Void = { _ in }) -> ContainerSpec {
        var s = ContainerSpec(id: "\(name)-\(podUID)", podUID: podUID, podNamespace: "test", podName: "pod",
                              containerName: name, layers: [rootfs], argv: argv, env: [], workingDir: "/",
                              hostname: "pod", logPath: tmp.sub("logs/\(name)/0.log"))
        configure(&s)
        return s
    }

    func sandbox(hostNetwork: Bool = false, hostname: String = "pod") async throws -> Sandbox {
        try await runtime.createSandbox(podUID: podUID, hostname: hostname, hostNetwork: hostNetwork)
    }

    /// Starts, waits for exit, returns the final info and the messages of the log (stream, message).
    func run(_ spec: ContainerSpec, hostNetwork: Bool = false) async throws -> (ContainerInfo, [(String, String)]) {
        let sb = try await sandbox(hostNetwork: hostNetwork)
        _ = try await runtime.start(spec, sandbox: sb)
        let info = try #require(await runtime.waitForExit(id: spec.id))
        return (info, try logRecords(spec.logPath).map { ($0.stream, $0.message) })
    }

    struct Record { var timestamp: String; var stream: String; var tag: String; var message: String }

    func logRecords(_ path: String) throws -> [Record] {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        let re = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (stdout|stderr) (F|P) (.*)$/
        return try text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map { line in
            guard let m = try re.wholeMatch(in: String(line)) else { throw TestFailure("bad CRI log line: \(line)") }
            return Record(timestamp: String(m.1), stream: String(m.2), tag: String(m.3), message: String(m.4))
        }
    }

    func output(_ records: [(String, String)]) -> String {
        records.map(\.1).joined(separator: "\n")
    }

    /// Stops and removes every container, removes the sandbox, the cgroup prefix and the temp dir.
    func cleanup() async {
        for c in await runtime.list() {
            _ = try? await runtime.stop(id: c.spec.id, grace: .milliseconds(100))
            try? await runtime.remove(id: c.spec.id)
        }
        try? await runtime.removeSandbox(podUID: podUID)
        // The runtime keeps <runDir>/sandboxes a private bind mount of itself (like `ip netns`); drop it.
        umount2(config.runDir + "/sandboxes", Int32(MNT_DETACH))
        for base in ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified",
                     "/sys/fs/cgroup/cpuacct", config.cgroupFSRoot] {
            rmdir("\(base)/\(prefix)/pod\(podUID)")
            rmdir("\(base)/\(prefix)")
        }
        tmp.remove()
    }
}

/// Runs `body` with a fixture and always cleans up.
func withRuntime(cgroupRoot: String = "/sys/fs/cgroup", _ body: (RuntimeFixture) async throws -> Void) async throws {
    let f = try RuntimeFixture.make(cgroupRoot: cgroupRoot)
    do {
        try await body(f)
    } catch {
        await f.cleanup()
        throw error
    }
    await f.cleanup()
}

func exitCode(_ info: ContainerInfo) -> Int32? {
    if case let .exited(code, _, _, _, _, _) = info.status { return code }
    return nil
}
