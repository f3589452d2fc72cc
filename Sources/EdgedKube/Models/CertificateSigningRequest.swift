// certificates.k8s.io/v1 CertificateSigningRequest: node client/serving certificates (TLS bootstrap, rotation).

import EdgedCore

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

public struct CertificateSigningRequest: KubeObject, Equatable {
    public var apiVersion: String?
    public var kind: String?
    public var metadata: ObjectMeta
    public var spec: CertificateSigningRequestSpec
    public var status: CertificateSigningRequestStatus?

    public init(metadata: ObjectMeta, spec: CertificateSigningRequestSpec, status: CertificateSigningRequestStatus? = nil) {
        self.apiVersion = "certificates.k8s.io/v1"
        self.kind = "CertificateSigningRequest"
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }

    /// True when a condition of `type` ("Approved", "Denied", "Failed") is present with status True (or no status).
    public func hasCondition(_ type: String) -> Bool {
        status?.conditions?.contains { $0.type == type && ($0.status ?? "True") == "True" } ?? false
    }
}

public struct CertificateSigningRequestSpec: Codable, Sendable, Equatable {
    /// The PEM-encoded PKCS#10 request (base64 in JSON).
    public var request: Data
    /// kubernetes.io/kube-apiserver-client-kubelet, kubernetes.io/kubelet-serving, ...
    public var signerName: String
    /// "digital signature", "key encipherment", "client auth", "server auth".
    public var usages: [String]?
    public var expirationSeconds: Int32?
    public var username: String?
    public var uid: String?
    public var groups: [String]?

    public init(request: Data, signerName: String, usages: [String]? = nil, expirationSeconds: Int32? = nil) {
        self.request = request
        self.signerName = signerName
        self.usages = usages
        self.expirationSeconds = expirationSeconds
    }
}

public struct CertificateSigningRequestStatus: Codable, Sendable, Equatable {
    public var conditions: [CertificateSigningRequestCondition]?
    /// The issued PEM certificate chain (base64 in JSON), once signed.
    public var certificate: Data?

    public init(conditions: [CertificateSigningRequestCondition]? = nil, certificate: Data? = nil) {
        self.conditions = conditions
        self.certificate = certificate
    }
}

public struct CertificateSigningRequestCondition: Codable, Sendable, Equatable {
    /// Approved, Denied or Failed.
    public var type: String
    public var status: String?
    public var reason: String?
    public var message: String?
    public var lastUpdateTime: String?
    public var lastTransitionTime: String?

    public init(type: String, status: String? = "True", reason: String? = nil, message: String? = nil,
                lastUpdateTime: String? = nil, lastTransitionTime: String? = nil) {
        self.type = type
        self.status = status
        self.reason = reason
        self.message = message
        self.lastUpdateTime = lastUpdateTime
        self.lastTransitionTime = lastTransitionTime
    }
}
