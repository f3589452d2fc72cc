// `edged demo` (what `sudo bash .ci/demo` runs): Ctrl-C stops the demo pod as well as edged, unless --keep-pods.

import EdgedDaemon
import EdgedTestSupport
import Foundation
import Testing

@Suite(.serialized, .enabled(if: isRoot, "needs root: starts real containers"))
struct DemoTests {
    /// Starts `edged demo` on temp dirs, waits for the demo pod's two containers, then Ctrl-C (SIGINT) and waits
    /// for edged to exit. Returns the container pids and edged's log.
    private func runDemoAndInterrupt(_ edged: EdgedInstance, extraArgs: [String]) throws -> (pids: [Int32], log: String) {
        edged.subcommand = ["demo"]
        try edged.start(extraArgs: extraArgs)
        let pod = try edged.waitForPod("demo", timeout: 60, "Running with both containers") { pod in
            pod["phase"] as? String == "Running" && containers(pod).filter { ($0["pid"] as? Int ?? 0) > 0 }.count == 2
        }
        let pids = containers(pod).compactMap { $0["pid"] as? Int }.filter { $0 > 0 }.map { Int32($0) }
        #expect(pids.count == 2 && pids.allSatisfy(pidAlive))
        guard let process = edged.process else { throw TestFailure("edged is not running") }
        process.interrupt()
        let deadline = Date().addingTimeInterval(30)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        #expect(!process.isRunning, "edged demo did not exit within 30 s of Ctrl-C:\n\(edged.log().suffix(3000))")
        return (pids, edged.log())
    }

    @Test func ctrlCStopsTheDemoPod() throws {
        let edged = try EdgedInstance(name: "demo-stop")
        defer { edged.cleanUp() }
        let (pids, log) = try runDemoAndInterrupt(edged, extraArgs: [])
        #expect(log.contains("Stop with Ctrl-C: the demo pod stops too (--keep-pods leaves it running)"))
        // The containers are gone once edged has exited: nothing is left running on the host.
        let deadline = Date().addingTimeInterval(10)
        while pids.contains(where: pidAlive) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        #expect(!pids.contains(where: pidAlive), "demo containers still running after Ctrl-C: \(pids)\n\(log.suffix(3000))")
        #expect(edged.process?.terminationStatus == 0, "\(log.suffix(2000))")
    }

    @Test func keepPodsLeavesTheDemoPodRunning() throws {
        let edged = try EdgedInstance(name: "demo-keep")
        defer { edged.cleanUp() }  // a plain edged with --stop-pods-on-exit stops what the demo left behind
        let (pids, log) = try runDemoAndInterrupt(edged, extraArgs: ["--keep-pods"])
        #expect(log.contains("not this time: --keep-pods leaves it running"))
        Thread.sleep(forTimeInterval: 1)
        #expect(pids.allSatisfy(pidAlive), "--keep-pods: the demo containers must outlive edged\n\(log.suffix(3000))")
        // A later edged re-adopts them, as after any restart.
        edged.subcommand = []
        try edged.start()
        let pod = try edged.waitForPod("demo", timeout: 30, "re-adopted") { $0["phase"] as? String == "Running" }
        #expect(Set(containers(pod).compactMap { $0["pid"] as? Int }.map { Int32($0) }) == Set(pids))
    }
}
