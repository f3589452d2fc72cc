// What the store tells callers about an image, and how it keeps it in its index.

/// The parts of an image config a container needs.
public struct ImageConfig: Sendable, Codable, Equatable {
    public var entrypoint: [String]?
    public var cmd: [String]?
    public var env: [String]?
    public var workingDir: String?
    public var user: String?
    /// "80/tcp" style keys of ExposedPorts.
    public var exposedPorts: [String]?
    public var stopSignal: String?

    public init(entrypoint: [String]? = nil, cmd: [String]? = nil, env: [String]? = nil, workingDir: String? = nil,
                user: String? = nil, exposedPorts: [String]? = nil, stopSignal: String? = nil) {
        self.entrypoint = entrypoint
        self.cmd = cmd
        self.env = env
        self.workingDir = workingDir
        self.user = user
        self.exposedPorts = exposedPorts
        self.stopSignal = stopSignal
    }
}

/// An image in the store, ready to run: its layers are unpacked, lowest first.
public struct StoredImage: Sendable, Equatable {
    /// Normalised names, "docker.io/library/busybox:latest"; empty for an image only known by digest.
    public var references: [String]
    public var manifestDigest: String
    public var configDigest: String
    public var config: ImageConfig
    public var architecture: String
    public var os: String
    /// Bytes of the image's blobs (manifest, config, compressed layers).
    public var size: Int64
    /// Unpacked layer directories, lowest first: the overlayfs lowerdirs (overlay wants them highest first).
    public var layerPaths: [String]
}

/// An image as the index stores it.
struct ImageRecord: Codable, Sendable, Equatable {
    struct Layer: Codable, Sendable, Equatable {
        var digest: String
        var diffID: String
        var mediaType: String
        var size: Int64
    }

    var manifestDigest: String
    var references: [String]
    var configDigest: String
    var config: ImageConfig
    var os: String
    var architecture: String
    var variant: String?
    var layers: [Layer]
    var size: Int64

    /// Every blob digest the image holds on to.
    var blobs: [String] { [manifestDigest, configDigest] + layers.map(\.digest) }
}

/// The index file: every image, written crash-safely as a whole.
struct IndexFile: Codable {
    var version: Int
    var images: [ImageRecord]
}
