// PKCS#10 requests for tests that submit CertificateSigningRequests (the node code makes its own in EdgedCredentials).

import Crypto
import X509

public enum TestCSR {
    /// A fresh P-256 key and a PEM CSR for it with subject CN=`commonName`, O=`organization`.
    public static func make(commonName: String, organization: String) throws -> (csrPEM: String, keyPEM: String) {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName {
            OrganizationName(organization)
            CommonName(commonName)
        }
        let csr = try X509.CertificateSigningRequest(version: .v1, subject: subject,
                                                     privateKey: Certificate.PrivateKey(key), attributes: .init())
        return (try csr.serializeAsPEM().pemString, key.pemRepresentation)
    }
}
