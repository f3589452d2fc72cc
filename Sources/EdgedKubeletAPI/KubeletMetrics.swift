// Prometheus text for /metrics (this server's own counters) and /metrics/resource (node, pod and container CPU and
// memory, the format metrics-server scrapes).

import Synchronization

/// Counters of the kubelet API server itself, served on /metrics.
final class KubeletServerMetrics: Sendable {
    private struct RequestKey: Hashable {
        var method: String
        var path: String
        var code: Int
    }

    private struct State {
        var requests: [RequestKey: Int] = [:]
        var inFlight = 0
        var openStreams: [String: Int] = [:]
        var reviews: [String: Int] = [:]
    }

    private let state = Mutex(State())

    /// Paths are grouped (no pod names in labels): /containerLogs, /exec, /stats/summary, "other"...
    static func pathLabel(_ path: String) -> String {
        let known = ["/healthz", "/pods", "/containerLogs", "/exec", "/attach", "/portForward", "/metrics/resource",
                     "/metrics", "/stats/summary", "/stats"]
        for prefix in known where path == prefix || path.hasPrefix(prefix + "/") { return prefix }
        return "other"
    }

    func requestStarted() { state.withLock { $0.inFlight += 1 } }

    func requestFinished(method: String, path: String, code: Int) {
        let key = RequestKey(method: method, path: Self.pathLabel(path), code: code)
        state.withLock { s in
            s.inFlight -= 1
            s.requests[key, default: 0] += 1
        }
    }

    /// A log follow or a streaming session (exec, attach, portForward) opened or ended.
    func streamOpened(_ kind: String) { state.withLock { $0.openStreams[kind, default: 0] += 1 } }
    func streamClosed(_ kind: String) { state.withLock { $0.openStreams[kind, default: 0] -= 1 } }

    func openStreams(_ kind: String) -> Int { state.withLock { $0.openStreams[kind] ?? 0 } }

    func render() -> String {
        let s = state.withLock { $0 }
        var out = ""
        out += "# HELP kubelet_http_requests_total Number of HTTP requests answered by the kubelet API, by method, path and code.\n"
        out += "# TYPE kubelet_http_requests_total counter\n"
        let keys = s.requests.keys.sorted { ($0.path, $0.method, $0.code) < ($1.path, $1.method, $1.code) }
        for key in keys {
            out += "kubelet_http_requests_total{code=\"\(key.code)\",method=\"\(PrometheusText.escape(key.method))\",path=\"\(key.path)\"} \(s.requests[key] ?? 0)\n"
        }
        out += "# HELP kubelet_http_inflight_requests Number of HTTP requests being answered now.\n"
        out += "# TYPE kubelet_http_inflight_requests gauge\n"
        out += "kubelet_http_inflight_requests \(s.inFlight)\n"
        out += "# HELP kubelet_open_streams Number of open long-running streams (followed logs, exec, attach, port-forward).\n"
        out += "# TYPE kubelet_open_streams gauge\n"
        for kind in ["attach", "exec", "logs", "portforward"] {
            out += "kubelet_open_streams{kind=\"\(kind)\"} \(s.openStreams[kind] ?? 0)\n"
        }
        return out
    }
}

enum PrometheusText {
    /// A label value with backslash, double quote and newline escaped.
    static func escape(_ value: String) -> String {
        var out = ""
        for c in value.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// A sample value as Prometheus writes floats (NaN, +Inf, -Inf spelled its way).
    static func number(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }

    /// /metrics/resource as kubelet writes it: node_, pod_ and container_ cpu_usage_seconds_total (counters) and
    /// memory_working_set_bytes (gauges), each sample with the sampling time in milliseconds, and resource_scrape_error
    /// (1 when the usage could not be read: then nothing else is reported).
    static func resourceMetrics(_ usage: NodeResourceUsage?) -> String {
        var out = ""
        func family(_ name: String, _ type: String, _ help: String) {
            out += "# HELP \(name) [STABLE] \(help)\n# TYPE \(name) \(type)\n"
        }
        guard let usage else {
            family("resource_scrape_error", "gauge", "1 if there was an error while getting container metrics, 0 otherwise")
            out += "resource_scrape_error 1\n"
            return out
        }
        let ts = " \(usage.timestampMillis)\n"
        let containers = usage.containers.sorted { ($0.namespace, $0.pod, $0.name) < ($1.namespace, $1.pod, $1.name) }
        func containerLabels(_ c: NodeResourceUsage.Container) -> String {
            "{container=\"\(escape(c.name))\",namespace=\"\(escape(c.namespace))\",pod=\"\(escape(c.pod))\"}"
        }
        // Pods: the sum of their containers.
        var pods: [(namespace: String, pod: String, cpu: Double, memory: UInt64)] = []
        for c in containers {
            if let last = pods.last, last.namespace == c.namespace, last.pod == c.pod {
                pods[pods.count - 1].cpu += c.usage.cpuSeconds
                pods[pods.count - 1].memory += c.usage.memoryWorkingSetBytes
            } else {
                pods.append((c.namespace, c.pod, c.usage.cpuSeconds, c.usage.memoryWorkingSetBytes))
            }
        }
        family("container_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed by the container in core-seconds")
        for c in containers { out += "container_cpu_usage_seconds_total\(containerLabels(c)) \(number(c.usage.cpuSeconds))" + ts }
        family("container_memory_working_set_bytes", "gauge", "Current working set of the container in bytes")
        for c in containers { out += "container_memory_working_set_bytes\(containerLabels(c)) \(c.usage.memoryWorkingSetBytes)" + ts }
        family("node_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed by the node in core-seconds")
        out += "node_cpu_usage_seconds_total \(number(usage.node.cpuSeconds))" + ts
        family("node_memory_working_set_bytes", "gauge", "Current working set of the node in bytes")
        out += "node_memory_working_set_bytes \(usage.node.memoryWorkingSetBytes)" + ts
        family("pod_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed by the pod in core-seconds")
        for p in pods {
            out += "pod_cpu_usage_seconds_total{namespace=\"\(escape(p.namespace))\",pod=\"\(escape(p.pod))\"} \(number(p.cpu))" + ts
        }
        family("pod_memory_working_set_bytes", "gauge", "Current working set of the pod in bytes")
        for p in pods {
            out += "pod_memory_working_set_bytes{namespace=\"\(escape(p.namespace))\",pod=\"\(escape(p.pod))\"} \(p.memory)" + ts
        }
        family("resource_scrape_error", "gauge", "1 if there was an error while getting container metrics, 0 otherwise")
        out += "resource_scrape_error 0\n"
        return out
    }
}
