// Which name a TLS client sends as SNI and checks in the server's certificate. Shared by every client edged makes
// with a configurable server name: the HTTP client (API server, registries), the hub's upgrade splice and the tunnel
// agent.

#if canImport(Glibc)
import Glibc
#endif
import EdgedCore
import NIOCore
import NIOSSL

/// How one TLS client connection checks the server's identity.
///
/// - A DNS name (the configured server name, else the dialled host) is sent as SNI and checked by NIOSSL against the
///   certificate's DNS SANs.
/// - The dialled host is an IP address and no server name is set: no SNI, and NIOSSL checks the connected address
///   against the certificate's IP SANs.
/// - The configured server name is an IP address (the certificate's IP SAN when the dialled address differs: NAT, a
///   load balancer): no SNI (an IP is not a valid SNI name), NIOSSL checks only the chain, and then this checks that
///   the certificate lists that IP address among its IP SANs.
public struct TLSServerIdentity: Sendable, Equatable {
    /// The name sent as SNI; nil for an IP address.
    public let sni: String?
    /// The IP address the certificate must list as an IP SAN, checked here (nil: NIOSSL checks the name or the
    /// connected address itself).
    public let expectedIP: String?
    private let expectedIPBytes: [UInt8]?

    /// `serverName` as configured (nil: the dialled host), `host` the host dialled (an IPv6 literal with or without
    /// brackets).
    public init(serverName: String?, host: String) {
        let dialled = Self.unbracketed(host)
        if let serverName, !serverName.isEmpty {
            let name = Self.unbracketed(serverName)
            if let bytes = IPAddress.bytes(name) {
                sni = nil
                expectedIP = name
                expectedIPBytes = bytes
            } else {
                sni = serverName
                expectedIP = nil
                expectedIPBytes = nil
            }
        } else {
            sni = IPAddress.bytes(dialled) == nil ? dialled : nil
            expectedIP = nil
            expectedIPBytes = nil
        }
    }

    /// The client handler for one connection with `context`. `failure` turns the message of an IP SAN mismatch into
    /// the caller's error type (it fails the handshake).
    ///
    /// - Throws: what NIOSSL throws for an unusable SNI name or context.
    public func makeClientHandler(context: NIOSSLContext,
                                  failure: @escaping @Sendable (String) -> any Error = { TLSServerIdentityError($0) })
        throws -> NIOSSLClientHandler {
        // Without verification (an explicitly insecure client) there is nothing to check.
        guard let expectedIP, let expectedIPBytes, context.configuration.certificateVerification != .none else {
            return try NIOSSLClientHandler(context: context, serverHostname: sni)
        }
        // NIOSSL's own name check would compare the certificate with the connected address, which is not the one
        // configured: leave it the chain and check the IP SAN after it.
        var checked = context
        if context.configuration.certificateVerification == .fullVerification {
            var configuration = context.configuration
            configuration.certificateVerification = .noHostnameVerification
            checked = try NIOSSLContext(configuration: configuration)
        }
        return try NIOSSLClientHandler._makeSSLClientHandler(
            context: checked, serverHostname: nil,
            additionalPeerCertificateVerificationCallback: { certificate, channel in
                if let problem = Self.ipSANProblem(certificate, expected: expectedIP, bytes: expectedIPBytes) {
                    return channel.eventLoop.makeFailedFuture(failure(problem))
                }
                return channel.eventLoop.makeSucceededVoidFuture()
            })
    }

    /// Why `certificate` is not valid for `expected`, naming the SANs it has; nil when it lists the address.
    static func ipSANProblem(_ certificate: NIOSSLCertificate, expected: String, bytes: [UInt8]) -> String? {
        var ips: [String] = []
        var names: [String] = []
        for san in certificate._subjectAlternativeNames() {
            switch san.nameType {
            case .ipAddress:
                let value = Array(san.contents)
                if value == bytes { return nil }
                ips.append(Self.ipText(value))
            case .dnsName:
                names.append(String(decoding: san.contents, as: UTF8.self))
            default:
                continue
            }
        }
        let has = ips.isEmpty && names.isEmpty ? "it has no IP or DNS subject alternative names"
            : "its IP SANs are [\(ips.joined(separator: ", "))] and its DNS SANs [\(names.joined(separator: ", "))]"
        return "the server's certificate is not valid for the configured server name \(expected): \(has); set the server name to one of those, or give the server a certificate with \(expected) as an IP SAN"
    }

    /// An IP SAN's bytes as text ("203.0.113.7", "2001:db8::1"); other lengths as hex.
    static func ipText(_ bytes: [UInt8]) -> String {
        let family: Int32
        switch bytes.count {
        case 4: family = AF_INET
        case 16: family = AF_INET6
        default: return bytes.map { String($0, radix: 16) }.joined(separator: ":")
        }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let ok = bytes.withUnsafeBytes { raw in
            inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) != nil
        }
        return ok ? String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
    }

    private static func unbracketed(_ host: String) -> String {
        host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
    }
}

/// The server's certificate does not list the IP address configured as its name.
public struct TLSServerIdentityError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
