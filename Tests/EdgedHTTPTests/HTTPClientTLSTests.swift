import EdgedHTTP
import EdgedTestSupport
import Foundation
import Testing

@Suite struct HTTPClientTLSTests {
    let ca: TestPKI
    let server: TestKeyPair

    init() throws {
        ca = try TestPKI.makeCA()
        server = try ca.issue(serverFor: "test-server", ips: ["127.0.0.1"], dns: ["localhost"])
    }

    @Test func pinnedCAWorksByIPAndByName() async throws {
        let https = try TestHTTPServer(tls: TestHTTPServer.tlsContext(server))
        defer { https.stop() }
        let client = HTTPClient(configuration: .init(tls: .init(trust: .certificates(pem: ca.caPEM))))
        let byIP = try await client.execute(HTTPRequest(url: "\(https.tlsURL)/hello"), timeout: .seconds(5))
        #expect(byIP.body == Array("hello".utf8))
        let echo = try await client.execute(HTTPRequest(method: "POST", url: "\(https.tlsURL)/echo", body: Array("tls".utf8)), timeout: .seconds(5))
        #expect(echo.body == Array("tls".utf8))
        #expect(https.accepted == 1)
        let byName = try await client.execute(HTTPRequest(url: "https://localhost:\(https.port)/whoami"), timeout: .seconds(5))
        #expect(byName.body == Array("none".utf8))
        // Plain HTTP to the TLS port: the server hangs up on a request that is not TLS.
        await expectAnyHTTPError { try await client.execute(HTTPRequest(url: "\(https.url)/hello"), timeout: .seconds(5)) }
        await client.shutdown()
    }

    @Test func wrongCAIsATLSError() async throws {
        let https = try TestHTTPServer(tls: TestHTTPServer.tlsContext(server))
        defer { https.stop() }
        let other = try TestPKI.makeCA(commonName: "other-ca")
        let client = HTTPClient(configuration: .init(tls: .init(trust: .certificates(pem: other.caPEM))))
        defer { Task { await client.shutdown() } }
        await expectHTTPError(.tls, containing: ["127.0.0.1:\(https.port)", "CERTIFICATE_VERIFY_FAILED"]) {
            try await client.execute(HTTPRequest(url: "\(https.tlsURL)/hello"), timeout: .seconds(5))
        }
        // The system trust store does not know the test CA either; noVerification accepts anything.
        let system = HTTPClient()
        await expectHTTPError(.tls) { try await system.execute(HTTPRequest(url: "\(https.tlsURL)/hello"), timeout: .seconds(5)) }
        await system.shutdown()
        let insecure = HTTPClient(configuration: .init(tls: .init(trust: .noVerification)))
        #expect(try await insecure.execute(HTTPRequest(url: "\(https.tlsURL)/hello"), timeout: .seconds(5)).status == 200)
        await insecure.shutdown()
    }

    @Test func hostnameMismatchIsATLSError() async throws {
        // A certificate for "localhost" only (no IP SAN; NIOSSL also accepts a certificate that lists the connected IP).
        let https = try TestHTTPServer(tls: TestHTTPServer.tlsContext(try ca.issue(ips: [], dns: ["localhost"])))
        defer { https.stop() }
        let client = HTTPClient(configuration: .init(tls: .init(trust: .certificates(pem: ca.caPEM), serverName: "apiserver.example")))
        await expectHTTPError(.tls, containing: ["localhost:\(https.port)", "apiserver.example"]) {
            try await client.execute(HTTPRequest(url: "https://localhost:\(https.port)/hello"), timeout: .seconds(5))
        }
        await client.shutdown()
        // Reached by IP, which the certificate does not list.
        let plain = HTTPClient(configuration: .init(tls: .init(trust: .certificates(pem: ca.caPEM))))
        await expectHTTPError(.tls, containing: ["127.0.0.1:\(https.port)"]) {
            try await plain.execute(HTTPRequest(url: "\(https.tlsURL)/hello"), timeout: .seconds(5))
        }
        // By name it matches; serverName lets an IP URL check the certificate's name.
        #expect(try await plain.execute(HTTPRequest(url: "https://localhost:\(https.port)/hello"), timeout: .seconds(5)).status == 200)
        await plain.shutdown()
        let named = HTTPClient(configuration: .init(tls: .init(trust: .certificates(pem: ca.caPEM), serverName: "localhost")))
        #expect(try await named.execute(HTTPRequest(url: "\(https.tlsURL)/hello"), timeout: .seconds(5)).status == 200)
        await named.shutdown()
    }

    @Test func ipServerNameIsCheckedInTheCertificatesIPSANs() async throws {
        // The server's certificate names only 203.0.113.7 (its address behind NAT); the client dials 127.0.0.1. (NIOSSL
        // refuses an IP address as SNI, so an answer also shows that none was sent.)
        let https = try TestHTTPServer(tls: TestHTTPServer.tlsContext(try ca.issue(ips: ["203.0.113.7"], dns: [])))
        defer { https.stop() }
        let trust = TLSOptions.Trust.certificates(pem: ca.caPEM)
        let named = HTTPClient(configuration: .init(tls: .init(trust: trust, serverName: "203.0.113.7")))
        #expect(try await named.execute(HTTPRequest(url: "\(https.tlsURL)/hello"), timeout: .seconds(5)).body == Array("hello".utf8))
        await named.shutdown()
        // Another IP: the error names the address expected and the ones the certificate has.
        let wrong = HTTPClient(configuration: .init(tls: .init(trust: trust, serverName: "203.0.113.8")))
        await expectHTTPError(.tls, containing: ["127.0.0.1:\(https.port)", "not valid for the configured server name 203.0.113.8",
                                                 "IP SANs are [203.0.113.7]"]) {
            try await wrong.execute(HTTPRequest(url: "\(https.tlsURL)/hello"), timeout: .seconds(5))
        }
        await wrong.shutdown()
        // No server name: the dialled 127.0.0.1 is checked, which the certificate does not list.
        let plain = HTTPClient(configuration: .init(tls: .init(trust: trust)))
        await expectHTTPError(.tls, containing: ["127.0.0.1:\(https.port)"]) {
            try await plain.execute(HTTPRequest(url: "\(https.tlsURL)/hello"), timeout: .seconds(5))
        }
        await plain.shutdown()
        // The chain is still checked: the right IP from another CA fails.
        let other = try TestPKI.makeCA(commonName: "other-ca")
        let foreign = HTTPClient(configuration: .init(tls: .init(trust: .certificates(pem: other.caPEM), serverName: "203.0.113.7")))
        await expectHTTPError(.tls, containing: ["CERTIFICATE_VERIFY_FAILED"]) {
            try await foreign.execute(HTTPRequest(url: "\(https.tlsURL)/hello"), timeout: .seconds(5))
        }
        await foreign.shutdown()
        // An explicitly insecure client checks nothing, IP server name or not.
        let insecure = HTTPClient(configuration: .init(tls: .init(trust: .noVerification, serverName: "203.0.113.8")))
        #expect(try await insecure.execute(HTTPRequest(url: "\(https.tlsURL)/hello"), timeout: .seconds(5)).status == 200)
        await insecure.shutdown()
    }

    @Test func clientCertificateIsPresentedAndRequired() async throws {
        let https = try TestHTTPServer(tls: TestHTTPServer.tlsContext(server, clientCA: ca.caPEM))
        defer { https.stop() }
        let node = try ca.issueClient(cn: "system:node:edge-1", orgs: ["system:nodes"])
        let client = HTTPClient(configuration: .init(tls: .init(trust: .certificates(pem: ca.caPEM),
                                                                clientCertificateChainPEM: node.certPEM,
                                                                clientPrivateKeyPEM: node.keyPEM)))
        let me = try await client.execute(HTTPRequest(url: "\(https.tlsURL)/whoami"), timeout: .seconds(5))
        #expect(String(decoding: me.body, as: UTF8.self) == "system:node:edge-1")
        await client.shutdown()

        let anonymous = HTTPClient(configuration: .init(tls: .init(trust: .certificates(pem: ca.caPEM))))
        await expectAnyHTTPError(codes: [.tls, .closed], containing: ["127.0.0.1:\(https.port)"]) {
            try await anonymous.execute(HTTPRequest(url: "\(https.tlsURL)/whoami"), timeout: .seconds(5))
        }
        await anonymous.shutdown()

        // A certificate from another CA is refused too.
        let stranger = try TestPKI.makeCA(commonName: "stranger").issueClient(cn: "mallory")
        let wrong = HTTPClient(configuration: .init(tls: .init(trust: .certificates(pem: ca.caPEM),
                                                               clientCertificateChainPEM: stranger.certPEM,
                                                               clientPrivateKeyPEM: stranger.keyPEM)))
        await expectAnyHTTPError(codes: [.tls, .closed]) {
            try await wrong.execute(HTTPRequest(url: "\(https.tlsURL)/whoami"), timeout: .seconds(5))
        }
        await wrong.shutdown()
    }

    @Test func badTLSSettingsAreNamed() async throws {
        let https = try TestHTTPServer(tls: TestHTTPServer.tlsContext(server))
        defer { https.stop() }
        let cases: [(TLSOptions, String)] = [
            (.init(trust: .certificates(pem: "not a pem")), "CA"),
            (.init(trust: .certificates(pem: ca.caPEM), clientCertificateChainPEM: server.certPEM), "private key"),
            (.init(trust: .certificates(pem: ca.caPEM), clientCertificateChainPEM: server.certPEM, clientPrivateKeyPEM: "garbage"), "private key"),
        ]
        for (options, word) in cases {
            let client = HTTPClient(configuration: .init(tls: options))
            await expectHTTPError(.tls, containing: [word]) {
                try await client.execute(HTTPRequest(url: "\(https.tlsURL)/hello"), timeout: .seconds(5))
            }
            await client.shutdown()
        }
    }
}

func expectAnyHTTPError<T>(codes: Set<HTTPError.Code>? = nil, containing: [String] = [],
                           sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> T) async {
    do {
        _ = try await body()
        Issue.record("expected an HTTPError, got success", sourceLocation: sourceLocation)
    } catch let error as HTTPError {
        if let codes { #expect(codes.contains(error.code), "\(error.code): \(error.message)", sourceLocation: sourceLocation) }
        for s in containing { #expect(error.message.contains(s), "\(error.message) lacks \(s)", sourceLocation: sourceLocation) }
    } catch {
        Issue.record("expected an HTTPError, got \(error)", sourceLocation: sourceLocation)
    }
}
