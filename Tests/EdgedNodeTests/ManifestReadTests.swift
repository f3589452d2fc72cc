// Static pod manifests that cannot be read: a file removed while the directory is scanned is a removal (it was
// logged as "cannot read … No such file or directory" whenever an operator deleted a manifest at the wrong moment),
// while a name that is still there but cannot be read is reported, with what to do.

@testable import EdgedNode
import EdgedTestSupport
import Foundation
import Testing

struct ManifestReadTests {
    private let pod = """
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          containers: [{name: c, image: busybox}]
        """

    @Test func aFileGoneSinceTheListingIsARemovalNotAnError() throws {
        let dir = try TempDir("edged-manifests")
        defer { dir.remove() }
        #expect(ManifestSource.read(dir.sub("deleted.yaml")) == .vanished)
    }

    @Test func namesThatExistButCannotBeReadAreReported() throws {
        let dir = try TempDir("edged-manifests")
        defer { dir.remove() }
        try pod.write(toFile: dir.sub("web.yaml"), atomically: true, encoding: .utf8)
        // A symlink whose target is missing: the name is there, the file is not.
        #expect(symlink(dir.sub("missing-target.yaml"), dir.sub("dangling.yaml")) == 0)
        // A directory with a manifest's name.
        try FileManager.default.createDirectory(atPath: dir.sub("adir.yaml"), withIntermediateDirectories: false)

        guard case .unreadable(let dangling) = ManifestSource.read(dir.sub("dangling.yaml")) else {
            Issue.record("a dangling symlink was not reported")
            return
        }
        #expect(dangling.contains("dangling.yaml") && dangling.contains("symlink to a file that does not exist"), "\(dangling)")
        guard case .unreadable(let isDir) = ManifestSource.read(dir.sub("adir.yaml")) else {
            Issue.record("a directory named like a manifest was not reported")
            return
        }
        #expect(isDir.contains("adir.yaml") && isDir.contains("Is a directory"), "\(isDir)")

        // The scan reports both and still runs the good pod.
        let scan = ManifestSource(directory: dir.path, nodeName: "n1").scan()
        #expect(scan.pods.map(\.pod.name) == ["web-n1"])
        #expect(Set(scan.errors.keys) == [dir.sub("dangling.yaml"), dir.sub("adir.yaml")], "\(scan.errors)")
    }
}
