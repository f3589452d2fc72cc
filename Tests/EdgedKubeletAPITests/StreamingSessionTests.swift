// SPDY/3.1 and WebSocket sessions over loopback against StreamingServer, with real processes and a real TCP "pod".
import EdgedCore
@testable import EdgedKubeletAPI
import Foundation
import NIOCore
import Testing
#if canImport(Glibc)
import Glibc
#endif

func q(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? s }

/// A SPDY/3.1 client like spdystream: opens streams, sends data, and collects what comes back.
final class SPDYTestClient: @unchecked Sendable {
    let raw: RawClient
    let codec = SPDYFrameCodec()
    var nextID: UInt32 = 1
    var data: [UInt32: [UInt8]] = [:]
    var finished: Set<UInt32> = []
    var replied: Set<UInt32> = []
    var goAway: UInt32?
    /// Acts as a flow-controlled SPDY/3.1 peer: gives window back for every DATA frame it reads.
    var sendWindowUpdates = false
    var receivedSinceUpdate = 0

    init(port: Int) throws { raw = try RawClient(port: port) }

    func upgrade(_ path: String, protocols: [String]) async throws -> (status: Int, headers: [String: String], body: String) {
        var text = "POST \(path) HTTP/1.1\r\nHost: kubelet\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        for p in protocols { text += "X-Stream-Protocol-Version: \(p)\r\n" }
        return try await raw.request(text + "\r\n")
    }

    func open(_ headers: SPDYHeaders) async throws -> UInt32 {
        let id = nextID
        nextID += 2
        try await send(.synStream(streamID: id, associatedStreamID: 0, priority: 0, fin: false, unidirectional: false, headers: headers))
        return id
    }

    func send(_ frame: SPDYFrame) async throws {
        var out = ByteBuffer()
        try codec.encode(frame, into: &out)
        try await raw.send(out)
    }

    func write(_ id: UInt32, _ bytes: [UInt8], fin: Bool = false) async throws {
        try await send(.data(streamID: id, fin: fin, payload: ByteBuffer(bytes: bytes)))
    }

    /// Reads frames until `done` holds (or the connection closes with it still false: an error).
    func pump(_ what: String, seconds: Double = 15, until done: () -> Bool) async throws {
        while !done() {
            let frame = try await raw.wait(what, seconds: seconds) { buf in try codec.decode(&buf) }
            switch frame {
            case .data(let id, let fin, let payload):
                data[id, default: []] += payload.readableBytesView
                if fin { finished.insert(id) }
                if sendWindowUpdates, payload.readableBytes > 0 {
                    try await send(.windowUpdate(streamID: id, delta: UInt32(payload.readableBytes)))
                    try await send(.windowUpdate(streamID: 0, delta: UInt32(payload.readableBytes)))
                }
            case .synReply(let id, let fin, _):
                replied.insert(id)
                if fin { finished.insert(id) }
            case .goAway(let last, _): goAway = last
            case .rstStream(let id, _): finished.insert(id)
            default: break
            }
        }
    }

    func text(_ id: UInt32) -> String { String(decoding: data[id] ?? [], as: UTF8.self) }
}

@Suite(.serialized) struct StreamingSessionTests {
    let backend = StreamingTestBackend()

    func withServer(_ body: (StreamingTestServer) async throws -> Void) async throws {
        let server = try StreamingTestServer(backend: backend)
        defer { server.shutdown() }
        try await body(server)
    }

    @Test func spdyExecReturnsOutputAndExitCodeOnTheirStreams() async throws {
        try await withServer { server in
            let client = try SPDYTestClient(port: server.port)
            defer { client.raw.shutdown() }
            let head = try await client.upgrade("/exec/ns/p/app?command=/bin/sh&command=-c&command=\(q("echo out; echo err >&2; exit 3"))&output=1&error=1",
                                                protocols: ["v4.channel.k8s.io", "v3.channel.k8s.io"])
            #expect(head.status == 101)
            #expect(head.headers["x-stream-protocol-version"] == "v4.channel.k8s.io")
            #expect(head.headers["upgrade"] == "SPDY/3.1")
            let error = try await client.open(["streamtype": "error"])
            let stdout = try await client.open(["streamtype": "stdout"])
            let stderr = try await client.open(["streamtype": "stderr"])
            try await client.pump("exec to finish") { client.finished.isSuperset(of: [error, stdout, stderr]) && client.goAway != nil }
            #expect(client.text(stdout) == "out\n")
            #expect(client.text(stderr) == "err\n")
            let status = try JSONValue.parse(client.text(error))
            #expect(status["status"]?.stringValue == "Failure")
            #expect(status["reason"]?.stringValue == "NonZeroExitCode")
            #expect(status["message"]?.stringValue == "command terminated with non-zero exit code: error executing command [/bin/sh -c echo out; echo err >&2; exit 3], exit code 3")
            #expect(status["details"]?["causes"] == .array([.object([("reason", .string("ExitCode")), ("message", .string("3"))])]))
            #expect(client.replied.isSuperset(of: [error, stdout, stderr]))
        }
    }

    @Test func spdyExecStdinReachesTheProcessAndSuccessIsReported() async throws {
        try await withServer { server in
            let client = try SPDYTestClient(port: server.port)
            defer { client.raw.shutdown() }
            let head = try await client.upgrade("/exec/ns/p/app?command=/bin/cat&input=1&output=1", protocols: ["v4.channel.k8s.io"])
            #expect(head.status == 101)
            let error = try await client.open(["streamtype": "error"])
            let stdin = try await client.open(["streamtype": "stdin"])
            let stdout = try await client.open(["streamtype": "stdout"])
            try await client.write(stdin, Array("hello ".utf8))
            try await client.write(stdin, Array("world".utf8), fin: true)
            try await client.pump("cat to finish") { client.finished.isSuperset(of: [error, stdout]) }
            #expect(client.text(stdout) == "hello world")
            #expect(client.text(error) == #"{"metadata":{},"status":"Success"}"#)
        }
    }

    @Test func spdyTTYResizeReachesThePty() async throws {
        try await withServer { server in
            let client = try SPDYTestClient(port: server.port)
            defer { client.raw.shutdown() }
            let head = try await client.upgrade("/exec/ns/p/app?command=/bin/sh&command=-c&command=\(q("read x; stty size"))&input=1&output=1&tty=1",
                                                protocols: ["v4.channel.k8s.io"])
            #expect(head.status == 101)
            let error = try await client.open(["streamtype": "error"])
            let stdin = try await client.open(["streamtype": "stdin"])
            let stdout = try await client.open(["streamtype": "stdout"])
            let resize = try await client.open(["streamtype": "resize"])
            try await client.write(resize, Array(#"{"Width":123,"Height":45}"#.utf8))
            try await Task.sleep(for: .milliseconds(300))
            try await client.write(stdin, Array("go\n".utf8))
            try await client.pump("stty to finish") { client.finished.isSuperset(of: [error, stdout]) }
            #expect(client.text(stdout).contains("45 123"))
            #expect(client.text(error) == #"{"metadata":{},"status":"Success"}"#)
        }
    }

    @Test func spdyPortForwardCarriesAnEchoBothWays() async throws {
        let echo = try EchoServer()
        defer { echo.shutdown() }
        try await withServer { server in
            let client = try SPDYTestClient(port: server.port)
            defer { client.raw.shutdown() }
            let head = try await client.upgrade("/portForward/ns/p", protocols: ["portforward.k8s.io"])
            #expect(head.status == 101)
            #expect(head.headers["x-stream-protocol-version"] == "portforward.k8s.io")
            let port = "\(echo.port)"
            let error = try await client.open(["streamtype": "error", "port": port, "requestid": "0"])
            let data = try await client.open(["streamtype": "data", "port": port, "requestid": "0"])
            // 10 MB in 64 KiB frames, from a client that never sends WINDOW_UPDATE (as spdystream).
            var sent: [UInt8] = []
            for i in 0..<160 {
                let chunk = [UInt8](repeating: UInt8(i & 0xff), count: 65_536)
                sent += chunk
                try await client.write(data, chunk, fin: i == 159)
            }
            try await client.pump("10 MB echoed", seconds: 30) { client.finished.contains(data) }
            #expect(client.data[data]?.count == sent.count)
            #expect(client.data[data] == sent)
            try await client.pump("error stream closed") { client.finished.contains(error) }
            #expect(client.text(error) == "")
        }
    }

    @Test func spdyPortForwardHonoursTheWindowsOfAFlowControlledClient() async throws {
        let echo = try EchoServer()
        defer { echo.shutdown() }
        try await withServer { server in
            let client = try SPDYTestClient(port: server.port)
            defer { client.raw.shutdown() }
            client.sendWindowUpdates = true
            _ = try await client.upgrade("/portForward/ns/p", protocols: ["portforward.k8s.io"])
            // A small initial window: the server must wait for WINDOW_UPDATEs to send the rest.
            try await client.send(.settings(clearPersisted: false, entries: [SPDYSetting(flags: 0, id: SPDYSetting.initialWindowSize, value: 4096)]))
            let port = "\(echo.port)"
            _ = try await client.open(["streamtype": "error", "port": port, "requestid": "1"])
            let data = try await client.open(["streamtype": "data", "port": port, "requestid": "1"])
            let sent = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            for start in stride(from: 0, to: sent.count, by: 32_768) {
                try await client.write(data, Array(sent[start..<(start + 32_768)]), fin: start + 32_768 == sent.count)
            }
            try await client.pump("1 MB echoed", seconds: 30) { client.finished.contains(data) }
            #expect(client.data[data] == sent)
        }
    }

    @Test func spdyPortForwardToAClosedPortReportsOnTheErrorStream() async throws {
        try await withServer { server in
            let client = try SPDYTestClient(port: server.port)
            defer { client.raw.shutdown() }
            _ = try await client.upgrade("/portForward/ns/p", protocols: ["portforward.k8s.io"])
            let error = try await client.open(["streamtype": "error", "port": "1", "requestid": "7"])
            let data = try await client.open(["streamtype": "data", "port": "1", "requestid": "7"])
            try await client.pump("error reported") { client.finished.isSuperset(of: [error, data]) }
            #expect(client.text(error).contains("error forwarding port 1 to pod ns/p"))
        }
    }

    @Test func malformedFrameEndsOnlyThatSession() async throws {
        try await withServer { server in
            let client = try SPDYTestClient(port: server.port)
            defer { client.raw.shutdown() }
            _ = try await client.upgrade("/exec/ns/p/app?command=/bin/true&output=1", protocols: ["v4.channel.k8s.io"])
            try await client.raw.send([0x80, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x04, 1, 2, 3, 4])  // SPDY/2 SYN_STREAM
            try await client.pump("GOAWAY") { client.goAway != nil }
            let deadline = Date().addingTimeInterval(5)
            while !client.raw.closed, Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
            #expect(client.raw.closed)
            // The server still serves new sessions.
            let again = try SPDYTestClient(port: server.port)
            defer { again.raw.shutdown() }
            let head = try await again.upgrade("/exec/ns/p/app?command=/bin/true&output=1", protocols: ["v4.channel.k8s.io"])
            #expect(head.status == 101)
        }
    }

    @Test func unusableUpgradesAreRefused() async throws {
        try await withServer { server in
            let a = try RawClient(port: server.port)
            defer { a.shutdown() }
            let plain = try await a.request("POST /exec/ns/p/app?command=ls&output=1 HTTP/1.1\r\nHost: k\r\n\r\n")
            #expect(plain.status == 400)
            #expect(plain.body.contains("needs a connection upgrade"))
            let b = try SPDYTestClient(port: server.port)
            defer { b.raw.shutdown() }
            let mismatch = try await b.upgrade("/exec/ns/p/app?command=ls&output=1", protocols: ["v9.channel.k8s.io"])
            #expect(mismatch.status == 403)
            #expect(mismatch.headers["x-accepted-stream-protocol-versions"] != nil)
        }
    }

    @Test func clientGoingAwayKillsTheProcess() async throws {
        try await withServer { server in
            let client = try SPDYTestClient(port: server.port)
            _ = try await client.upgrade("/exec/ns/p/app?command=/bin/sleep&command=30&output=1", protocols: ["v4.channel.k8s.io"])
            _ = try await client.open(["streamtype": "error"])
            _ = try await client.open(["streamtype": "stdout"])
            try await Task.sleep(for: .milliseconds(500))
            client.raw.shutdown()
            let deadline = Date().addingTimeInterval(5)
            while backend.terminated.withLockedValue({ $0.isEmpty }), Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
            #expect(!backend.terminated.withLockedValue { $0.isEmpty })
        }
    }

    @Test func attachFollowsTheLogFromNowSplitByStreamAndRefusesStdin() async throws {
        let log = NSTemporaryDirectory() + "streaming-attach-\(UUID().uuidString).log"
        try "2026-01-01T00:00:00.000000000Z stdout F old line\n".write(toFile: log, atomically: false, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: log) }
        let server = try StreamingTestServer(backend: StreamingTestBackend(logFile: log))
        defer { server.shutdown() }
        let client = try SPDYTestClient(port: server.port)
        defer { client.raw.shutdown() }
        _ = try await client.upgrade("/attach/ns/p/app?output=1&error=1", protocols: ["v4.channel.k8s.io"])
        _ = try await client.open(["streamtype": "error"])
        let stdout = try await client.open(["streamtype": "stdout"])
        let stderr = try await client.open(["streamtype": "stderr"])
        try await Task.sleep(for: .milliseconds(400))
        let handle = FileHandle(forWritingAtPath: log)!
        handle.seekToEndOfFile()
        handle.write("2026-01-01T00:00:01.000000000Z stdout F new out\n2026-01-01T00:00:01.000000000Z stderr F new err\n".data(using: .utf8)!)
        try handle.close()
        try await client.pump("attached output") { client.text(stdout) == "new out\n" && client.text(stderr) == "new err\n" }

        let refused = try SPDYTestClient(port: server.port)
        defer { refused.raw.shutdown() }
        _ = try await refused.upgrade("/attach/ns/p/app?input=1&output=1", protocols: ["v4.channel.k8s.io"])
        let error = try await refused.open(["streamtype": "error"])
        _ = try await refused.open(["streamtype": "stdin"])
        _ = try await refused.open(["streamtype": "stdout"])
        try await refused.pump("refusal") { refused.finished.contains(error) }
        #expect(refused.text(error).contains("with stdin is not supported"))
    }
}
