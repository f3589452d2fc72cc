// Importing images from OCI image layouts, OCI archives and docker-archive tarballs (plain or gzip).

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

extension ImageStore {
    /// Imports every image of an OCI image layout directory, an OCI archive (a tar of a layout) or a
    /// docker-archive (`docker save`), each as a file, plain or gzip-compressed. All or nothing: on any error,
    /// no image of the archive becomes visible.
    ///
    /// Names come from `io.containerd.image.name` or `org.opencontainers.image.ref.name` (when it is a full
    /// reference) annotations, or from docker's RepoTags.
    ///
    /// - Throws: `ImageError` `.corruptArchive` (truncated, not a tar, bad JSON), `.compression`, `.missingBlob`,
    ///   `.digestMismatch`, `.unsupportedMediaType`, `.platformNotFound`, `.unsafeEntry`, `.io`.
    public func importArchive(at path: String) async throws -> [StoredImage] {
        let label = "archive \(path)"
        guard FS.exists(path) else { throw ImageError(.notFound, "\(label) does not exist") }
        if FS.isDirectory(path) {
            return try await importExtracted(path, movable: false, archive: path)
        }
        let temp = newTempPath("archive")
        guard mkdir(temp, 0o700) == 0 else { throw FS.ioError("cannot create", temp) }
        defer { try? FS.removeTree(temp) }
        do {
            try await Task.detached {
                let source = try decompressing(try FileSource(path: path, label: label), label: label)
                let unpacker = try LayerUnpacker(root: temp, label: label, options: .archive)
                try unpacker.unpack(TarReader(source, label: label))
            }.value
        } catch {
            throw asImageError(error)
        }
        return try await importExtracted(temp, movable: true, archive: path)
    }

    /// Imports every archive in `dir` (like k3s's air-gap images dir): done files move to `dir/done/`, failed ones
    /// stay with a `<name>.error` file next to them holding the message. Files ending in `.error`, hidden files and
    /// subdirectories are skipped.
    public func importDirectory(_ dir: String) async -> [(file: String, result: Result<[StoredImage], ImageError>)] {
        var results: [(file: String, result: Result<[StoredImage], ImageError>)] = []
        for name in FS.list(dir).sorted() where !name.hasPrefix(".") && !name.hasSuffix(".error") {
            let path = "\(dir)/\(name)"
            guard FS.lstatMode(path) == S_IFREG else { continue }
            do {
                let stored = try await importArchive(at: path)
                try FS.makeDirectories("\(dir)/done")
                if rename(path, "\(dir)/done/\(name)") != 0 { throw FS.ioError("cannot move to done/", path) }
                unlink("\(path).error")
                logger.info("imported archive", metadata: ["file": "\(path)", "images": "\(stored.count)"])
                results.append((path, .success(stored)))
            } catch {
                let e = asImageError(error)
                try? FS.writeFileAtomically("\(path).error", Array("\(e.message)\n".utf8))
                logger.error("cannot import archive", metadata: ["file": "\(path)", "error": "\(e.message)"])
                results.append((path, .failure(e)))
            }
        }
        return results
    }

    private func importExtracted(_ dir: String, movable: Bool, archive: String) async throws -> [StoredImage] {
        let label = "archive \(archive)"
        if FS.exists("\(dir)/manifest.json") {
            return try await importDocker(dir, movable: movable, archive: archive)
        }
        guard FS.exists("\(dir)/index.json") else {
            throw ImageError(.corruptArchive, "\(label) is neither an OCI image layout (no index.json) nor a docker archive (no manifest.json)")
        }
        let tx = Transaction()
        do {
            let indexBytes = try FS.readFile(try resolveInside(dir, "index.json", what: label))
            let index = try JSON.decode(ManifestIndex.self, indexBytes, what: "index.json of \(label)")
            var prepared: [PreparedImage] = []
            var skipped: [String] = []
            for entry in index.manifests {
                let names = try names(entry.annotations, label: label)
                let imageLabel = "\(names.first ?? entry.digest) (\(label))"
                var chosen = entry
                if MediaType.indexes.contains(entry.mediaType) {
                    let bytes = try readLayoutBlob(dir, entry, what: "index \(entry.digest) of \(imageLabel)")
                    let sub = try JSON.decode(ManifestIndex.self, bytes, what: "index \(entry.digest) of \(imageLabel)")
                    chosen = try choosePlatform(sub, label: imageLabel)
                } else if MediaType.manifests.contains(entry.mediaType) {
                    if let p = entry.platform?.platform, !platform.accepts(p) {
                        skipped.append(p.description)
                        continue
                    }
                } else {
                    throw ImageError(.unsupportedMediaType, "\(imageLabel): media type \"\(entry.mediaType)\" is not an image manifest or index")
                }
                let bytes = try readLayoutBlob(dir, chosen, what: "manifest \(chosen.digest) of \(imageLabel)")
                prepared.append(try await prepare(manifestBytes: bytes, manifestDigest: chosen.digest, names: names,
                                                  label: imageLabel, source: .layout(dir: dir, movable: movable), tx: tx))
            }
            if prepared.isEmpty {
                if !skipped.isEmpty {
                    throw ImageError(.platformNotFound, "\(label): no image for platform \(platform) (it has: \(skipped.joined(separator: ", ")))")
                }
                throw ImageError(.corruptArchive, "\(label): the image layout lists no images")
            }
            return try commit(prepared, tx: tx)
        } catch {
            rollback(tx)
            throw asImageError(error)
        }
    }

    /// Reads a small blob (manifest, index) of a layout and checks its digest.
    private func readLayoutBlob(_ dir: String, _ d: Descriptor, what: String) throws(ImageError) -> [UInt8] {
        guard Digest.isValid(d.digest) else { throw ImageError(.corruptArchive, "\(what): unsupported digest \"\(d.digest)\"") }
        let path = try resolveInside(dir, "blobs/sha256/\(Digest.hex(d.digest))", what: what)
        guard FS.exists(path) else {
            throw ImageError(.missingBlob, "\(what) is missing from the image layout: the archive is incomplete, export it again")
        }
        let bytes = try FS.readFile(path, limit: 8 << 20)
        let got = Digest.of(bytes)
        guard got == d.digest else {
            throw ImageError(.digestMismatch, "\(what): digest mismatch (want \(d.digest), got \(got))")
        }
        return bytes
    }

    /// Image names from layout annotations; a bare tag ("latest") names nothing.
    private func names(_ annotations: [String: String]?, label: String) throws(ImageError) -> [String] {
        guard let annotations else { return [] }
        let candidate = annotations["io.containerd.image.name"]
            ?? annotations["org.opencontainers.image.ref.name"].flatMap { $0.contains("/") || $0.contains(":") ? $0 : nil }
        guard let candidate else { return [] }
        do {
            return [try ImageReference(parsing: candidate).normalized]
        } catch {
            throw error.prefixed(label)
        }
    }

    /// docker save: manifest.json lists config and layer files; edged ingests them and writes a Docker schema 2
    /// manifest for each image, so docker archives and pulled images look alike in the store.
    private func importDocker(_ dir: String, movable: Bool, archive: String) async throws -> [StoredImage] {
        let label = "archive \(archive)"
        let tx = Transaction()
        do {
            let bytes = try FS.readFile(try resolveInside(dir, "manifest.json", what: label))
            let entries = try JSON.decode([DockerArchiveEntry].self, bytes, what: "manifest.json of \(label)")
            guard !entries.isEmpty else { throw ImageError(.corruptArchive, "\(label): manifest.json lists no images") }
            var ingested: [String: (digest: String, size: Int64)] = [:]
            var prepared: [PreparedImage] = []
            for entry in entries {
                var names: [String] = []
                for tag in entry.RepoTags ?? [] {
                    do { names.append(try ImageReference(parsing: tag).normalized) } catch { throw error.prefixed(label) }
                }
                let imageLabel = "\(names.first ?? entry.Config) (\(label))"
                let config = try await ingestDockerFile(dir, entry.Config, movable: movable, what: "config \(entry.Config) of \(imageLabel)", tx: tx, cache: &ingested)
                var layers: [Descriptor] = []
                for layer in entry.Layers {
                    let what = "layer \(layer) of \(imageLabel)"
                    let path = try resolveInside(dir, layer, what: what)
                    let gzip = (try? PeekableSource(FileSource(path: path, label: what)).detectCompression()) == .gzip
                    let blob = try await ingestDockerFile(dir, layer, movable: movable, what: what, tx: tx, cache: &ingested)
                    layers.append(Descriptor(mediaType: gzip ? MediaType.dockerLayerGzip : MediaType.dockerLayer,
                                             digest: blob.digest, size: blob.size))
                }
                let manifest = Manifest(schemaVersion: 2, mediaType: MediaType.dockerManifest,
                                        config: Descriptor(mediaType: MediaType.dockerConfig, digest: config.digest, size: config.size),
                                        layers: layers)
                let manifestBytes = JSON.encode(manifest)
                prepared.append(try await prepare(manifestBytes: manifestBytes, manifestDigest: Digest.of(manifestBytes),
                                                  names: names, label: imageLabel, source: .store, tx: tx))
            }
            return try commit(prepared, tx: tx)
        } catch {
            rollback(tx)
            throw asImageError(error)
        }
    }

    /// Copies (or moves) one file of a docker archive into the blob store, hashing it; `cache` remembers files
    /// already done (docker save links shared layers).
    private func ingestDockerFile(_ dir: String, _ relative: String, movable: Bool, what: String, tx: Transaction,
                                  cache: inout [String: (digest: String, size: Int64)]) async throws -> (digest: String, size: Int64) {
        let path = try resolveInside(dir, relative, what: what)
        if let done = cache[path] { return done }
        guard FS.lstatMode(path) == S_IFREG else {
            throw ImageError(.missingBlob, "\(what): \(relative) is missing from the archive; export it again")
        }
        let temp = newTempPath("blob")
        let root = self.root
        let result = try await Task.detached {
            try ImageStore.ingestFile(path, temp: temp, expected: nil, expectedSize: nil, what: what, move: movable, root: root)
        }.value
        pin(result.digest, tx)
        if FS.exists(blobPath(result.digest)) {
            unlink(temp)
        } else {
            guard rename(temp, blobPath(result.digest)) == 0 else { throw FS.ioError("cannot store", blobPath(result.digest)) }
            tx.addedBlobs.append(result.digest)
        }
        cache[path] = result
        return result
    }
}
