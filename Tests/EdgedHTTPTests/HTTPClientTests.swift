@testable import EdgedHTTP
import EdgedTestSupport
import Foundation
import NIOCore
import Testing

/// Expects `body` to throw an HTTPError with `code` whose message contains every string of `containing`.
func expectHTTPError<T>(_ code: HTTPError.Code, containing: [String] = [], sourceLocation: SourceLocation = #_sourceLocation,
                        _ body: () async throws -> T) async {
    do {
        _ = try await body()
        Issue.record("expected HTTPError \(code), got success", sourceLocation: sourceLocation)
    } catch let error as HTTPError {
        #expect(error.code == code, "\(error.message)", sourceLocation: sourceLocation)
        for s in containing { #expect(error.message.contains(s), "\(error.message) lacks \(s)", sourceLocation: sourceLocation) }
    } catch {
        Issue.record("expected HTTPError \(code), got \(error)", sourceLocation: sourceLocation)
    }
}

@Suite struct HTTPClientTests {
    @Test func getAndPostWithBodiesReuseOneConnection() async throws {
        let server = try TestHTTPServer()
        defer { server.stop() }
        let client = HTTPClient(configuration: .init(userAgent: "edged-test"))
        let hello = try await client.execute(HTTPRequest(url: "\(server.url)/hello"), timeout: .seconds(5))
        #expect(hello.status == 200)
        #expect(hello.body == Array("hello".utf8))
        #expect(hello.head.header("CONTENT-length") == "5")

        let payload = (0..<100_000).map { UInt8($0 % 256) }
        let echo = try await client.execute(HTTPRequest(method: "POST", url: "\(server.url)/echo?x=1",
                                                        headers: [("Content-Type", "application/octet-stream")], body: payload),
                                            timeout: .seconds(5))
        #expect(echo.status == 200)
        #expect(echo.body == payload)
        #expect(echo.head.header("x-method") == "POST")
        #expect(echo.head.header("x-host") == "127.0.0.1:\(server.port)")

        // HEAD (content-length but no body) and 204 keep the connection usable.
        let head = try await client.execute(HTTPRequest(method: "HEAD", url: "\(server.url)/hello"), timeout: .seconds(5))
        #expect(head.status == 200 && head.body.isEmpty)
        let empty = try await client.execute(HTTPRequest(method: "DELETE", url: "\(server.url)/nocontent"), timeout: .seconds(5))
        #expect(empty.status == 204 && empty.body.isEmpty)
        let missing = try await client.execute(HTTPRequest(url: "\(server.url)/nothing"), timeout: .seconds(5))
        #expect(missing.status == 404)
        #expect(server.accepted == 1)
        await client.shutdown()
        await expectHTTPError(.closed, containing: ["shut down"]) {
            try await client.execute(HTTPRequest(url: "\(server.url)/hello"), timeout: .seconds(5))
        }
    }

    @Test func chunkedResponseAndConnectionClose() async throws {
        let server = try TestHTTPServer()
        defer { server.stop() }
        let client = HTTPClient()
        defer { Task { await client.shutdown() } }
        let chunked = try await client.execute(HTTPRequest(url: "\(server.url)/chunked"), timeout: .seconds(5))
        #expect(String(decoding: chunked.body, as: UTF8.self) == "chunk0chunk1chunk2chunk3chunk4")
        #expect(chunked.head.header("transfer-encoding") == "chunked")
        let bye = try await client.execute(HTTPRequest(url: "\(server.url)/close"), timeout: .seconds(5))
        #expect(bye.body == Array("bye".utf8))
        _ = try await client.execute(HTTPRequest(url: "\(server.url)/hello"), timeout: .seconds(5))
        #expect(server.accepted == 2)
    }

    @Test func concurrentRequestsGetTheirOwnConnectionsAndThePoolKeepsSome() async throws {
        let server = try TestHTTPServer()
        defer { server.stop() }
        let client = HTTPClient(configuration: .init(maxIdleConnectionsPerHost: 2))
        try await withThrowingTaskGroup(of: [UInt8].self) { group in
            for i in 0..<6 {
                group.addTask {
                    try await client.execute(HTTPRequest(method: "PUT", url: "\(server.url)/echo", body: Array("n\(i)".utf8)), timeout: .seconds(5)).body
                }
            }
            var bodies = Set<String>()
            for try await b in group { bodies.insert(String(decoding: b, as: UTF8.self)) }
            #expect(bodies == Set((0..<6).map { "n\($0)" }))
        }
        let before = server.accepted
        #expect(before <= 6)
        _ = try await client.execute(HTTPRequest(url: "\(server.url)/hello"), timeout: .seconds(5))
        #expect(server.accepted == before)
        await client.shutdown()
        try await waitFor { server.open == 0 }
    }

    @Test func aConnectionTheServerClosedWhileIdleIsRetriedOnceForIdempotentRequests() async throws {
        let server = try TestHTTPServer()
        defer { server.stop() }
        let client = HTTPClient()
        defer { Task { await client.shutdown() } }
        #expect(try await client.execute(HTTPRequest(url: "\(server.url)/once"), timeout: .seconds(5)).body == Array("first".utf8))
        // The pooled connection is closed by the server on the next request: GET retries on a fresh one.
        #expect(try await client.execute(HTTPRequest(url: "\(server.url)/once"), timeout: .seconds(5)).body == Array("first".utf8))
        #expect(server.accepted == 2)
        // POST is not retried.
        await expectHTTPError(.closed, containing: ["127.0.0.1:\(server.port)", "without answering"]) {
            try await client.execute(HTTPRequest(method: "POST", url: "\(server.url)/once", body: []), timeout: .seconds(5))
        }
    }

    @Test func closedPortFailsFast() async throws {
        let port = try TestHTTPServer.closedPort()
        let client = HTTPClient()
        defer { Task { await client.shutdown() } }
        let start = ContinuousClock.now
        await expectHTTPError(.connect, containing: ["127.0.0.1:\(port)", "refused"]) {
            try await client.execute(HTTPRequest(url: "http://127.0.0.1:\(port)/"), timeout: .seconds(30))
        }
        #expect(ContinuousClock.now - start < .seconds(1))
        await expectHTTPError(.connect, containing: ["localhost:\(port)"]) {
            try await client.stream(HTTPRequest(url: "http://localhost:\(port)/")) { _, _ in 0 }
        }
        #expect(ContinuousClock.now - start < .seconds(2))
    }

    @Test func timeoutOnAServerThatNeverAnswers() async throws {
        let server = try TestHTTPServer()
        defer { server.stop() }
        let client = HTTPClient()
        defer { Task { await client.shutdown() } }
        let start = ContinuousClock.now
        await expectHTTPError(.timeout, containing: ["127.0.0.1:\(server.port)", "/never", "300 ms"]) {
            try await client.execute(HTTPRequest(url: "\(server.url)/never"), timeout: .milliseconds(300))
        }
        let elapsed = ContinuousClock.now - start
        #expect(elapsed >= .milliseconds(290) && elapsed < .seconds(3))
        try await waitFor { server.open == 0 }
    }

    @Test func idleTimeoutFailsAStalledStream() async throws {
        let server = try TestHTTPServer()
        defer { server.stop() }
        let client = HTTPClient()
        defer { Task { await client.shutdown() } }
        var got: [UInt8] = []
        await expectHTTPError(.timeout, containing: ["no data from 127.0.0.1:\(server.port)", "200 ms"]) {
            try await client.stream(HTTPRequest(url: "\(server.url)/stall"), idleTimeout: .milliseconds(200)) { head, body in
                #expect(head.status == 200)
                for try await chunk in body { got += Array(chunk.readableBytesView) }
                return 0
            }
        }
        #expect(got == Array("partial".utf8))
        // Waiting for the head counts too.
        await expectHTTPError(.timeout, containing: ["/never"]) {
            try await client.stream(HTTPRequest(url: "\(server.url)/never"), idleTimeout: .milliseconds(200)) { _, _ in 0 }
        }
    }

    @Test func cancellingTheTaskClosesTheConnection() async throws {
        let server = try TestHTTPServer()
        defer { server.stop() }
        let client = HTTPClient()
        defer { Task { await client.shutdown() } }
        let task = Task { try await client.execute(HTTPRequest(url: "\(server.url)/never"), timeout: .seconds(60)) }
        try await waitFor { server.open == 1 }
        let start = ContinuousClock.now
        task.cancel()
        await expectHTTPError(.cancelled, containing: ["/never"]) { try await task.value }
        #expect(ContinuousClock.now - start < .seconds(1))
        try await waitFor { server.open == 0 }
    }

    @Test func streamsFiftyMegabytesWithBackPressure() async throws {
        let server = try TestHTTPServer()
        defer { server.stop() }
        let client = HTTPClient()
        defer { Task { await client.shutdown() } }
        let total = 50 << 20
        let received = try await client.stream(HTTPRequest(url: "\(server.url)/big?bytes=\(total)")) { head, body in
            #expect(head.header("content-length") == String(total))
            var count = 0
            var ok = true
            var paused = false
            for try await chunk in body {
                let start = count % 251
                if chunk.readableBytes > 1 << 20 || Array(chunk.readableBytesView) != Array(bigPattern[start..<(start + chunk.readableBytes)]) {
                    ok = false
                }
                count += chunk.readableBytes
                if !paused && count > 1 << 20 {
                    // The caller stops reading: the server must stall, not push the rest into client memory.
                    paused = true
                    try await Task.sleep(for: .milliseconds(500))
                    #expect(server.bigBytesWritten < 24 << 20, "server wrote \(server.bigBytesWritten) bytes while the client did not read")
                }
            }
            #expect(ok)
            return count
        }
        #expect(received == total)
        // Read to the end: the connection went back to the pool.
        _ = try await client.execute(HTTPRequest(url: "\(server.url)/hello"), timeout: .seconds(5))
        #expect(server.accepted == 1)
    }

    @Test func aStreamLeftEarlyClosesItsConnection() async throws {
        let server = try TestHTTPServer()
        defer { server.stop() }
        let client = HTTPClient()
        defer { Task { await client.shutdown() } }
        let first = try await client.stream(HTTPRequest(url: "\(server.url)/big?bytes=\(8 << 20)")) { _, body in
            for try await chunk in body { return chunk.readableBytes }
            return 0
        }
        #expect(first > 0)
        try await waitFor { server.open == 0 }
        _ = try await client.execute(HTTPRequest(url: "\(server.url)/hello"), timeout: .seconds(5))
        #expect(server.accepted == 2)
    }

    @Test func bodyTooLarge() async throws {
        let server = try TestHTTPServer()
        defer { server.stop() }
        let client = HTTPClient()
        defer { Task { await client.shutdown() } }
        await expectHTTPError(.bodyTooLarge, containing: ["/big", "1000"]) {
            try await client.execute(HTTPRequest(url: "\(server.url)/big?bytes=100000"), timeout: .seconds(5), maxBodyBytes: 1000)
        }
        // Without a content-length the limit applies while reading.
        await expectHTTPError(.bodyTooLarge, containing: ["/chunked", "10 bytes"]) {
            try await client.execute(HTTPRequest(url: "\(server.url)/chunked"), timeout: .seconds(5), maxBodyBytes: 10)
        }
    }

    @Test func invalidURLs() async throws {
        let client = HTTPClient()
        defer { Task { await client.shutdown() } }
        for url in ["ftp://x/", "http://", "http://host:99999/", "http://user@host/", "localhost:80/", "http://[::1/"] {
            await expectHTTPError(.invalidURL, containing: [url]) {
                try await client.execute(HTTPRequest(url: url), timeout: .seconds(1))
            }
        }
        let v6 = try HTTPURL("https://[::1]:6443/api?watch=1#frag")
        #expect(v6.host == "::1" && v6.port == 6443 && v6.target == "/api?watch=1" && v6.tls)
        #expect(v6.hostHeader == "[::1]:6443")
        let plain = try HTTPURL("http://Registry.Local?x")
        #expect(plain.host == "registry.local" && plain.port == 80 && plain.target == "/?x" && plain.hostHeader == "registry.local")
    }
}

/// Polls `condition` every 20 ms for up to 5 s.
func waitFor(_ condition: () -> Bool, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    let end = ContinuousClock.now + .seconds(5)
    while !condition() {
        if ContinuousClock.now > end {
            Issue.record("condition not met within 5 s", sourceLocation: sourceLocation)
            return
        }
        try await Task.sleep(for: .milliseconds(20))
    }
}
