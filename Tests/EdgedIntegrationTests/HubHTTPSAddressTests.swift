// The hub's HTTPS address (the `kubernetes` Service for pods) on a host whose kernel may have no `dummy` driver:
// edged puts the address on a dummy interface, or else on lo, and `edgectl status` says which.

import EdgedTestSupport
import Foundation
import Testing

@Suite(.serialized, .enabled(if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge")
                                && findExecutable("kubectl") != nil && findExecutable("curl") != nil
                                && findExecutable("ip") != nil, "needs root, CNI plugins, kubectl, curl and ip"))
struct HubHTTPSAddressTests {
    /// Whether this kernel can make dummy interfaces (probed with a throwaway one).
    static func dummyDriverAvailable() throws -> Bool {
        let probe = "edprobe\(UInt16.random(in: 0..<UInt16.max))"
        let made = try runCommand(["ip", "link", "add", probe, "type", "dummy"], check: false)
        if made.status == 0 { _ = try runCommand(["ip", "link", "del", probe], check: false) }
        return made.status == 0
    }

    @Test func linkLocalHTTPSAddressIsPutOnAnInterfaceAndServed() async throws {
        // An unused link-local address, as YurtHub's 169.254.2.1 would be.
        var host = ""
        repeat {
            host = "169.254.\(Int.random(in: 100...250)).\(Int.random(in: 2...250))"
        } while !(try runCommand(["ip", "-o", "addr", "show", "to", "\(host)/32"], check: false).stdout.isEmpty)
        let port = try freeTCPPort()
        let expected = try Self.dummyDriverAvailable() ? "edged-hub0" : "lo"
        defer {
            // edged leaves the address in place at shutdown (for its next start); the test removes it.
            _ = try? runCommand(["ip", "addr", "del", "\(host)/32", "dev", expected], check: false)
        }
        try await withCluster(name: "hublo", subnet: "10.250.84.0/24") { f in
            let configPath = f.edged.root.sub("config.yaml")
            let config = try String(contentsOfFile: configPath, encoding: .utf8)
            #expect(config.contains("httpsAddress: \"\""))
            try config.replacingOccurrences(of: "httpsAddress: \"\"", with: "httpsAddress: \"\(host):\(port)\"")
                .write(toFile: configPath, atomically: true, encoding: .utf8)
            // Pods get a default route to the node, as with any real pod network (the fixture's has only its subnet).
            let conflist = f.side.sub("net.d/10-test.conflist")
            let net = try String(contentsOfFile: conflist, encoding: .utf8)
            try net.replacingOccurrences(of: "\"ranges\":", with: "\"routes\":[{\"dst\":\"0.0.0.0/0\"}],\"ranges\":")
                .write(toFile: conflist, atomically: true, encoding: .utf8)
            try f.edged.start()
            _ = try f.join()
            _ = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }

            // The listener answers over HTTPS with the node's serving certificate (the address is one of its IP SANs).
            let answer = try await f.hubHTTPSAnswer("https://\(host):\(port)/version")
            #expect(answer?.status == 0 && answer?.stdout.contains("gitVersion") == true, "\(answer?.stdout ?? "")\(answer?.stderr ?? "")")
            let shown = try runCommand(["ip", "-o", "addr", "show", "to", "\(host)/32"], check: false).stdout
            #expect(shown.contains(" \(expected) "), "\(shown)")

            // edgectl status says where the address is, on screen and in JSON.
            let hub = try clusterStatus(f)["hub"] as? [String: Any] ?? [:]
            #expect(hub["httpsInterface"] as? String == expected, "\(hub)")
            #expect((hub["listening"] as? [String] ?? []).contains("https \(host):\(port)"), "\(hub)")
            let screen = try f.edged.edgectl(["status"], check: false).stdout
            let line = expected == "lo" ? "https \(host):\(port) (on lo: no dummy driver)" : "https \(host):\(port) (on edged-hub0)"
            #expect(screen.contains(line), "\(screen)")
            let log = f.edged.log()
            #expect(log.contains(expected == "lo" ? "put \(host) on lo for the HTTPS listener" : "put \(host) on dummy interface edged-hub0"),
                    "\(log.suffix(3000))")

            // A pod, in its own network namespace, reaches the address through its route to the node.
            try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("reach", node: f.node,
                command: "nc -w 3 \(host) \(port) </dev/null >/dev/null 2>/tmp/err; echo reach=$? $(cat /tmp/err); sleep 3600"))
            let reach = try await f.kubectl.wait(["get", "pod", "reach"], "reach Running") { path($0, "status", "phase") as? String == "Running" }
            var logs = ""
            for _ in 0..<100 where !logs.contains("reach=") {
                logs = (try? f.edged.edgectl(["logs", "reach"], check: false).stdout) ?? ""
                try await Task.sleep(for: .milliseconds(100))
            }
            let reached = logs.contains("reach=") && !logs.contains("can't connect") && !logs.contains("timed out")
            #expect(reached, "\(logs)\n\(reached ? "" : TestBridges.diagnostics(for: path(reach, "status", "podIP") as? String ?? "?"))")
        }
    }
}
