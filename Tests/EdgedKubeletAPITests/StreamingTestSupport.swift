// Test fixtures for the streaming protocols: a minimal NIO HTTP server hosting StreamingServer, a backend whose exec
// runs real processes (pipes or a pty) and whose port-forward dials a real TCP echo server, and a raw client.
import EdgedCore
@testable import EdgedKubeletAPI
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// Runs `/bin/sh -c` style commands with real pipes or a real pty; port-forward connects to 127.0.0.1:port.
final class StreamingTestBackend: KubeletBackend, @unchecked Sendable {
    let terminated = NIOLockedValueBox<[Int32]>([])
    let logFile: String
    init(logFile: String = "/nonexistent") { self.logFile = logFile }

    func podList() async -> JSONValue { .object([]) }
    func logPath(_ ref: ContainerRef, previous: Bool) async throws -> String {
        guard ref.container == "app" else { throw EdgedError(.notFound, "no \(ref)") }
        return logFile
    }
    func statsSummary() async throws -> JSONValue { .object([]) }
    func resourceUsage() async throws -> NodeResourceUsage {
        NodeResourceUsage(timestampMillis: 0, node: .init(cpuSeconds: 0, memoryWorkingSetBytes: 0), containers: [])
    }

    func portForward(namespace: String, pod: String, uid: String?, port: UInt16) async throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            throw EdgedError(.io, "connect to 127.0.0.1:\(port) in pod \(namespace)/\(pod) failed: errno \(errno)")
        }
        return fd
    }

    func exec(_ ref: ContainerRef, command: [String], stdin: Bool, tty: Bool) async throws -> ContainerProcess {
        guard ref.container == "app" else { throw EdgedError(.notFound, "container \(ref.container) not found in pod \(ref.namespace)/\(ref.pod)") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var parentEnds: [Int32] = []
        var childEnds: [Int32] = []
        var process: (stdin: Int32?, stdout: Int32, stderr: Int32?)
        var master: Int32 = -1
        if tty {
            // posix_openpt and friends are not in Swift's Glibc module: /dev/ptmx with TIOCSPTLCK and TIOCGPTN.
            master = open("/dev/ptmx", O_RDWR | O_NOCTTY)
            var unlock: Int32 = 0
            _ = ioctl(master, UInt(0x4004_5431), &unlock)
            var number: UInt32 = 0
            _ = ioctl(master, UInt(0x8004_5430), &number)
            let slave = open("/dev/pts/\(number)", O_RDWR | O_NOCTTY)
            for target in 0...2 { posix_spawn_file_actions_adddup2(&actions, slave, Int32(target)) }
            posix_spawn_file_actions_addclose(&actions, master)
            posix_spawnattr_setflags(&attr, Int16(0x80)  /* POSIX_SPAWN_SETSID */)
            childEnds = [slave]
            process = (nil, master, nil)
        } else {
            var inPipe: [Int32] = [0, 0], outPipe: [Int32] = [0, 0], errPipe: [Int32] = [0, 0]
            pipe(&inPipe); pipe(&outPipe); pipe(&errPipe)
            posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
            posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
            posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
            for fd in [inPipe[1], outPipe[0], errPipe[0]] { posix_spawn_file_actions_addclose(&actions, fd) }
            childEnds = [inPipe[0], outPipe[1], errPipe[1]]
            parentEnds = [inPipe[1], outPipe[0], errPipe[0]]
            for fd in parentEnds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            process = (inPipe[1], outPipe[0], errPipe[0])
            if !stdin { close(inPipe[1]); process.stdin = nil }
        }
        // Only 0-2 for the child: a test socket it inherited would keep the client's connection open.
        // (glibc 2.34's posix_spawn_file_actions_addclosefrom_np, which Swift's Glibc module does not declare.)
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        if let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") {
            _ = unsafeBitCast(sym, to: CloseFrom.self)(&actions, 3)
        }
        var spawned: pid_t = 0
        let argv = command.map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        let rc = posix_spawn(&spawned, command[0], &actions, &attr, argv, environ)
        for fd in childEnds { close(fd) }
        guard rc == 0 else { throw EdgedError(.io, "spawn \(command[0]) failed: \(rc)") }
        let m = master
        let pid = spawned
        return ContainerProcess(
            stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, tty: tty,
            resize: { w, h in
                var size = winsize(ws_row: h, ws_col: w, ws_xpixel: 0, ws_ypixel: 0)
                _ = ioctl(m, UInt(TIOCSWINSZ), &size)
            },
            wait: {
                var status: Int32 = 0
                while waitpid(pid, &status, WNOHANG) == 0 { try? await Task.sleep(for: .milliseconds(10)) }
                let sig = status & 0x7f
                return sig == 0 ? (status >> 8) & 0xff : 128 + sig
            },
            terminate: { [terminated] in
                terminated.withLockedValue { $0.append(pid) }
                kill(pid, SIGKILL)
            })
    }
}

/// Hosts StreamingServer behind a minimal HTTP pipeline with the names the kubelet server uses.
final class StreamingTestServer: @unchecked Sendable {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let channel: Channel
    var port: Int { channel.localAddress!.port! }

    final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let backend: any KubeletBackend
        var head: HTTPRequestHead?
        init(backend: any KubeletBackend) { self.backend = backend }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h): head = h
            case .body: break
            case .end:
                guard let head else { return }
                let parts = head.uri.split(separator: "?", maxSplits: 1).map(String.init)
                do {
                    guard let request = try StreamingRequest.parse(path: parts[0], query: parts.count > 1 ? parts[1] : "") else {
                        StreamingServer.refuse(context.channel, .notFound, "not found", logger: Logger(label: "test"))
                        return
                    }
                    StreamingServer.start(channel: context.channel, head: head, request: request, backend: backend,
                                          httpHandlerNames: ["test-http"], logger: Logger(label: "test-streaming"))
                } catch {
                    StreamingServer.refuse(context.channel, .badRequest, "\(error)", logger: Logger(label: "test"))
                }
            }
        }
    }

    init(backend: any KubeletBackend) throws {
        channel = try ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let ops = channel.pipeline.syncOperations
                    try ops.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)), name: "http-decoder")
                    try ops.addHandler(HTTPResponseEncoder(), name: "http-encoder")
                    try ops.addHandler(HTTPHandler(backend: backend), name: "test-http")
                }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
    }

    func shutdown() {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }
}

/// A TCP echo server (the "pod"): writes back what it reads and half-closes after the client does.
final class EchoServer: @unchecked Sendable {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let channel: Channel
    var port: UInt16 { UInt16(channel.localAddress!.port!) }

    /// Echoes, and on the peer's half-close closes once every echoed byte is written: NIO turns a half-close of
    /// a connection whose input already ended into a full close, which would drop writes still queued (under
    /// load the echo's writes back to edged queue up, and the test saw a short echo).
    final class Echo: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        private var lastWrite: EventLoopFuture<Void>?
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let promise = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(data, promise: promise)
            lastWrite = promise.futureResult
        }
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            guard let e = event as? ChannelEvent, e == .inputClosed else { return }
            let channel = context.channel
            (lastWrite ?? context.eventLoop.makeSucceededVoidFuture()).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    init() throws {
        channel = try ServerBootstrap(group: group)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { $0.pipeline.addHandler(Echo()) }
            .bind(host: "127.0.0.1", port: 0).wait()
    }

    func shutdown() {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }
}

struct TestTimeout: Error, CustomStringConvertible {
    var description: String
}

/// A raw client connection: bytes in accumulate, tests poll for what they expect.
final class RawClient: @unchecked Sendable {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let channel: Channel
    let received = NIOLockedValueBox<(ByteBuffer, Bool)>((ByteBuffer(), false))

    final class Collector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let box: NIOLockedValueBox<(ByteBuffer, Bool)>
        init(_ box: NIOLockedValueBox<(ByteBuffer, Bool)>) { self.box = box }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var b = unwrapInboundIn(data)
            box.withLockedValue { $0.0.writeBuffer(&b) }
        }
        func channelInactive(context: ChannelHandlerContext) { box.withLockedValue { $0.1 = true } }
    }

    init(port: Int) throws {
        let box = received
        channel = try ClientBootstrap(group: group)
            .channelInitializer { $0.pipeline.addHandler(Collector(box)) }
            .connect(host: "127.0.0.1", port: port).wait()
    }

    func send(_ bytes: [UInt8]) async throws { try await channel.writeAndFlush(ByteBuffer(bytes: bytes)) }
    func send(_ buffer: ByteBuffer) async throws { try await channel.writeAndFlush(buffer) }

    var closed: Bool { received.withLockedValue { $0.1 } }

    /// Waits until `take` finds what it wants in the received bytes (consuming them), or fails after `seconds`.
    func wait<T>(_ what: String, seconds: Double = 10, _ take: (inout ByteBuffer) throws -> T?) async throws -> T {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            let result: T? = try received.withLockedValue { try take(&$0.0) }
            if let result { return result }
            if Date() > deadline { throw TestTimeout(description: "timed out waiting for \(what)") }
            if closed, Date() > deadline.addingTimeInterval(-seconds + 0.5) {
                if let again: T = try received.withLockedValue({ try take(&$0.0) }) { return again }
                throw TestTimeout(description: "connection closed while waiting for \(what)")
            }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Sends an HTTP request and returns the response head (status, headers); the body of a non-101 is kept.
    func request(_ text: String) async throws -> (status: Int, headers: [String: String], body: String) {
        try await send(Array(text.utf8))
        return try await wait("response head") { buf -> (Int, [String: String], String)? in
            let view = buf.readableBytesView
            guard let end = view.firstRange(of: [13, 10, 13, 10]) else { return nil }
            let headText = String(decoding: view[view.startIndex..<end.lowerBound], as: UTF8.self)
            let lines = headText.components(separatedBy: "\r\n")
            let status = Int(lines[0].split(separator: " ")[1])!
            var headers: [String: String] = [:]
            for line in lines.dropFirst() {
                let kv = line.split(separator: ":", maxSplits: 1)
                headers[kv[0].lowercased()] = kv[1].trimmingCharacters(in: .whitespaces)
            }
            var body = ""
            if status != 101, let n = headers["content-length"].flatMap(Int.init) {
                guard view.count - (end.upperBound - view.startIndex) >= n else { return nil }
                body = String(decoding: view[end.upperBound..<(end.upperBound + n)], as: UTF8.self)
            }
            buf.moveReaderIndex(forwardBy: end.upperBound - view.startIndex + (status == 101 ? 0 : body.utf8.count))
            return (status, headers, body)
        }
    }

    func shutdown() {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }
}
