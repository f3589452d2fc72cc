// What edged needs to know about a certificate chain: names, validity, issuer, and whether it fits a CA and a key.

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Glibc
import SwiftASN1
import X509

/// A parsed PEM certificate chain, leaf first, with the fields the join and rotation logic reads.
public struct CertificateInfo: Sendable {
    /// The chain as parsed, leaf first (an API server may append intermediates).
    public let chain: [Certificate]

    /// The leaf certificate.
    public var leaf: Certificate { chain[0] }

    /// Parses every "CERTIFICATE" block in `pem` (other blocks, such as a private key in a combined
    /// kubelet-client file, are skipped). `source` names the file or object in error messages.
    public init(pem: String, source: String = "certificate") throws(CredentialError) {
        var chain: [Certificate] = []
        for der in try PEMBlocks.certificates(pem, source: source) {
            do { chain.append(try Certificate(derEncoded: der)) } catch {
                throw CredentialError(.invalidCertificate, "\(source): certificate \(chain.count + 1) cannot be parsed: \(error)")
            }
        }
        self.chain = chain
    }

    /// The subject's common name (for a node: system:node:NAME).
    public var commonName: String? { Self.values(leaf.subject, ASN1ObjectIdentifier.RDNAttributeType.commonName).first }

    /// The subject's organizations (for a node: system:nodes).
    public var organizations: [String] { Self.values(leaf.subject, ASN1ObjectIdentifier.RDNAttributeType.organizationName) }

    /// The subject, in RFC 4514 form.
    public var subject: String { leaf.subject.description }

    /// The issuer, in RFC 4514 form.
    public var issuer: String { leaf.issuer.description }

    /// The issuer's common name.
    public var issuerCommonName: String? { Self.values(leaf.issuer, ASN1ObjectIdentifier.RDNAttributeType.commonName).first }

    public var notBefore: Date { leaf.notValidBefore }
    public var notAfter: Date { leaf.notValidAfter }

    /// DNS names in the subjectAltName extension.
    public var dnsNames: [String] {
        sans.compactMap { if case .dnsName(let n) = $0 { return n } else { return nil } }
    }

    /// IP addresses in the subjectAltName extension, as text ("10.0.0.5", "fd00::1").
    public var ipAddresses: [String] {
        sans.compactMap { if case .ipAddress(let octets) = $0 { return Self.ipText(Array(octets.bytes)) } else { return nil } }
    }

    private var sans: [GeneralName] {
        guard let names = try? leaf.extensions.subjectAlternativeNames else { return [] }
        return Array(names)
    }

    /// True when the leaf carries `key`'s public key, i.e. the certificate and key form a pair.
    public func matches(_ key: NodeKey) -> Bool {
        leaf.publicKey == key.publicKey
    }

    /// Checks that the chain leads to a certificate of `caPEM` (a CA or CA bundle): each certificate is
    /// signed by the next one in the chain, and the last by a CA whose subject is its issuer.
    /// Throws a message naming the subject that could not be verified.
    public func verify(issuedBy caPEM: String) throws(CredentialError) {
        let cas = try CertificateInfo(pem: caPEM, source: "CA").chain
        for (i, cert) in chain.enumerated() {
            // A certificate that is itself one of the CAs ends the walk (bundles may repeat the root).
            if cas.contains(cert) { return }
            let candidates = i + 1 < chain.count ? [chain[i + 1]] + cas : cas
            guard let parent = candidates.first(where: { $0.subject == cert.issuer && $0.publicKey.isValidSignature(cert.signature, for: cert) }) else {
                throw CredentialError(.invalidCertificate, "certificate \"\(cert.subject)\" (issuer \"\(cert.issuer)\") is not signed by the cluster CA \"\(cas.map { $0.subject.description }.joined(separator: "\", \""))\"")
            }
            if cas.contains(parent) { return }
        }
        throw CredentialError(.invalidCertificate, "certificate \"\(leaf.subject)\" does not chain to the cluster CA")
    }

    /// True when `verify(issuedBy:)` succeeds.
    public func isIssued(by caPEM: String) -> Bool {
        do { try verify(issuedBy: caPEM); return true } catch { return false }
    }

    static func values(_ name: DistinguishedName, _ type: ASN1ObjectIdentifier) -> [String] {
        name.flatMap { $0 }.filter { $0.type == type }.compactMap { String($0.value) }
    }

    static func ipText(_ bytes: [UInt8]) -> String {
        let family: Int32
        switch bytes.count {
        case 4: family = AF_INET
        case 16: family = AF_INET6
        default: return Hex.encode(bytes)
        }
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let ok = bytes.withUnsafeBytes { raw in inet_ntop(family, raw.baseAddress, &buf, socklen_t(buf.count)) != nil }
        guard ok else { return Hex.encode(bytes) }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
