import EdgedImages
import EdgedTestSupport
import Foundation
import Testing

@Suite struct ImageStorePullTests {
    /// A busybox layout with index.json naming it "bb" (a bare tag, for skopeo's oci: transport).
    func busyboxLayout(_ f: ImageFixture) throws -> (TestImageLayout, TestBlob) {
        let rootfs = f.tmp.sub("rootfs")
        try makeBusyboxRootfs(at: rootfs)
        let layout = try TestImageLayout(at: f.tmp.sub("layout"))
        let manifest = try layout.addSimpleImage(fromDirectory: rootfs, name: "bb")
        return (layout, manifest)
    }

    @Test func pullsAnonymouslyAndSkipsBlobsItHas() async throws {
        let f = try ImageFixture("pull")
        defer { f.close() }
        let registry = try TestRegistry(directory: f.tmp.path)
        defer { registry.stop() }
        let (layout, manifest) = try busyboxLayout(f)
        try registry.push("oci:\(layout.path):bb", as: "edged/busybox:1")
        let ref = "\(registry.host)/edged/busybox:1"
        let image = try await f.store.pull(ref)
        #expect(image.references == [ref])
        #expect(image.manifestDigest == manifest.digest)
        #expect(image.architecture == hostOCIArchitecture)
        #expect(FileManager.default.isExecutableFile(atPath: "\(image.layerPaths[0])/bin/busybox"))
        #expect(await f.store.resolve(ref) == image)

        // Again, and by digest: same image, nothing new on disk.
        let blobs = f.entries("blobs/sha256")
        #expect(try await f.store.pull(ref) == image)
        let byDigest = try await f.store.pull("\(registry.host)/edged/busybox@\(manifest.digest)")
        #expect(byDigest.manifestDigest == image.manifestDigest)
        #expect(byDigest.references.contains(ref))
        #expect(f.entries("blobs/sha256") == blobs)
        #expect(f.entries("layers").count == 1)

        // Two pulls at once of a second tag share the work.
        try registry.push("oci:\(layout.path):bb", as: "edged/busybox:2")
        async let a = f.store.pull("\(registry.host)/edged/busybox:2")
        async let b = f.store.pull("\(registry.host)/edged/busybox:2")
        let (ra, rb) = try await (a, b)
        #expect(ra == rb)
        #expect(await f.store.list().count == 1)
        #expect(f.entries("tmp").isEmpty)
    }

    @Test func pullPicksTheNodePlatformFromAnIndex() async throws {
        let f = try ImageFixture("pull-index")
        defer { f.close() }
        let registry = try TestRegistry(directory: f.tmp.path)
        defer { registry.stop() }
        let rootfs = f.tmp.sub("rootfs")
        try makeBusyboxRootfs(at: rootfs)
        let other = hostOCIArchitecture == "arm64" ? "amd64" : "arm64"
        let layout = try TestImageLayout(at: f.tmp.sub("layout"))
        let native = try layout.addImage(layers: [try layout.addLayer(fromDirectory: rootfs)])
        let fakeDir = f.tmp.sub("fake")
        try FileManager.default.createDirectory(atPath: fakeDir, withIntermediateDirectories: true)
        try "fake\n".write(toFile: "\(fakeDir)/marker", atomically: true, encoding: .utf8)
        let fakeLayer = try layout.addLayer(fromDirectory: fakeDir)
        let foreign = try layout.addImage(layers: [fakeLayer], architecture: other)
        let index = try layout.addIndex([(foreign, other, nil), (native, hostOCIArchitecture, nil)])
        try layout.writeIndexJSON([(index, "application/vnd.oci.image.index.v1+json", "multi")])
        try registry.push("oci:\(layout.path):multi", as: "edged/multi:1", all: true)
        let image = try await f.store.pull("\(registry.host)/edged/multi:1")
        #expect(image.manifestDigest == native.digest)
        #expect(image.architecture == hostOCIArchitecture)
        #expect(!f.entries("blobs/sha256").contains(fakeLayer.blob.hex))

        // Only the other platform: a clear error.
        let only = try TestImageLayout(at: f.tmp.sub("layout2"))
        let fm = try only.addImage(layers: [try only.addLayer(fromDirectory: fakeDir)], architecture: other)
        try only.writeIndexJSON([(try only.addIndex([(fm, other, nil)]), "application/vnd.oci.image.index.v1+json", "foreign")])
        try registry.push("oci:\(only.path):foreign", as: "edged/foreign:1", all: true)
        await expectImageError(.platformNotFound, containing: ["linux/\(other)", "edged/foreign:1"]) {
            _ = try await f.store.pull("\(registry.host)/edged/foreign:1")
        }
        #expect(await f.store.list().count == 1)
    }

    @Test func pullsWithBearerTokenAuth() async throws {
        let f = try ImageFixture("pull-token")
        defer { f.close() }
        let token = try TestTokenServer(directory: f.tmp.path)
        defer { token.stop() }
        let registry = try TestRegistry(directory: f.tmp.path, token: token)
        defer { registry.stop() }
        let (layout, manifest) = try busyboxLayout(f)
        try registry.push("oci:\(layout.path):bb", as: "private/busybox:1")
        let ref = "\(registry.host)/private/busybox:1"

        await expectImageError(.unauthorized, containing: [ref]) { _ = try await f.store.pull(ref) }
        await expectImageError(.unauthorized, containing: ["token server"]) {
            _ = try await f.store.pull(ref, credentials: RegistryCredentials(username: "edged", password: "wrong"))
        }
        await f.expectNothingVisible()
        let image = try await f.store.pull(ref, credentials: RegistryCredentials(username: token.username, password: token.password))
        #expect(image.manifestDigest == manifest.digest)
        #expect(FileManager.default.fileExists(atPath: "\(image.layerPaths[0])/bin/busybox"))
    }

    @Test func corruptBlobInTheRegistryIsADigestMismatch() async throws {
        let f = try ImageFixture("pull-corrupt")
        defer { f.close() }
        let registry = try TestRegistry(directory: f.tmp.path)
        defer { registry.stop() }
        let rootfs = f.tmp.sub("rootfs")
        try makeBusyboxRootfs(at: rootfs)
        let layout = try TestImageLayout(at: f.tmp.sub("layout"))
        let layer = try layout.addLayer(fromDirectory: rootfs)
        try layout.writeIndexJSON([(try layout.addImage(layers: [layer]), "application/vnd.oci.image.manifest.v1+json", "bb")])
        try registry.push("oci:\(layout.path):bb", as: "edged/busybox:1")
        let data = registry.blobDataPath(layer.blob.digest)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: data))
        bytes[bytes.count / 3] ^= 0xff
        try bytes.write(to: URL(fileURLWithPath: data))
        let ref = "\(registry.host)/edged/busybox:1"
        await expectImageError(.digestMismatch, containing: ["layer \(layer.blob.digest) of \(ref)", "digest mismatch (want \(layer.blob.digest), got sha256:"]) {
            _ = try await f.store.pull(ref)
        }
        await f.expectNothingVisible()
    }

    @Test func missingImagesAndUnreachableRegistries() async throws {
        let f = try ImageFixture("pull-errors")
        defer { f.close() }
        let registry = try TestRegistry(directory: f.tmp.path)
        defer { registry.stop() }
        await expectImageError(.notFound, containing: ["\(registry.host)/edged/nothing", "404"]) {
            _ = try await f.store.pull("\(registry.host)/edged/nothing:1")
        }
        let closed = try freeLoopbackPort()
        await expectImageError(.registryUnreachable, containing: ["127.0.0.1:\(closed)"]) {
            _ = try await f.store.pull("127.0.0.1:\(closed)/edged/busybox:1")
        }
        await expectImageError(.invalidReference) { _ = try await f.store.pull("Not A Reference") }
        await f.expectNothingVisible()
    }

    @Test func pullFromAClosedPortFailsFastNamingTheRegistry() async throws {
        let f = try ImageFixture("pull-closed")
        defer { f.close() }
        let closed = try freeLoopbackPort()
        let start = ContinuousClock.now
        await expectImageError(.registryUnreachable, containing: ["registry 127.0.0.1:\(closed)", "connection refused"]) {
            _ = try await f.store.pull("127.0.0.1:\(closed)/edged/busybox:1")
        }
        // The refusal itself takes milliseconds (EdgedHTTPTests checks < 1 s); the margin is for the other tests of
        // this target, which block the cooperative threads with skopeo and registry subprocesses. The old
        // AsyncHTTPClient retried for about 20 s.
        #expect(ContinuousClock.now - start < .seconds(10))
        await f.expectNothingVisible()
    }
}
