// Runs the real edgectl binary against a ControlServer with the test backend.

@testable import EdgedControl
import EdgedCore
import Foundation
import Testing

/// The edgectl binary next to the test bundle (`swift build` / `swift test` build it into the same directory).
func edgectlPath() throws -> String {
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<3 {
        let candidate = dir.appendingPathComponent("edgectl").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    throw ControlError.internal("edgectl binary not found next to \(CommandLine.arguments[0]): run `swift build --product edgectl` first")
}

struct EdgectlResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs edgectl on a Dispatch thread (waiting must not block the cooperative threads the server runs on).
func edgectl(_ args: [String], environment: [String: String] = [:]) async throws -> EdgectlResult {
    let path = try edgectlPath()
    return try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(with: Result {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: path)
                p.arguments = args
                var env = ProcessInfo.processInfo.environment
                env.removeValue(forKey: "EDGED_SOCKET")
                for (k, v) in environment { env[k] = v }
                p.environment = env
                return try captureOutput(of: p)
            })
        }
    }
}

@Suite struct EdgectlTests {
    @Test func statusHealthyExitsZero() async throws {
        let served = try await ServedControl.start(healthy: true)
        let r = try await edgectl(["status", "--socket", served.socketPath])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("HEALTHY") == true)
        #expect(r.stdout.contains("edged 0.1.0-test (pid \(getpid())) · mode standalone · node gw-1 · up 1h2m"))
        #expect(r.stdout.contains("default/web"))
        #expect(r.stdout.contains("CrashLoopBackOff"))
        #expect(r.stdout.contains("IMAGES  2 images, 5.9 MiB (1 in use)"))
        #expect(r.stdout.contains("RSS 14.0 MiB"))
        #expect(r.stdout.contains("container c exited 1"))
        #expect(!r.stdout.contains("\u{1B}["), "no escape codes when not a tty")
        #expect(r.stderr.isEmpty)
        // The default subcommand is status; the socket also comes from $EDGED_SOCKET.
        let viaEnv = try await edgectl([], environment: ["EDGED_SOCKET": served.socketPath])
        #expect(viaEnv.status == 0)
        await served.stop()
    }

    @Test func statusDegradedExitsOneWithReasonOnStderr() async throws {
        let served = try await ServedControl.start(healthy: false)
        let r = try await edgectl(["status", "--socket", served.socketPath], environment: ["NO_COLOR": "1"])
        #expect(r.status == 1)
        #expect(r.stdout.hasPrefix("DEGRADED  1 problem needs attention:\n  - pod kube-system/crashy is CrashLoopBackOff"))
        #expect(r.stderr.contains("DEGRADED: pod kube-system/crashy is CrashLoopBackOff (restarts: 7) — see `edgectl logs kube-system/crashy`"))
        await served.stop()
    }

    @Test func statusJSONParses() async throws {
        let served = try await ServedControl.start(healthy: false)
        let r = try await edgectl(["status", "--json", "--socket", served.socketPath])
        #expect(r.status == 1)
        let report = try JSONDecoder().decode(StatusReport.self, from: Data(r.stdout.utf8))
        #expect(report == (await served.backend.report))
        // The keys scripts rely on.
        let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        for key in ["healthy", "reasons", "mode", "version", "pods"] { #expect(object?[key] != nil, "\(key)") }
        await served.stop()
    }

    @Test func notRunningExitsTwo() async throws {
        let missing = "/tmp/edged-edgectl-none-\(getpid())/edged.sock"
        let r = try await edgectl(["status", "--socket", missing])
        #expect(r.status == 2)
        #expect(r.stderr == "edgectl: edged is not running (no socket at \(missing)). Start it with: systemctl start edged\n")
        #expect(r.stdout.isEmpty)
    }

    @Test func permissionDeniedForNonRoot() async throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else { return }
        let served = try await ServedControl.start()
        // The temp dir is 0700; let others through to the socket itself, which stays 0600.
        chmod(served.dir, 0o755)
        chmod("\(served.dir)/run", 0o755)
        let binary = try edgectlPath()
        // The binary must be reachable for nobody; skip when the build dir is private.
        guard access(binary, X_OK) == 0 else { await served.stop(); return }
        let r = try await runAs(["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", binary, "status",
                                 "--socket", served.socketPath])
        if r.status != 127 && !r.stderr.contains("Permission denied") {
            #expect(r.status == 2)
            #expect(r.stderr == "edgectl: permission denied on \(served.socketPath): run edgectl as root (sudo edgectl …)\n")
        }
        await served.stop()
    }

    @Test func usageErrorsExitTwo() async throws {
        let r = try await edgectl(["logs"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("Missing expected argument"))
        let bad = try await edgectl(["logs", "a/b/c", "--socket", "/nonexistent"])
        #expect(bad.status == 2)
        #expect(bad.stderr.contains("POD must be NAME or NAMESPACE/NAME"))
    }

    /// `edgectl --socket PATH status`: the global flag before the subcommand, as kubectl users type it, for every
    /// subcommand and nested one, in both spellings; `--` still ends the options; nothing else moves.
    @Test func socketBeforeTheSubcommand() async throws {
        let served = try await ServedControl.start(healthy: true)
        let status = try await edgectl(["--socket", served.socketPath, "status"])
        #expect(status.status == 0, "\(status.stderr)")
        #expect(status.stdout.hasPrefix("HEALTHY"))
        let json = try await edgectl(["--socket=\(served.socketPath)", "status", "--json"])
        #expect(json.status == 0, "\(json.stderr)")
        #expect(json.stdout.hasPrefix("{"))
        let nested = try await edgectl(["--socket", served.socketPath, "images", "list"])
        #expect(nested.status == 0, "\(nested.stderr)")
        #expect(nested.stdout.contains("docker.io/library/busybox:latest"))
        let logs = try await edgectl(["--socket", served.socketPath, "logs", "-n", "kube-system", "nope"])
        #expect(logs.status == 1)
        #expect(logs.stderr == "edgectl: pod kube-system/nope not found\n")
        // No subcommand: the default (status) with the global flag, as before.
        let bare = try await edgectl(["--socket", served.socketPath])
        #expect(bare.status == 0, "\(bare.stderr)")
        // Still the socket it names: a missing one is reported as such, before or after.
        let missing = "/tmp/edged-edgectl-none-\(getpid())/edged.sock"
        let before = try await edgectl(["--socket", missing, "pods"])
        #expect(before.status == 2)
        #expect(before.stderr.contains("no socket at \(missing)"))
        // A --socket without its value is the parser's usage error, not a rewrite.
        let noValue = try await edgectl(["--socket"])
        #expect(noValue.status == 2)
        #expect(noValue.stderr.contains("--socket"))
        await served.stop()
    }

    /// A socket that takes connections but never answers (edged.socket while edged is down or hung): edgectl gives
    /// up after --request-timeout with a message saying what to check, instead of waiting forever.
    @Test func silentSocketTimesOut() async throws {
        let dir = try makeTempDir("edgectl-silent")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = "\(dir)/edged.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in path.utf8.enumerated() { raw[i] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(bound == 0)
        #expect(listen(fd, 16) == 0)  // connections queue in the backlog; nobody accepts or answers
        let started = Date()
        let r = try await edgectl(["--socket", path, "--request-timeout", "1", "status"])
        #expect(r.status == 2, "\(r.stderr)")
        #expect(r.stderr.contains("edged did not answer on \(path) within 1 s"), "\(r.stderr)")
        #expect(r.stderr.contains("systemctl status edged"))
        #expect(Date().timeIntervalSince(started) < 15)
        let pods = try await edgectl(["pods", "--socket", path, "--request-timeout=1"])
        #expect(pods.status == 2 && pods.stderr.contains("did not answer"), "\(pods.stderr)")
        let zero = try await edgectl(["status", "--socket", path, "--request-timeout", "0"])
        #expect(zero.status == 2 && zero.stderr.contains("--request-timeout must be at least 1"), "\(zero.stderr)")
    }

    @Test func podsImagesAndLogs() async throws {
        let served = try await ServedControl.start()
        let socket = ["--socket", served.socketPath]
        let pods = try await edgectl(["pods", "-o", "wide"] + socket)
        #expect(pods.status == 0)
        let lines = pods.stdout.split(separator: "\n").map(String.init)
        #expect(lines[0].hasPrefix("NAMESPACE     NAME     READY   STATUS             RESTARTS   IP"))
        #expect(lines[1].contains("web") && lines[1].contains("1/1") && lines[1].contains("Running") && lines[1].contains("main:running"))
        #expect(lines[2].contains("CrashLoopBackOff") && lines[2].contains("c:waiting(1,CrashLoopBackOff)"))
        let images = try await edgectl(["images"] + socket)
        #expect(images.stdout.contains("docker.io/library/busybox:latest"))
        #expect(images.stdout.contains("1.1 MiB"))
        let rm = try await edgectl(["images", "rm", "docker.io/library/busybox:latest"] + socket)
        #expect(rm.status == 1)
        #expect(rm.stderr.contains("used by a running pod"))
        let prune = try await edgectl(["images", "prune"] + socket)
        #expect(prune.stdout == "removed old:1\n")
        try appendCRI("\(served.dir)/main.log", [("stdout", "F", "hello"), ("stdout", "F", "world")])
        let logs = try await edgectl(["logs", "default/web", "--tail", "1"] + socket)
        #expect(logs.stdout == "world\n")
        let missing = try await edgectl(["logs", "-n", "kube-system", "nope"] + socket)
        #expect(missing.status == 1)
        #expect(missing.stderr == "edgectl: pod kube-system/nope not found\n")
        let version = try await edgectl(["version"] + socket)
        #expect(version.stdout.contains("edged   0.1.0-test"))
        await served.stop()
    }
}

func runAs(_ args: [String]) async throws -> EdgectlResult {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(with: Result {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: args[0])
                p.arguments = Array(args.dropFirst())
                return try captureOutput(of: p)
            })
        }
    }
}

/// Runs `p` with stdout and stderr in temp files (Foundation's pipe reading can trap on EINTR).
func captureOutput(of p: Process) throws -> EdgectlResult {
    let dir = try makeTempDir("edgectl-out")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    FileManager.default.createFile(atPath: "\(dir)/out", contents: nil)
    FileManager.default.createFile(atPath: "\(dir)/err", contents: nil)
    let out = try FileHandle(forWritingTo: URL(fileURLWithPath: "\(dir)/out"))
    let err = try FileHandle(forWritingTo: URL(fileURLWithPath: "\(dir)/err"))
    p.standardOutput = out
    p.standardError = err
    p.standardInput = FileHandle.nullDevice
    try p.run()
    p.waitUntilExit()
    try? out.close()
    try? err.close()
    return EdgectlResult(status: p.terminationStatus,
                         stdout: (try? String(contentsOfFile: "\(dir)/out", encoding: .utf8)) ?? "",
                         stderr: (try? String(contentsOfFile: "\(dir)/err", encoding: .utf8)) ?? "")
}
