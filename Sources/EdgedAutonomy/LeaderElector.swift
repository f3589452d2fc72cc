// Leader election on a coordination.k8s.io/v1 Lease, with the semantics of client-go's tools/leaderelection
// (leaderelection.go with the LeaseLock), so edged's controller and Go controllers read each other's Leases alike:
//
// - A candidate takes the Lease when there is none (create), when its holderIdentity is empty (released), when it
//   is its own, or when the record has not changed for leaseDurationSeconds *as observed locally*: the time is when
//   this process last saw the record change, on its own monotonic clock, never the holder's renewTime (clocks may
//   differ between machines). Taking it from another holder adds 1 to leaseTransitions; acquireTime is kept while
//   the same holder renews. Every write is a PUT with the resourceVersion read, so of two candidates only one wins
//   (the other gets 409 Conflict).
// - The leader renews every retryPeriod; when no renewal succeeds within renewDeadline it stops leading at once
//   (the work it does is cancelled) and becomes a candidate again. Unlike client-go, seeing another holder in the
//   Lease ends leadership at once too instead of after the deadline.
// - Stopping (SIGTERM) releases the Lease like client-go's ReleaseOnCancel: holderIdentity "" and
//   leaseDurationSeconds 1, so another replica takes over on its next try instead of after the lease duration.
//
// The Lease is read and written as raw JSON: only the spec fields above change, anything else goes back as read.

import EdgedCore
import EdgedKube
import Logging
import Synchronization

/// Where and how to elect.
public struct LeaderElectionConfig: Sendable {
    public var namespace: String
    public var name: String
    public var identity: String
    /// How long a non-leader waits after the last change it saw before taking the Lease (client-go: 15 s).
    public var leaseDuration: Duration
    /// How long the leader keeps trying to renew before it gives up leading (client-go: 10 s).
    public var renewDeadline: Duration
    /// How often candidates try and the leader renews (client-go: 2 s).
    public var retryPeriod: Duration
    /// Release the Lease when stopped (client-go's ReleaseOnCancel). Off: the others wait for the lease duration.
    public var releaseOnCancel: Bool

    public init(namespace: String, name: String, identity: String, leaseDuration: Duration = .seconds(15),
                renewDeadline: Duration = .seconds(10), retryPeriod: Duration = .seconds(2), releaseOnCancel: Bool = true) {
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.leaseDuration = leaseDuration
        self.renewDeadline = renewDeadline
        self.retryPeriod = retryPeriod
        self.releaseOnCancel = releaseOnCancel
    }

    /// client-go's checks: leaseDuration > renewDeadline > 1.2 × retryPeriod, all positive.
    public func validate() throws(LeaderElectionError) {
        guard retryPeriod > .zero, renewDeadline > retryPeriod * 1.2, leaseDuration > renewDeadline else {
            throw LeaderElectionError(message: "leader election needs lease duration > renew deadline > 1.2 × retry period (given \(durationText(leaseDuration)), \(durationText(renewDeadline)), \(durationText(retryPeriod))): e.g. 15s, 10s, 2s")
        }
        guard leaseDuration >= .seconds(1) else {
            throw LeaderElectionError(message: "the lease duration must be at least 1s (the Lease stores whole seconds; given \(durationText(leaseDuration)))")
        }
        guard !identity.isEmpty, !name.isEmpty, !namespace.isEmpty else {
            throw LeaderElectionError(message: "leader election needs an identity, a lease name and a namespace")
        }
    }

    var describe: String { "\(namespace)/\(name)" }
}

/// "15s", "500ms", "1.5s": a duration as Go prints it, for messages.
func durationText(_ d: Duration) -> String {
    let ms = d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
    if ms % 1000 == 0 { return "\(ms / 1000)s" }
    if ms < 1000 { return "\(ms)ms" }
    return "\(Double(ms) / 1000)s"
}

public struct LeaderElectionError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Runs leader election and the leader's work.
public final class LeaderElector: Sendable {
    public let config: LeaderElectionConfig
    private let client: KubeClient
    private let logger: Logger

    private struct State {
        /// The spec as last seen or written, and when (monotonic).
        var observedSpec: LeaseSpec?
        var observedSpecText: String?
        var observedTime: ContinuousClock.Instant?
        /// The Lease as last read or written (the next PUT's base, with its resourceVersion).
        var raw: JSONObject?
        var leading = false
        var reportedLeader: String?
        var transitions = 0
        var lastErrorLog: ContinuousClock.Instant?
    }
    private let state = Mutex(State())

    public init(client: KubeClient, config: LeaderElectionConfig, logger: Logger) {
        self.client = client
        self.config = config
        self.logger = logger
    }

    /// Whether this process leads right now.
    public var isLeader: Bool { state.withLock { $0.leading } }
    /// The holder this process last saw in the Lease ("" when released, nil before the first read).
    public var observedLeader: String? { state.withLock { $0.observedSpec?.holderIdentity } }
    /// How many times this process became leader.
    public var leaderTerms: Int { state.withLock { $0.transitions } }

    /// Campaigns, and while leading runs `lead` (cancelled when leadership is lost); repeats until the calling task is
    /// cancelled, then releases the Lease when it holds it and `releaseOnCancel` is set.
    public func run(_ lead: @escaping @Sendable () async -> Void) async {
        while !Task.isCancelled {
            guard await acquire() else { break }
            state.withLock {
                $0.leading = true
                $0.transitions += 1
            }
            logger.info("became leader: lease \(config.describe) is held by \(config.identity) (renewed every \(durationText(config.retryPeriod)), given up when not renewed within \(durationText(config.renewDeadline)))")
            let lost: String? = await withTaskGroup(of: String?.self) { group in
                group.addTask { await lead(); return nil }
                group.addTask { await self.renewUntilLost() }
                let first = await group.next() ?? nil
                group.cancelAll()
                return first
            }
            state.withLock { $0.leading = false }
            if Task.isCancelled { break }
            logger.warning("stopped leading: \(lost ?? "the leader's work ended"); stopped reconciling, campaigning again")
        }
        if config.releaseOnCancel {
            // A cancelled task cannot send requests: release from a task of its own, bounded by the renew deadline.
            let releaser = Task { await self.release() }
            let timeout = Task {
                try? await Task.sleep(for: self.config.renewDeadline)
                releaser.cancel()
            }
            await releaser.value
            timeout.cancel()
        }
    }

    /// Tries every retryPeriod (with client-go's jitter: up to +20 %) until the Lease is ours; false when cancelled.
    func acquire() async -> Bool {
        logger.info("attempting to acquire leader lease \(config.describe) as \(config.identity)")
        while !Task.isCancelled {
            if await tryAcquireOrRenew(deadline: .now + config.renewDeadline) { return true }
            reportLeader()
            let period = config.retryPeriod * Double.random(in: 1.0...1.2)
            do { try await Task.sleep(for: period) } catch { return false }
        }
        return false
    }

    /// Renews every retryPeriod; returns why leadership ended (a renewal that did not succeed within renewDeadline,
    /// or another holder in the Lease), or nil when cancelled.
    func renewUntilLost() async -> String? {
        while true {
            do { try await Task.sleep(for: config.retryPeriod) } catch { return nil }
            let deadline = ContinuousClock.now + config.renewDeadline
            var renewed = false
            while ContinuousClock.now < deadline {
                if Task.isCancelled { return nil }
                if await tryAcquireOrRenew(deadline: deadline) {
                    renewed = true
                    break
                }
                if Task.isCancelled { return nil }
                if let holder = observedLeader, !holder.isEmpty, holder != config.identity {
                    reportLeader()
                    return "lease \(config.describe) is now held by \(holder)"
                }
                let rest = deadline - .now
                if rest <= .zero { break }
                do { try await Task.sleep(for: min(config.retryPeriod, rest)) } catch { return nil }
            }
            if !renewed {
                return "lease \(config.describe) not renewed within the renew deadline (\(durationText(config.renewDeadline)))"
            }
        }
    }

    /// One try (client-go's tryAcquireOrRenew), bounded by `deadline`: a request still running then is cancelled.
    func tryAcquireOrRenew(deadline: ContinuousClock.Instant) async -> Bool {
        await withTaskGroup(of: Bool?.self) { group in
            group.addTask { await self.tryOnce() }
            group.addTask {
                try? await Task.sleep(until: deadline)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first ?? false
        }
    }

    private func record(acquireTime: String, transitions: Int32, now: String) -> [(String, JSONValue)] {
        let seconds = max(1, config.leaseDuration.components.seconds)
        return [("holderIdentity", .string(config.identity)), ("leaseDurationSeconds", .number(String(seconds))),
                ("acquireTime", .string(acquireTime)), ("renewTime", .string(now)),
                ("leaseTransitions", .number(String(transitions)))]
    }

    private func tryOnce() async -> Bool {
        let now = KubeTime.micro(.now())
        let clock = ContinuousClock.now
        // 1. The leader's fast path: update the copy it wrote last, assuming nobody else changed it.
        let fast: (JSONObject, LeaseSpec)? = state.withLock { s in
            guard s.observedSpec?.holderIdentity == config.identity, let raw = s.raw, let spec = s.observedSpec,
                  let at = s.observedTime, clock < at + .seconds(Int64(spec.leaseDurationSeconds ?? 0)) else { return nil }
            return (raw, spec)
        }
        if let (raw, spec) = fast {
            if let written = await write(raw, record(acquireTime: spec.acquireTime ?? now,
                                                     transitions: spec.leaseTransitions ?? 0, now: now)) {
                observe(written)
                return true
            }
            if Task.isCancelled { return false }
        }
        // 2. Read the Lease, or create it.
        let current: JSONObject
        do {
            current = try await client.getRaw(.leases, namespace: config.namespace, name: config.name)
        } catch let e as KubeError where e.isNotFound {
            let lease = Lease(metadata: ObjectMeta(name: config.name, namespace: config.namespace),
                              spec: LeaseSpec(holderIdentity: config.identity,
                                              leaseDurationSeconds: Int32(max(1, config.leaseDuration.components.seconds)),
                                              acquireTime: now, renewTime: now, leaseTransitions: 0))
            do {
                _ = try await client.create(.leases, namespace: config.namespace, lease)
                let created = try await client.getRaw(.leases, namespace: config.namespace, name: config.name)
                observe(created)
                return (state.withLock { $0.observedSpec?.holderIdentity }) == config.identity
            } catch {
                logFailure("cannot create the leader lease", error)
                return false
            }
        } catch {
            logFailure("cannot read the leader lease", error)
            return false
        }
        // 3. A record that changed since last seen restarts the local clock.
        let spec = Self.spec(of: current)
        let specText = current.value["spec"]?.jsonText ?? ""
        let (valid, wasOurs) = state.withLock { s -> (Bool, Bool) in
            if s.observedSpecText != specText {
                s.observedSpec = spec
                s.observedSpecText = specText
                s.observedTime = clock
            }
            s.raw = current
            let duration = Duration.seconds(Int64(spec.leaseDurationSeconds ?? 0))
            let valid = s.observedTime.map { clock < $0 + duration } ?? false
            return (valid, spec.holderIdentity == config.identity)
        }
        if let holder = spec.holderIdentity, !holder.isEmpty, valid, !wasOurs { return false }
        // 4. Take or renew it.
        let acquireTime = wasOurs ? (spec.acquireTime ?? now) : now
        let transitions = wasOurs ? (spec.leaseTransitions ?? 0) : (spec.leaseTransitions ?? 0) + 1
        guard let written = await write(current, record(acquireTime: acquireTime, transitions: transitions, now: now)) else {
            return false
        }
        observe(written)
        return true
    }

    /// PUTs `base` with the spec fields set; nil on failure (409: someone else wrote first).
    private func write(_ base: JSONObject, _ fields: [(String, JSONValue)]) async -> JSONObject? {
        var raw = base
        for (k, v) in fields { raw.set(["spec", k], to: v) }
        do {
            return try await client.updateRaw(.leases, namespace: config.namespace, raw)
        } catch let e as KubeError where e.isConflict {
            logger.debug("leader lease \(config.describe) changed meanwhile (409); reading it again")
            state.withLock { $0.raw = nil }
            return nil
        } catch {
            state.withLock { $0.raw = nil }
            logFailure("cannot update the leader lease", error)
            return nil
        }
    }

    private func observe(_ raw: JSONObject) {
        let spec = Self.spec(of: raw)
        let text = raw.value["spec"]?.jsonText ?? ""
        state.withLock {
            $0.raw = raw
            $0.observedSpec = spec
            $0.observedSpecText = text
            $0.observedTime = .now
        }
    }

    static func spec(of raw: JSONObject) -> LeaseSpec {
        guard let s = raw.value["spec"], let spec = try? JSONObject(s).decode(as: LeaseSpec.self) else { return LeaseSpec() }
        return spec
    }

    /// Logs a new leader once.
    private func reportLeader() {
        let holder: String? = state.withLock { s in
            guard let h = s.observedSpec?.holderIdentity, h != s.reportedLeader else { return nil }
            s.reportedLeader = h
            return h
        }
        guard let holder else { return }
        if holder.isEmpty {
            logger.info("leader lease \(config.describe) is free (released by its last holder)")
        } else if holder != config.identity {
            logger.info("new leader: \(holder) holds lease \(config.describe); this replica (\(config.identity)) waits")
        }
    }

    /// Failures are logged at most every 30 s (a candidate retries every retryPeriod); 403s name the permission.
    private func logFailure(_ what: String, _ error: Error) {
        let now = ContinuousClock.now
        let log = state.withLock { s -> Bool in
            if let last = s.lastErrorLog, now - last < .seconds(30) { return false }
            s.lastErrorLog = now
            return true
        }
        guard log, !(error is CancellationError), !Task.isCancelled else { return }
        if let e = error as? KubeError, e.isForbidden {
            logger.error("\(what) \(config.describe): forbidden (403): \(e.status?.message ?? e.message). The controller's account needs create, get and update on leases.coordination.k8s.io in namespace \(config.namespace): apply deploy/autonomy-controller.yaml (Role edged-autonomy-controller-leader-election), or run with --leader-elect=false when only one replica runs")
        } else {
            logger.warning("\(what) \(config.describe): \(error); retrying every \(durationText(config.retryPeriod))")
        }
    }

    /// Gives the Lease up (holderIdentity "", leaseDurationSeconds 1), when this process holds it.
    func release() async {
        let base: JSONObject? = state.withLock { s in
            guard s.observedSpec?.holderIdentity == config.identity else { return nil }
            return s.raw
        }
        var current = base
        if current == nil, state.withLock({ $0.observedSpec?.holderIdentity == config.identity }) {
            current = try? await client.getRaw(.leases, namespace: config.namespace, name: config.name)
            if let c = current, Self.spec(of: c).holderIdentity != config.identity { return }
        }
        guard let current else { return }
        let now = KubeTime.micro(.now())
        let transitions = Self.spec(of: current).leaseTransitions ?? 0
        var raw = current
        for (k, v) in [("holderIdentity", JSONValue.string("")), ("leaseDurationSeconds", .number("1")),
                       ("acquireTime", .string(now)), ("renewTime", .string(now)),
                       ("leaseTransitions", .number(String(transitions)))] {
            raw.set(["spec", k], to: v)
        }
        do {
            let written = try await client.updateRaw(.leases, namespace: config.namespace, raw)
            observe(written)
            logger.info("released leader lease \(config.describe)")
        } catch {
            logger.warning("could not release leader lease \(config.describe) (\(error)); another replica takes over after the lease duration (\(durationText(config.leaseDuration)))")
        }
    }
}
