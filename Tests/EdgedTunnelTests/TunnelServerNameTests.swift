// The agent checking the tunnel server by an IP address that is not the one it dials (NAT, a load balancer):
// `tunnel.serverName: 203.0.113.7` sends no SNI and requires that address among the certificate's IP SANs.

import EdgedTestSupport
@testable import EdgedTunnel
import Foundation
import NIOCore
import ServiceLifecycle
import Testing

@Suite struct TunnelServerNameTests {
    /// A tunnel server on 127.0.0.1 whose certificate lists only the IP address 203.0.113.7.
    static func serverBehindNAT(_ pki: TunnelPKI) async throws -> RunningServer {
        let cert = try pki.ca.issue(serverFor: "tunnel-server", ips: ["203.0.113.7"], dns: [])
        try cert.certPEM.write(toFile: pki.serverCertPath, atomically: true, encoding: .utf8)
        try cert.keyPEM.write(toFile: pki.serverKeyPath, atomically: true, encoding: .utf8)
        return try await RunningServer.start(pki)
    }

    static func agent(_ pki: TunnelPKI, port: Int, serverName: String?) throws -> RunningAgent {
        let client = try pki.writeClient(cn: "system:node:node-1", name: "node-1")
        let config = TunnelAgentConfig(
            serverHost: "127.0.0.1", serverPort: port, caPath: pki.caPath, certPath: client.cert, keyPath: client.key,
            serverName: serverName, agentID: "node-1", identifiers: AgentIdentifiers(hosts: ["node-1"], ipv4: ["127.0.0.1"]),
            allowDestination: { host, _ in host == "127.0.0.1" }, backoffInitial: .milliseconds(100), backoffMax: .seconds(1))
        let agent = TunnelAgent(config: config, logger: testLogger("tunnel-agent"))
        let group = ServiceGroup(services: [agent], logger: testLogger("service-group"))
        return RunningAgent(agent: agent, group: group, task: Task { try await group.run() })
    }

    @Test func ipServerNameInTheCertificatesIPSANsConnects() async throws {
        let pki = try TunnelPKI()
        defer { pki.dir.remove() }
        let echo = try await EchoServer()
        let server = try await Self.serverBehindNAT(pki)
        let agent = try Self.agent(pki, port: server.addresses.agentPort, serverName: "203.0.113.7")
        defer { Task { await agent.stop(); await server.stop(); await echo.stop() } }
        try await waitUntil("agent connected") { agent.agent.status().connectedServers == 1 }
        let echoed = try await withTunnel(.tcp(server.addresses.frontendPort!), to: "node-1:\(echo.port)") { client in
            try await client.write(Array("behind nat".utf8))
            return try await client.read(count: 10)
        }
        #expect(String(decoding: echoed, as: UTF8.self) == "behind nat")
    }

    @Test func ipServerNameMissingFromTheCertificateFailsNamingBoth() async throws {
        let pki = try TunnelPKI()
        defer { pki.dir.remove() }
        let server = try await Self.serverBehindNAT(pki)
        let agent = try Self.agent(pki, port: server.addresses.agentPort, serverName: "203.0.113.8")
        defer { Task { await agent.stop(); await server.stop() } }
        try await waitUntil("the TLS failure reported") { agent.agent.status().lastError?.contains("203.0.113.8") == true }
        let error = agent.agent.status().lastError ?? ""
        #expect(error.contains("not valid for the configured server name 203.0.113.8"), "\(error)")
        #expect(error.contains("IP SANs are [203.0.113.7]"), "\(error)")
        #expect(agent.agent.status().connectedServers == 0)
        #expect(server.server.agents().isEmpty)
    }

    @Test func withoutServerNameTheDialledAddressIsChecked() async throws {
        let pki = try TunnelPKI()
        defer { pki.dir.remove() }
        let server = try await Self.serverBehindNAT(pki)
        let agent = try Self.agent(pki, port: server.addresses.agentPort, serverName: nil)
        defer { Task { await agent.stop(); await server.stop() } }
        // The certificate does not list 127.0.0.1: NIOSSL's check of the connected address fails.
        try await waitUntil("the TLS failure reported") { agent.agent.status().lastError != nil }
        let error = agent.agent.status().lastError ?? ""
        #expect(error.contains("127.0.0.1"), "\(error)")
        try await Task.sleep(for: .milliseconds(300))
        #expect(agent.agent.status().connectedServers == 0)
        #expect(server.server.agents().isEmpty)
    }

    @Test func dnsServerNameIsSentAndCheckedInTheDNSSANs() async throws {
        // A certificate with a DNS name only (NIOSSL also accepts one that lists the connected address).
        let pki = try TunnelPKI()
        defer { pki.dir.remove() }
        let cert = try pki.ca.issue(serverFor: "tunnel-server", ips: [], dns: ["tunnel.internal"])
        try cert.certPEM.write(toFile: pki.serverCertPath, atomically: true, encoding: .utf8)
        try cert.keyPEM.write(toFile: pki.serverKeyPath, atomically: true, encoding: .utf8)
        let server = try await RunningServer.start(pki)
        let good = try Self.agent(pki, port: server.addresses.agentPort, serverName: "tunnel.internal")
        try await waitUntil("agent connected by name") { good.agent.status().connectedServers == 1 }
        await good.stop()
        let wrong = try Self.agent(pki, port: server.addresses.agentPort, serverName: "tunnel.example")
        defer { Task { await wrong.stop(); await server.stop() } }
        try await waitUntil("the TLS failure reported") { wrong.agent.status().lastError != nil }
        let error = wrong.agent.status().lastError ?? ""
        #expect(error.contains("tunnel.example"), "\(error)")
        #expect(wrong.agent.status().connectedServers == 0)
    }
}
