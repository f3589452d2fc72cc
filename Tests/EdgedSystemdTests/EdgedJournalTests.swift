// End to end with a real journald: edged started the way systemd starts it (stderr is the journal stream, named by
// JOURNAL_STREAM) logs its lines natively with edged's fields, and edgectl on the same machine reads them back:
// `edgectl status` shows the newest warnings, `edgectl logs --daemon` the log.

import EdgedTestSupport
import Foundation
import Testing

/// Runs `args` (posix_spawn from the calling thread, so in its mount namespace) with `env`; stdout and stderr to
/// files under `dir`. Waits when `wait`; returns the pid and, when waited for, the exit status.
private func spawn(_ args: [String], env: [String], dir: String, name: String, wait: Bool) throws -> (pid: pid_t, status: Int32) {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, "\(dir)/\(name).out", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, "\(dir)/\(name).err", O_WRONLY | O_CREAT | O_APPEND, 0o644)
    let cArgs = args.map { strdup($0) } + [nil]
    let cEnv = env.map { strdup($0) } + [nil]
    defer { (cArgs + cEnv).forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, args[0], &actions, nil, cArgs, cEnv)
    guard rc == 0 else { throw TestFailure("spawning \(args[0]): \(String(cString: strerror(rc)))") }
    guard wait else { return (pid, 0) }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return (pid, status)
}

private func text(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

@Suite(.enabled(if: canRunJournald, "needs root and systemd-journald (package systemd)"))
struct EdgedJournalTests {
    @Test func edgedLogsToTheJournalAndEdgectlReadsIt() throws {
        let edged = try EdgedInstance(name: "journal")
        defer { edged.cleanUp() }
        let dir = edged.root.path
        try "cni:\n  confDir: \(edged.root.sub("cni/net.d"))\n".write(toFile: edged.root.sub("config.yaml"), atomically: true, encoding: .utf8)
        // An image no registry serves (a closed loopback port): edged logs an error about this pod.
        try edged.writeManifest("web.yaml", """
            apiVersion: v1
            kind: Pod
            metadata:
              name: web
            spec:
              containers:
              - name: app
                image: 127.0.0.1:1/nothing:1
            """)
        let path = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        let (result, journalDir) = try withPrivateJournald { () -> (pid_t, String, String, String) in
            // systemd's way: stderr is the journal stream and JOURNAL_STREAM names its device and inode.
            let errFile = "\(dir)/edged.err"
            FileManager.default.createFile(atPath: errFile, contents: nil)
            var st = stat()
            stat(errFile, &st)
            let env = path + ["JOURNAL_STREAM=\(st.st_dev):\(st.st_ino)"]
            let (pid, _) = try spawn(["\(buildBinDir)/edged", "run"] + edged.arguments, env: env, dir: dir, name: "edged", wait: false)
            defer {
                kill(pid, SIGTERM)
                var s: Int32 = 0
                while waitpid(pid, &s, 0) < 0 && errno == EINTR {}
            }
            // Until edgectl status (read where edged runs, with the journal of this namespace) lists the pull error.
            let deadline = ContinuousClock.now + .seconds(30)
            var out = ""
            while ContinuousClock.now < deadline {
                let r = try spawn(["\(buildBinDir)/edgectl", "status", "--socket", edged.socket], env: path, dir: dir, name: "status", wait: true)
                out = text("\(dir)/status.out")
                if (r.status >> 8) == 1, out.contains("JOURNAL  edged's last warnings"), out.contains("127.0.0.1:1/nothing:1") { break }
                usleep(100_000)
            }
            _ = try spawn(["\(buildBinDir)/edgectl", "logs", "--daemon"], env: path, dir: dir, name: "logs", wait: true)
            return (pid, out, text("\(dir)/logs.out"), text(errFile))
        }
        let (edgedPID, status, logs, stderrBefore) = result
        let journalSection = status.components(separatedBy: "JOURNAL  edged's last warnings and errors (all: edgectl logs --daemon)\n")
        #expect(journalSection.count == 2, "edgectl status:\n\(status)")
        #expect(journalSection.last?.contains("ago  error  pod default/web-node-journal: container app: pulling image 127.0.0.1:1/nothing:1") == true,
                "\(status)")
        #expect(logs.contains(" I edged[\(edgedPID)]: edged "), "edgectl logs --daemon:\n\(logs)")
        #expect(logs.contains(" I edged[\(edgedPID)]: pulling image 127.0.0.1:1/nothing:1 pod=default/web-node-journal"), "\(logs)")
        #expect(stderrBefore.isEmpty, "with a journal, nothing goes to stderr: \(stderrBefore)")

        // The entries themselves: edged's fields, edged's pid.
        let entries = try journalEntries(in: journalDir).filter { $0["_PID"] == String(edgedPID) }
        let pulling = try #require(entries.first { $0["MESSAGE"] == "pulling image 127.0.0.1:1/nothing:1" }, "\(entries)")
        #expect(pulling["POD"] == "default/web-node-journal")
        #expect(pulling["PRIORITY"] == "6")
        #expect(pulling["SYSLOG_IDENTIFIER"] == "edged")
        #expect(pulling["CODE_FILE"]?.hasSuffix("PodWorker.swift") == true)
        #expect(pulling["_TRANSPORT"] == "journal")
        #expect(entries.contains { $0["PRIORITY"] == "3" })
    }
}

