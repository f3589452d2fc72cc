// Image test helpers: OCI layouts built from directories, hand-made tar files, a real docker-registry on loopback
// (optionally behind a token server), and skopeo to convert and push. Nothing binary is committed.

import Foundation

/// `runCommand` with the tool looked up in /usr/bin and /bin first (test runners may start with an odd PATH).
@discardableResult
public func runTool(_ args: [String], check: Bool = true) throws -> CommandResult {
    var args = args
    if !args[0].hasPrefix("/") {
        for dir in ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] where access("\(dir)/\(args[0])", X_OK) == 0 {
            args[0] = "\(dir)/\(args[0])"
            break
        }
    }
    return try runCommand(args, check: check)
}

/// The OCI architecture of this machine (amd64, arm64, ...).
public var hostOCIArchitecture: String {
    var u = utsname()
    uname(&u)
    let machine = withUnsafeBytes(of: &u.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    switch machine {
    case "x86_64": return "amd64"
    case "aarch64": return "arm64"
    default: return machine
    }
}

/// A blob written into a layout.
public struct TestBlob: Sendable, Equatable {
    public let digest: String
    public let size: Int
    public var hex: String { String(digest.dropFirst(7)) }
}

/// A layer: its blob (maybe gzip) and the digest of its uncompressed tar.
public struct TestLayer: Sendable {
    public let blob: TestBlob
    public let diffID: String
    public let mediaType: String
}

/// SHA-256 of a file, "sha256:<hex>", through sha256sum.
public func sha256Digest(ofFile path: String) throws -> String {
    let out = try runTool(["sha256sum", path]).stdout
    return "sha256:" + (out.split(separator: " ").first.map(String.init) ?? "")
}

/// An OCI image layout under construction.
public struct TestImageLayout: Sendable {
    public let path: String

    /// Creates `oci-layout` and `blobs/sha256` at `path`.
    public init(at path: String) throws {
        self.path = path
        try FileManager.default.createDirectory(atPath: "\(path)/blobs/sha256", withIntermediateDirectories: true)
        try Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8).write(to: URL(fileURLWithPath: "\(path)/oci-layout"))
    }

    public func blobPath(_ digest: String) -> String { "\(path)/blobs/sha256/\(digest.dropFirst(7))" }

    @discardableResult
    public func addBlob(_ data: Data) throws -> TestBlob {
        let tmp = "\(path)/blob.tmp"
        try data.write(to: URL(fileURLWithPath: tmp))
        return try addBlob(file: tmp, move: true)
    }

    /// Adds a file as a blob (moved or copied).
    public func addBlob(file: String, move: Bool = false) throws -> TestBlob {
        let digest = try sha256Digest(ofFile: file)
        let size = try FileManager.default.attributesOfItem(atPath: file)[.size] as! Int
        let dest = blobPath(digest)
        if FileManager.default.fileExists(atPath: dest) {
            if move { try FileManager.default.removeItem(atPath: file) }
        } else if move {
            try FileManager.default.moveItem(atPath: file, toPath: dest)
        } else {
            try FileManager.default.copyItem(atPath: file, toPath: dest)
        }
        return TestBlob(digest: digest, size: size)
    }

    /// Tars `dir` (numeric owners, sorted) into a layer; gzip it when asked.
    public func addLayer(fromDirectory dir: String, gzip: Bool = true) throws -> TestLayer {
        let tar = "\(path)/layer-\(UUID().uuidString).tar"
        try runTool(["tar", "--sort=name", "--numeric-owner", "-C", dir, "-cf", tar, "."])
        return try addLayer(tarFile: tar, gzip: gzip)
    }

    /// Adds an existing tar file as a layer (the file is consumed).
    public func addLayer(tarFile: String, gzip: Bool = true, mediaType: String? = nil) throws -> TestLayer {
        let diffID = try sha256Digest(ofFile: tarFile)
        var file = tarFile
        if gzip {
            try runTool(["gzip", "-n", "-f", tarFile])
            file = tarFile + ".gz"
        }
        let blob = try addBlob(file: file, move: true)
        let type = mediaType ?? (gzip ? "application/vnd.oci.image.layer.v1.tar+gzip" : "application/vnd.oci.image.layer.v1.tar")
        return TestLayer(blob: blob, diffID: diffID, mediaType: type)
    }

    /// Writes a config and a manifest for `layers`; returns the manifest blob.
    public func addImage(layers: [TestLayer], architecture: String = hostOCIArchitecture, variant: String? = nil,
                         cmd: [String]? = ["/bin/sh"], entrypoint: [String]? = nil, env: [String]? = ["PATH=/bin"],
                         workingDir: String? = nil, user: String? = nil, exposedPorts: [String] = [],
                         configMediaType: String = "application/vnd.oci.image.config.v1+json") throws -> TestBlob {
        var inner: [String: Any] = [:]
        if let cmd { inner["Cmd"] = cmd }
        if let entrypoint { inner["Entrypoint"] = entrypoint }
        if let env { inner["Env"] = env }
        if let workingDir { inner["WorkingDir"] = workingDir }
        if let user { inner["User"] = user }
        if !exposedPorts.isEmpty { inner["ExposedPorts"] = Dictionary(uniqueKeysWithValues: exposedPorts.map { ($0, [String: Any]()) }) }
        var config: [String: Any] = [
            "architecture": architecture, "os": "linux", "config": inner,
            "rootfs": ["type": "layers", "diff_ids": layers.map(\.diffID)],
        ]
        if let variant { config["variant"] = variant }
        let configBlob = try addBlob(try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]))
        let manifest: [String: Any] = [
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": ["mediaType": configMediaType, "digest": configBlob.digest, "size": configBlob.size],
            "layers": layers.map { ["mediaType": $0.mediaType, "digest": $0.blob.digest, "size": $0.blob.size] },
        ]
        return try addBlob(try JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys]))
    }

    /// Writes an image index blob over manifests for (architecture, variant) platforms.
    public func addIndex(_ manifests: [(TestBlob, architecture: String, variant: String?)]) throws -> TestBlob {
        let index: [String: Any] = [
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests.map { m -> [String: Any] in
                var platform: [String: Any] = ["os": "linux", "architecture": m.architecture]
                if let v = m.variant { platform["variant"] = v }
                return ["mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m.0.digest,
                        "size": m.0.size, "platform": platform]
            },
        ]
        return try addBlob(try JSONSerialization.data(withJSONObject: index, options: [.sortedKeys]))
    }

    /// Writes index.json listing `entries` (blob, media type, ref.name annotation).
    public func writeIndexJSON(_ entries: [(TestBlob, mediaType: String, name: String?)]) throws {
        let index: [String: Any] = [
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries.map { e -> [String: Any] in
                var d: [String: Any] = ["mediaType": e.mediaType, "digest": e.0.digest, "size": e.0.size]
                if let n = e.name { d["annotations"] = ["org.opencontainers.image.ref.name": n] }
                return d
            },
        ]
        try JSONSerialization.data(withJSONObject: index, options: [.sortedKeys]).write(to: URL(fileURLWithPath: "\(path)/index.json"))
    }

    /// Convenience: one image from one layer of `dir`, named `name` (a full reference or a bare tag).
    @discardableResult
    public func addSimpleImage(fromDirectory dir: String, name: String, gzip: Bool = true) throws -> TestBlob {
        let layer = try addLayer(fromDirectory: dir, gzip: gzip)
        let manifest = try addImage(layers: [layer])
        try writeIndexJSON([(manifest, "application/vnd.oci.image.manifest.v1+json", name)])
        return manifest
    }
}

/// Writes ustar archives entry by entry, for layers no `tar` command would make (../, absolute paths, escapes).
public struct TarWriter {
    public private(set) var data = Data()

    public init() {}

    public enum Kind: UInt8 { case file = 0x30, hardlink = 0x31, symlink = 0x32, charDevice = 0x33, directory = 0x35 }

    public mutating func add(_ name: String, kind: Kind = .file, content: Data = Data(), link: String = "", mode: Int = 0o644) {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ s: String, _ off: Int, _ len: Int) {
            for (i, b) in s.utf8.prefix(len).enumerated() { h[off + i] = b }
        }
        func octal(_ v: Int, _ off: Int, _ len: Int) { put(String(String(v, radix: 8).suffix(len - 1)).leftPad(len - 1), off, len - 1) }
        put(name, 0, 100)
        octal(mode, 100, 8)
        octal(0, 108, 8)
        octal(0, 116, 8)
        octal(kind == .file ? content.count : 0, 124, 12)
        octal(1_700_000_000, 136, 12)
        h[156] = kind.rawValue
        put(link, 157, 100)
        put("ustar\0", 257, 6)
        put("00", 263, 2)
        for i in 148..<156 { h[i] = 0x20 }
        let sum = h.reduce(0) { $0 + Int($1) }
        put(String(sum, radix: 8).leftPad(6) + "\0 ", 148, 8)
        data.append(contentsOf: h)
        if kind == .file {
            data.append(content)
            data.append(Data(count: (512 - content.count % 512) % 512))
        }
    }

    /// The archive with its two zero end blocks.
    public func finished() -> Data { data + Data(count: 1024) }
}

extension String {
    fileprivate func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
public func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket: \(errno)") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    guard ok else { throw TestFailure("bind: \(errno)") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// A docker token server (python3 + cryptography): signs RS256 JWTs the registry trusts, grants every scope to
/// `username`/`password`, and an empty access list to anonymous requests. 401 for wrong credentials.
public final class TestTokenServer: @unchecked Sendable {
    public let port: Int
    public let certificatePath: String
    public let username: String
    public let password: String
    private let process: Process

    public init(directory: String, username: String = "edged", password: String = "s3cret") throws {
        self.username = username
        self.password = password
        certificatePath = "\(directory)/token-cert.pem"
        let script = "\(directory)/token-server.py"
        try Self.script.write(toFile: script, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        p.arguments = [script, certificatePath, username, password]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        var line = Data()
        while !line.contains(0x0a) {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        guard let port = Int(String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            p.terminate()
            throw TestFailure("token server did not start (python3 with cryptography needed)")
        }
        self.port = port
    }

    public var realm: String { "http://127.0.0.1:\(port)/token" }

    /// SIGKILL: test runners may start children with SIGTERM ignored, which python would then keep.
    public func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    static let script = #"""
import sys, json, time, base64, hashlib, datetime
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from urllib.parse import urlparse, parse_qs
from cryptography.hazmat.primitives.asymmetric import rsa, padding
from cryptography.hazmat.primitives import hashes, serialization
from cryptography import x509
from cryptography.x509.oid import NameOID
certpath, user, pw = sys.argv[1:4]
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edged-test-token")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
open(certpath, "wb").write(cert.public_bytes(serialization.Encoding.PEM))
der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
kid = ":".join(b32[i:i + 4] for i in range(0, 48, 4))
def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        q = parse_qs(urlparse(self.path).query)
        auth = self.headers.get("Authorization", "")
        ok = auth == "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
        if auth and not ok:
            self.send_response(401); self.send_header("Content-Length", "0"); self.end_headers(); return
        access = []
        for scope in q.get("scope", []):
            for one in scope.split(" "):
                parts = one.split(":")
                if len(parts) == 3 and ok:
                    access.append({"type": parts[0], "name": parts[1], "actions": parts[2].split(",")})
        t = int(time.time())
        claims = {"iss": "edged-test-issuer", "sub": user if ok else "", "aud": q.get("service", [""])[0],
                  "exp": t + 600, "nbf": t - 60, "iat": t, "jti": str(time.time_ns()), "access": access}
        header = {"typ": "JWT", "alg": "RS256", "kid": kid}
        signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        sig = key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        body = json.dumps({"token": signing + "." + b64(sig)}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""#
}

/// Debian's docker-registry on a free loopback port with its storage in `directory`; token auth when a token
/// server is given. `stop()` kills it.
public final class TestRegistry: @unchecked Sendable {
    public let port: Int
    public let storage: String
    public let token: TestTokenServer?
    private let process: Process

    public var host: String { "127.0.0.1:\(port)" }

    public init(directory: String, token: TestTokenServer? = nil) throws {
        storage = "\(directory)/registry-storage"
        self.token = token
        try FileManager.default.createDirectory(atPath: storage, withIntermediateDirectories: true)
        port = try freeLoopbackPort()
        var config = """
        version: 0.1
        log:
          level: error
          accesslog:
            disabled: true
        storage:
          filesystem:
            rootdirectory: \(storage)
          delete:
            enabled: true
        http:
          addr: 127.0.0.1:\(port)
        """
        if let token {
            config += """

            auth:
              token:
                realm: \(token.realm)
                service: edged-test-registry
                issuer: edged-test-issuer
                rootcertbundle: \(token.certificatePath)
            """
        }
        let configPath = "\(directory)/registry.yml"
        try (config + "\n").write(toFile: configPath, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/docker-registry")
        p.arguments = ["serve", configPath]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try p.run()
        process = p
        for _ in 0..<100 {
            let r = try runTool(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://\(host)/v2/"], check: false)
            if r.stdout == "200" || r.stdout == "401" { return }
            usleep(100_000)
        }
        stop()
        throw TestFailure("docker-registry did not start on \(host)")
    }

    /// skopeo copy of `source` (e.g. "oci:/layout:tag") to `repoAndTag` here; `all` keeps every platform.
    public func push(_ source: String, as repoAndTag: String, all: Bool = false) throws {
        var args = ["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false"]
        if all { args.append("--all") }
        if let token { args += ["--dest-creds", "\(token.username):\(token.password)"] }
        try runTool(args + [source, "docker://\(host)/\(repoAndTag)"])
    }

    /// Where the registry keeps a blob's bytes (to corrupt it in tests).
    public func blobDataPath(_ digest: String) -> String {
        let hex = digest.dropFirst(7)
        return "\(storage)/docker/registry/v2/blobs/sha256/\(hex.prefix(2))/\(hex)/data"
    }

    /// SIGKILL: test runners may start children with SIGTERM ignored, which python would then keep.
    public func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}
