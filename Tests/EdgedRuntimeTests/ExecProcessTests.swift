// Interactive exec in real busybox containers: separate stdout/stderr, stdin, exit codes, TTY and resize, kill,
// and the errors for stopped and unknown containers.

import EdgedCore
import EdgedTestSupport
@testable import EdgedRuntime
import Foundation
import Testing

/// Reads `fd` to EOF (or EIO, the end of a pty) on a GCD thread, then closes it.
func readToEnd(_ fd: Int32) async -> String {
    await withCheckedContinuation { cont in
        DispatchQueue.global().async {
            var out: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(fd, &buf, buf.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                out += buf[0..<n]
            }
            close(fd)
            cont.resume(returning: String(decoding: out, as: UTF8.self))
        }
    }
}

func writeAll(_ fd: Int32, _ text: String) {
    let bytes = Array(text.utf8)
    var off = 0
    while off < bytes.count {
        let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n <= 0 { return }
        off += n
    }
}

@Suite(.enabled(if: isRoot, "needs root"))
struct ExecProcessTests {
    /// A running `sleep` container to exec into.
    private func sleeper(_ f: RuntimeFixture, _ name: String = "main") async throws -> ContainerSpec {
        let spec = f.spec(name, ["sleep", "60"])
        _ = try await f.runtime.start(spec, sandbox: try await f.sandbox())
        return spec
    }

    @Test func stdoutAndStderrOnSeparateDescriptorsAndExitCode() async throws {
        try await withRuntime { f in
            let spec = try await sleeper(f)
            let p = try await f.runtime.startExec(id: spec.id, argv: ["sh", "-c", "echo out; echo err >&2; exit 3"],
                                                  stdin: false, tty: false)
            #expect(p.stdin == nil)
            let stderrFD = try #require(p.stderr)
            async let out = readToEnd(p.stdout)
            async let err = readToEnd(stderrFD)
            #expect(await out == "out\n")
            #expect(await err == "err\n")
            #expect(await p.wait() == 3)
            #expect(await p.wait() == 3)  // idempotent
            #expect(p.exitCode == 3)
        }
    }

    @Test func stdinReachesCat() async throws {
        try await withRuntime { f in
            let spec = try await sleeper(f)
            let p = try await f.runtime.startExec(id: spec.id, argv: ["cat"], stdin: true, tty: false)
            let input = try #require(p.stdin)
            async let out = readToEnd(p.stdout)
            writeAll(input, "hello from stdin\nsecond line\n")
            close(input)
            #expect(await out == "hello from stdin\nsecond line\n")
            #expect(await p.wait() == 0)
            if let e = p.stderr { close(e) }
        }
    }

    @Test func runsInsideTheContainer() async throws {
        try await withRuntime { f in
            let spec = try await sleeper(f)
            let p = try await f.runtime.startExec(id: spec.id, argv: ["sh", "-c", "hostname; cat /proc/1/cmdline"],
                                                  stdin: false, tty: false)
            if let e = p.stderr { close(e) }
            let out = await readToEnd(p.stdout)
            #expect(out.hasPrefix("pod\n"))
            #expect(await p.wait() == 0)
            #expect(out.contains("sleep"))
        }
    }

    @Test func ttyIsAContainerPseudoTerminal() async throws {
        try await withRuntime { f in
            let spec = try await sleeper(f)
            let p = try await f.runtime.startExec(id: spec.id, argv: ["busybox", "tty"], stdin: true, tty: true)
            #expect(p.tty && p.stdin == nil && p.stderr == nil)
            let out = await readToEnd(p.stdout)
            #expect(await p.wait() == 0, "tty said: \(out)")
            #expect(out.trimmingCharacters(in: .whitespacesAndNewlines).wholeMatch(of: /\/dev\/pts\/\d+/) != nil, "tty said: \(out)")
        }
    }

    @Test func resizeSetsTheTerminalSize() async throws {
        try await withRuntime { f in
            let spec = try await sleeper(f)
            let p = try await f.runtime.startExec(id: spec.id, argv: ["sh", "-c", "sleep 0.3; busybox stty size"],
                                                  stdin: true, tty: true)
            p.resize(width: 123, height: 45)
            let out = await readToEnd(p.stdout)
            #expect(await p.wait() == 0)
            #expect(out.trimmingCharacters(in: .whitespacesAndNewlines) == "45 123")
            p.resize(width: 1, height: 1)  // after the end: no-op, no crash
        }
    }

    @Test func ttyCarriesInputBothWays() async throws {
        try await withRuntime { f in
            let spec = try await sleeper(f)
            let p = try await f.runtime.startExec(id: spec.id, argv: ["sh", "-c", "read line; echo got:$line"],
                                                  stdin: true, tty: true)
            let master = p.stdout
            async let out = readToEnd(master)
            writeAll(master, "typed\n")
            let text = await out
            #expect(await p.wait() == 0)
            #expect(text.contains("got:typed"), "pty said: \(text)")
        }
    }

    @Test func terminateKillsTheCommand() async throws {
        try await withRuntime { f in
            let spec = try await sleeper(f)
            let p = try await f.runtime.startExec(id: spec.id, argv: ["sleep", "100"], stdin: true, tty: false)
            p.terminate()
            #expect(await p.wait() == 137)
            for fd in [p.stdin, p.stdout, p.stderr].compactMap({ $0 }) { close(fd) }
            p.terminate()  // after reaping: nothing to signal
        }
    }

    @Test func missingCommandExits127WithTheReason() async throws {
        try await withRuntime { f in
            let spec = try await sleeper(f)
            let p = try await f.runtime.startExec(id: spec.id, argv: ["/no/such/tool"], stdin: false, tty: false)
            let err = await readToEnd(try #require(p.stderr))
            _ = await readToEnd(p.stdout)
            #expect(await p.wait() == 127)
            #expect(err.contains("/no/such/tool"))
        }
    }

    @Test func stoppedAndUnknownContainersAreRefused() async throws {
        try await withRuntime { f in
            let (info, _) = try await f.run(f.spec("done", ["true"]))
            #expect(exitCode(info) == 0)
            let e = await #expect(throws: RuntimeError.self) {
                try await f.runtime.startExec(id: info.spec.id, argv: ["true"], stdin: false, tty: false)
            }
            #expect(e?.code == .invalidState)
            #expect(e?.message.contains("test/pod/done") == true)
            #expect(e?.message.contains("not running") == true)
            let missing = await #expect(throws: RuntimeError.self) {
                try await f.runtime.startExec(id: "nope", argv: ["true"], stdin: false, tty: false)
            }
            #expect(missing?.code == .notFound)
            let spec = try await sleeper(f, "empty")
            await #expect(throws: RuntimeError.self) {
                try await f.runtime.startExec(id: spec.id, argv: [], stdin: false, tty: false)
            }
        }
    }

    @Test func probeExecStillWorks() async throws {
        try await withRuntime { f in
            let spec = try await sleeper(f)
            let (code, output) = try await f.runtime.exec(id: spec.id, argv: ["sh", "-c", "echo a; echo b >&2; exit 4"],
                                                          timeout: .seconds(10))
            #expect(code == 4)
            #expect(output == "a\nb\n")
        }
    }
}
