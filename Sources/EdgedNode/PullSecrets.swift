// imagePullSecrets: registry credentials from kubernetes.io/dockerconfigjson (or legacy .dockercfg) secrets, matched
// to an image's registry the way kubelet's credential keyring does (exact host[:port] first, then docker.io aliases).

import EdgedCore
import EdgedImages
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

enum PullSecrets {
    /// The credentials for `reference` from the pod's pull secrets, or nil. A secret that is missing or malformed is
    /// reported through `problems` (named) and skipped, like kubelet.
    static func credentials(for reference: String, pod: Pod, objects: any PodAPIObjects,
                            problems: inout [String]) async -> RegistryCredentials? {
        guard let names = pod.spec.imagePullSecrets, !names.isEmpty,
              let ref = try? ImageReference(parsing: reference) else { return nil }
        for name in names.map(\.name) {
            let data: [String: [UInt8]]?
            do { data = try await objects.secret(namespace: pod.namespace, name: name) } catch {
                problems.append("pull secret \(name): \(error.message)")
                continue
            }
            guard let data else {
                problems.append("pull secret \"\(name)\" not found")
                continue
            }
            guard let json = data[".dockerconfigjson"] ?? data[".dockercfg"] else {
                problems.append("pull secret \"\(name)\" has neither .dockerconfigjson nor .dockercfg")
                continue
            }
            switch parse(json) {
            case .failure(let why):
                problems.append("pull secret \"\(name)\": \(why)")
            case .success(let auths):
                if let c = match(ref.registry, auths) { return c }
            }
        }
        return nil
    }

    enum ParseResult { case success([String: RegistryCredentials]), failure(String) }

    /// {"auths": {"host": {"username", "password"} | {"auth": base64("user:pass")}}} or the legacy top-level map.
    static func parse(_ bytes: [UInt8]) -> ParseResult {
        let doc: JSONValue
        do {
            guard let first = try YAMLParser.parse(String(decoding: bytes, as: UTF8.self)).first else { return .failure("empty") }
            doc = first
        } catch {
            return .failure("not valid JSON (\(error.message))")
        }
        let auths = doc["auths"] ?? doc
        guard case .object(let entries) = auths else { return .failure("no \"auths\" map") }
        var out: [String: RegistryCredentials] = [:]
        for (host, entry) in entries {
            var user = entry["username"]?.stringValue
            var pass = entry["password"]?.stringValue
            if user == nil, let auth = entry["auth"]?.stringValue, let raw = Data(base64Encoded: auth) {
                let text = String(decoding: raw, as: UTF8.self)
                if let colon = text.firstIndex(of: ":") {
                    user = String(text[..<colon])
                    pass = String(text[text.index(after: colon)...])
                }
            }
            guard let user, let pass else { continue }
            out[normalize(host)] = RegistryCredentials(username: user, password: pass)
        }
        return .success(out)
    }

    /// "https://index.docker.io/v1/" → "docker.io"; "http://host:5000/path" → "host:5000".
    static func normalize(_ host: String) -> String {
        var h = Substring(host)
        for scheme in ["https://", "http://"] where h.hasPrefix(scheme) { h = h.dropFirst(scheme.count) }
        if let slash = h.firstIndex(of: "/") { h = h[..<slash] }
        let s = String(h).lowercased()
        return ["index.docker.io", "registry-1.docker.io"].contains(s) ? "docker.io" : s
    }

    static func match(_ registry: String, _ auths: [String: RegistryCredentials]) -> RegistryCredentials? {
        auths[normalize(registry)]
    }
}
