// End to end: edged sets up pod networking through real CNI plugins (bridge + host-local + loopback) and two
// pods talk over their pod IPs.

import EdgedDaemon
import EdgedTestSupport
import Foundation
import Testing

@Suite(.enabled(if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge"),
                "needs root and containernetworking-plugins in /usr/lib/cni"))
struct PodNetworkE2ETests {
    @Test func podsGetIPsAndReachEachOther() throws {
        let edged = try EdgedInstance(name: "cni")
        let side = try TempDir("edged-cni-e2e")
        let tag = String(UInt32.random(in: 0..<UInt32.max), radix: 16)
        let bridge = "ede\(tag)", network = "edged-e2e-\(tag)"
        defer {
            edged.cleanUp()
            _ = try? runCommand(["ip", "link", "del", bridge], check: false)
            side.remove()
        }
        try FileManager.default.createDirectory(atPath: side.sub("net.d"), withIntermediateDirectories: true)
        try """
            {"cniVersion":"1.0.0","name":"\(network)","plugins":[
             {"type":"bridge","bridge":"\(bridge)","isGateway":true,"ipMasq":false,
              "ipam":{"type":"host-local","dataDir":"\(side.sub("ipam"))","ranges":[[{"subnet":"10.250.40.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}},
             {"type":"loopback"}]}
            """.write(toFile: side.sub("net.d/10-e2e.conflist"), atomically: true, encoding: .utf8)
        try "cni:\n  confDir: \(side.sub("net.d"))\n  binDirs: [/usr/lib/cni]\n"
            .write(toFile: edged.root.sub("config.yaml"), atomically: true, encoding: .utf8)
        try Demo.writeImageArchive(to: "\(edged.stateDir)/images/import/busybox.tar")
        try edged.start()

        try edged.writeManifest("web.yaml", busyboxPod("web", command: "mkdir -p /tmp/www && echo hello-over-cni > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"))
        let web = try edged.waitForPod("web", "Running with an IP") { $0["phase"] as? String == "Running" && $0["podIP"] is String }
        let webIP = try #require(web["podIP"] as? String)
        #expect(webIP.hasPrefix("10.250.40."))
        #expect(web["podIPs"] as? [String] == [webIP])
        #expect(FileManager.default.fileExists(atPath: side.sub("ipam/\(network)/\(webIP)")))

        // busybox nc, not wget: Debian's static busybox wget crashes without the NSS libraries (port lookup).
        try edged.writeManifest("client.yaml", busyboxPod("client", command: """
            for i in $(seq 1 50); do printf \"GET / HTTP/1.0\\r\\n\\r\\n\" | nc -w 2 \(webIP) 8080 | grep hello && break; sleep 0.2; done; sleep 3600
            """))
        let client = try edged.waitForPod("client", "Running with an IP") { $0["phase"] as? String == "Running" && $0["podIP"] is String }
        let clientIP = try #require(client["podIP"] as? String)
        #expect(clientIP != webIP && clientIP.hasPrefix("10.250.40."))
        var logs = ""
        for _ in 0..<100 where !logs.contains("hello-over-cni") {
            logs = try edged.edgectl(["logs", "client"], check: false).stdout
            if !logs.contains("hello-over-cni") { Thread.sleep(forTimeInterval: 0.1) }
        }
        #expect(logs.contains("hello-over-cni"), "client log: \(logs)\nedged log:\n\(edged.log().suffix(3000))")
        let wide = try edged.edgectl(["pods", "-o", "wide"]).stdout
        #expect(wide.contains(webIP) && wide.contains(clientIP))

        // Removing a pod runs CNI DEL: its lease is released.
        edged.removeManifest("web.yaml")
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, FileManager.default.fileExists(atPath: side.sub("ipam/\(network)/\(webIP)")) {
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(!FileManager.default.fileExists(atPath: side.sub("ipam/\(network)/\(webIP)")))

        // A pod left running across an edged restart keeps its IP (from the CNI cache) and is torn down later.
        edged.stop()
        try edged.start()
        let again = try edged.waitForPod("client", "Running after restart") { $0["phase"] as? String == "Running" && $0["podIP"] is String }
        #expect(again["podIP"] as? String == clientIP)
        edged.removeManifest("client.yaml")
        let deadline2 = Date().addingTimeInterval(30)
        while Date() < deadline2, FileManager.default.fileExists(atPath: side.sub("ipam/\(network)/\(clientIP)")) {
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(!FileManager.default.fileExists(atPath: side.sub("ipam/\(network)/\(clientIP)")))
    }
}
