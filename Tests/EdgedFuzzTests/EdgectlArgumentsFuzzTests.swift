import Foundation
import Testing

/// edgectl with mutated command lines, against a socket where no edged listens: every run must end by itself with
/// one of edgectl's documented exit codes (0, 1, 2; ArgumentParser's 64 for usage is mapped to 2) and never by a
/// signal (a trap). Slower than the in-process targets (one process per input), so it gets fewer inputs.
private let edgectl: String = {
    let bundle = URL(fileURLWithPath: CommandLine.arguments.first ?? "")
    var dir = bundle.deletingLastPathComponent()
    while dir.path != "/" && !FileManager.default.isExecutableFile(atPath: dir.appendingPathComponent("edgectl").path) {
        dir = dir.deletingLastPathComponent()
    }
    return dir.appendingPathComponent("edgectl").path
}()

private func words(_ s: String) -> [UInt8] { Array(s.utf8) }

let edgectlTarget = FuzzTarget(
    name: "edgectl-arguments",
    seeds: ["status --json", "pods -o wide", "logs default/web -c main --tail 10 -f", "images import /nonexistent.tar",
            "join https://10.0.0.1:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:00",
            "version", "images prune", "logs", "--help"].map(words),
    dictionary: ["--", "-", "--tail=-1", "--json", " -c ", "sha256:", "%s%n", "\u{0}", "=", "/"].map(words)
) { input in
    // Arguments split at spaces; a NUL cannot be in an argument (execve), so it splits too.
    let args = input.split(whereSeparator: { $0 == 0x20 || $0 == 0 }).map { String(decoding: $0, as: UTF8.self) }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: edgectl)
    p.arguments = args + ["--socket", "/nonexistent/edgectl-fuzz.sock"]
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let deadline = Date().addingTimeInterval(Fuzz.hangLimit)
    while p.isRunning && Date() < deadline { usleep(2000) }
    if p.isRunning {
        p.terminate()
        p.waitUntilExit()
        throw FuzzHang(args: args)
    }
    if p.terminationReason == .uncaughtSignal {
        Issue.record("edgectl \(args) died with signal \(p.terminationStatus)")
    } else if ![0, 1, 2].contains(p.terminationStatus) {
        Issue.record("edgectl \(args) exited \(p.terminationStatus), not one of its documented codes 0, 1, 2")
    }
    if p.terminationStatus != 0 { throw FuzzRejected() }
}

struct FuzzHang: Error { let args: [String] }

@Suite struct EdgectlArgumentsFuzzTests {
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: edgectl), "edgectl not built"))
    func everyCommandLineEndsWithADocumentedExitCode() {
        let report = Fuzz.run(edgectlTarget, seconds: Fuzz.seconds * 3)
        print(report)
        #expect(report.inputs > edgectlTarget.seeds.count)
    }
}
