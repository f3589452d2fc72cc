// kubeadm's --discovery-token-ca-cert-hash: "sha256:<hex>" of the CA certificate's SubjectPublicKeyInfo.

import Crypto
import SwiftASN1
import X509

/// A pin on the cluster CA: the SHA-256 of the DER SubjectPublicKeyInfo of the CA certificate, written
/// "sha256:<64 hex digits>" exactly as kubeadm prints it in `kubeadm token create --print-join-command`.
///
/// The hash is over the SPKI bytes as they appear in the certificate (Go's RawSubjectPublicKeyInfo), not a
/// re-encoding, so it matches kubeadm for RSA and EC CAs alike.
public struct CAPin: Sendable, Hashable, CustomStringConvertible {
    /// The 32 hash bytes.
    public let sha256: [UInt8]

    public init(sha256: [UInt8]) {
        precondition(sha256.count == 32, "a SHA-256 pin has 32 bytes")
        self.sha256 = sha256
    }

    /// Parses "sha256:<64 hex digits>" (hex in either case; surrounding spaces ignored).
    public init(parsing text: String) throws(CredentialError) {
        let trimmed = text.trimmingSpaces
        let expected = "expected the form sha256:<64 hex digits>, as printed by kubeadm token create --print-join-command"
        guard trimmed.hasPrefix("sha256:") else {
            throw CredentialError(.invalidPin, "CA cert hash \"\(text)\" is not valid: \(expected)")
        }
        let hex = Array(trimmed.utf8.dropFirst(7))
        guard hex.count == 64, let bytes = Hex.decode(hex) else {
            throw CredentialError(.invalidPin, "CA cert hash \"\(text)\" is not valid: \(expected)")
        }
        sha256 = bytes
    }

    /// The pin of a DER certificate.
    public init(certificateDER der: [UInt8]) throws(CredentialError) {
        sha256 = Array(SHA256.hash(data: try CAPin.subjectPublicKeyInfo(ofCertificateDER: der)))
    }

    /// "sha256:<hex>".
    public var description: String { "sha256:" + Hex.encode(sha256) }

    /// The pins of every certificate in a PEM bundle, in order.
    public static func pins(ofPEM pem: String, source: String = "CA") throws(CredentialError) -> [CAPin] {
        let docs = try PEMBlocks.certificates(pem, source: source)
        var pins: [CAPin] = []
        for doc in docs { pins.append(try CAPin(certificateDER: doc)) }
        return pins
    }

    /// Checks that a CA (or CA bundle) is pinned: at least one of its certificates hashes to one of `pins`,
    /// as kubeadm accepts a bundle when any certificate matches. Throws a message that names the actual hash
    /// and the expected ones.
    public static func verify(caPEM: String, against pins: [CAPin]) throws(CredentialError) {
        let actual = try CAPin.pins(ofPEM: caPEM, source: "cluster CA")
        if actual.contains(where: { pins.contains($0) }) { return }
        let actualText = actual.map(\.description).joined(separator: ", ")
        let expectedText = pins.map(\.description).joined(separator: ", ")
        throw CredentialError(.pinMismatch, "the cluster CA's hash is \(actualText), expected \(expectedText): check --ca-cert-hash")
    }

    /// The encoded SubjectPublicKeyInfo of a certificate: the 6th (7th with the explicit version) element of
    /// tbsCertificate, taken byte for byte.
    static func subjectPublicKeyInfo(ofCertificateDER der: [UInt8]) throws(CredentialError) -> ArraySlice<UInt8> {
        do {
            let root = try DER.parse(der)
            guard case .constructed(let certNodes) = root.content,
                  let tbs = certNodes.first(where: { _ in true }),
                  case .constructed(let tbsNodes) = tbs.content
            else { throw CredentialError(.invalidCertificate, "not an X.509 certificate") }
            var fields = Array(tbsNodes)
            // Version is an explicit [0] tag when present.
            if let first = fields.first, first.identifier == ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific) {
                fields.removeFirst()
            }
            // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
            guard fields.count >= 6, fields[5].identifier == .sequence else {
                throw CredentialError(.invalidCertificate, "certificate has no SubjectPublicKeyInfo")
            }
            return fields[5].encodedBytes
        } catch {
            if let error = error as? CredentialError { throw error }
            throw CredentialError(.invalidCertificate, "certificate is not valid DER: \(error)")
        }
    }
}

enum Hex {
    static func encode(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ hex: [UInt8]) -> [UInt8]? {
        guard hex.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(hex.count / 2)
        var i = 0
        while i < hex.count {
            guard let hi = nibble(hex[i]), let lo = nibble(hex[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x61...0x66: return c - 0x61 + 10
        case 0x41...0x46: return c - 0x41 + 10
        default: return nil
        }
    }
}

/// PEM helpers shared by the credential types.
enum PEMBlocks {
    /// The DER bytes of every "CERTIFICATE" block in `pem`; throws when there is none.
    static func certificates(_ pem: String, source: String) throws(CredentialError) -> [[UInt8]] {
        let docs: [PEMDocument]
        do { docs = try PEMDocument.parseMultiple(pemString: pem) } catch {
            throw CredentialError(.invalidCertificate, "\(source): not valid PEM: \(error)")
        }
        let certs = docs.filter { $0.discriminator == "CERTIFICATE" }.map(\.derBytes)
        guard !certs.isEmpty else {
            throw CredentialError(.invalidCertificate, "\(source): no CERTIFICATE PEM block")
        }
        return certs
    }
}

extension String {
    /// The string without leading and trailing spaces, tabs and newlines.
    var trimmingSpaces: String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let start = firstIndex(where: { !isSpace($0) }), let end = lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(self[start...end])
    }
}
