import EdgedCredentials
import EdgedTestSupport
import Foundation
import Testing

@Suite struct CertificateInfoTests {
    @Test func readsWhatOpenSSLIssuedForOurCSR() throws {
        let dir = try TempDir("edged-cred-cert")
        defer { dir.remove() }
        let ca = try OpenSSLCA.make(in: dir, name: "kubernetes")
        let key = NodeKey.generate()
        let csr = try NodeCSR.serving(nodeName: "edge-1", key: key, dnsNames: ["edge-1"], ipAddresses: ["192.168.1.20", "fd00::5"])
        let before = Date()
        let pem = try ca.sign(csrPEM: csr.pem, in: dir, days: 1)
        let info = try CertificateInfo(pem: pem)
        #expect(info.commonName == "system:node:edge-1")
        #expect(info.organizations == ["system:nodes"])
        #expect(info.dnsNames == ["edge-1"])
        #expect(info.ipAddresses == ["192.168.1.20", "fd00::5"])
        #expect(info.issuerCommonName == "kubernetes")
        #expect(info.issuer.contains("CN=kubernetes"))
        #expect(abs(info.notBefore.timeIntervalSince(before)) < 120)
        #expect(abs(info.notAfter.timeIntervalSince(info.notBefore) - 86400) < 2)
        // openssl agrees on the end date.
        let enddate = try tool(["openssl", "x509", "-in", writeTemp(pem, in: dir), "-noout", "-enddate", "-dateopt", "iso_8601"]).stdout
        let iso = ISO8601DateFormatter()
        let text = enddate.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "notAfter=", with: "")
            .replacingOccurrences(of: " ", with: "T")
        #expect(iso.date(from: text) == info.notAfter)

        #expect(info.matches(key))
        #expect(!info.matches(.generate()))
        try info.verify(issuedBy: ca.pem)
        #expect(info.isIssued(by: ca.pem))
    }

    @Test func foreignCAFailsChainVerification() throws {
        let dir = try TempDir("edged-cred-cert")
        defer { dir.remove() }
        let ca = try OpenSSLCA.make(in: dir, name: "kubernetes")
        // Same subject name, different key: a name match alone must not pass.
        let impostorDir = try TempDir("edged-cred-cert-other")
        defer { impostorDir.remove() }
        let impostor = try OpenSSLCA.make(in: impostorDir, name: "kubernetes")
        let pem = try ca.sign(csrPEM: NodeCSR.client(nodeName: "edge-1", key: .generate()).pem, in: dir)
        let info = try CertificateInfo(pem: pem)
        let error = #expect(throws: CredentialError.self) { try info.verify(issuedBy: impostor.pem) }
        #expect(error?.code == .invalidCertificate)
        #expect(error?.message.contains("is not signed by the cluster CA") == true)
        #expect(!info.isIssued(by: impostor.pem))
        #expect(info.isIssued(by: impostor.pem + ca.pem))  // a bundle with the real CA passes
    }

    @Test func chainThroughAnIntermediate() throws {
        let dir = try TempDir("edged-cred-cert")
        defer { dir.remove() }
        let root = try OpenSSLCA.make(in: dir, name: "root")
        let intermediate = try root.intermediate(in: dir, name: "kubelet-signer")
        let leaf = try intermediate.sign(csrPEM: NodeCSR.client(nodeName: "edge-2", key: .generate()).pem, in: dir)
        let chain = try CertificateInfo(pem: leaf + intermediate.pem)
        #expect(chain.chain.count == 2)
        #expect(chain.commonName == "system:node:edge-2")
        try chain.verify(issuedBy: root.pem)
        try chain.verify(issuedBy: intermediate.pem)
        // Without the intermediate the leaf does not reach the root.
        #expect(!(try CertificateInfo(pem: leaf)).isIssued(by: root.pem))
    }

    @Test func garbageIsRejected() {
        let e = #expect(throws: CredentialError.self) { try CertificateInfo(pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", source: "x.crt") }
        #expect(e?.code == .invalidCertificate)
        #expect(e?.message.hasPrefix("x.crt:") == true)
        #expect(throws: CredentialError.self) { try CertificateInfo(pem: NodeKey.generate().pem) }
    }
}
