// Who can reach the hub and what it gives away: its default listeners bind loopback (HTTPS only on the link-local
// pod address), its store is private to root, a caller without credentials on the HTTPS listener (a pod) should not
// borrow the node's identity (online or, through the store, offline), and secrets and callers' tokens never reach
// the log, online or offline.

import EdgedCore
@testable import EdgedHub
import EdgedKube
import EdgedTestSupport
import Foundation
import Testing

/// curl on a thread of its own, so the hub's tasks keep the cooperative pool while it waits.
private func curl(_ args: [String]) async throws -> CommandResult {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try runCommand(["curl", "-sS", "--max-time", "10"] + args, check: false) }) }.start()
    }
}

/// The local addresses (hex "0100007F:2815" → "127.0.0.1") of the TCP sockets listening on `port`.
private func listeningAddresses(port: Int) throws -> [String] {
    let text = (procText("/proc/net/tcp") ?? "") + ((procText("/proc/net/tcp6") ?? ""))
    return text.split(separator: "\n").dropFirst().compactMap { line in
        let cols = line.split(separator: " ")
        guard cols.count > 3, cols[3] == "0A" else { return nil }  // 0A: LISTEN
        let local = cols[1].split(separator: ":")
        guard local.count == 2, Int(local[1], radix: 16) == port else { return nil }
        guard local[0].count == 8, let raw = UInt32(local[0], radix: 16) else { return String(local[0]) }
        return "\(raw & 0xff).\(raw >> 8 & 0xff).\(raw >> 16 & 0xff).\(raw >> 24)"
    }
}

extension HubFixture {
    /// Secret default/db with a random password, and a bearer token of a user that may read it.
    func secretAndReader() throws -> (value: String, encoded: String, token: String) {
        let value = "s3cret-\(UInt64.random(in: 0...UInt64.max))", token = "tok-\(UInt64.random(in: 0...UInt64.max))"
        let encoded = Data(value.utf8).base64EncodedString()
        try api.put("/api/v1/namespaces/default/secrets/db", Data(#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"db","namespace":"default"},"data":{"password":"\#(encoded)"}}"#.utf8))
        api.addToken(token, user: "reader", groups: ["system:masters"])
        return (value, encoded, token)
    }

    /// A second EdgeHub on this fixture's API server with real listeners; stopped when `body` returns.
    func withListeningHub(_ listeners: HubListeners, tls: HubServerTLS? = nil,
                          _ body: (EdgeHub) async throws -> Void) async throws {
        let hub = try EdgeHub(config: HubConfig(nodeName: "edge-1"), clientConfig: clientConfig,
                              storePath: dir.sub("exposed/cache.db"), maxStoreBytes: 64 << 20, health: Self.fastHealth,
                              listeners: listeners, servingTLS: { tls }, logger: logs.logger)
        let task = Task { await hub.run() }
        do {
            try await body(hub)
        } catch {
            task.cancel()
            await task.value
            throw error
        }
        task.cancel()
        await task.value
    }
}

@Suite(.serialized, .enabled(if: findExecutable("curl") != nil, "needs curl"))
struct HubExposureTests {
    /// The defaults: HTTP (no credentials needed) and health on 127.0.0.1, HTTPS on the link-local 169.254.2.1 that
    /// edged puts on a dummy interface for pods. Bound with those hosts, the sockets listen on loopback only; the
    /// store is 0600 and root's.
    @Test func defaultListenersBindLoopbackAndTheStoreIsPrivate() async throws {
        let defaults = HubListeners()
        #expect(defaults.http?.host == "127.0.0.1" && defaults.health?.host == "127.0.0.1")
        #expect(defaults.https?.host == "169.254.2.1")
        try await HubFixture.run { f in
            var listeners = defaults
            let (http, health) = (try freeTCPPort(), try freeTCPPort())
            listeners.http?.port = http
            listeners.health?.port = health
            listeners.https = nil
            try await f.withListeningHub(listeners) { _ in
                try await eventually("the listeners are bound", timeout: .seconds(10)) {
                    (try? listeningAddresses(port: http).isEmpty == false) == true
                        && (try? listeningAddresses(port: health).isEmpty == false) == true
                }
                #expect(try listeningAddresses(port: http) == ["127.0.0.1"])
                #expect(try listeningAddresses(port: health) == ["127.0.0.1"])
                var st = stat()
                #expect(stat(f.dir.sub("exposed/cache.db"), &st) == 0)
                #expect(st.st_mode & 0o777 == 0o600 && st.st_uid == getuid())
            }
        }
    }
}

extension HubExposureTests {
    /// The HTTPS listener is for pods. A caller's own token goes upstream as its own (a bad one is the API server's
    /// 401); a caller with no token is anonymous upstream, as it would be talking to kube-apiserver directly, so a pod
    /// that reaches 169.254.2.1:10268 never acts as the node. (On the loopback HTTP listener node-local clients without
    /// a token do get the node's identity: that is the design, YurtHub's.)
    @Test func aCallerWithoutATokenOnTheHTTPSListenerDoesNotBorrowTheNodesIdentity() async throws {
        try await HubFixture.run { f in
            let port = try freeTCPPort()
            var listeners = HubListeners()
            listeners.http = nil
            listeners.health = nil
            listeners.https = HubAddress(host: "127.0.0.1", port: port)
            let serving = try f.api.pki.issue(serverFor: "edge-hub", ips: ["127.0.0.1"])
            try f.api.caPEM.write(toFile: f.dir.sub("ca.pem"), atomically: true, encoding: .utf8)
            let tls = HubServerTLS(certificateChainPEM: serving.certPEM, privateKeyPEM: serving.keyPEM)
            try await f.withListeningHub(listeners, tls: tls) { _ in
                let url = "https://127.0.0.1:\(port)/api/v1/namespaces/kube-system/secrets"
                func code(_ extra: [String]) async throws -> String {
                    try await curl(["--cacert", f.dir.sub("ca.pem"), "-o", "/dev/null", "-w", "%{http_code}"] + extra + [url]).stdout
                }
                try await eventually("the HTTPS listener answers", timeout: .seconds(10)) { (try? await code([])) != "000" }
                #expect(try await code(["-H", "Authorization: Bearer not-a-token"]) == "401")
                let anonymous = try await code([])
                #expect(anonymous == "401" || anonymous == "403", "a caller without a token listed kube-system's secrets with the hub's credentials (admin here, the node's in edged): \(anonymous)")
            }
        }
    }
}

extension HubExposureTests {
    /// Offline nothing can check a caller, so the store must not answer (or queue writes for) one that would be
    /// system:anonymous upstream: a pod without a token on the HTTPS listener gets 401, even when it names a
    /// component whose cache holds secrets; with a token it is served, and node-local callers on the HTTP listener
    /// are served as before.
    @Test func offlineTheStoreServesNoTokenlessCallerOnTheHTTPSListener() async throws {
        try await HubFixture.run { f in
            let (_, encoded, token) = try f.secretAndReader()
            let httpPort = try freeTCPPort(), httpsPort = try freeTCPPort()
            var listeners = HubListeners()
            listeners.http = HubAddress(host: "127.0.0.1", port: httpPort)
            listeners.https = HubAddress(host: "127.0.0.1", port: httpsPort)
            listeners.health = nil
            let serving = try f.api.pki.issue(serverFor: "edge-hub", ips: ["127.0.0.1"])
            try f.api.caPEM.write(toFile: f.dir.sub("ca.pem"), atomically: true, encoding: .utf8)
            let tls = HubServerTLS(certificateChainPEM: serving.certPEM, privateKeyPEM: serving.keyPEM)
            try await f.withListeningHub(listeners, tls: tls) { hub in
                let secret = "/api/v1/namespaces/default/secrets/db"
                func https(_ extra: [String], _ path: String = secret) async throws -> (code: String, body: String) {
                    let out = try await curl(["--cacert", f.dir.sub("ca.pem"), "-A", "kube-proxy/v1.31.0", "-w", "\n%{http_code}"]
                                             + extra + ["https://127.0.0.1:\(httpsPort)\(path)"]).stdout
                    let lines = out.split(separator: "\n", omittingEmptySubsequences: false)
                    return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n"))
                }
                let bearer = ["-H", "Authorization: Bearer \(token)"]
                try await eventually("the HTTPS listener caches the secret for kube-proxy", timeout: .seconds(10)) {
                    (try? await https(bearer))?.body.contains(encoded) == true
                }
                try await f.api.stop()
                try await eventually("the hub sees the cloud offline") { hub.health.current == .offline }

                let anonymous = try await https([])
                #expect(anonymous.code == "401", "a token-less pod read the store offline: \(anonymous)")
                #expect(!anonymous.body.contains(encoded))
                #expect(anonymous.body.contains("without a token"), "\(anonymous.body)")
                let event = #"{"apiVersion":"v1","kind":"Event","metadata":{"name":"e1","namespace":"default"},"involvedObject":{"kind":"Pod","name":"p","namespace":"default"},"reason":"R","message":"m"}"#
                let queued = try await https(["-X", "POST", "-H", "Content-Type: application/json", "-d", event], "/api/v1/namespaces/default/events")
                #expect(queued.code == "401", "a token-less pod queued a write for the node to replay: \(queued)")
                #expect((try await https(bearer)).body.contains(encoded), "a caller with a token is served from the store")
                let local = try await curl(["-A", "kube-proxy/v1.31.0", "http://127.0.0.1:\(httpPort)\(secret)"]).stdout
                #expect(local.contains(encoded), "node-local callers on the HTTP listener are served offline: \(local)")
            }
        }
    }

    /// A secret read through the hub (in-process as edged, and over HTTP with a caller's bearer token), cached, then
    /// read again from the store while the cloud is away: its value (plain or base64) and the caller's token appear
    /// nowhere in the hub's log, captured at trace level.
    @Test func secretsAndTokensNeverReachTheLog() async throws {
        try await HubFixture.run { f in
            let (value, encoded, token) = try f.secretAndReader()
            let port = try freeTCPPort()
            var listeners = HubListeners()
            listeners.http = HubAddress(host: "127.0.0.1", port: port)
            listeners.https = nil
            listeners.health = nil
            try await f.withListeningHub(listeners) { hub in
                let url = "http://127.0.0.1:\(port)/api/v1/namespaces/default/secrets/db"
                func read() async throws -> String {
                    try await curl(["-H", "Authorization: Bearer \(token)", "-A", "kube-proxy/v1.31.0", url]).stdout
                }
                try await eventually("the HTTP listener answers", timeout: .seconds(10)) { (try? await read())?.contains(encoded) == true }
                #expect(String(decoding: try await f.call(edgedUA, "GET", "/api/v1/namespaces/default/secrets/db").body, as: UTF8.self).contains(encoded))
                #expect(try await curl(["-H", "Authorization: Bearer \(token)x", url]).stdout.contains("Unauthorized"))
                try await f.api.stop()
                try await eventually("the hub sees the cloud offline") { hub.health.current == .offline }
                #expect(try await read().contains(encoded), "served from the store while offline")
            }
            let log = f.logs.all
            #expect(!log.isEmpty)
            for (what, needle) in [("the secret", value), ("the secret in base64", encoded), ("the caller's token", token)] {
                #expect(!log.contains { $0.contains(needle) }, "\(what) is in the log: \(log.filter { $0.contains(needle) })")
            }
        }
    }
}
