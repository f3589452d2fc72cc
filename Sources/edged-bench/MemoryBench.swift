// `edged-bench memory` (issue [4]): the smallest memory edged runs in, as a device owner needs to know it. edged
// runs as on a small gateway — joined to the test API server with the edge hub, the kubelet API and the tunnel
// agent on, 20 API pods running (or `--standalone`: 20 static pods) — inside a memory cgroup whose hard limit is
// lowered step by step. The page cache is dropped before edged starts, so every page of its code it touches is
// charged to that cgroup, as on a device with nothing else to share them with. Its monitors are in it too; the
// pods are in their own cgroups as always.
//
// At each step, for --step-seconds (default 120), it checks what a user would see go wrong:
// - every node Lease renewal reaches the API server on time (at most 1 s after the 10 s period; joined only);
// - a pod status change reaches the API within 2 s: a pod created in the API (bound to the node) is Running there,
//   and once deleted it is gone (the node confirms the deletion), each within 2 s; standalone: a static pod
//   manifest written → Running in `edgectl pods`, removed → gone;
// - `edgectl status` (the real binary) answers within 1 s;
// - edged is not OOM-killed and its major page fault rate (/proc/PID/stat) stays under --max-major-faults-per-s
//   (code paged back in from flash on every timer tick is how a too-small limit shows before it kills).
// The first step that fails ends the run; min_memory_mib is the smallest step that passed. Per step: edged's PSS
// and anonymous memory (smaps_rollup), the cgroup's charge and high-water mark, major faults/s, lease lateness.

import ArgumentParser
import EdgedControl
import EdgedDaemon
import EdgedTestSupport
import Foundation

struct MemoryBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memory",
        abstract: "The smallest memory cgroup limit edged stays healthy in, joined with 20 API pods (or --standalone). Needs root.")

    @Option(help: "Hard limits to try, in MiB, in this order (each one lower than the last).")
    var steps = "96,64,48,40,32,28,24,20,16,14,12"
    @Option(help: "Seconds to hold each limit.")
    var stepSeconds = 120
    @Option(help: "Pods kept running.")
    var pods = 20
    @Flag(help: "Standalone edged with static pods (no API server, hub, kubelet API or tunnel).")
    var standalone = false
    @Option(help: "Highest major page fault rate of edged a step may have, per second.")
    var maxMajorFaultsPerS = 10.0
    @Option(help: "Directory with the edged, edgectl and edged-monitor binaries (default: next to edged-bench; the shipped static ones are in cross/out/<arch>).")
    var binDir: String?
    @Option(help: ArgumentHelp("read_ahead_kb of the disk holding the binaries during the run, restored after; \"keep\" leaves it as it is.",
                               discussion: "128 is the kernel's default and what a gateway's eMMC or SD card has; some virtual disks have 8192, with which every code fault reads megabytes and edged thrashes far sooner."))
    var readAheadKb = "128"
    @Option(help: "edged's --log-level; its log is kept as /tmp/edged-bench-memory-<pid>.log.")
    var edgedLogLevel = "warning"
    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    func validate() throws {
        guard readAheadKb == "keep" || Int(readAheadKb).map({ $0 >= 0 }) == true else {
            throw ValidationError("--read-ahead-kb: give a number of KB (e.g. 128) or keep")
        }
        let limits = try parsedSteps()
        guard !limits.isEmpty else { throw ValidationError("--steps: give at least one limit in MiB, e.g. 64,48,32") }
        guard zip(limits, limits.dropFirst()).allSatisfy({ $0 > $1 }) else {
            throw ValidationError("--steps must go down: \(steps)")
        }
        guard stepSeconds >= 20 else { throw ValidationError("--step-seconds must be at least 20 (two lease periods)") }
        guard pods >= 0 else { throw ValidationError("--pods must not be negative") }
    }

    func parsedSteps() throws -> [Int] {
        try steps.split(separator: ",").map {
            guard let v = Int($0.trimmingCharacters(in: .whitespaces)), v >= 4 else {
                throw ValidationError("--steps: \"\($0)\" is not a limit in MiB (4 or more)")
            }
            return v
        }
    }

    func run() async throws {
        guard getuid() == 0 else { throw ValidationError("edged-bench memory needs root: it creates cgroups and starts real containers") }
        let bin = binDir ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        let tools = ["edged", "edgectl", "edged-monitor"]
        for tool in tools where !FileManager.default.isExecutableFile(atPath: "\(bin)/\(tool)") {
            throw ValidationError("no \(bin)/\(tool): build it (swift build -c release) or give --bin-dir")
        }
        // Private copies of the binaries (new inodes): a page of a file is charged to the cgroup that touched it
        // first, so if anything else maps the same edged (another edged, a tunnel server), part of its code would be
        // in memory for free and the figures would be too good.
        let copies = NSTemporaryDirectory() + "edged-bench-memory-bin-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: copies) }
        try FileManager.default.createDirectory(atPath: copies, withIntermediateDirectories: true)
        for tool in tools {
            try FileManager.default.copyItem(atPath: "\(bin)/\(tool)", toPath: "\(copies)/\(tool)")
        }
        // The disk's read-ahead decides how much each code fault reads (see --read-ahead-kb).
        guard let readAhead = ReadAhead(path: copies) else {
            throw ValidationError("cannot find the block device of \(copies) (its read_ahead_kb is part of the figures)")
        }
        let original = readAhead.kb
        if let kb = Int(readAheadKb) { try readAhead.set(kb) }
        defer { if let original { try? readAhead.set(original) } }
        let run = MemoryRun(bin: copies, binaryShown: "\(bin)/edged", readAheadKB: readAhead.kb, logLevel: edgedLogLevel, standalone: standalone, pods: pods, stepSeconds: stepSeconds,
                            maxMajorFaultsPerS: maxMajorFaultsPerS)
        let result = try await run.measure(limits: try parsedSteps())
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            print(String(decoding: try enc.encode(result), as: UTF8.self))
        } else {
            print(result.table)
        }
    }
}

struct MemoryStep: Codable {
    var limit_mib: Int
    var passed: Bool
    /// What went wrong, one line each (empty when passed).
    var failures: [String]
    /// edged's own smaps_rollup figures at the end of the step (KB).
    var pss_kb: Int
    var anon_kb: Int
    var rss_kb: Int
    /// Everything charged to the cgroup (edged, its monitors, the page cache they use) at the end, and the peak.
    var cgroup_kb: Int
    var cgroup_peak_kb: Int?
    var cgroup_anon_kb: Int
    /// Of the cgroup's page cache, what is mapped (code of edged and its monitors) and what is not (files edged and
    /// the monitors read or wrote: the hub's SQLite store, state, logs).
    var cgroup_mapped_file_kb: Int
    var cgroup_unmapped_file_kb: Int
    var major_faults_per_s: Double
    /// How much later than the 10 s period the slowest Lease renewal arrived (nil standalone).
    var lease_late_max_ms: Double?
    var lease_renewals: Int?
    /// Slowest pod status change (Running, then gone) seen in the API (or edgectl pods standalone).
    var pod_status_max_ms: Double
    var pod_status_changes: Int
    /// Slowest `edgectl status`.
    var status_max_ms: Double
    var status_runs: Int
}

struct MemoryResult: Codable {
    var mode: String
    var pods: Int
    var step_seconds: Int
    var max_major_faults_per_s: Double
    var cgroup_version: String
    var edged_binary: String
    /// read_ahead_kb of the disk the binaries were on.
    var read_ahead_kb: Int?
    /// Where edged's log was kept.
    var edged_log: String
    /// The smallest limit at which every check passed (nil: none did).
    var min_memory_mib: Int?
    var steps: [MemoryStep]
    /// Before any limit: edged alone (no pods) and with the pods, its RSS (rss_idle_kb, rss_pods_kb with the
    /// monitors' RSS added, as the main benchmark's rss_20_pods_kb) and anonymous memory.
    var rss_idle_kb: Int
    var anon_idle_kb: Int
    var rss_pods_kb: Int
    var pss_pods_kb: Int
    /// Anonymous memory per extra pod: edged's own, and with the pod's monitor (edged-monitor's smaps_rollup).
    var edged_anon_per_pod_kb: Double
    var anon_per_pod_kb: Double

    var table: String {
        func f(_ v: Double?) -> String { v.map { String(format: "%.0f", $0) } ?? "-" }
        var lines = [
            "edged \(mode), \(pods) pods, cgroup \(cgroup_version), \(step_seconds) s per step, binary \(edged_binary), disk read-ahead \(read_ahead_kb.map { "\($0) KB" } ?? "unknown")",
            "before any limit: RSS idle \(rss_idle_kb) KB (\(anon_idle_kb) KB anonymous); with the pods RSS + monitors \(rss_pods_kb) KB, PSS \(pss_pods_kb) KB",
            "anonymous per extra pod: \(f(edged_anon_per_pod_kb)) KB in edged, \(f(anon_per_pod_kb)) KB with its monitor",
            "",
        ]
        let header = ["limit", "result", "edged PSS", "edged anon", "cgroup (peak)", "cg anon", "cg mapped", "cg other file",
                      "majflt/s", "lease late", "pod status", "status"]
        var rows = [header]
        for s in steps {
            rows.append(["\(s.limit_mib) MiB", s.passed ? "ok" : "FAIL", "\(s.pss_kb) KB", "\(s.anon_kb) KB",
                         "\(s.cgroup_kb) (\(s.cgroup_peak_kb.map { "\($0)" } ?? "-")) KB", "\(s.cgroup_anon_kb) KB",
                         "\(s.cgroup_mapped_file_kb) KB", "\(s.cgroup_unmapped_file_kb) KB", String(format: "%.2f", s.major_faults_per_s),
                         s.lease_late_max_ms.map { "\(f($0)) ms" } ?? "-", "\(f(s.pod_status_max_ms)) ms", "\(f(s.status_max_ms)) ms"])
        }
        let widths = header.indices.map { c in rows.map { $0[c].count }.max() ?? 0 }
        for (i, row) in rows.enumerated() {
            lines.append(row.enumerated().map { c, cell in cell.padding(toLength: widths[c], withPad: " ", startingAt: 0) }
                .joined(separator: "  "))
            if i > 0 { for failure in steps[i - 1].failures { lines.append("    \(failure)") } }
        }
        lines.append("")
        lines.append("min_memory_mib: \(min_memory_mib.map { "\($0)" } ?? "none of the steps passed")")
        lines.append("edged's log: \(edged_log)")
        return lines.joined(separator: "\n")
    }
}

/// One run: edged in its memory cgroup, then the steps.
struct MemoryRun {
    let bin: String
    let binaryShown: String
    let readAheadKB: Int?
    let logLevel: String
    let standalone: Bool
    let pods: Int
    let stepSeconds: Int
    let maxMajorFaultsPerS: Double
    static let leasePeriod = 10.0
    static let leaseSlack = 1.0
    static let podStatusBound = 2.0
    static let statusBound = 1.0

    func measure(limits: [Int]) async throws -> MemoryResult {
        let root = NSTemporaryDirectory() + "edged-bench-memory-\(getpid())"
        let cgroupPrefix = "edged-bench-mem"
        defer { cleanUp(root: root, cgroupPrefix: cgroupPrefix) }
        let fm = FileManager.default
        let state = "\(root)/state", runDir = "\(root)/run", manifests = "\(root)/manifests", logs = "\(root)/logs"
        for d in [state, runDir, manifests, logs, "\(state)/images/import"] { try fm.createDirectory(atPath: d, withIntermediateDirectories: true) }
        try Demo.writeImageArchive(to: "\(state)/images/import/busybox.tar")
        let socket = "\(runDir)/edged.sock"
        let node = "bench"
        let cgroup = try MemoryCgroup(name: "edged-bench-memory-\(getpid())")
        defer { cgroup.remove() }
        try cgroup.setLimit(bytes: nil)

        // The cluster side (joined): the test API server in this process, `edged tunnel-server` in its own.
        var api: KubeAPIServer?
        var tunnelServer: Process?
        defer {
            if let t = tunnelServer, t.isRunning { t.terminate(); t.waitUntilExit() }
            if let api { Task { try? await api.shutdown() } }
        }
        var config = "cni:\n  confDir: \(root)/no-cni\n"
        if !standalone {
            let server = try await KubeAPIServer.start()
            api = server
            try server.addBootstrapToken(id: "benchm", secret: "0123456789abcdef")
            let agentPort = try freeTCPPort()
            let pair = try server.pki.issue(serverFor: "edged-tunnel-server", ips: ["127.0.0.1"])
            try pair.certPEM.write(toFile: "\(root)/tunnel.crt", atomically: true, encoding: .utf8)
            try pair.keyPEM.write(toFile: "\(root)/tunnel.key", atomically: true, encoding: .utf8)
            try server.caPEM.write(toFile: "\(root)/cluster-ca.crt", atomically: true, encoding: .utf8)
            // From a copy of its own, for the reason the binaries are copied (see MemoryBench.run).
            try? fm.removeItem(atPath: "\(root)/tunnel-server")
            try fm.copyItem(atPath: "\(bin)/edged", toPath: "\(root)/tunnel-server")
            tunnelServer = try launch("\(root)/tunnel-server", [
                "tunnel-server", "--agent-bind-address", "127.0.0.1", "--agent-port", "\(agentPort)",
                "--cluster-cert", "\(root)/tunnel.crt", "--cluster-key", "\(root)/tunnel.key",
                "--cluster-ca-cert", "\(root)/cluster-ca.crt", "--uds-name", "\(root)/konnectivity.sock", "--server-id", "bench-tunnel",
            ], log: "\(root)/tunnel-server.log")
            config += """
                cluster:
                  nodeIP: 127.0.0.1
                hub:
                  httpAddress: 127.0.0.1:\(try freeTCPPort())
                  httpsAddress: ""
                  healthAddress: 127.0.0.1:\(try freeTCPPort())
                kubelet:
                  address: 127.0.0.1
                  port: \(try freeTCPPort())
                tunnel:
                  server: 127.0.0.1:\(agentPort)

                """
        }
        try config.write(toFile: "\(root)/memory.yaml", atomically: true, encoding: .utf8)
        let args = ["--state-dir", state, "--run-dir", runDir, "--manifest-dir", manifests, "--log-dir", logs, "--socket", socket,
                    "--node-name", node, "--cgroup-root", cgroupPrefix, "--config", "\(root)/memory.yaml", "--log-level", logLevel,
                    "--stop-pods-on-exit"]

        // edged starts in the cgroup with a cold page cache.
        try MemoryCgroup.dropPageCache()
        let argv = cgroup.wrap(["\(bin)/edged"] + args)
        var edged = try launch(argv[0], Array(argv.dropFirst()), log: "\(root)/edged.log")
        defer { if edged.isRunning { edged.terminate(); edged.waitUntilExit() } }
        let control = ControlClient(socketPath: socket)
        try await waitUntil(timeout: 30) { (try? await control.pods()) != nil }
        if let api {
            _ = try await control.join(JoinRequest(server: api.url, token: "benchm.0123456789abcdef", caCertHashes: [api.caCertHash]))
            try await waitUntil(timeout: 60) { api.objectJSON(MemoryHealth.leasePath(node)) != nil }
            do {
                try await waitUntil(timeout: 60, poll: .milliseconds(250)) {
                    guard let c = try? await control.status().cluster else { return false }
                    return c.kubeletAPI?.listening != nil && (c.tunnel?.connectedServers ?? 0) >= 1 && c.hub?.cloud == "connected"
                }
            } catch {
                let c = try? await control.status().cluster
                throw BenchFailure("the joined edged did not get its kubelet API, tunnel and hub up within 60 s: \(c.map { "\($0)" } ?? "no cluster status")")
            }
        }
        try await Task.sleep(for: .seconds(3))
        let idle = ProcessMemory(pid: edged.processIdentifier)

        // The pods.
        let names = (0..<pods).map { "mem\($0)" }
        for name in names {
            if let api {
                let created = api.call("POST", "/api/v1/namespaces/default/pods", body: try boundPodJSON(name))
                guard created.code == 201 else { throw BenchFailure("creating pod \(name): \(String(decoding: created.body, as: UTF8.self))") }
            } else {
                try Self.writeManifest(manifests, name)
            }
        }
        let edgedNames = standalone ? names.map { "\($0)-\(node)" } : names
        try await waitUntil(timeout: 120, poll: .milliseconds(100)) { await allRunning(control, edgedNames) }
        try await Task.sleep(for: .seconds(3))
        let loaded = ProcessMemory(pid: edged.processIdentifier)
        // The monitors' own anonymous memory (everything else in the cgroup but edged).
        let monitorsAnonKB = cgroup.pids.filter { $0 != edged.processIdentifier }.reduce(0) { $0 + (ProcessMemory(pid: $1)?.anonymousKB ?? 0) }
        let monitorsRSS = Int((try? await control.status())?.daemon.monitorsRSSBytes ?? 0) / 1024
        let perPod = { (a: Int, b: Int) in pods > 0 ? Double(b - a) / Double(pods) : 0 }

        // The steps.
        var results: [MemoryStep] = []
        var minimum: Int?
        for limit in limits {
            let step = await runStep(limit: limit, cgroup: cgroup, edgedPID: edged.processIdentifier, control: control,
                                     api: api, node: node, manifests: manifests)
            results.append(step)
            guard step.passed, edged.isRunning else { break }
            minimum = limit
        }

        // Clean up: no limit, the pods deleted, edged (restarted if the limit killed it) stops with nothing left.
        try? cgroup.setLimit(bytes: nil)
        for name in names {
            if let api { _ = api.call("DELETE", "/api/v1/namespaces/default/pods/\(name)?gracePeriodSeconds=0") }
            unlink("\(manifests)/\(name).yaml")
        }
        _ = api?.call("DELETE", "/api/v1/namespaces/default/pods/churn?gracePeriodSeconds=0")
        unlink("\(manifests)/churn.yaml")
        if !edged.isRunning {
            edged = try launch(argv[0], Array(argv.dropFirst()), log: "\(root)/edged-cleanup.log")
        }
        try? await waitUntil(timeout: 90) { (try? await control.pods())?.isEmpty ?? false }
        edged.terminate()
        edged.waitUntilExit()

        // edged's log outlives the temp dir: what it said while a step failed is what to look at next.
        let keptLog = NSTemporaryDirectory() + "edged-bench-memory-\(getpid()).log"
        try? fm.removeItem(atPath: keptLog)
        try? fm.copyItem(atPath: "\(root)/edged.log", toPath: keptLog)
        return MemoryResult(
            mode: standalone ? "standalone" : "joined (hub, kubelet API, tunnel agent)", pods: pods, step_seconds: stepSeconds,
            max_major_faults_per_s: maxMajorFaultsPerS, cgroup_version: cgroup.version.rawValue, edged_binary: binaryShown, read_ahead_kb: readAheadKB, edged_log: keptLog,
            min_memory_mib: minimum, steps: results,
            rss_idle_kb: idle?.rssKB ?? 0, anon_idle_kb: idle?.anonymousKB ?? 0,
            rss_pods_kb: (loaded?.rssKB ?? 0) + monitorsRSS, pss_pods_kb: loaded?.pssKB ?? 0,
            edged_anon_per_pod_kb: perPod(idle?.anonymousKB ?? 0, loaded?.anonymousKB ?? 0),
            anon_per_pod_kb: perPod(idle?.anonymousKB ?? 0, (loaded?.anonymousKB ?? 0) + monitorsAnonKB))
    }

    static func writeManifest(_ dir: String, _ name: String, command: String = "sleep 3600") throws {
        try """
            apiVersion: v1
            kind: Pod
            metadata: {name: \(name)}
            spec:
              terminationGracePeriodSeconds: 1
              containers:
              - {name: main, image: \(Demo.imageReference), imagePullPolicy: IfNotPresent, command: ["sh", "-c", "\(command)"]}
            """.write(toFile: "\(dir)/.\(name).tmp", atomically: false, encoding: .utf8)
        rename("\(dir)/.\(name).tmp", "\(dir)/\(name).yaml")
    }

    /// One limit, held for stepSeconds while the checks run side by side.
    func runStep(limit: Int, cgroup: MemoryCgroup, edgedPID: Int32, control: ControlClient, api: KubeAPIServer?,
                 node: String, manifests: String) async -> MemoryStep {
        var failures: [String] = []
        cgroup.resetPeak()
        do {
            try cgroup.setLimit(bytes: limit << 20)
        } catch {
            failures.append("could not lower the limit to \(limit) MiB: \(error)")
        }
        let oomBefore = cgroup.oomKills
        let faultsBefore = ProcessMemory(pid: edgedPID)?.majorFaults ?? 0
        let t0 = ContinuousClock.now
        let end = t0 + .seconds(stepSeconds)
        let statusArgv = ["\(bin)/edgectl", "--socket", control.socketPath, "status"]
        let podPath = "/api/v1/namespaces/default/pods/churn"
        // The churn pod's container exits on SIGTERM at once, so only the node's work is timed.
        let command = "trap 'exit 0' TERM; sleep 3600 & wait"

        async let lease: MemoryHealth.LeaseWatch? = {
            guard let api else { return nil }
            return await MemoryHealth.watchLease(api, node: node, period: Self.leasePeriod, until: end)
        }()
        async let churn = MemoryHealth.churnPods(every: .seconds(15), bound: Self.podStatusBound, until: end, create: {
            if let api {
                guard let body = try? boundPodJSON("churn", command: ["sh", "-c", command]) else { return "cannot encode the churn pod" }
                let created = api.call("POST", "/api/v1/namespaces/default/pods", body: body)
                return created.code == 201 ? nil : "the API server refused the churn pod: \(String(decoding: created.body.prefix(300), as: UTF8.self))"
            }
            return (try? Self.writeManifest(manifests, "churn", command: command)) == nil ? "cannot write the churn manifest" : nil
        }, delete: {
            if let api { _ = api.call("DELETE", podPath) } else { unlink("\(manifests)/churn.yaml") }
        }, phase: {
            if let api { return MemoryHealth.podPhase(api, path: podPath) }
            return (try? await control.pods())?.first { $0.name == "churn-\(node)" }.map { $0.phase }
        })
        async let status = MemoryHealth.timeCommand(statusArgv, every: .seconds(5), bound: Self.statusBound, until: end)
        let (leaseResult, churnResult, statusResult) = await (lease, churn, status)

        let seconds = MemoryHealth.seconds(ContinuousClock.now - t0)
        let mem = ProcessMemory(pid: edgedPID)
        let alive = kill(edgedPID, 0) == 0 && mem != nil
        let faultRate = Double((mem?.majorFaults ?? faultsBefore) - faultsBefore) / max(seconds, 1)
        let ooms = cgroup.oomKills - oomBefore
        if !alive { failures.append("edged exited during the step") }
        if ooms > 0 { failures.append("\(ooms) OOM kill(s) in edged's cgroup") }
        if faultRate > maxMajorFaultsPerS {
            failures.append(String(format: "edged's major page faults: %.1f/s, over the %.0f/s bound (its code is paged in again and again)",
                                   faultRate, maxMajorFaultsPerS))
        }
        if let leaseResult {
            if leaseResult.renewals == 0 {
                failures.append("no Lease renewal reached the API server in \(stepSeconds) s")
            } else if leaseResult.lateMaxSeconds > Self.leaseSlack {
                failures.append(String(format: "a Lease renewal came %.1f s late (period %.0f s)", leaseResult.lateMaxSeconds, Self.leasePeriod))
            }
        }
        failures += churnResult.failures
        failures += statusResult.failures
        return MemoryStep(
            limit_mib: limit, passed: failures.isEmpty, failures: failures,
            pss_kb: mem?.pssKB ?? 0, anon_kb: mem?.anonymousKB ?? 0, rss_kb: mem?.rssKB ?? 0,
            cgroup_kb: cgroup.usageBytes / 1024, cgroup_peak_kb: cgroup.peakBytes.map { $0 / 1024 },
            cgroup_anon_kb: cgroup.anonymousBytes / 1024, cgroup_mapped_file_kb: cgroup.mappedFileBytes / 1024,
            cgroup_unmapped_file_kb: max(0, cgroup.fileBytes - cgroup.mappedFileBytes) / 1024, major_faults_per_s: faultRate,
            lease_late_max_ms: leaseResult.map { $0.lateMaxSeconds * 1000 }, lease_renewals: leaseResult?.renewals,
            pod_status_max_ms: churnResult.maxSeconds * 1000, pod_status_changes: churnResult.count,
            status_max_ms: statusResult.maxSeconds * 1000, status_runs: statusResult.count)
    }

}

