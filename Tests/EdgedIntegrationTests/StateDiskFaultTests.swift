// The state dir's disk failing under a running node (issue [6]): filled up, then turned read-only. Each time
// `edgectl status` says what is wrong and exits non-zero, the running pod is untouched (same process), and once
// the disk is fixed edged recovers by itself: a pod added while the disk was full starts.

import EdgedDaemon
import EdgedTestSupport
import Foundation
import Testing

@Suite(.serialized, .enabled(if: isRoot, "needs root: mounts a tmpfs and starts real containers"))
struct StateDiskFaultTests {
    private func reasons(_ edged: EdgedInstance) throws -> [String] {
        (try edged.status()["reasons"] as? [String]) ?? []
    }

    private func waitForReason(_ edged: EdgedInstance, _ needle: String, present: Bool = true, timeout: TimeInterval = 20) throws {
        let deadline = Date().addingTimeInterval(timeout)
        var last: [String] = []
        while Date() < deadline {
            last = (try? reasons(edged)) ?? []
            if last.contains(where: { $0.contains(needle) }) == present { return }
            Thread.sleep(forTimeInterval: 0.2)
        }
        throw TestFailure("status reasons \(present ? "never mentioned" : "still mention") \"\(needle)\": \(last)")
    }

    @Test func fullAndReadOnlyStateDirAreReportedAndPodsCarryOn() throws {
        let edged = try EdgedInstance(name: "diskfault")
        let state = edged.stateDir
        try runCommand(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "edged-test-state", state])
        defer {
            if procText("/proc/self/mountinfo")?.split(separator: "\n")
                .filter({ $0.split(separator: " ").count > 4 && String($0.split(separator: " ")[4]) == state }).count ?? 0 > 1 {
                _ = try? runCommand(["umount", state], check: false)   // the read-only bind, if the test stopped there
            }
            edged.cleanUp()   // unmounts everything under its root, the tmpfs included
        }
        try FileManager.default.createDirectory(atPath: "\(state)/images/import", withIntermediateDirectories: true)
        try Demo.writeImageArchive(to: "\(state)/images/import/busybox.tar")
        try edged.start()
        try edged.writeManifest("keep.yaml", busyboxPod("keep", command: "exec sleep 3600"))
        let before = try edged.waitForPod("keep", "Running") { $0["phase"] as? String == "Running" }
        let pid = Int32(mainContainer(before)["pid"] as? Int ?? 0)
        try waitForReason(edged, "disk almost full", present: false)

        // Full: everything left taken by one file.
        _ = try runCommand(["sh", "-c", "dd if=/dev/zero of='\(state)/filler' bs=1M 2>/dev/null; sync"], check: false)
        try waitForReason(edged, "disk almost full")
        let full = try edged.edgectl(["status"], check: false)
        #expect(full.status != 0, "edgectl status exits 0 with a full state dir")
        #expect(full.stdout.contains("disk almost full"), "\(full.stdout)")
        try edged.writeManifest("late.yaml", busyboxPod("late", command: "exec sleep 3600"))
        Thread.sleep(forTimeInterval: 3)
        let late = try edged.pod("late")
        // It cannot start, and the error says why, naming the file.
        let lastErrors = (try edged.status()["lastErrors"] as? [[String: Any]]) ?? []
        #expect(lastErrors.contains { ($0["subject"] as? String ?? "").contains("late") && ($0["message"] as? String ?? "").contains("No space left on device") },
                "\(lastErrors)")
        #expect(late?["phase"] as? String != "Running" || late?["reason"] != nil, "a pod started normally on a full disk")
        let keepWhileFull = try #require(try edged.pod("keep"))
        #expect(pidAlive(pid) && Int32(mainContainer(keepWhileFull)["pid"] as? Int ?? 0) == pid,
                "the running pod was disturbed by the full disk")

        // Space back: the late pod starts without anyone touching edged.
        unlink("\(state)/filler")
        try waitForReason(edged, "disk almost full", present: false)
        try edged.waitForPod("late", timeout: 60, "running once there is space") { mainContainer($0)["state"] as? String == "running" }

        // Read-only, as after disk errors. A remount of the tmpfs itself is refused while files are open for
        // writing, so a read-only bind mount goes over it: every new open for writing fails with EROFS.
        try runCommand(["mount", "--bind", state, state])
        try runCommand(["mount", "-o", "remount,ro,bind", state])
        try waitForReason(edged, "read-only file system")
        let ro = try edged.edgectl(["status"], check: false)
        #expect(ro.status != 0)
        #expect(ro.stdout.contains("remount it read-write"), "\(ro.stdout)")
        Thread.sleep(forTimeInterval: 2)
        #expect(try edged.pod("keep")?["phase"] as? String == "Running")
        #expect(pidAlive(pid), "the running pod was disturbed by the read-only disk")

        try runCommand(["umount", state])   // the read-only bind goes, the tmpfs is writable again
        try waitForReason(edged, "read-only file system", present: false)
        let healthy = try edged.edgectl(["status"], check: false)
        #expect(healthy.status == 0, "not healthy again: \(healthy.stdout)")
        let keepAfter = try #require(try edged.pod("keep"))
        #expect(Int32(mainContainer(keepAfter)["pid"] as? Int ?? 0) == pid)
    }
}
