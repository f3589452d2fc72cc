// The node's private key: ECDSA P-256, generated on the device, stored as SEC1 PEM like kubelet's.

import Crypto
import SwiftASN1
import X509

/// The node's ECDSA P-256 private key.
///
/// The key is generated on the device and never leaves it; only CSRs signed with it do. It is written as an
/// "EC PRIVATE KEY" (SEC1) PEM block, the form kubelet writes into kubelet-client-*.pem, and read back from
/// either SEC1 or PKCS#8 ("PRIVATE KEY") so keys made by openssl or other tools load too.
public struct NodeKey: Sendable {
    public let privateKey: P256.Signing.PrivateKey

    public init(_ privateKey: P256.Signing.PrivateKey) {
        self.privateKey = privateKey
    }

    /// A fresh key from the system's random source.
    public static func generate() -> NodeKey {
        NodeKey(P256.Signing.PrivateKey())
    }

    /// Decodes the first private-key PEM block in `pem` ("EC PRIVATE KEY" or "PRIVATE KEY"); other blocks
    /// (certificates in a combined kubelet-client file) are skipped.
    public init(pem: String, source: String = "key") throws(CredentialError) {
        let documents: [PEMDocument]
        do { documents = try PEMDocument.parseMultiple(pemString: pem) } catch {
            throw CredentialError(.invalidKey, "\(source): not PEM: \(error)")
        }
        guard let doc = documents.first(where: { $0.discriminator == "EC PRIVATE KEY" || $0.discriminator == "PRIVATE KEY" })
        else {
            let found = documents.map(\.discriminator)
            throw CredentialError(.invalidKey, "\(source): no \"EC PRIVATE KEY\" or \"PRIVATE KEY\" PEM block (found \(found))")
        }
        do {
            privateKey = try P256.Signing.PrivateKey(derRepresentation: doc.derBytes)
        } catch {
            throw CredentialError(.invalidKey, "\(source): the \(doc.discriminator) block is not an ECDSA P-256 key: \(error)")
        }
    }

    /// The key as an "EC PRIVATE KEY" (SEC1, RFC 5915) PEM block with the curve OID and the public key.
    public var pem: String {
        PEMDocument(type: "EC PRIVATE KEY", derBytes: sec1DER).pemString + "\n"
    }

    /// SEC1 ECPrivateKey DER: SEQUENCE { 1, OCTET STRING d, [0] prime256v1, [1] BIT STRING Q }.
    var sec1DER: [UInt8] {
        var serializer = DER.Serializer()
        // Serialising these fixed, well-formed values cannot fail.
        try! serializer.appendConstructedNode(identifier: .sequence) { coder in
            try coder.serialize(1)
            try coder.serialize(ASN1OctetString(contentBytes: ArraySlice(privateKey.rawRepresentation)))
            try coder.serialize(explicitlyTaggedWithTagNumber: 0, tagClass: .contextSpecific) { coder in
                try coder.serialize(ASN1ObjectIdentifier.NamedCurves.secp256r1)
            }
            try coder.serialize(explicitlyTaggedWithTagNumber: 1, tagClass: .contextSpecific) { coder in
                try coder.serialize(ASN1BitString(bytes: ArraySlice(privateKey.publicKey.x963Representation)))
            }
        }
        return serializer.serializedBytes
    }

    /// The public key as a "PUBLIC KEY" (SubjectPublicKeyInfo) PEM block.
    public var publicKeyPEM: String { privateKey.publicKey.pemRepresentation + "\n" }

    /// The key as swift-certificates wants it for signing.
    public var certificateKey: Certificate.PrivateKey { Certificate.PrivateKey(privateKey) }

    /// The public key as it appears in certificates; compare with a certificate's `publicKey` to match a pair.
    public var publicKey: Certificate.PublicKey { Certificate.PublicKey(privateKey.publicKey) }
}
