// core/v1 ConfigMap and Secret: volume and env sources.

import EdgedCore

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

public struct ConfigMap: KubeObject, Equatable {
    public var apiVersion: String?
    public var kind: String?
    public var metadata: ObjectMeta
    public var data: [String: String]?
    /// Values are base64 in JSON.
    public var binaryData: [String: Data]?
    public var immutable: Bool?

    public init(metadata: ObjectMeta, data: [String: String]? = nil, binaryData: [String: Data]? = nil) {
        self.apiVersion = "v1"
        self.kind = "ConfigMap"
        self.metadata = metadata
        self.data = data
        self.binaryData = binaryData
    }
}

public struct Secret: KubeObject, Equatable {
    public var apiVersion: String?
    public var kind: String?
    public var metadata: ObjectMeta
    /// Values are base64 in JSON; decoded here.
    public var data: [String: Data]?
    /// Write-only convenience the API server merges into `data`.
    public var stringData: [String: String]?
    /// Opaque, kubernetes.io/dockerconfigjson, kubernetes.io/service-account-token, ...
    public var type: String?
    public var immutable: Bool?

    public init(metadata: ObjectMeta, data: [String: Data]? = nil, type: String? = "Opaque") {
        self.apiVersion = "v1"
        self.kind = "Secret"
        self.metadata = metadata
        self.data = data
        self.type = type
    }
}
