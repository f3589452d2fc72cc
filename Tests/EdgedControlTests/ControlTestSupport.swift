// Test fixtures: an in-memory backend, a served ControlServer in a temp dir, a raw HTTP client.

@testable import EdgedControl
import EdgedCore
import Foundation
import Testing

func makeTempDir(_ prefix: String = "edged-control-test") throws -> String {
    var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
    guard let p = mkdtemp(&template) else { throw ControlError.internal("mkdtemp failed") }
    return String(cString: p)
}

/// A small backend with fixed pods and images; logs come from files in `logDir`.
actor TestBackend: ControlBackend {
    var report: StatusReport
    var imageList: [ImageInfo]
    let logDir: String
    var removed: [String] = []

    init(logDir: String, healthy: Bool = true) {
        self.logDir = logDir
        let pods = [
            PodSummary(namespace: "default", name: "web", uid: "u1", phase: "Running", ready: true, restarts: 0,
                       containers: [ContainerSummary(name: "main", state: "running", restarts: 0, ready: true, image: "busybox:latest", pid: 42)]),
            PodSummary(namespace: "kube-system", name: "crashy", uid: "u2", phase: "Running", ready: false, restarts: 7,
                       reason: "CrashLoopBackOff",
                       containers: [ContainerSummary(name: "c", state: "waiting", reason: "CrashLoopBackOff", exitCode: 1,
                                                     restarts: 7, ready: false, image: "busybox:latest")]),
        ]
        imageList = [
            ImageInfo(references: ["docker.io/library/busybox:latest"], digest: "sha256:aaa", size: 1_200_000,
                      architecture: "amd64", os: "linux", inUse: true),
            ImageInfo(references: ["old:1"], digest: "sha256:bbb", size: 5_000_000, architecture: "amd64", os: "linux", inUse: false),
        ]
        report = StatusReport(
            healthy: healthy,
            reasons: healthy ? [] : ["pod kube-system/crashy is CrashLoopBackOff (restarts: 7) — see `edgectl logs kube-system/crashy`"],
            mode: "standalone", version: "0.1.0-test", nodeName: "gw-1", pid: getpid(), startedAt: "2026-01-01T00:00:00Z",
            uptimeSeconds: 3725, stateDir: "/var/lib/edged", manifestDir: "/etc/edged/manifests", pods: pods,
            images: imageList,
            node: NodeStats(memoryTotalBytes: 2 << 30, memoryAvailableBytes: 1 << 30, diskTotalBytes: 32 << 30,
                            diskFreeBytes: 20 << 30, load1: 0.25),
            daemon: DaemonStats(rssBytes: 14 << 20, monitorsRSSBytes: 1 << 20, threads: 5, openFiles: 30),
            lastErrors: [ErrorEntry(time: "2026-01-01T00:01:00Z", subject: "pod kube-system/crashy", message: "container c exited 1")])
    }

    func status() async -> StatusReport { report }
    func pods() async -> [PodSummary] { report.pods }
    func images() async -> [ImageInfo] { imageList }

    func importImage(path: String) async throws -> [ImageInfo] {
        guard FileManager.default.fileExists(atPath: path) else { throw ControlError.notFound("no such file: \(path)") }
        let info = ImageInfo(references: ["imported:1"], digest: "sha256:ccc", size: 10, architecture: "amd64", os: "linux", inUse: false)
        imageList.append(info)
        return [info]
    }

    func pullImage(reference: String) async throws -> ImageInfo {
        if reference.contains(" ") { throw ControlError.badRequest("invalid reference \"\(reference)\"") }
        if reference.hasPrefix("unreachable") { throw ControlError(status: 502, message: "registry unreachable for \(reference)") }
        return ImageInfo(references: [reference], digest: "sha256:ddd", size: 20, architecture: "amd64", os: "linux", inUse: false)
    }

    func removeImage(reference: String) async throws {
        guard let image = imageList.first(where: { $0.references.contains(reference) }) else {
            throw ControlError.notFound("image \(reference) not found")
        }
        if image.inUse { throw ControlError.conflict("image \(reference) is used by a running pod") }
        removed.append(reference)
    }

    func pruneImages() async throws -> [String] { ["old:1"] }

    func logPath(namespace: String, pod: String, container: String?, previous: Bool) async throws -> String {
        guard namespace == "default", pod == "web" else { throw ControlError.notFound("pod \(namespace)/\(pod) not found") }
        if let container, container != "main" { throw ControlError.notFound("pod \(namespace)/\(pod) has no container \(container)") }
        if previous { return "\(logDir)/main-previous.log" }
        return "\(logDir)/main.log"
    }

    func setHealthy(_ healthy: Bool) {
        report.healthy = healthy
    }

    func setReport(_ report: StatusReport) {
        self.report = report
    }

    /// Join requests as the daemon received them (answered as a first join).
    var joins: [JoinRequest] = []

    func join(_ request: JoinRequest) async throws -> JoinResponse {
        joins.append(request)
        return JoinResponse(nodeName: "gw-1", server: request.server, newlyJoined: true,
                            certificateNotAfter: "2027-01-01T00:00:00Z", csrName: "node-csr-test")
    }

    func throwingBoom() {}
}

/// A ControlServer running in a task on a socket in a temp dir.
struct ServedControl {
    let dir: String
    let socketPath: String
    let server: ControlServer
    let task: Task<Void, any Error>
    let backend: TestBackend

    static func start(healthy: Bool = true, groupID: UInt32? = nil) async throws -> ServedControl {
        let dir = try makeTempDir()
        let socketPath = "\(dir)/run/edged.sock"
        let backend = TestBackend(logDir: dir, healthy: healthy)
        let server = ControlServer(configuration: .init(socketPath: socketPath, groupID: groupID, logPollInterval: .milliseconds(50)),
                                   backend: backend)
        let task = Task { try await server.run() }
        try await waitForListening(socketPath)
        return ServedControl(dir: dir, socketPath: socketPath, server: server, task: task, backend: backend)
    }

    var client: ControlClient { ControlClient(socketPath: socketPath) }

    func stop() async {
        task.cancel()
        _ = try? await task.value
        try? FileManager.default.removeItem(atPath: dir)
    }
}

func waitForListening(_ path: String) async throws {
    for _ in 0..<200 {
        if case .answered = ControlSocket.probe(path: path) { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw ControlError.internal("server did not start listening on \(path)")
}

/// A raw HTTP/1.1 exchange over the Unix socket (what any client might send), returning status and body.
/// The blocking socket I/O runs on a Dispatch thread: blocking the few cooperative threads would starve the server.
func rawHTTP(_ socketPath: String, _ request: String) async throws -> (status: Int, body: String) {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(with: Result { try blockingHTTP(socketPath, request) })
        }
    }
}

private func blockingHTTP(_ socketPath: String, _ request: String) throws -> (status: Int, body: String) {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(socketPath.utf8) + [0]) }
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard rc == 0 else { throw ControlError.internal("connect: \(errno)") }
    let bytes = Array(request.utf8)
    let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    guard written == bytes.count else { throw ControlError.internal("write: errno \(errno)") }
    var response: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fd, &buf, buf.count)
        if n < 0 && errno == EINTR { continue }
        if n < 0 { throw ControlError.internal("read: errno \(errno)") }
        if n == 0 { break }
        response += buf[0..<n]
    }
    let text = String(decoding: response, as: UTF8.self)
    let statusLine = text.prefix { $0 != "\r" }
    let status = Int(statusLine.split(separator: " ").dropFirst().first ?? "") ?? 0
    let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
    return (status, body)
}

/// Writes CRI records to a file (appending).
func appendCRI(_ path: String, _ lines: [(String, String, String)], time: String = "2026-01-01T00:00:00.000000000Z") throws {
    var text = ""
    for (stream, tag, message) in lines { text += "\(time) \(stream) \(tag) \(message)\n" }
    if let handle = FileHandle(forWritingAtPath: path) {
        handle.seekToEndOfFile()
        handle.write(Data(text.utf8))
        handle.closeFile()
    } else {
        try text.write(toFile: path, atomically: false, encoding: .utf8)
    }
}

/// Collects streamed bytes across tasks.
actor ByteSink {
    var bytes: [UInt8] = []
    func append(_ b: [UInt8]) { bytes += b }
    var text: String { String(decoding: bytes, as: UTF8.self) }
}
