// The agent: refused destinations, reconnecting to a restarted server, picking up a rotated certificate.

import EdgedTestSupport
@testable import EdgedTunnel
import Foundation
import NIOCore
import Testing

@Suite struct TunnelAgentTests {
    @Test func destinationTheAgentRefusesGivesAClearError() async throws {
        let pki = try TunnelPKI()
        defer { pki.dir.remove() }
        let echo = try await EchoServer()
        let server = try await RunningServer.start(pki)
        let echoPort = echo.port
        // Only the echo port on this node may be dialled.
        let agent = RunningAgent.start(pki, port: server.addresses.agentPort,
                                       cert: try pki.writeClient(cn: "system:node:node-1", name: "node-1"),
                                       allow: { host, port in host == "127.0.0.1" && port == echoPort })
        defer { Task { await agent.stop(); await server.stop(); await echo.stop() } }
        try await waitUntil("agent connected") { agent.agent.status().connectedServers == 1 }
        let frontend = Frontend.tcp(server.addresses.frontendPort!)
        do {
            _ = try await withTunnel(frontend, to: "127.0.0.1:22") { _ in 0 }
            Issue.record("a refused destination was dialled")
        } catch {
            let e = try #require(error as? ConnectRefused)
            #expect(e.status == 502)
            #expect(e.body.contains("127.0.0.1:22 is not a destination on this node; refused"), "\(e.body)")
        }
        // And the allowed one still works.
        let ok = try await withTunnel(frontend, to: "127.0.0.1:\(echo.port)") { client in
            try await client.write([1, 2, 3])
            return try await client.read(count: 3)
        }
        #expect(ok == [1, 2, 3])
        #expect(agent.agent.status().lastError?.contains("refused dial to 127.0.0.1:22") == true)
    }

    @Test func dialFailureOnTheNodeIsReported() async throws {
        let pki = try TunnelPKI()
        defer { pki.dir.remove() }
        let server = try await RunningServer.start(pki)
        let agent = RunningAgent.start(pki, port: server.addresses.agentPort,
                                       cert: try pki.writeClient(cn: "system:node:node-1", name: "node-1"))
        defer { Task { await agent.stop(); await server.stop() } }
        try await waitUntil("agent connected") { agent.agent.status().connectedServers == 1 }
        let closedPort = try freeTCPPort()
        do {
            _ = try await withTunnel(.tcp(server.addresses.frontendPort!), to: "127.0.0.1:\(closedPort)") { _ in 0 }
            Issue.record("a dial to a closed port succeeded")
        } catch {
            let e = try #require(error as? ConnectRefused)
            #expect(e.status == 502)
            #expect(e.body.contains("agent node-1 could not connect to 127.0.0.1:\(closedPort)"), "\(e.body)")
        }
    }

    @Test func agentReconnectsWhenTheServerIsReplaced() async throws {
        let pki = try TunnelPKI()
        defer { pki.dir.remove() }
        let echo = try await EchoServer()
        let first = try await RunningServer.start(pki, id: "server-a")
        let port = first.addresses.agentPort
        let agent = RunningAgent.start(pki, port: port, cert: try pki.writeClient(cn: "system:node:node-1", name: "node-1"))
        defer { Task { await agent.stop(); await echo.stop() } }
        try await waitUntil("agent connected") { agent.agent.status().serverIDs == ["server-a"] }

        // A stream is open when the server goes away: it ends.
        let (opened, openedInput) = AsyncStream.makeStream(of: Void.self)
        let midStream = Task {
            try await withTunnel(.tcp(first.addresses.frontendPort!), to: "node-1:\(echo.port)") { client in
                try await client.write([42])
                _ = try await client.read(count: 1)
                openedInput.yield()
                return await client.drainToEnd()
            }
        }
        for await _ in opened { break }
        try await waitUntil("stream open on the agent") { agent.agent.status().openStreams == 1 }
        await first.stop()
        _ = try await midStream.value
        try await waitUntil("agent noticed") { agent.agent.status().connectedServers == 0 }
        try await waitUntil("agent's stream closed") { agent.agent.status().openStreams == 0 }

        let second = try await RunningServer.start(pki, id: "server-b", agentPort: port)
        defer { Task { await second.stop() } }
        try await waitUntil("agent reconnected") { agent.agent.status().serverIDs == ["server-b"] }
        let echoed = try await withTunnel(.tcp(second.addresses.frontendPort!), to: "node-1:\(echo.port)") { client in
            try await client.write(Array("again".utf8))
            return try await client.read(count: 5)
        }
        #expect(echoed == Array("again".utf8))
    }

    @Test func rotatedCertificateIsUsedAfterReconnect() async throws {
        let pki = try TunnelPKI()
        defer { pki.dir.remove() }
        let server = try await RunningServer.start(pki)
        let paths = try pki.writeClient(cn: "system:node:node-1", name: "node-1")
        let agent = RunningAgent.start(pki, port: server.addresses.agentPort, cert: paths)
        defer { Task { await agent.stop(); await server.stop() } }
        try await waitUntil("agent connected") { server.server.agents().count == 1 }
        let before = try #require(server.server.agents().first)

        try pki.writeClient(cn: "system:node:node-1", name: "node-1")  // same files, new key and serial
        agent.agent.reconnect()
        try await waitUntil("agent back with the new certificate") {
            let agents = server.server.agents()
            return agents.count == 1 && agents[0].certificateSerial != before.certificateSerial
        }
        #expect(server.server.agents()[0].certificateCommonName == "system:node:node-1")
        try await waitUntil("agent counts the new connection") { agent.agent.status().connectedServers == 1 }
    }
}
