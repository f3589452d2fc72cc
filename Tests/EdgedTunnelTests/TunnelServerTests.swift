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
            } catch {
                let e = try #require(error as? ConnectRefused)
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
        } catch {
            let e = try #require(error as? ConnectRefused)
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
        } catch {
            let e = try #require(error as? ConnectRefused)
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

    @Test func tlsFrontendRequiresAClientCertificateFromItsCA() async throws {
        let pki = try TunnelPKI()
        defer { pki.dir.remove() }
        let echo = try await EchoServer()
        let server = try await RunningServer.start(pki, frontendTLS: .init(certPath: pki.serverCertPath, keyPath: pki.serverKeyPath,
                                                                         clientCAPath: pki.caPath))
        let agent = RunningAgent.start(pki, port: server.addresses.agentPort, cert: try pki.writeClient(cn: "system:node:node-1", name: "node-1"))
        defer { Task { await agent.stop(); await server.stop(); await echo.stop() } }
        try await waitUntil("agent connected") { agent.agent.status().connectedServers == 1 }
        let apiServer = try pki.writeClient(cn: "kube-apiserver", name: "apiserver")
        let port = server.addresses.frontendPort!
        let echoed = try await withTunnel(.tls(port, caPath: pki.caPath, client: apiServer), to: "node-1:\(echo.port)") { client in
            try await client.write(Array("over tls".utf8))
            return try await client.read(count: 8)
        }
        #expect(echoed == Array("over tls".utf8))
        // No client certificate: the handshake fails, nothing is dialled.
        await #expect(throws: (any Error).self) {
            _ = try await withTunnel(.tls(port, caPath: pki.caPath, client: nil), to: "node-1:\(echo.port)") { _ in 0 }
        }
        try await waitUntil("streams closed") { agent.agent.status().openStreams == 0 }
    }

    @Test func dialTheAgentDoesNotAnswerInTimeGets502() async throws {
        let pki = try TunnelPKI()
        defer { pki.dir.remove() }
        let server = try await RunningServer.start(pki, dialTimeout: .milliseconds(300))
        // An agent whose destination check takes 1.5 s: the server gives up first.
        let agent = RunningAgent.start(pki, port: server.addresses.agentPort,
                                       cert: try pki.writeClient(cn: "system:node:node-1", name: "node-1"),
                                       allow: { _, _ in usleep(1_500_000); return true })
        defer { Task { await agent.stop(); await server.stop() } }
        try await waitUntil("agent connected") { agent.agent.status().connectedServers == 1 }
        do {
            _ = try await withTunnel(.tcp(server.addresses.frontendPort!), to: "node-1:1") { _ in 0 }
            Issue.record("a dial that was never answered succeeded")
        } catch {
            let e = try #require(error as? ConnectRefused)
            #expect(e.status == 502)
            #expect(e.body.contains("did not answer the dial within"), "\(e.body)")
        }
    }

    @Test func drainingAgentIsMarked() async throws {
        let pki = try TunnelPKI()
        defer { pki.dir.remove() }
        let server = try await RunningServer.start(pki)
        let agent = RunningAgent.start(pki, port: server.addresses.agentPort, cert: try pki.writeClient(cn: "system:node:node-1", name: "node-1"))
        defer { Task { await agent.stop(); await server.stop() } }
        try await waitUntil("agent connected") { server.server.agents().count == 1 }
        #expect(server.server.agents()[0].draining == false)
        agent.agent.drain()
        try await waitUntil("server saw DRAIN") { server.server.agents().first?.draining == true }
    }
}
