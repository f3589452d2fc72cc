import EdgedCredentials
import EdgedTestSupport
import Foundation
import Testing

@Suite struct NodeCSRTests {
    @Test func clientRequestVerifiesWithOpenSSLAndNamesTheNode() throws {
        let dir = try TempDir("edged-cred-csr")
        defer { dir.remove() }
        let key = NodeKey.generate()
        let csr = try NodeCSR.client(nodeName: "edge-1", key: key)
        #expect(csr.signerName == "kubernetes.io/kube-apiserver-client-kubelet")
        #expect(csr.usages == ["digital signature", "client auth"])
        #expect(csr.pem.hasPrefix("-----BEGIN CERTIFICATE REQUEST-----\n"))
        let path = try writeTemp(csr.pem, in: dir)
        let out = try tool(["openssl", "req", "-in", path, "-noout", "-text", "-verify"])
        #expect((out.stdout + out.stderr).contains("verify OK"))
        let subject = try tool(["openssl", "req", "-in", path, "-noout", "-subject", "-nameopt", "RFC2253"]).stdout
        #expect(subject.trimmingCharacters(in: .whitespacesAndNewlines) == "subject=CN=system:node:edge-1,O=system:nodes")
        #expect(!out.stdout.contains("Subject Alternative Name"))
        // The request carries this node's key.
        let pub = try tool(["openssl", "req", "-in", path, "-noout", "-pubkey"]).stdout
        #expect(pub == key.publicKeyPEM)
    }

    @Test func servingRequestHasTheSANs() throws {
        let dir = try TempDir("edged-cred-csr")
        defer { dir.remove() }
        let csr = try NodeCSR.serving(nodeName: "edge-1", key: .generate(), dnsNames: ["edge-1", "edge-1.local"],
                                      ipAddresses: ["10.0.0.5", "fd00::1"])
        #expect(csr.signerName == "kubernetes.io/kubelet-serving")
        #expect(csr.usages == ["digital signature", "server auth"])
        let path = try writeTemp(csr.pem, in: dir)
        let out = try tool(["openssl", "req", "-in", path, "-noout", "-text", "-verify"])
        #expect((out.stdout + out.stderr).contains("verify OK"))
        #expect(out.stdout.contains("DNS:edge-1, DNS:edge-1.local, IP Address:10.0.0.5, IP Address:FD00:0:0:0:0:0:0:1"))
        #expect(out.stdout.contains("CN = system:node:edge-1"))
    }

    @Test func badInputsAreNamed() {
        let key = NodeKey.generate()
        let badName = #expect(throws: CredentialError.self) { try NodeCSR.client(nodeName: "Edge_1", key: key) }
        #expect(badName?.code == .invalidRequest)
        #expect(badName?.message.contains("\"Edge_1\"") == true)
        let badIP = #expect(throws: CredentialError.self) {
            try NodeCSR.serving(nodeName: "edge-1", key: key, dnsNames: [], ipAddresses: ["10.0.0.300"])
        }
        #expect(badIP?.message.contains("\"10.0.0.300\" is not an IPv4 or IPv6 address") == true)
        let noSAN = #expect(throws: CredentialError.self) {
            try NodeCSR.serving(nodeName: "edge-1", key: key, dnsNames: [], ipAddresses: [])
        }
        #expect(noSAN?.message.contains("has no DNS name or IP address") == true)
    }
}
