import EdgedCredentials
import EdgedTestSupport
import Foundation
import Testing

@Suite struct NodeKeyTests {
    @Test func generatedKeyIsSEC1PEMThatOpenSSLReads() throws {
        let dir = try TempDir("edged-cred-key")
        defer { dir.remove() }
        let key = NodeKey.generate()
        #expect(key.pem.hasPrefix("-----BEGIN EC PRIVATE KEY-----\n"))
        let path = try writeTemp(key.pem, in: dir)
        let text = try tool(["openssl", "ec", "-in", path, "-noout", "-text", "-check"])
        #expect(text.stdout.contains("ASN1 OID: prime256v1"))
        #expect(text.stderr.contains("EC Key valid") || text.stdout.contains("EC Key valid"))
        // openssl derives the same public key as we report.
        let pub = try tool(["openssl", "pkey", "-in", path, "-pubout"]).stdout
        #expect(pub == key.publicKeyPEM)
    }

    @Test func roundTripsThroughPEM() throws {
        let key = NodeKey.generate()
        let back = try NodeKey(pem: key.pem)
        #expect(back.privateKey.rawRepresentation == key.privateKey.rawRepresentation)
        #expect(back.publicKeyPEM == key.publicKeyPEM)
    }

    @Test func decodesKeysMadeByOpenSSL() throws {
        let dir = try TempDir("edged-cred-key")
        defer { dir.remove() }
        // SEC1, as `openssl ecparam -genkey` writes it (with an EC PARAMETERS block in front).
        let sec1 = dir.sub("sec1.key")
        try tool(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-out", sec1])
        let sec1Key = try NodeKey(pem: String(contentsOfFile: sec1, encoding: .utf8))
        let sec1Pub = try tool(["openssl", "pkey", "-in", sec1, "-pubout"]).stdout
        #expect(sec1Key.publicKeyPEM == sec1Pub)
        // PKCS#8, as `openssl genpkey` writes it.
        let pkcs8 = dir.sub("pkcs8.key")
        try tool(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", pkcs8])
        let pkcs8Text = try String(contentsOfFile: pkcs8, encoding: .utf8)
        #expect(pkcs8Text.contains("BEGIN PRIVATE KEY"))
        let pkcs8Key = try NodeKey(pem: pkcs8Text)
        #expect(pkcs8Key.publicKeyPEM == (try tool(["openssl", "pkey", "-in", pkcs8, "-pubout"]).stdout))
    }

    @Test func rejectsOtherKeysAndGarbage() throws {
        let dir = try TempDir("edged-cred-key")
        defer { dir.remove() }
        let rsa = dir.sub("rsa.key")
        try tool(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", rsa])
        let rsaError = #expect(throws: CredentialError.self) {
            try NodeKey(pem: String(contentsOfFile: rsa, encoding: .utf8), source: rsa)
        }
        #expect(rsaError?.code == .invalidKey)
        #expect(rsaError?.message.contains(rsa) == true)
        #expect(rsaError?.message.contains("P-256") == true)

        let p384 = dir.sub("p384.key")
        try tool(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", p384])
        #expect(throws: CredentialError.self) { try NodeKey(pem: String(contentsOfFile: p384, encoding: .utf8)) }

        let none = #expect(throws: CredentialError.self) { try NodeKey(pem: "hello", source: "x.pem") }
        #expect(none?.code == .invalidKey)
        #expect(none?.message.hasPrefix("x.pem:") == true)
    }
}
