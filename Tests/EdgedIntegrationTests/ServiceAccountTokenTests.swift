// The service-account token store of the cluster agent, below the daemon: kubelet's refresh rule (80 % of the
// lifetime, 24 h, a clock that went back, expiry), the files under <stateDir>/tokens (0600, what a restart reads
// back, a truncated or corrupt file ignored with a warning and a new token requested), and APIObjectSource using
// a kept token while the test API server is stopped.

@testable import EdgedCluster
import EdgedCore
import EdgedKube
import EdgedTestSupport
import Foundation
import Logging
import Synchronization
import Testing

/// A LogHandler that keeps every message, for tests that check what was logged.
final class CollectedLog: @unchecked Sendable {
    let lines = Mutex<[(Logger.Level, String)]>([])
    var logger: Logger {
        Logger(label: "test") { _ in
            var h = CollectingLogHandler(log: self)
            h.logLevel = .trace
            return h
        }
    }
    func contains(_ level: Logger.Level, _ text: String) -> Bool {
        lines.withLock { $0.contains { $0.0 == level && $0.1.contains(text) } }
    }
    var all: String { lines.withLock { $0.map { "\($0.0): \($0.1)" }.joined(separator: "\n") } }
}

struct CollectingLogHandler: LogHandler {
    let log: CollectedLog
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
             file: String, function: String, line: UInt) {
        log.lines.withLock { $0.append((level, message.description)) }
    }
}

/// A JWT-shaped token whose payload has `exp` (unsigned: only the store reads it).
func jwt(exp: Int64) -> String {
    let payload = Data("{\"exp\":\(exp),\"sub\":\"system:serviceaccount:default:default\"}".utf8).base64EncodedString()
        .replacingOccurrences(of: "=", with: "").replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
    return "eyJhbGciOiJIUzI1NiJ9.\(payload).c2ln"
}

@Suite struct ServiceAccountTokenTests {
    let t0 = Timestamp(nanoseconds: 1_800_000_000 * 1_000_000_000)

    func at(_ seconds: Double) -> Timestamp { t0.adding(seconds: seconds) }

    @Test func refreshAtEightyPercentOfTheLifetime() {
        // kube-admission's 3607 s: issued at t0 (expirationTimestamp - expirationSeconds).
        let t = ServiceAccountToken(answer: "a.b.c", expirationTimestamp: at(3607).rfc3339, expirationSeconds: 3607, now: at(0))
        #expect(t.issuedAt == t0 && t.expiresAt == at(3607))
        #expect(!t.needsRefresh(now: at(0), jitter: 0))
        #expect(!t.needsRefresh(now: at(3607 * 0.8 - 1), jitter: 0))
        #expect(t.needsRefresh(now: at(3607 * 0.8 + 1), jitter: 0))
        // The jitter brings the deadline forward (by up to 10 s in the daemon).
        #expect(t.needsRefresh(now: at(3607 * 0.8 - 5), jitter: 10))
        #expect(!t.isExpired(now: at(3606)))
        #expect(t.isExpired(now: at(3607)))
        // The issue time comes from the answer's expirationTimestamp, not from when it arrived.
        let late = ServiceAccountToken(answer: "a.b.c", expirationTimestamp: at(3607).rfc3339, expirationSeconds: 3607, now: at(600))
        #expect(late.issuedAt == t0)
        // No (or an unreadable) expirationTimestamp: issued now.
        let noStatus = ServiceAccountToken(answer: "a.b.c", expirationTimestamp: "soon", expirationSeconds: 600, now: at(5))
        #expect(noStatus.issuedAt == at(5) && noStatus.expiresAt == at(605))
    }

    @Test func refreshAfterTwentyFourHoursAndWhenTheClockWentBack() {
        let year: Int64 = 365 * 24 * 3600
        let t = ServiceAccountToken(answer: "a.b.c", expirationTimestamp: at(Double(year)).rfc3339, expirationSeconds: year, now: at(0))
        #expect(!t.needsRefresh(now: at(24 * 3600 - 1), jitter: 0))
        #expect(t.needsRefresh(now: at(24 * 3600 + 1), jitter: 0))
        #expect(t.needsRefresh(now: at(24 * 3600 - 5), jitter: 10))
        // A clock now before the issue time (a gateway without RTC that booted into 1970, then synced): renew.
        #expect(t.needsRefresh(now: at(-60), jitter: 0))
    }

    @Test func theJWTExpiryBoundsHowLongAKeptTokenIsUsed() {
        // --service-account-extend-token-expiration: status says 3607 s, the JWT is valid for a year.
        let year: Int64 = 365 * 24 * 3600
        let extended = ServiceAccountToken(answer: jwt(exp: t0.seconds + year), expirationTimestamp: at(3607).rfc3339,
                                           expirationSeconds: 3607, now: at(0))
        #expect(extended.validUntil == at(Double(year)))
        #expect(extended.needsRefresh(now: at(7200), jitter: 0))
        #expect(!extended.isExpired(now: at(7200)))
        #expect(extended.isExpired(now: at(Double(year))))
        // A JWT that claims less than the status never shortens it; a token that is no JWT uses the status.
        let short = ServiceAccountToken(answer: jwt(exp: t0.seconds + 60), expirationTimestamp: at(3607).rfc3339,
                                        expirationSeconds: 3607, now: at(0))
        #expect(short.validUntil == at(3607))
        #expect(ServiceAccountToken.jwtExpiry("opaque-token") == nil)
        #expect(ServiceAccountToken.jwtExpiry("a.!!!.c") == nil)
    }

    @Test func tokensAreKeptInPrivateFilesThatARestartReadsBack() throws {
        let dir = try TempDir("edged-tokens")
        defer { dir.remove() }
        let log = CollectedLog()
        let store = ServiceAccountTokens()
        store.open(dir: dir.sub("tokens"), logger: log.logger)
        let key = ServiceAccountTokens.requestKey(serviceAccount: "default", audience: nil, expirationSeconds: 3607)
        let t = ServiceAccountToken(token: "tok-1", issuedAt: at(0), expiresAt: at(3607))
        store.put(podUID: "uid-1", key: key, t)

        let file = dir.sub("tokens/uid-1/\(ServiceAccountTokens.fileName(key))")
        let attrs = try FileManager.default.attributesOfItem(atPath: file)
        #expect((attrs[.posixPermissions] as? Int) == 0o600)
        #expect((try FileManager.default.attributesOfItem(atPath: dir.sub("tokens"))[.posixPermissions] as? Int) == 0o700)
        #expect((try FileManager.default.attributesOfItem(atPath: dir.sub("tokens/uid-1"))[.posixPermissions] as? Int) == 0o700)
        let text = try String(contentsOfFile: file, encoding: .utf8)
        #expect(text.contains(at(0).rfc3339Nano) && text.contains(at(3607).rfc3339Nano), "\(text)")
        #expect(!FileManager.default.fileExists(atPath: file + ".tmp"))

        // A restart: a new store on the same dir has it.
        let again = ServiceAccountTokens()
        again.open(dir: dir.sub("tokens"), logger: log.logger)
        #expect(again.get(podUID: "uid-1", key: key) == t)
        #expect(again.get(podUID: "uid-1", key: key + "x") == nil)
        #expect(again.get(podUID: "uid-2", key: key) == nil)

        // Pods gone: deleted ones at once, the others when a pod list does not have them.
        store.put(podUID: "uid-2", key: key, t)
        store.put(podUID: "uid-3", key: key, t)
        store.forget(podUID: "uid-1")
        #expect(!FileManager.default.fileExists(atPath: dir.sub("tokens/uid-1")))
        store.put(podUID: "uid-1", key: key, t)   // a request that was in flight for the deleted pod
        #expect(!FileManager.default.fileExists(atPath: dir.sub("tokens/uid-1")))
        let restarted = ServiceAccountTokens()
        restarted.open(dir: dir.sub("tokens"), logger: log.logger)
        restarted.retain(podUIDs: ["uid-3"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.sub("tokens")) == ["uid-3"])
        #expect(restarted.get(podUID: "uid-3", key: key) == t)
    }

    @Test(arguments: ["truncated", "garbage", "other request", "empty"])
    func anUnreadableTokenFileIsIgnoredWithAWarning(_ damage: String) throws {
        let dir = try TempDir("edged-tokens-bad")
        defer { dir.remove() }
        let log = CollectedLog()
        let store = ServiceAccountTokens()
        store.open(dir: dir.sub("tokens"), logger: log.logger)
        let key = ServiceAccountTokens.requestKey(serviceAccount: "default", audience: "vault", expirationSeconds: 600)
        store.put(podUID: "uid-1", key: key, ServiceAccountToken(token: "tok-1", issuedAt: at(0), expiresAt: at(600)))
        let file = dir.sub("tokens/uid-1/\(ServiceAccountTokens.fileName(key))")
        let good = try Data(contentsOf: URL(fileURLWithPath: file))
        let bad: Data
        switch damage {
        case "truncated": bad = good.prefix(good.count / 2)
        case "garbage": bad = Data((0..<200).map { UInt8(truncatingIfNeeded: $0 &* 37) })
        case "other request": bad = Data(String(decoding: good, as: UTF8.self).replacingOccurrences(of: "vault", with: "other").utf8)
        default: bad = Data()
        }
        try bad.write(to: URL(fileURLWithPath: file))
        let restarted = ServiceAccountTokens()
        restarted.open(dir: dir.sub("tokens"), logger: log.logger)
        #expect(restarted.get(podUID: "uid-1", key: key) == nil)
        #expect(log.contains(.warning, "unreadable (truncated or corrupt)"), "\(log.all)")
        #expect(!FileManager.default.fileExists(atPath: file), "the bad file is removed")
    }

    // MARK: - APIObjectSource against the test API server

    static func pod(_ api: KubeAPIServer, _ name: String) throws -> Pod {
        let data = try api.put("/api/v1/namespaces/default/pods/\(name)", [
            "apiVersion": "v1", "kind": "Pod", "metadata": ["name": name, "namespace": "default"],
            "spec": ["containers": [["name": "main", "image": "busybox"]]],
        ])
        return try JSONDecoder().decode(Pod.self, from: data)
    }

    static func source(_ api: KubeAPIServer, tokens dir: String, log: CollectedLog) throws -> APIObjectSource {
        let client = try KubeClient(config: KubeClientConfig(
            server: api.url, caPEM: api.caPEM,
            credentials: .clientCertificate(certificatePEM: api.adminCertPEM, privateKeyPEM: api.adminKeyPEM),
            userAgent: "edged/test", requestTimeout: .seconds(5)))
        let source = APIObjectSource(client: client, logger: log.logger)
        source.tokens.open(dir: dir, logger: log.logger)
        return source
    }

    @Test func aKeptTokenIsUsedWhileTheAPIServerIsAwayAndABadOneIsReplaced() async throws {
        let api = try await KubeAPIServer.start()
        let dir = try TempDir("edged-tokens-api")
        defer { dir.remove() }
        do {
            let log = CollectedLog()
            let pod = try Self.pod(api, "tok")
            let uid = try #require(pod.metadata.uid)
            let first = try Self.source(api, tokens: dir.sub("tokens"), log: log)
            let token = try await first.serviceAccountToken(pod: pod, audience: nil, expirationSeconds: 3607)
            #expect(try await first.serviceAccountToken(pod: pod, audience: nil, expirationSeconds: 3607) == token)
            let key = ServiceAccountTokens.requestKey(serviceAccount: "default", audience: nil, expirationSeconds: 3607)
            let file = dir.sub("tokens/\(uid)/\(ServiceAccountTokens.fileName(key))")
            #expect(FileManager.default.fileExists(atPath: file))

            // Restarted with the API server away: the kept token, no request needed.
            try await api.stop()
            let offline = try Self.source(api, tokens: dir.sub("tokens"), log: log)
            #expect(try await offline.serviceAccountToken(pod: pod, audience: nil, expirationSeconds: 3607) == token)

            // Due for renewal (issued 50 min ago), the API server away: still the kept token, logged at debug only.
            let kept = try #require(offline.tokens.get(podUID: uid, key: key))
            let old = ServiceAccountToken(token: kept.token, issuedAt: Timestamp.now().adding(seconds: -3000),
                                          expiresAt: Timestamp.now().adding(seconds: 607))
            let due = ServiceAccountTokens()
            due.open(dir: dir.sub("tokens"), logger: log.logger)
            due.put(podUID: uid, key: key, old)
            let renewing = try Self.source(api, tokens: dir.sub("tokens"), log: log)
            #expect(try await renewing.serviceAccountToken(pod: pod, audience: nil, expirationSeconds: 3607) == token)
            #expect(log.contains(.debug, "failed"), "\(log.all)")
            #expect(!log.contains(.warning, "token") && !log.contains(.error, "token"), "\(log.all)")

            // Expired and the API server away: the error names the service account and the expiry.
            let expired = ServiceAccountToken(token: kept.token, issuedAt: Timestamp.now().adding(seconds: -4000),
                                              expiresAt: Timestamp.now().adding(seconds: -393))
            due.put(podUID: uid, key: key, expired)
            let late = try Self.source(api, tokens: dir.sub("tokens"), log: log)
            do {
                _ = try await late.serviceAccountToken(pod: pod, audience: nil, expirationSeconds: 3607)
                Issue.record("an expired token must not be used")
            } catch {
                #expect(error.message.contains("cannot get a token for service account default/default (the kept token expired at"), "\(error.message)")
            }

            // A truncated file with the API server away: ignored with a warning, and today's error.
            let good = try Data(contentsOf: URL(fileURLWithPath: file))
            try good.prefix(20).write(to: URL(fileURLWithPath: file))
            let broken = try Self.source(api, tokens: dir.sub("tokens"), log: log)
            await #expect(throws: EdgedError.self) {
                _ = try await broken.serviceAccountToken(pod: pod, audience: nil, expirationSeconds: 3607)
            }
            #expect(log.contains(.warning, "unreadable (truncated or corrupt)"), "\(log.all)")

            // The API server back: a new token is requested, kept and written.
            try await api.resume()
            try good.prefix(20).write(to: URL(fileURLWithPath: file))
            let fresh = try Self.source(api, tokens: dir.sub("tokens"), log: log)
            let renewed = try await fresh.serviceAccountToken(pod: pod, audience: nil, expirationSeconds: 3607)
            #expect(!renewed.isEmpty)
            let stored = ServiceAccountTokens()
            stored.open(dir: dir.sub("tokens"), logger: log.logger)
            #expect(stored.get(podUID: uid, key: key)?.token == renewed)
            #expect(stored.get(podUID: uid, key: key)?.expiresAt ?? Timestamp(nanoseconds: 0) > Timestamp.now().adding(seconds: 3500))
            // A pod-bound 3607 s request is extended (--service-account-extend-token-expiration): the status says
            // 3607 s, the JWT a year; the kept token counts as valid for the year, renewed after 80 % of 3607 s.
            let extended = try #require(stored.get(podUID: uid, key: key))
            #expect(extended.validUntil > Timestamp.now().adding(seconds: 300 * 24 * 3600), "\(extended)")
            #expect(extended.needsRefresh(now: Timestamp.now().adding(seconds: 3000), jitter: 0))
        } catch {
            try? await api.shutdown()
            throw error
        }
        try await api.shutdown()
    }
}
