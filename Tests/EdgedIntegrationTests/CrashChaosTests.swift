// Faults: kill -9 of edged at random moments (just after start, during pod start and image unpack, during a
// manifest add/remove, during status and log writes). After each restart every pod that should run runs again
// (re-adopted, or restarted per its policy), no container runs twice, and at the end nothing is left behind.
// A failing run replays with EDGED_CHAOS_SEED=<seed>; EDGED_SOAK=1 runs 50 rounds instead of 6.

import EdgedDaemon
import EdgedTestSupport
import Foundation
import Testing

/// One live container as the host sees it: its edged-monitor (a session leader running
/// `edged-monitor run <stateDir>/containers/<id>`) and what that directory's spec.json and state say.
struct LiveContainer {
    var id: String
    var podName: String
    var containerName: String
    var argv: String
    var monitorPid: Int32
    var containerPid: Int32
}

/// The container monitors of `edged` now running, found through /proc (not through edged).
func liveContainers(_ edged: EdgedInstance) -> [LiveContainer] {
    let prefix = "\(edged.stateDir)/containers/"
    var found: [LiveContainer] = []
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
        guard let pid = Int32(entry), let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { continue }
        let args = raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        guard args.count >= 3, args[0].hasSuffix("edged-monitor"), args[1] == "run", args[2].hasPrefix(prefix) else { continue }
        // The short-lived first process and a container child before its exec share the cmdline; only the
        // monitor itself called setsid(). stat: "pid (comm) state ppid pgrp session ...".
        guard let stat = procText("/proc/\(pid)/stat"),
              let close = stat.lastIndex(of: ")") else { continue }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 3, Int32(fields[3]) == pid, fields[0] != "Z" else { continue }
        let dir = args[2]
        let spec = (FileManager.default.contents(atPath: "\(dir)/spec.json"))
            .flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] } ?? [:]
        let state = (try? String(contentsOfFile: "\(dir)/state", encoding: .utf8)) ?? ""
        let containerPid = state.split(separator: "\n").first { $0.hasPrefix("containerPid=") }
            .flatMap { Int32($0.dropFirst("containerPid=".count)) } ?? 0
        found.append(LiveContainer(id: String(dir.dropFirst(prefix.count)), podName: spec["podName"] as? String ?? "?",
                                   containerName: spec["containerName"] as? String ?? "?",
                                   argv: (spec["argv"] as? [String] ?? []).joined(separator: " "),
                                   monitorPid: pid, containerPid: containerPid))
    }
    return found
}

/// Every cgroup dir below the test's cgroup prefix, in every hierarchy, with the processes in it.
func testCgroups(_ edged: EdgedInstance) -> [(dir: String, pids: [Int32])] {
    var result: [(String, [Int32])] = []
    for hierarchy in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
        let root = "/sys/fs/cgroup/\(hierarchy)/\(edged.cgroupRoot)"
        guard FileManager.default.fileExists(atPath: root) else { continue }
        let subs = (FileManager.default.enumerator(atPath: root)?.allObjects as? [String] ?? [])
            .filter { $0.hasSuffix("/cgroup.procs") }.map { "\(root)/\(($0 as NSString).deletingLastPathComponent)" }
        for dir in [root] + subs {
            let procs = (try? String(contentsOfFile: "\(dir)/cgroup.procs", encoding: .utf8)) ?? ""
            result.append((dir, procs.split(separator: "\n").compactMap { Int32($0) }))
        }
    }
    return result
}

/// Mounts under the test's root dir, from this process's mountinfo: (mount point, root field).
func mountsUnder(_ path: String) -> [(point: String, root: String)] {
    let text = procText("/proc/self/mountinfo") ?? ""
    return text.split(separator: "\n").compactMap { line in
        let f = line.split(separator: " ")
        guard f.count > 4, f[4].hasPrefix(path) else { return nil }
        return (String(f[4]), String(f[3]))
    }
}

/// Whether a process or mount of `edged` still holds one of the network namespaces `netns` ("net:[inode]").
/// The kernel reuses namespace inode numbers, so a process counts only when it is edged's (its command line
/// names the test's dir, or it sits in the test's cgroups): another test's fresh netns is not a leak.
func netnsHolders(_ netns: Set<String>, of edged: EdgedInstance) -> [String] {
    guard !netns.isEmpty else { return [] }
    var holders: [String] = []
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where Int32(entry) != nil {
        guard let link = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(entry)/ns/net"), netns.contains(link) else { continue }
        let cmdline = String(decoding: FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") ?? Data(), as: UTF8.self)
        let cgroups = procText("/proc/\(entry)/cgroup") ?? ""
        if cmdline.contains(edged.root.path) || cgroups.contains("/\(edged.cgroupRoot)/") { holders.append("pid \(entry) in \(link)") }
    }
    let text = procText("/proc/self/mountinfo") ?? ""
    for line in text.split(separator: "\n") {
        let f = line.split(separator: " ")
        if f.count > 4, netns.contains(String(f[3])) { holders.append("mount \(f[4]) of \(f[3])") }
    }
    return holders
}

@Suite(.serialized, .enabled(if: isRoot, "needs root: starts real containers"))
struct CrashChaosTests {
    enum Moment: String, CaseIterable {
        case justAfterStart = "just after start"
        case podStart = "during pod start"
        case manifestChange = "during a manifest add/remove"
        case steady = "during status and log writes"
    }

    @Test func kill9AtRandomMomentsLosesNothing() throws {
        let seed = ProcessInfo.processInfo.environment["EDGED_CHAOS_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 1...UInt64(UInt32.max))
        let rounds = ProcessInfo.processInfo.environment["EDGED_SOAK"] == "1" ? 50 : 6
        print("chaos: seed \(seed), \(rounds) rounds (replay with EDGED_CHAOS_SEED=\(seed))")
        var rng = SeededRNG(state: seed)

        let edged = try EdgedInstance(name: "chaos")
        var cleaned = false
        defer { if !cleaned { edged.cleanUp() } }
        try Demo.writeImageArchive(to: "\(edged.stateDir)/images/import/busybox.tar")
        let onceDir = edged.root.sub("once")
        try FileManager.default.createDirectory(atPath: onceDir, withIntermediateDirectories: true)
        try edged.start()

        // Always (idle), Always (a log line every 50 ms), OnFailure that exits 0 once (it counts its runs in a
        // hostPath file), and "churn", added, replaced and removed by the rounds.
        try edged.writeManifest("keep.yaml", busyboxPod("keep", command: "sleep 3600"))
        try edged.writeManifest("ticker.yaml", busyboxPod("ticker", command: "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.05; done"))
        try edged.writeManifest("once.yaml", busyboxPod("once", command: "echo ran >> /out/runs; sleep 1; exit 0", restartPolicy: "OnFailure", extra: """
                volumeMounts: [{name: out, mountPath: /out}]
              volumes: [{name: out, hostPath: {path: \(onceDir), type: Directory}}]
            """))
        var churnGeneration = 0
        func churnPresent() -> Bool { FileManager.default.fileExists(atPath: "\(edged.manifestDir)/churn.yaml") }
        func writeChurn() throws {
            churnGeneration += 1
            try edged.writeManifest("churn.yaml", busyboxPod("churn", command: "sleep 3600 # gen\(churnGeneration)"))
        }

        var kills = 0, podChecks = 0, lost = 0, duplicated = 0, readoptionMisses = 0
        var problems: [String] = []
        var netns = Set<String>()
        var adopted: [String: Int32] = [:]   // pod → container pid that must survive the next crash

        func crashAndRestart(afterMs delay: Int) throws {
            Thread.sleep(forTimeInterval: Double(delay) / 1000)
            for m in mountsUnder(edged.root.path) where m.root.hasPrefix("net:[") { netns.insert(m.root) }
            edged.crash()
            kills += 1
            try edged.start()
        }

        for round in 1...rounds {
            let moment = round == 1 ? .podStart : Moment.allCases.randomElement(using: &rng)!
            let delay = Int.random(in: 0..<(moment == .justAfterStart ? 400 : 1500), using: &rng)
            let label = "round \(round) (\(moment.rawValue), kill -9 after \(delay) ms, seed \(seed))"
            switch moment {
            case .justAfterStart:
                try crashAndRestart(afterMs: 0)
            case .podStart:
                if round > 1 || Bool.random(using: &rng) { try writeChurn() }
            case .manifestChange:
                if churnPresent() { edged.removeManifest("churn.yaml") } else { try writeChurn() }
            case .steady:
                break
            }
            try crashAndRestart(afterMs: delay)

            // Every pod that should run is Running again, "once" ends Succeeded, a removed "churn" is gone.
            var shouldRun = ["keep", "ticker"]
            if churnPresent() { shouldRun.append("churn") }
            var statusPid: [String: Int32] = [:]
            var roundLost: [String] = []
            for name in shouldRun {
                podChecks += 1
                do {
                    let p = try edged.waitForPod(name, timeout: 30, "Running again after \(label)") {
                        $0["phase"] as? String == "Running" && mainContainer($0)["state"] as? String == "running"
                            && pidAlive(Int32(mainContainer($0)["pid"] as? Int ?? 0))
                    }
                    statusPid[name] = Int32(mainContainer(p)["pid"] as? Int ?? 0)
                } catch {
                    roundLost.append("\(name): \(error)")
                }
            }
            podChecks += 1
            do {
                try edged.waitForPod("once", timeout: 30, "Succeeded after \(label)") { $0["phase"] as? String == "Succeeded" }
                let runs = ((try? String(contentsOfFile: "\(onceDir)/runs", encoding: .utf8)) ?? "").split(separator: "\n").count
                if runs != 1 { problems.append("\(label): the OnFailure pod that exits 0 ran \(runs) times, not once"); duplicated += 1 }
            } catch {
                roundLost.append("once: \(error)")
            }
            if !churnPresent() {
                podChecks += 1
                let deadline = Date().addingTimeInterval(30)
                while Date() < deadline, (try? edged.pod("churn")) != nil { Thread.sleep(forTimeInterval: 0.1) }
                if (try? edged.pod("churn")) != nil { roundLost.append("churn: still listed 30 s after its manifest was removed") }
            }
            lost += roundLost.count
            problems += roundLost.map { "\(label): \($0)" }

            // Exactly one live monitor per running container, the one edged reports; none for the others;
            // no container process in a cgroup whose monitor is gone. Give stopping containers a moment.
            var found: [String] = []
            var twice = 0
            let deadline = Date().addingTimeInterval(15)
            repeat {
                found = []
                twice = 0
                let live = liveContainers(edged)
                for name in ["keep", "ticker", "churn", "once"] {
                    let mine = live.filter { $0.podName == "\(name)-node-\(edged.name)" && $0.containerName == "main" }
                    let want = statusPid[name] == nil ? 0 : 1
                    if mine.count > 1 { twice += 1 }
                    if mine.count != want {
                        found.append("\(name): \(mine.count) live container monitors, want \(want): \(mine.map { "pid \($0.monitorPid) \($0.argv)" })")
                    } else if let m = mine.first, m.containerPid != statusPid[name] {
                        found.append("\(name): the live container is pid \(m.containerPid), edgectl says \(statusPid[name] ?? 0)")
                    } else if name == "churn", let m = mine.first, !m.argv.hasSuffix("gen\(churnGeneration)") {
                        found.append("churn: an old version runs (\(m.argv)), want gen\(churnGeneration)")
                    }
                }
                let liveIDs = Set(live.map(\.id))
                for cg in testCgroups(edged) where !cg.pids.isEmpty && !liveIDs.contains((cg.dir as NSString).lastPathComponent) {
                    found.append("processes \(cg.pids) in \(cg.dir) without a live monitor")
                }
                if found.isEmpty { break }
                Thread.sleep(forTimeInterval: 0.2)
            } while Date() < deadline
            duplicated += twice
            problems += found.map { "\(label): \($0)" }

            // Containers running before this round's crash are re-adopted (same process), not restarted.
            for (name, pid) in adopted {
                if let now = statusPid[name], now != pid {
                    readoptionMisses += 1
                    problems.append("\(label): \(name) was restarted (pid \(pid) → \(now)) instead of re-adopted")
                }
            }
            adopted = statusPid.filter { $0.key != "churn" }

            // The store opens clean: edgectl answers, the node turns healthy, nothing was found corrupt.
            let healthyBy = Date().addingTimeInterval(10)
            while Date() < healthyBy, (try? edged.status())?["healthy"] as? Bool != true { Thread.sleep(forTimeInterval: 0.1) }
            let status = try edged.status()
            if status["healthy"] as? Bool != true { problems.append("\(label): node not healthy: \(status["reasons"] ?? "")") }
            if edged.log().lowercased().contains("corrupt") { problems.append("\(label): edged's log mentions corruption") }
            if !problems.isEmpty { break }
        }

        // The ticker's log lost no line: each container log file counts up without a gap.
        var linesLost = 0
        for file in (try? FileManager.default.subpathsOfDirectory(atPath: edged.logDir)) ?? [] where file.contains("ticker") && file.hasSuffix(".log") {
            let text = (try? String(contentsOfFile: "\(edged.logDir)/\(file)", encoding: .utf8)) ?? ""
            let ticks = text.split(separator: "\n").compactMap { line in line.range(of: "stdout F tick ").flatMap { Int(line[$0.upperBound...]) } }
            for (a, b) in zip(ticks, ticks.dropFirst()) where b != a + 1 { linesLost += max(b - a - 1, 1) }
        }
        if linesLost > 0 { problems.append("the ticker's log lost \(linesLost) lines") }

        // Removing every manifest stops and deletes every pod; after edged stops nothing of them is left.
        for file in (try? FileManager.default.contentsOfDirectory(atPath: edged.manifestDir)) ?? [] { edged.removeManifest(file) }
        let goneBy = Date().addingTimeInterval(40)
        while Date() < goneBy, let pods = try? edged.status()["pods"] as? [[String: Any]], !pods.isEmpty { Thread.sleep(forTimeInterval: 0.1) }
        for m in mountsUnder(edged.root.path) where m.root.hasPrefix("net:[") { netns.insert(m.root) }
        edged.stop()
        func leftovers(_ when: String) -> [String] {
            var found = liveContainers(edged).map { "\(when): container monitor pid \($0.monitorPid) of \($0.podName)" }
            for cg in testCgroups(edged) {
                if !cg.pids.isEmpty { found.append("\(when): processes \(cg.pids) in \(cg.dir)") }
                // The runtime keeps its prefix dir (like kubelet's kubepods); cleanUp removes it.
                let isPrefix = cg.dir.hasSuffix("/\(edged.cgroupRoot)")
                if !isPrefix || when == "after cleanUp" { found.append("\(when): cgroup \(cg.dir)") }
            }
            // The runtime keeps the sandboxes bind mount (like /run/netns); cleanUp removes it.
            found += mountsUnder(edged.root.path).filter { $0.point != "\(edged.runDir)/sandboxes" || when == "after cleanUp" }
                .map { "\(when): mount \($0.point)" }
            found += netnsHolders(netns, of: edged).map { "\(when): network namespace held by \($0)" }
            return found
        }
        var leaks = leftovers("after the pods were removed")
        let finalLog = edged.log()
        edged.cleanUp()
        cleaned = true
        leaks += leftovers("after cleanUp")
        problems += leaks

        print("chaos: \(kills) kills, \(podChecks) pod checks, \(lost) lost, \(duplicated) duplicated, \(leaks.count) leaked, "
              + "\(readoptionMisses) restarted instead of re-adopted, \(linesLost) log lines lost, \(netns.count) netns (seed \(seed))")
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))\nedged log:\n\(finalLog.suffix(3000))")
        #expect(kills >= rounds)
    }
}
