// Cloud link faults beyond a stopped or blackholed API server (HubOfflineTests has those): a link so slow that the
// TLS handshake never finishes, a link that answers something that is not TLS, and a node clock so far behind
// that the API server's certificate is not valid yet. Each time edged stays up, says
// in `edgectl status` (non-zero exit) what is wrong, keeps its pods, and once the link is back a pod bound to the
// node while it was away runs and its status reaches the cloud.

import EdgedDaemon
import EdgedTestSupport
import Foundation
import Testing

@Suite(.serialized, .enabled(if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge")
                                && findExecutable("kubectl") != nil, "needs root, CNI plugins and kubectl"))
struct CloudLinkFaultTests {
    enum LinkFault: String, CaseIterable {
        case slow = "a 20 bytes/s link"
        case garbage = "a link that answers plain HTTP instead of TLS"
        case clockBehind = "a node clock two days behind the API server's certificate"
    }

    @Test func badLinksAndAWrongClockAreReportedAndEveryUpdateLandsAfter() async throws {
      try await withCluster(name: "hublink", subnet: "10.250.77.0/24") { f in
        try f.edged.start()
        _ = try f.join()
        _ = try await f.kubectl.wait(["get", "node", f.node], "node Ready") { condition($0, "Ready") == "True" }
        try f.kubectl.run(["apply", "-f", "-"], stdin: boundPod("web", node: f.node, command: "exec sleep 3600"))
        _ = try await f.kubectl.wait(["get", "pod", "web"], "web Running") { path($0, "status", "phase") as? String == "Running" }
        try await waitForHub(f, "connected")

        for fault in LinkFault.allCases {
            switch fault {
            case .slow: f.api.setSlowLink(bytesPerSecond: 20)
            case .garbage: await f.api.setGarbageLink(true)
            case .clockBehind: try await f.api.setServingCertificate(validFrom: Date().addingTimeInterval(2 * 86400))
            }
            try await waitForHub(f, "offline", timeout: 90)
            let hub = try hubState(f)
            let lastError = hub["lastError"] as? String ?? ""
            print("link fault \(fault.rawValue): hub lastError: \(lastError)")
            #expect(!lastError.isEmpty, "\(fault.rawValue): the hub gives no reason")
            if fault == .clockBehind {
                #expect(lastError.contains("clock"), "the reason does not point at the clock: \(lastError)")
            }
            let status = try f.edged.edgectl(["status"], check: false)
            #expect(status.status != 0, "\(fault.rawValue): edgectl status exits 0 while the cloud is unreachable")
            #expect(status.stdout.contains("unreachable"), "\(fault.rawValue): \(status.stdout)")
            #expect(try f.edged.pod("web")?["phase"] as? String == "Running", "\(fault.rawValue): web stopped")

            // Bound while the link is bad: the cloud has it, the node cannot know yet.
            let name = "during-\(fault)".lowercased()
            _ = try f.api.put("/api/v1/namespaces/default/pods", [
                "metadata": ["name": name, "namespace": "default"],
                "spec": ["nodeName": f.node, "containers": [["name": "main", "image": Demo.imageReference,
                                                             "command": ["sh", "-c", "exec sleep 3600"]]]],
            ])

            switch fault {
            case .slow: f.api.setSlowLink(bytesPerSecond: 0)
            case .garbage: await f.api.setGarbageLink(false)
            case .clockBehind: try await f.api.setServingCertificate(validFrom: nil)
            }
            try await waitForHub(f, "connected", timeout: 60)
            _ = try await f.kubectl.wait(["get", "pod", name], timeout: 90, "\(name) Running after \(fault.rawValue) ended") {
                path($0, "status", "phase") as? String == "Running"
            }
        }
        #expect(try f.edged.pod("web")?["phase"] as? String == "Running")
      }
    }
}
