// HubServer over real loopback sockets: keep-alive and pipelining, streamed chunks, back-pressure, the 413 limit,
// HEAD, TLS (curl --cacert), upgrade splicing to a real upstream, client disconnects and graceful shutdown.

import EdgedCore
import EdgedHTTP
@testable import EdgedHub
import EdgedTestSupport
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import Testing

/// Serialized: the back-pressure test reads how far a handler gets, which the big bodies of the others would slow.
@Suite(.serialized) struct HubServerTests {
    @Test func keepAliveServesTwoRequestsOnOneConnection() async throws {
        let seen = Mutex<[String]>([])
        let handler = TestHandler { request, writer in
            seen.withLock { $0.append("\(request.remoteAddress ?? "?") \(request.method) \(request.target)") }
            try? await writer.respond(200, "hello \(request.target)")
        }
        try await withServer(handler) { server, port in
            let client = try RawClient(port: port)
            defer { client.close() }
            try await client.send("GET /one HTTP/1.1\r\nHost: hub\r\n\r\n")
            let first = try await client.readResponse()
            try await client.send("GET /two?x=1 HTTP/1.1\r\nHost: hub\r\n\r\n")
            let second = try await client.readResponse()
            #expect(first.status == 200 && first.text == "hello /one")
            #expect(second.status == 200 && second.text == "hello /two?x=1")
            #expect(first.header("connection") == nil)
            let remotes = Set(seen.withLock { $0 }.map { $0.split(separator: " ")[0] })
            #expect(remotes.count == 1, "both requests came over one connection: \(seen.withLock { $0 })")
        }
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        let handler = TestHandler { request, writer in
            // The first request is the slowest: answers must still come back in request order.
            let delay = request.target == "/a" ? 300 : request.target == "/b" ? 100 : 0
            try? await Task.sleep(for: .milliseconds(delay))
            try? await writer.respond(200, "answer \(request.target) \(String(decoding: request.body, as: UTF8.self))")
        }
        try await withServer(handler) { _, port in
            let client = try RawClient(port: port)
            defer { client.close() }
            try await client.send("GET /a HTTP/1.1\r\nHost: hub\r\n\r\n"
                                  + "POST /b HTTP/1.1\r\nHost: hub\r\nContent-Length: 4\r\n\r\nbody"
                                  + "POST /c HTTP/1.1\r\nHost: hub\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            var answers: [String] = []
            for _ in 0..<3 { answers.append(try await client.readResponse().text) }
            #expect(answers == ["answer /a ", "answer /b body", "answer /c abcde"])
        }
    }

    @Test func slowHandlerStreamsChunksAsTheyAreWritten() async throws {
        let release = Gate()
        let finished = Mutex(false)
        let handler = TestHandler { _, writer in
            do {
                try await writer.writeHead(status: 200, headers: [("Content-Type", "application/json")])
                try await writer.writeBody(Array("{\"type\":\"ADDED\"}\n".utf8))
                await release.wait()
                try await writer.writeBody(Array("{\"type\":\"MODIFIED\"}\n".utf8))
                try await writer.finish()
            } catch {}
            finished.withLock { $0 = true }
        }
        try await withServer(handler) { _, port in
            let client = try RawClient(port: port)
            defer { client.close() }
            try await client.send("GET /api/v1/pods?watch=true HTTP/1.1\r\nHost: hub\r\n\r\n")
            let head = try await client.readHead()
            #expect(head.status == 200)
            #expect(head.header("transfer-encoding") == "chunked")
            #expect(head.header("content-length") == nil)
            let first = try await client.readChunk()
            #expect(String(decoding: first ?? [], as: UTF8.self) == "{\"type\":\"ADDED\"}\n")
            #expect(finished.withLock { $0 } == false, "the first chunk arrived while the handler was still running")
            release.open()
            let second = try await client.readChunk()
            #expect(String(decoding: second ?? [], as: UTF8.self) == "{\"type\":\"MODIFIED\"}\n")
            #expect(try await client.readChunk() == nil)
            try await eventually { finished.withLock { $0 } }
        }
    }

    @Test func slowReaderHoldsBackTheHandlerInsteadOfGrowingMemory() async throws {
        let total = 64 << 20
        let chunk = [UInt8](repeating: 0x61, count: 64 << 10)
        let written = Atomic<Int>(0)
        let handler = TestHandler { _, writer in
            do {
                try await writer.writeHead(status: 200, headers: [("Content-Length", String(total))])
                while written.load(ordering: .relaxed) < total {
                    try await writer.writeBody(chunk)
                    written.add(chunk.count, ordering: .relaxed)
                }
                try await writer.finish()
            } catch {}
        }
        try await withServer(handler) { _, port in
            let client = try RawClient(port: port, receiveBuffer: 64 << 10)
            defer { client.close() }
            let before = residentBytes()
            try await client.send("GET /api/v1/pods HTTP/1.1\r\nHost: hub\r\n\r\n")
            let head = try await client.readHead()
            #expect(head.header("content-length") == String(total))
            // The client does not read for a while: the handler must stall on full socket buffers.
            try await Task.sleep(for: .seconds(1))
            let stalledAt = written.load(ordering: .relaxed)
            try await Task.sleep(for: .milliseconds(500))
            let stalledLater = written.load(ordering: .relaxed)
            let grown = residentBytes() - before
            print("back-pressure: handler wrote \(stalledAt >> 10) KiB before stalling; RSS grew \(grown >> 10) KiB")
            #expect(stalledAt < 16 << 20, "the handler wrote \(stalledAt) bytes to a client that reads nothing")
            #expect(stalledLater == stalledAt, "the handler kept writing while the client read nothing")
            // What the hub holds for this client is at most what the handler wrote minus what the client read
            // (nothing), so the stall above bounds it; the RSS figure is printed only: other suites running in the
            // same process (big objects, store benchmarks) move it by tens of MiB.
            let received = try await client.drain(count: total)
            #expect(received == total)
            try await eventually { written.load(ordering: .relaxed) == total }
        }
    }

    @Test func bodyOverTenMiBIsRefusedWith413BeforeTheHandler() async throws {
        let called = Mutex(0)
        let handler = TestHandler { _, writer in
            called.withLock { $0 += 1 }
            try? await writer.respond(200, "ok")
        }
        let dir = try TempDir("hub-server")
        defer { dir.remove() }
        let file = dir.sub("big")
        try Data(count: 11 << 20).write(to: URL(fileURLWithPath: file))
        try await withServer(handler) { _, port in
            // curl sends Content-Length (and Expect: 100-continue): refused from the head alone.
            let out = dir.sub("answer")
            let r = try await runOffPool(["curl", "-sS", "-o", out, "-w", "%{http_code}", "--data-binary", "@\(file)",
                                    "-H", "Content-Type: application/json", "http://127.0.0.1:\(port)/api/v1/namespaces/default/configmaps"],
                                   check: false)
            #expect(r.stdout == "413", "curl: \(r.stdout) \(r.stderr)")
            let status = try JSONValue.parse(Array(try Data(contentsOf: URL(fileURLWithPath: out))))
            #expect(status["kind"] == .string("Status"))
            #expect(status["apiVersion"] == .string("v1"))
            #expect(status["status"] == .string("Failure"))
            #expect(status["reason"] == .string("RequestEntityTooLarge"))
            #expect(status["code"] == .number("413"))
            #expect(status["message"]?.stringValue?.contains("10485760") == true)

            // Chunked, without a length: refused once the body passes the limit.
            let client = try RawClient(port: port)
            defer { client.close() }
            try await client.send("POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: hub\r\nTransfer-Encoding: chunked\r\n\r\n")
            let piece = [UInt8](repeating: 0x20, count: 1 << 20)
            // The server answers once the limit is passed, and reads (drops) the rest so that the client sees it.
            for _ in 0..<11 {
                try await client.send(Array("100000\r\n".utf8) + piece + Array("\r\n".utf8))
            }
            try await client.send("0\r\n\r\n")
            let response = try await client.readResponse()
            #expect(response.status == 413)
            #expect(response.header("connection") == "close")
            #expect(called.withLock { $0 } == 0)
        }
    }

    @Test func bodyJustUnderTheLimitReachesTheHandler() async throws {
        let handler = TestHandler { request, writer in
            try? await writer.respond(201, "got \(request.body.count)")
        }
        try await withServer(handler) { _, port in
            let client = try RawClient(port: port)
            defer { client.close() }
            let size = HubServer.maxRequestBytes
            try await client.send("PUT /x HTTP/1.1\r\nHost: hub\r\nContent-Length: \(size)\r\n\r\n")
            try await client.send([UInt8](repeating: 0x7b, count: size))
            let response = try await client.readResponse()
            #expect(response.status == 201 && response.text == "got \(size)")
        }
    }

    @Test func headAnswersWithoutBodyAndKeepsTheConnection() async throws {
        let handler = TestHandler { _, writer in
            try? await writer.respond(200, "hello")
        }
        try await withServer(handler) { _, port in
            let client = try RawClient(port: port)
            defer { client.close() }
            try await client.send("HEAD /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
            let head = try await client.readHead()
            #expect(head.status == 200 && head.header("content-length") == "5")
            try await client.send("GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
            let get = try await client.readResponse()
            #expect(get.text == "hello", "no body bytes were sent for the HEAD")
        }
    }

    @Test func handlerThatWritesNothingGets500() async throws {
        let handler = TestHandler { _, _ in }
        try await withServer(handler) { _, port in
            let client = try RawClient(port: port)
            defer { client.close() }
            try await client.send("GET /nothing HTTP/1.1\r\nHost: hub\r\n\r\n")
            let response = try await client.readResponse()
            #expect(response.status == 500)
            let status = try JSONValue.parse(response.body)
            #expect(status["reason"] == .string("InternalError"))
        }
    }

    @Test func writerMisuseIsReported() async throws {
        let errors = Mutex<[HubServerError.Code]>([])
        let handler = TestHandler { _, writer in
            do { try await writer.writeBody([1]) } catch { errors.withLock { $0.append((error as? HubServerError)?.code ?? .bind) } }
            try? await writer.writeHead(status: 200, headers: [("Content-Length", "3")])
            do { try await writer.writeBody([1, 2, 3, 4]) } catch { errors.withLock { $0.append((error as? HubServerError)?.code ?? .bind) } }
        }
        try await withServer(handler) { _, port in
            let client = try RawClient(port: port)
            defer { client.close() }
            try await client.send("GET /x HTTP/1.1\r\nHost: hub\r\n\r\n")
            let head = try await client.readHead()
            #expect(head.status == 200)
            // The response is cut short: the server closes the connection.
            #expect(try await client.readToEnd().isEmpty)
            #expect(errors.withLock { $0 } == [.misuse, .misuse])
        }
    }

    @Test func clientDisconnectEndsTheHandler() async throws {
        let outcome = Mutex<(cancelled: Bool, clientClosed: Bool, writeError: HubServerError.Code?)?>(nil)
        let handler = TestHandler { _, writer in
            try? await writer.writeHead(status: 200, headers: [("Content-Type", "application/json")])
            // A watch with nothing to say: only cancellation ends the wait.
            try? await Task.sleep(for: .seconds(3600))
            let cancelled = Task.isCancelled
            var code: HubServerError.Code?
            do { try await writer.writeBody(Array("late\n".utf8)) } catch {
                code = (error as? HubServerError)?.code ?? (error is CancellationError ? .clientClosed : nil)
            }
            outcome.withLock { $0 = (cancelled, writer.clientClosed, code) }
        }
        try await withServer(handler) { _, port in
            let client = try RawClient(port: port)
            try await client.send("GET /api/v1/pods?watch=1 HTTP/1.1\r\nHost: hub\r\n\r\n")
            _ = try await client.readHead()
            client.close()
            try await eventually { outcome.withLock { $0 } != nil }
            let result = try #require(outcome.withLock { $0 })
            #expect(result.cancelled)
            #expect(result.clientClosed)
            #expect(result.writeError == .clientClosed)
        }
    }

    @Test func tlsListenerServesATestPKICertificate() async throws {
        let pki = try TestPKI.makeCA()
        let serving = try pki.issue(serverFor: "edge-hub", ips: ["127.0.0.1"])
        let dir = try TempDir("hub-server-tls")
        defer { dir.remove() }
        try pki.caPEM.write(toFile: dir.sub("ca.pem"), atomically: true, encoding: .utf8)
        let handler = TestHandler { request, writer in
            try? await writer.respond(200, "tls=\(request.isTLS) \(request.target)")
        }
        let tls = HubServerTLS(certificateChainPEM: serving.certPEM, privateKeyPEM: serving.keyPEM)
        try await withServer(handler, tls: tls) { _, port in
            let ok = try await runOffPool(["curl", "-sS", "--cacert", dir.sub("ca.pem"), "https://127.0.0.1:\(port)/api?x=1",
                                     "https://127.0.0.1:\(port)/version"], check: false)
            #expect(ok.status == 0, "curl: \(ok.stderr)")
            #expect(ok.stdout == "tls=true /api?x=1tls=true /version")
            // Without the CA the certificate is not trusted.
            let untrusted = try await runOffPool(["curl", "-sS", "https://127.0.0.1:\(port)/api"], check: false)
            #expect(untrusted.status == 60, "curl: \(untrusted.status) \(untrusted.stderr)")
            // Chunked over TLS, to the client that knows the CA.
            let streamed = try await runOffPool(["curl", "-sS", "--cacert", dir.sub("ca.pem"), "-H", "X-Stream: 1",
                                           "https://127.0.0.1:\(port)/stream"], check: false)
            #expect(streamed.stdout == "tls=true /stream")
        }
    }

    @Test func tlsListenerWithABadKeyFailsToStart() async throws {
        let pki = try TestPKI.makeCA()
        let serving = try pki.issue()
        let server = HubServer(name: "proxy-https", host: "127.0.0.1", port: 0,
                               tls: HubServerTLS(certificateChainPEM: serving.certPEM, privateKeyPEM: "not a key"),
                               handler: TestHandler { _, _ in }, logger: Logger(label: "test"))
        do {
            try await server.run()
            Issue.record("run() served with an unloadable key")
        } catch {
            let e = try #require(error as? HubServerError)
            #expect(e.code == .tls)
            #expect(e.message.contains("proxy-https") && e.message.contains("private key"))
        }
    }

    @Test func portInUseIsNamedInTheError() async throws {
        try await withServer(TestHandler { _, _ in }) { _, port in
            let second = HubServer(name: "proxy", host: "127.0.0.1", port: port, tls: nil,
                                   handler: TestHandler { _, _ in }, logger: Logger(label: "test"))
            do {
                try await second.run()
                Issue.record("a second listener bound the same port")
            } catch {
                let e = try #require(error as? HubServerError)
                #expect(e.code == .bind)
                #expect(e.message.contains("127.0.0.1:\(port)"), "\(e.message)")
            }
        }
    }

    @Test func upgradeIsSplicedToTheUpstream() async throws {
        let upstream = try EchoUpstream()
        defer { upstream.stop() }
        let handler = TestHandler(upstream: HubUpstream(host: "127.0.0.1", port: upstream.port,
                                                        extraHeaders: [("Authorization", "Bearer node-token")])) { _, writer in
            try? await writer.respond(404, "not an upgrade")
        }
        try await withServer(handler) { _, port in
            let client = try RawClient(port: port)
            defer { client.close() }
            try await client.send("POST /api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true HTTP/1.1\r\n"
                                  + "Host: 127.0.0.1:\(port)\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                                  + "X-Stream-Protocol-Version: v4.channel.k8s.io\r\nAuthorization: Bearer caller\r\n\r\n")
            let head = try await client.readHead()
            #expect(head.status == 101)
            #expect(head.header("upgrade") == "SPDY/3.1")
            try await client.send("ping")
            #expect(String(decoding: try await client.readExactly(4), as: UTF8.self) == "ping")
            let big = (0..<(256 << 10)).map { UInt8(truncatingIfNeeded: $0 * 7) }
            try await client.send(big)
            #expect(try await client.readExactly(big.count) == big)
            // Half-close: the upstream sees the end of input, answers, and closes; the client gets both.
            client.shutdownWrite()
            #expect(String(decoding: try await client.readToEnd(), as: UTF8.self) == "bye")
            let request = try #require(upstream.heads.withLock { $0.first })
            #expect(request.hasPrefix("POST /api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true HTTP/1.1\r\n"))
            #expect(request.contains("Host: 127.0.0.1:\(upstream.port)\r\n"))
            #expect(request.contains("Authorization: Bearer node-token\r\n"))
            #expect(!request.contains("Bearer caller"))
            #expect(request.contains("X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"))
        }
    }

    @Test func upgradeIsSplicedOverTLSThroughATLSListener() async throws {
        // client → hub (plain) → TLS, pinned CA → hub (TLS listener) → echo upstream: TLS on both sides of a splice.
        let pki = try TestPKI.makeCA()
        let serving = try pki.issue(serverFor: "apiserver", ips: ["127.0.0.1"])
        let echo = try EchoUpstream()
        defer { echo.stop() }
        let inner = TestHandler(upstream: HubUpstream(host: "127.0.0.1", port: echo.port)) { _, _ in }
        try await withServer(inner, tls: HubServerTLS(certificateChainPEM: serving.certPEM, privateKeyPEM: serving.keyPEM)) { _, tlsPort in
            let trusted = TLSOptions(trust: .certificates(pem: pki.caPEM))
            let outer = TestHandler(upstream: HubUpstream(host: "127.0.0.1", port: tlsPort, tls: trusted)) { _, _ in }
            try await withServer(outer) { _, port in
                let client = try RawClient(port: port)
                defer { client.close() }
                try await client.send("GET /api/v1/namespaces/default/pods/web/attach HTTP/1.1\r\nHost: hub\r\n"
                                      + "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n")
                #expect(try await client.readHead().status == 101)
                try await client.send("through two splices")
                #expect(String(decoding: try await client.readExactly(19), as: UTF8.self) == "through two splices")
                client.shutdownWrite()
                #expect(String(decoding: try await client.readToEnd(), as: UTF8.self) == "bye")
            }
            // A CA that did not sign the listener's certificate: the handshake fails and the client gets a 502.
            let otherCA = try TestPKI.makeCA(commonName: "someone-else")
            let wrong = TestHandler(upstream: HubUpstream(host: "127.0.0.1", port: tlsPort,
                                                          tls: TLSOptions(trust: .certificates(pem: otherCA.caPEM)))) { _, _ in }
            try await withServer(wrong) { _, port in
                let client = try RawClient(port: port)
                defer { client.close() }
                try await client.send("GET /api/v1/namespaces/default/pods/web/attach HTTP/1.1\r\nHost: hub\r\n"
                                      + "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n")
                let response = try await client.readResponse()
                #expect(response.status == 502)
                let message = try JSONValue.parse(response.body)["message"]?.stringValue ?? ""
                #expect(message.contains("TLS") && message.contains("127.0.0.1:\(tlsPort)"), "\(message)")
            }
        }
    }

    @Test func upgradeToAnUpstreamNamedByAnIPServerNameChecksItsIPSANs() async throws {
        // The upstream's certificate lists only 203.0.113.7 (its address behind NAT); the hub dials 127.0.0.1.
        let pki = try TestPKI.makeCA()
        let serving = try pki.issue(serverFor: "apiserver", ips: ["203.0.113.7"], dns: [])
        let echo = try EchoUpstream()
        defer { echo.stop() }
        let inner = TestHandler(upstream: HubUpstream(host: "127.0.0.1", port: echo.port)) { _, _ in }
        let request = "GET /api/v1/namespaces/default/pods/web/attach HTTP/1.1\r\nHost: hub\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
        try await withServer(inner, tls: HubServerTLS(certificateChainPEM: serving.certPEM, privateKeyPEM: serving.keyPEM)) { _, tlsPort in
            let named = TLSOptions(trust: .certificates(pem: pki.caPEM), serverName: "203.0.113.7")
            try await withServer(TestHandler(upstream: HubUpstream(host: "127.0.0.1", port: tlsPort, tls: named)) { _, _ in }) { _, port in
                let client = try RawClient(port: port)
                defer { client.close() }
                try await client.send(request)
                #expect(try await client.readHead().status == 101)
                try await client.send("nat")
                #expect(String(decoding: try await client.readExactly(3), as: UTF8.self) == "nat")
            }
            // Another IP address: a 502 that names the address expected and the one the certificate has.
            let other = TLSOptions(trust: .certificates(pem: pki.caPEM), serverName: "203.0.113.8")
            try await withServer(TestHandler(upstream: HubUpstream(host: "127.0.0.1", port: tlsPort, tls: other)) { _, _ in }) { _, port in
                let client = try RawClient(port: port)
                defer { client.close() }
                try await client.send(request)
                let response = try await client.readResponse()
                #expect(response.status == 502)
                let message = try JSONValue.parse(response.body)["message"]?.stringValue ?? ""
                #expect(message.contains("127.0.0.1:\(tlsPort)") && message.contains("server name 203.0.113.8")
                        && message.contains("IP SANs are [203.0.113.7]"), "\(message)")
            }
            // No server name: the dialled 127.0.0.1 is checked, and the certificate does not list it.
            let plain = TLSOptions(trust: .certificates(pem: pki.caPEM))
            try await withServer(TestHandler(upstream: HubUpstream(host: "127.0.0.1", port: tlsPort, tls: plain)) { _, _ in }) { _, port in
                let client = try RawClient(port: port)
                defer { client.close() }
                try await client.send(request)
                #expect(try await client.readResponse().status == 502)
            }
        }
    }

    @Test func upgradeWithoutUpstreamGets503AndUnreachableUpstreamGets502() async throws {
        let request = "GET /api/v1/namespaces/default/pods/web/portforward HTTP/1.1\r\nHost: hub\r\n"
            + "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        try await withServer(TestHandler { _, _ in }) { _, port in
            let client = try RawClient(port: port)
            defer { client.close() }
            try await client.send(request)
            let response = try await client.readResponse()
            #expect(response.status == 503)
            let status = try JSONValue.parse(response.body)
            #expect(status["reason"] == .string("ServiceUnavailable"))
            #expect(status["message"]?.stringValue?.contains("portforward") == true)
        }
        // A port nothing listens on.
        let closedPort = try RawClient.unusedPort()
        try await withServer(TestHandler(upstream: HubUpstream(host: "127.0.0.1", port: closedPort)) { _, _ in }) { _, port in
            let client = try RawClient(port: port)
            defer { client.close() }
            try await client.send(request)
            let response = try await client.readResponse()
            #expect(response.status == 502)
            let message = try JSONValue.parse(response.body)["message"]?.stringValue ?? ""
            #expect(message.contains("127.0.0.1:\(closedPort)"), "\(message)")
        }
    }

    @Test func gracefulShutdownFinishesRequestsInFlightAndCancelsWatches() async throws {
        let slowDone = Mutex(false)
        let watchCancelled = Mutex(false)
        let handler = TestHandler { request, writer in
            if request.target == "/slow" {
                try? await Task.sleep(for: .milliseconds(400))
                try? await writer.respond(200, "slow done")
                slowDone.withLock { $0 = true }
            } else if request.target == "/watch" {
                try? await writer.writeHead(status: 200, headers: [])
                try? await Task.sleep(for: .seconds(3600))
                watchCancelled.withLock { $0 = Task.isCancelled }
            } else {
                try? await writer.respond(200, "quick")
            }
        }
        let server = HubServer(name: "proxy", host: "127.0.0.1", port: 0, tls: nil, handler: handler,
                               logger: Logger(label: "test"), shutdownGrace: .seconds(1))
        let running = Task { try await server.run() }
        let port = try await waitForPort(server)
        let idle = try RawClient(port: port)
        defer { idle.close() }
        try await idle.send("GET /quick HTTP/1.1\r\nHost: hub\r\n\r\n")
        _ = try await idle.readResponse()
        let slow = try RawClient(port: port)
        defer { slow.close() }
        let watch = try RawClient(port: port)
        defer { watch.close() }
        try await watch.send("GET /watch HTTP/1.1\r\nHost: hub\r\n\r\n")
        _ = try await watch.readHead()
        try await slow.send("GET /slow HTTP/1.1\r\nHost: hub\r\n\r\n")
        try await Task.sleep(for: .milliseconds(100))
        let started = ContinuousClock.now
        server.shutdown()
        // The idle keep-alive connection is closed at once; the slow request still gets its answer, told to close.
        #expect(try await idle.readToEnd().isEmpty)
        let answer = try await slow.readResponse()
        #expect(answer.text == "slow done" && answer.header("connection") == "close")
        try await running.value
        let took = ContinuousClock.now - started
        #expect(slowDone.withLock { $0 } && watchCancelled.withLock { $0 })
        #expect(took < .seconds(3), "shutdown took \(took)")
        #expect(throws: (any Error).self) { try RawClient(port: port) }
    }
}

extension HubServerTests {
    @Test func serviceGroupGracefulShutdownStopsTheListener() async throws {
        let server = HubServer(name: "health", host: "127.0.0.1", port: 0, tls: nil,
                               handler: TestHandler { _, writer in try? await writer.respond(200, "ok") },
                               logger: Logger(label: "test"), shutdownGrace: .seconds(1))
        let group = ServiceGroup(services: [server], logger: Logger(label: "test"))
        let running = Task { try await group.run() }
        let port = try await waitForPort(server)
        let client = try RawClient(port: port)
        defer { client.close() }
        try await client.send("GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
        #expect(try await client.readResponse().text == "ok")
        await group.triggerGracefulShutdown()
        try await running.value
        #expect(server.boundPort == nil)
        #expect(try await client.readToEnd().isEmpty, "the idle keep-alive connection was closed")
    }
}

// MARK: - Helpers

/// A handler made of closures.
private struct TestHandler: HubHandler {
    var upstream: HubUpstream?
    var body: @Sendable (HubHTTPRequest, any HubResponseWriter) async -> Void

    init(upstream: HubUpstream? = nil, _ body: @escaping @Sendable (HubHTTPRequest, any HubResponseWriter) async -> Void) {
        self.upstream = upstream
        self.body = body
    }

    func handle(_ request: HubHTTPRequest, _ writer: any HubResponseWriter) async { await body(request, writer) }
    func upgradeTarget(for request: HubHTTPRequest) async -> HubUpstream? { upstream }
}

extension HubResponseWriter {
    /// A whole text response with its length.
    fileprivate func respond(_ status: Int, _ text: String) async throws {
        try await writeHead(status: status, headers: [("Content-Type", "text/plain"), ("Content-Length", String(text.utf8.count))])
        try await writeBody(Array(text.utf8))
        try await finish()
    }
}

/// Runs a server on an ephemeral port for `body`, then shuts it down and waits for `run()` to return.
private func withServer(_ handler: TestHandler, tls: HubServerTLS? = nil,
                        _ body: (HubServer, Int) async throws -> Void) async throws {
    let server = HubServer(name: "test", host: "127.0.0.1", port: 0, tls: tls, handler: handler,
                           logger: Logger(label: "hub-server-test"), shutdownGrace: .milliseconds(200))
    let running = Task { try await server.run() }
    do {
        let port = try await waitForPort(server)
        try await body(server, port)
    } catch {
        running.cancel()
        _ = try? await running.value
        throw error
    }
    running.cancel()
    try await running.value
}

/// `runCommand` on a thread of its own: a blocked cooperative thread could starve the server under test.
private func runOffPool(_ args: [String], check: Bool = false) async throws -> CommandResult {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try runCommand(args, check: check) }) }.start()
    }
}

private func waitForPort(_ server: HubServer) async throws -> Int {
    for _ in 0..<500 {
        if let port = server.boundPort { return port }
        try await Task.sleep(for: .milliseconds(10))
    }
    throw TestFailure("the hub server did not bind within 5 s")
}

private func eventually(_ what: String = "condition", timeout: Duration = .seconds(5), _ check: () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !check() {
        if ContinuousClock.now > deadline { throw TestFailure("\(what) not met within \(timeout)") }
        try await Task.sleep(for: .milliseconds(10))
    }
}

private func residentBytes() -> Int {
    guard let status = procText("/proc/self/status"),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
          let kb = Int(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
    return kb << 10
}

/// A one-shot signal between a test and a handler.
private final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { continuation in
            let resume = state.withLock { s -> Bool in
                if s.open { return true }
                s.waiters.append(continuation)
                return false
            }
            if resume { continuation.resume() }
        }
    }

    func open() {
        let waiters = state.withLock { s in
            s.open = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }
}

/// A raw HTTP/1.1 client on a non-blocking loopback socket: exactly the bytes we choose, read at the pace we choose.
private final class RawClient {
    struct Response {
        var status: Int
        var headers: [(String, String)]
        var body: [UInt8]
        var text: String { String(decoding: body, as: UTF8.self) }
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name }?.1 }
    }

    private let fd: Int32
    private var buffer: [UInt8] = []
    private var closed = false

    init(port: Int, receiveBuffer: Int? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(errno)") }
        if var size = receiveBuffer.map(Int32.init) {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            Glibc.close(fd)
            throw TestFailure("connect to 127.0.0.1:\(port): \(String(cString: strerror(e)))")
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }

    deinit { close() }

    static func unusedPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { Glibc.close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(fd)
    }

    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    func send(_ text: String) async throws { try await send(Array(text.utf8)) }

    func send(_ bytes: [UInt8]) async throws {
        var offset = 0
        let deadline = ContinuousClock.now + .seconds(10)
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 { offset += n; continue }
            guard n < 0, errno == EAGAIN || errno == EWOULDBLOCK else { throw TestFailure("send: \(String(cString: strerror(errno)))") }
            if ContinuousClock.now > deadline { throw TestFailure("send: the peer did not read for 10 s") }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    /// Reads more into the buffer; false at end of stream.
    private func fill(timeout: Duration = .seconds(10)) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        var chunk = [UInt8](repeating: 0, count: 256 << 10)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 { buffer.append(contentsOf: chunk[0..<n]); return true }
            if n == 0 { return false }
            guard errno == EAGAIN || errno == EWOULDBLOCK else {
                if errno == ECONNRESET { return false }
                throw TestFailure("recv: \(String(cString: strerror(errno)))")
            }
            if ContinuousClock.now > deadline { throw TestFailure("recv: nothing within \(timeout)") }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    private func take(_ n: Int) -> [UInt8] {
        let out = Array(buffer[0..<n])
        buffer.removeFirst(n)
        return out
    }

    private func line() async throws -> String {
        while true {
            if let i = buffer.firstIndex(of: 10), i > 0, buffer[i - 1] == 13 {
                let text = String(decoding: take(i + 1).dropLast(2), as: UTF8.self)
                return text
            }
            guard try await fill() else { throw TestFailure("end of stream inside a line") }
        }
    }

    func readExactly(_ n: Int) async throws -> [UInt8] {
        while buffer.count < n {
            guard try await fill() else { throw TestFailure("end of stream after \(buffer.count) of \(n) bytes") }
        }
        return take(n)
    }

    func readToEnd() async throws -> [UInt8] {
        while try await fill() {}
        return take(buffer.count)
    }

    /// Reads and drops `count` bytes; returns how many came (counting what was buffered before).
    func drain(count: Int) async throws -> Int {
        var got = buffer.count
        buffer.removeAll()
        while got < count {
            guard try await fill() else { break }
            got += buffer.count
            buffer.removeAll()
        }
        return got
    }

    func readHead() async throws -> Response {
        var status = 0
        repeat {
            let statusLine = try await line()
            status = Int(statusLine.split(separator: " ")[1]) ?? 0
            var headers: [(String, String)] = []
            while true {
                let l = try await line()
                if l.isEmpty { break }
                let colon = l.firstIndex(of: ":")!
                headers.append((String(l[..<colon]), String(l[l.index(after: colon)...]).trimmingCharacters(in: .whitespaces)))
            }
            if status != 100 { return Response(status: status, headers: headers, body: []) }
        } while true
    }

    /// One chunk of a chunked body; nil at the last chunk.
    func readChunk() async throws -> [UInt8]? {
        let size = Int(try await line(), radix: 16) ?? -1
        if size == 0 {
            _ = try await line()
            return nil
        }
        let data = try await readExactly(size)
        _ = try await readExactly(2)
        return data
    }

    func readResponse() async throws -> Response {
        var response = try await readHead()
        if let length = response.header("content-length").flatMap({ Int($0) }) {
            response.body = try await readExactly(length)
        } else if response.header("transfer-encoding") == "chunked" {
            while let chunk = try await readChunk() { response.body += chunk }
        } else if response.status != 101 {
            response.body = try await readToEnd()
        }
        return response
    }
}

/// An upstream that answers any request with 101 Switching Protocols and then echoes bytes; at end of input it
/// says "bye" and closes. Blocking sockets on its own threads.
private final class EchoUpstream: Sendable {
    let port: Int
    let heads = Mutex<[String]>([])
    private let listener: Int32

    init() throws {
        listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let fd = listener
        guard withUnsafePointer(to: &addr, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }) == 0,
              listen(fd, 8) == 0 else { throw TestFailure("upstream listen: \(errno)") }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        port = Int(UInt16(bigEndian: addr.sin_port))
        let thread = Thread { [self] in self.acceptLoop() }
        thread.start()
    }

    func stop() { shutdown(listener, Int32(SHUT_RDWR)); Glibc.close(listener) }

    private func acceptLoop() {
        while true {
            let fd = accept(listener, nil, nil)
            guard fd >= 0 else { return }
            Thread { [self] in self.serve(fd) }.start()
        }
    }

    private func serve(_ fd: Int32) {
        defer { Glibc.close(fd) }
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        var head: [UInt8] = []
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { return }
            head += buffer[0..<n]
            if let end = find(head, [13, 10, 13, 10]) {
                heads.withLock { $0.append(String(decoding: head[0..<(end + 4)], as: UTF8.self)) }
                let answer = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
                guard write(fd, Array(answer.utf8)) else { return }
                let rest = Array(head[(end + 4)...])
                if !rest.isEmpty, !write(fd, rest) { return }
                break
            }
        }
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            guard write(fd, Array(buffer[0..<n])) else { return }
        }
        _ = write(fd, Array("bye".utf8))
    }

    private func write(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { return false }
            offset += n
        }
        return true
    }

    private func find(_ haystack: [UInt8], _ needle: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for i in 0...(haystack.count - needle.count) where haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
        return nil
    }
}
