// edgectl's view of edged's journal: the three most recent warnings in `edgectl status` and `edgectl logs --daemon`.
// The journal files are real: systemd-journal-remote writes them from the journal export format, with the
// timestamps the test chooses, and edgectl reads them with sd-journal through $EDGECTL_JOURNAL_DIR.

import Foundation
import Testing

private let journalRemote = ["/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote"]
    .first { FileManager.default.isExecutableFile(atPath: $0) }

/// One journal entry in the export format; `secondsAgo` before now.
private struct ExportEntry {
    var secondsAgo: Int64
    var fields: [String: String]
}

private let bootID = "0123456789abcdef0123456789abcdef"

/// Writes `entries` to `<dir>/<file>` (a journal file) with systemd-journal-remote.
private func writeJournal(_ entries: [ExportEntry], dir: String, file: String = "edged.journal") throws {
    let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
    var export = ""
    for (i, e) in entries.enumerated() {
        // One boot: sd-journal orders entries of one boot by the monotonic clock, so it follows the wall clock here
        // (a later file's entries must come after the earlier file's).
        let usec = now - e.secondsAgo * 1_000_000
        export += "__REALTIME_TIMESTAMP=\(usec)\n__MONOTONIC_TIMESTAMP=\(usec - 1_700_000_000_000_000 + Int64(i))\n"
        export += "_BOOT_ID=\(bootID)\n_MACHINE_ID=\(bootID)\n_HOSTNAME=gw-1\n"
        for (k, v) in e.fields.sorted(by: { $0.key < $1.key }) { export += "\(k)=\(v)\n" }
        export += "\n"
    }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: journalRemote!)
    p.arguments = ["-o", "\(dir)/\(file)", "-"]
    let input = Pipe()
    p.standardInput = input
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    input.fileHandleForWriting.write(Data(export.utf8))
    try input.fileHandleForWriting.close()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw ControlTestJournalError("systemd-journal-remote exited \(p.terminationStatus)") }
}

private struct ControlTestJournalError: Error { var text: String; init(_ t: String) { text = t } }

private func edged(_ priority: Int, _ message: String, _ secondsAgo: Int64, pod: String? = nil) -> ExportEntry {
    var f = ["MESSAGE": message, "PRIORITY": String(priority), "SYSLOG_IDENTIFIER": "edged", "_PID": "4242",
             "_SYSTEMD_UNIT": "edged.service"]
    if let pod { f["POD"] = pod }
    return ExportEntry(secondsAgo: secondsAgo, fields: f)
}

/// A gateway's journal: edged's lines at every level, systemd about edged.service, and another service's errors.
private let gatewayJournal: [ExportEntry] = [
    edged(6, "edged 1.0 starting", 600),
    edged(4, "old warning: pull of busybox failed, using the cached image", 300),
    edged(3, "cannot start container web/app: exec format error", 120, pod: "default/web"),
    ExportEntry(secondsAgo: 90, fields: ["MESSAGE": "edged.service: Watchdog timeout (limit 30s)!", "PRIORITY": "2",
                                         "SYSLOG_IDENTIFIER": "systemd", "_PID": "1", "UNIT": "edged.service"]),
    edged(6, "pod default/web started", 60),
    edged(2, "state dir is read-only", 30),
    ExportEntry(secondsAgo: 20, fields: ["MESSAGE": "sshd: error from another service", "PRIORITY": "3",
                                         "SYSLOG_IDENTIFIER": "sshd", "_PID": "77"]),
    // systemd about another unit: not edged's.
    ExportEntry(secondsAgo: 15, fields: ["MESSAGE": "ssh.service: failed", "PRIORITY": "3", "SYSLOG_IDENTIFIER": "systemd",
                                         "_PID": "1", "UNIT": "ssh.service"]),
    edged(7, "debug detail", 10),
]

/// How edgectl writes ages from `seconds` to `seconds + 15` (kubectl style: 30s, 1m30s, 2m, 2m1s).
private func ages(_ seconds: Int64) -> [String] {
    (seconds...(seconds + 15)).map { s in
        s < 60 ? "\(s)s" : "\(s / 60)m" + (s % 60 == 0 ? "" : "\(s % 60)s")
    }
}

@Suite(.enabled(if: journalRemote != nil, "needs systemd-journal-remote (package systemd-journal-remote)"))
struct DaemonJournalTests {
    private func journalDir(_ entries: [ExportEntry] = gatewayJournal) throws -> String {
        let dir = try makeTempDir("edgectl-journal")
        try writeJournal(entries, dir: dir)
        return dir
    }

    @Test func statusShowsTheThreeNewestWarningsWithTheirAge() async throws {
        let dir = try journalDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let served = try await ServedControl.start(healthy: true)
        defer { Task { await served.stop() } }
        let r = try await edgectl(["status", "--socket", served.socketPath], environment: ["EDGECTL_JOURNAL_DIR": dir])
        #expect(r.status == 0, "\(r.stderr)")
        let section = try #require(r.stdout.range(of: "JOURNAL  edged's last warnings and errors (all: edgectl logs --daemon)\n"),
                                   "\(r.stdout)")
        let lines = r.stdout[section.upperBound...].split(separator: "\n").map(String.init)
        #expect(lines.count == 3, "\(lines)")
        guard lines.count == 3 else { return }
        // Newest first. The age is counted when edgectl runs: a few seconds more than written on a loaded machine.
        #expect(ages(30).contains { lines[0] == "  \($0) ago  crit  state dir is read-only" }, "\(lines[0])")
        #expect(ages(90).contains { lines[1] == "  \($0) ago  crit  edged.service: Watchdog timeout (limit 30s)!" }, "\(lines[1])")
        #expect(ages(120).contains { lines[2] == "  \($0) ago  error  cannot start container web/app: exec format error (pod default/web)" },
                "\(lines[2])")
        #expect(!r.stdout.contains("sshd"))
        #expect(!r.stdout.contains("ssh.service"))
        #expect(!r.stdout.contains("old warning"), "only three")
    }

    @Test func statusJSONHasTheWarnings() async throws {
        let dir = try journalDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let served = try await ServedControl.start(healthy: true)
        defer { Task { await served.stop() } }
        let r = try await edgectl(["status", "--json", "--socket", served.socketPath], environment: ["EDGECTL_JOURNAL_DIR": dir])
        #expect(r.status == 0, "\(r.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(object["nodeName"] as? String == "gw-1", "the report's own keys stay at the top level")
        let warnings = try #require(object["journalWarnings"] as? [[String: Any]])
        #expect(warnings.map { $0["message"] as? String } == ["state dir is read-only", "edged.service: Watchdog timeout (limit 30s)!",
                                                              "cannot start container web/app: exec format error"])
        #expect(warnings.map { $0["level"] as? String } == ["crit", "crit", "error"])
        #expect(warnings.map { $0["priority"] as? Int } == [2, 2, 3])
        let age = warnings[2]["ageSeconds"] as? Int ?? -1
        #expect(age >= 120 && age <= 135)
        #expect(warnings[2]["pod"] as? String == "default/web")
        #expect(warnings[0]["pod"] == nil)
    }

    /// No journal (edged run by hand, no journald): status as before, no journal section, no error.
    @Test func noJournalMeansNoSection() async throws {
        let served = try await ServedControl.start(healthy: true)
        defer { Task { await served.stop() } }
        let missing = ["EDGECTL_JOURNAL_DIR": "/tmp/edgectl-no-journal-\(getpid())"]
        let text = try await edgectl(["status", "--socket", served.socketPath], environment: missing)
        #expect(text.status == 0)
        #expect(!text.stdout.contains("JOURNAL"))
        #expect(text.stderr.isEmpty)
        let json = try await edgectl(["status", "--json", "--socket", served.socketPath], environment: missing)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(object["journalWarnings"] == nil)
        // An empty journal: a readable journal with nothing to say.
        let empty = try journalDir([edged(6, "all fine", 5)])
        defer { try? FileManager.default.removeItem(atPath: empty) }
        let quiet = try await edgectl(["status", "--json", "--socket", served.socketPath], environment: ["EDGECTL_JOURNAL_DIR": empty])
        let quietObject = try #require(try JSONSerialization.jsonObject(with: Data(quiet.stdout.utf8)) as? [String: Any])
        #expect((quietObject["journalWarnings"] as? [Any])?.isEmpty == true)
    }

    /// edged down: its last words go with the "not running" message.
    @Test func statusWithEdgedDownShowsTheWarningsOnStderr() async throws {
        let dir = try journalDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let missing = "/tmp/edgectl-journal-none-\(getpid())/edged.sock"
        let r = try await edgectl(["status", "--socket", missing], environment: ["EDGECTL_JOURNAL_DIR": dir])
        #expect(r.status == 2)
        #expect(r.stdout.isEmpty)
        #expect(r.stderr.contains("JOURNAL  edged's last warnings"))
        #expect(r.stderr.contains("state dir is read-only"))
        #expect(r.stderr.hasSuffix("edgectl: edged is not running (no socket at \(missing)). Start it with: systemctl start edged\n"))
    }

    @Test func logsDaemonPrintsEdgedsOwnLog() async throws {
        let dir = try journalDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let env = ["EDGECTL_JOURNAL_DIR": dir, "TZ": "UTC"]
        let all = try await edgectl(["logs", "--daemon"], environment: env)
        #expect(all.status == 0, "\(all.stderr)")
        let lines = all.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 7, "\(lines)")
        #expect(lines.first?.range(of: #"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d I edged\[4242\]: edged 1\.0 starting$"#,
                                   options: .regularExpression) != nil, "\(lines)")
        #expect(lines.contains { $0.hasSuffix(" E edged[4242]: cannot start container web/app: exec format error pod=default/web") })
        #expect(lines.contains { $0.hasSuffix(" E edged[1]: edged.service: Watchdog timeout (limit 30s)!") })
        #expect(lines.last?.hasSuffix(" D edged[4242]: debug detail") == true)
        #expect(!all.stdout.contains("sshd") && !all.stdout.contains("ssh.service"))

        let tail = try await edgectl(["logs", "--daemon", "--tail", "2"], environment: env)
        #expect(tail.stdout.split(separator: "\n").map { String($0.split(separator: " ", maxSplits: 3)[3]) }
                == ["edged[4242]: state dir is read-only", "edged[4242]: debug detail"], "\(tail.stdout)")

        let recent = try await edgectl(["logs", "--daemon", "--since-seconds", "100"], environment: env)
        #expect(recent.stdout.split(separator: "\n").count == 4, "\(recent.stdout)")
        #expect(!recent.stdout.contains("old warning"))

        let none = try await edgectl(["logs", "--daemon", "--since-seconds", "1"], environment: env)
        #expect(none.status == 0)
        #expect(none.stdout.isEmpty)
        #expect(none.stderr.contains("the journal has no entries of edged"))
    }

    /// journald (and journal-remote) compress values over 512 bytes with zstd: the host build reads them whole.
    @Test func longMessagesAreReadWhole() async throws {
        let long = "stack: " + String(repeating: "frame ", count: 500) + "end"
        let dir = try journalDir([edged(3, long, 5)])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try await edgectl(["logs", "--daemon"], environment: ["EDGECTL_JOURNAL_DIR": dir])
        #expect(r.stdout.hasSuffix(" E edged[4242]: \(long)\n"), "\(r.stdout.prefix(200))")
    }

    @Test func logsDaemonFollowPrintsNewEntries() throws {
        let dir = try journalDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try edgectlPath())
        p.arguments = ["logs", "--daemon", "-f", "--tail", "1"]
        var env = ProcessInfo.processInfo.environment
        env["EDGECTL_JOURNAL_DIR"] = dir
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { p.terminate() }; p.waitUntilExit() }
        let reader = LineReader(out.fileHandleForReading)
        #expect(reader.next(timeout: 10)?.hasSuffix("debug detail") == true)
        try writeJournal([edged(4, "a new warning while following", 0)], dir: dir, file: "more.journal")
        #expect(reader.next(timeout: 10)?.hasSuffix("W edged[4242]: a new warning while following") == true)
    }

    @Test func logsDaemonWithoutAJournalSaysWhereTheLogIs() async throws {
        let r = try await edgectl(["logs", "--daemon"], environment: ["EDGECTL_JOURNAL_DIR": "/tmp/edgectl-no-journal-\(getpid())"])
        #expect(r.status == 1)
        #expect(r.stdout.isEmpty)
        #expect(r.stderr.hasPrefix("edgectl: cannot read edged's log from the journal: cannot open the journal in /tmp/edgectl-no-journal-"))
        #expect(r.stderr.contains("edged started by hand logs to the terminal (stderr) it was started from."))
    }

    @Test func logsDaemonRefusesContainerOptions() async throws {
        let withPod = try await edgectl(["logs", "--daemon", "web"])
        #expect(withPod.status == 2)
        #expect(withPod.stderr.contains("--daemon prints edged's own log: leave out the pod (web)"))
        let withContainer = try await edgectl(["logs", "--daemon", "-c", "app"])
        #expect(withContainer.status == 2)
        #expect(withContainer.stderr.contains("-c is for container logs, not with --daemon"))
        let neither = try await edgectl(["logs"])
        #expect(neither.status == 2)
        #expect(neither.stderr.contains("Missing expected argument '<pod>' (or --daemon for edged's own log)"))
    }
}

/// Reads lines from a pipe with a timeout (on a Dispatch thread).
private final class LineReader: @unchecked Sendable {
    private let handle: FileHandle
    private var buffer = Data()
    init(_ handle: FileHandle) { self.handle = handle }

    func next(timeout: TimeInterval) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let nl = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[buffer.startIndex..<nl], as: UTF8.self)
                buffer.removeSubrange(buffer.startIndex...nl)
                return line
            }
            var pfd = pollfd(fd: handle.fileDescriptor, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 100) == 1 {
                let chunk = handle.availableData
                if chunk.isEmpty { return nil }
                buffer.append(chunk)
            }
        }
        return nil
    }
}
