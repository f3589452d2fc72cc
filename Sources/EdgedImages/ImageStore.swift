// The image store: content-addressed blobs, unpacked layers and an index of images under one root directory.

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import EdgedHTTP
import Logging
import NIOCore

/// Keeps images for containers: pulls them from registries, imports archives, unpacks each layer once, and
/// removes what nothing uses.
///
/// Layout under `root`:
/// - `blobs/sha256/<hex>`: verified blobs (manifests, configs, compressed layers), shared between images;
/// - `layers/<diffid-hex>/`: each layer unpacked once, in overlayfs form;
/// - `index.json`: the images (written via temp file + fsync + rename + fsync of the directory);
/// - `tmp/`: work in progress, emptied at start. Nothing becomes visible before it is complete and verified:
///   layers are unpacked in `tmp/` and renamed into `layers/` in the same step that writes the index.
///
/// One actor serialises index changes; concurrent pulls of one reference share one download, and blobs or
/// layers an operation in flight depends on are pinned so that garbage collection leaves them alone.
public actor ImageStore {
    public nonisolated let root: String
    public nonisolated let platform: Platform
    let insecureRegistries: [String]
    let logger: Logger
    let http: HTTPClient
    var images: [String: ImageRecord] = [:]
    /// Blob digests ("sha256:…") and layer keys ("layer:<hex>") held by operations in flight.
    var pins: [String: Int] = [:]
    var pulls: [String: Task<StoredImage, Error>] = [:]

    /// Opens (creating if needed) the store at `root` and clears leftovers of interrupted work in `root/tmp`.
    ///
    /// - Throws: `ImageError.io` when the directories cannot be made, `.corruptArchive` when index.json does
    ///   not decode.
    public init(root: String, platform: Platform = .host, insecureRegistries: [String] = ["localhost", "127.0.0.0/8"],
                logger: Logger = Logger(label: "edged.images")) throws {
        self.root = root
        self.platform = platform
        self.insecureRegistries = insecureRegistries
        self.logger = logger
        for dir in ["blobs/sha256", "layers", "tmp"] { try FS.makeDirectories("\(root)/\(dir)") }
        for leftover in FS.list("\(root)/tmp") { try FS.removeTree("\(root)/tmp/\(leftover)") }
        // Leftover temp files of an interrupted index write.
        for name in FS.list(root) where name.hasPrefix("index.json.tmp-") { unlink("\(root)/\(name)") }
        if FS.exists("\(root)/index.json") {
            let bytes = try FS.readFile("\(root)/index.json", limit: 64 << 20)
            let index = try JSON.decode(IndexFile.self, bytes, what: "image index \(root)/index.json")
            for image in index.images { images[image.manifestDigest] = image }
        }
        // Redirects are followed by RegistrySession (it drops Authorization when the host changes).
        http = HTTPClient(configuration: HTTPClientConfiguration(connectTimeout: .seconds(15), userAgent: "edged"))
    }

    /// The directory whose archives `importDirectory` picks up by default: `<root>/import`.
    public nonisolated var importPath: String { "\(root)/import" }

    /// Closes the HTTP client. Call once, after the last pull.
    public func shutdown() async throws {
        await http.shutdown()
    }

    // MARK: Queries

    /// The image named `reference` ("busybox", "docker.io/library/busybox:latest", "name@sha256:…") or with
    /// that manifest digest ("sha256:…"); nil when not in the store.
    public func resolve(_ reference: String) -> StoredImage? {
        record(for: reference).map(stored)
    }

    /// Every image, sorted by first name then digest.
    public func list() -> [StoredImage] {
        images.values.sorted { ($0.references.first ?? "~", $0.manifestDigest) < ($1.references.first ?? "~", $1.manifestDigest) }
            .map(stored)
    }

    func record(for reference: String) -> ImageRecord? {
        if Digest.isValid(reference) { return images[reference] }
        guard let ref = try? ImageReference(parsing: reference) else { return nil }
        if let digest = ref.digest {
            guard let image = images[digest] else { return nil }
            // "name@digest" must also match the name's repository, unless only known by digest.
            return image
        }
        let name = ref.normalized
        return images.values.first { $0.references.contains(name) }
    }

    func stored(_ r: ImageRecord) -> StoredImage {
        StoredImage(references: r.references, manifestDigest: r.manifestDigest, configDigest: r.configDigest,
                    config: r.config, architecture: r.architecture, os: r.os, size: r.size,
                    layerPaths: r.layers.map { layerPath($0.diffID) })
    }

    nonisolated func blobPath(_ digest: String) -> String { "\(root)/blobs/sha256/\(Digest.hex(digest))" }
    nonisolated func layerPath(_ diffID: String) -> String { "\(root)/layers/\(Digest.hex(diffID))" }

    // MARK: Removal

    /// Drops the name `reference`; the image goes when no name is left (or at once when `reference` is a
    /// digest), and with it the blobs and layers no other image uses.
    ///
    /// - Throws: `ImageError.notFound` when no image has that name, `.inUse` when the image would go but its
    ///   manifest digest is in `inUse`, `.io` when writing the index fails.
    public func remove(_ reference: String, inUse: Set<String> = []) throws {
        guard var image = record(for: reference) else {
            throw ImageError(.notFound, "image \(reference) is not in the store (see edgectl images)")
        }
        let byDigest = Digest.isValid(reference) || ((try? ImageReference(parsing: reference))?.digest != nil)
        if !byDigest, let name = try? ImageReference(parsing: reference).normalized {
            image.references.removeAll { $0 == name }
        } else {
            image.references = []
        }
        if image.references.isEmpty && inUse.contains(image.manifestDigest) {
            throw ImageError(.inUse, "image \(reference) is used by a container; stop its pods first")
        }
        var next = images
        if image.references.isEmpty { next[image.manifestDigest] = nil } else { next[image.manifestDigest] = image }
        try writeIndex(next)
        images = next
        _ = sweep()
    }

    /// Removes every image whose manifest digest is not in `inUse`, then every blob and unpacked layer no image
    /// uses. Returns the manifest digests of the removed images and the bytes freed.
    ///
    /// - Throws: `ImageError.io` when writing the index fails.
    public func garbageCollect(inUse: Set<String>) throws -> (removed: [String], freedBytes: Int64) {
        let removed = images.keys.filter { !inUse.contains($0) }.sorted()
        if !removed.isEmpty {
            var next = images
            for digest in removed { next[digest] = nil }
            try writeIndex(next)
            images = next
        }
        let freed = sweep()
        logger.info("image GC", metadata: ["removed": "\(removed.count)", "freedBytes": "\(freed)"])
        return (removed, freed)
    }

    /// Deletes blobs and layer directories that no indexed image references and no operation pins.
    func sweep() -> Int64 {
        var blobs = Set<String>()
        var layers = Set<String>()
        for image in images.values {
            blobs.formUnion(image.blobs.map(Digest.hex))
            layers.formUnion(image.layers.map { Digest.hex($0.diffID) })
        }
        var freed: Int64 = 0
        for hex in FS.list("\(root)/blobs/sha256") where !blobs.contains(hex) && pins["sha256:\(hex)", default: 0] == 0 {
            let path = "\(root)/blobs/sha256/\(hex)"
            freed += FS.fileSize(path) ?? 0
            unlink(path)
        }
        for hex in FS.list("\(root)/layers") where !layers.contains(hex) && pins["layer:\(hex)", default: 0] == 0 {
            let path = "\(root)/layers/\(hex)"
            freed += FS.treeSize(path)
            do { try FS.removeTree(path) } catch { logger.warning("cannot remove unused layer", metadata: ["error": "\(error)"]) }
        }
        return freed
    }

    func writeIndex(_ next: [String: ImageRecord]) throws(ImageError) {
        let file = IndexFile(version: 1, images: next.values.sorted { $0.manifestDigest < $1.manifestDigest })
        try FS.writeFileAtomically("\(root)/index.json", JSON.encode(file))
    }
}
