// Service-account tokens of pods' projected volumes (TokenRequest answers), kept in memory and on disk under
// <stateDir>/tokens/<pod uid>/, so that a pod restarted while the API server is unreachable (a reboot with the
// uplink down) still mounts the token it had. The refresh rule is kubelet's token manager's: a token is renewed
// once it is older than 80 % of its lifetime or than 24 h (minus a few seconds of jitter), or when the clock says
// it was issued in the future; while renewing fails, the last token is used as long as it is still valid.
//
// The files hold bearer tokens: the directories are 0700, the files 0600, written with Files.writeAtomically
// (temp file, fsync, rename, fsync of the directory).

import EdgedCore
import Glibc
import Logging
import Synchronization
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One token as the API server issued it.
struct ServiceAccountToken: Equatable, Sendable {
    var token: String
    /// Derived as kubelet does: status.expirationTimestamp minus spec.expirationSeconds.
    var issuedAt: Timestamp
    /// status.expirationTimestamp: what the refresh schedule counts from.
    var expiresAt: Timestamp
    /// Until when the API server accepts the token: its JWT `exp` claim when it is later than expiresAt (kube-apiserver
    /// with --service-account-extend-token-expiration answers 3607 s in the status but signs a token valid for a
    /// year), else expiresAt.
    var validUntil: Timestamp

    /// kubelet's maxTTL: a token older than this is renewed whatever its lifetime.
    static let maxAge: Double = 24 * 3600
    /// kubelet's maxJitter, taken off both refresh deadlines so that pods started together do not renew together.
    static let maxJitter: Double = 10

    init(token: String, issuedAt: Timestamp, expiresAt: Timestamp, validUntil: Timestamp? = nil) {
        self.token = token
        self.issuedAt = issuedAt
        self.expiresAt = expiresAt
        self.validUntil = max(validUntil ?? expiresAt, expiresAt)
    }

    /// From a TokenRequest answer. Without a readable expirationTimestamp the token counts as issued `now`.
    init(answer token: String, expirationTimestamp: String?, expirationSeconds: Int64, now: Timestamp) {
        let lifetime = Double(expirationSeconds)
        let exp = expirationTimestamp.flatMap(Self.timestamp) ?? now.adding(seconds: lifetime)
        self.init(token: token, issuedAt: exp.adding(seconds: -lifetime), expiresAt: exp,
                  validUntil: Self.jwtExpiry(token))
    }

    /// An RFC 3339 time as a Timestamp; nil when it is not one.
    static func timestamp(_ rfc3339: String) -> Timestamp? {
        CRITimestamp(rfc3339: rfc3339).map { Timestamp(nanoseconds: $0.seconds * 1_000_000_000 + Int64($0.nanoseconds)) }
    }

    /// Whether the API server no longer accepts it.
    func isExpired(now: Timestamp) -> Bool { now >= validUntil }

    /// kubelet's requiresRefresh: older than 24 h, within the last 20 % of its lifetime (both less `jitter`
    /// seconds), or issued after `now` (the clock went back).
    func needsRefresh(now: Timestamp, jitter: Double) -> Bool {
        if now < issuedAt { return true }
        if now > issuedAt.adding(seconds: Self.maxAge - jitter) { return true }
        let lifetime = issuedAt.seconds(until: expiresAt)
        return now > expiresAt.adding(seconds: -lifetime * 0.2 - jitter)
    }

    /// The `exp` claim of a JWT, unverified (the token came from the API server over TLS); nil when it is not one.
    static func jwtExpiry(_ token: String) -> Timestamp? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return nil }
        var text = String(parts[1]).replacing("-", with: "+").replacing("_", with: "/")
        while text.count % 4 != 0 { text += "=" }
        struct Claims: Decodable { var exp: Double? }
        guard let payload = Data(base64Encoded: text), let exp = (try? JSONDecoder().decode(Claims.self, from: payload))?.exp,
              exp.isFinite, exp > 0, exp < 1e11 else { return nil }
        return Timestamp(nanoseconds: Int64(exp) * 1_000_000_000)
    }
}

/// The tokens of every pod, by pod UID and request (service account, audience, expirationSeconds).
final class ServiceAccountTokens: Sendable {
    private struct State {
        var dir: String?
        var logger = Logger(label: "edged.tokens")
        var memory: [String: [String: ServiceAccountToken]] = [:]   // pod UID → request key → token
        /// Pods forgotten for good: a request still in flight for one must not write its token back.
        var gone: Set<String> = []
    }

    /// What a token file holds (JSON; times in RFC 3339).
    private struct FileContent: Codable {
        var request: String
        var token: String
        var issuedAt: String
        var expirationTimestamp: String
        var validUntil: String
    }

    private let state = Mutex(State())

    /// Keeps tokens under `dir` from now on (and reads those a previous run kept there).
    func open(dir: String, logger: Logger) {
        state.withLock {
            $0.dir = dir
            $0.logger = logger
        }
    }

    private var context: (dir: String?, logger: Logger) { state.withLock { ($0.dir, $0.logger) } }

    static func requestKey(serviceAccount: String, audience: String?, expirationSeconds: Int64) -> String {
        "\(serviceAccount)/\(audience ?? "")/\(expirationSeconds)"
    }

    /// The file of one request: FNV-1a of the key (an audience may hold any character), the key itself inside.
    static func fileName(_ key: String) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key.utf8 {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        let hex = String(h, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex + ".json"
    }

    /// The token kept for this pod and request: from memory, else from disk. A file that cannot be read as a token
    /// (truncated, corrupt, another request's) is removed with a warning and counts as none.
    func get(podUID: String, key: String) -> ServiceAccountToken? {
        if let t = state.withLock({ $0.memory[podUID]?[key] }) { return t }
        let (dir, logger) = context
        guard let dir, !podUID.isEmpty else { return nil }
        let path = "\(dir)/\(podUID)/\(Self.fileName(key))"
        guard let bytes = Files.read(path, limit: 1 << 20) else { return nil }
        guard let t = Self.decode(bytes, key: key) else {
            logger.warning("the stored service account token \(path) is unreadable (truncated or corrupt); removed it, a new token will be requested")
            unlink(path)
            return nil
        }
        state.withLock { s in
            if !s.gone.contains(podUID) { s.memory[podUID, default: [:]][key] = t }
        }
        return t
    }

    static func decode(_ bytes: [UInt8], key: String) -> ServiceAccountToken? {
        guard let c = try? JSONDecoder().decode(FileContent.self, from: Data(bytes)), c.request == key,
              !c.token.isEmpty, c.token.utf8.allSatisfy({ $0 > 32 && $0 < 127 }),
              let iat = ServiceAccountToken.timestamp(c.issuedAt), let exp = ServiceAccountToken.timestamp(c.expirationTimestamp),
              let valid = ServiceAccountToken.timestamp(c.validUntil), iat < exp else { return nil }
        return ServiceAccountToken(token: c.token, issuedAt: iat, expiresAt: exp, validUntil: valid)
    }

    static func encode(_ t: ServiceAccountToken, key: String) -> [UInt8] {
        let c = FileContent(request: key, token: t.token, issuedAt: t.issuedAt.rfc3339Nano,
                            expirationTimestamp: t.expiresAt.rfc3339Nano, validUntil: t.validUntil.rfc3339Nano)
        return Array((try? JSONEncoder().encode(c)) ?? Data())
    }

    /// Keeps a new token. Failing to write it to disk is logged, not thrown: the pod has its token; it only would
    /// not survive a reboot with the cloud away.
    func put(podUID: String, key: String, _ t: ServiceAccountToken) {
        let forgotten = state.withLock { s -> Bool in
            if s.gone.contains(podUID) { return true }
            s.memory[podUID, default: [:]][key] = t
            return false
        }
        let (dir, logger) = context
        guard !forgotten, let dir, !podUID.isEmpty else { return }
        let podDir = "\(dir)/\(podUID)"
        do {
            try Self.makePrivateDirectory(dir)
            try Self.makePrivateDirectory(podDir)
            try Files.writeAtomically("\(podDir)/\(Self.fileName(key))", Self.encode(t, key: key), mode: 0o600)
        } catch {
            logger.warning("cannot keep the service account token of pod \(podUID) on disk (\(error.message)); its pods would not get a token after a reboot while the API server is unreachable: check \(dir)")
        }
    }

    /// mkdir with mode 0700 (also when it exists), the parent fsynced after a creation so the entry survives a crash.
    static func makePrivateDirectory(_ path: String) throws(EdgedError) {
        if mkdir(path, 0o700) == 0 {
            Files.syncDirectory(Files.parentDirectory(of: path))
        } else if errno != EEXIST {
            throw EdgedError(.io, "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        var st = stat()
        guard lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
            throw EdgedError(.io, "\(path) is not a directory")
        }
        if st.st_mode & 0o777 != 0o700 { chmod(path, 0o700) }
    }

    /// The pod is gone for good (deleted from the API server): its tokens go, on disk too.
    func forget(podUID: String) {
        guard !podUID.isEmpty else { return }
        state.withLock { s in
            s.memory[podUID] = nil
            s.gone.insert(podUID)
        }
        removePodDirectory(podUID)
    }

    /// The API server (or the hub's store) listed the node's pods: tokens of every other pod go. A pod listed again
    /// later (one not deleted) never lost anything, since every pod that will come back is in the list.
    func retain(podUIDs: Set<String>) {
        let dropped = state.withLock { s -> [String] in
            let drop = s.memory.keys.filter { !podUIDs.contains($0) }
            for uid in drop { s.memory[uid] = nil }
            return drop
        }
        let (dir, logger) = context
        var onDisk: [String] = []
        if let dir { onDisk = (Files.list(dir) ?? []).filter { !podUIDs.contains($0) } }
        for uid in Set(dropped + onDisk) { removePodDirectory(uid) }
        if !onDisk.isEmpty {
            logger.info("removed the stored service account tokens of \(onDisk.count) pod(s) no longer bound to this node")
        }
    }

    private func removePodDirectory(_ podUID: String) {
        guard let dir = context.dir, !podUID.contains("/"), podUID != "..", podUID != "." else { return }
        var st = stat()
        guard lstat("\(dir)/\(podUID)", &st) == 0 else { return }
        Files.removeTree("\(dir)/\(podUID)")
        Files.syncDirectory(dir)
    }
}
