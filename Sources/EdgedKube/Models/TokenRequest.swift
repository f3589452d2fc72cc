// authentication.k8s.io/v1 TokenRequest: projected serviceAccountToken volumes.

import EdgedCore

public struct TokenRequest: KubeObject, Equatable {
    public var apiVersion: String?
    public var kind: String?
    public var metadata: ObjectMeta
    public var spec: TokenRequestSpec
    public var status: TokenRequestStatus?

    public init(metadata: ObjectMeta = ObjectMeta(), spec: TokenRequestSpec) {
        self.apiVersion = "authentication.k8s.io/v1"
        self.kind = "TokenRequest"
        self.metadata = metadata
        self.spec = spec
    }
}

public struct TokenRequestSpec: Codable, Sendable, Equatable {
    public var audiences: [String]
    public var expirationSeconds: Int64?
    /// The pod the token is bound to (invalidated when the pod goes away).
    public var boundObjectRef: BoundObjectReference?

    public init(audiences: [String] = [], expirationSeconds: Int64? = nil, boundObjectRef: BoundObjectReference? = nil) {
        self.audiences = audiences
        self.expirationSeconds = expirationSeconds
        self.boundObjectRef = boundObjectRef
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        audiences = try c.decodeIfPresent([String].self, forKey: .audiences) ?? []
        expirationSeconds = try c.decodeIfPresent(Int64.self, forKey: .expirationSeconds)
        boundObjectRef = try c.decodeIfPresent(BoundObjectReference.self, forKey: .boundObjectRef)
    }
}

public struct BoundObjectReference: Codable, Sendable, Equatable {
    public var kind: String?
    public var apiVersion: String?
    public var name: String?
    public var uid: String?

    public init(kind: String? = "Pod", apiVersion: String? = "v1", name: String?, uid: String?) {
        self.kind = kind
        self.apiVersion = apiVersion
        self.name = name
        self.uid = uid
    }
}

public struct TokenRequestStatus: Codable, Sendable, Equatable {
    public var token: String
    /// metav1.Time text.
    public var expirationTimestamp: String?
}
