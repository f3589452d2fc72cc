import EdgedTestSupport
import GRPCCore
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
import Testing
@testable import EdgedGRPCTransport

/// Raw bytes as messages, so the tests need no generated code.
struct RawBytes: MessageSerializer, MessageDeserializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
    func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> [UInt8] {
        serializedMessageBytes.withUnsafeBytes { Array($0) }
    }
}

/// Test.Echo/Chat echoes each message back prefixed with the caller's certificate CN; a message "fail" ends the
/// call with PERMISSION_DENIED and a message that needs percent-encoding. Test.Echo/Slow waits to be released.
struct EchoService: RegistrableRPCService {
    static let chat = MethodDescriptor(fullyQualifiedService: "Test.Echo", method: "Chat")
    let release: AsyncStream<Void>

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        router.registerHandler(forMethod: Self.chat, deserializer: RawBytes(), serializer: RawBytes()) { request, context in
            let cn = (context.transportSpecific as? GRPCHTTP2ServerTransport.PeerContext)?.peerCertificate
                .map { "\($0.subject)" } ?? "nobody"
            return StreamingServerResponse(metadata: ["who": "\(cn)", "agent": "\(request.metadata[stringValues: "agentID"].first { _ in true } ?? "")"]) { writer in
                for try await message in request.messages {
                    if message == Array("fail".utf8) {
                        throw RPCError(code: .permissionDenied, message: "100% refused: naïve caller")
                    }
                    if message == Array("wait".utf8) {
                        for await _ in release { break }
                    }
                    try await writer.write(Array("echo:".utf8) + message)
                }
                return ["done": "yes"]
            }
        }
    }
}

/// A server transport with a fresh CA and a client TLS context that trusts it, both on 127.0.0.1.
struct GRPCFixture {
    let pki: TestPKI
    let transport: GRPCHTTP2ServerTransport
    let server: GRPCServer<GRPCHTTP2ServerTransport>
    let port: Int
    let release: AsyncStream<Void>.Continuation
    let serving: Task<Void, any Error>

    static func start(keepalive: Duration = .seconds(30)) async throws -> GRPCFixture {
        let pki = try TestPKI.makeCA()
        let pair = try pki.issue(serverFor: "grpc-test", ips: ["127.0.0.1"], dns: ["localhost"])
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(pair.certPEM.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(pair.keyPEM.utf8), format: .pem)))
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(pki.caPEM.utf8)))
        tls.certificateVerification = .noHostnameVerification
        tls.applicationProtocols = ["h2"]
        let transport = GRPCHTTP2ServerTransport(config: .init(
            host: "127.0.0.1", port: 0, tls: try NIOSSLContext(configuration: tls),
            keepaliveInterval: keepalive, keepaliveTimeout: .seconds(5), maxMessageBytes: 1 << 20))
        let (release, releaseInput) = AsyncStream.makeStream(of: Void.self)
        let server = GRPCServer(transport: transport, services: [EchoService(release: release)])
        let serving = Task { try await server.serve() }
        let address = try await transport.listeningAddress()
        return GRPCFixture(pki: pki, transport: transport, server: server, port: address.port ?? 0,
                           release: releaseInput, serving: serving)
    }

    func clientTLS(cn: String = "system:node:node-1", ca: TestPKI? = nil) throws -> NIOSSLContext {
        let pair = try pki.issueClient(cn: cn)
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(pair.certPEM.utf8)).map { .certificate($0) }
        tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(pair.keyPEM.utf8), format: .pem))
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array((ca ?? pki).caPEM.utf8)))
        tls.applicationProtocols = ["h2"]
        return try NIOSSLContext(configuration: tls)
    }

    func client(tls: NIOSSLContext? = nil, port: Int? = nil, serverHostname: String? = nil,
                keepalive: Duration = .seconds(30), keepaliveTimeout: Duration = .seconds(5)) throws -> GRPCHTTP2ClientTransport {
        GRPCHTTP2ClientTransport(config: .init(
            host: "127.0.0.1", port: port ?? self.port, tls: try tls ?? clientTLS(), serverHostname: serverHostname,
            connectTimeout: .seconds(5), keepaliveInterval: keepalive, keepaliveTimeout: keepaliveTimeout))
    }

    func stop() async {
        release.finish()
        server.beginGracefulShutdown()
        serving.cancel()
        _ = try? await serving.value
    }
}

/// Runs one Chat call sending `messages` and returns the response metadata, messages and trailers, or throws.
func chat(_ transport: GRPCHTTP2ClientTransport, _ messages: [String], agentID: String = "node-1")
    async throws -> (metadata: Metadata, messages: [String], trailers: Metadata) {
    try await withGRPCClient(transport: transport) { client in
        let request = StreamingClientRequest<[UInt8]>(metadata: ["agentID": "\(agentID)"]) { writer in
            for m in messages { try await writer.write(Array(m.utf8)) }
        }
        return try await client.bidirectionalStreaming(
            request: request, descriptor: EchoService.chat, serializer: RawBytes(), deserializer: RawBytes(),
            options: .defaults
        ) { response in
            let metadata = response.metadata
            var got: [String] = []
            for try await part in response.bodyParts {
                switch part {
                case .message(let m): got.append(String(decoding: m, as: UTF8.self))
                case .trailingMetadata(let t): return (metadata, got, t)
                }
            }
            return (metadata, got, [:])
        }
    }
}

@Suite struct GRPCTransportTests {
    @Test func bidirectionalCallOverMutualTLS() async throws {
        let f = try await GRPCFixture.start()
        defer { Task { await f.stop() } }
        let big = String(repeating: "x", count: 300_000)   // several DATA frames and window updates
        let result = try await chat(try f.client(serverHostname: "localhost"), ["a", "bb", big])
        #expect(result.messages == ["echo:a", "echo:bb", "echo:" + big])
        #expect(result.metadata[stringValues: "who"].first { _ in true } == "CN=system:node:node-1")
        #expect(result.metadata[stringValues: "agent"].first { _ in true } == "node-1")
        #expect(result.trailers[stringValues: "done"].first { _ in true } == "yes")
    }

    @Test func serverErrorReachesTheClientWithItsCodeAndMessage() async throws {
        let f = try await GRPCFixture.start()
        defer { Task { await f.stop() } }
        do {
            _ = try await chat(try f.client(), ["ok", "fail"])
            Issue.record("the call did not fail")
        } catch let error as RPCError {
            #expect(error.code == .permissionDenied)
            #expect(error.message == "100% refused: naïve caller")
        }
    }

    @Test func messageOverTheServersLimitIsResourceExhausted() async throws {
        let f = try await GRPCFixture.start()
        defer { Task { await f.stop() } }
        do {
            _ = try await chat(try f.client(), [String(repeating: "y", count: (1 << 20) + 1)])
            Issue.record("a message over the limit went through")
        } catch let error as RPCError {
            #expect(error.code == .resourceExhausted, "\(error)")
        }
    }

    @Test func closedPortFailsTheCallAsUnavailableNamingTheServer() async throws {
        let f = try await GRPCFixture.start()
        let port = f.port
        await f.stop()
        do {
            _ = try await chat(try f.client(port: port), ["a"])
            Issue.record("a call to a closed port succeeded")
        } catch let error as RPCError {
            #expect(error.code == .unavailable)
            #expect(error.message.contains("cannot connect to 127.0.0.1:\(port)"), "\(error.message)")
        }
    }

    @Test func serverCertificateFromAnotherCAFailsTheHandshake() async throws {
        let f = try await GRPCFixture.start()
        defer { Task { await f.stop() } }
        let stranger = try TestPKI.makeCA(commonName: "someone-else")
        do {
            _ = try await chat(try f.client(tls: f.clientTLS(ca: stranger)), ["a"])
            Issue.record("a server with an untrusted certificate was accepted")
        } catch let error as RPCError {
            #expect(error.code == .unavailable)
            #expect(error.message.contains("TLS handshake failed"), "\(error.message)")
        }
    }

    @Test func silentServerIsDroppedByKeepalive() async throws {
        // Accepts TCP and never answers: the TLS handshake never ends, so only keepalive can notice.
        let silent = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { $0.eventLoop.makeSucceededVoidFuture() }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { silent.close(promise: nil) }
        let f = try await GRPCFixture.start()
        defer { Task { await f.stop() } }
        let client = try f.client(port: silent.localAddress?.port, keepalive: .milliseconds(200),
                                  keepaliveTimeout: .milliseconds(300))
        let start = ContinuousClock.now
        do {
            _ = try await chat(client, ["a"])
            Issue.record("a call to a silent server succeeded")
        } catch let error as RPCError {
            #expect(error.code == .unavailable)
            #expect(error.message.contains("keepalive"), "\(error.message)")
        }
        #expect(ContinuousClock.now - start < .seconds(3))
    }

    @Test func gracefulShutdownLetsTheCallInProgressFinishAndRefusesNewOnes() async throws {
        let f = try await GRPCFixture.start()
        defer { Task { await f.stop() } }
        let transport = try f.client()
        let ongoing = Task { try await chat(transport, ["first", "wait", "last"]) }
        // Wait for the call to be in its handler, then shut down.
        try await Task.sleep(for: .milliseconds(300))
        f.server.beginGracefulShutdown()
        try await Task.sleep(for: .milliseconds(100))
        do {
            _ = try await chat(try f.client(), ["new"])
            Issue.record("a new connection was accepted after shutdown began")
        } catch let error as RPCError {
            #expect(error.code == .unavailable)
        }
        f.release.yield()
        let result = try await ongoing.value
        #expect(result.messages == ["echo:first", "echo:wait", "echo:last"])
        // With its last call done, the server's transport closes and serve() returns.
        let done = Task { try await f.serving.value }
        let returned = await withTaskGroup(of: Bool.self) { group in
            group.addTask { (try? await done.value) != nil }
            group.addTask { try? await Task.sleep(for: .seconds(5)); return false }
            defer { group.cancelAll() }
            return await group.next() ?? false
        }
        #expect(returned, "serve() did not return after the last call")
    }
}
