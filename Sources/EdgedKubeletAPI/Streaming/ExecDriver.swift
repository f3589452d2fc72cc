// Runs one exec or attach for a streaming session, whatever the wire protocol.
import EdgedCore
import Logging
import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// The output side of a session, as the exec driver sees it. Called on the session's event loop.
protocol ExecOutput: AnyObject {
    /// Sends bytes to the client's stdout or stderr; the future completes once they are written.
    func send(_ stream: ExecOutputStream, _ bytes: ByteBuffer) -> EventLoopFuture<Void>
    /// Writes `status` on the error stream, ends every stream and then closes the connection.
    func finish(_ status: ExecStatus)
}

enum ExecOutputStream { case stdout, stderr }

/// How an exec or attach ended, as written on the error stream.
enum ExecStatus: Equatable {
    case success
    case exitCode(Int32, command: [String])
    case failure(message: String, reason: String, code: Int)

    /// The metav1.Status JSON kubelet writes (protocol v4 and later).
    var statusJSON: String {
        switch self {
        case .success:
            return JSONValue.object([("metadata", .object([])), ("status", .string("Success"))]).jsonText
        case .exitCode(let code, let command):
            let message = "command terminated with non-zero exit code: error executing command "
                + "[\(command.joined(separator: " "))], exit code \(code)"
            return JSONValue.object([
                ("metadata", .object([])), ("status", .string("Failure")), ("message", .string(message)),
                ("reason", .string("NonZeroExitCode")),
                ("details", .object([("causes", .array([.object([
                    ("reason", .string("ExitCode")), ("message", .string("\(code)")),
                ])]))])),
            ]).jsonText
        case .failure(let message, let reason, let code):
            return JSONValue.object([
                ("metadata", .object([])), ("status", .string("Failure")), ("message", .string(message)),
                ("reason", .string(reason)), ("code", .number("\(code)")),
            ]).jsonText
        }
    }

    /// The plain text older protocols (v1-v3) write; nothing on success.
    var statusText: String {
        switch self {
        case .success: return ""
        case .exitCode(let code, let command):
            return "error executing command [\(command.joined(separator: " "))], exit code \(code)"
        case .failure(let message, _, _): return message
        }
    }
}

/// Starts the process (or follows the log for attach), pumps its output to the session, stdin and resizes to the
/// process, and writes the status when it ends. Confined to the session's event loop.
final class ExecDriver: @unchecked Sendable {
    /// How long to wait for output to drain after the process exited (a background child may hold the pipe).
    static let drainGrace: TimeAmount = .seconds(2)

    let eventLoop: EventLoop
    let request: StreamingRequest
    let backend: any KubeletBackend
    let logger: Logger
    weak var output: (any ExecOutput)?

    private var process: ContainerProcess?
    private var stdinChannel: Channel?
    private var ttyChannel: Channel?
    private var outputChannels: [Channel] = []
    private var openOutputs = 0
    private var exitCode: Int32?
    private var finished = false
    private var started = false
    private var stdinQueue: [(ByteBuffer, EventLoopPromise<Void>)] = []
    private var stdinEnded = false
    private var pendingSize: (UInt16, UInt16)?
    private var tasks: [Task<Void, Never>] = []

    init(eventLoop: EventLoop, request: StreamingRequest, backend: any KubeletBackend, logger: Logger) {
        self.eventLoop = eventLoop
        self.request = request
        self.backend = backend
        self.logger = logger
    }

    private var command: [String] {
        if case .exec(_, let command, _) = request { return command }
        return []
    }

    func start() {
        eventLoop.assertInEventLoop()
        guard !started else { return }
        started = true
        switch request {
        case .exec(let ref, let command, let flags):
            let backend = self.backend
            tasks.append(Task {
                do {
                    let process = try await backend.exec(ref, command: command, stdin: flags.stdin, tty: flags.tty)
                    self.eventLoop.execute { self.run(process, flags: flags) }
                } catch {
                    self.eventLoop.execute { self.fail(error, doing: "exec in \(ref)") }
                }
            })
        case .attach(let ref, let flags):
            if flags.stdin {
                finish(.failure(message: "attach to \(ref) with stdin is not supported: edged runs containers with "
                    + "stdin closed; use kubectl attach without -i, or kubectl exec -i", reason: "BadRequest", code: 400))
                return
            }
            startAttach(ref, flags: flags)
        case .portForward:
            finish(.failure(message: "port-forward is not an exec", reason: "BadRequest", code: 400))
        }
    }

    private func fail(_ error: Error, doing what: String) {
        if let e = error as? EdgedError, e.code == .notFound {
            finish(.failure(message: e.message, reason: "NotFound", code: 404))
        } else {
            logger.warning("\(what) failed: \(error)")
            finish(.failure(message: "Internal error occurred: error executing command in container: \(error)",
                            reason: "InternalError", code: 500))
        }
    }

    private func run(_ process: ContainerProcess, flags: StreamFlags) {
        self.process = process
        if finished {  // the client went away while the process was starting
            process.terminate()
            closeDescriptors(process)
            return
        }
        let bootstrap = NIOPipeBootstrap(group: eventLoop).channelOption(.allowRemoteHalfClosure, value: true)
        if process.tty {
            openOutputs = 1
            bootstrap.channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(self.outputPump(.stdout))
                }
            }.takingOwnershipOfDescriptor(inputOutput: process.stdout).whenComplete { result in
                switch result {
                case .success(let channel):
                    self.ttyChannel = channel
                    self.outputChannels.append(channel)
                    self.flushStdin()
                case .failure(let error):
                    self.outputEnded()
                    self.logger.warning("exec: cannot read the terminal of the process: \(error)")
                }
            }
            if let size = pendingSize { process.resize(size.0, size.1) }
        } else {
            var outputs: [(Int32, ExecOutputStream)] = [(process.stdout, .stdout)]
            if let fd = process.stderr { outputs.append((fd, .stderr)) }
            openOutputs = outputs.count
            for (fd, stream) in outputs {
                bootstrap.channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(self.outputPump(stream))
                    }
                }.takingOwnershipOfDescriptor(input: fd).whenComplete { result in
                    switch result {
                    case .success(let channel): self.outputChannels.append(channel)
                    case .failure(let error):
                        self.logger.warning("exec: cannot read the \(stream) of the process: \(error)")
                        self.outputEnded()
                    }
                }
            }
            if let fd = process.stdin {
                NIOPipeBootstrap(group: eventLoop).takingOwnershipOfDescriptor(output: fd).whenComplete { result in
                    switch result {
                    case .success(let channel):
                        self.stdinChannel = channel
                        self.flushStdin()
                    case .failure(let error):
                        self.logger.warning("exec: cannot write the stdin of the process: \(error)")
                        close(fd)
                    }
                }
            }
        }
        tasks.append(Task {
            let code = await process.wait()
            self.eventLoop.execute { self.exited(code) }
        })
    }

    private func outputPump(_ stream: ExecOutputStream) -> StreamPump {
        let loop = eventLoop
        return StreamPump(onData: { [weak self] bytes in
            guard let self, let output = self.output, !self.finished else { return loop.makeSucceededVoidFuture() }
            return output.send(stream, bytes)
        }, onEnd: { [weak self] in self?.outputEnded() })
    }

    private func closeDescriptors(_ p: ContainerProcess) {
        close(p.stdout)
        if let fd = p.stdin { close(fd) }
        if let fd = p.stderr { close(fd) }
    }

    private func outputEnded() {
        openOutputs -= 1
        maybeFinish()
    }

    private func exited(_ code: Int32) {
        exitCode = code
        maybeFinish()
        if !finished {
            eventLoop.scheduleTask(in: Self.drainGrace) { [self] in
                openOutputs = 0
                maybeFinish()
            }
        }
    }

    private func maybeFinish() {
        guard let code = exitCode, openOutputs <= 0, !finished else { return }
        finish(code == 0 ? .success : .exitCode(code, command: command))
    }

    private func finish(_ status: ExecStatus) {
        guard !finished else { return }
        finished = true
        stdinChannel?.close(promise: nil)
        for channel in outputChannels { channel.close(promise: nil) }
        for (_, promise) in stdinQueue { promise.succeed() }
        stdinQueue = []
        for task in tasks { task.cancel() }
        output?.finish(status)
    }

    // MARK: from the client

    /// Bytes for the process's stdin (or terminal); the future completes once written (back-pressure).
    func stdin(_ bytes: ByteBuffer) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        if finished || stdinEnded { promise.succeed(); return promise.futureResult }
        stdinQueue.append((bytes, promise))
        flushStdin()
        return promise.futureResult
    }

    /// The client closed its stdin: close the process's stdin (a terminal stays open).
    func stdinEnd() {
        stdinEnded = true
        flushStdin()
    }

    private func flushStdin() {
        guard let target = ttyChannel ?? stdinChannel else { return }
        for (bytes, promise) in stdinQueue { target.writeAndFlush(bytes, promise: promise) }
        stdinQueue = []
        if stdinEnded, let channel = stdinChannel {
            channel.close(promise: nil)
            stdinChannel = nil
        }
    }

    func resize(width: UInt16, height: UInt16) {
        if let process { process.resize(width, height) } else { pendingSize = (width, height) }
    }

    /// The client went away: kill the process and stop.
    func clientGone() {
        eventLoop.assertInEventLoop()
        guard !finished else { return }
        logger.info("streaming client of \(requestDescription) went away; stopping it")
        process?.terminate()
        output = nil
        finish(.success)
    }

    var requestDescription: String {
        switch request {
        case .exec(let ref, let command, _): return "exec \(command.first ?? "") in \(ref)"
        case .attach(let ref, _): return "attach to \(ref)"
        case .portForward(let ns, let pod, _, _): return "port-forward to pod \(ns)/\(pod)"
        }
    }

    // MARK: attach

    private func startAttach(_ ref: ContainerRef, flags: StreamFlags) {
        let backend = self.backend
        var streams: [(CRILogStream, ExecOutputStream)] = []
        if flags.stdout { streams.append((.stdout, .stdout)) }
        if flags.stderr || (flags.tty && flags.stdout) { streams.append((.stderr, flags.stderr ? .stderr : .stdout)) }
        tasks.append(Task {
            let path: String
            do { path = try await backend.logPath(ref, previous: false) } catch {
                self.eventLoop.execute { self.fail(error, doing: "attach to \(ref)") }
                return
            }
            await withTaskGroup(of: Void.self) { group in
                for (source, target) in streams {
                    group.addTask {
                        let reader = CRILogReader(path: path, options: CRILogOptions(tailLines: 0, follow: true, stream: source))
                        do {
                            try await reader.read { bytes in
                                let future = self.eventLoop.flatSubmit { () -> EventLoopFuture<Void> in
                                    guard let output = self.output, !self.finished else {
                                        return self.eventLoop.makeFailedFuture(CancellationError())
                                    }
                                    return output.send(target, ByteBuffer(bytes: bytes))
                                }
                                try await future.get()
                            }
                        } catch {
                            if !(error is CancellationError) && !Task.isCancelled {
                                self.logger.warning("attach to \(ref): reading its log \(path) failed: \(error)")
                            }
                        }
                    }
                }
            }
            // The log readers only end when the file went away or the client did.
            self.eventLoop.execute { self.finish(.success) }
        })
    }
}

