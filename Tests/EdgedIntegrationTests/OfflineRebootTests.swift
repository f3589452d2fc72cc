// A power cycle with the cloud away, for pods that carry the projected service-account volume every pod of a real
// cluster gets (kube-api-access-*: a serviceAccountToken of 3607 s, the kube-root-ca.crt configMap, the namespace),
// injected by the test API server's ServiceAccount admission as by kube-apiserver's.
// Seen on a real cluster before the fix: after the reboot every pod stayed in Error ("MountVolume.SetUp failed for
// volume "kube-api-access-…": cannot get a token for service account …") until the cloud came back, because tokens
// were kept only in memory and the TokenRequest (a POST) cannot be answered by the hub while offline.
//
// The reboot: the API server stopped, edged, its container monitors and every container process killed with
// SIGKILL, the run dir emptied and every mount under the run and state dirs gone (tmpfs /run and the pods' tmpfs
// volumes do not survive a reboot), the test's cgroups removed; then edged started with the cloud still away.

import EdgedDaemon
import EdgedTestSupport
import Foundation
import Testing

@Suite(.serialized, .enabled(if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge")
                                && findExecutable("kubectl") != nil, "needs root, CNI plugins and kubectl"))
struct OfflineRebootTests {
    static let mountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

    /// A bound pod that prints what its service-account volume holds, then sleeps. It names no volume: the test API
    /// server's ServiceAccount admission injects kube-api-access-<suffix>, as kube-apiserver does.
    static func pod(_ name: String, node: String) -> String {
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: \(name), namespace: default}
        spec:
          nodeName: \(node)
          terminationGracePeriodSeconds: 2
          containers:
          - name: main
            image: \(Demo.imageReference)
            imagePullPolicy: IfNotPresent
            command: ["/bin/sh", "-c", "d=\(mountPath); echo boot=$(cat /proc/sys/kernel/random/uuid); echo token=$(cat $d/token); echo ns=$(cat $d/namespace); echo ca=$(grep -c 'BEGIN CERTIFICATE' $d/ca.crt); exec sleep 3600"]
        """
    }

    /// The injected volume has kube-apiserver's shape: token (3607 s), kube-root-ca.crt's ca.crt, the namespace.
    static func checkInjectedVolume(_ pod: [String: Any]) {
        let volumes = (path(pod, "spec", "volumes") as? [[String: Any]]) ?? []
        let access = volumes.filter { ($0["name"] as? String ?? "").hasPrefix("kube-api-access-") }
        #expect(access.count == 1, "ServiceAccount admission must inject one kube-api-access volume: \(volumes)")
        guard let v = access.first else { return }
        let sources = (path(v, "projected", "sources") as? [[String: Any]]) ?? []
        #expect(sources.contains { path($0, "serviceAccountToken", "expirationSeconds") as? Int == 3607
            && path($0, "serviceAccountToken", "path") as? String == "token" }, "\(sources)")
        #expect(sources.contains { path($0, "configMap", "name") as? String == "kube-root-ca.crt" }, "\(sources)")
        #expect(sources.contains { path($0, "downwardAPI", "items", "0", "fieldRef", "fieldPath") as? String == "metadata.namespace" }, "\(sources)")
        let mounts = (path(pod, "spec", "containers", "0", "volumeMounts") as? [[String: Any]]) ?? []
        #expect(mounts.contains { $0["mountPath"] as? String == mountPath && $0["name"] as? String == v["name"] as? String }, "\(mounts)")
    }

    /// The value of `key=` that the pod's container printed after its last `boot=` line (each start prints a new
    /// boot id first, so values are from the current start).
    static func printed(_ f: ClusterFixture, _ pod: String, _ key: String) -> String? {
        let logs = (try? f.edged.edgectl(["logs", pod], check: false).stdout) ?? ""
        let lines = logs.split(separator: "\n")
        let start = lines.lastIndex { $0.hasPrefix("boot=") } ?? lines.startIndex
        return lines[start...].last { $0.hasPrefix("\(key)=") }.map { String($0.dropFirst(key.count + 1)) }
    }

    static func waitPrinted(_ f: ClusterFixture, _ pod: String, _ key: String, timeout: TimeInterval = 10) async throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let v = printed(f, pod, key), !v.isEmpty { return v }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestFailure("pod \(pod) printed no \(key)= within \(Int(timeout)) s: \((try? f.edged.edgectl(["logs", pod], check: false).stdout) ?? "")")
    }

    /// (containerID, restarts) of each pod's main container as edged reports it.
    static func containers(_ f: ClusterFixture, _ pods: [String]) throws -> [String: String] {
        var out: [String: String] = [:]
        for name in pods {
            let p = try #require(try f.edged.pod(name))
            let c = mainContainer(p)
            out[name] = "\(c["containerID"] as? String ?? "?") restarts=\(c["restarts"] as? Int ?? -1) \(c["state"] as? String ?? "?")"
        }
        return out
    }

    /// What a power cut does to edged's processes and volatile state.
    static func powerCycle(_ f: ClusterFixture) async throws {
        let live = liveContainers(f.edged)
        f.edged.crash()
        for c in live {
            if c.containerPid > 0 { kill(c.containerPid, SIGKILL) }
            kill(c.monitorPid, SIGKILL)
        }
        let deadline = Date().addingTimeInterval(10)
        var left: [Int32] = []
        repeat {
            left = testCgroups(f.edged).flatMap(\.pids) + liveContainers(f.edged).map(\.monitorPid)
            for pid in left { kill(pid, SIGKILL) }
            if left.isEmpty { break }
            try await Task.sleep(for: .milliseconds(50))
        } while Date() < deadline
        #expect(left.isEmpty, "processes of edged's pods survived SIGKILL: \(left)")
        // tmpfs /run and every mount are gone after a reboot; so are the cgroups.
        // (A lazily detached mount can keep a folder busy for a moment on a loaded machine: retry for up to 5 s.)
        let emptyBy = Date().addingTimeInterval(5)
        while true {
            PowerLossTests.unmountUnder(f.edged.runDir)
            PowerLossTests.unmountUnder(f.edged.stateDir)
            do {
                for entry in (try? FileManager.default.contentsOfDirectory(atPath: f.edged.runDir)) ?? [] {
                    try FileManager.default.removeItem(atPath: "\(f.edged.runDir)/\(entry)")
                }
                break
            } catch {
                if Date() > emptyBy { throw TestFailure("cannot empty \(f.edged.runDir) as a reboot would: \(error); mounts: \(mountsUnder(f.edged.runDir))") }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        for cg in testCgroups(f.edged).map(\.dir).sorted(by: { $0.count > $1.count }) { rmdir(cg) }
        #expect(mountsUnder(f.edged.root.path).isEmpty, "mounts left: \(mountsUnder(f.edged.root.path))")
    }

    @Test func podsWithTheServiceAccountVolumeComeBackAfterAPowerCycleWithTheCloudAway() async throws {
        try await withCluster(name: "tokboot", subnet: "10.250.83.0/24") { f in try await Self.scenario(f) }
    }

    static func scenario(_ f: ClusterFixture) async throws {
        try f.edged.start()
        _ = try f.join()
        _ = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }
        let pods = ["alpha", "beta"]
        for name in pods { try f.kubectl.run(["apply", "-f", "-"], stdin: pod(name, node: f.node)) }
        var tokens: [String: String] = [:]
        var uids: [String: String] = [:]
        var boots: [String: String] = [:]
        for name in pods {
            let p = try await f.kubectl.wait(["get", "pod", name], "\(name) Running") { path($0, "status", "phase") as? String == "Running" }
            uids[name] = path(p, "metadata", "uid") as? String
            checkInjectedVolume(p)
            tokens[name] = try await waitPrinted(f, name, "token")
            boots[name] = printed(f, name, "boot")
            #expect(tokens[name]?.split(separator: ".").count == 3, "a JWT in \(mountPath)/token: \(tokens[name] ?? "")")
            #expect(try await waitPrinted(f, name, "ns") == "default")
            #expect(try await waitPrinted(f, name, "ca") == "1")
        }
        #expect(tokens["alpha"] != tokens["beta"], "each pod has its own bound token")
        try await waitForHub(f, "connected")

        // The tokens are kept on disk, private to root.
        for name in pods {
            let dir = "\(f.edged.stateDir)/tokens/\(uids[name] ?? "?")"
            let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
            #expect(files.count == 1, "\(dir): \(files)")
            for file in files {
                let mode = try FileManager.default.attributesOfItem(atPath: "\(dir)/\(file)")[.posixPermissions] as? Int
                #expect(mode == 0o600, "\(dir)/\(file) has mode \(String(mode ?? 0, radix: 8))")
                #expect(try String(contentsOfFile: "\(dir)/\(file)", encoding: .utf8).contains(tokens[name] ?? "?"))
            }
        }
        // The cloud goes away, then the power.
        try await Task.sleep(for: .seconds(1))   // the hub's cache writer has stored the last watch events
        var pids: [String: Int] = [:]
        for name in pods { pids[name] = mainContainer(try #require(try f.edged.pod(name)))["pid"] as? Int }
        try await f.api.stop()
        try await powerCycle(f)
        // Tokens of a pod that is no longer bound to the node (deleted while edged was down) go at start.
        let stale = "\(f.edged.stateDir)/tokens/00000000-dead-beef-0000-000000000000"
        try FileManager.default.createDirectory(atPath: stale, withIntermediateDirectories: true)
        try Data("{}".utf8).write(to: URL(fileURLWithPath: "\(stale)/0000000000000000.json"))
        let logStart = f.edged.log().utf8.count
        try f.edged.start()
        let answering = Date()
        var back: [String: TimeInterval] = [:]
        for name in pods {
            _ = try await f.edged.waitForPod(name, timeout: 30, "Running again after the offline power cycle") {
                let pid = mainContainer($0)["pid"] as? Int ?? 0
                return $0["phase"] as? String == "Running" && mainContainer($0)["state"] as? String == "running"
                    && pid != pids[name] && pidAlive(Int32(pid))
            }
            back[name] = Date().timeIntervalSince(answering)
        }
        print("offline reboot: pods Running again \(back.map { "\($0.key) \(String(format: "%.2f", $0.value)) s" }.sorted().joined(separator: ", ")) after edged answered")
        for (name, seconds) in back { #expect(seconds < 2, "\(name) took \(seconds) s to run again after edged answered") }
        for name in pods {
            let deadline = Date().addingTimeInterval(10)
            while printed(f, name, "boot") == boots[name] && Date() < deadline { try await Task.sleep(for: .milliseconds(100)) }
            #expect(printed(f, name, "boot") != boots[name], "\(name)'s container must have started again")
            let token = try await waitPrinted(f, name, "token")
            #expect(token == tokens[name], "\(name) must get the token it had before the power cycle")
            // (The container prints its lines one by one: wait for each rather than read a log caught mid-way.)
            #expect(try await waitPrinted(f, name, "ns") == "default")
            #expect(try await waitPrinted(f, name, "ca") == "1", "ca.crt from the hub's store")
        }
        let log = String(decoding: Array(f.edged.log().utf8.dropFirst(logStart)), as: UTF8.self)
        #expect(!log.contains("cannot get a token"), "\(log.split(separator: "\n").filter { $0.contains("token") }.joined(separator: "\n"))")
        #expect(!log.contains("MountVolume.SetUp failed"), "\(log.split(separator: "\n").filter { $0.contains("MountVolume") }.joined(separator: "\n"))")
        let staleGone = Date().addingTimeInterval(10)
        while FileManager.default.fileExists(atPath: stale) && Date() < staleGone { try await Task.sleep(for: .milliseconds(100)) }
        #expect(!FileManager.default.fileExists(atPath: stale), "tokens of a pod not in the node's pod list must be removed")
        for name in pods {
            #expect(FileManager.default.fileExists(atPath: "\(f.edged.stateDir)/tokens/\(uids[name] ?? "?")"), "\(name)'s token kept")
        }

        // The cloud comes back: nothing restarts (the kept tokens are not due, the objects did not change).
        let before = try containers(f, pods)
        try await f.api.resume()
        try await waitForHub(f, "connected", timeout: 30)
        try await Task.sleep(for: .seconds(6))   // three volume refreshes (every 2 s in the fixture)
        let after = try containers(f, pods)
        #expect(before == after, "pods restarted after the cloud came back: \(before) → \(after)")
        for name in pods {
            _ = try await f.kubectl.wait(["get", "pod", name], timeout: 30, "\(name) Running in the API server") {
                path($0, "status", "phase") as? String == "Running"
            }
        }

        // A pod deleted for good takes its kept token with it.
        try f.kubectl.run(["delete", "pod", "beta", "--wait=false"])
        let goneBy = Date().addingTimeInterval(30)
        let betaTokens = "\(f.edged.stateDir)/tokens/\(uids["beta"] ?? "?")"
        while FileManager.default.fileExists(atPath: betaTokens) && Date() < goneBy { try await Task.sleep(for: .milliseconds(200)) }
        #expect(!FileManager.default.fileExists(atPath: betaTokens), "the deleted pod's token must be removed")
        #expect(FileManager.default.fileExists(atPath: "\(f.edged.stateDir)/tokens/\(uids["alpha"] ?? "?")"))
    }
}
