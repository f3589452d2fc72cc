// The node's credentials on disk, laid out like kubelet's /var/lib/kubelet/pki and written crash-safely.

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import EdgedCore
import Glibc

/// The node's credentials in one directory, in kubelet's layout:
///
///     kubelet-client-2026-01-02-15-04-05.pem   certificate chain + private key, 0600
///     kubelet-client-current.pem -> kubelet-client-2026-01-02-15-04-05.pem
///     kubelet-server-<timestamp>.pem, kubelet-server-current.pem   the same for the serving certificate
///     kubelet.crt, kubelet.key                 the self-signed serving pair used until a serving certificate is
///                                              issued (see `SelfSignedServing`)
///     ca.crt                                   the pinned cluster CA, 0644
///     cluster.json                             {"server": ..., "nodeName": ...}, 0600
///
/// Every file is written to a temporary name, fsynced, renamed into place and the directory fsynced, and the
/// `-current` link is replaced by renaming a new link over it, so a crash leaves either the old or the new
/// credentials, never a mix. Leftover temporary files (".<name>.tmp.*") are never read and are removed by the
/// next save. Of the timestamped files, the two newest and the current one are kept.
///
/// One writer at a time: the store has no lock of its own (edged is the only writer of its directory).
public struct CredentialStore: Sendable {
    /// Which certificate a file holds.
    public enum Kind: String, Sendable, CaseIterable {
        /// The API client certificate (signer kubernetes.io/kube-apiserver-client-kubelet).
        case client = "kubelet-client"
        /// The serving certificate (signer kubernetes.io/kubelet-serving).
        case serving = "kubelet-server"

        /// The name of the `-current` link.
        public var currentName: String { "\(rawValue)-current.pem" }
    }

    /// A certificate and its private key as stored in one file.
    public struct Pair: Sendable {
        /// The timestamped file the `-current` link points to.
        public let path: String
        /// The certificate chain, PEM.
        public let certificatePEM: String
        public let key: NodeKey
        public let info: CertificateInfo
    }

    /// Where the cluster is and who this node is in it.
    public struct ClusterConfig: Sendable, Equatable {
        public var server: String
        public var nodeName: String

        public init(server: String, nodeName: String) {
            self.server = server
            self.nodeName = nodeName
        }
    }

    /// Everything the store holds.
    public struct Contents: Sendable {
        public let cluster: ClusterConfig?
        public let caPEM: String?
        public let client: Pair?
        public let serving: Pair?
    }

    public let directory: String

    public static let caFileName = "ca.crt"
    public static let clusterFileName = "cluster.json"
    /// How many timestamped files of each kind survive pruning (besides the current one).
    public static let keep = 2

    public init(dir: String) {
        directory = dir
    }

    public var caPath: String { "\(directory)/\(Self.caFileName)" }
    public var clusterPath: String { "\(directory)/\(Self.clusterFileName)" }
    public func currentPath(_ kind: Kind) -> String { "\(directory)/\(kind.currentName)" }

    // MARK: Saving

    /// Stores the cluster CA (after it was pinned).
    public func saveCA(_ pem: String) throws(CredentialError) {
        _ = try CertificateInfo(pem: pem, source: "cluster CA")
        try prepareDirectory()
        try writeAtomically(Array(pem.utf8), to: caPath, mode: 0o644)
    }

    /// Stores the server URL and node name.
    public func saveCluster(_ config: ClusterConfig) throws(CredentialError) {
        let json = JSONValue.object([("server", .string(config.server)), ("nodeName", .string(config.nodeName))])
        try prepareDirectory()
        try writeAtomically(Array((json.jsonText + "\n").utf8), to: clusterPath, mode: 0o600)
    }

    /// Stores a certificate with its key as a new timestamped file, points the `-current` link at it, and
    /// prunes old files. Refuses a certificate that does not belong to `key`. Returns the new file's path.
    @discardableResult
    public func save(_ kind: Kind, certificatePEM: String, key: NodeKey, now: Date = Date()) throws(CredentialError) -> String {
        let info = try CertificateInfo(pem: certificatePEM, source: "new \(kind.rawValue) certificate")
        guard info.matches(key) else {
            throw CredentialError(.invalidCertificate, "new \(kind.rawValue) certificate \"\(info.subject)\" is not for this node's key: it was issued for another CSR")
        }
        try prepareDirectory()
        var cert = certificatePEM
        if !cert.hasSuffix("\n") { cert += "\n" }
        let name = uniqueName(kind, stamp: Self.stamp(now))
        let path = "\(directory)/\(name)"
        try writeAtomically(Array((cert + key.pem).utf8), to: path, mode: 0o600)
        try replaceLink(currentPath(kind), target: name)
        prune(kind)
        return path
    }

    /// Stores `bytes` as `name` in the directory, crash-safely (the self-signed serving pair, kubelet.crt/.key).
    public func saveFile(_ name: String, _ bytes: [UInt8], mode: mode_t) throws(CredentialError) {
        try prepareDirectory()
        try writeAtomically(bytes, to: "\(directory)/\(name)", mode: mode)
    }

    // MARK: Loading

    /// Everything stored, or nil when nothing is (the node has not joined). Throws `corruptFile` naming the
    /// file when one is unreadable, half-written or inconsistent; such a file is never returned.
    public func load() throws(CredentialError) -> Contents? {
        let cluster = try loadCluster()
        let ca = try loadCA()
        let client = try loadPair(.client)
        let serving = try loadPair(.serving)
        if cluster == nil && ca == nil && client == nil && serving == nil { return nil }
        return Contents(cluster: cluster, caPEM: ca, client: client, serving: serving)
    }

    /// The current certificate and key of `kind`, or nil when there is none.
    public func loadPair(_ kind: Kind) throws(CredentialError) -> Pair? {
        let link = currentPath(kind)
        var st = stat()
        guard lstat(link, &st) == 0 else {
            if errno == ENOENT { return nil }
            throw CredentialError(.io, "\(link): \(String(cString: strerror(errno)))")
        }
        var path = link
        if st.st_mode & S_IFMT == S_IFLNK {
            var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = readlink(link, &buf, buf.count - 1)
            guard n > 0 else { throw CredentialError(.io, "\(link): \(String(cString: strerror(errno)))") }
            let target = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            path = target.hasPrefix("/") ? target : "\(directory)/\(target)"
        }
        let remedy = "remove it (and \(kind.currentName)) and run edgectl join again"
        guard let bytes = Files.read(path) else {
            throw CredentialError(.corruptFile, "\(path) (linked from \(kind.currentName)) cannot be read: \(String(cString: strerror(errno))): \(remedy)")
        }
        let text = String(decoding: bytes, as: UTF8.self)
        let info: CertificateInfo
        let key: NodeKey
        do {
            info = try CertificateInfo(pem: text, source: path)
            key = try NodeKey(pem: text, source: path)
        } catch {
            throw CredentialError(.corruptFile, "\(path) is corrupt or half-written (\(error)): \(remedy)")
        }
        guard info.matches(key) else {
            throw CredentialError(.corruptFile, "\(path): the certificate and the private key do not belong together: \(remedy)")
        }
        let certificatePEM = text.pemBlocks(ofType: "CERTIFICATE")
        return Pair(path: path, certificatePEM: certificatePEM, key: key, info: info)
    }

    /// The stored cluster CA, or nil.
    public func loadCA() throws(CredentialError) -> String? {
        guard let text = try readIfPresent(caPath) else { return nil }
        do { _ = try CertificateInfo(pem: text, source: caPath) } catch {
            throw CredentialError(.corruptFile, "\(caPath) is corrupt or half-written (\(error)): remove it and run edgectl join again")
        }
        return text
    }

    /// The stored cluster config, or nil.
    public func loadCluster() throws(CredentialError) -> ClusterConfig? {
        guard let text = try readIfPresent(clusterPath) else { return nil }
        let doc = try? YAMLParser.parse(text).first
        guard let doc, let server = doc["server"]?.stringValue, let nodeName = doc["nodeName"]?.stringValue else {
            throw CredentialError(.corruptFile, "\(clusterPath) is corrupt or half-written (expected {\"server\": ..., \"nodeName\": ...}): remove it and run edgectl join again")
        }
        return ClusterConfig(server: server, nodeName: nodeName)
    }

    /// The timestamped files of `kind`, oldest first.
    public func files(_ kind: Kind) -> [String] {
        (Files.list(directory) ?? []).compactMap { name in Self.sortKey(name, kind).map { (name, $0) } }
            .sorted { $0.1 < $1.1 }
            .map { "\(directory)/\($0.0)" }
    }

    // MARK: File names

    /// "2026-01-02-15-04-05" in UTC, the timestamp kubelet puts in its file names.
    static func stamp(_ date: Date) -> String {
        let text = CertificateRotation.rfc3339(date)  // 2026-01-02T15:04:05Z
        return String(text.dropLast().map { $0 == "T" || $0 == ":" ? "-" : $0 })
    }

    /// kubelet-client-<stamp>.pem, or kubelet-client-<stamp>-<n>.pem when that exists (two saves in a second).
    func uniqueName(_ kind: Kind, stamp: String) -> String {
        var name = "\(kind.rawValue)-\(stamp).pem"
        var n = 1
        while access("\(directory)/\(name)", F_OK) == 0 {
            name = "\(kind.rawValue)-\(stamp)-\(n).pem"
            n += 1
        }
        return name
    }

    /// (stamp, counter) for a timestamped file name of `kind`, nil for anything else.
    static func sortKey(_ name: String, _ kind: Kind) -> SortKey? {
        let prefix = kind.rawValue + "-"
        guard name.hasPrefix(prefix), name.hasSuffix(".pem"), name != kind.currentName else { return nil }
        let middle = name.dropFirst(prefix.count).dropLast(4)
        guard middle.utf8.count >= 19 else { return nil }
        let stamp = String(middle.prefix(19))
        let rest = middle.dropFirst(19)
        let digitsAndDashes = stamp.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d }
        guard digitsAndDashes else { return nil }
        if rest.isEmpty { return SortKey(stamp: stamp, counter: 0) }
        guard rest.hasPrefix("-"), let n = Int(rest.dropFirst()) else { return nil }
        return SortKey(stamp: stamp, counter: n)
    }

    struct SortKey: Comparable {
        let stamp: String
        let counter: Int
        static func < (a: SortKey, b: SortKey) -> Bool { (a.stamp, a.counter) < (b.stamp, b.counter) }
    }

    // MARK: Crash-safe writes

    private func prepareDirectory() throws(CredentialError) {
        // Parents as usual, the directory itself private: it holds the node's private keys.
        guard Files.makeDirectories(directory), chmod(directory, 0o700) == 0 else {
            throw CredentialError(.io, "cannot create credential directory \(directory): \(String(cString: strerror(errno)))")
        }
    }

    private func tempPath(for path: String) -> String {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        return "\(directory)/.\(name).tmp.\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
    }

    /// Writes to a temporary file, fsyncs it, renames it over `path` and fsyncs the directory.
    private func writeAtomically(_ bytes: [UInt8], to path: String, mode: mode_t) throws(CredentialError) {
        let tmp = tempPath(for: path)
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw CredentialError(.io, "cannot create \(tmp): \(String(cString: strerror(errno)))") }
        var failure: String?
        if fchmod(fd, mode) != 0 { failure = "chmod" }  // exactly `mode`, whatever the umask
        var offset = 0
        while failure == nil && offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, bytes.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                failure = "write"
            } else {
                offset += n
            }
        }
        if failure == nil && fsync(fd) != 0 { failure = "fsync" }
        let err = errno
        close(fd)
        if let failure {
            unlink(tmp)
            throw CredentialError(.io, "cannot write \(path) (\(failure) of \(tmp)): \(String(cString: strerror(err)))")
        }
        guard rename(tmp, path) == 0 else {
            let err = errno
            unlink(tmp)
            throw CredentialError(.io, "cannot rename \(tmp) to \(path): \(String(cString: strerror(err)))")
        }
        try syncDirectory()
    }

    /// Points `link` at `target` by renaming a fresh symlink over it, so readers see the old or the new target.
    private func replaceLink(_ link: String, target: String) throws(CredentialError) {
        let tmp = tempPath(for: link)
        guard symlink(target, tmp) == 0 else {
            throw CredentialError(.io, "cannot create link \(tmp): \(String(cString: strerror(errno)))")
        }
        guard rename(tmp, link) == 0 else {
            let err = errno
            unlink(tmp)
            throw CredentialError(.io, "cannot rename \(tmp) to \(link): \(String(cString: strerror(err)))")
        }
        try syncDirectory()
    }

    private func syncDirectory() throws(CredentialError) {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw CredentialError(.io, "cannot open \(directory): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw CredentialError(.io, "cannot fsync \(directory): \(String(cString: strerror(errno)))") }
    }

    /// Removes all but the newest `keep` timestamped files of `kind` (never the current one) and leftover
    /// temporary files. Failures are ignored: pruning is housekeeping.
    private func prune(_ kind: Kind) {
        let names = Files.list(directory) ?? []
        for name in names where name.hasPrefix(".") && name.contains(".tmp.") {
            unlink("\(directory)/\(name)")
        }
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink(currentPath(kind), &buf, buf.count - 1)
        let current = n > 0 ? String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        let all = files(kind)
        for path in all.dropLast(Self.keep) where !path.hasSuffix("/" + current) && path != current {
            unlink(path)
        }
    }

    private func readIfPresent(_ path: String) throws(CredentialError) -> String? {
        guard let bytes = Files.read(path) else {
            if errno == ENOENT { return nil }
            throw CredentialError(.corruptFile, "\(path) cannot be read: \(String(cString: strerror(errno)))")
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension String {
    /// The PEM blocks of type `type` in this text, concatenated.
    fileprivate func pemBlocks(ofType type: String) -> String {
        let begin = "-----BEGIN \(type)-----"
        let end = "-----END \(type)-----"
        var out = ""
        var inside = false
        for line in split(separator: "\n", omittingEmptySubsequences: false) {
            let l = line.hasSuffix("\r") ? line.dropLast() : line
            if l == begin { inside = true }
            if inside { out += l + "\n" }
            if l == end { inside = false }
        }
        return out
    }
}
