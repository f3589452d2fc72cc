// Creating a CertificateSigningRequest and waiting for its certificate (join, client rotation, the serving
// certificate), the way kubelet's certificate manager waits:
//
// - k8s.io/client-go/util/certificate/csr/csr.go WaitForCertificate: a list and then a watch of that one CSR
//   (fieldSelector metadata.name=NAME, watchtools.UntilWithSync); ADDED/MODIFIED events are checked, DELETED is an
//   error, a different UID is an error, a Denied or Failed condition is an error, Approved plus a certificate is
//   the answer; the context's timeout ends the wait.
// - certificate_manager.go: certificateWaitTimeout = 15 min per CSR; after a failed try a new key and a new CSR,
//   after a back-off (2 s doubling, 10 % jitter, then every 32 s).
// - client-go's reflector re-watches from the last resourceVersion when a watch ends (its timeoutSeconds is
//   5-10 min at random), lists again after 410 Gone, and backs off after connection errors.
// Not from kubelet: where the API server (or a proxy in front of it) refuses the list or watch (400, 403, 404, 405,
// 501), edged polls the CSR with GET instead, 1 s doubling to 64 s with jitter, never faster. Before this, edged
// polled with a GET every 500 ms for as long as the CSR waited (119 requests per node per minute).

import EdgedCore
import EdgedCredentials
import EdgedKube
import Logging
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// How long and how to wait for a CSR's certificate.
public struct CSRWaitOptions: Sendable {
    /// Give up after this long (kubelet: 15 min for a rotation or a serving certificate).
    public var timeout: Duration
    /// Polling (only where the list or watch is refused): the first pause, doubled after each GET up to `pollMax`.
    public var pollInitial: Duration
    public var pollMax: Duration
    /// After a connection error, the watch is tried again after this pause, doubled up to `pollMax`.
    public var retryInitial: Duration
    /// timeoutSeconds of each watch, drawn at random (client-go's reflector: 5-10 min).
    public var watchSeconds: ClosedRange<Int>

    public init(timeout: Duration, pollInitial: Duration = .seconds(1), pollMax: Duration = .seconds(64),
                retryInitial: Duration = .seconds(1), watchSeconds: ClosedRange<Int> = 300...600) {
        self.timeout = timeout
        self.pollInitial = pollInitial
        self.pollMax = pollMax
        self.retryInitial = retryInitial
        self.watchSeconds = watchSeconds
    }
}

/// What became of a CSR that produced no certificate: it is worth a new CSR later (timeout, denial...), or not.
public struct CSRWaitFailure: Error, Sendable, CustomStringConvertible {
    public enum Reason: Sendable, Equatable {
        case timedOut, denied, failed, deleted, replaced, cancelled
    }
    public let reason: Reason
    public let csrName: String
    public let message: String
    public var description: String { message }
}

/// "1.5 s", "64 s".
private func seconds(_ d: Duration) -> String {
    let ms = d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
    return ms % 1000 == 0 ? "\(ms / 1000) s" : "\(Double(ms) / 1000) s"
}

/// Thrown by the watch callback to end the stream once the answer is there.
private struct WatchDone: Error {}

/// Doubling pauses with ±10 % jitter (wait.Backoff with Factor 2, Jitter 0.1), capped.
struct CSRBackoff {
    let initial: Duration
    let max: Duration
    private var next: Duration

    init(initial: Duration, max: Duration) {
        self.initial = initial
        self.max = max
        next = initial
    }

    mutating func pause() -> Duration {
        let base = next
        next = min(next * 2, max)
        return base * Double.random(in: 0.9...1.1)
    }

    mutating func reset() { next = initial }
}

public enum CSRFlow {
    /// Creates the CSR. Returns its name and UID.
    public static func create(_ client: KubeClient, csr: NodeCSR, what: String, logger: Logger) async throws(EdgedError)
        -> (name: String, uid: String?)
    {
        var meta = ObjectMeta()
        meta.generateName = "node-csr-"
        let object = CertificateSigningRequest(metadata: meta, spec: .init(request: Data(csr.pem.utf8), signerName: csr.signerName, usages: csr.usages))
        let created: CertificateSigningRequest
        do {
            created = try await client.create(.certificateSigningRequests, object)
        } catch {
            if let e = error as? KubeError, e.isUnauthorized {
                throw EdgedError(.invalidConfig, "the API server rejected the credentials: a bootstrap token that is wrong or expired (create one with `kubeadm token create`)")
            }
            if let e = error as? KubeError, e.isForbidden {
                throw EdgedError(.invalidConfig, "not allowed to create certificate signing requests (\(e.message)): is the token a bootstrap token of group system:bootstrappers?")
            }
            throw EdgedError(.io, "creating the CSR for the \(what): \(error)")
        }
        let name = created.metadata.name ?? ""
        logger.info("created CSR \(name) for the \(what), waiting for approval")
        return (name, created.metadata.uid)
    }

    /// Creates a CSR and waits up to `timeoutSeconds` for its certificate (join and client rotation). Returns
    /// (CSR name, certificate PEM). Errors say what to do; `nextStep` ends the message of a denial or a timeout.
    public static func request(_ client: KubeClient, csr: NodeCSR, timeoutSeconds: Int, what: String,
                        nextStep: String = "then run join again", logger: Logger) async throws(EdgedError) -> (String, String) {
        let (name, uid) = try await create(client, csr: csr, what: what, logger: logger)
        do {
            let pem = try await waitForCertificate(client, name: name, uid: uid, options: CSRWaitOptions(timeout: .seconds(timeoutSeconds)),
                                                   what: what, nextStep: nextStep, logger: logger)
            return (name, pem)
        } catch {
            switch error.reason {
            case .timedOut, .cancelled: throw EdgedError(.io, error.message)
            default: throw EdgedError(.invalidConfig, error.message)
            }
        }
    }

    /// Gets the node's kubelet serving certificate (signer kubernetes.io/kubelet-serving) into `store`, as kubelet's
    /// certificate manager does with serverTLSBootstrap: a new key and CSR per try, each waited for
    /// `options.timeout` (15 min), and a new try after a pause of `retryInitial` doubling to `retryMax` (2 s to
    /// 32 s, kubelet's back-off) when one fails (timed out, denied, failed, deleted, not created). Returns once the
    /// certificate is stored (at once when there is one) or when cancelled. `pending` gets the CSR that waits for
    /// approval (nil when none does), `failed` each try's error.
    public static func obtainServingCertificate(
        _ client: KubeClient, store: CredentialStore, nodeName: String, ipAddresses: [String],
        options: CSRWaitOptions = CSRWaitOptions(timeout: .seconds(900)),
        retryInitial: Duration = .seconds(2), retryMax: Duration = .seconds(32), logger: Logger,
        pending: @Sendable (String?) async -> Void, failed: @Sendable (any Error) async -> Void
    ) async {
        var backoff = CSRBackoff(initial: retryInitial, max: retryMax)
        let what = "serving certificate"
        while !Task.isCancelled {
            if (try? store.loadPair(.serving)) != nil { return }
            do {
                let key = NodeKey.generate()
                let csr = try NodeCSR.serving(nodeName: nodeName, key: key, dnsNames: [nodeName], ipAddresses: ipAddresses)
                let (name, uid) = try await create(client, csr: csr, what: what, logger: logger)
                await pending(name)
                let pem: String
                do {
                    pem = try await waitForCertificate(
                        client, name: name, uid: uid, options: options, what: what,
                        nextStep: "edged then asks again with a new CSR (until then the kubelet API serves a self-signed certificate)",
                        logger: logger)
                } catch {
                    await pending(nil)
                    throw error
                }
                await pending(nil)
                _ = try store.save(.serving, certificatePEM: pem, key: key)
                logger.notice("stored the kubelet serving certificate issued for CSR \(name)")
                return
            } catch {
                if Task.isCancelled { return }
                await failed(error)
            }
            try? await Task.sleep(for: backoff.pause())
        }
    }

    /// Waits for the certificate of CSR `name` (UID `uid`): list + watch of that one object, polling only where they
    /// are refused. Returns the certificate PEM once the CSR is approved and issued.
    public static func waitForCertificate(_ client: KubeClient, name: String, uid: String?, options: CSRWaitOptions,
                                          what: String, nextStep: String, logger: Logger) async throws(CSRWaitFailure) -> String {
        let clock = ContinuousClock()
        let deadline = clock.now + options.timeout
        let selector = FieldSelector.name(name)
        var retry = CSRBackoff(initial: options.retryInitial, max: options.pollMax)
        var poll = CSRBackoff(initial: options.pollInitial, max: options.pollMax)
        var polling = false
        var resourceVersion: String?
        var warned = false
        var expiredInARow = 0   // 410s one after the other: a server that keeps expiring fresh versions is not hammered

        func fail(_ reason: CSRWaitFailure.Reason, _ message: String) -> CSRWaitFailure {
            CSRWaitFailure(reason: reason, csrName: name, message: message)
        }
        let timedOut = fail(.timedOut, "CSR \(name) for the \(what) was not approved within \(options.timeout.components.seconds) s: approve it with `kubectl certificate approve \(name)` (or enable auto-approval of node CSRs), \(nextStep)")
        let deleted = fail(.deleted, "CSR \(name) for the \(what) was deleted before it was approved; \(nextStep)")
        /// The certificate when `csr` is issued, nil while it waits; throws for a denied, failed or replaced CSR.
        func verdict(_ csr: CertificateSigningRequest) throws(CSRWaitFailure) -> String? {
            if let uid, let other = csr.metadata.uid, other != uid {
                throw fail(.replaced, "CSR \(name) for the \(what) was replaced by another object of the same name (uid \(other), not \(uid)); \(nextStep)")
            }
            if csr.hasCondition("Denied") {
                let why = csr.status?.conditions?.first { $0.type == "Denied" }
                throw fail(.denied, "CSR \(name) for the \(what) was denied\(why?.message.map { ": \($0)" } ?? ""): ask the cluster admin, \(nextStep)")
            }
            if csr.hasCondition("Failed") {
                let why = csr.status?.conditions?.first { $0.type == "Failed" }
                throw fail(.failed, "CSR \(name) for the \(what) failed: \(why?.message ?? "no message") (the signer refused it); \(nextStep)")
            }
            guard csr.hasCondition("Approved"), let cert = csr.status?.certificate, !cert.isEmpty else { return nil }
            return String(decoding: cert, as: UTF8.self)
        }
        func pause(_ d: Duration) async {
            let left = deadline - clock.now
            try? await Task.sleep(for: min(d, max(left, .zero)))
        }

        while true {
            if Task.isCancelled { throw fail(.cancelled, "stopped waiting for CSR \(name) for the \(what) (edged is stopping)") }
            let left = deadline - clock.now
            if left <= .zero { throw timedOut }
            if polling {
                do {
                    if let pem = try verdict(try await client.get(.certificateSigningRequests, name: name)) { return pem }
                } catch let e as CSRWaitFailure {
                    throw e
                } catch {
                    if let e = error as? KubeError, e.isNotFound { throw deleted }
                    if !Task.isCancelled { logger.warning("reading CSR \(name): \(error)") }
                }
                await pause(poll.pause())
                continue
            }
            var stop: String? = nil
            var failed: CSRWaitFailure? = nil
            var expired = false
            var events = 0
            let watchStarted = clock.now
            do {
                if resourceVersion == nil {
                    let list = try await client.list(.certificateSigningRequests, options: ListOptions(fieldSelector: selector))
                    guard let current = list.items.first(where: { $0.metadata.name == name }) else { throw deleted }
                    if let pem = try verdict(current) { return pem }
                    resourceVersion = list.metadata.resourceVersion
                }
                let leftSeconds = Int((left + .milliseconds(999)).components.seconds)
                let watchSeconds = max(1, min(Int.random(in: options.watchSeconds), leftSeconds))
                let watch = WatchOptions(resourceVersion: resourceVersion, fieldSelector: selector, allowWatchBookmarks: true,
                                         timeoutSeconds: watchSeconds)
                try await client.watch(.certificateSigningRequests, options: watch) { (event: WatchEvent<CertificateSigningRequest>) in
                    events += 1
                    switch event {
                    case .added(let csr), .modified(let csr):
                        guard csr.metadata.name == name else { return }
                        if let rv = csr.metadata.resourceVersion { resourceVersion = rv }
                        do {
                            if let pem = try verdict(csr) {
                                stop = pem
                                throw WatchDone()   // ends the stream; `stop` has the answer
                            }
                        } catch let e as CSRWaitFailure {
                            failed = e
                            throw e
                        }
                    case .deleted(let csr):
                        if csr.metadata.name == name {
                            failed = deleted
                            throw deleted
                        }
                    case .bookmark(let rv):
                        resourceVersion = rv
                    case .error(let status):
                        // 410 Expired: the version is too old to resume from; list again.
                        if status.code == 410 {
                            resourceVersion = nil
                            expired = true
                            return
                        }
                        throw KubeError(kind: .api, statusCode: status.code, reason: status.reason, status: status,
                                        message: "watch of CSR \(name): \(status.message ?? "error event")")
                    }
                }
                // The server ended the watch (its timeoutSeconds): watch again from where it was. After a 410, list
                // again (at once the first time).
                if expired {
                    expiredInARow += 1
                    if expiredInARow > 1 { await pause(retry.pause()) }
                } else if events == 0 && clock.now - watchStarted < .seconds(1) {
                    // Ended at once without an event (client-go's "very short watch"): something in between closes
                    // streams; back off as after an error.
                    let wait = retry.pause()
                    if !warned || wait >= options.pollMax {
                        logger.warning("the watch of CSR \(name) ended at once without an event (a proxy that closes streams?); trying again in \(seconds(wait))")
                    }
                    warned = true
                    await pause(wait)
                } else {
                    expiredInARow = 0
                    retry.reset()
                }
            } catch let e as CSRWaitFailure {
                throw e
            } catch {
                if let pem = stop { return pem }
                if let failed { throw failed }
                if Task.isCancelled { continue }
                if let e = error as? KubeError, e.isGone {
                    resourceVersion = nil   // 410 at the watch's start: too old to resume from; list again
                    expiredInARow += 1
                    if expiredInARow > 1 { await pause(retry.pause()) }
                    continue
                }
                if let e = error as? KubeError, e.kind == .api, let code = e.statusCode, [400, 403, 404, 405, 406, 415, 501].contains(code) {
                    polling = true
                    logger.notice("the API server refuses to list or watch CSR \(name) (\(code): \(e.message)); polling it instead, every \(seconds(options.pollInitial)) doubling to \(seconds(options.pollMax))")
                    continue
                }
                let wait = retry.pause()
                if !warned || wait >= options.pollMax {
                    logger.warning("watching CSR \(name) for the \(what): \(error); trying again in \(seconds(wait))")
                }
                warned = true
                await pause(wait)
            }
        }
    }
}
