// Decoding Pod manifests (YAML or JSON) with a message that names the file and the field.

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

public enum Manifest {
    /// Decodes every Pod in `text` (YAML or JSON; several YAML documents allowed). Empty documents are skipped.
    /// Errors name `source` (usually the file path) and what is wrong.
    public static func decodePods(_ text: String, source: String) throws(EdgedError) -> [Pod] {
        let documents: [JSONValue]
        do {
            documents = try YAMLParser.parse(text)
        } catch {
            throw EdgedError(.invalidManifest, "\(source): \(error.message)")
        }
        var pods: [Pod] = []
        for (index, doc) in documents.enumerated() where doc != .null {
            let where_ = documents.count > 1 ? "\(source) (document \(index + 1))" : source
            guard case .object = doc else { throw EdgedError(.invalidManifest, "\(where_): a Pod manifest must be a mapping") }
            if let kind = doc["kind"]?.stringValue, kind != "Pod" {
                throw EdgedError(.invalidManifest, "\(where_): kind is \"\(kind)\"; only kind: Pod is supported in the manifest dir")
            }
            let pod: Pod
            do {
                pod = try JSONDecoder().decode(Pod.self, from: Data(doc.jsonText.utf8))
            } catch let error as DecodingError {
                throw EdgedError(.invalidManifest, "\(where_): \(describe(error))")
            } catch {
                throw EdgedError(.invalidManifest, "\(where_): \(error)")
            }
            try validate(pod, source: where_)
            pods.append(pod)
        }
        return pods
    }

    /// Checks what the API server would reject before running anything.
    /// `apiObjects`: whether the pod may use volumes backed by API objects (configMap, secret, downwardAPI,
    /// projected); static pods may not, as with kubelet.
    public static func validate(_ pod: Pod, source: String, apiObjects: Bool = false) throws(EdgedError) {
        guard let name = pod.metadata.name, !name.isEmpty else {
            throw EdgedError(.invalidManifest, "\(source): metadata.name is required")
        }
        guard isDNSSubdomain(name) else {
            throw EdgedError(.invalidManifest, "\(source): metadata.name \"\(name)\" must be lower-case letters, digits, '-' or '.'")
        }
        if let ns = pod.metadata.namespace, !isDNSLabel(ns) {
            throw EdgedError(.invalidManifest, "\(source): metadata.namespace \"\(ns)\" is not a valid name")
        }
        guard !pod.spec.containers.isEmpty else {
            throw EdgedError(.invalidManifest, "\(source): spec.containers must list at least one container")
        }
        var seen: Set<String> = []
        for c in (pod.spec.initContainers ?? []) + pod.spec.containers {
            guard isDNSLabel(c.name) else {
                throw EdgedError(.invalidManifest, "\(source): container name \"\(c.name)\" must be a DNS label (lower-case letters, digits, '-')")
            }
            guard seen.insert(c.name).inserted else {
                throw EdgedError(.invalidManifest, "\(source): container name \"\(c.name)\" is used twice")
            }
            guard let image = c.image, !image.isEmpty else {
                throw EdgedError(.invalidManifest, "\(source): container \"\(c.name)\" has no image")
            }
            for (key, q) in (c.resources?.limits ?? [:]).merging(c.resources?.requests ?? [:], uniquingKeysWith: { a, _ in a }) {
                do { _ = try q.milliValue() } catch {
                    throw EdgedError(.invalidManifest, "\(source): container \"\(c.name)\" resources \(key): \(error.message)")
                }
            }
            let volumes = Set((pod.spec.volumes ?? []).map(\.name))
            for m in c.volumeMounts ?? [] where !volumes.contains(m.name) {
                throw EdgedError(.invalidManifest, "\(source): container \"\(c.name)\" mounts volume \"\(m.name)\", which spec.volumes does not define")
            }
        }
        for v in pod.spec.volumes ?? [] {
            let apiBacked = v.configMap != nil || v.secret != nil || v.downwardAPI != nil || v.projected != nil
            if v.emptyDir == nil && v.hostPath == nil && !apiBacked {
                let kinds = apiObjects ? Volume.supportedSources.joined(separator: ", ") : "emptyDir or hostPath"
                throw EdgedError(.invalidManifest, "\(source): volume \"\(v.name)\" has no supported source (\(kinds))")
            }
            if apiBacked && !apiObjects {
                throw EdgedError(.invalidManifest, "\(source): volume \"\(v.name)\": static pods cannot use configMap, secret, downwardAPI or projected volumes (only emptyDir and hostPath)")
            }
        }
    }

    static func isDNSLabel(_ s: String) -> Bool {
        !s.isEmpty && s.count <= 63 && s.first != "-" && s.last != "-"
            && s.allSatisfy { ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "-" }
    }

    static func isDNSSubdomain(_ s: String) -> Bool {
        s.count <= 253 && s.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { isDNSLabel(String($0)) }
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ ctx: DecodingError.Context) -> String {
            let p = ctx.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return p.hasPrefix(".") ? String(p.dropFirst()) : p
        }
        switch error {
        case .keyNotFound(let key, let ctx):
            let base = path(ctx)
            return "\(base.isEmpty ? "" : base + ".")\(key.stringValue) is required"
        case .typeMismatch(let type, let ctx):
            return "\(path(ctx)) has the wrong type (want \(type))"
        case .valueNotFound(let type, let ctx):
            return "\(path(ctx)) is null (want \(type))"
        case .dataCorrupted(let ctx):
            return "\(path(ctx)): \(ctx.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }
}
