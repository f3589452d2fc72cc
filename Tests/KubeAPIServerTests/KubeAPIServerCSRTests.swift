// CertificateSigningRequests (auto-approval, manual approval, denial, signer rules) and ServiceAccount tokens.

import Foundation
import Testing
@testable import EdgedTestSupport

private func csrBody(_ name: String, pem: String, signer: String, usages: [String], seconds: Int? = nil) -> [String: Any] {
    var spec: [String: Any] = ["request": Data(pem.utf8).base64EncodedString(), "signerName": signer, "usages": usages]
    if let seconds { spec["expirationSeconds"] = seconds }
    return ["apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": ["name": name], "spec": spec]
}

private let csrs = "/apis/certificates.k8s.io/v1/certificatesigningrequests"

@Suite struct KubeAPIServerCSRTests {
    @Test func bootstrapperGetsAClientCertificateAutoApproved() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        try f.server.addBootstrapToken(id: "abcdef", secret: "0123456789abcdef")
        let tok = Credentials.token("abcdef.0123456789abcdef")
        let req = try TestPKI.makeCSR(cn: "system:node:edge-1", orgs: ["system:nodes"])
        // Watch from the list's resourceVersion, so events are replayed even if curl connects after the POST.
        let rv = try #require(str(try f.request("GET", csrs, as: tok).json, "metadata.resourceVersion"))
        let w = try f.watch("\(csrs)?watch=1&resourceVersion=\(rv)&fieldSelector=metadata.name%3Dnode-csr-1", as: tok)
        defer { w.stop() }
        let created = try f.request("POST", csrs, csrBody("node-csr-1", pem: req.csrPEM,
            signer: "kubernetes.io/kube-apiserver-client-kubelet", usages: ["digital signature", "client auth"], seconds: 1800), as: tok)
        #expect(created.code == 201)
        #expect(str(created.json, "spec.username") == "system:bootstrap:abcdef")
        #expect((value(created.json, "spec.groups") as? [String])?.contains("system:bootstrappers") == true)
        #expect(value(created.json, "status.certificate") == nil)
        // ADDED, then the approval, then the certificate: three changes, as the controllers would write them.
        #expect(try await w.next()["type"] as? String == "ADDED")
        let approved = try await w.next()
        #expect(str(approved, "object.status.conditions.0.type") == "Approved")
        #expect(str(approved, "object.status.conditions.0.reason") == "AutoApproved")
        let signed = try await w.next()
        let b64 = try #require(str(signed, "object.status.certificate"))
        let pem = String(decoding: try #require(Data(base64Encoded: b64)), as: UTF8.self)
        let info = try f.server.pki.inspect(certPEM: pem)
        #expect(info.signedByCA && info.clientAuth && !info.serverAuth)
        #expect(info.commonName == "system:node:edge-1" && info.organizations == ["system:nodes"])
        let life = info.notAfter.timeIntervalSince(Date())
        #expect(life > 1700 && life <= 1801)   // spec.expirationSeconds shortens the 1 h default

        // The signed certificate authenticates as the node, which may read its own Node (the node authorizer).
        let creds = Credentials.cert(TestKeyPair(certPEM: pem, keyPEM: req.keyPEM))
        let nodes = try f.request("GET", "/api/v1/nodes?fieldSelector=metadata.name%3Dedge-1", as: creds)
        #expect(nodes.code == 200)
        #expect(f.server.requests().last?.user == "system:node:edge-1")
    }

    @Test func manualApprovalDenialAndSignerRules() async throws {
        let f = try await APIFixture(options: .init(autoApproveCSRs: false))
        defer { Task { await f.close() } }
        let serving = try TestPKI.makeCSR(cn: "system:node:edge-1", orgs: ["system:nodes"], dns: ["edge-1"], ips: ["192.168.1.10"])
        let c = try f.request("POST", csrs, csrBody("serving", pem: serving.csrPEM, signer: "kubernetes.io/kubelet-serving",
                                                   usages: ["digital signature", "key encipherment", "server auth"]))
        #expect(c.code == 201)
        #expect(value(try f.request("GET", "\(csrs)/serving").json, "status.certificate") == nil)
        try f.server.approveCSR("serving")
        let got = try f.request("GET", "\(csrs)/serving")
        let pem = String(decoding: Data(base64Encoded: try #require(str(got.json, "status.certificate")))!, as: UTF8.self)
        let info = try f.server.pki.inspect(certPEM: pem)
        #expect(info.serverAuth && info.dnsNames == ["edge-1"] && info.ipAddresses == [[192, 168, 1, 10]])

        // Approval through the /approval subresource, as kubectl certificate approve does.
        let client = try TestPKI.makeCSR(cn: "system:node:edge-2", orgs: ["system:nodes"])
        let c2 = try f.request("POST", csrs, csrBody("client", pem: client.csrPEM,
            signer: "kubernetes.io/kube-apiserver-client-kubelet", usages: ["digital signature", "client auth"]))
        var approval = c2.json
        approval["status"] = ["conditions": [["type": "Approved", "status": "True", "reason": "Test", "message": "ok"]]]
        #expect(try f.request("PUT", "\(csrs)/client/approval", approval).code == 200)
        #expect(str(try f.request("GET", "\(csrs)/client").json, "status.certificate") != nil)

        // Denied: no certificate.
        let d = try TestPKI.makeCSR(cn: "system:node:edge-3", orgs: ["system:nodes"])
        try f.request("POST", csrs, csrBody("denied", pem: d.csrPEM, signer: "kubernetes.io/kube-apiserver-client-kubelet",
                                            usages: ["digital signature", "client auth"]))
        try f.server.denyCSR("denied")
        let denied = try f.request("GET", "\(csrs)/denied")
        #expect(str(denied.json, "status.conditions.0.type") == "Denied")
        #expect(value(denied.json, "status.certificate") == nil)

        // A request that breaks the signer's rules (wrong subject) fails instead of being signed.
        let bad = try TestPKI.makeCSR(cn: "mallory", orgs: ["system:masters"])
        try f.request("POST", csrs, csrBody("bad", pem: bad.csrPEM, signer: "kubernetes.io/kube-apiserver-client-kubelet",
                                            usages: ["digital signature", "client auth"]))
        try f.server.approveCSR("bad")
        let failed = try f.request("GET", "\(csrs)/bad")
        let conds = value(failed.json, "status.conditions") as? [[String: Any]] ?? []
        #expect(conds.contains { $0["type"] as? String == "Failed" && $0["reason"] as? String == "SignerValidationFailure" })
        #expect(value(failed.json, "status.certificate") == nil)

        // Not a CSR at all: 422.
        let junk = try f.request("POST", csrs, csrBody("junk", pem: "hello", signer: "kubernetes.io/kubelet-serving", usages: ["server auth"]))
        #expect(junk.code == 422)
        #expect(str(junk.json, "details.causes.0.field") == "spec.request")
        #expect(throws: KubeAPIServer.Failure.self) { try f.server.approveCSR("missing") }
    }

    @Test func serviceAccountTokens() async throws {
        let f = try await APIFixture()
        defer { Task { await f.close() } }
        try f.request("POST", "/api/v1/namespaces/default/serviceaccounts", ["metadata": ["name": "robot"]])
        let tr = try f.request("POST", "/api/v1/namespaces/default/serviceaccounts/robot/token",
                               ["apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                "spec": ["audiences": ["api"], "expirationSeconds": 3600]])
        #expect(tr.code == 201)
        let token = try #require(str(tr.json, "status.token"))
        #expect(str(tr.json, "status.expirationTimestamp") != nil)
        #expect(token.split(separator: ".").count == 3)
        let r = try f.request("GET", "/api/v1/namespaces/default/pods", as: .token(token))
        #expect(r.code == 403)
        #expect(str(r.json, "message")?.contains("system:serviceaccount:default:robot") == true)
        #expect(try f.request("GET", "/api", as: .token(token)).code == 200)
        let short = try f.request("POST", "/api/v1/namespaces/default/serviceaccounts/robot/token", ["spec": ["expirationSeconds": 60]])
        #expect(short.code == 422)
        #expect(try f.request("POST", "/api/v1/namespaces/default/serviceaccounts/nobody/token", ["spec": [:] as [String: Any]]).code == 404)
        // Deleting the ServiceAccount invalidates its tokens.
        try f.request("DELETE", "/api/v1/namespaces/default/serviceaccounts/robot")
        #expect(try f.request("GET", "/api", as: .token(token)).code == 401)
    }
}
