// The TLS side of the kubelet API: the serving certificate and key, reloaded when their files change, client
// certificates checked against the cluster CA when presented, and the caller's identity read from them.

#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOSSL
import Synchronization
import X509

/// Which serving certificate the kubelet API presents.
public enum ServingCertificateSource: String, Sendable, Equatable {
    /// The one the cluster issued (`certPath`).
    case issued
    /// The self-signed fallback, while `certPath` does not exist yet.
    case selfSigned = "self-signed"
}

/// Builds the server's TLS context from the certificate, key and client CA files, and builds it again when one of
/// them changes on disk (size, mtime or inode), so a rotated serving certificate reaches new connections. While the
/// certificate file does not exist, the fallback pair (self-signed) is served; once it appears, new connections get
/// it and connections already open keep theirs.
///
/// Client certificates are optional at the TLS level (bearer-token callers present none) but verified against the
/// CA when presented: a certificate from another CA fails the handshake.
final class ServingTLS: Sendable {
    private struct FileStamp: Equatable {
        var inode: UInt64
        var size: Int64
        var seconds: Int
        var nanoseconds: Int
    }

    private struct Loaded {
        var stamps: [FileStamp?]
        var context: NIOSSLContext
        var source: ServingCertificateSource
    }

    let certPath: String
    let keyPath: String
    let clientCAPath: String
    let fallback: (certPath: String, keyPath: String)?
    private let logger: Logger
    private let loaded = Mutex<Loaded?>(nil)

    init(certPath: String, keyPath: String, clientCAPath: String, fallback: (certPath: String, keyPath: String)? = nil,
         logger: Logger) {
        self.certPath = certPath
        self.keyPath = keyPath
        self.clientCAPath = clientCAPath
        self.fallback = fallback
        self.logger = logger
    }

    /// The certificate the context built last presents; nil before one was built.
    var source: ServingCertificateSource? { loaded.withLock { $0?.source } }

    /// The context for a new connection: the one built last, or a new one when the files changed.
    ///
    /// When the files changed but do not load (a rotation caught half-way: the new certificate written, the key
    /// not yet), the previous context stays in use and the next connection tries again.
    /// - Throws: `KubeletServerError` `.tls` when there is no usable context at all.
    func context() throws(KubeletServerError) -> NIOSSLContext {
        var paths = [certPath, keyPath, clientCAPath]
        if let fallback { paths += [fallback.certPath, fallback.keyPath] }
        let stamps = paths.map(Self.stamp)
        let previous = loaded.withLock { $0 }
        if let previous, previous.stamps == stamps { return previous.context }
        // The issued certificate once its file exists (a half-written one is retried below); the fallback before.
        let source: ServingCertificateSource = fallback != nil && stamps[0] == nil ? .selfSigned : .issued
        do {
            let context = source == .issued ? try build(certPath: certPath, keyPath: keyPath)
                : try build(certPath: fallback!.certPath, keyPath: fallback!.keyPath)
            loaded.withLock { $0 = Loaded(stamps: stamps, context: context, source: source) }
            if let previous, previous.source != source {
                logger.notice("kubelet API: now serving the \(source == .issued ? "issued" : "self-signed") certificate",
                              metadata: ["cert": "\(source == .issued ? certPath : fallback!.certPath)"])
            } else if previous != nil {
                logger.info("kubelet API: serving certificate reloaded", metadata: ["cert": "\(certPath)"])
            }
            return context
        } catch {
            guard let previous else { throw error }
            logger.warning("kubelet API: the changed TLS files do not load yet; still serving the previous certificate",
                           metadata: ["error": "\(error.message)"])
            return previous.context
        }
    }

    private func build(certPath: String, keyPath: String) throws(KubeletServerError) -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(certPath) } catch {
            throw KubeletServerError(.tls, "the kubelet serving certificate \(certPath) does not load (\(error)); check that the file exists and holds a PEM certificate")
        }
        guard !chain.isEmpty else {
            throw KubeletServerError(.tls, "the kubelet serving certificate file \(certPath) holds no certificate; check the file")
        }
        let key: NIOSSLPrivateKey
        do { key = try NIOSSLPrivateKey(file: keyPath, format: .pem) } catch {
            throw KubeletServerError(.tls, "the kubelet serving key \(keyPath) does not load (\(error)); it must be an unencrypted PEM key (EC, PKCS#8 or RSA)")
        }
        let roots: [NIOSSLCertificate]
        do { roots = try NIOSSLCertificate.fromPEMFile(clientCAPath) } catch {
            throw KubeletServerError(.tls, "the client CA file \(clientCAPath) does not load (\(error)); it must hold the cluster CA certificate (PEM)")
        }
        guard !roots.isEmpty else {
            throw KubeletServerError(.tls, "the client CA file \(clientCAPath) holds no certificate; it must hold the cluster CA certificate (PEM)")
        }
        var config = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                               privateKey: .privateKey(key))
        config.certificateVerification = .optionalVerification
        config.trustRoots = .certificates(roots)
        config.sendCANameList = true
        // HTTP/1.1 only: SPDY and WebSocket upgrades need it.
        config.applicationProtocols = ["http/1.1"]
        do {
            return try NIOSSLContext(configuration: config)
        } catch {
            throw KubeletServerError(.tls, "the kubelet API cannot set up TLS with \(certPath) and \(keyPath): \(error); check that the certificate matches its key")
        }
    }

    private static func stamp(_ path: String) -> FileStamp? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return FileStamp(inode: UInt64(st.st_ino), size: Int64(st.st_size), seconds: Int(st.st_mtim.tv_sec),
                         nanoseconds: Int(st.st_mtim.tv_nsec))
    }

    /// The user a verified client certificate stands for: CN is the user name, each O a group (kube-apiserver's and
    /// kubelet's x509 authenticator). nil when the certificate cannot be read or has no CN.
    static func user(of certificate: NIOSSLCertificate) -> KubeletUser? {
        guard let der = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: der) else { return nil }
        var name: String?
        var groups: [String] = []
        for rdn in parsed.subject {
            for attribute in rdn {
                if attribute.type == .RDNAttributeType.commonName, name == nil {
                    name = String(attribute.value)
                } else if attribute.type == .RDNAttributeType.organizationName, let org = String(attribute.value) {
                    groups.append(org)
                }
            }
        }
        guard let name, !name.isEmpty else { return nil }
        return KubeletUser(name: name, groups: groups).authenticated()
    }
}

/// The error of the kubelet API server: a code and a message that names the file or address and says what to do.
public struct KubeletServerError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }
        /// The certificate, key or client CA does not load.
        public static let tls = Code(name: "tls")
        /// The address cannot be bound.
        public static let bind = Code(name: "bind")
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
