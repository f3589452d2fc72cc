// The node's tunnel agent: keeps one Connect stream open to each tunnel server instance and dials for them.

import Logging
import ServiceLifecycle
import Synchronization

/// The Konnectivity agent in edged, as a Service.
///
/// It dials the tunnel server over mutual TLS and calls AgentService.Connect with `agentID` and `agentIdentifiers`
/// metadata. The server's response headers carry `serverID` and `serverCount`: the agent keeps dialling until it
/// holds one Connect stream per server instance (a dial that lands on a server it already has is dropped), and
/// after a connection ends it dials again with jittered exponential backoff. Every dial builds a fresh TLS
/// context from the PEM files, so a certificate rotated on disk is used from the next connection on (`reconnect()`
/// forces that at once). DIAL_REQs are checked against `allowDestination`; see `AgentSession` for the streams.
@available(macOS 15.0, *)
public final class TunnelAgent: Service, Sendable {
    enum Event: Sendable {
        case established(id: Int, serverID: String, serverCount: Int)
        case ended(id: Int, error: String?)
        case reconnect
        case shutdown
    }

    struct State {
        var tasks: [Int: Task<Void, Never>] = [:]
        var connected: [Int: String] = [:]
        var outboxes: [Int: PacketOutbox] = [:]
        var serverCount = 1
        var openStreams = 0
        var lastError: String?
        var events: AsyncStream<Event>.Continuation?
        var draining = false
    }

    let config: TunnelAgentConfig
    let logger: Logger
    let state = Mutex(State())

    public init(config: TunnelAgentConfig, logger: Logger) {
        self.config = config
        var logger = logger
        logger[metadataKey: "agentID"] = "\(config.agentID)"
        self.logger = logger
    }

    /// Connected servers, open streams and the last error.
    public func status() -> TunnelAgentStatus {
        state.withLock { s in
            TunnelAgentStatus(connectedServers: s.connected.count, serverIDs: s.connected.values.sorted(),
                              serverCount: s.serverCount, openStreams: s.openStreams, lastError: s.lastError)
        }
    }

    /// Drops every connection and dials again at once, reading the certificate files anew (call after rotation).
    public func reconnect() {
        _ = state.withLock { $0.events?.yield(.reconnect) }
    }

    /// Tells every server this agent is going away (DRAIN: prefer other agents for new dials) and stops opening
    /// connections; the streams already open go on until `run` ends.
    public func drain() {
        let outboxes = state.withLock { s -> [PacketOutbox] in
            s.draining = true
            return Array(s.outboxes.values)
        }
        for o in outboxes { o.send(.drain()) }
    }

    public func run() async throws {
        let (events, input) = AsyncStream.makeStream(of: Event.self)
        state.withLock { $0.events = input }
        await withGracefulShutdownHandler {
            await supervise(events: events, input: input)
        } onGracefulShutdown: {
            self.drain()
            input.yield(.shutdown)
        }
        // Stop every connection and wait until they are gone.
        let tasks = state.withLock { s -> [Task<Void, Never>] in
            s.events = nil
            return Array(s.tasks.values)
        }
        for t in tasks { t.cancel() }
        for t in tasks { await t.value }
        input.finish()
    }

    /// The connection loop: one attempt at a time until there is a connection per server instance.
    private func supervise(events: AsyncStream<Event>, input: AsyncStream<Event>.Continuation) async {
        var nextID = 0
        var failures = 0
        var attempt: Int? = nil
        var seenEstablished: Set<Int> = []

        func launch(after delay: Duration) {
            nextID += 1
            let id = nextID
            attempt = id
            let task = Task {
                if delay > .zero { try? await Task.sleep(for: delay) }
                guard !Task.isCancelled else { input.yield(.ended(id: id, error: nil)); return }
                let error = await self.runConnection(id: id, events: input)
                input.yield(.ended(id: id, error: error))
            }
            state.withLock { $0.tasks[id] = task }
        }
        func wanted() -> Bool {
            state.withLock { !$0.draining && $0.connected.count < max(1, $0.serverCount) } && attempt == nil
        }

        if Task.isCancelled { return }
        launch(after: .zero)
        for await event in events {
            switch event {
            case .established(let id, let serverID, let count):
                seenEstablished.insert(id)
                if attempt == id { attempt = nil }
                let duplicate = state.withLock { s -> Bool in
                    s.serverCount = max(1, count)
                    if s.connected.values.contains(serverID) { return true }
                    s.connected[id] = serverID
                    return false
                }
                if duplicate {
                    logger.debug("tunnel server \(serverID) already connected; dropping the second connection")
                    let task = state.withLock { $0.tasks[id] }
                    task?.cancel()
                    if wanted() { launch(after: jittered(config.backoffInitial)) }
                } else {
                    failures = 0
                    logger.info("tunnel connected to server \(serverID) (\(count) server instance(s))")
                    if wanted() { launch(after: .zero) }
                }
            case .ended(let id, let error):
                let wasConnected = state.withLock { s -> String? in
                    s.tasks[id] = nil
                    s.outboxes[id] = nil
                    if let error { s.lastError = error }
                    return s.connected.removeValue(forKey: id)
                }
                if let sid = wasConnected {
                    logger.warning("tunnel connection to server \(sid) ended: \(error ?? "closed")")
                }
                let established = seenEstablished.remove(id) != nil
                if attempt == id {
                    attempt = nil
                    if !established && error != nil {
                        failures += 1
                        logger.warning("tunnel connection to \(config.serverHost):\(config.serverPort) failed: \(error ?? "")")
                    }
                }
                if wanted() { launch(after: delay(failures: failures)) }
            case .reconnect:
                failures = 0
                let tasks = state.withLock { Array($0.tasks.values) }
                logger.info("tunnel reconnecting (\(tasks.count) connection(s) dropped)")
                for t in tasks { t.cancel() }
            case .shutdown:
                return
            }
        }
    }

    /// The wait before the next dial after `failures` failed ones: jittered, doubling, capped.
    func delay(failures: Int) -> Duration {
        guard failures > 0 else { return jittered(config.backoffInitial / 4) }
        var d = config.backoffInitial
        for _ in 1..<min(failures, 16) where d < config.backoffMax { d = d * 2 }
        return jittered(min(d, config.backoffMax))
    }

    /// A random duration between half of `d` and `d`.
    func jittered(_ d: Duration) -> Duration {
        d * Double.random(in: 0.5...1.0)
    }
}
