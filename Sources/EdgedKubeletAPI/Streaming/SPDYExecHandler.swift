// exec and attach over SPDY (remotecommand protocols v1-v4): one client stream per standard stream.
import EdgedCore
import Logging
import NIOCore

/// Waits for the streams the request needs (error, and stdin/stdout/stderr/resize as asked), then runs the exec
/// driver and maps its output onto them. Confined to the session's event loop.
final class SPDYExecHandler: SPDYApplication, ExecOutput, @unchecked Sendable {
    /// How long the client has to open its streams (kubelet's default stream creation timeout).
    nonisolated(unsafe) static var streamCreationTimeout: TimeAmount = .seconds(30)

    let driver: ExecDriver
    let protocolVersion: String
    let flags: StreamFlags
    let logger: Logger
    private weak var session: SPDYSession?
    private var ids: [String: UInt32] = [:]
    private var kinds: [UInt32: String] = [:]
    private var resizeBuffer: [UInt8] = []
    private var timeout: Scheduled<Void>?
    private var started = false

    init(driver: ExecDriver, protocolVersion: String, flags: StreamFlags, logger: Logger) {
        self.driver = driver
        self.protocolVersion = protocolVersion
        self.flags = flags
        self.logger = logger
        driver.output = self
    }

    /// Arms the stream creation timeout; call once the session is in the pipeline.
    func attach(to session: SPDYSession, eventLoop: EventLoop) {
        self.session = session
        timeout = eventLoop.scheduleTask(in: Self.streamCreationTimeout) { [self] in
            guard !started else { return }
            let missing = expected.subtracting(ids.keys).sorted()
            logger.warning("\(driver.requestDescription): the client did not open its \(missing.joined(separator: ", ")) stream(s) in time; closing")
            session.close()
        }
    }

    private var expected: Set<String> {
        var set: Set<String> = ["error"]
        if flags.stdin { set.insert("stdin") }
        if flags.stdout { set.insert("stdout") }
        if flags.stderr && !flags.tty { set.insert("stderr") }
        if flags.tty && protocolVersion != "channel.k8s.io" && protocolVersion != "v2.channel.k8s.io" { set.insert("resize") }
        return set
    }

    func streamOpened(_ session: SPDYSession, id: UInt32, headers: SPDYHeaders) {
        guard let kind = headers["streamtype"] else {
            logger.warning("\(driver.requestDescription): SPDY stream \(id) has no streamtype header; resetting it")
            session.reset(id, status: SPDYStatus.refusedStream)
            return
        }
        guard ["error", "stdin", "stdout", "stderr", "resize"].contains(kind), ids[kind] == nil else {
            logger.warning("\(driver.requestDescription): unexpected or repeated \(kind) stream \(id); resetting it")
            session.reset(id, status: SPDYStatus.refusedStream)
            return
        }
        ids[kind] = id
        kinds[id] = kind
        if !started, expected.isSubset(of: Set(ids.keys)) {
            started = true
            timeout?.cancel()
            driver.start()
        }
    }

    func streamData(_ session: SPDYSession, id: UInt32, _ data: ByteBuffer) -> EventLoopFuture<Void> {
        switch kinds[id] {
        case "stdin":
            return driver.stdin(data)
        case "resize":
            resizeBuffer += data.readableBytesView
            for size in ResizeDecoder.take(&resizeBuffer) { driver.resize(width: size.0, height: size.1) }
        default:
            break
        }
        return session.eventLoop.makeSucceededVoidFuture()
    }

    func streamHalfClosed(_ session: SPDYSession, id: UInt32) {
        if kinds[id] == "stdin" { driver.stdinEnd() }
    }

    func streamReset(_ session: SPDYSession, id: UInt32) {
        if kinds[id] == "stdin" { driver.stdinEnd() }
    }

    func sessionEnded(_ session: SPDYSession) {
        timeout?.cancel()
        driver.clientGone()
    }

    // MARK: ExecOutput

    func send(_ stream: ExecOutputStream, _ bytes: ByteBuffer) -> EventLoopFuture<Void> {
        guard let session else { return driver.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel) }
        guard let id = ids[stream == .stdout ? "stdout" : "stderr"] else { return session.eventLoop.makeSucceededVoidFuture() }
        return session.send(bytes, on: id)
    }

    func finish(_ status: ExecStatus) {
        guard let session else { return }
        let text = protocolVersion == "v4.channel.k8s.io" ? status.statusJSON : status.statusText
        if let id = ids["error"] {
            if !text.isEmpty { _ = session.send(ByteBuffer(string: text), on: id) }
        } else if !text.isEmpty {
            logger.warning("\(driver.requestDescription): \(text)")
        }
        for kind in ["stdout", "stderr", "error"] { if let id = ids[kind] { _ = session.finish(id) } }
        session.goAway()
    }
}

/// Splits the resize stream (a run of JSON objects `{"Width":W,"Height":H}`) into sizes.
enum ResizeDecoder {
    /// Removes each complete object from `buffer` and returns the sizes it held; a partial object stays.
    static func take(_ buffer: inout [UInt8]) -> [(UInt16, UInt16)] {
        var sizes: [(UInt16, UInt16)] = []
        var depth = 0
        var start: Int?
        var inString = false
        var escaped = false
        var consumed = 0
        for (i, b) in buffer.enumerated() {
            if inString {
                if escaped { escaped = false } else if b == 92 { escaped = true } else if b == 34 { inString = false }
                continue
            }
            switch b {
            case 34: inString = true
            case 123:
                if depth == 0 { start = i }
                depth += 1
            case 125:
                depth -= 1
                if depth == 0, let s = start {
                    if let json = try? JSONValue.parse(Array(buffer[s...i])),
                       let w = json["Width"].flatMap(number), let h = json["Height"].flatMap(number) {
                        sizes.append((w, h))
                    }
                    consumed = i + 1
                    start = nil
                }
                if depth < 0 { depth = 0; consumed = i + 1 }
            default:
                if depth == 0 { consumed = i + 1 }
            }
        }
        buffer.removeFirst(consumed)
        return sizes
    }

    private static func number(_ v: JSONValue) -> UInt16? {
        if case .number(let text) = v { return UInt16(text) }
        return nil
    }
}
