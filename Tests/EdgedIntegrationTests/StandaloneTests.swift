// End to end: the real edged daemon runs real containers from static manifests, checked with the real edgectl.

import EdgedDaemon
import EdgedTestSupport
import Foundation
import Testing

/// A running edged with the demo busybox image pre-imported, removed after the test.
func withEdged(_ name: String, _ body: (EdgedInstance) throws -> Void) throws {
    let edged = try EdgedInstance(name: name)
    defer { edged.cleanUp() }
    try Demo.writeImageArchive(to: "\(edged.stateDir)/images/import/busybox.tar")
    try edged.start()
    try body(edged)
}

func busyboxPod(_ name: String, command: String, restartPolicy: String = "Always", extra: String = "") -> String {
    """
    apiVersion: v1
    kind: Pod
    metadata:
      name: \(name)
    spec:
      restartPolicy: \(restartPolicy)
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: \(Demo.imageReference)
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", \(String(reflecting: command))]
    """ + (extra.isEmpty ? "" : "\n" + extra + "\n")
}

func containers(_ pod: [String: Any]) -> [[String: Any]] { pod["containers"] as? [[String: Any]] ?? [] }
func mainContainer(_ pod: [String: Any]) -> [String: Any] { containers(pod).first { ($0["name"] as? String) == "main" } ?? [:] }
func pidAlive(_ pid: Int32) -> Bool { kill(pid, 0) == 0 }

@Suite(.serialized, .enabled(if: isRoot, "needs root: starts real containers"))
struct StandaloneTests {
    @Test func staticPodRunsAndLogsAreReadable() throws {
        try withEdged("logs") { edged in
            try edged.writeManifest("hello.yaml", busyboxPod("hello", command: "echo hello from edged; echo to stderr >&2; sleep 3600"))
            let pod = try edged.waitForPod("hello", "Running") { $0["phase"] as? String == "Running" && $0["ready"] as? Bool == true }
            let pid = mainContainer(pod)["pid"] as? Int ?? 0
            #expect(pid > 0 && pidAlive(Int32(pid)))
            var logs = ""
            for _ in 0..<50 {
                logs = try edged.edgectl(["logs", "hello"]).stdout
                if logs.contains("to stderr") { break }
                Thread.sleep(forTimeInterval: 0.1)
            }
            #expect(logs.contains("hello from edged"))
            #expect(logs.contains("to stderr"))
            // The log file is in kubelet's layout and CRI format.
            let files = try FileManager.default.subpathsOfDirectory(atPath: edged.logDir).filter { $0.hasSuffix("main/0.log") }
            #expect(files.count == 1)
            let raw = try String(contentsOfFile: "\(edged.logDir)/\(files[0])", encoding: .utf8)
            let line = raw.split(separator: "\n").first { $0.hasSuffix("stdout F hello from edged") }.map(String.init) ?? ""
            #expect(line.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z stdout F hello from edged$"#, options: .regularExpression) != nil, "CRI line: \(raw)")
            let status = try edged.edgectl(["status"], check: false)
            #expect(status.status == 0, "healthy node: \(status.stdout) \(status.stderr)")
            #expect(status.stdout.contains("hello"))
        }
    }

    @Test func badManifestFailsAloneAndStatusSaysSo() throws {
        try withEdged("badmanifest") { edged in
            try edged.writeManifest("good.yaml", busyboxPod("good", command: "sleep 3600"))
            try edged.writeManifest("broken.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: broken\nspec: [")
            try edged.writeManifest("noimage.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: noimage}\nspec:\n  containers: [{name: c}]\n")
            try edged.waitForPod("good", "Running") { $0["phase"] as? String == "Running" }
            let r = try edged.edgectl(["status"], check: false)
            #expect(r.status == 1)
            #expect((r.stdout + r.stderr).contains("broken.yaml"))
            let json = try edged.status()
            #expect(json["healthy"] as? Bool == false)
            let reasons = (json["reasons"] as? [String] ?? []).joined(separator: "\n")
            #expect(reasons.contains("broken.yaml") && reasons.contains("YAML"))
            #expect(reasons.contains("noimage.yaml") && reasons.contains("has no image"))
            // Fixing the file clears the reason.
            edged.removeManifest("broken.yaml")
            edged.removeManifest("noimage.yaml")
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline, try edged.status()["healthy"] as? Bool != true { Thread.sleep(forTimeInterval: 0.1) }
            #expect(try edged.status()["healthy"] as? Bool == true)
        }
    }

    @Test func restartPoliciesAndCrashLoopBackOff() throws {
        try withEdged("restarts") { edged in
            try edged.writeManifest("never.yaml", busyboxPod("never", command: "exit 3", restartPolicy: "Never"))
            try edged.writeManifest("onfailure.yaml", busyboxPod("onfailure", command: "exit 0", restartPolicy: "OnFailure"))
            try edged.writeManifest("always.yaml", busyboxPod("always", command: "exit 1", restartPolicy: "Always"))
            let never = try edged.waitForPod("never", "Failed") { $0["phase"] as? String == "Failed" }
            #expect(mainContainer(never)["exitCode"] as? Int == 3)
            #expect(mainContainer(never)["restarts"] as? Int == 0)
            let ok = try edged.waitForPod("onfailure", "Succeeded") { $0["phase"] as? String == "Succeeded" }
            #expect(mainContainer(ok)["restarts"] as? Int == 0)
            // Always: the first restart is immediate, then 10 s back-off: CrashLoopBackOff with restarts ≥ 1.
            let crash = try edged.waitForPod("always", "CrashLoopBackOff") {
                ($0["reason"] as? String) == "CrashLoopBackOff" && (mainContainer($0)["restarts"] as? Int ?? 0) >= 1
            }
            #expect(crash["phase"] as? String == "Running")
            #expect(mainContainer(crash)["exitCode"] as? Int == 1)
            let r = try edged.edgectl(["status"], check: false)
            #expect(r.status == 1)
            #expect((r.stdout + r.stderr).contains("CrashLoopBackOff"))
        }
    }

    @Test func removingAndEditingManifestsStopsAndReplacesPods() throws {
        try withEdged("edit") { edged in
            try edged.writeManifest("web.yaml", busyboxPod("web", command: "echo v1; sleep 3600"))
            let v1 = try edged.waitForPod("web", "Running") { $0["phase"] as? String == "Running" }
            let pid1 = Int32(mainContainer(v1)["pid"] as? Int ?? 0)
            let uid1 = v1["uid"] as? String
            try edged.writeManifest("web.yaml", busyboxPod("web", command: "echo v2; sleep 3600"))
            let v2 = try edged.waitForPod("web", "new uid Running") { $0["uid"] as? String != uid1 && $0["phase"] as? String == "Running" }
            let pid2 = Int32(mainContainer(v2)["pid"] as? Int ?? 0)
            #expect(pid2 != pid1)
            var gone = false
            for _ in 0..<100 where !gone { gone = !pidAlive(pid1); Thread.sleep(forTimeInterval: 0.1) }
            #expect(gone, "old container stopped after the edit")
            edged.removeManifest("web.yaml")
            // While it stops (sh ignores SIGTERM as PID 1: the whole 2 s grace), status lists it as Terminating,
            // like kubectl, and that is no reason to call the node degraded.
            let stopping = try edged.waitForPod("web", timeout: 2, "listed as Terminating") { $0["reason"] as? String == "Terminating" }
            #expect(stopping["uid"] as? String == v2["uid"] as? String)
            #expect(try edged.status()["healthy"] as? Bool == true)
            for _ in 0..<100 where try edged.pod("web") != nil { Thread.sleep(forTimeInterval: 0.1) }
            #expect(try edged.pod("web") == nil)
            for _ in 0..<100 where pidAlive(pid2) { Thread.sleep(forTimeInterval: 0.1) }
            #expect(!pidAlive(pid2), "container stopped when the manifest was removed")
        }
    }

    @Test func podsSurviveKill9AndAreReadopted() throws {
        try withEdged("adopt") { edged in
            try edged.writeManifest("keep.yaml", busyboxPod("keep", command: "sleep 3600"))
            try edged.writeManifest("short.yaml", busyboxPod("short", command: "sleep 2; exit 7", restartPolicy: "Never"))
            let before = try edged.waitForPod("keep", "Running") { $0["phase"] as? String == "Running" }
            try edged.waitForPod("short", "Running") { $0["phase"] as? String == "Running" }
            let pid = Int32(mainContainer(before)["pid"] as? Int ?? 0)
            edged.crash()
            #expect(pidAlive(pid), "the container outlives edged")
            Thread.sleep(forTimeInterval: 3)   // "short" exits while edged is down
            try edged.start()
            let after = try edged.waitForPod("keep", "Running") { $0["phase"] as? String == "Running" }
            #expect(Int32(mainContainer(after)["pid"] as? Int ?? 0) == pid, "same process, re-adopted, not restarted")
            #expect(mainContainer(after)["restarts"] as? Int == 0)
            let short = try edged.waitForPod("short", "Failed with 7") { $0["phase"] as? String == "Failed" }
            #expect(mainContainer(short)["exitCode"] as? Int == 7, "exit code learned after the restart")
        }
    }

    @Test func initContainersAndEmptyDirVolumes() throws {
        try withEdged("init") { edged in
            try edged.writeManifest("init.yaml", """
                apiVersion: v1
                kind: Pod
                metadata: {name: withinit}
                spec:
                  volumes: [{name: data, emptyDir: {}}]
                  initContainers:
                  - {name: prepare, image: \(Demo.imageReference), command: ["sh", "-c", "echo prepared > /data/file"], volumeMounts: [{name: data, mountPath: /data}]}
                  containers:
                  - {name: main, image: \(Demo.imageReference), command: ["sh", "-c", "cat /data/file; sleep 3600"], volumeMounts: [{name: data, mountPath: /data}]}
                """)
            try edged.waitForPod("withinit", "Running") { $0["phase"] as? String == "Running" }
            var logs = ""
            for _ in 0..<50 where !logs.contains("prepared") {
                logs = try edged.edgectl(["logs", "withinit", "-c", "main"], check: false).stdout
                Thread.sleep(forTimeInterval: 0.1)
            }
            #expect(logs.contains("prepared"))
        }
    }

    @Test func failingInitContainerBlocksThePod() throws {
        try withEdged("initfail") { edged in
            try edged.writeManifest("initfail.yaml", """
                apiVersion: v1
                kind: Pod
                metadata: {name: initfail}
                spec:
                  restartPolicy: Never
                  initContainers: [{name: prepare, image: \(Demo.imageReference), command: ["sh", "-c", "exit 2"]}]
                  containers: [{name: main, image: \(Demo.imageReference), command: ["sleep", "3600"]}]
                """)
            let p = try edged.waitForPod("initfail", "Failed") { $0["phase"] as? String == "Failed" }
            #expect(mainContainer(p)["state"] as? String == "waiting", "main never started")
        }
    }

    @Test func livenessProbeFailureRestartsTheContainer() throws {
        try withEdged("liveness") { edged in
            try edged.writeManifest("live.yaml", busyboxPod("live", command: "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600", extra: [
                "    livenessProbe:",
                "      exec: {command: [cat, /tmp/healthy]}",
                "      periodSeconds: 1",
                "      failureThreshold: 1",
            ].joined(separator: "\n")))
            let p = try edged.waitForPod("live", timeout: 40, "restarted by liveness") { (mainContainer($0)["restarts"] as? Int ?? 0) >= 1 }
            #expect(mainContainer(p)["restarts"] as? Int ?? 0 >= 1)
        }
    }

    @Test func memoryLimitReportsOOMKilled() throws {
        try withEdged("oom") { edged in
            try edged.writeManifest("oom.yaml", busyboxPod("oom", command: "exec tail /dev/zero", restartPolicy: "Never",
                                                          extra: "    resources:\n      limits: {memory: 16Mi}"))
            let p = try edged.waitForPod("oom", "OOMKilled") { $0["phase"] as? String == "Failed" }
            #expect(mainContainer(p)["reason"] as? String == "OOMKilled")
            #expect(mainContainer(p)["exitCode"] as? Int == 137)
        }
    }

    @Test func edgectlSaysWhenEdgedIsNotRunning() throws {
        let dir = try TempDir("edgectl-nodaemon")
        defer { dir.remove() }
        let r = try runCommand(["\(buildBinDir)/edgectl", "status", "--socket", dir.sub("none.sock")], check: false)
        #expect(r.status == 2)
        #expect(r.stderr.contains("edged is not running"))
    }

    @Test func readyAndWatchdogReachSystemd() throws {
        let dir = try TempDir("notify")
        defer { dir.remove() }
        let path = dir.sub("notify.sock")
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { buf in
            for (i, b) in path.utf8.enumerated() { buf[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(rc == 0)
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let edged = try EdgedInstance(name: "notify")
        defer { edged.cleanUp() }
        edged.extraEnvironment = ["NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"]
        try edged.start()
        var messages: [String] = []
        let deadline = Date().addingTimeInterval(3)
        var buf = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            let n = recv(fd, &buf, buf.count, 0)
            if n > 0 { messages.append(String(decoding: buf[0..<n], as: UTF8.self)) }
        }
        #expect(messages.contains { $0.contains("READY=1") })
        #expect(messages.filter { $0.contains("WATCHDOG=1") }.count >= 4, "pings at half the 400 ms interval: \(messages)")
        edged.stop()
        var tail: [String] = []
        for _ in 0..<10 {
            let n = recv(fd, &buf, buf.count, 0)
            if n > 0 { tail.append(String(decoding: buf[0..<n], as: UTF8.self)) }
        }
        #expect(tail.contains { $0.contains("STOPPING=1") })
    }
}
