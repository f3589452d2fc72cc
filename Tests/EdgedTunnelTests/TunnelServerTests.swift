// The tunnel server's refusals: unknown hosts, bad requests, agents whose certificate names another node.

import EdgedTestSupport
@testable import EdgedTunnel
import Foundation
import Testing

@Suite struct TunnelServerTests {
    @Test func unknownHostGets503NamingTheHost() async throws {
        let pki = try TunnelPKI()
        defer { pki.dir.remove() }
        let server = try await RunningServer.start(pki, unixSocket: pki.dir.sub("t.sock"))
        defer { Task { await server.stop() } }
        for frontend in [Frontend.tcp(server.addresses.frontendPort!), .unix(pki.dir.sub("t.sock"))] {
            do {
                _ = try await withTunnel(frontend, to: "node-9:10250") { _ in 0 }
                Issue.record("CONNECT to an unknown host succeeded")
            } catch let e as ConnectRefused {
                #expect(e.status == 503)
                #expect(e.body.contains("no tunnel agent is connected for host node-9"))
            }
        }
    }

    @Test func malformedRequestsGet400() async throws {
        let pki = try TunnelPKI()
        defer { pki.dir.remove() }
        let server = try await RunningServer.start(pki)
        defer { Task { await server.stop() } }
        do {
            _ = try await withTunnel(.tcp(server.addresses.frontendPort!), to: "no-port-here") { _ in 0 }
            Issue.record("CONNECT without a port succeeded")
        } catch let e as ConnectRefused {
            #expect(e.status == 400)
            #expect(e.body.contains("is not host:port"))
        }
    }

    @Test func agentWhoseCertificateNamesAnotherNodeIsRefused() async throws {
        let pki = try TunnelPKI()
        defer { pki.dir.remove() }
        let server = try await RunningServer.start(pki)
        // The certificate says node-2, the agent claims node-1.
        let agent = RunningAgent.start(pki, port: server.addresses.agentPort, agentID: "node-1",
                                       cert: try pki.writeClient(cn: "system:node:node-2", name: "node-2"))
        defer { Task { await agent.stop(); await server.stop() } }
        try await waitUntil("the agent's refusal") { agent.agent.status().lastError != nil }
        let status = agent.agent.status()
        #expect(status.connectedServers == 0)
        #expect(status.lastError?.contains("does not match the client certificate CN system:node:node-2") == true, "\(status)")
        #expect(server.server.agents().isEmpty)
        do {
            _ = try await withTunnel(.tcp(server.addresses.frontendPort!), to: "node-1:10250") { _ in 0 }
            Issue.record("CONNECT to a refused agent's node succeeded")
        } catch let e as ConnectRefused {
            #expect(e.status == 503)
        }
    }

    @Test func agentWithoutACertificateFromTheCAIsRefused() async throws {
        let pki = try TunnelPKI()
        defer { pki.dir.remove() }
        let other = try TunnelPKI()
        defer { other.dir.remove() }
        let server = try await RunningServer.start(pki)
        let agent = RunningAgent.start(pki, port: server.addresses.agentPort, agentID: "node-1",
                                       cert: try other.writeClient(cn: "system:node:node-1", name: "node-1"))
        defer { Task { await agent.stop(); await server.stop() } }
        try await waitUntil("the agent's TLS failure") { agent.agent.status().lastError != nil }
        #expect(agent.agent.status().connectedServers == 0)
        #expect(server.server.agents().isEmpty)
    }
}
