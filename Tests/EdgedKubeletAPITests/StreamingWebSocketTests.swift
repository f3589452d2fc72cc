// The WebSocket channel protocols (v5.channel.k8s.io exec, port-forward) over loopback against StreamingServer.
import EdgedCore
@testable import EdgedKubeletAPI
import Foundation
import NIOCore
import Testing

/// A WebSocket client speaking the k8s channel protocols: masked binary messages, first byte = channel.
final class WebSocketTestClient: @unchecked Sendable {
    let raw: RawClient
    var channels: [UInt8: [UInt8]] = [:]
    var firstMessages: [UInt8: [UInt8]] = [:]
    var closeReceived = false

    init(port: Int) throws { raw = try RawClient(port: port) }

    func upgrade(_ path: String, protocols: [String]) async throws -> (status: Int, headers: [String: String], body: String) {
        var text = "GET \(path) HTTP/1.1\r\nHost: kubelet\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        text += "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        if !protocols.isEmpty { text += "Sec-WebSocket-Protocol: \(protocols.joined(separator: ", "))\r\n" }
        return try await raw.request(text + "\r\n")
    }

    func send(channel: UInt8, _ payload: [UInt8], opcode: UInt8 = 0x2) async throws {
        let body = opcode == 0x2 ? [channel] + payload : payload
        var frame: [UInt8] = [0x80 | opcode]
        if body.count < 126 { frame.append(0x80 | UInt8(body.count)) } else {
            frame += [0x80 | 126, UInt8(body.count >> 8), UInt8(body.count & 0xff)]
        }
        let mask: [UInt8] = [1, 2, 3, 4]
        frame += mask
        for (i, b) in body.enumerated() { frame.append(b ^ mask[i % 4]) }
        try await raw.send(frame)
    }

    /// Reads server messages until `done` holds.
    func pump(_ what: String, until done: () -> Bool) async throws {
        while !done() {
            let (opcode, payload) = try await raw.wait(what) { buf -> (UInt8, [UInt8])? in
                let v = Array(buf.readableBytesView)
                guard v.count >= 2 else { return nil }
                var len = Int(v[1] & 0x7f), at = 2
                if len == 126 { guard v.count >= 4 else { return nil }; len = Int(v[2]) << 8 | Int(v[3]); at = 4 }
                if len == 127 {
                    guard v.count >= 10 else { return nil }
                    len = v[2..<10].reduce(0) { $0 << 8 | Int($1) }; at = 10
                }
                guard v.count >= at + len else { return nil }
                buf.moveReaderIndex(forwardBy: at + len)
                return (v[0] & 0x0f, Array(v[at..<(at + len)]))
            }
            if opcode == 0x8 { closeReceived = true; continue }
            guard opcode == 0x2, let channel = payload.first else { continue }
            if firstMessages[channel] == nil { firstMessages[channel] = Array(payload.dropFirst()) }
            channels[channel, default: []] += payload.dropFirst()
        }
    }

    func text(_ channel: UInt8) -> String { String(decoding: channels[channel] ?? [], as: UTF8.self) }
}

@Suite(.serialized) struct StreamingWebSocketTests {
    let backend = StreamingTestBackend()

    @Test func v5ExecCarriesStdinOutputCloseSignalAndExitCode() async throws {
        let server = try StreamingTestServer(backend: backend)
        defer { server.shutdown() }
        let client = try WebSocketTestClient(port: server.port)
        defer { client.raw.shutdown() }
        let head = try await client.upgrade("/exec/ns/p/app?command=/bin/sh&command=-c&command=\(q("cat; echo done >&2; exit 7"))&input=1&output=1&error=1",
                                            protocols: ["v5.channel.k8s.io", "v4.channel.k8s.io"])
        #expect(head.status == 101)
        #expect(head.headers["sec-websocket-protocol"] == "v5.channel.k8s.io")
        #expect(head.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        try await client.send(channel: 0, Array("abc".utf8))
        try await client.send(channel: 0, [], opcode: 0x9)  // ping (no channel byte): answered with a pong
        try await client.send(channel: 255, [0])  // v5: close stdin
        try await client.pump("exec to end") { client.closeReceived }
        #expect(client.text(1) == "abc")
        #expect(client.text(2) == "done\n")
        let status = try JSONValue.parse(client.text(3))
        #expect(status["reason"]?.stringValue == "NonZeroExitCode")
        #expect(status["details"]?["causes"] == .array([.object([("reason", .string("ExitCode")), ("message", .string("7"))])]))
    }

    @Test func portForwardAnnouncesPortsAndEchoes() async throws {
        let echo = try EchoServer()
        defer { echo.shutdown() }
        let server = try StreamingTestServer(backend: backend)
        defer { server.shutdown() }
        let client = try WebSocketTestClient(port: server.port)
        defer { client.raw.shutdown() }
        let head = try await client.upgrade("/portForward/ns/p?port=\(echo.port)", protocols: ["portforward.k8s.io"])
        #expect(head.status == 101)
        try await client.pump("port announcements") { client.firstMessages[0] != nil && client.firstMessages[1] != nil }
        let portBytes = [UInt8(echo.port & 0xff), UInt8(echo.port >> 8)]
        #expect(client.firstMessages[0] == portBytes)
        #expect(client.firstMessages[1] == portBytes)
        try await client.send(channel: 0, Array("ping over the tunnel".utf8))
        try await client.pump("echo") { client.channels[0]?.count == 2 + 20 }
        #expect(Array(client.channels[0]!.dropFirst(2)) == Array("ping over the tunnel".utf8))
    }

    @Test func unknownSubprotocolIsRefused() async throws {
        let server = try StreamingTestServer(backend: backend)
        defer { server.shutdown() }
        let client = try WebSocketTestClient(port: server.port)
        defer { client.raw.shutdown() }
        let head = try await client.upgrade("/exec/ns/p/app?command=ls&output=1", protocols: ["base64.channel.k8s.io"])
        #expect(head.status == 400)
        #expect(head.body.contains("v5.channel.k8s.io"))
    }
}
