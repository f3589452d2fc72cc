// The subset of the Kubernetes core/v1 Pod that edged reads. Field names and JSON shape follow the API exactly,
// so manifests written for kubelet work unchanged.

/// Object metadata (the fields edged uses).
public struct ObjectMeta: Codable, Sendable, Equatable {
    public var name: String?
    public var namespace: String?
    public var uid: String?
    public var labels: [String: String]?
    public var annotations: [String: String]?
    public var resourceVersion: String?
    public var generation: Int64?
    public var creationTimestamp: String?
    public var generateName: String?
    /// Set by the API server when a graceful delete starts; the node then stops the pod within the grace period.
    public var deletionTimestamp: String?
    public var deletionGracePeriodSeconds: Int64?
    public var ownerReferences: [OwnerReference]?
    public var finalizers: [String]?

    public init(name: String? = nil, namespace: String? = nil, uid: String? = nil,
                labels: [String: String]? = nil, annotations: [String: String]? = nil) {
        self.name = name
        self.namespace = namespace
        self.uid = uid
        self.labels = labels
        self.annotations = annotations
    }
}

public struct OwnerReference: Codable, Sendable, Equatable {
    public var apiVersion: String
    public var kind: String
    public var name: String
    public var uid: String
    public var controller: Bool?
    public var blockOwnerDeletion: Bool?
    public init(apiVersion: String, kind: String, name: String, uid: String, controller: Bool? = nil) {
        self.apiVersion = apiVersion
        self.kind = kind
        self.name = name
        self.uid = uid
        self.controller = controller
    }
}

/// A Pod, as written in a manifest or served by the API server.
public struct Pod: Codable, Sendable, Equatable {
    public var apiVersion: String?
    public var kind: String?
    public var metadata: ObjectMeta
    public var spec: PodSpec
    public var status: PodStatus?

    public init(apiVersion: String? = "v1", kind: String? = "Pod", metadata: ObjectMeta, spec: PodSpec, status: PodStatus? = nil) {
        self.apiVersion = apiVersion
        self.kind = kind
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }

    public var name: String { metadata.name ?? "" }
    public var namespace: String { metadata.namespace ?? "default" }
    /// "namespace/name", the key kubelet logs pods by.
    public var fullName: String { "\(namespace)/\(name)" }
}

public struct PodSpec: Codable, Sendable, Equatable {
    public var containers: [Container]
    public var initContainers: [Container]?
    public var restartPolicy: RestartPolicy?
    public var terminationGracePeriodSeconds: Int64?
    public var activeDeadlineSeconds: Int64?
    public var hostNetwork: Bool?
    public var hostPID: Bool?
    public var hostIPC: Bool?
    public var hostname: String?
    public var subdomain: String?
    public var nodeName: String?
    public var volumes: [Volume]?
    public var securityContext: PodSecurityContext?
    public var shareProcessNamespace: Bool?
    public var priority: Int32?
    public var priorityClassName: String?
    public var serviceAccountName: String?
    public var dnsPolicy: String?
    public var nodeSelector: [String: String]?
    public var automountServiceAccountToken: Bool?
    public var enableServiceLinks: Bool?
    public var imagePullSecrets: [LocalObjectReference]?
    public var tolerations: [Toleration]?

    public init(containers: [Container], initContainers: [Container]? = nil, restartPolicy: RestartPolicy? = nil,
                terminationGracePeriodSeconds: Int64? = nil, hostNetwork: Bool? = nil, volumes: [Volume]? = nil) {
        self.containers = containers
        self.initContainers = initContainers
        self.restartPolicy = restartPolicy
        self.terminationGracePeriodSeconds = terminationGracePeriodSeconds
        self.hostNetwork = hostNetwork
        self.volumes = volumes
    }
}

public enum RestartPolicy: String, Codable, Sendable {
    case always = "Always"
    case onFailure = "OnFailure"
    case never = "Never"
}

public enum PullPolicy: String, Codable, Sendable {
    case always = "Always"
    case ifNotPresent = "IfNotPresent"
    case never = "Never"
}

public struct Container: Codable, Sendable, Equatable {
    public var name: String
    public var image: String?
    public var command: [String]?
    public var args: [String]?
    public var workingDir: String?
    public var env: [EnvVar]?
    public var envFrom: [EnvFromSource]?
    public var ports: [ContainerPort]?
    public var resources: ResourceRequirements?
    public var volumeMounts: [VolumeMount]?
    public var livenessProbe: Probe?
    public var readinessProbe: Probe?
    public var startupProbe: Probe?
    public var imagePullPolicy: PullPolicy?
    public var securityContext: SecurityContext?
    public var stdin: Bool?
    public var tty: Bool?
    public var terminationMessagePath: String?

    public init(name: String, image: String? = nil, command: [String]? = nil, args: [String]? = nil) {
        self.name = name
        self.image = image
        self.command = command
        self.args = args
    }
}

public struct EnvVar: Codable, Sendable, Equatable {
    public var name: String
    public var value: String?
    public var valueFrom: EnvVarSource?
    public init(name: String, value: String?, valueFrom: EnvVarSource? = nil) {
        self.name = name
        self.value = value
        self.valueFrom = valueFrom
    }
}

public struct EnvVarSource: Codable, Sendable, Equatable {
    public var fieldRef: ObjectFieldSelector?
    public var resourceFieldRef: ResourceFieldSelector?
    public var configMapKeyRef: KeySelector?
    public var secretKeyRef: KeySelector?
    public init(fieldRef: ObjectFieldSelector? = nil, resourceFieldRef: ResourceFieldSelector? = nil,
                configMapKeyRef: KeySelector? = nil, secretKeyRef: KeySelector? = nil) {
        self.fieldRef = fieldRef
        self.resourceFieldRef = resourceFieldRef
        self.configMapKeyRef = configMapKeyRef
        self.secretKeyRef = secretKeyRef
    }
}

public struct ObjectFieldSelector: Codable, Sendable, Equatable {
    public var apiVersion: String?
    public var fieldPath: String
    public init(fieldPath: String) { self.fieldPath = fieldPath }
}

public struct ResourceFieldSelector: Codable, Sendable, Equatable {
    public var containerName: String?
    public var resource: String
    public var divisor: Quantity?
    public init(resource: String, containerName: String? = nil) { self.resource = resource; self.containerName = containerName }
}

/// configMapKeyRef / secretKeyRef.
public struct KeySelector: Codable, Sendable, Equatable {
    public var name: String
    public var key: String
    public var optional: Bool?
    public init(name: String, key: String, optional: Bool? = nil) { self.name = name; self.key = key; self.optional = optional }
}

public struct EnvFromSource: Codable, Sendable, Equatable {
    public var prefix: String?
    public var configMapRef: NameRef?
    public var secretRef: NameRef?
    public init(prefix: String? = nil, configMapRef: NameRef? = nil, secretRef: NameRef? = nil) {
        self.prefix = prefix
        self.configMapRef = configMapRef
        self.secretRef = secretRef
    }
}

/// A reference by name with an `optional` flag (envFrom's configMapRef / secretRef).
public struct NameRef: Codable, Sendable, Equatable {
    public var name: String
    public var optional: Bool?
    public init(name: String, optional: Bool? = nil) { self.name = name; self.optional = optional }
}

public struct LocalObjectReference: Codable, Sendable, Equatable {
    public var name: String
    public init(name: String) { self.name = name }
}

public struct Toleration: Codable, Sendable, Equatable {
    public var key: String?
    public var `operator`: String?
    public var value: String?
    public var effect: String?
    public var tolerationSeconds: Int64?

    public init(key: String? = nil, operator op: String? = nil, value: String? = nil, effect: String? = nil,
                tolerationSeconds: Int64? = nil) {
        self.key = key
        self.operator = op
        self.value = value
        self.effect = effect
        self.tolerationSeconds = tolerationSeconds
    }
}

public struct ContainerPort: Codable, Sendable, Equatable {
    public var name: String?
    public var containerPort: Int32
    public var hostPort: Int32?
    public var `protocol`: String?
}

public struct ResourceRequirements: Codable, Sendable, Equatable {
    public var limits: [String: Quantity]?
    public var requests: [String: Quantity]?
    public init(limits: [String: Quantity]? = nil, requests: [String: Quantity]? = nil) {
        self.limits = limits
        self.requests = requests
    }
}

public struct VolumeMount: Codable, Sendable, Equatable {
    public var name: String
    public var mountPath: String
    public var readOnly: Bool?
    public var subPath: String?
    public init(name: String, mountPath: String, readOnly: Bool? = nil) {
        self.name = name
        self.mountPath = mountPath
        self.readOnly = readOnly
    }
}

public struct Volume: Codable, Sendable, Equatable {
    public var name: String
    public var emptyDir: EmptyDirVolumeSource?
    public var hostPath: HostPathVolumeSource?
    public var configMap: ConfigMapVolumeSource?
    public var secret: SecretVolumeSource?
    public var downwardAPI: DownwardAPIVolumeSource?
    public var projected: ProjectedVolumeSource?
    public init(name: String, emptyDir: EmptyDirVolumeSource? = nil, hostPath: HostPathVolumeSource? = nil,
                configMap: ConfigMapVolumeSource? = nil, secret: SecretVolumeSource? = nil) {
        self.name = name
        self.emptyDir = emptyDir
        self.hostPath = hostPath
        self.configMap = configMap
        self.secret = secret
    }

    /// Volume source kinds edged knows; any other key in a volume (nfs, csi, ...) is reported as unsupported.
    public static let supportedSources = ["emptyDir", "hostPath", "configMap", "secret", "downwardAPI", "projected"]
}

/// One key of a configMap/secret projected to a relative path.
public struct KeyToPath: Codable, Sendable, Equatable {
    public var key: String
    public var path: String
    public var mode: Int32?
    public init(key: String, path: String, mode: Int32? = nil) { self.key = key; self.path = path; self.mode = mode }
}

public struct ConfigMapVolumeSource: Codable, Sendable, Equatable {
    public var name: String?
    public var items: [KeyToPath]?
    public var defaultMode: Int32?
    public var optional: Bool?
    public init(name: String?, items: [KeyToPath]? = nil, defaultMode: Int32? = nil, optional: Bool? = nil) {
        self.name = name
        self.items = items
        self.defaultMode = defaultMode
        self.optional = optional
    }
}

public struct SecretVolumeSource: Codable, Sendable, Equatable {
    public var secretName: String?
    public var items: [KeyToPath]?
    public var defaultMode: Int32?
    public var optional: Bool?
    public init(secretName: String?, items: [KeyToPath]? = nil, defaultMode: Int32? = nil, optional: Bool? = nil) {
        self.secretName = secretName
        self.items = items
        self.defaultMode = defaultMode
        self.optional = optional
    }
}

public struct DownwardAPIVolumeFile: Codable, Sendable, Equatable {
    public var path: String
    public var fieldRef: ObjectFieldSelector?
    public var resourceFieldRef: ResourceFieldSelector?
    public var mode: Int32?
}

public struct DownwardAPIVolumeSource: Codable, Sendable, Equatable {
    public var items: [DownwardAPIVolumeFile]?
    public var defaultMode: Int32?
}

public struct ServiceAccountTokenProjection: Codable, Sendable, Equatable {
    public var audience: String?
    public var expirationSeconds: Int64?
    public var path: String
}

public struct VolumeProjection: Codable, Sendable, Equatable {
    public var configMap: ConfigMapProjection?
    public var secret: SecretProjection?
    public var downwardAPI: DownwardAPIProjection?
    public var serviceAccountToken: ServiceAccountTokenProjection?
}

public struct ConfigMapProjection: Codable, Sendable, Equatable {
    public var name: String?
    public var items: [KeyToPath]?
    public var optional: Bool?
}

public struct SecretProjection: Codable, Sendable, Equatable {
    public var name: String?
    public var items: [KeyToPath]?
    public var optional: Bool?
}

public struct DownwardAPIProjection: Codable, Sendable, Equatable {
    public var items: [DownwardAPIVolumeFile]?
}

public struct ProjectedVolumeSource: Codable, Sendable, Equatable {
    public var sources: [VolumeProjection]?
    public var defaultMode: Int32?
}

public struct EmptyDirVolumeSource: Codable, Sendable, Equatable {
    public var medium: String?
    public var sizeLimit: Quantity?
    public init(medium: String? = nil, sizeLimit: Quantity? = nil) { self.medium = medium; self.sizeLimit = sizeLimit }
}

public struct HostPathVolumeSource: Codable, Sendable, Equatable {
    public var path: String
    /// "", DirectoryOrCreate, Directory, FileOrCreate, File, Socket, CharDevice, BlockDevice.
    public var type: String?
    public init(path: String, type: String? = nil) { self.path = path; self.type = type }
}

public struct Probe: Codable, Sendable, Equatable {
    public var exec: ExecAction?
    public var httpGet: HTTPGetAction?
    public var tcpSocket: TCPSocketAction?
    public var initialDelaySeconds: Int32?
    public var timeoutSeconds: Int32?
    public var periodSeconds: Int32?
    public var successThreshold: Int32?
    public var failureThreshold: Int32?
    public var terminationGracePeriodSeconds: Int64?
}

public struct ExecAction: Codable, Sendable, Equatable {
    public var command: [String]?
}

public struct HTTPGetAction: Codable, Sendable, Equatable {
    public var path: String?
    public var port: IntOrString
    public var host: String?
    public var scheme: String?
    public var httpHeaders: [HTTPHeader]?
}

public struct HTTPHeader: Codable, Sendable, Equatable {
    public var name: String
    public var value: String
}

public struct TCPSocketAction: Codable, Sendable, Equatable {
    public var port: IntOrString
    public var host: String?
}

/// An int-or-string field (ports may be named).
public enum IntOrString: Codable, Sendable, Equatable {
    case int(Int)
    case string(String)

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let i = try? c.decode(Int.self) { self = .int(i) } else { self = .string(try c.decode(String.self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .int(let i): try c.encode(i)
        case .string(let s): try c.encode(s)
        }
    }
}

public struct PodSecurityContext: Codable, Sendable, Equatable {
    public var runAsUser: Int64?
    public var runAsGroup: Int64?
    public var runAsNonRoot: Bool?
    public var supplementalGroups: [Int64]?
    public var fsGroup: Int64?
    public var seccompProfile: SeccompProfile?
    public var sysctls: [Sysctl]?
}

public struct Sysctl: Codable, Sendable, Equatable {
    public var name: String
    public var value: String
}

public struct SecurityContext: Codable, Sendable, Equatable {
    public var privileged: Bool?
    public var runAsUser: Int64?
    public var runAsGroup: Int64?
    public var runAsNonRoot: Bool?
    public var readOnlyRootFilesystem: Bool?
    public var allowPrivilegeEscalation: Bool?
    public var capabilities: Capabilities?
    public var seccompProfile: SeccompProfile?
    public init() {}
}

public struct Capabilities: Codable, Sendable, Equatable {
    public var add: [String]?
    public var drop: [String]?
    public init(add: [String]? = nil, drop: [String]? = nil) { self.add = add; self.drop = drop }
}

public struct SeccompProfile: Codable, Sendable, Equatable {
    /// RuntimeDefault, Unconfined or Localhost.
    public var type: String
    public var localhostProfile: String?
    public init(type: String, localhostProfile: String? = nil) { self.type = type; self.localhostProfile = localhostProfile }
}
