// Pulling from a registry: resolve the reference, pick the node's platform from an index, fetch and install.

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension ImageStore {
    /// Pulls `reference` ("busybox", "127.0.0.1:5000/app:v1", "name@sha256:…") and returns the stored image.
    /// Blobs already in the store are not downloaded again; concurrent pulls of one reference share one pull.
    ///
    /// - Throws: `ImageError` `.invalidReference`, `.registryUnreachable`, `.unauthorized` (401 after the token or
    ///   with bad credentials), `.notFound` (404), `.registryError` (5xx), `.platformNotFound`, `.digestMismatch`,
    ///   `.unsupportedMediaType`, `.compression`, `.corruptArchive`, `.unsafeEntry`, `.io`.
    public func pull(_ reference: String, credentials: RegistryCredentials? = nil) async throws -> StoredImage {
        let ref = try ImageReference(parsing: reference)
        let key = ref.normalized
        if let running = pulls[key] { return try await running.value }
        let task = Task { try await self.performPull(ref, credentials: credentials) }
        pulls[key] = task
        defer { pulls[key] = nil }
        return try await task.value
    }

    /// True when `registry` ("host" or "host:port") is reached over plain HTTP: it (or its host) is listed, or
    /// its host is an IPv4 address inside a listed CIDR ("127.0.0.0/8").
    nonisolated func isInsecure(_ registry: String) -> Bool {
        let host = registry.split(separator: ":").first.map(String.init) ?? registry
        for entry in insecureRegistries {
            if entry == registry || entry == host { return true }
            if let slash = entry.firstIndex(of: "/"), let bits = Int(entry[entry.index(after: slash)...]),
               let net = ipv4(String(entry[..<slash])), let addr = ipv4(host), (0...32).contains(bits) {
                let mask: UInt32 = bits == 0 ? 0 : ~UInt32(0) << (32 - bits)
                if net & mask == addr & mask { return true }
            }
        }
        return false
    }

    private nonisolated func ipv4(_ s: String) -> UInt32? {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false).compactMap { UInt32($0) }
        guard parts.count == 4, parts.allSatisfy({ $0 < 256 }) else { return nil }
        return parts.reduce(0) { $0 << 8 | $1 }
    }

    private func performPull(_ ref: ImageReference, credentials: RegistryCredentials?) async throws -> StoredImage {
        let label = ref.normalized
        let session = RegistrySession(http: http, reference: ref, insecure: isInsecure(ref.registry),
                                      credentials: credentials, logger: logger)
        let tx = Transaction()
        do {
            var (bytes, mediaType, digest) = try await session.fetchManifest(ref.manifestReference)
            if let want = ref.digest, digest != want {
                throw ImageError(.digestMismatch, "manifest of \(label): digest mismatch (want \(want), got \(digest))")
            }
            if MediaType.indexes.contains(mediaType) {
                let index = try JSON.decode(ManifestIndex.self, bytes, what: "index \(digest) of \(label)")
                let chosen = try choosePlatform(index, label: label)
                (bytes, mediaType, digest) = try await session.fetchManifest(chosen.digest)
                guard digest == chosen.digest else {
                    throw ImageError(.digestMismatch, "manifest \(chosen.digest) of \(label): digest mismatch (want \(chosen.digest), got \(digest))")
                }
            }
            guard MediaType.manifests.contains(mediaType) else {
                throw ImageError(.unsupportedMediaType, "\(label): manifest media type \"\(mediaType)\" is not supported (edged pulls OCI and Docker schema 2 images)")
            }
            logger.info("pulling image", metadata: ["image": "\(label)", "manifest": "\(digest)"])
            let prepared = try await prepare(manifestBytes: bytes, manifestDigest: digest, names: [ref.normalized],
                                             label: label, source: .registry(session), tx: tx)
            return try commit([prepared], tx: tx)[0]
        } catch {
            rollback(tx)
            throw asImageError(error)
        }
    }

    /// The manifest of an index for this node's platform (an exact variant match wins).
    ///
    /// - Throws: `ImageError.platformNotFound` listing the platforms the index has.
    func choosePlatform(_ index: ManifestIndex, label: String) throws(ImageError) -> Descriptor {
        let candidates = index.manifests.filter { d in
            MediaType.manifests.contains(d.mediaType) && (d.platform.map { platform.accepts($0.platform) } ?? false)
        }
        if let exact = candidates.first(where: { $0.platform?.variant == platform.variant }) { return exact }
        if let any = candidates.first { return any }
        let have = index.manifests.compactMap { $0.platform?.platform.description }
        throw ImageError(.platformNotFound, "\(label): no manifest for platform \(platform) (the index has: \(have.isEmpty ? "no platforms" : have.joined(separator: ", "))); use an image built for \(platform)")
    }

    func asImageError(_ error: Error) -> ImageError {
        (error as? ImageError) ?? ImageError(.io, "\(error)")
    }
}
