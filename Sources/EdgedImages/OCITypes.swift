// OCI and Docker v2 manifest, index and config documents, and the media types edged accepts.

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

enum MediaType {
    static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    static let ociIndex = "application/vnd.oci.image.index.v1+json"
    static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    static let ociConfig = "application/vnd.oci.image.config.v1+json"
    static let dockerConfig = "application/vnd.docker.container.image.v1+json"
    static let ociLayer = "application/vnd.oci.image.layer.v1.tar"
    static let ociLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    static let ociLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
    static let dockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    static let dockerLayer = "application/vnd.docker.image.rootfs.diff.tar"

    static let manifests: Set<String> = [ociManifest, dockerManifest]
    static let indexes: Set<String> = [ociIndex, dockerManifestList]
    static let configs: Set<String> = [ociConfig, dockerConfig]
    /// Layer media types edged unpacks (compression is detected from the bytes, not trusted from the type).
    static let layers: Set<String> = [
        ociLayer, ociLayerGzip, dockerLayerGzip, dockerLayer,
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    ]
    static let zstdLayers: Set<String> = [ociLayerZstd, "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"]
    /// The Accept header for manifest requests.
    static let acceptManifests = [ociManifest, ociIndex, dockerManifest, dockerManifestList].joined(separator: ", ")
}

struct Descriptor: Codable, Sendable, Equatable {
    var mediaType: String
    var digest: String
    var size: Int64
    var platform: DescriptorPlatform?
    var annotations: [String: String]?
    var urls: [String]?
}

struct DescriptorPlatform: Codable, Sendable, Equatable {
    var os: String
    var architecture: String
    var variant: String?

    var platform: Platform { Platform(os: os, architecture: architecture, variant: variant) }
}

/// An OCI image manifest or a Docker schema 2 manifest (same shape).
struct Manifest: Codable, Sendable {
    var schemaVersion: Int?
    var mediaType: String?
    var config: Descriptor
    var layers: [Descriptor]
}

/// An OCI image index or a Docker manifest list (same shape).
struct ManifestIndex: Codable, Sendable {
    var schemaVersion: Int?
    var mediaType: String?
    var manifests: [Descriptor]
}

/// Just the mediaType field, to tell documents apart.
struct MediaTypeProbe: Codable {
    var mediaType: String?
    var manifests: [Descriptor]?
    var config: Descriptor?
}

/// The parts of an image config edged uses.
struct ImageConfigDocument: Codable, Sendable {
    struct Inner: Codable, Sendable {
        var Entrypoint: [String]?
        var Cmd: [String]?
        var Env: [String]?
        var WorkingDir: String?
        var User: String?
        var ExposedPorts: [String: EmptyObject]?
        var Labels: [String: String]?
        var StopSignal: String?
    }
    struct RootFS: Codable, Sendable {
        var type: String?
        var diff_ids: [String]
    }
    struct EmptyObject: Codable, Sendable {}

    var architecture: String?
    var os: String?
    var variant: String?
    var config: Inner?
    var rootfs: RootFS
}

/// A docker-archive's manifest.json entry (docker save).
struct DockerArchiveEntry: Codable {
    var Config: String
    var RepoTags: [String]?
    var Layers: [String]
}

enum JSON {
    static func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], what: String) throws(ImageError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch {
            throw ImageError(.corruptArchive, "\(what) is not a valid document: \(error)")
        }
    }

    static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return Array((try? e.encode(value)) ?? Data())
    }
}
