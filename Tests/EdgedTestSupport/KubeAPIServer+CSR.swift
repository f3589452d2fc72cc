// CertificateSigningRequests: validation on create, (auto-)approval like kube-controller-manager's csrapproving
// controller, and signing with the cluster CA for the two kubelet signers like its csrsigning controller.

import Foundation
import SwiftASN1
import X509

extension KubeAPIServerCore {
    static let kubeletClientSigner = "kubernetes.io/kube-apiserver-client-kubelet"
    static let kubeletServingSigner = "kubernetes.io/kubelet-serving"

    static func decodeCSR(_ spec: KJSON) -> CertificateSigningRequest? {
        guard let b64 = spec["request"]?.string, let pem = Data(base64Encoded: b64) else { return nil }
        return try? CertificateSigningRequest(pemEncoded: String(decoding: pem, as: UTF8.self))
    }

    func validateCSR(_ obj: KJSON, name: String) throws {
        var causes: [APIError.Cause] = []
        let spec = obj["spec"] ?? .object([:])
        if spec["request"]?.string == nil {
            causes.append(.init(reason: "FieldValueRequired", field: "spec.request", message: "Required value"))
        } else if let csr = Self.decodeCSR(spec) {
            if !csr.publicKey.isValidSignature(csr.signature, for: csr) {
                causes.append(.init(reason: "FieldValueInvalid", field: "spec.request",
                                    message: "Invalid value: \"<request>\": x509: ECDSA verification failure"))
            }
        } else {
            causes.append(.init(reason: "FieldValueInvalid", field: "spec.request",
                                message: "Invalid value: \"<request>\": PEM block type must be CERTIFICATE REQUEST"))
        }
        if (spec["signerName"]?.string ?? "").isEmpty {
            causes.append(.init(reason: "FieldValueRequired", field: "spec.signerName", message: "Required value"))
        }
        if (spec["usages"]?.array ?? []).isEmpty {
            causes.append(.init(reason: "FieldValueRequired", field: "spec.usages", message: "Required value"))
        }
        if let s = spec["expirationSeconds"]?.int, s < 600 {
            causes.append(.init(reason: "FieldValueInvalid", field: "spec.expirationSeconds",
                                message: "Invalid value: \(s): may not specify a duration less than 600 seconds (10 minutes)"))
        }
        if !causes.isEmpty { throw APIError.invalid(kind: "CertificateSigningRequest", name: name, group: "certificates.k8s.io", causes) }
    }

    private static func condition(_ type: String, reason: String, message: String) -> KJSON {
        let now = timestamp()
        return .object(["type": .string(type), "status": .string("True"), "reason": .string(reason),
                        "message": .string(message), "lastUpdateTime": .string(now), "lastTransitionTime": .string(now)])
    }

    /// Sets an Approved or Denied condition (what `kubectl certificate approve/deny` does through /approval).
    func setCSRDecision(name: String, approve: Bool) throws {
        guard var csr = store.get(Self.csrs, namespace: nil, name: name) else { throw APIError.notFound(Self.csrs, name) }
        var conds = csr[path: ["status", "conditions"]]?.array ?? []
        conds.append(Self.condition(approve ? "Approved" : "Denied", reason: approve ? "TestApprove" : "TestDeny",
                                    message: approve ? "approved by the test" : "denied by the test"))
        csr[path: ["status", "conditions"]] = .array(conds)
        _ = try update(APITarget(resource: Self.csrs, namespace: nil, name: name, subresource: "approval", legacyWatch: false),
                       body: csr)
    }

    /// Approves (when auto-approval is on) and signs a CSR of a kubelet signer; each step is its own change, as
    /// the two controllers would write them.
    func processCSR(name: String) throws {
        guard var csr = store.get(Self.csrs, namespace: nil, name: name) else { return }
        let signer = csr[path: ["spec", "signerName"]]?.string ?? ""
        guard signer == Self.kubeletClientSigner || signer == Self.kubeletServingSigner else { return }
        let types = (csr[path: ["status", "conditions"]]?.array ?? []).compactMap { c -> String? in
            c["status"]?.string == "True" ? c["type"]?.string : nil
        }
        if types.contains("Denied") || types.contains("Failed") { return }
        if !types.contains("Approved") {
            guard options.autoApproveCSRs else { return }
            let message = signer == Self.kubeletClientSigner ? "Auto approving kubelet client certificate after SubjectAccessReview."
                : "Auto approving kubelet serving certificate (test server)."
            csr[path: ["status", "conditions"]] = .array((csr[path: ["status", "conditions"]]?.array ?? [])
                + [Self.condition("Approved", reason: "AutoApproved", message: message)])
            csr = store.commit(.modified, Self.csrs, namespace: nil, name: name, object: csr)
        }
        guard csr[path: ["status", "certificate"]] == nil else { return }
        do {
            let pem = try sign(csr)
            csr[path: ["status", "certificate"]] = .string(Data(pem.utf8).base64EncodedString())
        } catch let e as SignerFailure {
            csr[path: ["status", "conditions"]] = .array((csr[path: ["status", "conditions"]]?.array ?? [])
                + [Self.condition("Failed", reason: "SignerValidationFailure", message: e.message)])
        }
        store.commit(.modified, Self.csrs, namespace: nil, name: name, object: csr)
    }

    private struct SignerFailure: Error { let message: String }

    /// Checks the request against the signer's rules and issues the certificate (PEM).
    private func sign(_ obj: KJSON) throws -> String {
        let spec = obj["spec"] ?? .object([:])
        let signer = spec["signerName"]?.string ?? ""
        guard let csr = Self.decodeCSR(spec) else { throw SignerFailure(message: "spec.request is not a PEM certificate request") }
        let usages = (spec["usages"]?.array ?? []).compactMap { $0.string }
        var cn = "", orgs: [String] = []
        for rdn in csr.subject {
            for attr in rdn {
                if attr.type == .RDNAttributeType.commonName { cn = String(describing: attr.value) }
                if attr.type == .RDNAttributeType.organizationName { orgs.append(String(describing: attr.value)) }
            }
        }
        let sans = (try? csr.attributes.extensionRequest?.extensions.subjectAlternativeNames).flatMap { $0 }
        let sanList = sans.map { Array($0) } ?? []
        let serving = signer == Self.kubeletServingSigner
        guard orgs == ["system:nodes"], cn.hasPrefix("system:node:"), cn.count > "system:node:".count else {
            throw SignerFailure(message: "subject must be CN=system:node:<name>, O=system:nodes (got CN=\(cn), O=\(orgs))")
        }
        let allowed: Set<String> = serving ? ["digital signature", "key encipherment", "server auth"]
            : ["digital signature", "key encipherment", "client auth"]
        guard usages.contains(serving ? "server auth" : "client auth"), Set(usages).isSubset(of: allowed) else {
            throw SignerFailure(message: "usages \(usages) not allowed for \(signer) (allowed: \(allowed.sorted()))")
        }
        for san in sanList {
            switch san {
            case .dnsName, .ipAddress: if !serving { throw SignerFailure(message: "\(signer) certificates may not have SANs") }
            default: throw SignerFailure(message: "only DNS and IP SANs are allowed for \(signer)")
            }
        }
        if serving && sanList.isEmpty { throw SignerFailure(message: "\(signer) certificates need at least one DNS or IP SAN") }
        var lifetime = Double(options.certificateLifetime.components.seconds)
        if let s = spec["expirationSeconds"]?.int { lifetime = min(lifetime, Double(s)) }
        let eku: [ExtendedKeyUsage.Usage] = serving ? [.serverAuth] : [.clientAuth]
        let cert = try pki.sign(publicKey: csr.publicKey, subject: csr.subject, sans: sanList,
                                keyUsage: KeyUsage(digitalSignature: true, keyEncipherment: usages.contains("key encipherment")),
                                extendedKeyUsages: eku, lifetime: lifetime, notBefore: Date().addingTimeInterval(-300))
        return try cert.serializeAsPEM().pemString
    }
}
