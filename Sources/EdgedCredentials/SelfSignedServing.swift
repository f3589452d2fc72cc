// The kubelet API's self-signed serving certificate, used until the cluster issues one through a kubelet-serving CSR.
//
// kubelet does the same by default (serverTLSBootstrap off): cmd/kubelet/app/server.go InitializeTLS writes
// kubelet.crt and kubelet.key into its pki directory from k8s.io/client-go/util/cert GenerateSelfSignedCertKey, a CA
// "<host>-ca@<unix time>" that signs one serving certificate "<host>@<unix time>" (serverAuth, the host as DNS or IP
// SAN), both valid from an hour ago for a year; the file holds the serving certificate followed by the CA.
// Differences: P-256 keys instead of RSA 2048 (cheap to make on a small device, like the node's other keys), the
// node's IP addresses as SANs next to its name, and a new pair once the stored one is unreadable, does not match
// its key or has less than a day left (kubelet keeps an expired file forever).

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto
import EdgedCore
import Glibc
import SwiftASN1
import X509

/// The self-signed serving certificate in the credential directory (kubelet's file names).
public struct SelfSignedServing: Sendable {
    /// The serving certificate, then the CA that signed it (PEM, 0644).
    public static let certFileName = "kubelet.crt"
    /// The serving certificate's private key (PEM, 0600).
    public static let keyFileName = "kubelet.key"
    /// kubelet's one year.
    public static let lifetime: TimeInterval = 365 * 24 * 3600

    public let store: CredentialStore

    public init(store: CredentialStore) {
        self.store = store
    }

    public var certPath: String { "\(store.directory)/\(Self.certFileName)" }
    public var keyPath: String { "\(store.directory)/\(Self.keyFileName)" }

    /// The stored pair when it is usable (readable, its key, at least a day left), else a new one for `hostName`
    /// and `ipAddresses`, stored crash-safely. Returns whether a new pair was made.
    @discardableResult
    public func ensure(hostName: String, ipAddresses: [String], now: Date = Date()) throws(CredentialError) -> Bool {
        if usable(now: now) { return false }
        let (certPEM, keyPEM) = try Self.generate(hostName: hostName, ipAddresses: ipAddresses, now: now)
        try store.saveFile(Self.keyFileName, Array(keyPEM.utf8), mode: 0o600)
        try store.saveFile(Self.certFileName, Array(certPEM.utf8), mode: 0o644)
        return true
    }

    /// Whether the stored pair loads, belongs together and is valid for at least another day.
    public func usable(now: Date = Date()) -> Bool {
        guard let cert = Files.read(certPath), let key = Files.read(keyPath),
              let info = try? CertificateInfo(pem: String(decoding: cert, as: UTF8.self), source: certPath),
              let nodeKey = try? NodeKey(pem: String(decoding: key, as: UTF8.self), source: keyPath)
        else { return false }
        return info.matches(nodeKey) && info.notBefore <= now && info.notAfter > now.addingTimeInterval(86400)
    }

    /// A CA "<host>-ca@<unix>" and a serving certificate "<host>@<unix>" it signed: (chain PEM, key PEM).
    public static func generate(hostName: String, ipAddresses: [String], now: Date = Date())
        throws(CredentialError) -> (certificatePEM: String, keyPEM: String)
    {
        let stamp = Int(now.timeIntervalSince1970)
        let validFrom = now.addingTimeInterval(-3600)   // an hour early, like kubelet, for clock skew
        let validUntil = validFrom.addingTimeInterval(lifetime)
        var sans: [GeneralName] = []
        if let bytes = IPAddress.bytes(hostName) {
            sans.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(bytes))))
        } else {
            sans.append(.dnsName(hostName))
        }
        for ip in ipAddresses where ip != hostName {
            guard let bytes = IPAddress.bytes(ip) else {
                throw CredentialError(.invalidRequest, "self-signed serving certificate for \(hostName): \"\(ip)\" is not an IPv4 or IPv6 address")
            }
            sans.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(bytes))))
        }
        let caKey = P256.Signing.PrivateKey()
        let servingKey = NodeKey.generate()
        do {
            let caName = try DistinguishedName { CommonName("\(hostName)-ca@\(stamp)") }
            let ca = try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(1), publicKey: .init(caKey.publicKey),
                notValidBefore: validFrom, notValidAfter: validUntil, issuer: caName, subject: caName,
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                    Critical(KeyUsage(digitalSignature: true, keyCertSign: true))
                    SubjectKeyIdentifier(hash: Certificate.PublicKey(caKey.publicKey))
                },
                issuerPrivateKey: .init(caKey))
            let serving = try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(2), publicKey: servingKey.publicKey,
                notValidBefore: validFrom, notValidAfter: validUntil, issuer: caName,
                subject: try DistinguishedName { CommonName("\(hostName)@\(stamp)") },
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage([.serverAuth])
                    AuthorityKeyIdentifier(keyIdentifier: try ca.extensions.subjectKeyIdentifier?.keyIdentifier)
                    SubjectAlternativeNames(sans)
                },
                issuerPrivateKey: .init(caKey))
            let chain = try serving.serializeAsPEM().pemString + "\n" + ca.serializeAsPEM().pemString + "\n"
            return (chain, servingKey.pem)
        } catch {
            throw CredentialError(.invalidCertificate, "the self-signed serving certificate for \(hostName) could not be made: \(error)")
        }
    }
}
