// A tiny certificate authority for tests: a self-signed ECDSA P-256 CA that issues server and client certificates
// and signs PKCS#10 certificate signing requests (the test API server's CSR signer uses it).

import Crypto
import Foundation
import SwiftASN1
import X509

/// A certificate and its private key, both PEM.
public struct TestKeyPair: Sendable {
    public let certPEM: String
    public let keyPEM: String
}

/// A test certificate authority. Everything is ECDSA P-256 with SHA-256 signatures.
public struct TestPKI: Sendable {
    public let certificate: Certificate
    let key: P256.Signing.PrivateKey

    /// The CA certificate, PEM.
    public var caPEM: String { (try? certificate.serializeAsPEM().pemString) ?? "" }
    /// The CA private key, PEM (PKCS#8).
    public var caKeyPEM: String { key.pemRepresentation }

    /// kubeadm's CA pin: "sha256:" + hex SHA-256 of the CA certificate's DER SubjectPublicKeyInfo.
    public var caCertHash: String {
        var serializer = DER.Serializer()
        try? serializer.serialize(certificate.publicKey)
        let digest = SHA256.hash(data: serializer.serializedBytes)
        return "sha256:" + digest.map { String(format: "%02x", $0) }.joined()
    }

    /// Makes a fresh self-signed CA valid for `lifetime` seconds from an hour ago (clock skew margin).
    public static func makeCA(commonName: String = "edged-test-ca", lifetime: TimeInterval = 10 * 365 * 86400) throws -> TestPKI {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName(commonName) }
        let now = Date()
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
            Critical(KeyUsage(digitalSignature: true, keyCertSign: true, cRLSign: true))
            SubjectKeyIdentifier(hash: Certificate.PublicKey(key.publicKey))
        }
        let cert = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(lifetime),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions, issuerPrivateKey: .init(key))
        return TestPKI(certificate: cert, key: key)
    }

    /// Issues a TLS server certificate (serverAuth) for the given IP addresses and DNS names.
    public func issue(serverFor commonName: String = "test-server", ips: [String] = ["127.0.0.1"],
                      dns: [String] = ["localhost"], lifetime: TimeInterval = 86400) throws -> TestKeyPair {
        let key = P256.Signing.PrivateKey()
        var sans: [GeneralName] = dns.map { .dnsName($0) }
        for ip in ips { sans.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(try Self.ipBytes(ip))))) }
        let cert = try sign(publicKey: .init(key.publicKey), subject: DistinguishedName { CommonName(commonName) },
                            sans: sans, keyUsage: KeyUsage(digitalSignature: true, keyEncipherment: true),
                            extendedKeyUsages: [.serverAuth], lifetime: lifetime)
        return TestKeyPair(certPEM: try cert.serializeAsPEM().pemString, keyPEM: key.pemRepresentation)
    }

    /// Issues a TLS client certificate (clientAuth) with subject CN=`cn` and one O per group.
    public func issueClient(cn: String, orgs: [String] = [], lifetime: TimeInterval = 86400) throws -> TestKeyPair {
        let key = P256.Signing.PrivateKey()
        var rdns = orgs.map { RelativeDistinguishedName(RelativeDistinguishedName.Attribute(type: .RDNAttributeType.organizationName, utf8String: $0)) }
        rdns.append(RelativeDistinguishedName(RelativeDistinguishedName.Attribute(type: .RDNAttributeType.commonName, utf8String: cn)))
        let cert = try sign(publicKey: .init(key.publicKey), subject: DistinguishedName(rdns), sans: [],
                            keyUsage: KeyUsage(digitalSignature: true, keyEncipherment: true),
                            extendedKeyUsages: [.clientAuth], lifetime: lifetime)
        return TestKeyPair(certPEM: try cert.serializeAsPEM().pemString, keyPEM: key.pemRepresentation)
    }

    /// Signs a certificate for `publicKey` with this CA.
    public func sign(publicKey: Certificate.PublicKey, subject: DistinguishedName, sans: [GeneralName],
                     keyUsage: KeyUsage, extendedKeyUsages: [ExtendedKeyUsage.Usage],
                     lifetime: TimeInterval, notBefore: Date? = nil) throws -> Certificate {
        let now = notBefore ?? Date().addingTimeInterval(-300)
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(keyUsage)
            if !extendedKeyUsages.isEmpty { try ExtendedKeyUsage(extendedKeyUsages) }
            AuthorityKeyIdentifier(keyIdentifier: try certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
            if !sans.isEmpty { SubjectAlternativeNames(sans) }
        }
        return try Certificate(
            version: .v3, serialNumber: .init(), publicKey: publicKey,
            notValidBefore: now, notValidAfter: now.addingTimeInterval(lifetime + 300),
            issuer: certificate.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions, issuerPrivateKey: .init(key))
    }

    /// A fresh P-256 key and a PEM PKCS#10 request for it (CN, one O per org, DNS/IP SANs in an extension request).
    public static func makeCSR(cn: String, orgs: [String] = [], dns: [String] = [], ips: [String] = []) throws
        -> (csrPEM: String, keyPEM: String) {
        let key = P256.Signing.PrivateKey()
        var rdns = orgs.map { RelativeDistinguishedName(RelativeDistinguishedName.Attribute(type: .RDNAttributeType.organizationName, utf8String: $0)) }
        rdns.append(RelativeDistinguishedName(RelativeDistinguishedName.Attribute(type: .RDNAttributeType.commonName, utf8String: cn)))
        var sans: [GeneralName] = dns.map { .dnsName($0) }
        for ip in ips { sans.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(try ipBytes(ip))))) }
        var attributes = CertificateSigningRequest.Attributes()
        if !sans.isEmpty {
            let ext = try Certificate.Extensions { SubjectAlternativeNames(sans) }
            attributes.insert(try CertificateSigningRequest.Attribute(ExtensionRequest(extensions: ext)))
        }
        let csr = try CertificateSigningRequest(version: .v1, subject: DistinguishedName(rdns),
                                                privateKey: Certificate.PrivateKey(key), attributes: attributes)
        return (try csr.serializeAsPEM().pemString, key.pemRepresentation)
    }

    /// What tests check in an issued certificate.
    public struct CertificateInfo: Sendable {
        public let commonName: String
        public let organizations: [String]
        public let dnsNames: [String]
        public let ipAddresses: [[UInt8]]
        public let notBefore: Date
        public let notAfter: Date
        public let serverAuth: Bool
        public let clientAuth: Bool
        /// True when this CA signed it.
        public let signedByCA: Bool
    }

    /// Parses a PEM certificate (the first one) for assertions.
    public func inspect(certPEM: String) throws -> CertificateInfo {
        let cert = try Certificate(pemEncoded: certPEM)
        var cn = "", orgs: [String] = []
        for rdn in cert.subject {
            for attr in rdn {
                if attr.type == .RDNAttributeType.commonName { cn = String(describing: attr.value) }
                if attr.type == .RDNAttributeType.organizationName { orgs.append(String(describing: attr.value)) }
            }
        }
        var dnsNames: [String] = [], ips: [[UInt8]] = []
        for san in (try cert.extensions.subjectAlternativeNames).map({ Array($0) }) ?? [] {
            switch san {
            case .dnsName(let d): dnsNames.append(d)
            case .ipAddress(let o): ips.append(Array(o.bytes))
            default: break
            }
        }
        let eku = try cert.extensions.extendedKeyUsage
        return CertificateInfo(commonName: cn, organizations: orgs, dnsNames: dnsNames, ipAddresses: ips,
                               notBefore: cert.notValidBefore, notAfter: cert.notValidAfter,
                               serverAuth: eku?.contains(.serverAuth) ?? false, clientAuth: eku?.contains(.clientAuth) ?? false,
                               signedByCA: cert.issuer == certificate.subject
                                   && certificate.publicKey.isValidSignature(cert.signature, for: cert))
    }

    /// The four (IPv4) or sixteen (IPv6) bytes of an address in text form.
    public static func ipBytes(_ text: String) throws -> [UInt8] {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        throw TestFailure("not an IP address: \(text)")
    }
}
