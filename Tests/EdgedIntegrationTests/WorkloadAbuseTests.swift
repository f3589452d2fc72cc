// Workload abuse (issue [6]): four misbehaving pods at once next to a well-behaved one, through the real daemon.
// A fork bomb stays at the pids limit, a log flooder's log stays within its rotation bound, a pod that ignores
// SIGTERM is SIGKILLed once its grace period is over, and a pod that exits in a loop is restarted with kubelet's
// back-off; meanwhile a heartbeat pod logs every 100 ms without a gap and `edgectl status` answers promptly.
//
// edged limits every container to 1024 processes by default (podPidsLimit); the test sets a smaller limit the way
// an operator would, in the config file, together with a small containerLogMaxSize so rotation happens often.

import EdgedCore
import EdgedDaemon
import EdgedTestSupport
import Foundation
import Testing

/// Whether `pid` is a live (not zombie) process.
private func procAlive(_ pid: Int32) -> Bool {
    guard let stat = procText("/proc/\(pid)/stat"),
          let close = stat.lastIndex(of: ")") else { return false }
    return stat[stat.index(after: close)...].split(separator: " ").first != "Z"
}

/// An integer from a cgroup file, or from its "key value" line when `key` is given.
private func cgroupNumber(_ path: String, key: String? = nil) -> Int? {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
    guard let key else { return Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) }
    for line in text.split(separator: "\n") {
        let f = line.split(separator: " ")
        if f.count == 2, f[0] == key { return Int(f[1]) }
    }
    return nil
}

/// edged's resident memory in KiB (VmRSS).
private func rssKiB(_ pid: Int32) -> Int {
    let text = procText("/proc/\(pid)/status") ?? ""
    let line = text.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
    return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
}

/// The log files of one pod (its dir in kubelet's layout), and their total size counted once per inode, so a
/// rotation between listing and stat cannot count a file twice.
private func podLogFiles(_ edged: EdgedInstance, pod: String) -> (files: [String], bytes: Int) {
    let fm = FileManager.default
    guard let dir = (try? fm.contentsOfDirectory(atPath: edged.logDir))?.first(where: { $0.contains("_\(pod)-node-\(edged.name)_") })
    else { return ([], 0) }
    let files = ((try? fm.subpathsOfDirectory(atPath: "\(edged.logDir)/\(dir)")) ?? []).map { "\(edged.logDir)/\(dir)/\($0)" }
    var seen = Set<UInt64>()
    var bytes = 0
    var regular: [String] = []
    for f in files {
        var st = stat()
        guard stat(f, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
        regular.append(f)
        if seen.insert(UInt64(st.st_ino)).inserted { bytes += Int(st.st_size) }
    }
    return (regular, bytes)
}

/// Timestamps (seconds since the epoch) of the records of `file` whose message is `message`.
private func recordTimes(_ file: String, message: String) -> [Double] {
    let data = FileManager.default.contents(atPath: file) ?? Data()
    return data.split(separator: UInt8(ascii: "\n")).compactMap { line in
        guard let r = try? CRILogRecord.parse(ArraySlice(line)), r.message == Array(message.utf8) else { return nil }
        return Double(r.timestamp.seconds) + Double(r.timestamp.nanoseconds) / 1e9
    }
}

@Suite(.serialized, .enabled(if: isRoot, "needs root: starts real containers"))
struct WorkloadAbuseTests {
    @Test func abusiveWorkloadsAreContainedAndOthersUnaffected() throws {
        let pidsLimit = 64, logMaxBytes = 64 << 10, logMaxFiles = 3, grace = 2.0
        let window: TimeInterval = ProcessInfo.processInfo.environment["EDGED_SOAK"] == "1" ? 60 : 12
        let edged = try EdgedInstance(name: "abuse")
        defer { edged.cleanUp() }
        try Demo.writeImageArchive(to: "\(edged.stateDir)/images/import/busybox.tar")
        try """
            cni:
              confDir: \(edged.root.sub("cni/net.d"))
            podPidsLimit: \(pidsLimit)
            containerLogMaxSize: \(logMaxBytes / 1024)Ki
            containerLogMaxFiles: \(logMaxFiles)
            """.write(toFile: edged.root.sub("config.yaml"), atomically: true, encoding: .utf8)
        try edged.start()
        let edgedPid = edged.process!.processIdentifier

        // The well-behaved pod first: its heartbeat is watched the whole time.
        try edged.writeManifest("heartbeat.yaml", busyboxPod("heartbeat", command: "while true; do echo hb; sleep 0.1; done"))
        try edged.waitForPod("heartbeat", "Running") { $0["phase"] as? String == "Running" }
        let rssBefore = rssKiB(edgedPid)

        // The abusers, all at once. Every bomb process forks two more every 0.2 s until a fork fails (which ends
        // only that subshell), so the bomb keeps pressing on its limit; its first process starts the bomb in the
        // background and `wait`s, so it never forks again (its death would end the bomb) and reaps the orphans.
        let line = String(repeating: "flood", count: 20)
        try edged.writeManifest("bomb.yaml", busyboxPod("bomb", command: "sleep 3600 & f(){ while true; do f & f & sleep 0.2; done; }; f & wait"))
        try edged.writeManifest("flood.yaml", busyboxPod("flood", command: "exec yes \(line)"))
        try edged.writeManifest("stubborn.yaml", busyboxPod("stubborn", command: "trap \"\" TERM; sleep 3600 & sleep 3600 & wait"))
        try edged.writeManifest("looper.yaml", busyboxPod("looper", command: "echo run; exit 1"))
        for name in ["bomb", "flood", "stubborn"] {
            try edged.waitForPod(name, "Running") { $0["phase"] as? String == "Running" && mainContainer($0)["state"] as? String == "running" }
        }
        let windowStart = Date()

        // The bomb's and the SIGTERM-ignorer's pids cgroups, found through their live monitors.
        let live = liveContainers(edged)
        func pidsDir(_ pod: String) throws -> String {
            let id = try #require(live.first { $0.podName == "\(pod)-node-\(edged.name)" }?.id, "no live container of \(pod)")
            let dir = testCgroups(edged).map(\.dir).first { $0.contains("/pids/") && $0.hasSuffix("/\(id)") }
            return try #require(dir, "no pids cgroup for \(pod) (\(id))")
        }
        let bombCgroup = try pidsDir("bomb")
        #expect(cgroupNumber("\(bombCgroup)/pids.max") == pidsLimit, "podPidsLimit reached the container's cgroup")
        let stubbornCgroup = try pidsDir("stubborn")
        var stubbornProcs: [Int32] = []
        for attempt in 0..<40 where stubbornProcs.count < 3 {   // its sh may not have forked both sleeps yet
            if attempt > 0 { Thread.sleep(forTimeInterval: 0.05) }
            stubbornProcs = ((try? String(contentsOfFile: "\(stubbornCgroup)/cgroup.procs", encoding: .utf8)) ?? "")
                .split(separator: "\n").compactMap { Int32($0) }
        }
        #expect(stubbornProcs.count == 3, "sh and its two sleeps: \(stubbornProcs)")

        var pidsPeak = 0, logPeak = 0, rssPeak = rssBefore, statusMax = 0.0, statusCalls = 0
        var removedAt: Date?, killTime: Double?, removedTime: Double?
        var sawBackOff = false
        var nextStatus = Date()
        while Date().timeIntervalSince(windowStart) < window {
            pidsPeak = max(pidsPeak, cgroupNumber("\(bombCgroup)/pids.current") ?? 0)
            logPeak = max(logPeak, podLogFiles(edged, pod: "flood").bytes)
            rssPeak = max(rssPeak, rssKiB(edgedPid))
            if removedAt == nil, Date().timeIntervalSince(windowStart) >= 2 {
                edged.removeManifest("stubborn.yaml")
                removedAt = Date()
            }
            if let at = removedAt, killTime == nil, !stubbornProcs.contains(where: procAlive) {
                killTime = Date().timeIntervalSince(at)
            }
            if let at = removedAt, removedTime == nil, !FileManager.default.fileExists(atPath: stubbornCgroup) {
                removedTime = Date().timeIntervalSince(at)
            }
            if Date() >= nextStatus {
                let t0 = Date()
                let status = try edged.status()
                statusMax = max(statusMax, Date().timeIntervalSince(t0))
                statusCalls += 1
                nextStatus = Date().addingTimeInterval(0.5)
                let pods = status["pods"] as? [[String: Any]] ?? []
                if let looper = pods.first(where: { ($0["name"] as? String)?.hasPrefix("looper-") == true }),
                   looper["reason"] as? String == "CrashLoopBackOff" { sawBackOff = true }
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        let windowEnd = Date()

        // Other pods unaffected: the heartbeat ran without a gap, never restarted, edged still answers.
        let heartbeat = try #require(try edged.pod("heartbeat"))
        #expect(mainContainer(heartbeat)["restarts"] as? Int == 0 && mainContainer(heartbeat)["state"] as? String == "running")
        let beats = podLogFiles(edged, pod: "heartbeat").files.flatMap { recordTimes($0, message: "hb") }.sorted()
            .filter { $0 >= windowStart.timeIntervalSince1970 - 0.5 && $0 <= windowEnd.timeIntervalSince1970 }
        let maxGap = zip(beats, beats.dropFirst()).map { $1 - $0 }.max() ?? .infinity
        #expect(Double(beats.count) >= window * 5, "heartbeats in the \(window) s window: \(beats.count)")
        #expect(maxGap <= 1.0, "longest heartbeat gap \(maxGap) s")
        #expect(statusMax <= 2.0, "slowest edgectl status: \(statusMax) s")
        #expect(edged.process?.isRunning == true)

        // Fork bomb: at the limit, never above, and it did hit it (forks failed).
        let forkFailures = cgroupNumber("\(bombCgroup)/pids.events", key: "max") ?? 0
        #expect(pidsPeak <= pidsLimit && pidsPeak >= pidsLimit / 2, "bomb pids peak \(pidsPeak), limit \(pidsLimit)")
        #expect(forkFailures > 0, "the bomb never hit its pids limit")

        // Log flood: rotated, bounded by files × size plus one record (≤ 16 KiB + header) per file.
        let logBound = logMaxFiles * (logMaxBytes + (16 << 10) + 64)
        let flood = podLogFiles(edged, pod: "flood")
        #expect(logPeak > logMaxBytes, "the flooder wrote \(logPeak) bytes: did it rotate at all?")
        #expect(logPeak <= logBound && flood.files.count <= logMaxFiles, "flood log \(logPeak) bytes in \(flood.files), bound \(logBound)")
        #expect(rssPeak <= max(2 * rssBefore, rssBefore + 50 << 10), "edged RSS \(rssBefore) → \(rssPeak) KiB")

        // SIGTERM-ignorer: it waited out the grace period (TERM really was ignored), then died at once.
        let kill = try #require(killTime, "the SIGTERM-ignorer's processes still live \(window - 2) s after its removal")
        #expect(kill >= grace - 0.2 && kill <= grace + 3, "killed \(kill) s after removal, grace \(grace) s")
        #expect(removedTime.map { $0 <= grace + 5 } == true, "its cgroup removed after \(String(describing: removedTime)) s")

        // Crash loop: restarts slow down. Kubelet's schedule (immediate, then 10 s, 20 s, …) allows at most 3 in
        // 30 s; without back-off it would restart once per start-and-exit cycle (the first, immediate, restart).
        let looper = try #require(try edged.pod("looper"))
        let restarts = mainContainer(looper)["restarts"] as? Int ?? 0
        let runs = podLogFiles(edged, pod: "looper").files.flatMap { recordTimes($0, message: "run") }.sorted()
        let cycle = runs.count >= 2 ? runs[1] - runs[0] : window
        let loopSeconds = windowEnd.timeIntervalSince1970 - (runs.first ?? windowStart.timeIntervalSince1970)
        #expect(sawBackOff, "the looper was never reported in CrashLoopBackOff")
        #expect(restarts >= 1 && restarts <= backoffBound(loopSeconds + 1), "\(restarts) restarts in \(loopSeconds) s")

        // Clean up: every pod goes (a pod leaves edgectl's list when its termination starts), and within the grace
        // period and a little more its containers are gone, the bomb's processes with them.
        for f in (try? FileManager.default.contentsOfDirectory(atPath: edged.manifestDir)) ?? [] { edged.removeManifest(f) }
        let cleanupStart = Date()
        var leftover: [(dir: String, pids: [Int32])] = []
        repeat {
            Thread.sleep(forTimeInterval: 0.1)
            leftover = testCgroups(edged).filter { !$0.pids.isEmpty }
        } while Date().timeIntervalSince(cleanupStart) < grace + 10 && (!leftover.isEmpty || !liveContainers(edged).isEmpty)
        let cleanupTime = Date().timeIntervalSince(cleanupStart)
        #expect(leftover.isEmpty && liveContainers(edged).isEmpty, "left behind \(cleanupTime) s after removal: \(leftover)")
        #expect((try edged.status()["pods"] as? [[String: Any]] ?? []).isEmpty, "pods left after removing every manifest")

        print(String(format: "abuse: bomb pids peak %d/%d (%d forks refused), flood log %d/%d bytes, edged RSS %d→%d KiB, "
                     + "SIGTERM-ignorer killed %.1f s after removal (grace %.0f s), looper %d restarts in %.0f s (no back-off: ~%.0f), "
                     + "heartbeat max gap %.2f s, edgectl status max %.2f s (%d calls), all pods gone %.1f s after removal",
                     pidsPeak, pidsLimit, forkFailures, logPeak, logBound, rssBefore, rssPeak, kill, grace, restarts, loopSeconds,
                     loopSeconds / max(cycle, 0.001), maxGap, statusMax, statusCalls, cleanupTime))
    }
}

/// Restarts kubelet's back-off allows in `seconds` of a container that exits at once: one immediately, then one
/// after 10 s, 20 s, 40 s, … (cumulative 10, 30, 70, …), capped at 5 min.
private func backoffBound(_ seconds: Double) -> Int {
    var count = 1, at = 0.0, delay = 10.0
    while at + delay <= seconds {
        at += delay
        count += 1
        delay = min(delay * 2, 300)
    }
    return count
}
