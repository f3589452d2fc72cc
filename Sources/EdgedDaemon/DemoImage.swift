// The demo: a busybox image built from the host's busybox-static and a pod that uses it, so a fresh
// machine sees edged run a real container without any registry or download.

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto
import EdgedCore
import Glibc

public enum Demo {
    public static let imageReference = "edged.local/demo/busybox:1"

    /// The demo pod: an init container writes a page into an emptyDir, "web" serves it with busybox httpd on
    /// the host's port 8080 (readiness probe on it), and "ticker" prints a line every 5 seconds.
    public static let manifest = """
        # edged demo pod, written by `edged demo`. Remove this file and edged stops the pod.
        apiVersion: v1
        kind: Pod
        metadata:
          name: demo
          namespace: default
          labels: {app: demo}
        spec:
          hostNetwork: true
          terminationGracePeriodSeconds: 5
          volumes:
          - name: www
            emptyDir: {}
          initContainers:
          - name: write-page
            image: \(imageReference)
            imagePullPolicy: IfNotPresent
            command: ["sh", "-c", "echo '<h1>Hello from an edged pod</h1>' > /www/index.html"]
            volumeMounts: [{name: www, mountPath: /www}]
          containers:
          - name: web
            image: \(imageReference)
            imagePullPolicy: IfNotPresent
            command: ["httpd", "-f", "-v", "-p", "8080", "-h", "/www"]
            volumeMounts: [{name: www, mountPath: /www, readOnly: true}]
            readinessProbe:
              httpGet: {path: /index.html, port: 8080}
              periodSeconds: 5
            resources:
              limits: {memory: 32Mi, cpu: 200m}
          - name: ticker
            image: \(imageReference)
            imagePullPolicy: IfNotPresent
            command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo \\"tick $i from $(hostname) at $(date)\\"; sleep 5; done"]
            resources:
              limits: {memory: 16Mi}

        """

    /// Writes an OCI archive (a tar of an image layout) holding a one-layer busybox image built from `busybox`.
    public static func writeImageArchive(to path: String, busybox: String = "/bin/busybox") throws(EdgedError) {
        guard let binary = Files.read(busybox) else {
            throw EdgedError(.notFound, "\(busybox) is missing: install it with `apt-get install busybox-static`")
        }
        var tar = TarWriter()
        for d in ["bin/", "etc/", "tmp/", "www/", "root/"] { tar.directory(d, mode: d == "tmp/" ? 0o1777 : 0o755) }
        tar.file("bin/busybox", contents: binary, mode: 0o755)
        for applet in ["sh", "echo", "sleep", "date", "cat", "ls", "httpd", "hostname", "id", "ps", "wget", "env", "true", "false", "grep", "head", "tail"] {
            tar.symlink("bin/\(applet)", target: "busybox")
        }
        tar.file("etc/passwd", contents: Array("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n".utf8), mode: 0o644)
        tar.file("etc/group", contents: Array("root:x:0:\nnogroup:x:65534:\n".utf8), mode: 0o644)
        let layer = tar.finish()
        let layerDigest = sha256(layer)
        var arch = utsname()
        uname(&arch)
        let machine = withUnsafeBytes(of: arch.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let goArch = machine == "aarch64" ? "arm64" : (machine == "x86_64" ? "amd64" : machine)
        let config = Array("""
            {"architecture":"\(goArch)","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"],"WorkingDir":"/"},\
            "rootfs":{"type":"layers","diff_ids":["\(layerDigest)"]},"history":[{"created_by":"edged demo"}]}
            """.utf8)
        let configDigest = sha256(config)
        let manifest = Array("""
            {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",\
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\(configDigest)","size":\(config.count)},\
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"\(layerDigest)","size":\(layer.count)}]}
            """.utf8)
        let manifestDigest = sha256(manifest)
        let index = Array("""
            {"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[\
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\(manifestDigest)","size":\(manifest.count),\
            "annotations":{"org.opencontainers.image.ref.name":"\(imageReference)"},"platform":{"architecture":"\(goArch)","os":"linux"}}]}
            """.utf8)
        var archive = TarWriter()
        archive.file("oci-layout", contents: Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8), mode: 0o644)
        archive.file("index.json", contents: index, mode: 0o644)
        archive.directory("blobs/", mode: 0o755)
        archive.directory("blobs/sha256/", mode: 0o755)
        archive.file("blobs/sha256/\(layerDigest.dropFirst(7))", contents: layer, mode: 0o644)
        archive.file("blobs/sha256/\(configDigest.dropFirst(7))", contents: config, mode: 0o644)
        archive.file("blobs/sha256/\(manifestDigest.dropFirst(7))", contents: manifest, mode: 0o644)
        // Write beside the target and rename, so the importer never sees half an archive.
        try write(path + ".tmp", archive.finish())
        guard rename(path + ".tmp", path) == 0 else {
            throw EdgedError(.io, "cannot rename \(path).tmp: \(String(cString: strerror(errno)))")
        }
    }

    static func sha256(_ bytes: [UInt8]) -> String {
        "sha256:" + SHA256.hash(data: bytes).map { b in
            let s = String(b, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined()
    }

    public static func write(_ path: String, _ bytes: [UInt8]) throws(EdgedError) {
        let parent = String(path[..<path.lastIndex(of: "/")!])
        Files.makeDirectories(parent)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw EdgedError(.io, "cannot write \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw EdgedError(.io, "cannot write \(path): \(String(cString: strerror(errno)))") }
            off += n
        }
    }
}

/// A minimal ustar writer: enough for the demo layer (files, directories, symlinks).
struct TarWriter {
    private var out: [UInt8] = []

    mutating func directory(_ name: String, mode: Int) { header(name, size: 0, mode: mode, type: "5", link: "") }

    mutating func symlink(_ name: String, target: String) { header(name, size: 0, mode: 0o777, type: "2", link: target) }

    mutating func file(_ name: String, contents: [UInt8], mode: Int) {
        header(name, size: contents.count, mode: mode, type: "0", link: "")
        out += contents
        out += [UInt8](repeating: 0, count: (512 - contents.count % 512) % 512)
    }

    mutating func finish() -> [UInt8] {
        out += [UInt8](repeating: 0, count: 1024)
        return out
    }

    private mutating func header(_ name: String, size: Int, mode: Int, type: Character, link: String) {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ s: String, _ offset: Int, _ len: Int) {
            for (i, b) in s.utf8.prefix(len).enumerated() { h[offset + i] = b }
        }
        func octal(_ v: Int, _ offset: Int, _ len: Int) {
            let s = String(v, radix: 8)
            put(String(repeating: "0", count: len - 1 - s.count) + s, offset, len - 1)
        }
        put(name, 0, 100)
        octal(mode, 100, 8)
        octal(0, 108, 8)
        octal(0, 116, 8)
        octal(size, 124, 12)
        octal(1_700_000_000, 136, 12)
        for i in 148..<156 { h[i] = 32 }
        h[156] = type.asciiValue!
        put(link, 157, 100)
        put("ustar", 257, 6)
        put("00", 263, 2)
        let sum = h.reduce(0) { $0 + Int($1) }
        let s = String(sum, radix: 8)
        put(String(repeating: "0", count: 6 - s.count) + s, 148, 6)
        h[154] = 0
        h[155] = 32
        out += h
    }
}
