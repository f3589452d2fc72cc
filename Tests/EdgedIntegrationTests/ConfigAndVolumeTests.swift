// The config file's rules, and pods that use hostPath volumes and network probes, end to end.

import EdgedCore
import EdgedDaemon
import EdgedNode
import EdgedTestSupport
import Foundation
import Testing

struct ConfigTests {
    @Test func defaultsAndOverrides() throws {
        let empty = try EdgedConfig.parse("", source: "c.yaml")
        #expect(empty.stateDir == "/var/lib/edged")
        #expect(empty.socketPath == "/run/edged/edged.sock")
        #expect(empty.seccompDefault == false)
        let c = try EdgedConfig.parse("stateDir: /data/edged\nrunDir: /run/e\ncontainerLogMaxSize: 1Mi\nseccompDefault: true\n", source: "c.yaml")
        #expect(c.stateDir == "/data/edged")
        #expect(c.socketPath == "/run/e/edged.sock")
        #expect(c.seccompDefault)
        #expect(empty.kubelet.port == 10250 && empty.kubelet.address == "0.0.0.0" && !empty.kubelet.anonymousAuth)
        #expect(empty.tunnel.server.isEmpty && empty.tunnel.serverHostPort == nil)
        let t = try EdgedConfig.parse("tunnel:\n  server: \"[fd00::1]:8132\"\nkubelet:\n  port: 10350\n", source: "c.yaml")
        #expect(t.tunnel.serverHostPort?.host == "fd00::1" && t.tunnel.serverHostPort?.port == 8132)
        #expect(t.kubelet.port == 10350)
        #expect(empty.evictionHard == ["memory.available": "100Mi"])
        #expect(empty.podPidsLimit == 1024)
        let e = try EdgedConfig.parse("evictionHard:\n  memory.available: 5%\n", source: "c.yaml")
        let thresholds = try EvictionThresholds.parse(e.evictionHard, memoryTotal: 1000 << 20)
        #expect(thresholds.memoryAvailableBytes == 50 << 20)
    }

    @Test(arguments: [
        ("stateDirr: /x", "unknown key \"stateDirr\""),
        ("stateDir: relative/path", "must be an absolute path"),
        ("containerLogMaxSize: big", "containerLogMaxSize"),
        ("containerLogMaxFiles: 1", "at least 2"),
        ("seccompDefault: maybe", "wrong type"),
        ("[1, 2]", "must be a mapping"),
        ("stateDir: [", "YAML error"),
        ("hub:\n  httpAddress: nope", "hub.httpAddress \"nope\" is not HOST:PORT"),
        ("hub:\n  bogus: 1", "unknown key \"hub.bogus\""),
        ("hub:\n  maxStoreSize: lots", "hub.maxStoreSize"),
        ("hub:\n  cacheResources: [pods]", "must be <group>/<version>/<resource>"),
        ("hub:\n  healthCheckSeconds: 0", "at least 1"),
        ("kubelet:\n  port: 70000", "kubelet.port 70000 is not a TCP port"),
        ("kubelet:\n  address: 0.0.0.0:10250", "put the port in kubelet.port"),
        ("kubelet:\n  authorizationDeniedCacheSeconds: -1", "kubelet.authorizationDeniedCacheSeconds"),
        ("kubelet:\n  readOnlyPort: 10255", "unknown key \"kubelet.readOnlyPort\""),
        ("tunnel:\n  server: konnectivity", "tunnel.server \"konnectivity\" is not HOST:PORT"),
        ("tunnel:\n  agentPort: 8132", "unknown key \"tunnel.agentPort\""),
        ("evictionHard:\n  nodefs.available: 10%", "signal \"nodefs.available\" is not supported"),
        ("evictionHard:\n  memory.available: 150%", "not a percentage from 0% to 100%"),
        ("evictionHard:\n  memory.available: lots", "evictionHard: memory.available \"lots\""),
    ])
    func badConfigIsRejectedWithTheKey(text: String, expected: String) {
        do {
            _ = try EdgedConfig.parse(text, source: "/etc/edged/config.yaml")
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.message.hasPrefix("/etc/edged/config.yaml"))
            #expect(error.message.contains(expected), "\(error.message)")
        }
    }

    @Test func missingNamedConfigIsAnError() throws {
        #expect(throws: EdgedError.self) { try EdgedConfig.load(path: "/nonexistent/edged.yaml", required: true) }
        #expect(try EdgedConfig.load(path: "/nonexistent/edged.yaml", required: false) == EdgedConfig())
    }

    @Test(.enabled(if: isRoot)) func edgedRefusesABadConfigWithAClearMessage() throws {
        let dir = try TempDir("edged-badconfig")
        defer { dir.remove() }
        try "stateDirr: /x\n".write(toFile: dir.sub("config.yaml"), atomically: true, encoding: .utf8)
        let r = try runCommand(["\(buildBinDir)/edged", "--config", dir.sub("config.yaml")], check: false)
        #expect(r.status != 0)
        #expect(r.stderr.contains("unknown key \"stateDirr\""))
    }
}

@Suite(.serialized, .enabled(if: isRoot, "needs root: starts real containers"))
struct VolumeAndProbeTests {
    @Test func hostPathVolumesAndTypeChecks() throws {
        try withEdged("hostpath") { edged in
            let host = edged.root.sub("hostdata")
            try FileManager.default.createDirectory(atPath: host, withIntermediateDirectories: true)
            try "from the host\n".write(toFile: "\(host)/in.txt", atomically: true, encoding: .utf8)
            try edged.writeManifest("hp.yaml", """
                apiVersion: v1
                kind: Pod
                metadata: {name: hp}
                spec:
                  restartPolicy: Never
                  volumes:
                  - {name: data, hostPath: {path: \(host), type: Directory}}
                  - {name: made, hostPath: {path: \(host)/made, type: DirectoryOrCreate}}
                  containers:
                  - name: main
                    image: \(Demo.imageReference)
                    command: [sh, -c, "cat /data/in.txt && echo written > /made/out.txt && ! touch /ro/x"]
                    volumeMounts: [{name: data, mountPath: /data}, {name: made, mountPath: /made}, {name: data, mountPath: /ro, readOnly: true}]
                """)
            let p = try edged.waitForPod("hp", "Succeeded") { $0["phase"] as? String == "Succeeded" || $0["phase"] as? String == "Failed" }
            #expect(p["phase"] as? String == "Succeeded", "\(p)")
            #expect(try String(contentsOfFile: "\(host)/made/out.txt", encoding: .utf8) == "written\n")
            #expect(try edged.edgectl(["logs", "hp"]).stdout.contains("from the host"))
            // A hostPath that must exist but does not fails that pod alone, with the path in the message.
            try edged.writeManifest("missing.yaml", """
                apiVersion: v1
                kind: Pod
                metadata: {name: missing}
                spec:
                  volumes: [{name: d, hostPath: {path: /nonexistent/edged-test, type: Directory}}]
                  containers: [{name: main, image: \(Demo.imageReference), command: [sleep, "60"], volumeMounts: [{name: d, mountPath: /d}]}]
                """)
            let m = try edged.waitForPod("missing", "CreateContainerConfigError") { $0["reason"] as? String == "CreateContainerConfigError" }
            let message = (m["containers"] as? [[String: Any]])?.first?["message"] as? String ?? ""
            #expect(message.contains("/nonexistent/edged-test"))
            let r = try edged.edgectl(["status"], check: false)
            #expect(r.status == 1)
        }
    }

    @Test func emptyDirInMemoryIsASizedTmpfsGoneWithThePod() throws {
        try withEdged("memdir") { edged in
            try edged.writeManifest("mem.yaml", """
                apiVersion: v1
                kind: Pod
                metadata: {name: mem}
                spec:
                  terminationGracePeriodSeconds: 1
                  volumes: [{name: cache, emptyDir: {medium: Memory, sizeLimit: 8Mi}}]
                  containers:
                  - name: main
                    image: \(Demo.imageReference)
                    command: [sh, -c, "grep ' /cache ' /proc/mounts; echo data > /cache/f && cat /cache/f; sleep 3600"]
                    volumeMounts: [{name: cache, mountPath: /cache}]
                """)
            let p = try edged.waitForPod("mem", "Running") { $0["phase"] as? String == "Running" }
            var logs = ""
            for _ in 0..<50 where !logs.contains("data") {
                logs = try edged.edgectl(["logs", "mem"], check: false).stdout
                Thread.sleep(forTimeInterval: 0.1)
            }
            #expect(logs.contains("tmpfs /cache tmpfs") && logs.contains("size=8192k") && logs.contains("data"), "\(logs)")
            let uid = try #require(p["uid"] as? String)
            let dir = "\(edged.stateDir)/pods/\(uid)/volumes/kubernetes.io~empty-dir/cache"
            let hostMounts = (procText("/proc/self/mountinfo") ?? "")
            #expect(hostMounts.contains(dir))
            edged.removeManifest("mem.yaml")
            let deadline = Date().addingTimeInterval(30)
            // (The pod leaves `edgectl pods` when termination starts; its volumes go when it has stopped.)
            while Date() < deadline, FileManager.default.fileExists(atPath: "\(edged.stateDir)/pods/\(uid)") {
                Thread.sleep(forTimeInterval: 0.1)
            }
            #expect(!(procText("/proc/self/mountinfo") ?? "").contains(dir))
            #expect(!FileManager.default.fileExists(atPath: "\(edged.stateDir)/pods/\(uid)"))
            // Any other medium fails that pod alone, naming the volume and the accepted values.
            try edged.writeManifest("huge.yaml", """
                apiVersion: v1
                kind: Pod
                metadata: {name: hugepages}
                spec:
                  volumes: [{name: hp, emptyDir: {medium: HugePages}}]
                  containers: [{name: main, image: \(Demo.imageReference), command: [sleep, "60"], volumeMounts: [{name: hp, mountPath: /hp}]}]
                """)
            let bad = try edged.waitForPod("hugepages", "CreateContainerConfigError") { $0["reason"] as? String == "CreateContainerConfigError" }
            let message = (bad["containers"] as? [[String: Any]])?.first?["message"] as? String ?? ""
            #expect(message.contains("volume hp: emptyDir medium \"HugePages\" is not supported"), "\(message)")
        }
    }

    @Test func httpAndTCPProbesOnHostNetwork() throws {
        try withEdged("netprobes") { edged in
            let port = 18000 + Int(getpid() % 1000)
            try edged.writeManifest("web.yaml", """
                apiVersion: v1
                kind: Pod
                metadata: {name: web}
                spec:
                  hostNetwork: true
                  terminationGracePeriodSeconds: 1
                  containers:
                  - name: main
                    image: \(Demo.imageReference)
                    command: [sh, -c, "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p \(port) -h /www"]
                    readinessProbe: {httpGet: {path: /index.html, port: \(port)}, periodSeconds: 1}
                    livenessProbe: {tcpSocket: {port: \(port)}, periodSeconds: 1}
                  - name: broken
                    image: \(Demo.imageReference)
                    command: [sleep, "3600"]
                    readinessProbe: {httpGet: {path: /missing, port: \(port)}, periodSeconds: 1}
                """)
            let p = try edged.waitForPod("web", "main ready") {
                (($0["containers"] as? [[String: Any]]) ?? []).first { $0["name"] as? String == "main" }?["ready"] as? Bool == true
            }
            let broken = (p["containers"] as? [[String: Any]] ?? []).first { $0["name"] as? String == "broken" }
            #expect(broken?["ready"] as? Bool == false, "a 404 keeps the container unready")
            #expect(p["ready"] as? Bool == false, "the pod is ready only when every container is")
            Thread.sleep(forTimeInterval: 3)
            let later = try edged.pod("web")
            let main = (later?["containers"] as? [[String: Any]] ?? []).first { $0["name"] as? String == "main" }
            #expect(main?["restarts"] as? Int == 0, "the tcpSocket liveness probe passes")
        }
    }
}
