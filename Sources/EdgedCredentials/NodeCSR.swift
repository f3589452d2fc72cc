// PKCS#10 requests for the node's client and serving certificates, as kubelet's TLS bootstrap makes them.

import Crypto
import EdgedCore
import Glibc
import SwiftASN1
import X509

/// A PKCS#10 certificate request plus what the certificates.k8s.io/v1 CertificateSigningRequest object needs.
///
/// Like kubelet, the PEM carries only the subject and (for serving certificates) the SANs; the signer name and
/// key usages go in the CSR object's spec, so they are returned next to the PEM rather than inside it.
public struct NodeCSR: Sendable, Equatable {
    /// The "CERTIFICATE REQUEST" PEM block (spec.request, base64 of these bytes).
    public let pem: String
    /// spec.signerName.
    public let signerName: String
    /// spec.usages.
    public let usages: [String]

    public static let clientSignerName = "kubernetes.io/kube-apiserver-client-kubelet"
    public static let servingSignerName = "kubernetes.io/kubelet-serving"

    /// The request for the node's API client certificate: CN system:node:NAME, O system:nodes.
    public static func client(nodeName: String, key: NodeKey) throws(CredentialError) -> NodeCSR {
        let pem = try build(nodeName: nodeName, key: key, dnsNames: [], ipAddresses: [])
        return NodeCSR(pem: pem, signerName: clientSignerName, usages: ["digital signature", "client auth"])
    }

    /// The request for the node's serving certificate (kubelet port): the same subject, plus SANs for the node's
    /// host names and IP addresses, which the kubelet-serving signer requires (at least one).
    public static func serving(nodeName: String, key: NodeKey, dnsNames: [String], ipAddresses: [String])
        throws(CredentialError) -> NodeCSR
    {
        guard !dnsNames.isEmpty || !ipAddresses.isEmpty else {
            throw CredentialError(.invalidRequest, "serving certificate request for node \(nodeName) has no DNS name or IP address: give the node's hostname or address")
        }
        let pem = try build(nodeName: nodeName, key: key, dnsNames: dnsNames, ipAddresses: ipAddresses)
        return NodeCSR(pem: pem, signerName: servingSignerName, usages: ["digital signature", "server auth"])
    }

    static func build(nodeName: String, key: NodeKey, dnsNames: [String], ipAddresses: [String]) throws(CredentialError) -> String {
        try validateNodeName(nodeName)
        var names: [GeneralName] = dnsNames.map { .dnsName($0) }
        for ip in ipAddresses {
            guard let bytes = IPAddress.bytes(ip) else {
                throw CredentialError(.invalidRequest, "serving certificate request for node \(nodeName): \"\(ip)\" is not an IPv4 or IPv6 address")
            }
            names.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(bytes))))
        }
        do {
            // Go's pkix.Name orders O before CN; keep the same order so the subject reads like kubelet's.
            let subject = try DistinguishedName {
                OrganizationName("system:nodes")
                CommonName("system:node:\(nodeName)")
            }
            var attributes = CertificateSigningRequest.Attributes()
            if !names.isEmpty {
                let extensions = try Certificate.Extensions { SubjectAlternativeNames(names) }
                try attributes.insert(.init(ExtensionRequest(extensions: extensions)))
            }
            let csr = try CertificateSigningRequest(
                version: .v1, subject: subject, privateKey: key.certificateKey,
                attributes: attributes, signatureAlgorithm: .ecdsaWithSHA256)
            return try csr.serializeAsPEM().pemString + "\n"
        } catch {
            throw CredentialError(.invalidRequest, "certificate request for node \(nodeName) could not be built: \(error)")
        }
    }

    /// Node names are DNS subdomains (RFC 1123): lower-case alphanumerics, '-' and '.', at most 253 characters.
    static func validateNodeName(_ name: String) throws(CredentialError) {
        let ok = !name.isEmpty && name.utf8.count <= 253
            && name.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d || $0 == 0x2e }
            && name.first!.isLetterOrDigit && name.last!.isLetterOrDigit
        guard ok else {
            throw CredentialError(.invalidRequest, "node name \"\(name)\" is not a valid DNS subdomain: use lower-case letters, digits, '-' and '.' (at most 253 characters)")
        }
    }

}

extension Character {
    fileprivate var isLetterOrDigit: Bool { isASCII && (isLowercase || isNumber) }
}
