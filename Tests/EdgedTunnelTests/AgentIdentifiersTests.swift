// agentIdentifiers encoding/parsing and host:port splitting.

@testable import EdgedTunnel
import Testing

@Suite struct AgentIdentifiersTests {
    @Test func encodesLikeTheGoAgentAndParsesBack() {
        let ids = AgentIdentifiers(hosts: ["node-1"], ipv4: ["10.0.0.5"], ipv6: ["fd00::5"])
        #expect(ids.encoded == "host=node-1&ipv4=10.0.0.5&ipv6=fd00%3A%3A5")
        #expect(AgentIdentifiers.parse(ids.encoded) == ids)
        #expect(AgentIdentifiers.parse("host=a&cidr=10.0.0.0%2F8&default-route=true&bogus") == AgentIdentifiers(hosts: ["a"]))
        #expect(ids.contains("NODE-1") && ids.contains("10.0.0.5") && ids.contains("[fd00::5]"))
        #expect(!ids.contains("node-2"))
    }

    @Test func splitsHostPort() {
        #expect(splitHostPort("node-1:10250")! == ("node-1", 10250))
        #expect(splitHostPort("[::1]:80")! == ("::1", 80))
        #expect(splitHostPort("node-1") == nil)
        #expect(splitHostPort("::1:80") == nil)
        #expect(splitHostPort("a:0") == nil)
        #expect(splitHostPort(":80") == nil)
    }
}
