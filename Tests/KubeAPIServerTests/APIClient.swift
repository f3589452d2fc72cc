// Drives the test API server over real HTTPS with curl (client certificates, bearer tokens, anonymous), and reads
// watch streams line by line.

import Foundation
import Testing
@testable import EdgedTestSupport

/// Credentials a test request uses.
enum Credentials {
    case admin
    case cert(TestKeyPair)
    case token(String)
    case anonymous
}

/// A running server plus a temp dir with its CA and the admin key pair as files.
final class APIFixture: @unchecked Sendable {
    let server: KubeAPIServer
    let dir: TempDir
    let caFile: String

    init(options: KubeAPIServer.Options = .init()) async throws {
        server = try await KubeAPIServer.start(options: options)
        dir = try TempDir("kube-apiserver")
        caFile = dir.sub("ca.crt")
        try server.caPEM.write(toFile: caFile, atomically: true, encoding: .utf8)
    }

    func close() async {
        try? await server.shutdown()
        dir.remove()
    }

    private var fileCounter = 0

    /// curl arguments for the credentials (writing key pairs to files as needed).
    func authArgs(_ creds: Credentials) throws -> [String] {
        func files(_ pair: TestKeyPair) throws -> [String] {
            fileCounter += 1
            let c = dir.sub("c\(fileCounter).crt"), k = dir.sub("c\(fileCounter).key")
            try pair.certPEM.write(toFile: c, atomically: true, encoding: .utf8)
            try pair.keyPEM.write(toFile: k, atomically: true, encoding: .utf8)
            return ["--cert", c, "--key", k]
        }
        switch creds {
        case .admin: return try files(TestKeyPair(certPEM: server.adminCertPEM, keyPEM: server.adminKeyPEM))
        case .cert(let pair): return try files(pair)
        case .token(let t): return ["-H", "Authorization: Bearer \(t)"]
        case .anonymous: return []
        }
    }

    /// One request; returns the status code and the body parsed as JSON (nil when it is not JSON).
    @discardableResult
    func request(_ method: String, _ path: String, _ body: Any? = nil, contentType: String = "application/json",
                 as creds: Credentials = .admin) throws -> (code: Int, json: [String: Any]) {
        var args = ["/usr/bin/curl", "-sS", "--max-time", "20", "--cacert", caFile, "-X", method, "-w", "\n%{http_code}"] + (try authArgs(creds))
        var bodyFile: String? = nil
        if let body {
            let data = body is String ? Data((body as! String).utf8)
                : try JSONSerialization.data(withJSONObject: body)
            fileCounter += 1
            let f = dir.sub("body\(fileCounter).json")
            try data.write(to: URL(fileURLWithPath: f))
            bodyFile = f
            args += ["-H", "Content-Type: \(contentType)", "--data-binary", "@\(f)"]
        }
        args.append(server.url + path)
        let r = try runCommand(args)
        if let bodyFile { try? FileManager.default.removeItem(atPath: bodyFile) }
        let out = r.stdout
        guard let nl = out.lastIndex(of: "\n"), let code = Int(out[out.index(after: nl)...]) else {
            throw TestFailure("curl output without status: \(out) \(r.stderr)")
        }
        let text = String(out[..<nl])
        let json = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? ["_text": text]
        return (code, json)
    }

    /// Starts a watch (curl -N) and returns a reader of its JSON lines.
    func watch(_ path: String, as creds: Credentials = .admin) throws -> WatchReader {
        let args = ["-sS", "-N", "--cacert", caFile] + (try authArgs(creds)) + [server.url + path]
        return try WatchReader(args: args)
    }
}

/// Reads a watch stream's lines as they arrive.
final class WatchReader: @unchecked Sendable {
    private let process = Process()
    private let lock = NSLock()
    private var lines: [String] = []
    private var buffer = Data()
    private var finished = false

    init(args: [String]) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = args
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let handle = pipe.fileHandleForReading
        Thread.detachNewThread { [self] in
            while true {
                let chunk = handle.availableData
                lock.withLock {
                    if chunk.isEmpty { finished = true; return }
                    buffer.append(chunk)
                    while let nl = buffer.firstIndex(of: 0x0A) {
                        lines.append(String(decoding: buffer[buffer.startIndex..<nl], as: UTF8.self))
                        buffer = Data(buffer[(nl + 1)...])
                    }
                }
                if chunk.isEmpty { return }
            }
        }
    }

    /// The next event, waiting up to `timeout` seconds.
    func next(timeout: Double = 10) async throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let line: String? = lock.withLock { lines.isEmpty ? nil : lines.removeFirst() }
            if let line {
                guard let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                    throw TestFailure("watch line is not an object: \(line)")
                }
                return obj
            }
            if lock.withLock({ finished && lines.isEmpty }) { throw TestFailure("watch stream ended") }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestFailure("no watch event within \(timeout) s")
    }

    /// The next event that is not a BOOKMARK.
    func nextChange(timeout: Double = 10) async throws -> [String: Any] {
        while true {
            let e = try await next(timeout: timeout)
            if e["type"] as? String != "BOOKMARK" { return e }
        }
    }

    /// True once the server ended the stream (curl exited), waiting up to `timeout`.
    func ended(timeout: Double = 10) async -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if lock.withLock({ finished }) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// Kills curl. Foundation reaps it; waitUntilExit is not used because it only returns on the thread that
    /// launched the process (its run loop gets the exit), and a test resumes on another thread after an await.
    func stop() {
        let pid = process.processIdentifier
        if pid > 0 { kill(pid, SIGKILL) }
    }
}

/// Reads a nested value by a dotted path ("metadata.name"), for assertions.
func value(_ json: [String: Any], _ path: String) -> Any? {
    var cur: Any? = json
    for k in path.split(separator: ".") {
        if let i = Int(k), let a = cur as? [Any] { cur = i < a.count ? a[i] : nil; continue }
        cur = (cur as? [String: Any])?[String(k)]
    }
    return cur
}

func str(_ json: [String: Any], _ path: String) -> String? { value(json, path) as? String }
func int(_ json: [String: Any], _ path: String) -> Int? {
    if let i = value(json, path) as? Int { return i }
    return (value(json, path) as? String).flatMap { Int($0) }
}
