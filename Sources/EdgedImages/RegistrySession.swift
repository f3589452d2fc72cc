// Talking to one repository of an OCI/Docker registry (distribution v2 API): manifests, blobs, auth, redirects.

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import EdgedCore
import EdgedHTTP
import Logging
import NIOCore

/// One pull's conversation with a registry: remembers the token it got, follows redirects itself (dropping the
/// Authorization header when the host changes, as blob URLs often point at a CDN), and maps HTTP failures to
/// `ImageError`s that name the image.
actor RegistrySession {
    let http: HTTPClient
    let reference: ImageReference
    let base: String
    let credentials: RegistryCredentials?
    let logger: Logger
    private var authorization: String?

    init(http: HTTPClient, reference: ImageReference, insecure: Bool, credentials: RegistryCredentials?, logger: Logger) {
        self.http = http
        self.reference = reference
        let endpoint = reference.registry == "docker.io" ? "registry-1.docker.io" : reference.registry
        self.base = "\(insecure ? "http" : "https")://\(endpoint)/v2/\(reference.repository)"
        self.credentials = credentials
        self.logger = logger
    }

    /// GETs a manifest or index by tag or digest; returns its bytes, media type and sha256 digest.
    func fetchManifest(_ tagOrDigest: String) async throws -> (bytes: [UInt8], mediaType: String, digest: String) {
        let what = "manifest of \(reference.name)\(Digest.isValid(tagOrDigest) ? "@" : ":")\(tagOrDigest)"
        let (head, bytes) = try await send("\(base)/manifests/\(tagOrDigest)", accept: MediaType.acceptManifests, what: what) { head, body in
            do {
                return (head, try await body.collect(upTo: 8 << 20))
            } catch {
                throw ImageError(.registryError, "\(what): cannot read the manifest (\(error))")
            }
        }
        let digest = Digest.of(bytes)
        var mediaType = head.header("content-type")?.split(separator: ";").first.map { $0.trimmed } ?? ""
        // The document's own mediaType field wins over a generic Content-Type.
        if let probe = try? JSONDecoder().decode(MediaTypeProbe.self, from: Data(bytes)) {
            if let t = probe.mediaType { mediaType = t }
            else if probe.manifests != nil { mediaType = MediaType.ociIndex }
            else if probe.config != nil && !MediaType.manifests.contains(mediaType) { mediaType = MediaType.ociManifest }
        }
        if let header = head.header("docker-content-digest"), header.hasPrefix("sha256:"), header != digest {
            throw ImageError(.digestMismatch, "\(what): digest mismatch (registry says \(header), content is \(digest))")
        }
        return (bytes, mediaType, digest)
    }

    /// Streams a blob to `path`, hashing as it goes, and fails unless it matches `d.digest` and `d.size`.
    func downloadBlob(_ d: Descriptor, to path: String, what: String) async throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FS.ioError("cannot create", path) }
        let file = OwnedFD(fd)
        let (got, count) = try await send("\(base)/blobs/\(d.digest)", accept: nil, what: what) { _, body in
            var hasher = Hasher256()
            var count: Int64 = 0
            do {
                for try await chunk in body {
                    count += Int64(chunk.readableBytes)
                    if count > d.size {
                        throw ImageError(.digestMismatch, "\(what): the registry sent more than the \(d.size) bytes the manifest says; the blob is corrupt")
                    }
                    try chunk.withUnsafeReadableBytes { (b) throws in
                        hasher.update(b)
                        try FS.writeAll(file.fd, b, path: path)
                    }
                }
            } catch let error as ImageError {
                throw error
            } catch {
                throw ImageError(.registryUnreachable, "\(what): download from registry \(reference.registry) interrupted (\(error)); try again")
            }
            return (hasher.finalize(), count)
        }
        guard got == d.digest else {
            throw ImageError(.digestMismatch, "\(what): digest mismatch (want \(d.digest), got \(got)); the registry's copy is corrupt")
        }
        guard count == d.size else {
            throw ImageError(.digestMismatch, "\(what): size mismatch (want \(d.size) bytes, got \(count))")
        }
        guard fsync(file.fd) == 0 else { throw FS.ioError("cannot fsync", path) }
    }

    /// What one response of `send`'s loop leads to.
    private enum Step<T: Sendable>: Sendable {
        case done(T)
        case redirect(String?)
        case challenge(String)
    }

    /// GET with auth and redirects; hands a 2xx response to `handle`, whose result it returns.
    private func send<T: Sendable>(_ url: String, accept: String?, what: String,
                                   _ handle: @Sendable (HTTPResponseHead, HTTPBodyStream) async throws -> T) async throws -> T {
        var current = url
        var triedAuth = false
        var redirects = 0
        let origin = host(of: url)
        while true {
            var headers: [(String, String)] = []
            if let accept { headers.append(("Accept", accept)) }
            if let authorization, host(of: current) == origin { headers.append(("Authorization", authorization)) }
            let step: Step<T>
            let alreadyAuthenticated = triedAuth
            do {
                step = try await http.stream(HTTPRequest(url: current, headers: headers), idleTimeout: .seconds(60)) { head, body in
                    let status = head.status
                    switch status {
                    case 200..<300:
                        return .done(try await handle(head, body))
                    case 301, 302, 303, 307, 308:
                        _ = try? await body.collect(upTo: 1 << 20)
                        return .redirect(head.header("location"))
                    case 401 where !alreadyAuthenticated:
                        _ = try? await body.collect(upTo: 1 << 20)
                        return .challenge(head.header("www-authenticate") ?? "")
                    default:
                        let text = (try? await body.collect(upTo: 64 << 10)).map { String(decoding: $0, as: UTF8.self) } ?? ""
                        let detail = text.isEmpty ? "" : ": \(text.prefix(300).trimmed)"
                        switch status {
                        case 401, 403:
                            throw ImageError(.unauthorized, "\(what): registry \(reference.registry) refused access (\(status)\(alreadyAuthenticated ? " after authenticating" : ""))\(detail); check the credentials and that the image exists")
                        case 404:
                            throw ImageError(.notFound, "\(what): not found in registry \(reference.registry) (404)\(detail); check the image name and tag")
                        default:
                            throw ImageError(.registryError, "\(what): registry \(reference.registry) answered \(status)\(detail); try again later")
                        }
                    }
                }
            } catch let error as ImageError {
                throw error
            } catch {
                throw ImageError(.registryUnreachable, "cannot reach registry \(reference.registry) for \(what) (\(current)): \(error); check the network and the registry name")
            }
            switch step {
            case let .done(result):
                return result
            case let .redirect(location):
                redirects += 1
                guard let location, redirects <= 10,
                      let next = URL(string: location, relativeTo: URL(string: current))?.absoluteString else {
                    throw ImageError(.registryError, "\(what): bad or too many redirects from \(current)")
                }
                current = next
            case let .challenge(challenge):
                triedAuth = true
                try await authenticate(challenge, what: what)
            }
        }
    }

    /// Answers a 401 challenge: Bearer → get a token from the realm (with Basic credentials if given);
    /// Basic → use the credentials.
    private func authenticate(_ challenge: String, what: String) async throws {
        let (scheme, params) = Self.parseChallenge(challenge)
        if scheme == "basic" {
            guard let credentials else {
                throw ImageError(.unauthorized, "\(what): registry \(reference.registry) needs a username and password")
            }
            authorization = "Basic \(credentials.basic)"
            return
        }
        guard scheme == "bearer", let realm = params["realm"] else {
            throw ImageError(.unauthorized, "\(what): registry \(reference.registry) sent an authentication challenge edged does not understand: \"\(challenge)\"")
        }
        var query: [String] = []
        if let service = params["service"] { query.append("service=\(Self.percentEncode(service))") }
        query.append("scope=\(Self.percentEncode(params["scope"] ?? "repository:\(reference.repository):pull"))")
        let url = realm + (realm.contains("?") ? "&" : "?") + query.joined(separator: "&")
        let headers = credentials.map { [("Authorization", "Basic \($0.basic)")] } ?? []
        let response: HTTPResponse
        do {
            response = try await http.execute(HTTPRequest(url: url, headers: headers), timeout: .seconds(60), maxBodyBytes: 1 << 20)
        } catch {
            throw ImageError(.registryUnreachable, "cannot reach the token server \(realm) of \(reference.registry) for \(what): \(error)")
        }
        let body = response.body
        guard response.status == 200 else {
            throw ImageError(.unauthorized, "\(what): the token server \(realm) refused (\(response.status)); check the credentials")
        }
        struct TokenResponse: Decodable {
            var token: String?
            var access_token: String?
        }
        guard let decoded = try? JSONDecoder().decode(TokenResponse.self, from: Data(body)),
              let token = decoded.token ?? decoded.access_token, !token.isEmpty else {
            throw ImageError(.unauthorized, "\(what): the token server \(realm) sent no token")
        }
        authorization = "Bearer \(token)"
    }

    /// Splits `Bearer realm="…",service="…",scope="…"` into the scheme (lowercased) and its parameters.
    static func parseChallenge(_ header: String) -> (String, [String: String]) {
        let trimmed = header.trimmed
        guard let space = trimmed.firstIndex(of: " ") else { return (trimmed.lowercased(), [:]) }
        let scheme = trimmed[..<space].lowercased()
        var params: [String: String] = [:]
        var rest = Substring(trimmed[trimmed.index(after: space)...])
        while !rest.isEmpty {
            rest = rest.drop { $0 == " " || $0 == "," }
            guard let eq = rest.firstIndex(of: "=") else { break }
            let key = rest[..<eq].trimmed.lowercased()
            rest = rest[rest.index(after: eq)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                while let c = rest.first, c != "\"" {
                    if c == "\\" { rest = rest.dropFirst() }
                    if let c2 = rest.first { value.append(c2) }
                    rest = rest.dropFirst()
                }
                rest = rest.dropFirst()
            } else {
                let end = rest.firstIndex(of: ",") ?? rest.endIndex
                value = rest[..<end].trimmed
                rest = rest[end...]
            }
            params[key] = value
        }
        return (scheme, params)
    }

    static func percentEncode(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            if (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b == 0x2d || b == 0x2e || b == 0x5f || b == 0x7e {
                out.append(Character(Unicode.Scalar(b)))
            } else {
                out += "%" + String(b, radix: 16, uppercase: true).leftPadded(2)
            }
        }
        return out
    }

    private func host(of url: String) -> String {
        URL(string: url)?.host.map { h in URL(string: url)?.port.map { "\(h):\($0)" } ?? h } ?? url
    }
}

/// Credentials for a registry: used as Basic auth, and to ask token servers for Bearer tokens.
public struct RegistryCredentials: Sendable {
    public var username: String
    public var password: String

    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    var basic: String { Data("\(username):\(password)".utf8).base64EncodedString() }
}

extension String {
    fileprivate func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}


