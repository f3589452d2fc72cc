// Turns a Pod's container plus its image config into what the runtime runs, the way kubelet does it.

import EdgedCore
import EdgedImages
import EdgedRuntime

/// Merges a container's command/args/env/workingDir with the image config exactly like Kubernetes:
/// command replaces the image Entrypoint (and drops its Cmd), args replace Cmd; env from the image
/// comes first and the container's env overrides it; `$(VAR)` references expand against earlier variables,
/// `$$(VAR)` escapes.
enum ContainerSpecBuilder {
    static func argv(container: Container, image: ImageConfig, env: [(String, String)]) -> [String] {
        let base: [String]
        if let command = container.command {
            base = command + (container.args ?? [])
        } else if let args = container.args {
            base = (image.entrypoint ?? []) + args
        } else {
            base = (image.entrypoint ?? []) + (image.cmd ?? [])
        }
        let lookup = Dictionary(env, uniquingKeysWith: { _, b in b })
        if container.command == nil && container.args == nil { return base }
        return base.map { expand($0, lookup) }
    }

    /// The environment in order: image env, then the container's (later wins, first position kept).
    /// `valueFrom`: the resolved values of env entries that use valueFrom (not expanded, like kubelet).
    static func environment(container: Container, image: ImageConfig, extra: [(String, String)],
                            valueFrom: [String: String] = [:]) -> [(String, String)] {
        var order: [String] = []
        var values: [String: String] = [:]
        func set(_ k: String, _ v: String) {
            if values[k] == nil { order.append(k) }
            values[k] = v
        }
        for entry in image.env ?? [] {
            let parts = entry.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            set(String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
        }
        if values["PATH"] == nil { set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin") }
        for (k, v) in extra { set(k, v) }
        for e in container.env ?? [] {
            if e.valueFrom != nil {
                if let v = valueFrom[e.name] { set(e.name, v) }
            } else {
                set(e.name, expand(e.value ?? "", values))
            }
        }
        return order.map { ($0, values[$0]!) }
    }

    /// Kubernetes' $(VAR) expansion: known variables are replaced, unknown references are left as written,
    /// and $$ is an escaped $.
    static func expand(_ s: String, _ env: [String: String]) -> String {
        guard s.contains("$") else { return s }
        var out = ""
        var chars = Array(s)[...]
        while let c = chars.first {
            chars = chars.dropFirst()
            guard c == "$", let next = chars.first else { out.append(c); continue }
            if next == "$" {
                out.append("$")
                chars = chars.dropFirst()
            } else if next == "(", let close = chars.firstIndex(of: ")") {
                let name = String(chars[chars.index(after: chars.startIndex)..<close])
                if let v = env[name] { out += v } else { out += "$(\(name))" }
                chars = chars[chars.index(after: close)...]
            } else {
                out.append(c)
            }
        }
        return out
    }
}
