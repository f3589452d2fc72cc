// End to end: CONNECT through the tunnel server's frontends, over the agent's Connect stream, to a TCP echo server.

import EdgedTestSupport
@testable import EdgedTunnel
import Foundation
import NIOCore
import Testing

@Suite struct TunnelTests {
    @Test func connectThroughTCPAndUnixSocketCarriesDataBothWays() async throws {
        let pki = try TunnelPKI()
        defer { pki.dir.remove() }
        let echo = try await EchoServer()
        let server = try await RunningServer.start(pki, unixSocket: pki.dir.sub("tunnel.sock"))
        let agent = RunningAgent.start(pki, port: server.addresses.agentPort, cert: try pki.writeClient(cn: "system:node:node-1", name: "node-1"))
        defer { Task { await agent.stop(); await server.stop(); await echo.stop() } }
        try await waitUntil("agent connected") { agent.agent.status().connectedServers == 1 }
        #expect(agent.agent.status().serverIDs == ["server-1"])
        #expect(server.server.agents().map(\.agentID) == ["node-1"])

        for frontend in [Frontend.tcp(server.addresses.frontendPort!), .unix(pki.dir.sub("tunnel.sock"))] {
            // Routed by the node name and by its IPv4 identifier.
            for host in ["node-1", "127.0.0.1"] {
                let echoed = try await withTunnel(frontend, to: "\(host):\(echo.port)") { client in
                    try await client.write(Array("hello tunnel".utf8))
                    return try await client.read(count: 12)
                }
                #expect(String(decoding: echoed, as: UTF8.self) == "hello tunnel")
            }
            // 1 MB each way at once.
            let data = pattern(1 << 20, seed: 7)
            let back = try await withTunnel(frontend, to: "node-1:\(echo.port)") { client in
                let outbound = client.outbound
                let writer = Task {
                    for start in stride(from: 0, to: data.count, by: 50_000) {
                        try await outbound.write(ByteBuffer(bytes: data[start..<min(start + 50_000, data.count)]))
                    }
                }
                let got = try await client.read(count: data.count)
                try await writer.value
                return got
            }
            #expect(back == data)
        }
        try await waitUntil("streams closed on both sides") {
            agent.agent.status().openStreams == 0 && server.server.agents().first?.openStreams == 0
        }
    }

    @Test func slowReaderDoesNotBlockOtherStreams() async throws {
        let pki = try TunnelPKI()
        defer { pki.dir.remove() }
        let echo = try await EchoServer()
        let limit = 256 << 10
        let server = try await RunningServer.start(pki, streamBufferLimit: limit)
        let agent = RunningAgent.start(pki, port: server.addresses.agentPort, cert: try pki.writeClient(cn: "system:node:node-1", name: "node-1"))
        defer { Task { await agent.stop(); await server.stop(); await echo.stop() } }
        try await waitUntil("agent connected") { agent.agent.status().connectedServers == 1 }
        let frontend = Frontend.tcp(server.addresses.frontendPort!)
        let target = "node-1:\(echo.port)"

        // The stuck stream: writes 24 MB (echoed back: more than the socket buffers, the relay cap and the
        // agent's queue together) and reads nothing until the other streams are done.
        let (started, startedInput) = AsyncStream.makeStream(of: Void.self)
        let (othersDone, othersDoneInput) = AsyncStream.makeStream(of: Void.self)
        let stuck = Task { () -> Int in
            try await withTunnel(frontend, to: target) { client in
                startedInput.yield()
                let chunk = ByteBuffer(bytes: pattern(64 << 10))
                for _ in 0..<384 {
                    do { try await client.outbound.write(chunk) } catch { break }
                }
                for await _ in othersDone { break }
                // The server closed this stream when more than `limit` bytes waited for us: we see an early EOF.
                return await client.drainToEnd()
            }
        }
        for await _ in started { break }

        let sizes = (0..<19).map { 100_000 + $0 * 7919 }
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for (i, size) in sizes.enumerated() {
                group.addTask {
                    let data = pattern(size, seed: UInt8(i + 1))
                    return try await withTunnel(frontend, to: target) { client in
                        let outbound = client.outbound
                        let writer = Task { try await outbound.write(ByteBuffer(bytes: data)) }
                        let got = try await client.read(count: data.count)
                        try await writer.value
                        return got == data
                    }
                }
            }
            var ok = 0
            for try await same in group where same { ok += 1 }
            #expect(ok == 19)
        }
        // The stuck stream's backlog outgrows the cap (the echo keeps sending): the server closes it.
        do {
            try await waitUntil("the stuck stream closed by the server") { server.server.agents().first?.openStreams == 0 }
        } catch {
            stuck.cancel()
            throw error
        }
        othersDoneInput.yield()
        let received = try await stuck.value
        #expect(received < 24 << 20, "the stuck stream was closed before everything came back")
    }
}
