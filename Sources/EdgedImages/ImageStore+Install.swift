// Installing an image: fetch and verify its blobs, unpack new layers in tmp/, then commit everything at once.

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import CZlib

/// Where an image's blobs come from.
enum BlobSource: Sendable {
    /// An OCI image layout: `<dir>/blobs/sha256/<hex>`. `movable`: the dir is ours (an unpacked archive in tmp/),
    /// so verified blobs are renamed instead of copied.
    case layout(dir: String, movable: Bool)
    /// A registry repository.
    case registry(RegistrySession)
    /// Already ingested into the store by the caller (docker archives).
    case store
}

/// The state of one import or pull: what it pinned, added and unpacked, so a failure can undo all of it.
final class Transaction {
    var pinned: [String] = []
    var addedBlobs: [String] = []
    var tempDirs: [String] = []
}

/// An image whose blobs are in the store and whose new layers are unpacked in tmp/, not yet visible.
struct PreparedImage {
    var record: ImageRecord
    var newLayers: [(temp: String, diffID: String)]
}

extension ImageStore {
    func pin(_ key: String, _ tx: Transaction) {
        pins[key, default: 0] += 1
        tx.pinned.append(key)
    }

    func release(_ tx: Transaction) {
        for key in tx.pinned {
            pins[key, default: 1] -= 1
            if pins[key] == 0 { pins[key] = nil }
        }
        tx.pinned = []
    }

    /// Undoes a failed operation: temp dirs go, and blobs it added that nothing else uses or pins.
    func rollback(_ tx: Transaction) {
        release(tx)
        for dir in tx.tempDirs { try? FS.removeTree(dir) }
        let used = Set(images.values.flatMap(\.blobs))
        for digest in tx.addedBlobs where !used.contains(digest) && pins[digest, default: 0] == 0 {
            unlink(blobPath(digest))
        }
    }

    func newTempPath(_ kind: String) -> String { "\(root)/tmp/\(FS.uniqueName(kind))" }

    /// Makes sure the blob `d` is in the store, verified; pins it for the transaction.
    func ensureBlob(_ d: Descriptor, from source: BlobSource, what: String, tx: Transaction) async throws {
        guard Digest.isValid(d.digest) else {
            throw ImageError(.corruptArchive, "\(what) has an unsupported digest \"\(d.digest)\" (edged knows sha256 only)")
        }
        pin(d.digest, tx)
        let final = blobPath(d.digest)
        if FS.exists(final) { return }
        let tmp = newTempPath("blob")
        switch source {
        case .store:
            throw ImageError(.missingBlob, "\(what) is missing")
        case let .layout(dir, movable):
            let src = try resolveInside(dir, "blobs/sha256/\(Digest.hex(d.digest))", what: what)
            guard FS.exists(src) else {
                throw ImageError(.missingBlob, "\(what) is missing from the image layout (blobs/sha256/\(Digest.hex(d.digest))): the archive is incomplete, export it again")
            }
            let root = self.root
            _ = try await Task.detached {
                try ImageStore.ingestFile(src, temp: tmp, expected: d.digest, expectedSize: d.size, what: what, move: movable, root: root)
            }.value
        case let .registry(session):
            do {
                try await session.downloadBlob(d, to: tmp, what: what)
            } catch {
                unlink(tmp)
                throw error
            }
        }
        guard rename(tmp, final) == 0 else {
            let e = errno
            unlink(tmp)
            throw FS.ioError("cannot store blob", final, e)
        }
        tx.addedBlobs.append(d.digest)
    }

    /// Hashes `src` (copying it to `temp`, or renaming it there when `move`), and checks digest and size.
    /// Returns the digest and size seen. With `expected` nil, any digest is accepted.
    nonisolated static func ingestFile(_ src: String, temp: String, expected: String?, expectedSize: Int64?, what: String,
                                       move: Bool, root: String) throws(ImageError) -> (digest: String, size: Int64) {
        let source = HashingSource(try FileSource(path: src, label: what))
        var out: OwnedFD?
        if !move {
            let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw FS.ioError("cannot create", temp) }
            out = OwnedFD(fd)
        }
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 << 10, alignment: 1)
        defer { buf.deallocate() }
        do throws(ImageError) {
            while true {
                let n = try source.read(into: buf)
                if n == 0 { break }
                if let out { try FS.writeAll(out.fd, UnsafeRawBufferPointer(rebasing: buf[0..<n]), path: temp) }
            }
            let got = source.digest
            if let expected, got != expected {
                throw ImageError(.digestMismatch, "\(what): digest mismatch (want \(expected), got \(got)); the file is corrupt, get it again")
            }
            if let expectedSize, expectedSize != source.count {
                throw ImageError(.digestMismatch, "\(what): size mismatch (want \(expectedSize) bytes, got \(source.count))")
            }
            if let out {
                guard fsync(out.fd) == 0 else { throw FS.ioError("cannot fsync", temp) }
            } else if rename(src, temp) != 0 {
                throw FS.ioError("cannot move", src)
            }
            return (got, source.count)
        } catch {
            if !move { unlink(temp) }
            throw error
        }
    }

    /// Resolves `relative` under `dir`, following symlinks but never out of `dir` (archives may use symlinks
    /// between their own files, like docker save does for shared layers).
    nonisolated func resolveInside(_ dir: String, _ relative: String, what: String) throws(ImageError) -> String {
        var stack: [String] = []
        var pending = relative.split(separator: "/").map(String.init).reversed() as [String]
        var hops = 0
        while let comp = pending.popLast() {
            if comp == "." || comp.isEmpty { continue }
            if comp == ".." {
                _ = stack.popLast()
                continue
            }
            let candidate = ([dir] + stack + [comp]).joined(separator: "/")
            if FS.lstatMode(candidate) == S_IFLNK {
                hops += 1
                guard hops < 40 else { throw ImageError(.corruptArchive, "\(what): too many symlinks at \(relative)") }
                var buf = [CChar](repeating: 0, count: 4096)
                let n = readlink(candidate, &buf, buf.count - 1)
                guard n > 0 else { throw FS.ioError("cannot read link", candidate) }
                let target = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if target.hasPrefix("/") { stack = [] }
                pending.append(contentsOf: target.split(separator: "/").map(String.init).reversed())
            } else {
                stack.append(comp)
            }
        }
        return ([dir] + stack).joined(separator: "/")
    }

    /// Fetches, verifies and unpacks (into tmp/) everything the manifest needs.
    ///
    /// - Throws: `ImageError` `.unsupportedMediaType`, `.compression` (zstd), `.platformNotFound`,
    ///   `.missingBlob`, `.digestMismatch`, `.corruptArchive`, `.unsafeEntry`, registry errors.
    func prepare(manifestBytes: [UInt8], manifestDigest: String, names: [String], label: String,
                 source: BlobSource, tx: Transaction) async throws -> PreparedImage {
        let manifest = try JSON.decode(Manifest.self, manifestBytes, what: "manifest \(manifestDigest) of \(label)")
        guard MediaType.configs.contains(manifest.config.mediaType) else {
            throw ImageError(.unsupportedMediaType, "\(label): config media type \"\(manifest.config.mediaType)\" is not a container image (edged runs \(MediaType.ociConfig) and \(MediaType.dockerConfig) images)")
        }
        for layer in manifest.layers {
            if MediaType.zstdLayers.contains(layer.mediaType) {
                throw ImageError(.compression, "layer \(layer.digest) of \(label) uses \(layer.mediaType); this edged build has no zstd support: re-push the image with gzip layers")
            }
            guard MediaType.layers.contains(layer.mediaType) else {
                throw ImageError(.unsupportedMediaType, "layer \(layer.digest) of \(label) has unknown media type \"\(layer.mediaType)\"; edged unpacks OCI/Docker tar and tar+gzip layers")
            }
        }
        // The manifest itself goes into the store too: it was verified by the caller.
        pin(manifestDigest, tx)
        if !FS.exists(blobPath(manifestDigest)) {
            let tmp = newTempPath("manifest")
            try FS.writeFileAtomically(tmp, manifestBytes)
            guard rename(tmp, blobPath(manifestDigest)) == 0 else { throw FS.ioError("cannot store", blobPath(manifestDigest)) }
            tx.addedBlobs.append(manifestDigest)
        }
        try await ensureBlob(manifest.config, from: source, what: "config \(manifest.config.digest) of \(label)", tx: tx)
        let configBytes = try FS.readFile(blobPath(manifest.config.digest))
        let config = try JSON.decode(ImageConfigDocument.self, configBytes, what: "config \(manifest.config.digest) of \(label)")
        let imagePlatform = Platform(os: config.os ?? "linux", architecture: config.architecture ?? platform.architecture,
                                     variant: config.variant)
        guard platform.accepts(imagePlatform) else {
            throw ImageError(.platformNotFound, "\(label) is for \(imagePlatform), this node is \(platform): use an image (or index) built for \(platform)")
        }
        guard config.rootfs.diff_ids.count == manifest.layers.count else {
            throw ImageError(.corruptArchive, "\(label): manifest has \(manifest.layers.count) layers but config lists \(config.rootfs.diff_ids.count) diff_ids")
        }
        var newLayers: [(String, String)] = []
        var layers: [ImageRecord.Layer] = []
        for (i, layer) in manifest.layers.enumerated() {
            let diffID = config.rootfs.diff_ids[i]
            guard Digest.isValid(diffID) else {
                throw ImageError(.corruptArchive, "\(label): config has an invalid diff_id \"\(diffID)\"")
            }
            let what = "layer \(layer.digest) of \(label)"
            try await ensureBlob(layer, from: source, what: what, tx: tx)
            layers.append(.init(digest: layer.digest, diffID: diffID, mediaType: layer.mediaType, size: layer.size))
            pin("layer:\(Digest.hex(diffID))", tx)
            if FS.exists(layerPath(diffID)) || newLayers.contains(where: { $0.1 == diffID }) { continue }
            let temp = newTempPath("layer")
            tx.tempDirs.append(temp)
            let blob = blobPath(layer.digest)
            try await Task.detached {
                try ImageStore.unpackLayer(blob: blob, into: temp, diffID: diffID, mediaType: layer.mediaType, what: what)
            }.value
            newLayers.append((temp, diffID))
        }
        let inner = config.config
        let imageConfig = ImageConfig(entrypoint: inner?.Entrypoint, cmd: inner?.Cmd, env: inner?.Env,
                                      workingDir: inner?.WorkingDir.flatMap { $0.isEmpty ? nil : $0 },
                                      user: inner?.User.flatMap { $0.isEmpty ? nil : $0 },
                                      exposedPorts: inner?.ExposedPorts.map { $0.keys.sorted() },
                                      stopSignal: inner?.StopSignal)
        let size = Int64(manifestBytes.count) + manifest.config.size + manifest.layers.reduce(0) { $0 + $1.size }
        let record = ImageRecord(manifestDigest: manifestDigest, references: names, configDigest: manifest.config.digest,
                                 config: imageConfig, os: imagePlatform.os, architecture: imagePlatform.architecture,
                                 variant: imagePlatform.variant, layers: layers, size: size)
        return PreparedImage(record: record, newLayers: newLayers)
    }

    /// Unpacks one layer blob into `dir` (created here), checking that the uncompressed stream hashes to `diffID`.
    nonisolated static func unpackLayer(blob: String, into dir: String, diffID: String, mediaType: String,
                                        what: String) throws(ImageError) {
        guard mkdir(dir, 0o755) == 0 else { throw FS.ioError("cannot create", dir) }
        let raw = try FileSource(path: blob, label: what)
        let plain = HashingSource(try decompressing(raw, label: what, mediaType: mediaType))
        let unpacker = try LayerUnpacker(root: dir, label: what, options: .layer)
        try unpacker.unpack(TarReader(plain, label: what))
        try plain.drain()
        guard plain.digest == diffID else {
            throw ImageError(.digestMismatch, "\(what): digest mismatch of the uncompressed layer (want \(diffID), got \(plain.digest)); the image is corrupt")
        }
    }

    /// Makes prepared images visible: renames their new layers into layers/ and writes the index, all without
    /// suspending, so no other call sees half of it.
    func commit(_ prepared: [PreparedImage], tx: Transaction) throws -> [StoredImage] {
        var renamed: [String] = []
        func undo() { for dir in renamed { try? FS.removeTree(dir) } }
        // Layer files must be on disk before the index that points at them.
        let rootFD = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if rootFD >= 0 {
            syncfs(rootFD)
            close(rootFD)
        }
        for p in prepared {
            for (temp, diffID) in p.newLayers {
                let final = layerPath(diffID)
                if FS.exists(final) {
                    try? FS.removeTree(temp)
                } else if rename(temp, final) == 0 {
                    renamed.append(final)
                } else {
                    let e = errno
                    undo()
                    throw FS.ioError("cannot move the unpacked layer into", final, e)
                }
            }
        }
        var next = images
        for p in prepared {
            // A name points at one image: move it here from any other.
            for (digest, var other) in next where digest != p.record.manifestDigest {
                let before = other.references.count
                other.references.removeAll { p.record.references.contains($0) }
                if other.references.count != before { next[digest] = other }
            }
            var record = p.record
            if let existing = next[record.manifestDigest] {
                record.references = existing.references + record.references.filter { !existing.references.contains($0) }
            }
            next[record.manifestDigest] = record
        }
        do {
            try FS.syncDirectory("\(root)/layers")
            try writeIndex(next)
        } catch {
            undo()
            throw error
        }
        images = next
        tx.tempDirs = []
        release(tx)
        return prepared.map { stored(next[$0.record.manifestDigest]!) }
    }
}
