// The kubelet API's self-signed serving pair (kubelet.crt/kubelet.key), as kubelet's GenerateSelfSignedCertKey makes
// it: a CA "<host>-ca@<unix>" signing "<host>@<unix>" for serverAuth, valid from an hour ago for a year; checked
// with openssl too. Made again only when the stored pair is unusable.

import EdgedCredentials
import EdgedTestSupport
import Foundation
import Testing

@Suite struct SelfSignedServingTests {
    @Test func madeLikeKubeletsAndVerifiedByOpenSSL() throws {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let (chain, keyPEM) = try SelfSignedServing.generate(hostName: "edge-7", ipAddresses: ["10.0.0.7", "fd00::7"], now: now)
        let info = try CertificateInfo(pem: chain, source: "chain")
        #expect(info.chain.count == 2, "the serving certificate, then its CA")
        #expect(info.commonName == "edge-7@1800000000")
        #expect(info.issuerCommonName == "edge-7-ca@1800000000")
        #expect(info.dnsNames == ["edge-7"])
        #expect(info.ipAddresses == ["10.0.0.7", "fd00::7"])
        #expect(info.notBefore == now.addingTimeInterval(-3600))
        #expect(info.notAfter == now.addingTimeInterval(-3600 + 365 * 86400))
        #expect(info.matches(try NodeKey(pem: keyPEM)))
        // The leaf chains to the CA in the same file (and to nothing else).
        let second = try #require(chain.range(of: "-----BEGIN CERTIFICATE-----", range: chain.index(after: chain.startIndex)..<chain.endIndex))
        let caPEM = String(chain[second.lowerBound...])
        #expect(try CertificateInfo(pem: caPEM).commonName == "edge-7-ca@1800000000")
        #expect(info.isIssued(by: caPEM))

        guard findExecutable("openssl") != nil else { return }
        let dir = try TempDir("edged-selfsigned")
        defer { dir.remove() }
        try caPEM.write(toFile: dir.sub("ca.pem"), atomically: true, encoding: .utf8)
        try chain.write(toFile: dir.sub("chain.pem"), atomically: true, encoding: .utf8)
        let verify = try runCommand(["openssl", "verify", "-attime", "1800000000", "-purpose", "sslserver", "-CAfile", dir.sub("ca.pem"), dir.sub("chain.pem")], check: false)
        #expect(verify.status == 0 && verify.stdout.contains("OK"), "\(verify.stdout)\(verify.stderr)")
        // An IP as the host name goes in as an IP SAN (kubelet: netutils.ParseIPSloppy(host)).
        let byIP = try CertificateInfo(pem: try SelfSignedServing.generate(hostName: "192.168.1.9", ipAddresses: ["192.168.1.9"]).certificatePEM)
        #expect(byIP.dnsNames.isEmpty && byIP.ipAddresses == ["192.168.1.9"])
    }

    @Test func keptWhileUsableAndMadeAgainWhenNot() throws {
        let dir = try TempDir("edged-selfsigned-store")
        defer { dir.remove() }
        let s = SelfSignedServing(store: CredentialStore(dir: dir.sub("pki")))
        #expect(try s.ensure(hostName: "edge-1", ipAddresses: ["127.0.0.1"]))
        let first = try String(contentsOfFile: s.certPath, encoding: .utf8)
        let mode = try FileManager.default.attributesOfItem(atPath: s.keyPath)[.posixPermissions] as? Int
        #expect(mode == 0o600, "the key is private")
        // Usable: kept (a restart serves the same certificate).
        #expect(try s.ensure(hostName: "edge-1", ipAddresses: ["127.0.0.1"]) == false)
        #expect(try String(contentsOfFile: s.certPath, encoding: .utf8) == first)
        // Less than a day left: made again.
        #expect(try s.ensure(hostName: "edge-1", ipAddresses: [], now: Date().addingTimeInterval(364.5 * 86400)))
        let second = try String(contentsOfFile: s.certPath, encoding: .utf8)
        #expect(second != first)
        // A key that does not belong to the certificate, or a half-written file: made again.
        try NodeKey.generate().pem.write(toFile: s.keyPath, atomically: true, encoding: .utf8)
        #expect(!s.usable())
        #expect(try s.ensure(hostName: "edge-1", ipAddresses: []))
        try "-----BEGIN CERTIFICATE-----\nhalf".write(toFile: s.certPath, atomically: true, encoding: .utf8)
        #expect(try s.ensure(hostName: "edge-1", ipAddresses: []))
        #expect(s.usable())
        // An address that is not one: refused with a message naming it.
        let e = #expect(throws: CredentialError.self) { try SelfSignedServing.generate(hostName: "edge-1", ipAddresses: ["10.0.0.300"]) }
        #expect(e?.message.contains("\"10.0.0.300\" is not an IPv4 or IPv6 address") == true)
    }
}
