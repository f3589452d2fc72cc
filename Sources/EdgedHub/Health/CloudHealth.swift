// Is the cloud reachable? YurtHub's answer, which edged copies: renew the node Lease every 10 s with a 2 s timeout;
// three failures in a row mark the cloud unhealthy, two successes in a row mark it healthy again. The hub serves
// from its store while the cloud is unhealthy, and ends the watches it serves from the store when it comes back.
//
// When it comes back after an outage, the node's reconnect (ending those watches, replaying queued writes, the node
// status the agent retries) waits for its *return turn*: a random point within one health-check interval (10 s).
// An API server restart cuts every node at once, and every hub sees it back within the same 2 s probe period; without
// the turn the whole fleet re-watched and re-wrote in the same second (edged-bench fleet: all 5 nodes' 42 requests
// in one second). kubelet's reconnect is spread the same way, by its reflectors' jittered back-off and its 10 s
// status period.

import EdgedCore
import Synchronization

/// The hub's view of the API server.
public enum CloudState: String, Sendable, Equatable {
    /// Not probed yet (just started): reads are served from the store when it has them, so an offline reboot does
    /// not wait for a network timeout.
    case unknown
    case online
    case offline
}

public struct CloudHealthConfig: Sendable, Equatable {
    public var interval: Duration = .seconds(10)
    public var timeout: Duration = .seconds(2)
    public var failureThreshold = 3
    public var successThreshold = 2
    /// The return turn after an outage is drawn from [0, returnSpread) (nil: one `interval`).
    public var returnSpread: Duration?

    public init(interval: Duration = .seconds(10), timeout: Duration = .seconds(2), failureThreshold: Int = 3,
                successThreshold: Int = 2, returnSpread: Duration? = nil) {
        self.interval = interval
        self.timeout = timeout
        self.failureThreshold = failureThreshold
        self.successThreshold = successThreshold
        self.returnSpread = returnSpread
    }

    /// A random delay in [0, returnSpread) (whole milliseconds).
    func drawReturnDelay() -> Duration {
        let spread = returnSpread ?? interval
        let ms = spread.components.seconds * 1000 + spread.components.attoseconds / 1_000_000_000_000_000
        return ms > 0 ? .milliseconds(Int64.random(in: 0..<ms)) : .zero
    }
}

public struct CloudHealthSnapshot: Sendable, Equatable {
    public var state: CloudState
    /// When the current state began.
    public var since: Timestamp
    /// The last successful exchange with the API server (probe or proxied request).
    public var lastSync: Timestamp?
    /// Why the last probe failed.
    public var lastError: String?
}

/// The state machine and its waiters. Thread-safe.
public final class CloudHealth: Sendable {
    private struct State {
        var state: CloudState = .unknown
        var since = Timestamp.now()
        var lastSync: Timestamp?
        var lastError: String?
        var syncs = 0
        var lastSuccess: ContinuousClock.Instant?
        var failures = 0
        var successes = 0
        var nextWaiter = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        /// How many times the state went to offline, and who waits for the next time.
        var outages = 0
        var outageWaiters: [Int: CheckedContinuation<Void, Never>] = [:]
        /// When this node's reconnect may start, set when the cloud comes back after an outage (nil: at once).
        var returnTurn: ContinuousClock.Instant?
    }
    public let config: CloudHealthConfig
    private let state = Mutex(State())
    private let changes: @Sendable (CloudState, CloudState) -> Void

    /// `onChange(old, new)` is called (outside the lock) after every state change.
    public init(config: CloudHealthConfig = .init(), onChange: @escaping @Sendable (CloudState, CloudState) -> Void = { _, _ in }) {
        self.config = config
        self.changes = onChange
    }

    public var current: CloudState { state.withLock { $0.state } }

    public var snapshot: CloudHealthSnapshot {
        state.withLock { CloudHealthSnapshot(state: $0.state, since: $0.since, lastSync: $0.lastSync, lastError: $0.lastError) }
    }

    /// A probe's outcome. From `unknown` one result decides; afterwards the thresholds apply.
    public func record(success: Bool, error: String? = nil) {
        let (change, resumed): ((CloudState, CloudState)?, [CheckedContinuation<Void, Never>]) = state.withLock { s in
            let old = s.state
            if success {
                s.lastSync = .now()
                s.syncs += 1
                s.lastSuccess = .now
                s.lastError = nil
                s.failures = 0
                s.successes += 1
                if s.state == .unknown || (s.state == .offline && s.successes >= config.successThreshold) {
                    s.state = .online
                }
            } else {
                s.lastError = error
                s.successes = 0
                s.failures += 1
                if s.state == .unknown || (s.state == .online && s.failures >= config.failureThreshold) {
                    s.state = .offline
                }
            }
            guard s.state != old else { return (nil, []) }
            s.since = .now()
            var resumed: [CheckedContinuation<Void, Never>] = []
            if s.state == .online {
                s.returnTurn = old == .offline ? .now + config.drawReturnDelay() : nil
                resumed = Array(s.waiters.values)
                s.waiters = [:]
            } else if s.state == .offline {
                s.outages += 1
                resumed = Array(s.outageWaiters.values)
                s.outageWaiters = [:]
            }
            return ((old, s.state), resumed)
        }
        for c in resumed { c.resume() }
        if let (old, new) = change { changes(old, new) }
    }

    /// A proxied request got an answer from the API server: the link works (does not change the state by itself).
    public func noteSync() {
        state.withLock {
            $0.lastSync = .now()
            $0.syncs += 1
            $0.lastSuccess = .now
        }
    }

    /// Counts successful exchanges with the API server: a watch served from the store ends once this moved on
    /// (the cloud answered since the watch lost it) and the state is online.
    public var syncCount: Int { state.withLock { $0.syncs } }

    /// When the API server last answered (probe or proxied request).
    public var lastSuccess: ContinuousClock.Instant? { state.withLock { $0.lastSuccess } }

    /// Returns once the cloud is online (at once if it is), or when the task is cancelled.
    public func waitUntilOnline() async {
        await wait(in: \.waiters) { $0.state == .online }
    }

    /// When this node's reconnect after the last outage may start (nil: there was none, or it started at once).
    public var returnTurn: ContinuousClock.Instant? { state.withLock { $0.returnTurn } }

    /// Online, and this node's return turn after the last outage has come.
    public var isPastReturnTurn: Bool {
        state.withLock { s in s.state == .online && (s.returnTurn.map { ContinuousClock.now >= $0 } ?? true) }
    }

    /// Returns once the cloud is online and this node's return turn has come (or the task is cancelled).
    public func waitForReturnTurn() async {
        while !Task.isCancelled {
            await waitUntilOnline()
            guard let turn = returnTurn, ContinuousClock.now < turn else { return }
            try? await Task.sleep(until: turn)
        }
    }

    /// How many times the cloud went offline so far (for `waitForOutage(after:)`).
    public var outages: Int { state.withLock { $0.outages } }

    /// Returns once the cloud has gone offline more than `count` times (at once if it has), or when the task is
    /// cancelled. A forwarded watch waits for this: the connection it streams on went through the outage and may be
    /// dead without anyone telling (a firewall that drops packets sends no reset).
    public func waitForOutage(after count: Int) async {
        await wait(in: \.outageWaiters) { $0.outages > count }
    }

    /// Parks the task in `waiters` (resumed by `record` when the state changes) until `done` holds or the task is
    /// cancelled.
    private func wait(in waiters: WritableKeyPath<State, [Int: CheckedContinuation<Void, Never>]> & Sendable,
                      until done: @escaping @Sendable (State) -> Bool) async {
        let id: Int? = state.withLock { s in
            if done(s) { return nil }
            s.nextWaiter += 1
            return s.nextWaiter
        }
        guard let id else { return }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { s -> Bool in
                    if done(s) || Task.isCancelled { return true }
                    s[keyPath: waiters][id] = c
                    return false
                }
                if resumeNow { c.resume() }
            }
        } onCancel: {
            let c = state.withLock { $0[keyPath: waiters].removeValue(forKey: id) }
            c?.resume()
        }
    }

    /// Probes every `config.interval` until cancelled; each probe is bounded by `config.timeout`. While the cloud is
    /// not online the probe runs every 2 s at most (unlike YurtHub's fixed 10 s), so the hub sees a returning link
    /// within seconds and the node can report Ready again before the node controller's eviction timers run on:
    /// failed probes cost the API server nothing, and it is back to the normal interval once online.
    public func run(probe: @escaping @Sendable () async throws -> Void) async {
        while !Task.isCancelled {
            do {
                try await withTimeout(config.timeout, probe)
                record(success: true)
            } catch is CancellationError where Task.isCancelled {
                return
            } catch {
                record(success: false, error: "\(error)")
            }
            try? await Task.sleep(for: current == .online ? config.interval : min(config.interval, .seconds(2)))
        }
    }
}

struct ProbeTimeout: Error, CustomStringConvertible {
    let after: Duration
    var description: String { "no answer from the API server within \(after)" }
}

/// Runs `body`, failing with `ProbeTimeout` when it takes longer than `timeout` (the body is cancelled).
func withTimeout<T: Sendable>(_ timeout: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: timeout)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else { throw ProbeTimeout(after: timeout) }
        return value
    }
}
