import EdgedCredentials
import EdgedTestSupport
import Foundation
import Testing

@Suite struct CAPinTests {
    @Test(arguments: [false, true]) func pinMatchesKubeadmsOpenSSLRecipe(rsa: Bool) throws {
        let dir = try TempDir("edged-cred-pin")
        defer { dir.remove() }
        let ca = try OpenSSLCA.make(in: dir, name: "pin-ca", rsa: rsa)
        let expected = try ca.kubeadmHash(in: dir)
        let pins = try CAPin.pins(ofPEM: ca.pem)
        #expect(pins.map(\.description) == [expected])
        #expect(try CAPin(parsing: expected) == pins[0])
        try CAPin.verify(caPEM: ca.pem, against: [CAPin(parsing: expected)])
    }

    @Test func parsesTheKubeadmForm() throws {
        let hex = String(repeating: "ab", count: 32)
        let pin = try CAPin(parsing: " sha256:\(hex.uppercased())\n")
        #expect(pin.description == "sha256:\(hex)")
        #expect(pin.sha256.count == 32)
    }

    @Test(arguments: ["", "sha256:", "sha1:" + String(repeating: "a", count: 40), "sha256:" + String(repeating: "a", count: 63),
                      "sha256:" + String(repeating: "g", count: 64), String(repeating: "a", count: 64)])
    func rejectsMalformedPins(text: String) {
        let error = #expect(throws: CredentialError.self) { try CAPin(parsing: text) }
        #expect(error?.code == .invalidPin)
        #expect(error?.message.contains("\"\(text)\"") == true)
        #expect(error?.message.contains("sha256:<64 hex digits>") == true)
    }

    @Test func mismatchNamesBothHashes() throws {
        let dir = try TempDir("edged-cred-pin")
        defer { dir.remove() }
        let ca = try OpenSSLCA.make(in: dir, name: "real-ca")
        let other = try OpenSSLCA.make(in: dir, name: "other-ca")
        let actual = try ca.kubeadmHash(in: dir)
        let wrong = try other.kubeadmHash(in: dir)
        let error = #expect(throws: CredentialError.self) { try CAPin.verify(caPEM: ca.pem, against: [CAPin(parsing: wrong)]) }
        #expect(error?.code == .pinMismatch)
        #expect(error?.message == "the cluster CA's hash is \(actual), expected \(wrong): check --ca-cert-hash")
    }

    @Test func bundleMatchesWhenAnyCertificateIsPinned() throws {
        let dir = try TempDir("edged-cred-pin")
        defer { dir.remove() }
        let a = try OpenSSLCA.make(in: dir, name: "ca-a")
        let b = try OpenSSLCA.make(in: dir, name: "ca-b", rsa: true)
        let bundle = a.pem + b.pem
        #expect(try CAPin.pins(ofPEM: bundle).count == 2)
        try CAPin.verify(caPEM: bundle, against: [CAPin(parsing: b.kubeadmHash(in: dir))])
        #expect(throws: CredentialError.self) { try CAPin.verify(caPEM: "not pem", against: []) }
    }
}
