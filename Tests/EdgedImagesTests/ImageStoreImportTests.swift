import EdgedImages
import EdgedTestSupport
import Foundation
import Testing

/// A store and a scratch dir for one test.
struct ImageFixture {
    let tmp: TempDir
    let store: ImageStore
    var storeRoot: String { tmp.sub("store") }

    init(_ name: String) throws {
        tmp = try TempDir("edged-images-\(name)")
        store = try ImageStore(root: tmp.sub("store"))
    }

    /// A layout with one busybox image named `name`.
    func busyboxLayout(_ dir: String, name: String = "edged.test/busybox:1", gzip: Bool = true) throws -> TestImageLayout {
        let rootfs = tmp.sub("rootfs-\(UUID().uuidString)")
        try makeBusyboxRootfs(at: rootfs)
        let layout = try TestImageLayout(at: tmp.sub(dir))
        try layout.addSimpleImage(fromDirectory: rootfs, name: name, gzip: gzip)
        return layout
    }

    func entries(_ sub: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "\(storeRoot)/\(sub)")) ?? []).sorted()
    }

    /// Nothing of a failed import is left: no images, layers, blobs or temp files.
    func expectNothingVisible(_ comment: Comment? = nil) async {
        #expect(await store.list().isEmpty, comment)
        #expect(entries("layers").isEmpty, comment)
        #expect(entries("blobs/sha256").isEmpty, comment)
        #expect(entries("tmp").isEmpty, comment)
    }

    /// Removes the scratch dir now; the store's HTTP client shuts down in the background.
    func close() {
        tmp.remove()
        let store = self.store
        Task { try? await store.shutdown() }
    }
}

func expectImageError(_ code: ImageError.Code, containing parts: [String] = [], _ body: () async throws -> Void) async {
    do {
        try await body()
        Issue.record("expected an ImageError \(code)")
    } catch let error as ImageError {
        #expect(error.code == code, "\(error.message)")
        for p in parts { #expect(error.message.contains(p), "message \"\(error.message)\" lacks \"\(p)\"") }
    } catch {
        Issue.record("expected an ImageError, got \(error)")
    }
}

@Suite struct ImageStoreImportTests {
    @Test func importsOCILayoutDirectory() async throws {
        let f = try ImageFixture("layout")
        defer { f.close() }
        let layout = try f.busyboxLayout("layout")
        let images = try await f.store.importArchive(at: layout.path)
        #expect(images.count == 1)
        let image = try #require(images.first)
        #expect(image.references == ["edged.test/busybox:1"])
        #expect(image.architecture == hostOCIArchitecture)
        #expect(image.os == "linux")
        #expect(image.config.cmd == ["/bin/sh"])
        #expect(image.config.env == ["PATH=/bin"])
        #expect(image.layerPaths.count == 1)
        let layer = image.layerPaths[0]
        #expect(FileManager.default.isExecutableFile(atPath: "\(layer)/bin/busybox"))
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: "\(layer)/bin/sh") == "busybox")
        #expect(try String(contentsOfFile: "\(layer)/etc/passwd", encoding: .utf8).contains("app:x:1000"))
        #expect(await f.store.resolve("edged.test/busybox:1") == image)
        #expect(await f.store.resolve(image.manifestDigest) == image)
        #expect(await f.store.resolve("edged.test/busybox:2") == nil)
        // The layout was copied, not consumed.
        #expect(FileManager.default.fileExists(atPath: "\(layout.path)/index.json"))
        #expect(f.entries("tmp").isEmpty)

        // The index survives a restart.
        let reopened = try ImageStore(root: f.storeRoot)
        #expect(await reopened.list() == [image])
        try await reopened.shutdown()
    }

    @Test(arguments: [false, true])
    func importsOCIArchive(gzip: Bool) async throws {
        let f = try ImageFixture("ociarchive")
        defer { f.close() }
        let layout = try f.busyboxLayout("layout", gzip: !gzip)
        let archive = f.tmp.sub("image.tar")
        try runTool(["tar", "-C", layout.path, "-cf", archive, "."])
        var path = archive
        if gzip {
            try runTool(["gzip", "-n", archive])
            path = archive + ".gz"
        }
        let images = try await f.store.importArchive(at: path)
        #expect(images.map(\.references) == [["edged.test/busybox:1"]])
        #expect(FileManager.default.fileExists(atPath: "\(images[0].layerPaths[0])/bin/busybox"))
        #expect(f.entries("tmp").isEmpty)
    }

    @Test func importsDockerArchiveAndSharesTheLayerWithTheOCIImage() async throws {
        let f = try ImageFixture("docker")
        defer { f.close() }
        let layout = try f.busyboxLayout("layout", gzip: false)
        let archive = f.tmp.sub("docker.tar")
        try runTool(["skopeo", "--insecure-policy", "copy", "oci:\(layout.path):edged.test/busybox:1",
                        "docker-archive:\(archive):busybox:latest"])
        let docker = try await f.store.importArchive(at: archive)
        #expect(docker.map(\.references) == [["docker.io/library/busybox:latest"]])
        #expect(docker[0].config.cmd == ["/bin/sh"])
        #expect(FileManager.default.isExecutableFile(atPath: "\(docker[0].layerPaths[0])/bin/busybox"))
        let oci = try await f.store.importArchive(at: layout.path)
        // Same rootfs, same diff ID: one unpacked layer for both images.
        #expect(oci[0].layerPaths == docker[0].layerPaths)
        #expect(f.entries("layers").count == 1)
        #expect(await f.store.list().count == 2)
        #expect(await f.store.resolve("busybox")?.manifestDigest == docker[0].manifestDigest)
    }

    @Test func sharedLayersAreUnpackedOnce() async throws {
        let f = try ImageFixture("dedup")
        defer { f.close() }
        let rootfs = f.tmp.sub("rootfs")
        try makeBusyboxRootfs(at: rootfs)
        let layout = try TestImageLayout(at: f.tmp.sub("layout"))
        let base = try layout.addLayer(fromDirectory: rootfs)
        var manifests: [(TestBlob, mediaType: String, name: String?)] = []
        for app in ["one", "two"] {
            let dir = f.tmp.sub("app-\(app)")
            try FileManager.default.createDirectory(atPath: "\(dir)/app", withIntermediateDirectories: true)
            try "\(app)\n".write(toFile: "\(dir)/app/name", atomically: true, encoding: .utf8)
            let top = try layout.addLayer(fromDirectory: dir)
            manifests.append((try layout.addImage(layers: [base, top], cmd: ["cat", "/app/name"]),
                              "application/vnd.oci.image.manifest.v1+json", "edged.test/\(app):1"))
        }
        try layout.writeIndexJSON(manifests)
        let images = try await f.store.importArchive(at: layout.path)
        #expect(images.count == 2)
        #expect(images[0].layerPaths[0] == images[1].layerPaths[0])
        #expect(images[0].layerPaths[1] != images[1].layerPaths[1])
        #expect(f.entries("layers").count == 3)
        #expect(try String(contentsOfFile: "\(images[1].layerPaths[1])/app/name", encoding: .utf8) == "two\n")
    }

    @Test func picksTheNodePlatformFromAnIndex() async throws {
        let f = try ImageFixture("platform")
        defer { f.close() }
        let rootfs = f.tmp.sub("rootfs")
        try makeBusyboxRootfs(at: rootfs)
        let other = hostOCIArchitecture == "arm64" ? "amd64" : "arm64"
        let layout = try TestImageLayout(at: f.tmp.sub("layout"))
        let native = try layout.addImage(layers: [try layout.addLayer(fromDirectory: rootfs)])
        let fakeDir = f.tmp.sub("fake")
        try FileManager.default.createDirectory(atPath: fakeDir, withIntermediateDirectories: true)
        try "not \(hostOCIArchitecture)\n".write(toFile: "\(fakeDir)/marker", atomically: true, encoding: .utf8)
        let foreign = try layout.addImage(layers: [try layout.addLayer(fromDirectory: fakeDir)], architecture: other)
        let index = try layout.addIndex([(foreign, other, other == "arm64" ? "v8" : nil), (native, hostOCIArchitecture, nil)])
        try layout.writeIndexJSON([(index, "application/vnd.oci.image.index.v1+json", "edged.test/multi:1")])
        let images = try await f.store.importArchive(at: layout.path)
        #expect(images.count == 1)
        #expect(images[0].manifestDigest == native.digest)
        #expect(images[0].architecture == hostOCIArchitecture)
        #expect(FileManager.default.fileExists(atPath: "\(images[0].layerPaths[0])/bin/busybox"))

        // An index with only the other platform: a clear error listing what exists.
        let g = try ImageFixture("platform-none")
        defer { g.close() }
        let only = try TestImageLayout(at: g.tmp.sub("layout"))
        let fm = try only.addImage(layers: [try only.addLayer(fromDirectory: fakeDir)], architecture: other)
        try only.writeIndexJSON([(try only.addIndex([(fm, other, nil)]), "application/vnd.oci.image.index.v1+json", "edged.test/foreign:1")])
        await expectImageError(.platformNotFound, containing: ["linux/\(other)", "edged.test/foreign:1"]) {
            _ = try await g.store.importArchive(at: only.path)
        }
        await g.expectNothingVisible()
    }

    @Test func truncatedArchivesFailAndLeaveNothing() async throws {
        let f = try ImageFixture("truncated")
        defer { f.close() }
        let layout = try f.busyboxLayout("layout", gzip: false)
        let archive = f.tmp.sub("image.tar")
        try runTool(["tar", "-C", layout.path, "-cf", archive, "."])
        let data = try Data(contentsOf: URL(fileURLWithPath: archive))
        let cut = f.tmp.sub("cut.tar")
        try data.prefix(data.count / 2 + 100).write(to: URL(fileURLWithPath: cut))
        await expectImageError(.corruptArchive, containing: [cut, "truncated"]) { _ = try await f.store.importArchive(at: cut) }
        await f.expectNothingVisible()

        try runTool(["gzip", "-n", "-k", archive])
        let gz = try Data(contentsOf: URL(fileURLWithPath: archive + ".gz"))
        let cutgz = f.tmp.sub("cut.tar.gz")
        try gz.prefix(gz.count / 2).write(to: URL(fileURLWithPath: cutgz))
        await expectImageError(.corruptArchive, containing: [cutgz, "gzip"]) { _ = try await f.store.importArchive(at: cutgz) }
        await f.expectNothingVisible()

        // Corrupt gzip data (not just short).
        var bad = gz
        for i in 100..<200 { bad[i] ^= 0x5a }
        let badgz = f.tmp.sub("bad.tar.gz")
        try bad.write(to: URL(fileURLWithPath: badgz))
        // zlib reports bad data (or, if garbage got out first, the tar header checksum fails): either way it names the file.
        do {
            _ = try await f.store.importArchive(at: badgz)
            Issue.record("corrupt gzip imported")
        } catch let error as ImageError {
            #expect(error.code == .compression || error.code == .corruptArchive, "\(error.message)")
            #expect(error.message.contains(badgz))
        }
        await f.expectNothingVisible()

        let garbage = f.tmp.sub("garbage.tar")
        try Data(repeating: 0x41, count: 4096).write(to: URL(fileURLWithPath: garbage))
        await expectImageError(.corruptArchive, containing: [garbage]) { _ = try await f.store.importArchive(at: garbage) }
        await f.expectNothingVisible()
    }

    @Test func digestMismatchAndMissingBlobInALayout() async throws {
        let f = try ImageFixture("mismatch")
        defer { f.close() }
        let rootfs = f.tmp.sub("rootfs")
        try makeBusyboxRootfs(at: rootfs)
        let layout = try TestImageLayout(at: f.tmp.sub("layout"))
        let layer = try layout.addLayer(fromDirectory: rootfs)
        let manifest = try layout.addImage(layers: [layer])
        try layout.writeIndexJSON([(manifest, "application/vnd.oci.image.manifest.v1+json", "edged.test/bad:1")])
        // Same size, different bytes.
        let blob = layout.blobPath(layer.blob.digest)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: blob))
        bytes[bytes.count / 2] ^= 0xff
        try bytes.write(to: URL(fileURLWithPath: blob))
        await expectImageError(.digestMismatch, containing: ["layer \(layer.blob.digest) of edged.test/bad:1", "digest mismatch (want \(layer.blob.digest), got sha256:"]) {
            _ = try await f.store.importArchive(at: layout.path)
        }
        await f.expectNothingVisible()

        try FileManager.default.removeItem(atPath: blob)
        await expectImageError(.missingBlob, containing: [layer.blob.digest, "edged.test/bad:1"]) {
            _ = try await f.store.importArchive(at: layout.path)
        }
        await f.expectNothingVisible()
    }

    @Test func unknownAndZstdMediaTypes() async throws {
        let f = try ImageFixture("mediatype")
        defer { f.close() }
        for (type, code) in [("application/vnd.example.unknown.layer", ImageError.Code.unsupportedMediaType),
                             ("application/vnd.oci.image.layer.v1.tar+zstd", .compression)] {
            let layout = try TestImageLayout(at: f.tmp.sub("layout-\(code)"))
            var w = TarWriter()
            w.add("hello", content: Data("hi".utf8))
            let tar = f.tmp.sub("l-\(code).tar")
            try w.finished().write(to: URL(fileURLWithPath: tar))
            let layer = try layout.addLayer(tarFile: tar, gzip: false, mediaType: type)
            try layout.writeIndexJSON([(try layout.addImage(layers: [layer]), "application/vnd.oci.image.manifest.v1+json", "edged.test/odd:1")])
            await expectImageError(code, containing: [type, "edged.test/odd:1"]) { _ = try await f.store.importArchive(at: layout.path) }
            await f.expectNothingVisible()
        }
        // A config that is not a container image (an OCI artifact).
        let layout = try TestImageLayout(at: f.tmp.sub("layout-artifact"))
        let rootfs = f.tmp.sub("rootfs")
        try makeBusyboxRootfs(at: rootfs)
        let m = try layout.addImage(layers: [try layout.addLayer(fromDirectory: rootfs)], configMediaType: "application/vnd.example.helm.config")
        try layout.writeIndexJSON([(m, "application/vnd.oci.image.manifest.v1+json", "edged.test/chart:1")])
        await expectImageError(.unsupportedMediaType, containing: ["application/vnd.example.helm.config"]) {
            _ = try await f.store.importArchive(at: layout.path)
        }
        await f.expectNothingVisible()
    }

    /// A layout whose image is the busybox base plus one hand-made layer.
    func hostileLayout(_ f: ImageFixture, _ name: String, _ build: (inout TarWriter) -> Void) throws -> TestImageLayout {
        let rootfs = f.tmp.sub("rootfs-\(name)")
        try makeBusyboxRootfs(at: rootfs)
        let layout = try TestImageLayout(at: f.tmp.sub("layout-\(name)"))
        let base = try layout.addLayer(fromDirectory: rootfs)
        var w = TarWriter()
        build(&w)
        let tar = f.tmp.sub("\(name).tar")
        try w.finished().write(to: URL(fileURLWithPath: tar))
        let evil = try layout.addLayer(tarFile: tar, gzip: true)
        try layout.writeIndexJSON([(try layout.addImage(layers: [base, evil]), "application/vnd.oci.image.manifest.v1+json", "edged.test/\(name):1")])
        return layout
    }

    @Test func entriesEscapingTheLayerAreRefused() async throws {
        let f = try ImageFixture("escape")
        defer { f.close() }
        let outside = f.tmp.sub("outside")
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        try "keep\n".write(toFile: "\(outside)/secret", atomically: true, encoding: .utf8)
        let cases: [(String, String, (inout TarWriter) -> Void)] = [
            ("dotdot", "'..'", { $0.add("../../../../../../\(outside.dropFirst())/pwned", content: Data("x".utf8)) }),
            ("absolute", "absolute path", { $0.add("\(outside)/pwned", content: Data("x".utf8)) }),
            ("symlink", "symlink", { w in
                w.add("a", kind: .symlink, link: outside)
                w.add("a/pwned", content: Data("x".utf8))
            }),
            ("symlinkdir", "symlink", { w in
                w.add("etc2", kind: .symlink, link: outside)
                w.add("etc2/sub/", kind: .directory, mode: 0o755)
            }),
            ("hardlink", "'..'", { $0.add("steal", kind: .hardlink, link: "../../../../../../\(outside.dropFirst())/secret") }),
            ("hardlinkabs", "absolute path", { $0.add("steal", kind: .hardlink, link: "\(outside)/secret") }),
            ("hardlinksymlink", "symlink", { w in
                w.add("b", kind: .symlink, link: outside)
                w.add("steal", kind: .hardlink, link: "b/secret")
            }),
        ]
        for (name, why, build) in cases {
            let layout = try hostileLayout(f, name, build)
            await expectImageError(.unsafeEntry, containing: ["edged.test/\(name):1", why]) {
                _ = try await f.store.importArchive(at: layout.path)
            }
            await f.expectNothingVisible("case \(name)")
            #expect(!FileManager.default.fileExists(atPath: "\(outside)/pwned"), "case \(name)")
            #expect(!FileManager.default.fileExists(atPath: "\(outside)/sub"), "case \(name)")
            #expect(try String(contentsOfFile: "\(outside)/secret", encoding: .utf8) == "keep\n")
            let links = try FileManager.default.attributesOfItem(atPath: "\(outside)/secret")[.referenceCount] as? Int
            #expect(links == 1, "case \(name)")
        }
    }

    @Test func whiteoutsBecomeOverlayfsMarkers() async throws {
        guard isRoot else { return }
        let f = try ImageFixture("whiteout")
        defer { f.close() }
        let layout = try hostileLayout(f, "whiteout") { w in
            w.add("dir/", kind: .directory, mode: 0o755)
            w.add("dir/.wh.gone")
            w.add("opq/", kind: .directory, mode: 0o750)
            w.add("opq/.wh..wh..opq")
            w.add("opq/keep", content: Data("kept\n".utf8), mode: 0o600)
            w.add("opq/hard", kind: .hardlink, link: "opq/keep")
            w.add("dev/null0", kind: .charDevice, mode: 0o666)
        }
        let image = try #require(try await f.store.importArchive(at: layout.path).first)
        let top = image.layerPaths[1]
        var st = stat()
        #expect(lstat("\(top)/dir/gone", &st) == 0)
        #expect(st.st_mode & S_IFMT == S_IFCHR)
        #expect(st.st_rdev == 0)
        #expect(!FileManager.default.fileExists(atPath: "\(top)/dir/.wh.gone"))
        #expect(!FileManager.default.fileExists(atPath: "\(top)/opq/.wh..wh..opq"))
        let xattr = try runTool(["python3", "-c", "import os,sys; print(os.getxattr(sys.argv[1], 'trusted.overlay.opaque').decode())", "\(top)/opq"])
        #expect(xattr.stdout == "y\n")
        #expect(lstat("\(top)/opq/keep", &st) == 0)
        #expect(st.st_mode & 0o7777 == 0o600)
        #expect(st.st_nlink == 2)
        #expect(lstat("\(top)/opq", &st) == 0 && st.st_mode & 0o7777 == 0o750)
        #expect(st.st_mtim.tv_sec == 1_700_000_000)
        #expect(lstat("\(top)/dev/null0", &st) == 0 && st.st_mode & S_IFMT == S_IFCHR)
    }

    @Test func importDirectoryMovesDoneFilesAndKeepsFailedOnesWithAnErrorFile() async throws {
        let f = try ImageFixture("importdir")
        defer { f.close() }
        let layout = try f.busyboxLayout("layout")
        let dir = f.tmp.sub("import")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try runTool(["tar", "-C", layout.path, "-cf", "\(dir)/good.tar", "."])
        try Data("this is not an image archive".utf8).write(to: URL(fileURLWithPath: "\(dir)/bad.tar"))
        let results = await f.store.importDirectory(dir)
        #expect(results.count == 2)
        let byName = Dictionary(uniqueKeysWithValues: results.map { ((($0.file as NSString).lastPathComponent), $0.result) })
        if case .success(let images)? = byName["good.tar"] { #expect(images.map(\.references) == [["edged.test/busybox:1"]]) } else {
            Issue.record("good.tar: \(String(describing: byName["good.tar"]))")
        }
        if case .failure(let error)? = byName["bad.tar"] { #expect(error.code == .corruptArchive) } else {
            Issue.record("bad.tar should fail")
        }
        #expect(FileManager.default.fileExists(atPath: "\(dir)/done/good.tar"))
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/good.tar"))
        #expect(FileManager.default.fileExists(atPath: "\(dir)/bad.tar"))
        let message = try String(contentsOfFile: "\(dir)/bad.tar.error", encoding: .utf8)
        #expect(message.contains("\(dir)/bad.tar"))
        #expect(await f.store.list().count == 1)
        // A second run retries only what is still there; the .error file is not an archive.
        let again = await f.store.importDirectory(dir)
        #expect(again.map { ($0.file as NSString).lastPathComponent } == ["bad.tar"])
    }

    @Test func removeAndGarbageCollectFreeBlobsAndLayers() async throws {
        let f = try ImageFixture("gc")
        defer { f.close() }
        let rootfs = f.tmp.sub("rootfs")
        try makeBusyboxRootfs(at: rootfs)
        let layout = try TestImageLayout(at: f.tmp.sub("layout"))
        let base = try layout.addLayer(fromDirectory: rootfs)
        var manifests: [(TestBlob, mediaType: String, name: String?)] = []
        for app in ["one", "two"] {
            let dir = f.tmp.sub("app-\(app)")
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try app.write(toFile: "\(dir)/\(app)", atomically: true, encoding: .utf8)
            manifests.append((try layout.addImage(layers: [base, try layout.addLayer(fromDirectory: dir)]),
                              "application/vnd.oci.image.manifest.v1+json", "edged.test/\(app):1"))
        }
        try layout.writeIndexJSON(manifests)
        let images = try await f.store.importArchive(at: layout.path)
        let one = try #require(images.first { $0.references == ["edged.test/one:1"] })
        let two = try #require(images.first { $0.references == ["edged.test/two:1"] })
        #expect(f.entries("layers").count == 3)
        #expect(f.entries("blobs/sha256").count == 7)  // 2 manifests, 2 configs, 3 layers

        await expectImageError(.notFound, containing: ["edged.test/three:1"]) { try await f.store.remove("edged.test/three:1") }
        await expectImageError(.inUse) { try await f.store.remove("edged.test/one:1", inUse: [one.manifestDigest]) }
        try await f.store.remove("edged.test/one:1")
        #expect(await f.store.list() == [two])
        #expect(f.entries("layers").count == 2)
        #expect(FileManager.default.fileExists(atPath: two.layerPaths[0]))
        #expect(!FileManager.default.fileExists(atPath: one.layerPaths[1]))
        #expect(f.entries("blobs/sha256").count == 4)

        let kept = try await f.store.garbageCollect(inUse: [two.manifestDigest])
        #expect(kept.removed.isEmpty)
        #expect(await f.store.list().count == 1)
        let gc = try await f.store.garbageCollect(inUse: [])
        #expect(gc.removed == [two.manifestDigest])
        #expect(gc.freedBytes > 1_000_000)
        #expect(await f.store.list().isEmpty)
        #expect(f.entries("layers").isEmpty)
        #expect(f.entries("blobs/sha256").isEmpty)
        let reopened = try ImageStore(root: f.storeRoot)
        #expect(await reopened.list().isEmpty)
        try await reopened.shutdown()
    }
}
