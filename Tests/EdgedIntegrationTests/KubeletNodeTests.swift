// The kubelet API's node side over a real pod runner: /pods, logs, exec (pipes and TTY), port-forward into the
// pod's netns, stats, and the not-found / not-running errors.

import EdgedControl
import EdgedCore
import EdgedDaemon
import EdgedImages
import EdgedKubeletAPI
import EdgedNode
import EdgedRuntime
import EdgedTestSupport
import Foundation
import Logging
import Testing

/// A PodManager on a busybox image, with a KubeletNode over it; cleans everything up.
private struct KubeletNodeFixture {
    let tmp: TempDir
    let runtimeConfig: RuntimeConfig
    let runtime: ContainerRuntime
    let images: ImageStore
    let pods: PodManager
    let node: KubeletNode
    let namespace: String
    static let image = "edged.test/busybox:kubelet"

    init() async throws {
        tmp = try TempDir("kubelet-node")
        let rootfs = tmp.sub("busybox")
        try makeBusyboxRootfs(at: rootfs)
        let layout = try TestImageLayout(at: tmp.sub("layout"))
        try layout.addSimpleImage(fromDirectory: rootfs, name: Self.image)
        images = try ImageStore(root: tmp.sub("images"))
        _ = try await images.importArchive(at: layout.path)
        let unique = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        namespace = "kn-\(unique)"
        runtimeConfig = RuntimeConfig(stateDir: tmp.sub("containers"), runDir: tmp.sub("run"),
                                      cgroupPrefix: "edged-test-kn-\(unique)")
        runtime = try ContainerRuntime(config: runtimeConfig, logger: Logger(label: "test"))
        let config = NodeConfig(nodeName: "kn-node", podsDir: tmp.sub("pods"), logDir: tmp.sub("logs"),
                                resyncInterval: .milliseconds(200))
        pods = PodManager(runtime: runtime, images: images, config: config, errors: ErrorLog(logger: Logger(label: "test")),
                          logger: Logger(label: "test"))
        node = KubeletNode(nodeName: "kn-node", pods: pods, runtime: runtime, hostIPs: { ["10.9.8.7"] })
    }

    func desired(_ name: String, restartPolicy: String = "Always", containers: [(String, String)]) throws -> DesiredPod {
        var yaml = """
        apiVersion: v1
        kind: Pod
        metadata:
          name: \(name)
          namespace: \(namespace)
          uid: \(name)-\(namespace)
        spec:
          terminationGracePeriodSeconds: 0
          restartPolicy: \(restartPolicy)
          containers:

        """
        for (cname, script) in containers {
            yaml += "    - name: \(cname)\n      image: \(Self.image)\n      command: [\"sh\", \"-c\", \"\(script)\"]\n"
        }
        return DesiredPod(pod: try Manifest.decodePods(yaml, source: "\(name).yaml")[0], source: "\(name).yaml")
    }

    func waitFor(_ name: String, _ what: String, _ check: (PodSummary) -> Bool) async throws {
        let deadline = Date().addingTimeInterval(30)
        var last: PodSummary?
        while Date() < deadline {
            last = await pods.summaries().first { $0.name == name && $0.namespace == namespace }
            if let last, check(last) { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestFailure("pod \(name) never became \(what); last summary: \(String(describing: last))")
    }

    func cleanup() async {
        await pods.terminateAll()
        for c in await runtime.list() {
            _ = try? await runtime.stop(id: c.spec.id, grace: .milliseconds(100))
            try? await runtime.remove(id: c.spec.id)
        }
        while umount2(runtimeConfig.runDir + "/sandboxes", Int32(MNT_DETACH)) == 0 {}
        for hierarchy in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
            rmdir("/sys/fs/cgroup/\(hierarchy)/\(runtimeConfig.cgroupPrefix)")
        }
        try? await images.shutdown()
        tmp.remove()
    }
}

private func readToEnd(_ fd: Int32) async -> String {
    await withCheckedContinuation { cont in
        DispatchQueue.global().async {
            var out: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(fd, &buf, buf.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                out += buf[0..<n]
            }
            close(fd)
            cont.resume(returning: String(decoding: out, as: UTF8.self))
        }
    }
}

private func send(_ fd: Int32, _ text: String) {
    let bytes = Array(text.utf8)
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
}

@Suite(.serialized, .enabled(if: isRoot, "needs root for containers"))
struct KubeletNodeTests {
    @Test func podsExecPortForwardLogsAndStats() async throws {
        let f = try await KubeletNodeFixture()
        do {
            try await run(f)
        } catch {
            await f.cleanup()
            throw error
        }
        await f.cleanup()
    }

    private func run(_ f: KubeletNodeFixture) async throws {
        let ns = f.namespace
        await f.pods.apply([
            try f.desired("web", containers: [("echo", "echo started; exec nc -ll -p 8080 -e cat"),
                                              ("busy", "while :; do :; done")]),
            try f.desired("done", restartPolicy: "Never", containers: [("once", "echo bye")]),
        ])
        try await f.waitFor("web", "Running") { $0.phase == "Running" && $0.containers.allSatisfy { $0.state == "running" } }
        try await f.waitFor("done", "Succeeded") { $0.phase == "Succeeded" }

        // /pods: a v1 PodList with both pods, their status and this node.
        let list = await f.node.podList()
        #expect(list["kind"]?.stringValue == "PodList")
        guard case .array(let items)? = list["items"] else { Issue.record("no items: \(list.jsonText)"); return }
        let mine = items.filter { $0[path: ["metadata", "namespace"]]?.stringValue == ns }
        #expect(Set(mine.compactMap { $0[path: ["metadata", "name"]]?.stringValue }) == ["web", "done"])
        let web = mine.first { $0[path: ["metadata", "name"]]?.stringValue == "web" }
        #expect(web?[path: ["status", "phase"]]?.stringValue == "Running")
        #expect(web?[path: ["status", "hostIP"]]?.stringValue == "10.9.8.7")
        #expect(web?[path: ["spec", "nodeName"]]?.stringValue == "kn-node")

        // Logs: the same lookup as edgectl logs.
        let log = try await f.node.logPath(ContainerRef(namespace: ns, pod: "web", container: "echo"), previous: false)
        #expect(try String(contentsOfFile: log, encoding: .utf8).contains("started"))

        // Exec with pipes.
        let ref = ContainerRef(namespace: ns, pod: "web", uid: "web-\(ns)", container: "echo")
        let p = try await f.node.exec(ref, command: ["sh", "-c", "echo out; echo err >&2; exit 3"], stdin: false, tty: false)
        async let out = readToEnd(p.stdout)
        async let err = readToEnd(p.stderr!)
        #expect(await out == "out\n")
        #expect(await err == "err\n")
        #expect(await p.wait() == 3)

        // Exec with stdin.
        let cat = try await f.node.exec(ref, command: ["cat"], stdin: true, tty: false)
        async let catOut = readToEnd(cat.stdout)
        send(cat.stdin!, "to cat\n")
        close(cat.stdin!)
        #expect(await catOut == "to cat\n")
        #expect(await cat.wait() == 0)
        close(cat.stderr!)

        // Exec with a TTY and a resize.
        let t = try await f.node.exec(ref, command: ["sh", "-c", "busybox tty; sleep 0.3; busybox stty size"], stdin: true, tty: true)
        #expect(t.tty && t.stdin == nil && t.stderr == nil)
        t.resize(90, 30)
        let ttyOut = await readToEnd(t.stdout)
        #expect(await t.wait() == 0)
        #expect(ttyOut.contains("/dev/pts/"), "\(ttyOut)")
        #expect(ttyOut.contains("30 90"), "\(ttyOut)")

        // Errors: stopped container, wrong UID, unknown pod and container.
        do {
            _ = try await f.node.exec(ContainerRef(namespace: ns, pod: "done", container: "once"), command: ["true"], stdin: false, tty: false)
            Issue.record("exec in an exited container worked")
        } catch {
            #expect("\(error)".contains("container once of pod \(ns)/done"), "\(error)")
            #expect("\(error)".contains("not running"), "\(error)")
            #expect((error as? EdgedError)?.code != .notFound)
        }
        for bad in [ContainerRef(namespace: ns, pod: "web", uid: "other-uid", container: "echo"),
                    ContainerRef(namespace: ns, pod: "nope", container: "echo"),
                    ContainerRef(namespace: ns, pod: "web", container: "nope")] {
            let e = await #expect(throws: EdgedError.self) {
                try await f.node.exec(bad, command: ["true"], stdin: false, tty: false)
            }
            #expect(e?.code == .notFound, "\(bad)")
        }
        let wrongUID = await #expect(throws: EdgedError.self) {
            try await f.node.portForward(namespace: ns, pod: "web", uid: "other-uid", port: 8080)
        }
        #expect(wrongUID?.code == .notFound)

        // Port-forward: the pod's 127.0.0.1:8080 (the host has nothing there, or something else).
        var fd: Int32 = -1
        for _ in 0..<50 {
            if let c = try? await f.node.portForward(namespace: ns, pod: "web", uid: "web-\(ns)", port: 8080) { fd = c; break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(fd >= 0)
        if fd >= 0 {
            send(fd, "echo me\n")
            shutdown(fd, Int32(SHUT_WR))
            #expect(await readToEnd(fd) == "echo me\n")
        }
        await #expect(throws: (any Error).self) {
            try await f.node.portForward(namespace: ns, pod: "web", uid: nil, port: 9)
        }

        // Stats: two samples; the busy container's CPU grows and has a rate the second time.
        _ = try await f.node.statsSummary()
        try await Task.sleep(for: .milliseconds(500))
        let summary = try await f.node.statsSummary()
        #expect(summary[path: ["node", "nodeName"]]?.stringValue == "kn-node")
        #expect(summary[path: ["node", "cpu", "usageCoreNanoSeconds"]] != nil)
        #expect(summary[path: ["node", "cpu", "usageNanoCores"]] != nil)
        #expect(summary[path: ["node", "memory", "workingSetBytes"]] != nil)
        #expect(summary[path: ["node", "memory", "availableBytes"]] != nil)
        guard case .array(let podStats)? = summary["pods"] else { Issue.record("no pods: \(summary.jsonText)"); return }
        let webStats = podStats.first { $0[path: ["podRef", "namespace"]]?.stringValue == ns && $0[path: ["podRef", "name"]]?.stringValue == "web" }
        #expect(webStats?[path: ["podRef", "uid"]]?.stringValue == "web-\(ns)")
        #expect(!podStats.contains { $0[path: ["podRef", "name"]]?.stringValue == "done" && $0[path: ["podRef", "namespace"]]?.stringValue == ns })
        guard case .array(let containers)? = webStats?["containers"] else { Issue.record("no containers: \(summary.jsonText)"); return }
        let busy = containers.first { $0["name"]?.stringValue == "busy" }
        var rate: UInt64 = 0
        if case .number(let n)? = busy?[path: ["cpu", "usageNanoCores"]] { rate = UInt64(n) ?? 0 }
        #expect(rate > 200_000_000, "a busy loop uses most of a core: \(rate) nanocores")
        #expect(busy?[path: ["memory", "workingSetBytes"]] != nil)
        #expect(webStats?[path: ["cpu", "usageCoreNanoSeconds"]] != nil)

        let usage = try await f.node.resourceUsage()
        #expect(usage.node.cpuSeconds > 0)
        let busyUsage = usage.containers.first { $0.namespace == ns && $0.pod == "web" && $0.name == "busy" }
        #expect((busyUsage?.usage.cpuSeconds ?? 0) > 0.1)
        #expect((busyUsage?.usage.memoryWorkingSetBytes ?? 0) > 0)
    }
}
