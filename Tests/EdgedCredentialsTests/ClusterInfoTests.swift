import Crypto
import EdgedCredentials
import EdgedTestSupport
import Foundation
import Testing

/// cluster-info as kubeadm publishes it, signed by independent HMAC implementations.
@Suite struct ClusterInfoTests {
    let token = try! BootstrapToken(parsing: "abcdef.0123456789abcdef")

    static func kubeconfig(server: String, caPEM: String) -> String {
        """
        apiVersion: v1
        clusters:
        - cluster:
            certificate-authority-data: \(Data(caPEM.utf8).base64EncodedString())
            server: \(server)
          name: ""
        contexts: null
        current-context: ""
        kind: Config
        preferences: {}
        users: null

        """
    }

    static func base64url(_ data: Data) -> String {
        var s = data.base64EncodedString()
        while s.hasSuffix("=") { s.removeLast() }
        return String(s.map { $0 == "+" ? "-" : $0 == "/" ? "_" : $0 })
    }

    static let header = base64url(Data(#"{"alg":"HS256","kid":"abcdef"}"#.utf8))

    /// The detached JWS signed with swift-crypto's HMAC directly (not through DetachedJWS).
    static func cryptoJWS(_ payload: String, secret: String) -> String {
        let input = header + "." + base64url(Data(payload.utf8))
        let mac = HMAC<SHA256>.authenticationCode(for: Data(input.utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return header + ".." + base64url(Data(mac))
    }

    /// The detached JWS signed with `openssl dgst -sha256 -hmac`.
    static func opensslJWS(_ payload: String, secret: String, dir: TempDir) throws -> String {
        let input = try writeTemp(header + "." + base64url(Data(payload.utf8)), in: dir)
        let sig = dir.sub(UUID().uuidString)
        try tool(["openssl", "dgst", "-sha256", "-hmac", secret, "-binary", "-out", sig, input])
        return header + ".." + base64url(try Data(contentsOf: URL(fileURLWithPath: sig)))
    }

    @Test func verifiesJWSFromSwiftCryptoAndOpenSSL() throws {
        let dir = try TempDir("edged-cred-ci")
        defer { dir.remove() }
        let ca = try OpenSSLCA.make(in: dir, name: "cluster-ca", rsa: true)
        let kubeconfig = Self.kubeconfig(server: "https://10.0.0.1:6443", caPEM: ca.pem)
        let pin = try CAPin(parsing: ca.kubeadmHash(in: dir))
        let viaOpenSSL = try Self.opensslJWS(kubeconfig, secret: token.secret, dir: dir)
        let viaCrypto = Self.cryptoJWS(kubeconfig, secret: token.secret)
        #expect(viaOpenSSL == viaCrypto)
        // Our signer produces the bootstrap signer's exact bytes.
        #expect(DetachedJWS.sign(payload: Array(kubeconfig.utf8), token: token) == viaOpenSSL)
        for jws in [viaOpenSSL, viaCrypto] {
            let data = ["kubeconfig": kubeconfig, "jws-kubeconfig-abcdef": jws, "jws-kubeconfig-zzzzzz": "x..y"]
            let info = try ClusterInfo.verify(configMapData: data, token: token, caPins: [pin])
            #expect(info.server == "https://10.0.0.1:6443")
            #expect(info.caPEM == ca.pem)
        }
        // No pins: signature still checked, pinning skipped.
        let unpinned = try ClusterInfo.verify(configMapData: ["kubeconfig": kubeconfig, "jws-kubeconfig-abcdef": viaCrypto], token: token, caPins: [])
        #expect(unpinned.server == "https://10.0.0.1:6443")
    }

    @Test func unknownTokenSaysSo() throws {
        let dir = try TempDir("edged-cred-ci")
        defer { dir.remove() }
        let ca = try OpenSSLCA.make(in: dir, name: "cluster-ca")
        let kubeconfig = Self.kubeconfig(server: "https://api:6443", caPEM: ca.pem)
        let other = try BootstrapToken(parsing: "zzzzzz.0123456789abcdef")
        let data = ["kubeconfig": kubeconfig, "jws-kubeconfig-zzzzzz": DetachedJWS.sign(payload: Array(kubeconfig.utf8), token: other)]
        let error = #expect(throws: CredentialError.self) { try ClusterInfo.verify(configMapData: data, token: token, caPins: []) }
        #expect(error?.code == .tokenNotValid)
        #expect(error?.message == "token abcdef is not valid for this cluster (no jws-kubeconfig-abcdef in kube-public/cluster-info): check the token with kubeadm token list")
    }

    @Test func wrongSecretOrTamperedKubeconfigFailsTheSignature() throws {
        let dir = try TempDir("edged-cred-ci")
        defer { dir.remove() }
        let ca = try OpenSSLCA.make(in: dir, name: "cluster-ca")
        let kubeconfig = Self.kubeconfig(server: "https://api:6443", caPEM: ca.pem)
        let wrongSecret = try Self.opensslJWS(kubeconfig, secret: "ffffffffffffffff", dir: dir)
        let e1 = #expect(throws: CredentialError.self) {
            try ClusterInfo.verify(configMapData: ["kubeconfig": kubeconfig, "jws-kubeconfig-abcdef": wrongSecret], token: token, caPins: [])
        }
        #expect(e1?.code == .signatureMismatch)
        #expect(e1?.message.contains("does not match token abcdef") == true)

        let good = Self.cryptoJWS(kubeconfig, secret: token.secret)
        let tampered = kubeconfig.replacingOccurrences(of: "https://api:6443", with: "https://evil:6443")
        let e2 = #expect(throws: CredentialError.self) {
            try ClusterInfo.verify(configMapData: ["kubeconfig": tampered, "jws-kubeconfig-abcdef": good], token: token, caPins: [])
        }
        #expect(e2?.code == .signatureMismatch)

        for bad in ["garbage", "a.b.c", Self.header + "..!!!", Self.base64url(Data(#"{"alg":"none"}"#.utf8)) + "..AAAA",
                    Self.base64url(Data(#"{"alg":"HS256","kid":"other1"}"#.utf8)) + "..AAAA"] {
            let e = #expect(throws: CredentialError.self) {
                try ClusterInfo.verify(configMapData: ["kubeconfig": kubeconfig, "jws-kubeconfig-abcdef": bad], token: token, caPins: [])
            }
            #expect(e?.code == .signatureMismatch)
            #expect(e?.message.contains("jws-kubeconfig-abcdef in kube-public/cluster-info") == true)
        }
    }

    @Test func pinMismatchAfterAValidSignature() throws {
        let dir = try TempDir("edged-cred-ci")
        defer { dir.remove() }
        let ca = try OpenSSLCA.make(in: dir, name: "cluster-ca")
        let attacker = try OpenSSLCA.make(in: dir, name: "attacker-ca")
        let kubeconfig = Self.kubeconfig(server: "https://api:6443", caPEM: attacker.pem)
        let data = ["kubeconfig": kubeconfig, "jws-kubeconfig-abcdef": Self.cryptoJWS(kubeconfig, secret: token.secret)]
        let expected = try ca.kubeadmHash(in: dir)
        let error = #expect(throws: CredentialError.self) {
            try ClusterInfo.verify(configMapData: data, token: token, caPins: [CAPin(parsing: expected)])
        }
        #expect(error?.code == .pinMismatch)
        #expect(error?.message == "the cluster CA's hash is \(try attacker.kubeadmHash(in: dir)), expected \(expected): check --ca-cert-hash")
    }

    @Test func malformedKubeconfigsAreReported() throws {
        let cases: [(String, String)] = [
            ("kind: Config\nclusters: [", "not valid YAML"),
            ("kind: Config\n", "no clusters[0].cluster"),
            ("clusters:\n- cluster:\n    certificate-authority-data: AAAA\n", "has no server"),
            ("clusters:\n- cluster:\n    server: https://x\n", "no base64 certificate-authority-data"),
            ("clusters:\n- cluster:\n    server: https://x\n    certificate-authority-data: \(Data("hello".utf8).base64EncodedString())\n", "cluster-info certificate-authority-data: "),
        ]
        for (kubeconfig, expected) in cases {
            let data = ["kubeconfig": kubeconfig, "jws-kubeconfig-abcdef": Self.cryptoJWS(kubeconfig, secret: token.secret)]
            let error = #expect(throws: CredentialError.self) { try ClusterInfo.verify(configMapData: data, token: token, caPins: []) }
            #expect(error?.code == .invalidClusterInfo, "\(kubeconfig)")
            #expect(error?.message.contains(expected) == true, "\(error?.message ?? "")")
        }
        let missing = #expect(throws: CredentialError.self) { try ClusterInfo.verify(configMapData: [:], token: token, caPins: []) }
        #expect(missing?.message.contains("has no kubeconfig key") == true)
    }
}
