// The tunnel benchmark (issue [5]): a 100 MB transfer through the tunnel (HTTP CONNECT on the tunnel server's Unix
// socket → gRPC Connect stream over mutual TLS → the agent → a TCP sink on loopback) against the same transfer
// straight over loopback TCP; the latency a small request gains through the tunnel (new connection + one echo,
// which is what each `kubectl logs`/`exec` pays) before and after that transfer; the agent's RSS with 50 open streams. The agent runs in its
// own process (`edged-bench tunnel-agent`), so its RSS is its own.

import ArgumentParser
import EdgedTestSupport
import EdgedTunnel
import Foundation
import Logging
import ServiceLifecycle

struct TunnelBenchResult: Codable {
    var tunnel_mb_per_s: Double
    var direct_mb_per_s: Double
    /// Median of (CONNECT through the tunnel + 64-byte echo) minus median of (TCP connect + the same echo).
    var tunnel_added_latency_ms: Double
    /// The same, measured right after the bulk transfer.
    var tunnel_added_latency_after_bulk_ms: Double
    var tunnel_rss_idle_kb: Int
    var tunnel_rss_50_streams_kb: Int
}

/// `edged-bench tunnel`: only the tunnel figures, as one JSON object.
struct TunnelOnly: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tunnel", abstract: "Only the tunnel figures (throughput vs direct TCP, added latency, agent RSS), as JSON.")
    @Option(help: "MB to send through the tunnel and direct.")
    var megabytes = 100

    func run() async throws {
        let r = try await tunnelPhase(megabytes: megabytes)
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        print(String(decoding: try enc.encode(r), as: UTF8.self))
    }
}

/// The agent alone, for `edged-bench tunnel`: dials the server and allows only loopback destinations.
struct TunnelAgentProcess: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tunnel-agent", shouldDisplay: false)
    @Option var port: Int
    @Option var dir: String

    func run() async throws {
        var logger = Logger(label: "bench-agent")
        logger.logLevel = .warning
        let agent = TunnelAgent(config: TunnelAgentConfig(
            serverHost: "127.0.0.1", serverPort: port, caPath: "\(dir)/ca.pem", certPath: "\(dir)/agent.crt",
            keyPath: "\(dir)/agent.key", agentID: "bench-node", identifiers: AgentIdentifiers(hosts: ["bench-node"], ipv4: ["127.0.0.1"]),
            allowDestination: { host, _ in host == "127.0.0.1" }), logger: logger)
        let group = ServiceGroup(configuration: .init(services: [.init(service: agent)], gracefulShutdownSignals: [.sigterm], logger: logger))
        try await group.run()
    }
}

func tunnelPhase(megabytes: Int) async throws -> TunnelBenchResult {
    let dir = NSTemporaryDirectory() + "edged-bench-tunnel-\(getpid())"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let pki = try TestPKI.makeCA()
    let serverPair = try pki.issue(serverFor: "tunnel-server", ips: ["127.0.0.1"])
    let agentPair = try pki.issueClient(cn: "system:node:bench-node", orgs: ["system:nodes"])
    try pki.caPEM.write(toFile: "\(dir)/ca.pem", atomically: true, encoding: .utf8)
    try serverPair.certPEM.write(toFile: "\(dir)/server.crt", atomically: true, encoding: .utf8)
    try serverPair.keyPEM.write(toFile: "\(dir)/server.key", atomically: true, encoding: .utf8)
    try agentPair.certPEM.write(toFile: "\(dir)/agent.crt", atomically: true, encoding: .utf8)
    try agentPair.keyPEM.write(toFile: "\(dir)/agent.key", atomically: true, encoding: .utf8)

    var logger = Logger(label: "bench-tunnel")
    logger.logLevel = .warning
    let socketPath = "\(dir)/frontend.sock"
    let server = TunnelServer(config: TunnelServerConfig(
        agentHost: "127.0.0.1", agentPort: 0, certPath: "\(dir)/server.crt", keyPath: "\(dir)/server.key",
        agentCAPath: "\(dir)/ca.pem", unixSocketPath: socketPath, serverID: "bench"), logger: logger)
    let serverTask = Task { try await server.run() }
    defer { serverTask.cancel() }
    let addresses = try await server.addresses()

    let sink = try LoopbackServer(mode: .sink)
    let echo = try LoopbackServer(mode: .echo)
    let agent = try launch(CommandLine.arguments[0], ["tunnel-agent", "--port", "\(addresses.agentPort)", "--dir", dir],
                           log: "\(dir)/agent.log")
    defer { if agent.isRunning { agent.terminate(); agent.waitUntilExit() } }
    do {
        try await waitUntil(timeout: 20) { !server.agents().isEmpty }
    } catch {
        let log = (try? String(contentsOfFile: "\(dir)/agent.log", encoding: .utf8)) ?? ""
        throw BenchSocketError(description: "the tunnel agent did not connect within 20 s; its log:\n\(log.suffix(3000))")
    }
    try await Task.sleep(for: .seconds(1))
    let rssIdle = rssKB(agent.processIdentifier)

    // Added latency: new connection + one 64-byte echo, 200 times each way; medians.
    let message = [UInt8](repeating: 0x41, count: 64)
    func roundTrip(_ open: () throws -> Int32) throws -> Double {
        let t0 = DispatchTime.now()
        let fd = try open()
        defer { close(fd) }
        try sendAll(fd, message)
        _ = try recvExact(fd, message.count)
        return Double(DispatchTime.now().uptimeNanoseconds - t0.uptimeNanoseconds) / 1e6
    }
    func addedLatency() throws -> Double {
        var directRT: [Double] = [], tunnelRT: [Double] = []
        for _ in 0..<200 {
            directRT.append(try roundTrip { try connectTCP(echo.port) })
            tunnelRT.append(try roundTrip { try connectThroughTunnel(socketPath, port: echo.port) })
        }
        return percentile(tunnelRT.sorted(), 0.5) - percentile(directRT.sorted(), 0.5)
    }
    let added = try addedLatency()

    // 50 streams held open, each having carried one echo.
    var open: [Int32] = []
    for _ in 0..<50 {
        let fd = try connectThroughTunnel(socketPath, port: echo.port)
        open.append(fd)
        try sendAll(fd, message)
        _ = try recvExact(fd, message.count)
    }
    try await Task.sleep(for: .seconds(1))
    let rss50 = rssKB(agent.processIdentifier)
    for fd in open { close(fd) }
    // Throughput: the same bytes, one connection each; the sink answers one byte once it has them all.
    let total = megabytes << 20
    func transfer(_ fd: Int32) throws -> Double {
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0x5a, count: 256 << 10)
        var header = [UInt8](repeating: 0, count: 8)
        withUnsafeBytes(of: UInt64(total).bigEndian) { for i in 0..<8 { header[i] = $0[i] } }
        let t0 = DispatchTime.now()
        try sendAll(fd, header)
        var sent = 0
        while sent < total {
            let n = min(chunk.count, total - sent)
            try sendAll(fd, Array(chunk[0..<n]))
            sent += n
        }
        _ = try recvExact(fd, 1)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0.uptimeNanoseconds) / 1e9
        return Double(total) / 1e6 / seconds
    }
    let direct = try transfer(try connectTCP(sink.port))
    let tunnel = try transfer(try connectThroughTunnel(socketPath, port: sink.port))

    // The same small requests once the bulk transfer is through (a backlog left in the tunnel shows here).
    let addedAfterBulk = try addedLatency()
    return TunnelBenchResult(tunnel_mb_per_s: (tunnel * 10).rounded() / 10, direct_mb_per_s: (direct * 10).rounded() / 10,
                             tunnel_added_latency_ms: (added * 100).rounded() / 100,
                             tunnel_added_latency_after_bulk_ms: (addedAfterBulk * 100).rounded() / 100, tunnel_rss_idle_kb: rssIdle,
                             tunnel_rss_50_streams_kb: rss50)
}

// MARK: - Blocking sockets (the bench's side of the measurement, kept simple on purpose)

struct BenchSocketError: Error, CustomStringConvertible {
    let description: String
}

func connectTCP(_ port: Int) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    guard rc == 0 else { close(fd); throw BenchSocketError(description: "connect 127.0.0.1:\(port): \(String(cString: strerror(errno)))") }
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    return fd
}

/// `CONNECT 127.0.0.1:port` on the tunnel server's Unix socket; returns the socket once the answer is 200.
func connectThroughTunnel(_ path: String, port: Int) throws -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in
        for (i, b) in path.utf8.prefix(raw.count - 1).enumerated() { raw[i] = b }
    }
    let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
    guard rc == 0 else { close(fd); throw BenchSocketError(description: "connect \(path): \(String(cString: strerror(errno)))") }
    try sendAll(fd, Array("CONNECT 127.0.0.1:\(port) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n\r\n".utf8))
    var head: [UInt8] = []
    while !head.suffix(4).elementsEqual([13, 10, 13, 10]) {
        head += try recvExact(fd, 1)
        if head.count > 4096 { break }
    }
    let text = String(decoding: head, as: UTF8.self)
    guard text.hasPrefix("HTTP/1.1 200") || text.hasPrefix("HTTP/1.0 200") else {
        close(fd)
        throw BenchSocketError(description: "tunnel CONNECT refused: \(text)")
    }
    return fd
}

func sendAll(_ fd: Int32, _ bytes: [UInt8]) throws {
    var off = 0
    while off < bytes.count {
        let n = bytes[off...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard n > 0 else { throw BenchSocketError(description: "send: \(String(cString: strerror(errno)))") }
        off += n
    }
}

func recvExact(_ fd: Int32, _ count: Int) throws -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    var got = 0
    while got < count {
        let n = out[got...].withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { throw BenchSocketError(description: "recv: \(n == 0 ? "connection closed" : String(cString: strerror(errno)))") }
        got += n
    }
    return out
}

/// A loopback TCP server on a free port, one thread per connection: `sink` reads an 8-byte length and that many
/// bytes, then answers one byte; `echo` sends back whatever it reads.
final class LoopbackServer: @unchecked Sendable {
    enum Mode { case sink, echo }
    let port: Int
    private let fd: Int32

    init(mode: Mode) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && listen(fd, 128) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { throw BenchSocketError(description: "loopback listener: \(String(cString: strerror(errno)))") }
        port = Int(UInt16(bigEndian: addr.sin_port))
        let listener = fd
        Thread.detachNewThread {
            while true {
                let conn = accept(listener, nil, nil)
                if conn < 0 { return }
                Thread.detachNewThread { LoopbackServer.serve(conn, mode) }
            }
        }
    }

    deinit { shutdown(fd, Int32(SHUT_RDWR)); close(fd) }

    private static func serve(_ conn: Int32, _ mode: Mode) {
        defer { close(conn) }
        var buffer = [UInt8](repeating: 0, count: 256 << 10)
        switch mode {
        case .sink:
            guard let header = try? recvExact(conn, 8) else { return }
            var want = 0
            for b in header { want = want << 8 | Int(b) }
            while want > 0 {
                let n = buffer.withUnsafeMutableBytes { recv(conn, $0.baseAddress, min($0.count, want), 0) }
                if n <= 0 { return }
                want -= n
            }
            try? sendAll(conn, [1])
        case .echo:
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(conn, $0.baseAddress, $0.count, 0) }
                if n <= 0 { return }
                if (try? sendAll(conn, Array(buffer[0..<n]))) == nil { return }
            }
        }
    }
}
