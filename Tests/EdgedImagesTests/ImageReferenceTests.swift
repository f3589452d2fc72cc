import EdgedImages
import Testing

@Suite struct ImageReferenceTests {
    @Test(arguments: [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/library/busybox:1", "docker.io/library/busybox:1"),
        ("user/app:v2", "docker.io/user/app:v2"),
        ("localhost/app", "localhost/app:latest"),
        ("127.0.0.1:5000/team/app:v1", "127.0.0.1:5000/team/app:v1"),
        ("ghcr.io/org/app", "ghcr.io/org/app:latest"),
        ("registry:5000/app", "registry:5000/app:latest"),
    ])
    func normalises(_ input: String, _ expected: String) throws {
        #expect(try ImageReference(parsing: input).normalized == expected)
    }

    @Test func digestReferences() throws {
        let digest = "sha256:" + String(repeating: "ab", count: 32)
        let r = try ImageReference(parsing: "busybox@\(digest)")
        #expect(r.digest == digest)
        #expect(r.tag == nil)
        #expect(r.normalized == "docker.io/library/busybox@\(digest)")
        let both = try ImageReference(parsing: "127.0.0.1:5000/app:v1@\(digest)")
        #expect(both.registry == "127.0.0.1:5000")
        #expect(both.tag == "v1")
        #expect(both.repository == "app")
    }

    @Test(arguments: ["", "Busybox", "busybox@sha256:abc", "busybox:", "a//b", "busybox:bad tag", "-x/y", "busybox@md5:00"])
    func rejects(_ input: String) {
        #expect(throws: ImageError.self) { try ImageReference(parsing: input) }
        do {
            _ = try ImageReference(parsing: input)
        } catch {
            #expect(error.code == .invalidReference)
            #expect(error.message.contains("\"\(input)\""))
        }
    }

    @Test func hostPlatformMapping() {
        #expect(Platform.fromMachine("x86_64") == Platform(architecture: "amd64"))
        #expect(Platform.fromMachine("aarch64") == Platform(architecture: "arm64", variant: "v8"))
        let arm64 = Platform(architecture: "arm64", variant: "v8")
        #expect(arm64.accepts(Platform(architecture: "arm64")))
        #expect(!arm64.accepts(Platform(architecture: "amd64")))
        #expect(Platform.fromMachine("armv7l").accepts(Platform(architecture: "arm", variant: "v6")))
        #expect(!Platform.fromMachine("armv6l").accepts(Platform(architecture: "arm", variant: "v7")))
    }
}
