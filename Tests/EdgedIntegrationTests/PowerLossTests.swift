// Power loss (issue [6]), simulated by snapshots of the state dir taken at random moments of a write-heavy run
// (the hub cache rewritten by lists through the hub and a stream of configmap changes, bound pods writing their
// state and statuses, one of them crash-looping). Each snapshot freezes edged and its container monitors with
// SIGSTOP (every thread of theirs stops between two syscalls), copies the state dir with `cp -a
// --one-file-system` (rootfs overlays, like every mount, do not survive a reboot) and lets them go on with
// SIGCONT.
//
// What this models: the disk as the kernel holds it at that instant, which is what a crash leaves once the page
// cache reaches the disk (a kernel panic with a later writeback, or a power cut after the last flush). It does
// NOT model losing writes that were not yet synced (a torn page, a reordered write, an fsync the disk lied
// about): that needs a block device that drops writes (dm-flakey / dm-log-writes), and device-mapper is not
// available here (no /dev/mapper/control).
//
// Every snapshot must then: have every SQLite file pass `PRAGMA integrity_check` (opened read-write on a copy,
// so a WAL or hot journal is replayed as a restart would), and bring up an edged (same node and config, the
// cloud stopped, so everything comes from the store, like a reboot with the uplink down) that answers `edgectl
// status`, logs nothing "corrupt" or "moved aside", and runs again the pods that ran at snapshot time.
//
// One more "torn" snapshot is copied without stopping anything. Such a copy can be worse than any real power
// loss (cp reads a file while it is rewritten, and the database and its WAL at different moments), so for it
// only edged coming up and answering is required; what its files look like is printed.
//
// 3 frozen snapshots in CI (about 20 s), 20 with EDGED_SOAK=1 (about 80 s); EDGED_POWERLOSS_SEED=<seed> replays a
// run's delays and which snapshot is torn (what is being written at each moment still varies).

import EdgedTestSupport
import Foundation
import Testing

/// What one snapshot held and what became of it.
struct PowerLossSnapshot {
    var index: Int
    var dir: String
    var torn: Bool
    /// Pods that edged reported, and whether each was Running, just before the copy.
    var pods: [String: Bool]
}

/// The files in `dir` that are SQLite databases (by their header, whatever their name).
func sqliteFiles(under dir: String) -> [String] {
    let header = Array("SQLite format 3\0".utf8)
    let fm = FileManager.default
    var found: [String] = []
    for rel in (fm.enumerator(atPath: dir)?.allObjects as? [String]) ?? [] {
        let file = "\(dir)/\(rel)"
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: file, isDirectory: &isDir), !isDir.boolValue,
              let h = FileHandle(forReadingAtPath: file) else { continue }
        let head = (try? h.read(upToCount: header.count)) ?? Data()
        try? h.close()
        if Array(head) == header { found.append(file) }
    }
    return found.sorted()
}

/// `PRAGMA integrity_check` of `db` opened read-write on a copy (with its -wal or -journal, so it is replayed like
/// on a restart): nil when "ok", else what sqlite3 said.
func integrityProblem(of db: String, scratch: String) throws -> String? {
    try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    let copy = "\(scratch)/\((db as NSString).lastPathComponent)"
    for suffix in ["", "-wal", "-journal"] where FileManager.default.fileExists(atPath: db + suffix) {
        try FileManager.default.copyItem(atPath: db + suffix, toPath: copy + suffix)
    }
    let r = try runCommand(["sqlite3", copy, "PRAGMA integrity_check"], check: false)
    let out = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    try? FileManager.default.removeItem(atPath: scratch)
    return r.status == 0 && out == "ok" ? nil : "exit \(r.status): \(out.prefix(500)) \(r.stderr.prefix(500))"
}

@Suite(.serialized, .enabled(if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge")
                                && findExecutable("kubectl") != nil && findExecutable("sqlite3") != nil,
                             "needs root, CNI plugins, kubectl and sqlite3"))
struct PowerLossTests {
    @Test func everySnapshotOfTheStateDirTakenDuringHeavyWritesOpensAndRecovers() async throws {
        try await withCluster(name: "pwrloss", subnet: "10.250.79.0/24") { f in try await Self.scenario(f) }
    }

    static func scenario(_ f: ClusterFixture) async throws {
        let env = ProcessInfo.processInfo.environment
        let seed = env["EDGED_POWERLOSS_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 1...UInt64(UInt32.max))
        let frozenCount = env["EDGED_SOAK"] == "1" ? 20 : 3
        print("power-loss: seed \(seed), \(frozenCount) frozen snapshots and 1 torn (replay with EDGED_POWERLOSS_SEED=\(seed))")
        var rng = SeededRNG(state: seed)

        // The write-heavy run: the same load as HubResilienceTests.killScenario, plus bound pods.
        try f.edged.start()
        _ = try f.join()
        _ = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("web", node: f.node, command: "exec sleep 3600"))
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("ticker", node: f.node,
            command: "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.02; done"))
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("flaky", node: f.node, command: "sleep 1; exit 1"))
        for pod in ["web", "ticker"] {
            _ = try await f.kubectl.wait(["get", "pod", pod], "\(pod) Running") { path($0, "status", "phase") as? String == "Running" }
        }
        try await waitForHub(f, "connected")
        let filler = String(repeating: "x", count: 2000)
        for i in 0..<300 {
            _ = try f.api.put("/api/v1/namespaces/default/configmaps/load-\(i)",
                              ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": "load-\(i)"],
                               "data": ["v": "\(i)", "pad": filler]])
        }
        let load = HubLoad(url: "\(f.hubURL)/api/v1/namespaces/default/configmaps", api: f.api, auth: f.hubClientAuth)
        load.start()
        let tornAt = Int.random(in: 0..<frozenCount, using: &rng)
        var snapshots: [PowerLossSnapshot] = []
        for i in 0..<frozenCount {
            try await Task.sleep(for: .milliseconds(Int.random(in: 200...1200, using: &rng)))
            snapshots.append(try takeSnapshot(f, index: snapshots.count, torn: false))
            if i == tornAt {
                try await Task.sleep(for: .milliseconds(Int.random(in: 100...600, using: &rng)))
                snapshots.append(try takeSnapshot(f, index: snapshots.count, torn: true))
            }
        }
        load.stop()
        #expect(load.lists > 3, "the load generator listed through the hub only \(load.lists) times")

        // The cloud goes away for good, and the node's own pods stop (as by the power cut).
        try await f.api.stop()
        f.edged.stop()
        try f.edged.start(extraArgs: ["--stop-pods-on-exit"])
        f.edged.stop()
        let original = f.side.sub("state-original")
        try FileManager.default.moveItem(atPath: f.edged.stateDir, toPath: original)
        defer {
            try? FileManager.default.removeItem(atPath: f.edged.stateDir)
            try? FileManager.default.moveItem(atPath: original, toPath: f.edged.stateDir)
        }

        var clean = 0, corrupt = 0, recovered = 0, expected = 0
        var findings: [String] = []
        var databases: Set<String> = [], checked = 0, withWAL = 0
        for snap in snapshots {
            let label = "snapshot \(snap.index)\(snap.torn ? " (torn)" : "") of seed \(seed)"
            // Every database, opened as a restart would.
            var problems: [String] = []
            for db in sqliteFiles(under: snap.dir) {
                databases.insert(String(db.dropFirst(snap.dir.count + 1)))
                checked += 1
                let wal = (try? FileManager.default.attributesOfItem(atPath: db + "-wal"))?[.size] as? Int ?? 0
                if wal > 0 { withWAL += 1 }
                if let p = try integrityProblem(of: db, scratch: f.side.sub("check-\(snap.index)")) {
                    problems.append("\(db.dropFirst(snap.dir.count + 1)): \(p)")
                }
            }
            // edged on the snapshot, in place of the state dir (same paths, node name, cgroup prefix and socket;
            // the first edged is stopped, so only one daemon runs at a time).
            try FileManager.default.moveItem(atPath: snap.dir, toPath: f.edged.stateDir)
            let logStart = f.edged.log().utf8.count
            var up = true
            do { try f.edged.start(extraArgs: ["--stop-pods-on-exit"]) } catch {
                up = false
                problems.append("edged did not come up: \(error)")
            }
            var back = 0
            if up {
                let st = try? f.edged.edgectl(["status"], check: false)
                if st == nil || !(st!.status == 0 || st!.status == 1) {
                    problems.append("edgectl status did not answer: \(String(describing: st))")
                }
                // The crash-looping pod must be known again; the others must run again.
                for (pod, wasRunning) in snap.pods.sorted(by: { $0.key < $1.key }) where wasRunning || pod == "flaky" {
                    if !snap.torn { expected += 1 }
                    let ok: Bool
                    if pod == "flaky" {
                        ok = (try? f.edged.waitForPod(pod, timeout: 20, "known again") { _ in true }) != nil
                    } else {
                        ok = (try? f.edged.waitForPod(pod, timeout: 20, "Running again") { $0["phase"] as? String == "Running" }) != nil
                    }
                    if ok { back += 1 } else if !snap.torn { problems.append("pod \(pod) did not come back from the store") }
                }
                let log = String(decoding: Array(f.edged.log().utf8.dropFirst(logStart)), as: UTF8.self)
                for word in ["corrupt", "moved aside"] where log.lowercased().contains(word) {
                    let line = log.split(separator: "\n").first { $0.lowercased().contains(word) } ?? ""
                    problems.append("edged's log says \"\(word)\": \(line)")
                }
            }
            f.edged.stop()
            unmountUnder(f.edged.stateDir)
            try FileManager.default.removeItem(atPath: f.edged.stateDir)

            if snap.torn {
                // A torn copy may hold what no power loss would; only edged coming up and answering is required.
                #expect(up, "\(label): edged must come up even on a torn copy: \(problems)")
                print("power-loss: \(label): \(problems.isEmpty ? "opened clean" : problems.joined(separator: "; ")), \(back) pods back")
                continue
            }
            recovered += back
            if problems.isEmpty { clean += 1 } else {
                corrupt += 1
                findings.append("\(label): \(problems.joined(separator: "; "))")
            }
        }
        let frozen = snapshots.filter { !$0.torn }.count
        print("power-loss: \(frozen) snapshots, \(clean) opened clean, \(corrupt) corrupt, "
              + "\(recovered)/\(expected) pods recovered (seed \(seed)); "
              + "\(checked) database copies checked (\(withWAL) with a WAL to replay: "
              + "\(databases.sorted().joined(separator: ", "))), \(load.lists) lists through the hub")
        #expect(!databases.isEmpty, "no SQLite file found in the snapshots")
        for finding in findings { Issue.record("power-loss finding: \(finding)") }
        #expect(clean == frozen && recovered == expected)
    }

    /// Freezes edged and its monitors (unless `torn`), copies the state dir, lets them go on.
    static func takeSnapshot(_ f: ClusterFixture, index: Int, torn: Bool) throws -> PowerLossSnapshot {
        let pods = try f.edged.status()["pods"] as? [[String: Any]] ?? []
        var running: [String: Bool] = [:]
        for p in pods { if let name = p["name"] as? String { running[name] = p["phase"] as? String == "Running" } }
        let dir = f.side.sub("snapshot-\(index)")
        let edgedPid = try #require(f.edged.process?.processIdentifier)
        var frozen: [Int32] = []
        if !torn {
            kill(edgedPid, SIGSTOP)
            frozen = [edgedPid] + liveContainers(f.edged).map(\.monitorPid)
            for pid in frozen.dropFirst() { kill(pid, SIGSTOP) }
            waitUntilStopped(frozen)
        }
        let copy = try runCommand(["cp", "-a", "--one-file-system", f.edged.stateDir, dir], check: false)
        for pid in frozen { kill(pid, SIGCONT) }
        // Sockets and files that vanish under a torn copy are expected; a frozen copy must be complete.
        if !torn && copy.status != 0 { throw TestFailure("cp -a of the frozen state dir failed: \(copy.stderr)") }
        return PowerLossSnapshot(index: index, dir: dir, torn: torn, pods: running)
    }

    /// Waits (briefly) until every thread of each process is in the stopped state, so none is mid-write when cp
    /// starts.
    static func waitUntilStopped(_ pids: [Int32]) {
        let deadline = Date().addingTimeInterval(2)
        for pid in pids {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
            for tid in tasks {
                while Date() < deadline {
                    guard let stat = procText("/proc/\(pid)/task/\(tid)/stat"),
                          let close = stat.lastIndex(of: ")") else { break }
                    let state = stat[stat.index(after: close)...].split(separator: " ").first ?? ""
                    if state == "T" || state == "t" || state == "Z" || state == "X" { break }
                    Thread.sleep(forTimeInterval: 0.001)
                }
            }
        }
    }

    /// Detaches whatever a run left mounted under `dir` (so the next snapshot can take its place).
    static func unmountUnder(_ dir: String) {
        guard let mounts = procText("/proc/self/mountinfo") else { return }
        for line in mounts.split(separator: "\n").reversed() {
            let fields = line.split(separator: " ")
            if fields.count > 4, fields[4] == dir || fields[4].hasPrefix(dir + "/") { umount2(String(fields[4]), Int32(MNT_DETACH)) }
        }
    }
}
