// What the node's tunnel agent may dial for the cloud: only this node (its name, localhost, its interfaces' addresses)
// and its pods, never the hub's node-credential port, never another host.

import Testing
@testable import EdgedDaemon

@Suite struct TunnelDestinationTests {
    @Test func onlyTheNodeAndItsPodsAndNeverTheHubsPort() {
        let d = NodeDestinations(nodeName: "Edge-1", refusedLocalPorts: [10261])
        #expect(d.allows("edge-1", port: 10250))
        #expect(d.allows("localhost", port: 10250))
        #expect(d.allows("127.0.0.1", port: 10250))
        #expect(d.allows("[::1]", port: 10250))
        // The hub's HTTP listener acts with the node's credentials for token-less callers: not from the cloud.
        #expect(!d.allows("127.0.0.1", port: 10261))
        #expect(!d.allows("edge-1", port: 10261))
        // Other hosts: refused, whatever the port.
        #expect(!d.allows("10.255.255.1", port: 10250))
        #expect(!d.allows("example.com", port: 443))
        #expect(!d.allows("169.254.169.254", port: 80))
        #expect(!d.allows("", port: 10250))
    }
}
