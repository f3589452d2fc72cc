// The health checks of a node held under a memory limit, shared by `edged-bench memory` and MemoryLimitTests:
// what a user would see go wrong first when edged has too little memory.
// - Lease renewals reach the API server on time (the node controller marks a node NotReady when they stop);
// - a pod status change reaches where the user looks (the API, or `edgectl pods` standalone) within a bound;
// - `edgectl status` (the real binary, process start included) answers within a bound.

import Foundation

public enum MemoryHealth {
    /// Lease renewals seen in a time window.
    public struct LeaseWatch: Sendable {
        public var renewals = 0
        /// How much later than the period the slowest renewal arrived (0 when all were on time).
        public var lateMaxSeconds = 0.0
    }

    /// Slowest of a series of timed actions, and what went wrong.
    public struct Timings: Sendable {
        public var maxSeconds = 0.0
        public var count = 0
        public var failures: [String] = []
    }

    public static func leasePath(_ node: String) -> String { "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/\(node)" }

    /// A pod's status.phase in the API server: nil when the object is gone, "" before the node wrote a phase.
    public static func podPhase(_ api: KubeAPIServer, path: String) -> String? {
        guard let pod = api.objectJSON(path) else { return nil }
        return (pod["status"] as? [String: Any])?["phase"] as? String ?? ""
    }

    /// Polls the node's Lease every 100 ms until `end`; each new resourceVersion is a renewal that reached the API
    /// server. Lateness: the gap since the previous renewal (or the start) beyond `period`, a missing last one included.
    public static func watchLease(_ api: KubeAPIServer, node: String, period: Double, until end: ContinuousClock.Instant) async -> LeaseWatch {
        var out = LeaseWatch()
        func version() -> String? { (api.objectJSON(leasePath(node))?["metadata"] as? [String: Any])?["resourceVersion"] as? String }
        var seen = version()
        var last = ContinuousClock.now
        while ContinuousClock.now < end {
            try? await Task.sleep(for: .milliseconds(100))
            let v = version()
            let now = ContinuousClock.now
            if v != seen {
                seen = v
                out.renewals += 1
                out.lateMaxSeconds = max(out.lateMaxSeconds, seconds(now - last) - period)
                last = now
            }
        }
        out.lateMaxSeconds = max(out.lateMaxSeconds, seconds(ContinuousClock.now - last) - period)
        return out
    }

    /// Every `every` until `end`: `create` a pod, time until `phase` says Running, `delete` it, time until `phase`
    /// says it is gone (nil). `create` returns an error text when the pod could not be created.
    public static func churnPods(every: Duration, bound: Double, until end: ContinuousClock.Instant,
                                 create: () async -> String?, delete: () async -> Void, phase: () async -> String?) async -> Timings {
        var out = Timings()
        func timed(_ what: String, _ done: () async -> Bool) async {
            let t0 = ContinuousClock.now
            var ok = false
            while ContinuousClock.now < t0 + .seconds(10) {
                if await done() { ok = true; break }
                try? await Task.sleep(for: .milliseconds(20))
            }
            let took = seconds(ContinuousClock.now - t0)
            out.count += 1
            out.maxSeconds = max(out.maxSeconds, took)
            if !ok {
                out.failures.append("pod churn: \(what) did not happen within 10 s")
            } else if took > bound {
                out.failures.append(String(format: "pod churn: %@ took %.2f s (bound %.0f s)", what, took, bound))
            }
        }
        while ContinuousClock.now + every < end {
            let cycle = ContinuousClock.now
            if let problem = await create() {
                out.failures.append("pod churn: \(problem)")
                break
            }
            await timed("created → Running") { await phase() == "Running" }
            await delete()
            await timed("deleted → gone") { await phase() == nil }
            // A slow deletion is waited out before the next cycle creates the same name.
            while await phase() != nil && ContinuousClock.now < end { try? await Task.sleep(for: .milliseconds(100)) }
            try? await Task.sleep(until: cycle + every)
        }
        return out
    }

    /// `argv` (e.g. edgectl status) every `every` until `end`, timed end to end; exit 0 or 1 (1: DEGRADED) is an answer.
    public static func timeCommand(_ argv: [String], every: Duration, bound: Double, until end: ContinuousClock.Instant) async -> Timings {
        var out = Timings()
        let what = argv.dropFirst().filter { !$0.hasPrefix("/") && !$0.hasPrefix("--") }.joined(separator: " ")
        let name = "\(URL(fileURLWithPath: argv[0]).lastPathComponent) \(what)"
        while ContinuousClock.now + .seconds(1) < end {
            let t0 = ContinuousClock.now
            let rc = await runQuietly(argv)
            let took = seconds(ContinuousClock.now - t0)
            out.count += 1
            out.maxSeconds = max(out.maxSeconds, took)
            if rc != 0 && rc != 1 { out.failures.append("\(name) failed (exit \(rc))") }
            if took > bound { out.failures.append(String(format: "%@ took %.2f s (bound %.0f s)", name, took, bound)) }
            try? await Task.sleep(until: t0 + every)
        }
        return out
    }

    /// Runs a command with its output discarded, off the cooperative thread pool; its exit status (-1: it could not start).
    public static func runQuietly(_ argv: [String]) async -> Int32 {
        await withCheckedContinuation { cont in
            DispatchQueue.global().async {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: argv[0])
                p.arguments = Array(argv.dropFirst())
                p.standardOutput = FileHandle.nullDevice
                p.standardError = FileHandle.nullDevice
                do { try p.run() } catch { cont.resume(returning: -1); return }
                p.waitUntilExit()
                cont.resume(returning: p.terminationStatus)
            }
        }
    }

    public static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}
